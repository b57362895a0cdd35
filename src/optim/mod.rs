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
    /// Steps taken so far.
    pub step: u32,
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
            step: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    /// One update; parameters without a gradient are left alone.
    pub fn update(&mut self, params: &[Tensor], grads: &[Option<Tensor>]) -> Result<()> {
        self.step += 1;
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if let Some(g) = g {
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
                    self.step,
                )?;
            }
        }
        Ok(())
    }
}

/// Cosine annealing to 0 after a linear warm-up from `warmup_start` x base lr.
#[derive(Debug, Clone, Copy)]
pub struct CosineSchedule {
    /// Peak learning rate.
    pub base_lr: f32,
    /// Warm-up length in steps.
    pub warmup_steps: usize,
    /// Total steps.
    pub total_steps: usize,
    /// Fraction of the base lr at step 0 of the warm-up (0.1 in the spec).
    pub warmup_start: f32,
}

impl CosineSchedule {
    /// The learning rate at `step` (0-based).
    pub fn lr(&self, step: usize) -> f32 {
        if step < self.warmup_steps {
            let t = step as f32 / self.warmup_steps as f32;
            return self.base_lr * (self.warmup_start + (1.0 - self.warmup_start) * t);
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f32 / span as f32).min(1.0);
        0.5 * self.base_lr * (1.0 + (std::f32::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::CosineSchedule;

    #[test]
    fn cosine_with_warmup() {
        let s = CosineSchedule {
            base_lr: 0.1,
            warmup_steps: 10,
            total_steps: 110,
            warmup_start: 0.1,
        };
        assert!((s.lr(0) - 0.01).abs() < 1e-7);
        assert!((s.lr(5) - 0.055).abs() < 1e-6);
        assert!((s.lr(10) - 0.1).abs() < 1e-7);
        assert!((s.lr(60) - 0.05).abs() < 1e-6);
        assert!(s.lr(110).abs() < 1e-7);
        assert!(s.lr(200).abs() < 1e-7);
    }
}
