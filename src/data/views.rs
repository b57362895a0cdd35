//! Views of a data set as normalised f32 batches, prepared by background worker threads so a
//! training step never waits for augmentation.
//!
//! Determinism: the augmentation of the sample at position p of the order in epoch e comes
//! from its own stream keyed by (seed, e, p), so batches are identical whatever the batch
//! size split across workers, the worker count or the consumer's speed.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::Dataset;
use super::augment::{auto_augment, cutout, pad_crop_flip};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::random::augmentation;

/// Which augmentation a batch gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Normalisation only (ranking losses, label-correction targets, evaluation).
    Weak,
    /// Padded random crop and horizontal flip, normalise (no AutoAugment, no Cutout).
    Standard,
    /// Padded random crop, horizontal flip, AutoAugment (CIFAR-10 policy), Cutout, normalise.
    Strong,
}

impl Choice for View {
    const WHAT: &'static str = "augmentation";
    const ALL: &'static [Self] = &[View::Strong, View::Standard, View::Weak];

    fn name(self) -> &'static str {
        match self {
            View::Weak => "weak",
            View::Standard => "standard",
            View::Strong => "strong",
        }
    }
}
crate::choice_by_name!(View);

/// One prepared batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// B x C x H x W normalised pixels.
    pub x: Vec<f32>,
    /// The data set's labels of the samples (the given, noisy labels for a training set).
    pub labels: Vec<u32>,
    /// Index of each sample in the data set.
    pub indices: Vec<usize>,
}

/// Padding of the strong view's random crop: 4 pixels at side 32, scaled with the side.
pub fn crop_pad(h: usize) -> usize {
    (h / 8).max(1)
}

/// Side of the strong view's Cutout square: 16 at side 32, scaled with the side.
pub fn cutout_size(h: usize) -> usize {
    (h / 2).max(1)
}

/// Writes the `view` of sample `idx`, at position `pos` of epoch `epoch`'s order, into `out`
/// (C*H*W floats).
#[allow(clippy::too_many_arguments)]
pub fn prepare_sample(
    ds: &Dataset,
    idx: usize,
    view: View,
    mean: &[f32],
    std: &[f32],
    seed: u64,
    epoch: u64,
    pos: u64,
    out: &mut [f32],
) {
    let [c, h, w] = ds.shape;
    let plane = h * w;
    let normalise = |src: &[u8], out: &mut [f32]| {
        for ch in 0..c {
            let (m, inv) = (mean[ch], 1.0 / std[ch]);
            for (o, &v) in out[ch * plane..(ch + 1) * plane]
                .iter_mut()
                .zip(&src[ch * plane..(ch + 1) * plane])
            {
                *o = (v as f32 / 255.0 - m) * inv;
            }
        }
    };
    match view {
        View::Weak => normalise(ds.image(idx), out),
        View::Standard | View::Strong => {
            let mut rng = augmentation(seed, epoch, pos);
            let mut img = vec![0u8; c * plane];
            pad_crop_flip(ds.image(idx), c, h, w, crop_pad(h), &mut rng, &mut img);
            if view == View::Strong {
                auto_augment(&mut img, c, h, w, &mut rng);
            }
            normalise(&img, out);
            if view == View::Strong {
                cutout(out, c, h, w, cutout_size(h), &mut rng);
            }
        }
    }
}

/// Builds one batch synchronously: the samples at positions `start..start+indices.len()` of
/// an epoch's order (the position keys the augmentation stream).
#[allow(clippy::too_many_arguments)]
pub fn make_batch(
    ds: &Dataset,
    indices: &[usize],
    view: View,
    mean: &[f32],
    std: &[f32],
    seed: u64,
    epoch: u64,
    start: usize,
) -> Batch {
    let n = ds.sample_len();
    let mut x = vec![0f32; indices.len() * n];
    for (k, (&i, out)) in indices.iter().zip(x.chunks_exact_mut(n.max(1))).enumerate() {
        prepare_sample(ds, i, view, mean, std, seed, epoch, (start + k) as u64, out);
    }
    Batch {
        x,
        labels: indices.iter().map(|&i| ds.labels[i]).collect(),
        indices: indices.to_vec(),
    }
}

/// Settings shared by the workers.
struct Plan {
    ds: Arc<Dataset>,
    order: Vec<usize>,
    batch: usize,
    batches: usize,
    view: View,
    mean: Vec<f32>,
    std: Vec<f32>,
    seed: u64,
    epoch: u64,
}

/// Running workers: worker k prepares batches k, k+W, k+2W, ... into its own bounded
/// channel, and the consumer takes them round-robin, so batches arrive in order.
struct Running {
    rx: Vec<Receiver<Batch>>,
    handles: Vec<Option<JoinHandle<()>>>,
}

