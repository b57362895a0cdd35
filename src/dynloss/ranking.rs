//! Loss ranks and hierarchical meta-set sampling, done at the start of every epoch.

use rand::RngExt;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::tensor::sort::{rank_bins, segmented_sort};

/// Where each training sample stands within its (given-label) class this epoch.
#[derive(Debug, Clone)]
pub struct Ranking {
    /// Rank bin of each sample, in [0, R).
    pub bins: Vec<u32>,
    /// Samples of each class, by ascending loss.
    pub by_class: Vec<Vec<usize>>,
}

/// The spec's bin of position k (0 = lowest loss) in a class of n: floor(k / (n + 1) * R).
pub fn bin_of(k: usize, n: usize, r: usize) -> u32 {
    (k * r / (n + 1)) as u32
}

/// Ranks per-sample losses within each class on the GPU (segmented bitonic sort, then rank
/// bins) and brings the result to the host.
pub fn rank(
    gpu: &Gpu,
    losses: &[f32],
    labels: &[u32],
    classes: usize,
    r: usize,
) -> Result<Ranking> {
    let n = losses.len();
    let counts = crate::data::count_labels(labels, classes);
    let seg = Tensor::from_u32(gpu, &[n], labels)?;
    let key = Tensor::from_f32(gpu, &[n], losses)?;
    let idx = Tensor::from_u32(gpu, &[n], &(0..n as u32).collect::<Vec<_>>())?;
    let sorted = segmented_sort(&seg, &key, &idx)?;
    let mut starts = Vec::with_capacity(classes);
    let mut acc = 0u32;
    for &c in &counts {
        starts.push(acc);
        acc += c as u32;
    }
    let lens: Vec<u32> = counts.iter().map(|&c| c as u32).collect();
    let start_t = Tensor::from_u32(gpu, &[classes], &starts)?;
    let len_t = Tensor::from_u32(gpu, &[classes], &lens)?;
    let sorted_bins = rank_bins(&sorted.segment, &start_t, &len_t, r as u32)?.to_u32_vec()?;
    let order = sorted.value.to_u32_vec()?;
    let mut bins = vec![0u32; n];
    let mut by_class: Vec<Vec<usize>> = counts.iter().map(|&c| Vec::with_capacity(c)).collect();
    for (pos, &i) in order.iter().enumerate() {
        let i = i as usize;
        bins[i] = sorted_bins[pos];
        by_class[labels[i] as usize].push(i);
    }
    Ok(Ranking { bins, by_class })
}

/// The balanced meta set and this epoch's training set.
#[derive(Debug, Clone)]
pub struct MetaSplit {
    /// Meta-set samples (floor(0.25 n_min) per class, at least 1).
    pub meta: Vec<usize>,
    /// Every other training sample.
    pub train: Vec<usize>,
}

/// Hierarchical sampling: per class a fresh random primary set of floor(0.5 n_min) samples,
/// whose floor(0.25 n_min) lowest-loss samples form the meta set; with `naive`, the
/// lowest-loss samples of the whole class instead. n_min is the smallest non-empty class.
pub fn hierarchical_split<R: rand::Rng>(ranking: &Ranking, naive: bool, rng: &mut R) -> MetaSplit {
    let n_min = ranking
        .by_class
        .iter()
        .map(|c| c.len())
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    let primary_n = (n_min / 2).max(1);
    let meta_n = (n_min / 4).max(1);
    let total: usize = ranking.by_class.iter().map(|c| c.len()).sum();
    let mut is_meta = vec![false; total];
    let mut meta = Vec::new();
    for class in &ranking.by_class {
        if class.is_empty() {
            continue;
        }
        let chosen: Vec<usize> = if naive {
            class.iter().take(meta_n).copied().collect()
        } else {
            // Random positions in the loss-sorted class; the lowest positions win.
            let mut pos: Vec<usize> = (0..class.len()).collect();
            for i in 0..primary_n.min(class.len()) {
                let j = rng.random_range(i..class.len());
                pos.swap(i, j);
            }
            let mut primary = pos[..primary_n.min(class.len())].to_vec();
            primary.sort_unstable();
            primary.iter().take(meta_n).map(|&p| class[p]).collect()
        };
        for &i in &chosen {
            is_meta[i] = true;
        }
        meta.extend(chosen);
    }
    let train = (0..total).filter(|&i| !is_meta[i]).collect();
    MetaSplit { meta, train }
}
