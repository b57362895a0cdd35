//! `train --method dl`: the Dynamic Loss as a training method. Each epoch ranks the training
//! samples, then runs either a warm-up epoch over the whole set (cross-entropy while the label
//! corrector is fitted to the given labels) or, after splitting off the meta set, a meta epoch
//! (meta step + real step every iteration, then one pass over the meta set). The algorithm itself (meta net, virtual
//! step and meta gradient, ranks and sampling) is in `crate::dynloss`.

mod diagnostics;

use std::path::Path;

use crate::autograd::{self as ag, Var};
use crate::data::views::View;
use crate::dynloss::meta_net::{MetaNet, corrected_labels};
use crate::dynloss::meta_step::{
    GumbelNoise, MetaBatch, MetaParts, Pseudo, VirtualSgd, classifier_loss, last_layers, margins,
    meta_gradient, one_hot_rows, pseudo_labels,
};
use crate::dynloss::ranking::{MetaSplit, Ranking, hierarchical_split, rank};
use crate::error::{Error, Result};
use crate::nn::Mode;
use crate::optim::Adam;
use crate::random::{Streams, ViewRole};
use crate::tensor::Tensor;
use crate::tensor::elementwise::{self, Binary};

use super::baseline::log_counts;
use super::checkpoint::Checkpoint;
use super::classifier::{Classifier, Stepped};
use super::config::{DlConfig, TrainConfig};
use super::data::TrainData;
use super::method::{EpochEnv, EpochStats, TrainingMethod};
pub use diagnostics::{DlDiagnostics, MARGIN_ALARM};

