//! Training settings: defaults, a TOML file (`--config`), then flags, each overriding the
//! one before. The resolved config is written into `summary.json` and every checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::data::noise::NoiseType;
use crate::data::views::View;
use crate::data::{DataConfig, DatasetKind};
use crate::error::{Error, Result};

/// The training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Cross-entropy on the given labels.
    Ce,
    /// Balanced Softmax: log class counts added to the logits in training.
    Bs,
    /// The Dynamic Loss (label corrector + margin generator, meta-learned).
    Dl,
}

impl Choice for Method {
    const WHAT: &'static str = "method";
    const ALL: &'static [Self] = &[Method::Ce, Method::Bs, Method::Dl];

    fn name(self) -> &'static str {
        match self {
            Method::Ce => "ce",
            Method::Bs => "bs",
            Method::Dl => "dl",
        }
    }
}
crate::choice_by_name!(Method);

/// How the classifier's learning rate advances (docs/method.md, "Schedules").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrSchedule {
    /// Warm-up over `lr_warmup_epochs`, then a cosine computed per step from the end of the
    /// warm-up (the default of ce and bs).
    Step,
    /// The authors' form (the default of dl): the cosine by epoch from epoch 0, constant
    /// within an epoch, scaled during the warm-up by a per-step linear ramp; for dl the
    /// warm-up is the Dynamic Loss warm-up (`dl.warmup_epochs`).
    Epoch,
}

impl Choice for LrSchedule {
    const WHAT: &'static str = "lr schedule";
    const ALL: &'static [Self] = &[LrSchedule::Step, LrSchedule::Epoch];

    fn name(self) -> &'static str {
        match self {
            LrSchedule::Step => "step",
            LrSchedule::Epoch => "epoch",
        }
    }
}
crate::choice_by_name!(LrSchedule);

/// Side of the built-in images in the quick first run ([`TrainConfig::quick_run`]).
pub const QUICK_RUN_SIDE: usize = 12;
/// Training images of the quick run (a seeded subset of the built-in set's 20,000).
pub const QUICK_RUN_IMAGES: usize = 14_000;

/// Default share of each class `--relabel-from` relabels, percent.
pub const DEFAULT_RELABEL_TOP: f64 = 15.0;

/// Every setting of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// ce, bs or dl.
    pub method: Method,
    /// Which data set.
    pub dataset: DatasetKind,
    /// Where the data set's files are.
    pub data_dir: Option<PathBuf>,
    /// Long-tail imbalance ratio rho (1 = balanced).
    pub imbalance: f64,
    /// Label-noise rate lambda.
    pub noise: f64,
    /// Which noise model.
    pub noise_type: NoiseType,
    /// Resize images to this side (folders and lists; default native).
    pub image_size: Option<usize>,
    /// Model name (models/*.toml) or path to a TOML description.
    pub model: String,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Linear warm-up epochs of the cosine schedule (from 0.1 x lr); dl's epoch schedule
    /// warms up over `dl.warmup_epochs` instead.
    pub lr_warmup_epochs: usize,
    /// The learning-rate schedule; `None` takes the method's ([`TrainConfig::lr_schedule`]).
    pub lr_schedule: Option<LrSchedule>,
    /// The view of the classifier's training steps (ce and bs steps; for dl the warm-up, the
    /// real step and the meta-set pass): strong (crop, flip, AutoAugment, Cutout), standard
    /// (crop, flip) or weak (normalise only).
    pub augment: View,
    /// Seed of everything random.
    pub seed: u64,
    /// Use a seeded random subset of N training samples (after long-tailing), for quick runs.
    pub train_limit: Option<usize>,
    /// Evaluate on a seeded random subset of this many test samples (quick runs).
    pub test_limit: Option<usize>,
    /// Train on labels corrected by the classifier in this checkpoint (trained on the same
    /// data): the highest-loss `relabel_top` percent of each class take its prediction.
    pub relabel_from: Option<PathBuf>,
    /// Percent of each class (by given label) that `relabel_from` relabels.
    pub relabel_top: f64,
    /// Data-preparation worker threads.
    pub workers: usize,
    /// Dynamic Loss settings (used by `--method dl`).
    pub dl: DlConfig,
}

