//! The run's data: the long-tailed noisy training set (with its true labels, kept for reports
//! only), the test set, the normalisation, and the loaders every epoch draws batches from.

use std::sync::Arc;

use crate::data::views::{Loader, View};
use crate::data::{Dataset, TrainSet};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::random::{Streams, ViewRole};
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

    /// A loader over `order` of the training set with `view` for epoch `epoch`, in batches of
    /// the run's size, its augmentations drawn from `role`'s stream. The last partial batch
    /// is dropped unless it is the only one.
    pub fn loader(
        &self,
        order: Vec<usize>,
        view: View,
        role: ViewRole,
        epoch: usize,
    ) -> Result<Loader> {
        self.loader_in(order, view, role, epoch, self.batch_size)
    }

    /// [`Self::loader`] in batches of `batch` (the Dynamic Loss's meta batches).
    pub fn loader_in(
        &self,
        order: Vec<usize>,
        view: View,
        role: ViewRole,
        epoch: usize,
        batch: usize,
    ) -> Result<Loader> {
        let drop_last = order.len() >= batch;
        Ok(Loader::new(
            self.train.clone(),
            order,
            batch,
            view,
            self.mean.clone(),
            self.std.clone(),
            Streams(self.seed).loader(role),
        )?
        .with_epoch(epoch as u64)
        .with_drop_last(drop_last)
        .with_workers(self.workers))
    }

    /// A loader over `order` of `ds`, weak view (nothing random), in prediction batches.
    pub fn predict_loader(&self, ds: &Arc<Dataset>, order: Vec<usize>) -> Result<Loader> {
        Ok(Loader::new(
            ds.clone(),
            order,
            PREDICT_BATCH,
            View::Weak,
            self.mean.clone(),
            self.std.clone(),
            0,
        )?
        .with_workers(self.workers))
    }

    /// The order of the training samples in epoch `epoch`.
    pub fn shuffle(&self, n: usize, epoch: usize) -> Vec<usize> {
        Streams(self.seed).shuffle(n, epoch)
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

/// A random subset of k samples of the training set.
fn limit_train_set(ts: TrainSet, limit: Option<usize>, seed: u64) -> TrainSet {
    let n = ts.data.len();
    match limit {
        Some(k) if k < n => {
            let idx = Streams(seed).train_subset(n, k);
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
        Some(k) if k < test.len() => test.subset(&Streams(cfg.seed).test_subset(test.len(), k)),
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
