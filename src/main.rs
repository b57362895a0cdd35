//! The `dynloss-wgpu` command line: parse, build a config, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dynloss_wgpu::bench::{
    KernelBench, StepBench, format_steps, format_table, run_kernels, run_steps,
};
use dynloss_wgpu::data::cli::{DataCommand, DataFlags};
use dynloss_wgpu::gpu::{AdapterRequest, Gpu, adapter};
use dynloss_wgpu::train::{self, Method, RunOptions, TrainConfig};
use dynloss_wgpu::{Error, Result};

/// Robust training on long-tailed, mislabelled image data (Dynamic Loss) on any wgpu GPU.
#[derive(Parser)]
#[command(name = "dynloss-wgpu", version, about)]
struct Cli {
    #[command(flatten)]
    gpu: GpuFlags,
    #[command(subcommand)]
    command: Command,
}

/// How to choose the GPU.
#[derive(Args)]
struct GpuFlags {
    /// Backends to search, comma separated: vulkan, metal, dx12, gl [env: WGPU_BACKEND]
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Use the adapter whose name contains this text [env: WGPU_ADAPTER_NAME]
    #[arg(long, global = true)]
    adapter: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a classifier (default: cross-entropy, ResNet-8, the built-in data set).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on a data set's test split: overall and per-class accuracy.
    Eval {
        /// The checkpoint (checkpoint.safetensors in a run directory).
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        data: DataFlags,
    },
    /// Data sets: download, or print the statistics of a long-tailed noisy training set.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Plot the test-accuracy curves of several runs into one chart.
    Plot {
        /// Run directories (each with metrics.jsonl).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Output PNG [default: accuracy_comparison.png in the runs' common parent].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List every GPU adapter found, with the limits and features the kernels rely on.
    Info,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

/// Flags of `train`; each overrides `--config`, which overrides the defaults.
#[derive(Args)]
struct TrainArgs {
    /// Read settings from this TOML file (keys as the long flags, with `_`; `[dl]` table).
    #[arg(long)]
    config: Option<PathBuf>,
    /// ce (cross-entropy), bs (Balanced Softmax) or dl (Dynamic Loss) [default: ce]
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// builtin, cifar10, cifar100, mnist, fashion-mnist, folder, list [default: builtin]
    #[arg(long)]
    dataset: Option<String>,
    /// Folder with the data set's files [default: data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Long-tail imbalance ratio rho [default: 1]
    #[arg(long)]
    imbalance: Option<f64>,
    /// Label-noise rate lambda [default: 0]
    #[arg(long)]
    noise: Option<f64>,
    /// lt, sym or asym [default: lt]
    #[arg(long)]
    noise_type: Option<String>,
    /// Resize images to this side (folders and lists)
    #[arg(long)]
    image_size: Option<usize>,
    /// Model name (resnet8/14/20/32, preact_resnet18, resnet10, vgg19_bn) or TOML file [default: resnet8]
    #[arg(long)]
    model: Option<String>,
    /// Epochs [default: 4]
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size [default: 128]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 0.1]
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum [default: 0.9]
    #[arg(long)]
    momentum: Option<f32>,
    /// Weight decay [default: 5e-4]
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Linear lr warm-up epochs before the cosine decay [default: 1]
    #[arg(long)]
    lr_warmup_epochs: Option<usize>,
    /// Training view: strong (crop, flip, AutoAugment, Cutout) or weak [default: strong]
    #[arg(long)]
    augment: Option<String>,
    /// Seed of everything random [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Train on a random subset of this many samples [default: 6000 for the
    /// built-in set, all otherwise]
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on a random subset of this many test samples
    #[arg(long)]
    test_limit: Option<usize>,
    /// Use the whole training set (cancels the built-in set's default limit)
    #[arg(long)]
    full: bool,
    /// Data-preparation threads [default: 1]
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
    /// dl: warm-up epochs (plain CE + corrector fit) [default: 5]
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// dl: loss-rank bins R [default: 100 for <= 10 classes, else 50]
    #[arg(long)]
    bins: Option<usize>,
    /// dl: meta-net Adam learning rate [default: 3e-3]
    #[arg(long)]
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
    /// dl stabiliser: bound the margins softly to (-B, B)
    #[arg(long)]
    margin_bound: Option<f32>,
    /// dl stabiliser: stop meta updates after this fraction of the epochs
    #[arg(long)]
    meta_stop: Option<f64>,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// GFLOP/s of matmul and the ResNet-32 convolutions, and sort throughput.
    Kernels {
        /// Small sizes for a quick smoke run instead of the reported sizes.
        #[arg(long)]
        quick: bool,
        /// Timed repetitions per line (median reported).
        #[arg(long)]
        reps: Option<usize>,
    },
    /// Training-step times (images/s, peak GPU memory): ResNet-32 on 3x32x32 and ResNet-8 on
    /// 1x28x28 at batch 128 unless --depth/--input say otherwise; with --method dl also the
    /// second-order meta gradient and a whole Dynamic Loss iteration, with their ratio to a
    /// plain cross-entropy step.
    Step {
        /// ce: the plain step only; dl: also the meta gradient and the DL iteration.
        #[arg(long, value_enum, default_value_t = Method::Ce)]
        method: Method,
        /// CIFAR ResNet depth (6n+2) of a single configuration.
        #[arg(long)]
        depth: Option<usize>,
        /// Input channels, height and width of a single configuration, e.g. 3x32x32.
        #[arg(long)]
        input: Option<String>,
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Timed repetitions per line (median reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
}

fn request(flags: &GpuFlags) -> AdapterRequest {
    AdapterRequest {
        backend: flags.backend.clone(),
        adapter: flags.adapter.clone(),
    }
}

fn info(flags: &GpuFlags) -> Result<()> {
    let req = request(flags);
    let backends = req.backends()?;
    let found = adapter::enumerate(backends);
    println!(
        "searched backends: {} ({} adapter(s) found)",
        adapter::backend_names(backends),
        found.len()
    );
    for (i, a) in found.iter().enumerate() {
        println!("\n#{i} {}", adapter::describe(a).trim_end());
    }
    let chosen = adapter::select(&req)?;
    let i = chosen.get_info();
    println!("\nselected: {} ({:?})", i.name, i.backend);
    Ok(())
}

/// Defaults <- config file <- flags.
fn train_config(a: &TrainArgs, base: TrainConfig) -> TrainConfig {
    let mut c = base;
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = &a.$field { c.$field = v.clone(); } )* };
    }
    set!(
        method, dataset, imbalance, noise, noise_type, model, epochs, batch_size, lr, momentum
    );
    set!(weight_decay, lr_warmup_epochs, augment, seed, workers);
    if a.data_dir.is_some() {
        c.data_dir = a.data_dir.clone();
    }
    if a.image_size.is_some() {
        c.image_size = a.image_size;
    }
    if a.train_limit.is_some() {
        c.train_limit = a.train_limit;
    }
    if a.test_limit.is_some() {
        c.test_limit = a.test_limit;
    }
    if a.full {
        c.train_limit = None;
    }
    let d = &mut c.dl;
    if let Some(v) = a.warmup_epochs {
        d.warmup_epochs = v;
    }
    if a.bins.is_some() {
        d.bins = a.bins;
    }
    if let Some(v) = a.meta_lr {
        d.meta_lr = v;
    }
    d.no_label_corrector |= a.no_label_corrector;
    d.no_margin_generator |= a.no_margin_generator;
    d.balanced_softmax |= a.balanced_softmax;
    d.vector_meta |= a.vector_meta;
    d.naive_sampling |= a.naive_sampling;
    d.meta_lr_follows_classifier |= a.meta_lr_follows_classifier;
    if a.meta_layers.is_some() {
        d.meta_layers = a.meta_layers;
    }
    if a.margin_bound.is_some() {
        d.margin_bound = a.margin_bound;
    }
    if a.meta_stop.is_some() {
        d.meta_stop = a.meta_stop;
    }
    c
}