/// Settings of the Dynamic Loss (docs/method.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlConfig {
    /// Warm-up epochs: plain cross-entropy while the label corrector is fitted.
    pub warmup_epochs: usize,
    /// The meta batch's view; `None` takes the training view (`augment`), as the authors do.
    pub meta_augment: Option<View>,
    /// Rank bins R (100 for 10 classes, 50 for 100 in the paper).
    pub bins: Option<usize>,
    /// Meta-net Adam learning rate.
    pub meta_lr: f32,
    /// Turn off the label corrector (y* = given label).
    pub no_label_corrector: bool,
    /// Turn off the margin generator.
    pub no_margin_generator: bool,
    /// Add log class counts to the logits (with the corrector only).
    pub balanced_softmax: bool,
    /// Plain learnable vectors instead of MLPs.
    pub vector_meta: bool,
    /// Lowest-loss samples of each whole class as the meta set (no random primary set).
    pub naive_sampling: bool,
    /// Limit the virtual step to the last K parameterised layers (default all).
    pub meta_layers: Option<usize>,
    /// Stabiliser: scale the meta net's Adam step by lr_t / lr_max of the classifier.
    pub meta_lr_follows_classifier: bool,
    /// Variant: the generated margins are a residual added to the log class counts, so the
    /// method starts from Balanced Softmax's margins.
    pub anchor_margins: bool,
    /// Variant: the warm-up fit pulls the corrector's trust g towards this value (between 0
    /// and 1) instead of towards reproducing the given labels (which drives g to 1, where its
    /// gradient g (1 - g) vanishes).
    pub corrector_target: Option<f32>,
    /// Variant: the real step (and the meta-set pass) add an exponential moving average of
    /// the margins, updated after every meta step with this decay, instead of the latest
    /// meta step's margins.
    pub margin_average: Option<f32>,
    /// Stabiliser: clamp margins to [-B, B].
    pub margin_bound: Option<f32>,
    /// Stabiliser: stop meta updates after this fraction of the epochs.
    pub meta_stop: Option<f64>,
}

