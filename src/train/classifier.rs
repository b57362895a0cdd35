//! The classifier being trained, as one owner of its state: model, parameters, batch-norm
//! running statistics, SGD momentum buffers, the learning-rate schedule and the step count.
//! Every training loop goes through [`Classifier::step`], so the learning rate a step uses,
//! the counter it advances and the divergence check are decided in one place.

use std::path::Path;

use crate::autograd::{self as ag, Var};
use crate::data::views::Loader;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Mode, Model, RunningStats, init::init_params, update_running_stats};
use crate::optim::{CosineSchedule, Decay, Sgd};
use crate::random::Streams;
use crate::tensor::Tensor;

use super::checkpoint::Checkpoint;
use super::config::{LrSchedule, TrainConfig};

/// What one training step returns.
pub struct Stepped {
    /// The batch loss before the update.
    pub loss: f32,
    /// The logits the loss was computed from, [B, classes].
    pub logits: Tensor,
}

/// Model, parameters, running statistics, optimizer, schedule and step count.
pub struct Classifier {
    gpu: Gpu,
    model: Model,
    params: Vec<Tensor>,
    running: RunningStats,
    sgd: Sgd,
    schedule: CosineSchedule,
    /// Steps taken that advance the schedule.
    step: usize,
    /// The epoch in progress (0-based): the epoch schedule's position, and where messages
    /// say a run stopped.
    epoch: usize,
    /// The latest finite training loss, for the message when a loss stops being finite.
    last_finite_loss: Option<f32>,
}

impl Classifier {
    /// A freshly initialised classifier with `cfg`'s optimizer and learning-rate schedule,
    /// whose warm-up spans `steps_per_epoch` steps per warm-up epoch.
    pub fn new(gpu: &Gpu, cfg: &TrainConfig, model: Model, steps_per_epoch: usize) -> Result<Self> {
        let params = init_params(gpu, &model, &mut Streams(cfg.seed).classifier_init())?;
        let running = model.new_running_stats(gpu);
        let sgd = Sgd::new(&params, cfg.momentum, cfg.weight_decay);
        let schedule = Self::schedule(cfg, steps_per_epoch);
        Ok(Classifier {
            gpu: gpu.clone(),
            model,
            params,
            running,
            sgd,
            schedule,
            step: 0,
            epoch: 0,
            last_finite_loss: None,
        })
    }

    /// The learning-rate schedule of `cfg` ([`TrainConfig::lr_schedule`] chooses its form).
    pub fn schedule(cfg: &TrainConfig, steps_per_epoch: usize) -> CosineSchedule {
        CosineSchedule {
            base_lr: cfg.lr,
            warmup_steps: cfg.lr_warmup() * steps_per_epoch,
            warmup_start: 0.1,
            decay: match cfg.lr_schedule() {
                LrSchedule::Step => Decay::PerStep {
                    total_steps: cfg.epochs * steps_per_epoch,
                },
                LrSchedule::Epoch => Decay::PerEpoch { epochs: cfg.epochs },
            },
        }
    }

    /// The architecture.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The parameters, in the model's order.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Batch-norm running statistics.
    pub fn running(&self) -> &RunningStats {
        &self.running
    }

    /// The SGD optimizer (momentum, weight decay, momentum buffers).
    pub fn sgd(&self) -> &Sgd {
        &self.sgd
    }

    /// Parameter names, in order.
    pub fn param_names(&self) -> Vec<String> {
        self.model.params.iter().map(|p| p.name.clone()).collect()
    }

    /// Marks the start of epoch `epoch` (0-based).
    pub fn begin_epoch(&mut self, epoch: usize) {
        self.epoch = epoch;
    }

    /// The learning rate the next step will use.
    pub fn lr(&self) -> f32 {
        self.schedule.lr(self.step, self.epoch)
    }

    /// The schedule's peak learning rate.
    pub fn peak_lr(&self) -> f32 {
        self.schedule.base_lr
    }

    /// The learning rate of the most recent step (the first step's before any).
    pub fn last_lr(&self) -> f32 {
        self.schedule.lr(self.step.saturating_sub(1), self.epoch)
    }

    /// Steps taken so far on the schedule.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// One training step on images `x` [B, C, H, W]: forward in training mode, the loss
    /// `loss_of(logits)`, backward, SGD at [`Self::lr`], running-statistics update; advances the
    /// schedule. Fails if the loss is not finite.
    pub fn step(
        &mut self,
        x: &Tensor,
        loss_of: impl FnOnce(&Var) -> Result<Var>,
    ) -> Result<Stepped> {
        let out = self.update(x, loss_of)?;
        self.step += 1;
        self.check(out.loss)?;
        Ok(out)
    }

