//! `train`: flags that map onto [`TrainConfig`] (whose `Default` holds every default), and the
//! run.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use dynloss_wgpu::Result;
use dynloss_wgpu::data::DatasetKind;
use dynloss_wgpu::data::views::View;
use dynloss_wgpu::gpu::Gpu;
use dynloss_wgpu::train::{self, LrSchedule, Method, RunOptions, TrainConfig};

use super::choice;
use super::data::DataFlags;

/// Flags of `train`; each overrides `--config`, which overrides the defaults. A flag's field
/// name is the config key it sets (`--batch-size` sets `batch_size`; Dynamic Loss flags set
/// keys of the `[dl]` table).
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Read settings from this TOML file (keys as the long flags, with `_`; `[dl]` table)
    #[arg(long)]
    config: Option<PathBuf>,
    /// ce (cross-entropy), bs (Balanced Softmax) or dl (Dynamic Loss)
    #[arg(long, value_parser = choice::<Method>())]
    method: Option<Method>,
    #[command(flatten)]
    data: DataFlags,
    /// Model name (resnet8/14/20/32, preact_resnet18, resnet10, vgg19_bn) or TOML file
    #[arg(long)]
    model: Option<String>,
    /// Epochs
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// SGD momentum
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f32>,
    /// Weight decay
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f32>,
    /// Linear lr warm-up epochs before the cosine decay (dl's epoch schedule warms up over
    /// --warmup-epochs instead)
    #[arg(long)]
    lr_warmup_epochs: Option<usize>,
    /// Cosine by step (after the warm-up) or by epoch (from epoch 0, the authors' form)
    /// [default: epoch for dl, step for ce and bs]
    #[arg(long, value_parser = choice::<LrSchedule>())]
    lr_schedule: Option<LrSchedule>,
    /// View of the training steps (dl: warm-up, real step, meta-set pass): strong (pad-crop,
    /// flip, AutoAugment, Cutout; the authors'), standard (pad-crop, flip) or weak (normalise only)
    #[arg(long, value_parser = choice::<View>())]
    augment: Option<View>,
    /// Train on a random subset of this many samples [default: all]
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on a random subset of this many test samples
    #[arg(long)]
    test_limit: Option<usize>,
    /// Train on labels corrected by the classifier of this checkpoint (trained on the same
    /// data): the highest-loss --relabel-top percent of each class take its prediction
    #[arg(long)]
    relabel_from: Option<PathBuf>,
    /// Percent of each class --relabel-from relabels
    #[arg(long, allow_negative_numbers = true)]
    relabel_top: Option<f64>,
    /// On the built-in set, start from the defaults shown here (native 32 x 32 images) instead
    /// of the quick first run (12 x 12 images, weak view, batch 32, 3 epochs)
    #[arg(long)]
    full: bool,
    /// Data-preparation threads
    #[arg(long)]
    workers: Option<usize>,
    /// Output directory [default: runs/<method>-<dataset>-<model>-s<seed>, made unique]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the interrupted run in this directory
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Stop after this many epochs of this invocation (continue later with --resume)
    #[arg(long)]
    stop_after: Option<usize>,
    /// Plain log lines instead of a progress bar
    #[arg(long)]
    no_progress: bool,
    /// dl: warm-up epochs (plain CE + corrector fit)
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// dl: view of the meta batch: strong (the authors'), standard or weak [default: as --augment]
    #[arg(long, value_parser = choice::<View>())]
    meta_augment: Option<View>,
    /// dl: loss-rank bins R [default: 100 for <= 10 classes, else 50]
    #[arg(long)]
    bins: Option<usize>,
    /// dl: meta-net Adam learning rate
    #[arg(long, allow_negative_numbers = true)]
    meta_lr: Option<f32>,
    /// dl ablation: no label corrector
    #[arg(long)]
    no_label_corrector: bool,
    /// dl ablation: no margin generator
    #[arg(long)]
    no_margin_generator: bool,
    /// dl ablation: Balanced Softmax margins with the corrector (needs --no-margin-generator)
    #[arg(long)]
    balanced_softmax: bool,
    /// dl ablation: plain vectors instead of the two MLPs
    #[arg(long)]
    vector_meta: bool,
    /// dl ablation: lowest-loss samples of the whole class as the meta set
    #[arg(long)]
    naive_sampling: bool,
    /// dl speed knob: virtual step over the last K parameterised layers only
    #[arg(long)]
    meta_layers: Option<usize>,
    /// dl stabiliser: scale the meta step by the classifier's lr / peak lr
    #[arg(long)]
    meta_lr_follows_classifier: bool,
    /// dl variant: margins = log class counts + the generator's output (start at Balanced Softmax)
    #[arg(long)]
    anchor_margins: bool,
    /// dl variant: the warm-up fit pulls the corrector's trust g towards T (0 < T < 1) instead of 1
    #[arg(long, allow_negative_numbers = true)]
    corrector_target: Option<f32>,
    /// dl variant: the real step uses a moving average of the margins with this decay per meta step
    #[arg(long, allow_negative_numbers = true)]
    margin_average: Option<f32>,
    /// dl stabiliser: bound the margins softly to (-B, B)
    #[arg(long, allow_negative_numbers = true)]
    margin_bound: Option<f32>,
    /// dl stabiliser: stop meta updates after this fraction of the epochs
    #[arg(long, allow_negative_numbers = true)]
    meta_stop: Option<f64>,
}