/// State of the Dynamic Loss method: the meta net, its optimizer and the settings.
pub struct DynamicLoss {
    settings: DlConfig,
    meta: MetaNet,
    theta: Vec<Tensor>,
    adam: Adam,
    virtual_params: Vec<usize>,
    fixed_margins: Option<Tensor>,
    anchor: Option<Tensor>,
    bins: usize,
    history: Vec<DlDiagnostics>,
    counts: Vec<usize>,
    /// With `--margin-average`: the running average of the margins after each meta step
    /// (none before the first), kept on the GPU so the iteration reads nothing back for it.
    margin_average: Option<Tensor>,
}

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
    /// The meta net, its Adam optimizer and the ablation settings for a run of `cfg` on
    /// `data` training `clf`.
    pub fn new(
        gpu: &crate::gpu::Gpu,
        cfg: &TrainConfig,
        data: &TrainData,
        clf: &Classifier,
    ) -> Result<DynamicLoss> {
        Self::for_labels(gpu, cfg, &data.train.labels, data.train.classes, clf)
    }

    /// As [`Self::new`] for a training set with the given `labels` of `classes` classes.
    pub fn for_labels(
        gpu: &crate::gpu::Gpu,
        cfg: &TrainConfig,
        labels: &[u32],
        classes: usize,
        clf: &Classifier,
    ) -> Result<DynamicLoss> {
        let d = &cfg.dl;
        let bins = d.bins.unwrap_or(if classes <= 10 { 100 } else { 50 });
        let meta = MetaNet::new(bins, classes, d.vector_meta);
        let theta = meta.init(gpu, &mut Streams(cfg.seed).meta_init())?;
        let adam = Adam::new(&theta, d.meta_lr, 0.0);
        let prior = || log_counts(gpu, labels, classes);
        let fixed_margins = d.balanced_softmax.then(prior).transpose()?;
        let anchor = d.anchor_margins.then(prior).transpose()?;
        Ok(DynamicLoss {
            settings: d.clone(),
            virtual_params: last_layers(&clf.param_names(), d.meta_layers),
            meta,
            theta,
            adam,
            fixed_margins,
            anchor,
            bins,
            history: Vec::new(),
            counts: crate::data::count_labels(labels, classes),
            margin_average: None,
        })
    }

    fn parts(&self) -> MetaParts<'_> {
        MetaParts {
            corrector: !self.settings.no_label_corrector,
            generator: !self.settings.no_margin_generator,
            fixed_margins: self.fixed_margins.as_ref(),
            margin_bound: self.settings.margin_bound,
            anchor: self.anchor.as_ref(),
        }
    }

    /// The parts the classifier trains with: the meta step's, except that with
    /// `--margin-average` the margins are the running average, a constant.
    fn training_parts(&self) -> MetaParts<'_> {
        match &self.margin_average {
            Some(avg) => MetaParts {
                generator: false,
                fixed_margins: Some(avg),
                margin_bound: None,
                anchor: None,
                ..self.parts()
            },
            None => self.parts(),
        }
    }

    /// The margins the meta net gives now (the generator's, with the anchor if any, or the
    /// fixed ones), none when the loss adds none.
    fn meta_margin_tensor(&self) -> Result<Option<Tensor>> {
        Ok(
            ag::no_grad(|| margins(&self.meta, &self.theta_consts(), self.parts()))?
                .map(|q| q.value().clone()),
        )
    }

    /// [`Self::meta_margin_tensor`], read back.
    pub fn meta_margins(&self) -> Result<Option<Vec<f32>>> {
        self.meta_margin_tensor()?
            .map(|q| q.to_f32_vec())
            .transpose()
    }

    /// The margins the classifier's real step adds now: the running average with
    /// `--margin-average` once a meta step has run, else the meta net's.
    pub fn training_margins(&self) -> Result<Option<Vec<f32>>> {
        match &self.margin_average {
            Some(avg) => Ok(Some(avg.to_f32_vec()?)),
            None => self.meta_margins(),
        }
    }

    /// Folds the meta net's margins after a meta step into the running average,
    /// decay avg + (1 - decay) q, computed as q + decay (avg - q); the first meta step starts it
    /// (so no bias correction is needed).
    fn update_margin_average(&mut self) -> Result<()> {
        let Some(decay) = self.settings.margin_average else {
            return Ok(());
        };
        let q = self
            .meta_margin_tensor()?
            .expect("--margin-average is validated to need the generator");
        self.margin_average = Some(match self.margin_average.take() {
            Some(avg) => {
                let pull = elementwise::binary_scaled(&avg, &q, Binary::Sub, decay)?;
                elementwise::add(&q, &pull)?
            }
            None => q,
        });
        Ok(())
    }

    fn theta_consts(&self) -> Vec<Var> {
        self.theta
            .iter()
            .map(|t| Var::constant(t.clone()))
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.meta.params.iter().map(|p| p.name.clone()).collect()
    }

    /// Losses (weak view, eval mode, cross-entropy on given labels, computed on the GPU) and
    /// logits of every training sample.
    fn losses_and_logits(env: &EpochEnv, clf: &Classifier) -> Result<(Vec<f32>, Vec<f32>)> {
        let train = &env.data.train;
        let n = train.len();
        let logits = clf.predict(env.data.predict_loader(train, (0..n).collect())?)?;
        let c = train.classes;
        let mut losses = Vec::with_capacity(n);
        for start in (0..n).step_by(8192) {
            let end = (start + 8192).min(n);
            let lt = Tensor::from_f32(env.gpu, &[end - start, c], &logits[start * c..end * c])?;
            let lab = Tensor::from_u32(env.gpu, &[end - start], &train.labels[start..end])?;
            losses
                .extend(crate::tensor::softmax::cross_entropy_hard(&lt, &lab, None)?.to_f32_vec()?);
        }
        Ok((losses, logits))
    }

    fn bins_tensor(env: &EpochEnv, ranking: &Ranking, indices: &[usize]) -> Result<Tensor> {
        let b: Vec<u32> = indices.iter().map(|&i| ranking.bins[i]).collect();
        Tensor::from_u32(env.gpu, &[b.len()], &b)
    }

    /// `split.train` in this epoch's order.
    fn train_order(env: &EpochEnv, split: &MetaSplit, epoch: usize) -> Vec<usize> {
        env.data
            .shuffle(split.train.len(), epoch)
            .into_iter()
            .map(|i| split.train[i])
            .collect()
    }

    /// Warm-up epoch over the whole training set (no meta set is held out): cross-entropy on
    /// the given labels; meanwhile the corrector learns to reproduce them. Returns the stats
    /// and the number of samples in the epoch's order.
    fn warmup_epoch(
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
    fn fit_corrector(&mut self, bins: &Tensor, labels: &Tensor, yhat: &Tensor) -> Result<()> {
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

    /// A meta-batch order long enough for `iters` batches of `mb`: reshuffled meta set repeats.
    fn meta_order(seed: u64, meta: &[usize], iters: usize, mb: usize, epoch: usize) -> Vec<usize> {
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
    fn meta_epoch(
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
    fn meta_step(
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
    fn meta_set_pass(
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

impl TrainingMethod for DynamicLoss {
    fn epoch(&mut self, env: &EpochEnv, clf: &mut Classifier, epoch: usize) -> Result<EpochStats> {
        let (losses, logits) = Self::losses_and_logits(env, clf)?;
        let train = &env.data.train;
        let ranking = rank(env.gpu, &losses, &train.labels, train.classes, self.bins)?;
        let warmup = epoch < self.settings.warmup_epochs;
        let (mut st, outcome, meta_set) = if warmup {
            let (st, trained) = self.warmup_epoch(env, clf, epoch, &ranking)?;
            let outcome = MetaOutcome {
                meta_loss: None,
                gumbel_agreement: None,
                trained,
            };
            (st, outcome, 0)
        } else {
            let mut rng = Streams(env.cfg.seed).meta_split(epoch);
            let split = hierarchical_split(&ranking, self.settings.naive_sampling, &mut rng);
            let (st, outcome) = self.meta_epoch(env, clf, epoch, &split, &ranking)?;
            self.meta_set_pass(env, clf, epoch, &split)?;
            (st, outcome, split.meta.len())
        };
        let diag = self.diagnostics(env, &ranking, &logits, warmup, &outcome, meta_set)?;
        if let Some(a) = &diag.alarm {
            eprintln!("warning: epoch {}: {a}", epoch + 1);
        }
        st.extra = Some(serde_json::to_value(&diag).expect("diagnostics serialise"));
        self.history.push(diag);
        self.plots(env)?;
        Ok(st)
    }

    fn save(&self, ck: &mut Checkpoint) -> Result<()> {
        let names = self.names();
        ck.push_tensors("meta", &names, &self.theta)?;
        ck.push_tensors("adam_m", &names, &self.adam.m)?;
        ck.push_tensors("adam_v", &names, &self.adam.v)?;
        ck.meta.insert(
            "adam_steps".into(),
            serde_json::to_string(&self.adam.steps).expect("serialise"),
        );
        if let Some(avg) = &self.margin_average {
            ck.meta.insert(
                "margin_average".into(),
                serde_json::to_string(&avg.to_f32_vec()?).expect("serialise"),
            );
        }
        ck.meta.insert(
            "dl_history".into(),
            serde_json::to_string(&self.history).expect("serialise"),
        );
        Ok(())
    }

    fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        let names = self.names();
        let mut out = Vec::new();
        for (prefix, ts) in [
            ("meta", &self.theta),
            ("adam_m", &self.adam.m),
            ("adam_v", &self.adam.v),
        ] {
            out.extend(
                names
                    .iter()
                    .zip(ts)
                    .map(|(n, t)| (format!("{prefix}.{n}"), t)),
            );
        }
        if let Some(avg) = &self.margin_average {
            out.push(("margin_average".into(), avg));
        }
        out
    }

    fn restore(&mut self, path: &Path, ck: &Checkpoint) -> Result<()> {
        let names = self.names();
        ck.restore(path, "meta", &names, &self.theta)?;
        ck.restore(path, "adam_m", &names, &self.adam.m)?;
        ck.restore(path, "adam_v", &names, &self.adam.v)?;
        self.adam.steps = match ck.meta.get("adam_steps") {
            Some(text) => serde_json::from_str(text).map_err(|e| Error::Format {
                path: path.into(),
                msg: format!("checkpoint metadata 'adam_steps': {e}"),
            })?,
            // Written when Adam counted its steps once for all parameters: that count is the
            // one every parameter's bias correction used.
            None => vec![ck.parse(path, "adam_step")?; names.len()],
        };
        if self.adam.steps.len() != names.len() {
            return Err(Error::Format {
                path: path.into(),
                msg: format!(
                    "checkpoint metadata 'adam_steps' has {} counts for {} meta-net parameters",
                    self.adam.steps.len(),
                    names.len()
                ),
            });
        }
        self.margin_average = match ck.meta.get("margin_average") {
            Some(text) => {
                let avg: Vec<f32> = serde_json::from_str(text).map_err(|e| Error::Format {
                    path: path.into(),
                    msg: format!("checkpoint metadata 'margin_average': {e}"),
                })?;
                if avg.len() != self.counts.len() {
                    return Err(Error::Format {
                        path: path.into(),
                        msg: format!(
                            "checkpoint metadata 'margin_average' has {} margins for {} classes",
                            avg.len(),
                            self.counts.len()
                        ),
                    });
                }
                Some(Tensor::from_f32(self.theta[0].gpu(), &[avg.len()], &avg)?)
            }
            None => None,
        };
        self.history =
            serde_json::from_str(ck.get(path, "dl_history")?).map_err(|e| Error::Format {
                path: path.into(),
                msg: format!("checkpoint metadata 'dl_history': {e}"),
            })?;
        Ok(())
    }
}

/// What a meta or warm-up epoch reports to the diagnostics besides the classifier's stats.
struct MetaOutcome {
    /// Mean meta loss over the epoch's meta steps.
    meta_loss: Option<f64>,
    /// Share of pseudo-labels on which the real step's fresh sample equals the one the
    /// virtual step used, percent.
    gumbel_agreement: Option<f64>,
    /// Samples in the epoch's training order.
    trained: usize,
}