    /// A step like [`Self::step`] at the current learning rate that does not advance the
    /// schedule (the Dynamic Loss's pass over the meta set after each epoch).
    pub fn step_off_schedule(
        &mut self,
        x: &Tensor,
        loss_of: impl FnOnce(&Var) -> Result<Var>,
    ) -> Result<Stepped> {
        let out = self.update(x, loss_of)?;
        self.check(out.loss)?;
        Ok(out)
    }

    fn update(&mut self, x: &Tensor, loss_of: impl FnOnce(&Var) -> Result<Var>) -> Result<Stepped> {
        let leaves: Vec<Var> = self
            .params
            .iter()
            .map(|t| Var::leaf(t.clone(), true))
            .collect();
        let (logits, stats) = self.model.forward(
            &leaves,
            &Var::constant(x.clone()),
            Mode::Train,
            &self.running,
        )?;
        let loss = loss_of(&logits)?;
        let refs: Vec<&Var> = leaves.iter().collect();
        let grads = ag::backward(&loss, &refs)?;
        self.sgd.step(&self.params, &grads, self.lr())?;
        update_running_stats(&self.running, &stats)?;
        Ok(Stepped {
            loss: loss.value().item()?,
            logits: logits.value().clone(),
        })
    }

    fn check(&mut self, loss: f32) -> Result<()> {
        if loss.is_finite() {
            self.last_finite_loss = Some(loss);
            return Ok(());
        }
        let last = match self.last_finite_loss {
            Some(l) => format!("last finite loss {l}"),
            None => "no finite loss before it".into(),
        };
        Err(self.diverged(format!(
            "loss became {loss} ({last}, lr {})",
            self.last_lr()
        )))
    }

    /// A divergence error at the current epoch and step for `reason`.
    pub fn diverged(&self, reason: String) -> Error {
        Error::Diverged {
            epoch: self.epoch + 1,
            step: self.step,
            reason,
            committed: self.epoch,
        }
    }

    /// Every tensor of the classifier's state with its checkpoint name: parameters, momentum
    /// buffers, running statistics.
    pub fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let names = self.param_names();
        let (rm, rv) = self.bn_names();
        fn named<'a>(
            prefix: &str,
            names: &[String],
            ts: &'a [Tensor],
        ) -> Vec<(String, &'a Tensor)> {
            names
                .iter()
                .zip(ts)
                .map(|(n, t)| (format!("{prefix}.{n}"), t))
                .collect()
        }
        let mut out = named("param", &names, &self.params);
        out.extend(named("sgd", &names, &self.sgd.buffers));
        out.extend(named("bn", &rm, &self.running.mean));
        out.extend(named("bn", &rv, &self.running.var));
        out
    }

    /// Logits of images `x` without recording a graph; `mode` chooses batch or running
    /// statistics.
    pub fn logits(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let consts: Vec<Var> = self
            .params
            .iter()
            .map(|t| Var::constant(t.clone()))
            .collect();
        let out = ag::no_grad(|| {
            self.model
                .forward(&consts, &Var::constant(x.clone()), mode, &self.running)
                .map(|r| r.0)
        })?;
        Ok(out.value().clone())
    }

    /// Logits of every batch of `loader` in evaluation mode, row-major [N, classes].
    pub fn predict(&self, loader: Loader) -> Result<Vec<f32>> {
        let [c, h, w] = self.model.input;
        let mut out = Vec::new();
        for batch in loader {
            let b = batch.labels.len();
            let x = Tensor::from_f32(&self.gpu, &[b, c, h, w], &batch.x)?;
            out.extend(self.logits(&x, Mode::Eval)?.to_f32_vec()?);
        }
        Ok(out)
    }

    fn bn_names(&self) -> (Vec<String>, Vec<String>) {
        let n = self.running.mean.len();
        (
            (0..n).map(|i| format!("{i}.running_mean")).collect(),
            (0..n).map(|i| format!("{i}.running_var")).collect(),
        )
    }

    /// Adds parameters, momentum buffers, running statistics and the step count to `ck`.
    pub fn save(&self, ck: &mut Checkpoint) -> Result<()> {
        let names = self.param_names();
        ck.push_tensors("param", &names, &self.params)?;
        ck.push_tensors("sgd", &names, &self.sgd.buffers)?;
        let (rm, rv) = self.bn_names();
        ck.push_tensors("bn", &rm, &self.running.mean)?;
        ck.push_tensors("bn", &rv, &self.running.var)?;
        ck.meta.insert("step".into(), self.step.to_string());
        Ok(())
    }

    /// Restores what [`Self::save`] wrote (to continue training).
    pub fn restore(&mut self, path: &Path, ck: &Checkpoint) -> Result<()> {
        self.restore_weights(path, ck)?;
        ck.restore(path, "sgd", &self.param_names(), &self.sgd.buffers)?;
        self.step = ck.parse(path, "step")?;
        Ok(())
    }

    /// Restores the parameters and running statistics only (to evaluate).
    pub fn restore_weights(&mut self, path: &Path, ck: &Checkpoint) -> Result<()> {
        ck.restore(path, "param", &self.param_names(), &self.params)?;
        let (rm, rv) = self.bn_names();
        ck.restore(path, "bn", &rm, &self.running.mean)?;
        ck.restore(path, "bn", &rv, &self.running.var)
    }
}