/// Appends `[default: V]` to the help of every flag whose config key has a default, taken
/// from `TrainConfig::default()` so that no default is written twice.
pub fn with_defaults(cmd: clap::Command) -> clap::Command {
    let defaults = config_keys(&TrainConfig::default());
    cmd.mut_args(|arg| {
        let shown = defaults
            .iter()
            .find(|(k, _)| k == arg.get_id().as_str())
            .and_then(|(_, v)| match v {
                serde_json::Value::Null | serde_json::Value::Bool(_) => None,
                serde_json::Value::String(s) => Some(s.clone()),
                v => Some(v.to_string()),
            });
        match (shown, arg.get_help()) {
            (Some(v), Some(help)) if !help.to_string().contains("[default:") => {
                let help = format!("{help} [default: {v}]");
                arg.help(help)
            }
            _ => arg,
        }
    })
}

/// Every config key with its value, the `[dl]` table flattened (flag names are unique).
fn config_keys(cfg: &TrainConfig) -> Vec<(String, serde_json::Value)> {
    // Through text, so that an f32 such as 3e-3 reads 0.003, not its f64 widening.
    let text = serde_json::to_string(cfg).expect("config serialises");
    let serde_json::Value::Object(top) = serde_json::from_str(&text).expect("valid JSON") else {
        unreachable!("a struct serialises to an object")
    };
    let mut keys = Vec::new();
    for (k, v) in top {
        match v {
            serde_json::Value::Object(inner) => keys.extend(inner),
            v => keys.push((k, v)),
        }
    }
    keys
}

/// `base` (defaults, a config file, or a resumed run's settings) with the given flags applied.
fn apply_flags(a: &TrainArgs, base: TrainConfig) -> TrainConfig {
    let mut c = base;
    macro_rules! set {
        ($cfg:expr; $($field:ident),*) => {
            $( if let Some(v) = &a.$field { $cfg.$field = v.clone().into(); } )*
        };
    }
    macro_rules! switch {
        ($cfg:expr; $($field:ident),*) => { $( $cfg.$field |= a.$field; )* };
    }
    let data = a.data.over(c.data_config());
    c = c.with_data(data);
    set!(c; method, model, epochs);
    set!(c; batch_size, lr, momentum, weight_decay, lr_warmup_epochs, augment, workers);
    set!(c; train_limit, test_limit, lr_schedule, relabel_from, relabel_top);
    set!(c.dl; warmup_epochs, bins, meta_lr, meta_layers, corrector_target, margin_bound);
    set!(c.dl; meta_stop, margin_average, meta_augment);
    switch!(c.dl; no_label_corrector, no_margin_generator, balanced_softmax, vector_meta);
    switch!(c.dl; naive_sampling, meta_lr_follows_classifier, anchor_margins);
    c
}

