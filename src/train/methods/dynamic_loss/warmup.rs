//! The warm-up epochs: plain cross-entropy on the given labels over the whole training set,
//! while the label corrector is fitted to reproduce them.

use crate::autograd::{self as ag, Var};
use crate::data::views::View;
use crate::dynloss::meta_net::corrected_labels;
use crate::dynloss::meta_step::{Pseudo, pseudo_labels};
use crate::dynloss::ranking::Ranking;
use crate::error::Result;
use crate::nn::Mode;
use crate::random::ViewRole;
use crate::tensor::Tensor;

use super::DynamicLoss;
use crate::train::classifier::{Classifier, Stepped};
use crate::train::method::{EpochEnv, EpochStats};

impl DynamicLoss {
    /// Warm-up epoch over the whole training set (no meta set is held out): cross-entropy on
    /// the given labels; meanwhile the corrector learns to reproduce them. Returns the stats
    /// and the number of samples in the epoch's order.
    pub(super) fn warmup_epoch(
        &mut self,
        env: &EpochEnv,
        clf: &mut Classifier,
        epoch: usize,
        ranking: &Ranking,
    ) -> Result<(EpochStats, usize)> {
        let order = env.data.shuffle(env.data.train.len(), epoch);
        let trained = order.len();
        let fit = !self.settings.no_label_corrector;
        // The fit needs the weak view; when the training view is the weak view, the step's
        // own logits are those and no second loader is needed.
        let mut weak = if fit && env.cfg.augment != View::Weak {
            Some(
                env.data
                    .loader(order.clone(), View::Weak, ViewRole::Weak, epoch)?,
            )
        } else {
            None
        };
        let loader = env
            .data
            .loader(order, env.cfg.augment, ViewRole::Train, epoch)?;
        let mut st = EpochStats::default();
        for batch in loader {
            let (x, labels) = env.data.upload(env.gpu, &batch.x, &batch.labels)?;
            let weak_x = match weak.as_mut().and_then(Iterator::next) {
                Some(wb) => {
                    debug_assert_eq!(wb.indices, batch.indices);
                    Some(env.data.upload(env.gpu, &wb.x, &wb.labels)?.0)
                }
                None => None,
            };
            let bins = Self::bins_tensor(env, ranking, &batch.indices)?;
            let (out, _) = self.warmup_step(clf, &x, weak_x.as_ref(), &labels, &bins)?;
            st.record(out.loss, &out.logits, &batch.labels)?;
            env.tick(|| format!("warm-up loss {:.3}", st.mean_loss()))?;
        }
        Ok((st, trained))
    }

    /// One warm-up iteration on training-view images `x` with given `labels`: the
    /// classifier's cross-entropy step, and (unless the corrector is off) one fit step of the
    /// corrector with yhat = softmax of the weak view's logits of this very batch, computed
    /// with the parameters of this step in training mode, as the authors' code does. `weak`
    /// is the weak view of the batch, `None` when `x` is the weak view. Returns the step and
    /// the logits the fit used.
    pub fn warmup_step(
        &mut self,
        clf: &mut Classifier,
        x: &Tensor,
        weak: Option<&Tensor>,
        labels: &Tensor,
        bins: &Tensor,
    ) -> Result<(Stepped, Option<Tensor>)> {
        let fit = !self.settings.no_label_corrector;
        let weak_logits = match weak {
            Some(w) if fit => Some(clf.logits(w, Mode::Train)?),
            _ => None,
        };
        let out = clf.step(x, |logits| {
            ag::mean_all(&ag::cross_entropy(logits, labels, None)?)
        })?;
        if !fit {
            return Ok((out, None));
        }
        let logits = weak_logits.unwrap_or_else(|| out.logits.clone());
        let yhat = pseudo_labels(&logits, Pseudo::Softmax)?;
        self.fit_corrector(bins, labels, &yhat)?;
        Ok((out, Some(logits)))
    }

    /// One Adam step of the corrector towards reproducing the given labels: cross-entropy of
    /// y* against the one-hot label, i.e. -log y*_y. With `corrector_target` T instead the
    /// binary cross-entropy of g against T, -(T log g + (1 - T) log(1 - g)), whose minimum is
    /// g = T.
    pub(super) fn fit_corrector(
        &mut self,
        bins: &Tensor,
        labels: &Tensor,
        yhat: &Tensor,
    ) -> Result<()> {
        let tv: Vec<Var> = self
            .theta
            .iter()
            .map(|t| Var::leaf(t.clone(), true))
            .collect();
        let g = self.meta.label_weights(&tv, bins, labels)?;
        let per_sample = match self.settings.corrector_target {
            Some(t) => ag::add(
                &ag::scale(&ag::log(&g)?, -t)?,
                &ag::scale(&ag::log(&ag::affine(&g, -1.0, 1.0)?)?, t - 1.0)?,
            )?,
            None => {
                let ystar = corrected_labels(&g, labels, yhat)?;
                ag::neg(&ag::log(&ag::pick(&ystar, labels)?)?)?
            }
        };
        let fit_loss = ag::mean_all(&per_sample)?;
        let refs: Vec<&Var> = tv.iter().collect();
        let grads = ag::backward(&fit_loss, &refs)?;
        self.adam.update(&self.theta, &grads)
    }
}