/// Iterator over the batches of one epoch, prepared ahead of time by background threads.
///
/// Created with [`Loader::new`], configured with the `with_*` methods, started on the first
/// `next()`. Dropping it early stops the workers; reconfiguring it rewinds to the start.
pub struct Loader {
    plan: Arc<Plan>,
    drop_last: bool,
    workers: usize,
    prefetch: usize,
    next: usize,
    running: Option<Running>,
}

impl Loader {
    /// A loader over the samples `order` (indices into `dataset`, repeats allowed) in batches
    /// of `batch`, with the given view, per-channel mean/std (in [0, 1] units) and seed.
    pub fn new(
        dataset: Arc<Dataset>,
        order: Vec<usize>,
        batch: usize,
        view: View,
        mean: Vec<f32>,
        std: Vec<f32>,
        seed: u64,
    ) -> Result<Self> {
        let c = dataset.shape[0];
        if batch == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        if mean.len() != c || std.len() != c {
            return Err(Error::Config(format!(
                "normalisation needs {c} means and deviations, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Config(format!(
                "normalisation deviation must be positive, got {s}"
            )));
        }
        if let Some(&i) = order.iter().find(|&&i| i >= dataset.len()) {
            return Err(Error::Config(format!(
                "sample index {i} out of range for a data set of {}",
                dataset.len()
            )));
        }
        let batches = order.len().div_ceil(batch);
        Ok(Loader {
            plan: Arc::new(Plan {
                ds: dataset,
                order,
                batch,
                batches,
                view,
                mean,
                std,
                seed,
                epoch: 0,
            }),
            drop_last: false,
            workers: 1,
            prefetch: 2,
            next: 0,
            running: None,
        })
    }

    /// Stops any running workers and rewinds to the first batch, so the plan can change.
    fn rewind(&mut self) {
        self.stop();
        self.next = 0;
    }

    /// The plan, unshared: configuring a loader that already ran rewinds it first.
    fn plan_mut(&mut self) -> &mut Plan {
        self.rewind();
        // The stopped workers dropped their clones, so the plan is unique again.
        Arc::get_mut(&mut self.plan).expect("no worker holds the plan after stop()")
    }

    /// Stops the workers (if running) and waits for them.
    fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            // Closing the receivers makes blocked workers' sends fail, so they exit.
            drop(running.rx);
            for h in running.handles.into_iter().flatten() {
                let _ = h.join();
            }
        }
    }

    /// Drops a last batch smaller than the batch size (keeps BatchNorm statistics sane).
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.rewind();
        self.drop_last = drop_last;
        self
    }

    /// The epoch keying the augmentation streams (default 0).
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.plan_mut().epoch = epoch;
        self
    }

    /// Number of worker threads (default 1; results do not depend on it).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.rewind();
        self.workers = workers.max(1);
        self
    }

    /// Number of batches this loader yields in total.
    pub fn num_batches(&self) -> usize {
        let p = &self.plan;
        if self.drop_last {
            p.order.len() / p.batch
        } else {
            p.batches
        }
    }

    fn start(&mut self) {
        let total = self.num_batches();
        let workers = self.workers.min(total.max(1));
        let mut rx = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for k in 0..workers {
            let (tx, r): (SyncSender<Batch>, Receiver<Batch>) = sync_channel(self.prefetch);
            let plan = Arc::clone(&self.plan);
            let handle = std::thread::Builder::new()
                .name(format!("dynloss-loader-{k}"))
                .spawn(move || {
                    let mut b = k;
                    while b < total {
                        let start = b * plan.batch;
                        let end = (start + plan.batch).min(plan.order.len());
                        let batch = make_batch(
                            &plan.ds,
                            &plan.order[start..end],
                            plan.view,
                            &plan.mean,
                            &plan.std,
                            plan.seed,
                            plan.epoch,
                            start,
                        );
                        if tx.send(batch).is_err() {
                            return; // The consumer went away: stop quietly.
                        }
                        b += workers;
                    }
                })
                .expect("cannot spawn a data loader thread");
            rx.push(r);
            handles.push(Some(handle));
        }
        self.running = Some(Running { rx, handles });
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.num_batches() {
            return None;
        }
        if self.running.is_none() {
            self.start();
        }
        let running = self.running.as_mut()?;
        let k = self.next % running.rx.len();
        match running.rx[k].recv() {
            Ok(b) => {
                self.next += 1;
                Some(b)
            }
            Err(_) => {
                // The worker ended without sending: it panicked. Surface that panic here.
                if let Some(h) = running.handles[k].take()
                    && let Err(panic) = h.join()
                {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.num_batches() - self.next.min(self.num_batches());
        (left, Some(left))
    }
}

impl ExactSizeIterator for Loader {}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop();
    }
}
