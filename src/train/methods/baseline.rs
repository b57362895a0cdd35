//! The baselines: cross-entropy on the given labels, and Balanced Softmax (log class counts
//! added to the logits in training).

use crate::autograd::{self as ag, Var};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::tensor::Tensor;

use crate::random::ViewRole;
use crate::train::classifier::Classifier;
use crate::train::method::{EpochEnv, EpochStats, TrainingMethod};

/// log(class count) per class: the Balanced Softmax margins.
pub fn log_counts(gpu: &Gpu, labels: &[u32], classes: usize) -> Result<Tensor> {
    let counts = crate::data::count_labels(labels, classes);
    let v: Vec<f32> = counts.iter().map(|&n| (n.max(1) as f32).ln()).collect();
    Tensor::from_f32(gpu, &[classes], &v)
}

/// Cross-entropy, optionally with fixed margins added to the logits.
pub struct Baseline {
    margins: Option<Var>,
}

impl Baseline {
    /// Plain cross-entropy.
    pub fn cross_entropy() -> Baseline {
        Baseline { margins: None }
    }

    /// Balanced Softmax with the class counts of `labels`.
    pub fn balanced_softmax(gpu: &Gpu, labels: &[u32], classes: usize) -> Result<Baseline> {
        Ok(Baseline {
            margins: Some(Var::constant(log_counts(gpu, labels, classes)?)),
        })
    }
}

impl Baseline {
    /// The training loss of a batch: mean cross-entropy of `logits` (plus the margins, for
    /// Balanced Softmax) against the given labels.
    pub fn loss(&self, logits: &Var, labels: &Tensor) -> Result<Var> {
        ag::mean_all(&ag::cross_entropy(logits, labels, self.margins.as_ref())?)
    }
}

impl TrainingMethod for Baseline {
    fn epoch(&mut self, env: &EpochEnv, clf: &mut Classifier, epoch: usize) -> Result<EpochStats> {
        let order = env.data.shuffle(env.data.train.len(), epoch);
        let loader = env
            .data
            .loader(order, env.cfg.augment, ViewRole::Train, epoch)?;
        let mut st = EpochStats::default();
        for batch in loader {
            let (x, labels) = env.data.upload(env.gpu, &batch.x, &batch.labels)?;
            let out = clf.step(&x, |logits| self.loss(logits, &labels))?;
            st.record(out.loss, &out.logits, &batch.labels)?;
            env.tick(|| format!("loss {:.3} acc {:.1}%", st.mean_loss(), st.accuracy()))?;
        }
        Ok(st)
    }
}