/// The settings of a new run: the config file or the defaults (the quick run on the built-in
/// set unless `--full`), then the flags.
fn new_run_config(a: &TrainArgs) -> Result<TrainConfig> {
    Ok(match &a.config {
        Some(path) => apply_flags(a, TrainConfig::from_file(path)?),
        None => {
            let cfg = apply_flags(a, TrainConfig::default());
            if cfg.dataset == DatasetKind::Builtin && !a.full {
                apply_flags(a, TrainConfig::quick_run())
            } else {
                cfg
            }
        }
    })
}

/// Refuses a flag that the resolved settings would ignore: `--lr-warmup-epochs` under dl's
/// epoch schedule, whose warm-up is the Dynamic Loss warm-up.
fn check_flag_use(a: &TrainArgs, cfg: &TrainConfig) -> Result<()> {
    if a.lr_warmup_epochs.is_some()
        && cfg.method == Method::Dl
        && cfg.lr_schedule() == LrSchedule::Epoch
    {
        return Err(dynloss_wgpu::Error::Config(
            "--lr-warmup-epochs has no effect on dl's epoch schedule, which warms up over --warmup-epochs; add --lr-schedule step to use it".into(),
        ));
    }
    Ok(())
}

fn default_out(c: &TrainConfig) -> PathBuf {
    let base = format!(
        "runs/{}-{}-{}-s{}",
        c.method,
        c.dataset,
        c.model.replace(['/', '.'], "_"),
        c.seed
    );
    let mut p = PathBuf::from(&base);
    let mut k = 2;
    while p.exists() {
        p = PathBuf::from(format!("{base}-{k}"));
        k += 1;
    }
    p
}

/// A flag set by the first Ctrl-C or SIGTERM (the run then abandons its epoch and says how to
/// resume); a second one ends the process at once.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped at once");
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current step (again to stop at once)");
    })
    .map_err(|e| dynloss_wgpu::Error::Device(format!("cannot install the Ctrl-C handler: {e}")))?;
    Ok(stop)
}

