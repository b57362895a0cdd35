//! Optimizers over lists of parameter tensors (updated in place on the GPU) and the
//! learning-rate schedule.

use crate::error::Result;
use crate::tensor::optim::{adam_step, sgd_step};
use crate::tensor::{DType, Tensor};

/// SGD with momentum and weight decay (PyTorch semantics: dampening 0, no Nesterov).
pub struct Sgd {
    /// Momentum factor.
    pub momentum: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// One momentum buffer per parameter.
    pub buffers: Vec<Tensor>,
}

impl Sgd {
    /// Zeroed buffers for `params` (PyTorch's first step, buf = grad, follows from zeros).
    pub fn new(params: &[Tensor], momentum: f32, weight_decay: f32) -> Sgd {
        Sgd {
            momentum,
            weight_decay,
            buffers: params
                .iter()
                .map(|p| Tensor::zeros(p.gpu(), p.shape(), DType::F32))
                .collect(),
        }
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, params: &[Tensor], grads: &[Option<Tensor>], lr: f32) -> Result<()> {
        for ((p, g), b) in params.iter().zip(grads).zip(&self.buffers) {
            if let Some(g) = g {
                sgd_step(p, b, g, lr, self.momentum, self.weight_decay)?;
            }
        }
        Ok(())
    }
}

/// Adam (PyTorch semantics, L2 weight decay added to the gradient).
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Steps taken by each parameter: PyTorch keeps one count per parameter, so a parameter
    /// that got no gradient (the margin generator during the warm-up fit) starts its bias
    /// correction from its own first step, not from the others'.
    pub steps: Vec<u32>,
    /// First moments.
    pub m: Vec<Tensor>,
    /// Second moments.
    pub v: Vec<Tensor>,
}

impl Adam {
    /// Adam with the usual betas (0.9, 0.999) and eps 1e-8.
    pub fn new(params: &[Tensor], lr: f32, weight_decay: f32) -> Adam {
        let zeros = || -> Vec<Tensor> {
            params
                .iter()
                .map(|p| Tensor::zeros(p.gpu(), p.shape(), DType::F32))
                .collect()
        };
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            steps: vec![0; params.len()],
            m: zeros(),
            v: zeros(),
        }
    }

    /// One update; parameters without a gradient are left alone and do not count the step.
    pub fn update(&mut self, params: &[Tensor], grads: &[Option<Tensor>]) -> Result<()> {
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if let Some(g) = g {
                self.steps[i] += 1;
                adam_step(
                    p,
                    &self.m[i],
                    &self.v[i],
                    g,
                    self.lr,
                    self.beta1,
                    self.beta2,
                    self.eps,
                    self.weight_decay,
                    self.steps[i],
                )?;
            }
        }
        Ok(())
    }
}

/// How the cosine part of [`CosineSchedule`] advances.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decay {
    /// Per step: the cosine runs from the end of the warm-up to `total_steps`.
    PerStep {
        /// Total steps of the run.
        total_steps: usize,
    },
    /// Per epoch, as the authors' code runs it: the value is 0.5 lr (1 + cos(pi e / E)) for
    /// epoch e of E, counted from epoch 0 (so the warm-up epochs are part of the cosine's
    /// span), constant within an epoch; the warm-up scales that value.
    PerEpoch {
        /// Epochs of the run.
        epochs: usize,
    },
}

/// Cosine annealing to 0 after a linear warm-up from `warmup_start` x the schedule's value.
#[derive(Debug, Clone, Copy)]
pub struct CosineSchedule {
    /// Peak learning rate.
    pub base_lr: f32,
    /// Warm-up length in steps.
    pub warmup_steps: usize,
    /// Fraction of the base lr at step 0 of the warm-up (0.1 in the spec).
    pub warmup_start: f32,
    /// Whether the cosine advances by step or by epoch.
    pub decay: Decay,
}

impl CosineSchedule {
    /// The learning rate at step `step` (0-based, counting the steps that advance the
    /// schedule) taken during epoch `epoch` (0-based; used by [`Decay::PerEpoch`] only).
    pub fn lr(&self, step: usize, epoch: usize) -> f32 {
        let cosine =
            |t: f32| 0.5 * self.base_lr * (1.0 + (std::f32::consts::PI * t.min(1.0)).cos());
        let ramp = |value: f32| {
            let t = step as f32 / self.warmup_steps as f32;
            value * (self.warmup_start + (1.0 - self.warmup_start) * t)
        };
        match self.decay {
            Decay::PerStep { total_steps } => {
                if step < self.warmup_steps {
                    return ramp(self.base_lr);
                }
                let span = total_steps.saturating_sub(self.warmup_steps).max(1);
                cosine((step - self.warmup_steps) as f32 / span as f32)
            }
            // The ramp multiplies the epoch's cosine value, step by step, as the linear
            // warm-up of the authors' scheduler (mmcv's) does; after it the lr changes only
            // at epoch boundaries.
            Decay::PerEpoch { epochs } => {
                let value = cosine(epoch as f32 / epochs.max(1) as f32);
                if step < self.warmup_steps {
                    ramp(value)
                } else {
                    value
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CosineSchedule, Decay};

    #[test]
    fn cosine_with_warmup() {
        let s = CosineSchedule {
            base_lr: 0.1,
            warmup_steps: 10,
            warmup_start: 0.1,
            decay: Decay::PerStep { total_steps: 110 },
        };
        // The epoch does not matter to the per-step form.
        for e in [0, 7] {
            assert!((s.lr(0, e) - 0.01).abs() < 1e-7);
            assert!((s.lr(5, e) - 0.055).abs() < 1e-6);
            assert!((s.lr(10, e) - 0.1).abs() < 1e-7);
            assert!((s.lr(60, e) - 0.05).abs() < 1e-6);
            assert!(s.lr(110, e).abs() < 1e-7);
            assert!(s.lr(200, e).abs() < 1e-7);
        }
    }
}
