//! The meta epochs: every iteration a meta step (virtual SGD step, meta loss, Adam on the meta
//! net) then the real step with the updated meta net; after the epoch one pass over the meta
//! set.

use crate::autograd::{self as ag, Var};
use crate::data::views::View;
use crate::dynloss::meta_step::{
    GumbelNoise, MetaBatch, Pseudo, VirtualSgd, classifier_loss, margins, meta_gradient,
    one_hot_rows, pseudo_labels,
};
use crate::dynloss::ranking::{MetaSplit, Ranking};
use crate::error::Result;
use crate::nn::Mode;
use crate::random::{Streams, ViewRole};
use crate::tensor::Tensor;

use super::{DynamicLoss, MetaOutcome};
use crate::train::classifier::{Classifier, Stepped};
use crate::train::method::{EpochEnv, EpochStats};

/// The tensors of one meta iteration: the training batch in both views with its given labels
/// and rank bins, and the meta batch.
pub struct IterationBatch {
    /// Weak view of the training batch [B, C, H, W] (meta step and pseudo-labels).
    pub weak: Tensor,
    /// Training view of the same images (the real step).
    pub strong: Tensor,
    /// Given labels u32 [B].
    pub labels: Tensor,
    /// Meta images [M, C, H, W].
    pub meta_x: Tensor,
    /// Meta labels u32 [M].
    pub meta_labels: Tensor,
    /// Rank bin of each training sample, u32 [B].
    pub bins: Tensor,
}

/// What one meta iteration reports.
pub struct Iteration {
    /// The real step.
    pub real: Stepped,
    /// The meta loss, when a meta step ran.
    pub meta_loss: Option<f64>,
    /// Pseudo-labels on which the real step's sample equals the virtual step's, and how many
    /// were drawn (none without a meta step).
    pub agreement: Option<(usize, usize)>,
}

impl DynamicLoss {
    /// `split.train` in this epoch's order.
    pub(super) fn train_order(env: &EpochEnv, split: &MetaSplit, epoch: usize) -> Vec<usize> {
        env.data
            .shuffle(split.train.len(), epoch)
            .into_iter()
            .map(|i| split.train[i])
            .collect()
    }

    /// A meta-batch order long enough for `iters` batches of `mb`: reshuffled meta set repeats.
    pub(super) fn meta_order(
        seed: u64,
        meta: &[usize],
        iters: usize,
        mb: usize,
        epoch: usize,
    ) -> Vec<usize> {
        let mut order = Vec::with_capacity(iters * mb + meta.len());
        let mut round = 0;
        while order.len() < iters * mb {
            let perm = Streams(seed).meta_order(meta.len(), epoch, round);
            order.extend(perm.into_iter().map(|i| meta[i]));
            round += 1;
        }
        order
    }

