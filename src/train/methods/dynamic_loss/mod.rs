//! `train --method dl`: the Dynamic Loss as a training method. Each epoch ranks the training
//! samples, then runs either a warm-up epoch over the whole set (cross-entropy while the label
//! corrector is fitted to the given labels) or, after splitting off the meta set, a meta epoch
//! (meta step + real step every iteration, then one pass over the meta set). The algorithm itself (meta net, virtual
//! step and meta gradient, ranks and sampling) is in `crate::dynloss`.

mod diagnostics;
mod meta_epoch;
mod state;
mod warmup;

use std::path::Path;

use crate::autograd::{self as ag, Var};
use crate::dynloss::meta_net::MetaNet;
use crate::dynloss::meta_step::{MetaParts, last_layers, margins};
use crate::dynloss::ranking::{Ranking, hierarchical_split, rank};
use crate::error::Result;
use crate::optim::Adam;
use crate::random::Streams;
use crate::tensor::Tensor;
use crate::tensor::elementwise::{self, Binary};

use super::baseline::log_counts;
use crate::train::checkpoint::Checkpoint;
use crate::train::classifier::Classifier;
use crate::train::config::{DlConfig, TrainConfig};
use crate::train::data::TrainData;
use crate::train::method::{EpochEnv, EpochStats, TrainingMethod};
pub use diagnostics::{DlDiagnostics, MARGIN_ALARM};
pub use meta_epoch::{Iteration, IterationBatch};

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
        self.save_state(ck)
    }

    fn state_tensors(&self) -> Vec<(String, &Tensor)> {
        self.named_state()
    }

    fn restore(&mut self, path: &Path, ck: &Checkpoint) -> Result<()> {
        self.restore_state(path, ck)
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