#[cfg(test)]
mod tests {
    use super::Classifier;
    use crate::train::config::{LrSchedule, Method, TrainConfig};

    /// The learning rate of every step of a run with `steps` steps in each epoch.
    fn sequence(cfg: &TrainConfig, steps: &[usize]) -> Vec<f32> {
        let s = Classifier::schedule(cfg, steps[0]);
        let mut out = Vec::new();
        let mut step = 0;
        for (epoch, &n) in steps.iter().enumerate() {
            for _ in 0..n {
                out.push(s.lr(step, epoch));
                step += 1;
            }
        }
        out
    }

    fn assert_seq(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() < 1e-7, "step {i}: {g} vs {w}\n{got:?}");
        }
    }

    #[test]
    fn dl_runs_the_authors_schedule() {
        // 4 epochs of 2 steps, 2 warm-up epochs, lr 0.1. The epoch's cosine value is
        // 0.05 (1 + cos(pi e / 4)): 0.1, 0.0853553, 0.05, 0.0146447. Over the 4 warm-up steps
        // it is scaled by 0.1 + 0.9 t / 4: 0.1, 0.325, 0.55, 0.775. A meta epoch has fewer
        // steps (the meta set is held out), which the by-epoch cosine does not notice.
        let mut cfg = TrainConfig {
            method: Method::Dl,
            epochs: 4,
            lr: 0.1,
            // The dl warm-up, not this, sets the lr warm-up of the epoch schedule.
            lr_warmup_epochs: 1,
            ..TrainConfig::default()
        };
        cfg.dl.warmup_epochs = 2;
        assert_eq!(cfg.lr_schedule(), LrSchedule::Epoch);
        let c1 = 0.05 * (1.0 + (std::f64::consts::PI / 4.0).cos());
        let c3 = 0.05 * (1.0 - (std::f64::consts::PI / 4.0).cos());
        assert_seq(
            &sequence(&cfg, &[2, 2, 1, 1]),
            &[0.01, 0.0325, c1 * 0.55, c1 * 0.775, 0.05, c3],
        );
        // The per-step form on request: warm-up over lr_warmup_epochs (2 steps), then a
        // cosine over the remaining 6 of 8 steps.
        cfg.lr_schedule = Some(LrSchedule::Step);
        let cos = |k: f64| 0.05 * (1.0 + (std::f64::consts::PI * k / 6.0).cos());
        let want: Vec<f64> = [0.01, 0.055]
            .into_iter()
            .chain((0..6).map(|k| cos(k as f64)))
            .collect();
        assert_seq(&sequence(&cfg, &[2, 2, 2, 2]), &want);
    }

    #[test]
    fn the_baselines_keep_the_per_step_schedule() {
        let cfg = TrainConfig {
            method: Method::Bs,
            epochs: 3,
            lr: 0.1,
            lr_warmup_epochs: 1,
            ..TrainConfig::default()
        };
        assert_eq!(cfg.lr_schedule(), LrSchedule::Step);
        let cos = |k: f64| 0.05 * (1.0 + (std::f64::consts::PI * k / 4.0).cos());
        assert_seq(
            &sequence(&cfg, &[2, 2, 2]),
            &[0.01, 0.055, cos(0.0), cos(1.0), cos(2.0), cos(3.0)],
        );
        // By epoch on request, warming up over lr_warmup_epochs: cosine values 0.1, 0.075,
        // 0.025.
        let cfg = TrainConfig {
            lr_schedule: Some(LrSchedule::Epoch),
            ..cfg
        };
        assert_seq(
            &sequence(&cfg, &[2, 2, 2]),
            &[0.01, 0.055, 0.075, 0.075, 0.025, 0.025],
        );
    }
}