    /// Meta epoch: every iteration a meta step (virtual step, meta loss, Adam on the meta net)
    /// then the real step with the updated meta net and a fresh hard Gumbel sample. Returns
    /// the stats and what the diagnostics report of the epoch.
    pub(super) fn meta_epoch(
        &mut self,
        env: &EpochEnv,
        clf: &mut Classifier,
        epoch: usize,
        split: &MetaSplit,
        ranking: &Ranking,
    ) -> Result<(EpochStats, MetaOutcome)> {
        let cfg = env.cfg;
        let order = Self::train_order(env, split, epoch);
        let weak = env
            .data
            .loader(order.clone(), View::Weak, ViewRole::Weak, epoch)?;
        let strong = env
            .data
            .loader(order, cfg.augment, ViewRole::Train, epoch)?;
        let iters = weak.num_batches();
        let mb = cfg.batch_size.min(split.meta.len()).max(1);
        let meta_loader = env.data.loader_in(
            Self::meta_order(cfg.seed, &split.meta, iters, mb, epoch),
            cfg.meta_view(),
            ViewRole::Meta,
            epoch,
            mb,
        )?;
        let meta_active = self
            .settings
            .meta_stop
            .is_none_or(|f| (epoch as f64) < f * cfg.epochs as f64);
        let mut st = EpochStats::default();
        let mut meta_sum = 0.0;
        let mut meta_n = 0usize;
        let (mut agree, mut drawn) = (0usize, 0usize);
        for (it, ((wb, sb), mbatch)) in weak.zip(strong).zip(meta_loader).enumerate() {
            debug_assert_eq!(wb.indices, sb.indices);
            let (weak, labels) = env.data.upload(env.gpu, &wb.x, &wb.labels)?;
            let (strong, _) = env.data.upload(env.gpu, &sb.x, &sb.labels)?;
            let (meta_x, meta_labels) = env.data.upload(env.gpu, &mbatch.x, &mbatch.labels)?;
            let up = IterationBatch {
                weak,
                strong,
                labels,
                meta_x,
                meta_labels,
                bins: Self::bins_tensor(env, ranking, &wb.indices)?,
            };
            let seeds = Streams(cfg.seed).gumbel(epoch, it);
            let step = self.meta_iteration(clf, &up, seeds, meta_active)?;
            if let Some(loss) = step.meta_loss {
                meta_sum += loss;
                meta_n += 1;
            }
            if let Some((a, n)) = step.agreement {
                agree += a;
                drawn += n;
            }
            let out = step.real;
            st.record(out.loss, &out.logits, &sb.labels)?;
            env.tick(|| {
                format!(
                    "loss {:.3} meta {:.3}",
                    st.mean_loss(),
                    meta_sum / meta_n.max(1) as f64
                )
            })?;
        }
        Ok((
            st,
            MetaOutcome {
                meta_loss: (meta_n > 0).then(|| meta_sum / meta_n as f64),
                gumbel_agreement: (drawn > 0).then(|| 100.0 * agree as f64 / drawn as f64),
                trained: split.train.len(),
            },
        ))
    }

    /// One iteration of a meta epoch on `up`: unless `meta_active` is false, a meta step with
    /// the virtual step's hard Gumbel sample drawn from `seeds[0]`; then the real step on the
    /// training view with the updated meta net and a fresh sample from `seeds[1]`.
    pub fn meta_iteration(
        &mut self,
        clf: &mut Classifier,
        up: &IterationBatch,
        seeds: [u64; 2],
        meta_active: bool,
    ) -> Result<Iteration> {
        let noise = seeds.map(GumbelNoise::Seed);
        self.meta_iteration_with(clf, up, noise, meta_active)
    }

    /// [`Self::meta_iteration`] with the two samples' noise given (the parity test injects
    /// another implementation's uniforms).
    pub fn meta_iteration_with(
        &mut self,
        clf: &mut Classifier,
        up: &IterationBatch,
        noise: [GumbelNoise; 2],
        meta_active: bool,
    ) -> Result<Iteration> {
        let [virtual_noise, real_noise] = noise;
        let (yhat, meta_loss, agreement) = if meta_active {
            let pseudo = virtual_noise.pseudo();
            let (logits, virtual_yhat, meta_loss) = self.meta_step(clf, up, pseudo)?;
            self.update_margin_average()?;
            // The real step's own sample from the same weak logits.
            let c = logits.shape()[1];
            let real = real_noise.argmax(&logits.to_f32_vec()?, c)?;
            let yhat = one_hot_rows(up.labels.gpu(), &real, c)?;
            // The pseudo-labels the real step is given against those the virtual step used.
            let virt = virtual_yhat.to_f32_vec()?;
            let agree = real
                .iter()
                .zip(virt.chunks(c))
                .filter(|(r, row)| row[**r] == 1.0)
                .count();
            (yhat, Some(meta_loss), Some((agree, real.len())))
        } else {
            let logits = clf.logits(&up.weak, Mode::Train)?;
            let yhat = pseudo_labels(&logits, real_noise.pseudo())?;
            (yhat, None, None)
        };
        // Real step: strong view, the updated meta net, no graph through it.
        let tv = self.theta_consts();
        let parts = self.training_parts();
        let batch = up.meta_batch();
        let real = clf.step(&up.strong, |logits| {
            classifier_loss(&self.meta, &tv, logits, &batch, &yhat, parts)
        })?;
        Ok(Iteration {
            real,
            meta_loss,
            agreement,
        })
    }

