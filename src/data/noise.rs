//! Label noise models of the spec: LT noise (the paper's), symmetric and asymmetric.

use rand::RngExt;

use super::count_labels;
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::random::Streams;

/// Which noise model corrupts the training labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseType {
    /// The paper's LT noise: the new label is drawn from row y of
    /// T = (1-lambda) I + lambda 1 p^T, p = the long-tailed class frequencies.
    Lt,
    /// With probability lambda, a uniformly random class (may be the true one).
    Sym,
    /// CIFAR-10 class-dependent flips (truck->automobile, bird->airplane, deer->horse,
    /// cat<->dog), each with probability lambda.
    Asym,
}

impl Choice for NoiseType {
    const WHAT: &'static str = "noise type";
    const ALL: &'static [Self] = &[NoiseType::Lt, NoiseType::Sym, NoiseType::Asym];

    fn name(self) -> &'static str {
        match self {
            NoiseType::Lt => "lt",
            NoiseType::Sym => "sym",
            NoiseType::Asym => "asym",
        }
    }
}
crate::choice_by_name!(NoiseType);

/// The asymmetric CIFAR-10 flips as (from, to) class indices: truck->automobile,
/// bird->airplane, deer->horse, cat->dog, dog->cat.
pub const CIFAR10_ASYM: [(u32, u32); 5] = [(9, 1), (2, 0), (4, 7), (3, 5), (5, 3)];

/// Corrupts `true_labels` with the chosen model at rate `lambda`; deterministic by `seed`.
pub fn apply_noise(
    true_labels: &[u32],
    classes: usize,
    lambda: f64,
    kind: NoiseType,
    seed: u64,
) -> Result<Vec<u32>> {
    if !(lambda.is_finite() && (0.0..=1.0).contains(&lambda)) {
        return Err(Error::Config(format!(
            "noise rate must be in [0, 1], got {lambda}"
        )));
    }
    if let Some(&l) = true_labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Config(format!(
            "label {l} out of range for {classes} classes"
        )));
    }
    if lambda == 0.0 {
        return Ok(true_labels.to_vec());
    }
    Ok(match kind {
        NoiseType::Lt => lt_noise(true_labels, classes, lambda, seed),
        NoiseType::Sym => sym_noise(true_labels, classes, lambda, seed),
        NoiseType::Asym => {
            if classes != 10 {
                return Err(Error::Config(format!(
                    "asymmetric noise is defined for 10-class sets (the CIFAR-10 flips); \
                     this set has {classes} classes: use --noise-type lt or sym"
                )));
            }
            asym_noise(true_labels, lambda, seed)
        }
    })
}

/// The spec's LT noise. Drawing from row y of T is done in two stages with the same
/// distribution: with probability lambda draw from p (which may return y itself), else keep y.
pub fn lt_noise(true_labels: &[u32], classes: usize, lambda: f64, seed: u64) -> Vec<u32> {
    let counts = count_labels(true_labels, classes);
    let total = true_labels.len().max(1) as f64;
    let mut cum = Vec::with_capacity(classes);
    let mut acc = 0.0;
    for &n in &counts {
        acc += n as f64 / total;
        cum.push(acc);
    }
    let mut rng = Streams(seed).noise(0);
    true_labels
        .iter()
        .map(|&y| {
            // Both draws are made for every sample so the stream position of sample i does not
            // depend on earlier outcomes.
            let flip = rng.random::<f64>() < lambda;
            let u = rng.random::<f64>() * acc;
            if flip {
                cum.partition_point(|&c| c <= u).min(classes - 1) as u32
            } else {
                y
            }
        })
        .collect()
}

/// Symmetric noise: with probability lambda a uniformly random class.
pub fn sym_noise(true_labels: &[u32], classes: usize, lambda: f64, seed: u64) -> Vec<u32> {
    let mut rng = Streams(seed).noise(1);
    true_labels
        .iter()
        .map(|&y| {
            let flip = rng.random::<f64>() < lambda;
            let r = rng.random_range(0..classes as u32);
            if flip { r } else { y }
        })
        .collect()
}

/// Asymmetric CIFAR-10 noise: each mapped class flips to its partner with probability lambda;
/// the other five classes are never touched.
pub fn asym_noise(true_labels: &[u32], lambda: f64, seed: u64) -> Vec<u32> {
    let mut rng = Streams(seed).noise(2);
    true_labels
        .iter()
        .map(|&y| {
            let flip = rng.random::<f64>() < lambda;
            match CIFAR10_ASYM.iter().find(|&&(from, _)| from == y) {
                Some(&(_, to)) if flip => to,
                _ => y,
            }
        })
        .collect()
}

/// The realised transition matrix: entry `[i][j]` is the fraction of true-class-i samples given
/// label j (rows of empty classes are zero).
pub fn transition_matrix(true_labels: &[u32], noisy: &[u32], classes: usize) -> Vec<Vec<f64>> {
    let mut m = vec![vec![0.0; classes]; classes];
    for (&t, &n) in true_labels.iter().zip(noisy) {
        if (t as usize) < classes && (n as usize) < classes {
            m[t as usize][n as usize] += 1.0;
        }
    }
    for row in &mut m {
        let s: f64 = row.iter().sum();
        if s > 0.0 {
            row.iter_mut().for_each(|v| *v /= s);
        }
    }
    m
}

/// The expected LT-noise transition matrix T = (1-lambda) I + lambda 1 p^T for class counts
/// `counts`.
pub fn lt_transition(counts: &[usize], lambda: f64) -> Vec<Vec<f64>> {
    let total: usize = counts.iter().sum();
    let c = counts.len();
    (0..c)
        .map(|i| {
            (0..c)
                .map(|j| {
                    let p = counts[j] as f64 / total.max(1) as f64;
                    lambda * p + if i == j { 1.0 - lambda } else { 0.0 }
                })
                .collect()
        })
        .collect()
}