fn default_out(c: &TrainConfig) -> PathBuf {
    let method = format!("{:?}", c.method).to_lowercase();
    let base = format!(
        "runs/{method}-{}-{}-s{}",
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

fn run_train(gpu_flags: &GpuFlags, a: &TrainArgs) -> Result<()> {
    let base = match &a.config {
        Some(path) => TrainConfig::from_file(path)?,
        None => TrainConfig::default(),
    };
    let (cfg, out, resume) = match &a.resume {
        Some(dir) => {
            let ck = dir.join("checkpoint.safetensors");
            let saved = train::Checkpoint::load(&ck)?;
            let saved: TrainConfig =
                serde_json::from_str(saved.get(&ck, "config")?).map_err(|e| Error::Format {
                    path: ck.clone(),
                    msg: format!("config in checkpoint: {e}"),
                })?;
            (train_config(a, saved), dir.clone(), true)
        }
        None => {
            let mut cfg = train_config(a, base);
            if cfg.dataset == "builtin" && cfg.train_limit.is_none() && !a.full {
                cfg.train_limit = Some(train::config::BUILTIN_QUICK_LIMIT);
            }
            let out = a.out.clone().unwrap_or_else(|| default_out(&cfg));
            (cfg, out, false)
        }
    };
    cfg.validate()?;
    let gpu = Gpu::new(&request(gpu_flags))?;
    eprintln!(
        "training {:?} on {} ({}) with {} for {} epochs on {} -> {}",
        cfg.method,
        cfg.dataset,
        if cfg.imbalance > 1.0 || cfg.noise > 0.0 {
            format!(
                "rho {} {} noise {}",
                cfg.imbalance, cfg.noise_type, cfg.noise
            )
        } else {
            "balanced, clean".into()
        },
        cfg.model,
        cfg.epochs,
        gpu.info().name,
        out.display()
    );
    let opts = RunOptions {
        out: out.clone(),
        resume,
        stop_after: a.stop_after,
        progress: if a.no_progress { Some(false) } else { None },
        verbose: true,
    };
    let s = train::train(&gpu, &cfg, &opts)?;
    println!(
        "done: {} epochs, last accuracy {:.2}%, best {:.2}%, {:.0} s; results in {}",
        s.epochs,
        s.last_acc,
        s.best_acc,
        s.seconds,
        out.display()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Info => info(&cli.gpu),
        Command::Train(a) => run_train(&cli.gpu, a),
        Command::Eval { checkpoint, data } => {
            let cfg = data.to_config()?;
            let gpu = Gpu::new(&request(&cli.gpu))?;
            let ev = train::evaluate_checkpoint(&gpu, checkpoint, &cfg)?;
            let total: usize = ev.predicted.iter().sum();
            println!("accuracy: {:.2}%", ev.accuracy);
            println!("  class {:<20} {:>8} {:>10}", "", "accuracy", "predicted");
            for (i, a) in ev.per_class.iter().enumerate() {
                let name = ev
                    .class_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| i.to_string());
                let share = 100.0 * ev.predicted[i] as f64 / total.max(1) as f64;
                println!("  {i:>5} {name:<20} {a:7.2}% {share:9.2}%");
            }
            Ok(())
        }
        Command::Data { command } => dynloss_wgpu::data::cli::run(command),
        Command::Plot { runs, out } => {
            let path = train::metrics::plot_runs(runs, out.as_deref())?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Bench {
            what: BenchWhat::Kernels { quick, reps },
        } => {
            let gpu = Gpu::new(&request(&cli.gpu))?;
            let mut cfg = if *quick {
                KernelBench::quick()
            } else {
                KernelBench::full()
            };
            if let Some(r) = reps {
                if *r == 0 {
                    return Err(Error::Config("--reps must be at least 1".into()));
                }
                cfg.reps = *r;
            }
            let rows = run_kernels(&gpu, &cfg)?;
            print!("{}", format_table(&gpu, &rows));
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Step {
                    method,
                    depth,
                    input,
                    batch,
                    reps,
                },
        } => {
            if *batch < 2 || *reps == 0 {
                return Err(Error::Config(
                    "--batch must be at least 2 and --reps at least 1".into(),
                ));
            }
            let parse = |s: &str| -> Result<[usize; 3]> {
                let d: Vec<usize> = s.split('x').filter_map(|v| v.parse().ok()).collect();
                match d[..] {
                    [c, h, w] if c * h * w > 0 => Ok([c, h, w]),
                    _ => Err(Error::Config(format!("--input '{s}' is not CxHxW"))),
                }
            };
            let configs: Vec<(usize, [usize; 3])> = match (depth, input) {
                (None, None) => vec![(32, [3, 32, 32]), (8, [1, 28, 28])],
                (d, i) => vec![(
                    d.unwrap_or(32),
                    i.as_deref().map(parse).transpose()?.unwrap_or([3, 32, 32]),
                )],
            };
            let gpu = Gpu::new(&request(&cli.gpu))?;
            for (depth, input) in configs {
                let cfg = StepBench {
                    depth,
                    input,
                    classes: 10,
                    batch: *batch,
                    reps: *reps,
                    dynamic_loss: *method == Method::Dl,
                };
                let rows = run_steps(&gpu, &cfg)?;
                println!("{}", format_steps(&gpu, &cfg, &rows));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                Error::NoAdapter { .. } | Error::AdapterTooSmall { .. } => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        // Catches clashing flag names (e.g. two --seed) that clap only reports at run time.
        Cli::command().debug_assert();
    }
}