impl Default for DlConfig {
    fn default() -> Self {
        DlConfig {
            warmup_epochs: 5,
            meta_augment: None,
            bins: None,
            meta_lr: 3e-3,
            no_label_corrector: false,
            no_margin_generator: false,
            balanced_softmax: false,
            vector_meta: false,
            naive_sampling: false,
            meta_layers: None,
            meta_lr_follows_classifier: false,
            anchor_margins: false,
            corrector_target: None,
            margin_average: None,
            margin_bound: None,
            meta_stop: None,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        let data = DataConfig::default();
        TrainConfig {
            method: Method::Ce,
            dataset: data.dataset,
            data_dir: data.data_dir,
            imbalance: data.imbalance,
            noise: data.noise,
            noise_type: data.noise_type,
            image_size: data.image_size,
            model: "resnet8".into(),
            epochs: 4,
            batch_size: 128,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            lr_warmup_epochs: 1,
            lr_schedule: None,
            augment: View::Strong,
            seed: data.seed,
            train_limit: None,
            test_limit: None,
            relabel_from: None,
            relabel_top: DEFAULT_RELABEL_TOP,
            workers: 1,
            dl: DlConfig::default(),
        }
    }
}

impl TrainConfig {
    /// Reads a TOML config file (keys as in this struct; `[dl]` table for the Dynamic Loss).
    pub fn from_file(path: &Path) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })?;
        toml::from_str(&text).map_err(|e| crate::error::toml_err(path, &text, "bad config", &e))
    }

    /// The quick first run on the built-in set: 14,000 of its training images rendered at
    /// 12 x 12, the weak view, batch 32, 3 epochs with no learning-rate warm-up; everything
    /// else as [`TrainConfig::default`]. Small images and the weak view learn the most per
    /// second on a CPU driver; batch 32 learns more per image than 64 at a small cost in
    /// throughput (docs/results.md has the variants measured). The command line starts from it
    /// when the data set is the built-in one and neither `--config` nor `--full` is given.
    pub fn quick_run() -> TrainConfig {
        TrainConfig {
            image_size: Some(QUICK_RUN_SIDE),
            augment: View::Weak,
            batch_size: 32,
            epochs: 3,
            lr_warmup_epochs: 0,
            // Three epochs of 14,000 images beat two of all 20,000 at about the same cost.
            train_limit: Some(QUICK_RUN_IMAGES),
            ..TrainConfig::default()
        }
    }

    /// The learning-rate schedule in effect: the one set, else epoch for dl (the authors'
    /// form) and step for the baselines (the form their recorded runs used).
    pub fn lr_schedule(&self) -> LrSchedule {
        self.lr_schedule.unwrap_or(match self.method {
            Method::Dl => LrSchedule::Epoch,
            Method::Ce | Method::Bs => LrSchedule::Step,
        })
    }

    /// Epochs of the learning-rate warm-up in effect: dl's epoch schedule warms up over the
    /// Dynamic Loss warm-up, as the authors ran it; every other case over `lr_warmup_epochs`.
    pub fn lr_warmup(&self) -> usize {
        match (self.method, self.lr_schedule()) {
            (Method::Dl, LrSchedule::Epoch) => self.dl.warmup_epochs,
            _ => self.lr_warmup_epochs,
        }
    }

    /// The meta batch's view in effect: `dl.meta_augment` if set, else the training view.
    pub fn meta_view(&self) -> View {
        self.dl.meta_augment.unwrap_or(self.augment)
    }

    /// One line saying what a run trains, on what, and where it runs.
    pub fn describe(&self, adapter: &str) -> String {
        let data = if self.imbalance > 1.0 || self.noise > 0.0 {
            format!(
                "rho {} {} noise {}",
                self.imbalance, self.noise_type, self.noise
            )
        } else {
            "balanced, clean".into()
        };
        format!(
            "training {} on {} ({data}) with {} for {} epochs on {adapter}",
            self.method, self.dataset, self.model, self.epochs
        )
    }

    /// These settings with the data-loading part replaced by `d`.
    pub fn with_data(self, d: DataConfig) -> TrainConfig {
        TrainConfig {
            dataset: d.dataset,
            data_dir: d.data_dir,
            imbalance: d.imbalance,
            noise: d.noise,
            noise_type: d.noise_type,
            seed: d.seed,
            image_size: d.image_size,
            ..self
        }
    }

    /// The data-loading part.
    pub fn data_config(&self) -> DataConfig {
        DataConfig {
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            imbalance: self.imbalance,
            noise: self.noise,
            noise_type: self.noise_type,
            seed: self.seed,
            image_size: self.image_size,
        }
    }

    /// Whether a run saved with `saved` may continue under these settings: everything must
    /// match except the Dynamic Loss stabilisers (which may be switched on or off from the
    /// resumed epoch, to compare them from a shared checkpoint) and the worker count (which
    /// does not change results). Returns the flags of the stabilisers that changed, or the
    /// settings that differ, each with its saved and its new value.
    pub fn resume_changes(&self, saved: &TrainConfig) -> std::result::Result<Vec<String>, String> {
        const MAY_CHANGE: [&str; 4] = [
            "workers",
            "meta_lr_follows_classifier",
            "margin_bound",
            "meta_stop",
        ];
        let (now, then) = (self.flat_keys(), saved.flat_keys());
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        for ((key, new), (_, old)) in now.iter().zip(&then) {
            if new == old {
                continue;
            }
            let flag = format!("--{}", key.replace('_', "-"));
            if MAY_CHANGE.contains(&key.as_str()) {
                if key != "workers" {
                    changed.push(flag);
                }
            } else {
                refused.push(format!("{flag} (run: {old}, now: {new})"));
            }
        }
        if refused.is_empty() {
            Ok(changed)
        } else {
            Err(refused.join(", "))
        }
    }

    /// Every setting as (key, value text), the `[dl]` table flattened, in a fixed order.
    fn flat_keys(&self) -> Vec<(String, String)> {
        let text = serde_json::to_string(self).expect("config serialises");
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let mut keys = Vec::new();
        for (k, v) in value.as_object().expect("an object") {
            match v.as_object() {
                Some(inner) => keys.extend(inner.iter().map(|(k, v)| (k.clone(), v.to_string()))),
                None => keys.push((k.clone(), v.to_string())),
            }
        }
        keys
    }

    /// Rejects impossible combinations with one clear message.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size < 2 {
            return bad("--batch-size must be at least 2 (batch norm needs two samples)".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be positive, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!(
                "--momentum must be in [0, 1), got {}",
                self.momentum
            ));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad(format!(
                "--weight-decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if self.imbalance.is_nan() || self.imbalance < 1.0 {
            return bad(format!("--imbalance must be >= 1, got {}", self.imbalance));
        }
        if !(0.0..=1.0).contains(&self.noise) {
            return bad(format!("--noise must be in [0, 1], got {}", self.noise));
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return bad("--train-limit and --test-limit must be at least 1".into());
        }
        if !(0.0..=100.0).contains(&self.relabel_top) {
            return bad(format!(
                "--relabel-top must be a percent in [0, 100], got {}",
                self.relabel_top
            ));
        }
        if self.relabel_from.is_none() && self.relabel_top != DEFAULT_RELABEL_TOP {
            return bad("--relabel-top needs --relabel-from".into());
        }
        if self.method != Method::Dl && self.dl != DlConfig::default() {
            return bad(
                "Dynamic Loss flags (--warmup-epochs, --no-label-corrector, ...) need --method dl"
                    .into(),
            );
        }
        if self.method == Method::Dl {
            let d = &self.dl;
            if d.no_label_corrector && d.no_margin_generator {
                return bad("--no-label-corrector with --no-margin-generator leaves no meta net: use --method ce".into());
            }
            if d.anchor_margins && d.no_margin_generator {
                return bad(
                    "--anchor-margins anchors the generated margins: it needs the margin generator (drop --no-margin-generator)"
                        .into(),
                );
            }
            if let Some(t) = d.corrector_target {
                if !(t > 0.0 && t < 1.0) {
                    return bad(format!(
                        "--corrector-target {t}: the corrector's trust g lies strictly between 0 and 1"
                    ));
                }
                if d.no_label_corrector {
                    return bad(
                        "--corrector-target sets the label corrector's fit: drop --no-label-corrector"
                            .into(),
                    );
                }
            }
            if let Some(b) = d.margin_average {
                if !(b > 0.0 && b < 1.0) {
                    return bad(format!(
                        "--margin-average {b}: the average's decay lies strictly between 0 and 1"
                    ));
                }
                if d.no_margin_generator {
                    return bad(
                        "--margin-average averages the generated margins: drop --no-margin-generator"
                            .into(),
                    );
                }
            }
            if d.balanced_softmax && !d.no_margin_generator {
                return bad(
                    "--balanced-softmax replaces the margin generator: add --no-margin-generator"
                        .into(),
                );
            }
            if d.warmup_epochs >= self.epochs {
                return bad(format!(
                    "--warmup-epochs ({}) must be smaller than --epochs ({})",
                    d.warmup_epochs, self.epochs
                ));
            }
            if d.meta_layers == Some(0) {
                return bad("--meta-layers must be at least 1".into());
            }
            if d.bins == Some(0) {
                return bad("--bins must be at least 1".into());
            }
        }
        crate::data::check_config(&self.data_config())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_error_names_the_file_line_and_key() {
        let dir = std::env::temp_dir().join(format!("dynloss-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.toml");
        std::fs::write(&path, "method = \"dl\"\nepochs = \"two\"\n").unwrap();
        let e = TrainConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("run.toml") && e.contains("line 2") && e.contains("epochs"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        std::fs::write(&path, "[dl]\nmeta_lr = 1\nno_such_key = 3\n").unwrap();
        let e = TrainConfig::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("no_such_key"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn resume_allows_only_stabiliser_and_worker_changes() {
        let saved = TrainConfig::default();
        let mut cfg = saved.clone();
        cfg.workers += 3;
        assert_eq!(cfg.resume_changes(&saved), Ok(vec![]));
        cfg.dl.meta_stop = Some(0.6);
        cfg.dl.margin_bound = Some(5.0);
        let mut changed = cfg.resume_changes(&saved).unwrap();
        changed.sort();
        assert_eq!(changed, vec!["--margin-bound", "--meta-stop"]);
        cfg.lr *= 2.0;
        cfg.epochs = 9;
        let e = cfg.resume_changes(&saved).unwrap_err();
        assert!(e.contains("--lr (run: 0.1, now: 0.2)"), "{e}");
        assert!(e.contains("--epochs (run: 4, now: 9)"), "{e}");
        let mut other = saved.clone();
        other.dl.meta_lr = 1e-3;
        assert!(
            other
                .resume_changes(&saved)
                .unwrap_err()
                .contains("--meta-lr")
        );
    }

    #[test]
    fn meta_net_combinations_that_cannot_work_are_refused_by_flag() {
        let mut cfg = TrainConfig {
            method: Method::Dl,
            ..TrainConfig::default()
        };
        cfg.dl.warmup_epochs = 1;
        assert!(cfg.validate().is_ok());
        cfg.dl.anchor_margins = true;
        assert!(
            cfg.validate().is_ok(),
            "anchored margins with the generator"
        );
        cfg.dl.no_margin_generator = true;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("--anchor-margins") && e.contains("--no-margin-generator"),
            "{e}"
        );
        cfg.dl.anchor_margins = false;
        for (t, ok) in [(0.9, true), (1.0, false), (0.0, false), (f32::NAN, false)] {
            cfg.dl.corrector_target = Some(t);
            let r = cfg.validate();
            assert_eq!(r.is_ok(), ok, "--corrector-target {t}");
            if let Err(e) = r {
                assert!(e.to_string().contains("--corrector-target"), "{e}");
            }
        }
        cfg.dl.corrector_target = None;
        cfg.dl.no_margin_generator = false;
        for (b, ok) in [(0.98, true), (1.0, false), (0.0, false), (f32::NAN, false)] {
            cfg.dl.margin_average = Some(b);
            let r = cfg.validate();
            assert_eq!(r.is_ok(), ok, "--margin-average {b}");
            if let Err(e) = r {
                assert!(e.to_string().contains("--margin-average"), "{e}");
            }
        }
        cfg.dl.margin_average = Some(0.98);
        cfg.dl.no_margin_generator = true;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("--margin-average") && e.contains("--no-margin-generator"),
            "{e}"
        );
        cfg.dl.margin_average = None;
        cfg.dl.balanced_softmax = true;
        assert!(
            cfg.validate().is_ok(),
            "Balanced Softmax margins with the corrector"
        );
        cfg.dl.no_margin_generator = false;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("--balanced-softmax"), "{e}");
    }

    #[test]
    fn relabel_settings_are_checked_by_flag() {
        let mut cfg = TrainConfig {
            relabel_top: 10.0,
            ..TrainConfig::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("--relabel-top needs --relabel-from"), "{e}");
        cfg.relabel_from = Some("runs/bs/checkpoint.safetensors".into());
        assert!(cfg.validate().is_ok());
        for (p, ok) in [
            (0.0, true),
            (100.0, true),
            (-1.0, false),
            (100.5, false),
            (f64::NAN, false),
        ] {
            cfg.relabel_top = p;
            let r = cfg.validate();
            assert_eq!(r.is_ok(), ok, "--relabel-top {p}");
            if let Err(e) = r {
                assert!(e.to_string().contains("--relabel-top"), "{e}");
            }
        }
    }
}
