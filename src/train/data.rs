//! The run's data: the long-tailed noisy training set (with its true labels, kept for reports
//! only), the test set, the normalisation, and the loaders every epoch draws batches from.

use std::sync::Arc;

use crate::data::views::{Loader, View};
use crate::data::{Dataset, TrainSet};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

use super::config::TrainConfig;

/// Batch size of prediction passes (evaluation, ranking losses).
pub(super) const PREDICT_BATCH: usize = 256;

/// Training and test data of a run, and how batches are drawn from them.
pub struct TrainData {
    /// Training set with the given (possibly noisy) labels.
    pub train: Arc<Dataset>,
    /// True labels of the training samples (never trained on).
    pub true_labels: Vec<u32>,
    /// Test set (clean, balanced).
    pub test: Arc<Dataset>,
    /// Per-channel mean of the training images (normalisation).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of the training images.
    pub std: Vec<f32>,
    /// Share of training labels that differ from the truth.
    pub noise_rate: f64,
    batch_size: usize,
    seed: u64,
    workers: usize,
}

impl TrainData {
    /// Reads the data `cfg` names, applies the long tail, noise and size limits.
    pub fn load(cfg: &TrainConfig) -> Result<TrainData> {
        let (train_set, test) = load_sets(cfg)?;
        let (mean, std) = crate::data::mean_std(&train_set.data);
        Ok(TrainData {
            noise_rate: train_set.noise_rate(),
            train: Arc::new(train_set.data),
            true_labels: train_set.true_labels,
            test: Arc::new(test),
            mean,
            std,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            workers: cfg.workers,
        })
    }

    /// Optimizer steps in one pass over the whole training set (at least 1).
    pub fn steps_per_epoch(&self) -> usize {
        (self.train.len() / self.batch_size).max(1)
    }

    /// A loader over `order` of the training set with `view` for epoch `epoch`; `salt`
    /// separates the augmentation streams of loaders that share an epoch. The last partial
    /// batch is dropped unless it is the only one.
    pub fn loader(&self, order: Vec<usize>, view: View, epoch: usize, salt: u64) -> Result<Loader> {
        let drop_last = order.len() >= self.batch_size;
        Ok(Loader::new(
            self.train.clone(),
            order,
            self.batch_size,
            view,
            self.mean.clone(),
            self.std.clone(),
            self.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        )?
        .with_epoch(epoch as u64)
        .with_drop_last(drop_last)
        .with_workers(self.workers))
    }

    /// A loader over `order` of `ds`, weak view, in prediction batches.
    pub fn predict_loader(
        &self,
        ds: &Arc<Dataset>,
        order: Vec<usize>,
        salt: u64,
    ) -> Result<Loader> {
        Ok(Loader::new(
            ds.clone(),
            order,
            PREDICT_BATCH,
            View::Weak,
            self.mean.clone(),
            self.std.clone(),
            salt,
        )?
        .with_workers(self.workers))
    }

    /// Uploads a prepared batch: images [B, C, H, W] and labels [B].
    pub fn upload(&self, gpu: &Gpu, x: &[f32], labels: &[u32]) -> Result<(Tensor, Tensor)> {
        let [c, h, w] = self.train.shape;
        let b = labels.len();
        Ok((
            Tensor::from_f32(gpu, &[b, c, h, w], x)?,
            Tensor::from_u32(gpu, &[b], labels)?,
        ))
    }
}

/// A seeded permutation of 0..n for epoch `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
            ^ (epoch as u64)
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
    v
}

/// A seeded random subset of k of n indices, in increasing order (class mix kept on average).
fn subset_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx = epoch_order(n, seed ^ 0x5B5E7, usize::MAX);
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// A random subset of k samples of the training set.
fn limit_train_set(ts: TrainSet, limit: Option<usize>, seed: u64) -> TrainSet {
    let n = ts.data.len();
    match limit {
        Some(k) if k < n => {
            let idx = subset_indices(n, k, seed);
            TrainSet {
                data: ts.data.subset(&idx),
                true_labels: idx.iter().map(|&i| ts.true_labels[i]).collect(),
                source_index: idx.iter().map(|&i| ts.source_index[i]).collect(),
            }
        }
        _ => ts,
    }
}

/// Reads the data the config names (long tail, noise and the size limits applied).
pub fn load_sets(cfg: &TrainConfig) -> Result<(TrainSet, Dataset)> {
    let (ts, test) = crate::data::load(&cfg.data_config())?;
    let test = match cfg.test_limit {
        Some(k) if k < test.len() => test.subset(&subset_indices(test.len(), k, cfg.seed ^ 1)),
        _ => test,
    };
    let ts = limit_train_set(ts, cfg.train_limit, cfg.seed);
    // The long tail already guarantees every class a sample; a random subset may not.
    let counts = crate::data::count_labels(&ts.data.labels, ts.data.classes);
    if let Some(c) = counts.iter().position(|&n| n == 0) {
        let name = ts
            .data
            .class_names
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_string());
        let empty = counts.iter().filter(|&&n| n == 0).count();
        return Err(Error::Config(format!(
            "--train-limit {} leaves {empty} class(es) without training samples (first: '{name}'); raise --train-limit or lower --imbalance",
            cfg.train_limit.unwrap_or(0)
        )));
    }
    Ok((ts, test))
}
