//! What a training method supplies to the epoch loop: one epoch of training, and its own
//! state in checkpoints. The loop (`run`) owns everything else.

use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::tensor::Tensor;

use super::checkpoint::Checkpoint;
use super::classifier::Classifier;
use super::config::TrainConfig;
use super::data::TrainData;

/// What an epoch reads: the GPU, the settings, the data, where the run writes, and the
/// progress display.
pub struct EpochEnv<'a> {
    /// The GPU.
    pub gpu: &'a Gpu,
    /// The run's settings.
    pub cfg: &'a TrainConfig,
    /// Training and test data.
    pub data: &'a TrainData,
    /// The run directory (methods may write plots there).
    pub out: &'a Path,
    /// The progress bar of this epoch, if shown.
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Set when the user asks the run to stop (Ctrl-C, SIGTERM).
    pub stop: Option<&'a AtomicBool>,
    /// Steps taken in this epoch.
    pub steps: Cell<usize>,
}

impl EpochEnv<'_> {
    /// After each step: advances the progress bar with a status message, and fails with
    /// [`Error::Interrupted`] once the user has asked the run to stop, abandoning the epoch.
    pub fn tick(&self, msg: impl FnOnce() -> String) -> Result<()> {
        self.steps.set(self.steps.get() + 1);
        if let Some(pb) = self.progress {
            pb.inc(1);
            pb.set_message(msg());
        }
        self.check_stop()
    }

    /// Fails with [`Error::Interrupted`] if the user has asked the run to stop.
    pub fn check_stop(&self) -> Result<()> {
        match self.stop {
            Some(flag) if flag.load(Ordering::SeqCst) => Err(Error::Interrupted {
                epoch: self.epoch + 1,
                step: self.steps.get(),
                dir: self.out.to_path_buf(),
                committed: self.epoch,
            }),
            _ => Ok(()),
        }
    }
}

/// Loss, accuracy and throughput of one training epoch.
#[derive(Debug, Clone, Default)]
pub struct EpochStats {
    /// Sum of batch losses.
    pub loss_sum: f64,
    /// Batches.
    pub batches: usize,
    /// Correct predictions against the given labels.
    pub correct: usize,
    /// Samples seen.
    pub seen: usize,
    /// Method-specific diagnostics for `metrics.jsonl`.
    pub extra: Option<serde_json::Value>,
}

impl EpochStats {
    /// Adds one batch: its loss, the logits it was trained on and its given labels.
    pub fn record(
        &mut self,
        loss: f32,
        logits: &crate::tensor::Tensor,
        labels: &[u32],
    ) -> Result<()> {
        self.loss_sum += loss as f64;
        self.correct += count_correct(logits, labels)?;
        self.seen += labels.len();
        self.batches += 1;
        Ok(())
    }

    /// Mean batch loss so far.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.batches.max(1) as f64
    }

    /// Training accuracy so far against the given labels, percent.
    pub fn accuracy(&self) -> f64 {
        100.0 * self.correct as f64 / self.seen.max(1) as f64
    }
}

/// Counts rows of `logits` whose argmax is the label.
fn count_correct(logits: &Tensor, labels: &[u32]) -> Result<usize> {
    let c = logits.shape()[1];
    let v = logits.to_f32_vec()?;
    Ok(labels
        .iter()
        .enumerate()
        .filter(|(i, l)| super::accuracy::argmax(&v[i * c..(i + 1) * c]) == **l as usize)
        .count())
}

/// A training method: one epoch at a time, plus its state in checkpoints.
pub trait TrainingMethod {
    /// Trains `clf` for epoch `epoch` (0-based).
    fn epoch(&mut self, env: &EpochEnv, clf: &mut Classifier, epoch: usize) -> Result<EpochStats>;
    /// Adds the method's state to a checkpoint.
    fn save(&self, _ck: &mut Checkpoint) -> Result<()> {
        Ok(())
    }
    /// Restores the method's state from a checkpoint.
    fn restore(&mut self, _path: &Path, _ck: &Checkpoint) -> Result<()> {
        Ok(())
    }
    /// The method's GPU state tensors with their checkpoint names (checked for finite values
    /// before an epoch commits).
    fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        Vec::new()
    }
}