/// Resolves the settings, trains, and says where everything was written.
pub fn run(gpu_flags: &super::GpuFlags, a: &TrainArgs) -> Result<()> {
    let (cfg, out, resume) = match &a.resume {
        Some(dir) => {
            train::run_dir::check_resumable(dir)?;
            let saved = train::state::saved_config(&dir.join(train::state::CHECKPOINT))?;
            (apply_flags(a, saved), dir.clone(), true)
        }
        None => {
            let cfg = new_run_config(a)?;
            let out = a.out.clone().unwrap_or_else(|| default_out(&cfg));
            (cfg, out, false)
        }
    };
    cfg.validate()?;
    check_flag_use(a, &cfg)?;
    let gpu = Gpu::new(&super::request(gpu_flags))?;
    let adapter = format!("{} ({:?})", gpu.info().name, gpu.info().backend);
    eprintln!("{} -> {}", cfg.describe(&adapter), out.display());
    let opts = RunOptions {
        out: out.clone(),
        resume,
        stop_after: a.stop_after,
        progress: if a.no_progress { Some(false) } else { None },
        verbose: true,
        stop: Some(stop_on_signal()?),
    };
    let s = train::train(&gpu, &cfg, &opts)?;
    println!(
        "done: {} epochs in {:.0} s, last test accuracy {:.2}%, best {:.2}%",
        s.epochs, s.seconds, s.last_acc, s.best_acc
    );
    println!("results:    {}", out.join("summary.json").display());
    println!("metrics:    {}", out.join(train::state::METRICS).display());
    println!(
        "checkpoint: {}",
        out.join(train::state::CHECKPOINT).display()
    );
    println!(
        "plot:       {}",
        out.join(train::metrics::ACCURACY_PLOT).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Flags of `train` that are not config keys.
    const RUN_FLAGS: [&str; 7] = [
        "config",
        "full",
        "out",
        "resume",
        "stop_after",
        "no_progress",
        "help",
    ];

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    /// A value other than the default for each config key, typed as a user would.
    fn other_value(key: &str, default: &serde_json::Value) -> Option<String> {
        use serde_json::Value;
        Some(match (key, default) {
            ("method", _) => "dl".into(),
            ("dataset", _) => "mnist".into(),
            ("noise_type", _) => "sym".into(),
            ("augment", _) => "weak".into(),
            ("meta_augment", _) => "standard".into(),
            ("model", _) => "vgg19_bn".into(),
            ("data_dir", _) => "elsewhere".into(),
            ("lr_schedule", _) => "epoch".into(),
            (_, Value::Bool(false)) => return None,
            (_, Value::Null) => "3".into(),
            (_, Value::Number(n)) if n.is_u64() => (n.as_u64().unwrap() + 2).to_string(),
            (_, Value::Number(n)) => (n.as_f64().unwrap() + 0.25).to_string(),
            (k, v) => panic!("no test value for {k} = {v}"),
        })
    }

    #[test]
    fn every_config_key_has_a_flag_that_sets_it() {
        let defaults = config_keys(&TrainConfig::default());
        let mut argv = vec!["x".to_string()];
        for (k, v) in &defaults {
            argv.push(format!("--{}", k.replace('_', "-")));
            argv.extend(other_value(k, v));
        }
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{e}"));
        let set = config_keys(&apply_flags(&cli.args, TrainConfig::default()));
        for ((k, before), (k2, after)) in defaults.iter().zip(&set) {
            assert_eq!(k, k2);
            assert_ne!(before, after, "--{k} did not change the config");
        }
        // And every flag is either a config key or a run option.
        let cmd = <Cli as clap::CommandFactory>::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                RUN_FLAGS.contains(&id) || defaults.iter().any(|(k, _)| k == id),
                "--{id} is neither a config key nor a run option"
            );
        }
    }

    #[test]
    fn help_shows_the_library_defaults() {
        let cmd = with_defaults(<Cli as clap::CommandFactory>::command());
        let help = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap()
        };
        let d = TrainConfig::default();
        assert!(help("epochs").ends_with(&format!("[default: {}]", d.epochs)));
        assert!(help("method").ends_with(&format!("[default: {}]", d.method)));
        assert!(help("meta_lr").ends_with(&format!("[default: {}]", d.dl.meta_lr)));
        // Its own default text is kept, not doubled.
        assert_eq!(help("data_dir").matches("[default:").count(), 1);
    }

    #[test]
    fn the_quick_run_applies_to_the_builtin_set_only() {
        let cfg = |argv: &[&str]| {
            let argv: Vec<&str> = std::iter::once("x").chain(argv.iter().copied()).collect();
            new_run_config(&Cli::try_parse_from(argv).unwrap().args).unwrap()
        };
        assert_eq!(cfg(&[]), TrainConfig::quick_run());
        assert_ne!(TrainConfig::quick_run(), TrainConfig::default());
        // Flags still override the quick run's settings.
        let c = cfg(&["--epochs", "5", "--augment", "strong"]);
        assert_eq!((c.epochs, c.augment), (5, View::Strong));
        assert_eq!(c.image_size, TrainConfig::quick_run().image_size);
        assert_eq!(cfg(&["--full"]), TrainConfig::default());
        let mnist = cfg(&["--dataset", "mnist"]);
        assert_eq!(
            mnist,
            TrainConfig {
                dataset: DatasetKind::Mnist,
                ..TrainConfig::default()
            }
        );
    }

    #[test]
    fn lr_warmup_epochs_is_refused_where_it_would_be_ignored() {
        let check = |argv: &[&str]| {
            let argv: Vec<&str> = std::iter::once("x").chain(argv.iter().copied()).collect();
            let a = Cli::try_parse_from(argv).unwrap().args;
            check_flag_use(&a, &new_run_config(&a).unwrap())
        };
        let e = check(&["--method", "dl", "--lr-warmup-epochs", "3"]).unwrap_err();
        assert!(e.to_string().contains("--lr-schedule step"), "{e}");
        for ok in [
            &[
                "--method",
                "dl",
                "--lr-warmup-epochs",
                "3",
                "--lr-schedule",
                "step",
            ][..],
            &["--method", "dl"],
            &["--method", "bs", "--lr-warmup-epochs", "3"],
            &["--lr-warmup-epochs", "3", "--lr-schedule", "epoch"],
        ] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn negative_numbers_reach_the_library_check() {
        let cli = Cli::try_parse_from(["x", "--lr", "-1"]).unwrap();
        let cfg = apply_flags(&cli.args, TrainConfig::default());
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains("--lr"), "{msg}");
    }
}