    /// The meta step: the meta gradient through a virtual SGD step of `clf` at its current
    /// learning rate, then one Adam step on the meta net. Returns the weak-view logits its
    /// pseudo-labels were drawn from, those pseudo-labels and the meta loss.
    pub(super) fn meta_step(
        &mut self,
        clf: &Classifier,
        up: &IterationBatch,
        pseudo: Pseudo,
    ) -> Result<(Tensor, Tensor, f64)> {
        let lr = clf.lr();
        let opt = VirtualSgd {
            lr,
            momentum: clf.sgd().momentum,
            weight_decay: clf.sgd().weight_decay,
            buffers: Some(&clf.sgd().buffers),
        };
        let mg = meta_gradient(
            clf.model(),
            clf.params(),
            clf.running(),
            &self.meta,
            &self.theta,
            &up.meta_batch(),
            pseudo,
            &opt,
            &self.virtual_params,
            self.parts(),
        )?;
        let meta_loss = mg.meta_loss.value().item()? as f64;
        if !meta_loss.is_finite() {
            return Err(clf.diverged(format!("the meta loss became {meta_loss}")));
        }
        if self.settings.meta_lr_follows_classifier {
            self.adam.lr = self.settings.meta_lr * lr / clf.peak_lr();
        }
        self.adam.update(&self.theta, &mg.grads)?;
        Ok((mg.logits, mg.yhat, meta_loss))
    }

    /// After each meta epoch: one pass over the meta set with cross-entropy on its given
    /// labels plus the margins (no label correction), off the learning-rate schedule.
    pub(super) fn meta_set_pass(
        &self,
        env: &EpochEnv,
        clf: &mut Classifier,
        epoch: usize,
        split: &MetaSplit,
    ) -> Result<()> {
        let order: Vec<usize> = Streams(env.cfg.seed)
            .meta_set_order(split.meta.len(), epoch)
            .into_iter()
            .map(|i| split.meta[i])
            .collect();
        let loader = env
            .data
            .loader(order, env.cfg.augment, ViewRole::MetaSetPass, epoch)?;
        let q = self.meta_set_margins()?;
        for batch in loader {
            if batch.labels.len() < 2 {
                continue;
            }
            let (x, labels) = env.data.upload(env.gpu, &batch.x, &batch.labels)?;
            self.meta_set_step(clf, &x, &labels, q.as_ref())?;
        }
        Ok(())
    }

    /// The margins the meta-set pass adds, a constant (none when the loss adds none).
    pub fn meta_set_margins(&self) -> Result<Option<Var>> {
        Ok(margins(&self.meta, &self.theta_consts(), self.training_parts())?.map(|q| q.detach()))
    }

    /// One step of the meta-set pass on images `x` with given `labels`: cross-entropy plus
    /// the margins `q` of [`Self::meta_set_margins`], off the learning-rate schedule.
    pub fn meta_set_step(
        &self,
        clf: &mut Classifier,
        x: &Tensor,
        labels: &Tensor,
        q: Option<&Var>,
    ) -> Result<Stepped> {
        clf.step_off_schedule(x, |logits| {
            ag::mean_all(&ag::cross_entropy(logits, labels, q)?)
        })
    }
}

impl IterationBatch {
    fn meta_batch(&self) -> MetaBatch<'_> {
        MetaBatch {
            x: &self.weak,
            labels: &self.labels,
            bins: &self.bins,
            meta_x: &self.meta_x,
            meta_labels: &self.meta_labels,
        }
    }
}
