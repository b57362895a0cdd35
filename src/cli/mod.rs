//! The command line: clap lives here and nowhere in the library. Each subcommand parses its
//! flags into the library's types and calls it.

mod bench;
mod data;
mod sweep;
mod train;

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use dynloss_wgpu::choice::Choice;
use dynloss_wgpu::gpu::{AdapterRequest, ConvAlgo, Gpu, Tiling, adapter};
use dynloss_wgpu::infer;
use dynloss_wgpu::probe::{self, KernelTable};
use dynloss_wgpu::train::audit::audit_checkpoint;
use dynloss_wgpu::train::evaluate::evaluate_checkpoint;
use dynloss_wgpu::train::metrics::plot_runs;
use dynloss_wgpu::{Error, Result};

/// Robust training on long-tailed, mislabelled image data (Dynamic Loss) on any wgpu GPU.
#[derive(Parser)]
#[command(name = "dynloss-wgpu", version, about)]
pub struct Cli {
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
    /// 3x3 stride-1 convolutions: auto (Winograd where faster), direct or winograd [env: DYNLOSS_CONV]
    #[arg(long, global = true, value_parser = choice::<ConvAlgo>())]
    conv: Option<ConvAlgo>,
    /// Kernel shape: auto (by adapter type), lanes (CPU drivers) or workgroup (GPUs) [env: DYNLOSS_TILING]
    #[arg(long, global = true, value_parser = choice::<Tiling>())]
    tiling: Option<Tiling>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a classifier (with no flags: a quick cross-entropy run on the built-in data set).
    Train(Box<train::TrainArgs>),
    /// Evaluate a checkpoint on a data set's test split: overall and per-class accuracy. With
    /// no data flags, on the data its run used; each flag given overrides that.
    Eval {
        /// The checkpoint (checkpoint.safetensors in a run directory).
        #[arg(long)]
        checkpoint: PathBuf,
        #[command(flatten)]
        data: data::DataFlags,
    },
    /// Audit the noisy training set a checkpoint was trained on: per class and loss band, how
    /// many given labels and how many of its predictions are right, and how right the labels
    /// would be if the highest-loss samples of each class took its prediction.
    Audit {
        /// The checkpoint (checkpoint.safetensors in a run directory).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Folder holding the data set's files [default: the one the run used].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Loss bands per class (cut as the Dynamic Loss cuts its rank bins).
        #[arg(long, default_value_t = 10)]
        bands: usize,
    },
    /// Which training labels are probably wrong: a CSV of every training sample of the
    /// checkpoint's run, most suspect first (the classifier's probability of the given label,
    /// its margin, its suggestion, a confident-learning flag).
    Labels {
        /// The checkpoint (checkpoint.safetensors in a run directory).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Folder holding the data set's files [default: the one the run used].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where to write the CSV.
        #[arg(long, default_value = "labels.csv")]
        out: PathBuf,
    },
    /// Classify new images with a checkpoint: a CSV of each file's most probable classes.
    Predict {
        /// The checkpoint (checkpoint.safetensors in a run directory).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image files, folders (searched recursively) or list files (.txt, one path a line).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Classes per file, most probable first.
        #[arg(long, default_value_t = 3)]
        top_k: usize,
        /// Where to write the CSV.
        #[arg(long, default_value = "predictions.csv")]
        out: PathBuf,
        /// Give an unreadable file a row with its error instead of stopping.
        #[arg(long)]
        skip_unreadable: bool,
    },
    /// Data sets: download, or print the statistics of a long-tailed noisy training set.
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
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
    /// Run a grid of settings (the product of --grid axes over a config), one run directory
    /// per cell, here (--runner local) or as a Slurm job array (--runner slurm); running it
    /// again skips finished cells and resumes the others.
    Sweep(Box<sweep::SweepArgs>),
    /// The table of runs and sweeps: rows the settings, columns the methods, each cell the
    /// mean and standard deviation over seeds of the last and best test accuracy.
    Report(sweep::ReportArgs),
    /// List every GPU adapter found, with the limits and features the kernels rely on.
    Info,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchWhat,
    },
}

/// A clap parser for a library enum: its names are the possible values.
fn choice<T: Choice + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| v.name()))
        .map(|s| T::from_name(&s).expect("clap only passes listed names"))
}

/// The full command, with the library's defaults written into the help of `train` and of
/// the `data` commands.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("train", train::with_defaults)
        .mut_subcommand("data", |data| {
            data.mut_subcommand("stats", train::with_defaults)
                .mut_subcommand("preview", train::with_defaults)
        })
}

/// Parses the process arguments (exits with clap's message on bad flags).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn request(flags: &GpuFlags) -> AdapterRequest {
    AdapterRequest {
        backend: flags.backend.clone(),
        adapter: flags.adapter.clone(),
        conv: flags.conv,
        tiling: flags.tiling,
    }
}

fn info(flags: &GpuFlags) -> Result<()> {
    let req = request(flags);
    let backends = req.backends()?;
    let found = adapter::enumerate(backends);
    let table = KernelTable::new()?;
    let max = table.max();
    println!(
        "searched backends: {} ({} adapter(s) found)",
        adapter::backend_names(backends),
        found.len()
    );
    println!(
        "kernels: {} pipelines; the most any needs: {} storage buffers per stage, {} \
         invocations per workgroup, {} B of workgroup memory",
        table.len(),
        max.storage_buffers,
        max.invocations,
        max.workgroup_bytes
    );
    for (i, a) in found.iter().enumerate() {
        println!("\n#{i} {}", adapter::describe(a).trim_end());
        println!("  every kernel's needs met: {}", needs_met(&table, a));
    }
    let chosen = adapter::select(&req)?;
    let i = chosen.get_info();
    println!("\nselected: {} ({:?})", i.name, i.backend);
    println!("  backend: {:?}", i.backend);
    println!("  every kernel's needs met: {}", needs_met(&table, &chosen));
    let gpu = Gpu::from_adapter(chosen)?;
    if let Some(tiling) = req.tiling {
        gpu.set_tiling(tiling);
    }
    println!(
        "  kernels: {} tiling ({:?} adapter; --tiling auto picks lanes on CPU drivers, \
         workgroup elsewhere)",
        gpu.tiling().name(),
        i.device_type
    );
    let t = probe::compile_times(&gpu)?;
    println!(
        "  pipelines: all {} created in {:.2} s",
        t.pipelines, t.create_all
    );
    println!(
        "  first-dispatch compile time: {:.2} s (the first training step of ResNet-8 at \
         batch 32 took {:.2} s, later ones {:.2} s; a driver shader cache, as Mesa's, makes \
         the next run's first step faster)",
        (t.first_step - t.warm_step).max(0.0),
        t.first_step,
        t.warm_step
    );
    Ok(())
}

/// "yes", or "no" with the first unmet needs.
fn needs_met(table: &KernelTable, a: &wgpu::Adapter) -> String {
    let unmet = table.unmet_on(a);
    match unmet.len() {
        0 => "yes".into(),
        n => format!(
            "no, {n} unmet: {}{}",
            unmet[..n.min(3)].join("; "),
            if n > 3 { "; ..." } else { "" }
        ),
    }
}

fn eval(flags: &GpuFlags, checkpoint: &std::path::Path, data: &data::DataFlags) -> Result<()> {
    let cfg = data.over(dynloss_wgpu::train::evaluate::run_data(checkpoint)?);
    dynloss_wgpu::data::check_config(&cfg)?;
    let gpu = Gpu::new(&request(flags))?;
    let ev = evaluate_checkpoint(&gpu, checkpoint, &cfg)?;
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

fn labels(
    flags: &GpuFlags,
    checkpoint: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    out: &std::path::Path,
) -> Result<()> {
    let gpu = Gpu::new(&request(flags))?;
    let r = dynloss_wgpu::labels::label_report(&gpu, checkpoint, data_dir)?;
    dynloss_wgpu::labels::write_csv(out, &r)?;
    let flagged = r.samples.iter().filter(|s| s.flagged).count();
    println!(
        "{} training samples, {flagged} flagged by confident learning: {}",
        r.samples.len(),
        out.display()
    );
    match r.detection {
        Some(d) => println!(
            "against the true labels ({} wrong): flagged precision {:.2}%, recall {:.2}%; \
             {:.2}% of the {} lowest-quality samples are wrong",
            d.wrong,
            100.0 * d.precision,
            100.0 * d.recall,
            100.0 * d.precision_at_wrong,
            d.wrong
        ),
        None => println!("true labels unknown (no noise injected): no precision or recall"),
    }
    Ok(())
}

fn predict(
    flags: &GpuFlags,
    checkpoint: &std::path::Path,
    inputs: &[PathBuf],
    top_k: usize,
    out: &std::path::Path,
    skip_unreadable: bool,
) -> Result<()> {
    use std::io::IsTerminal;
    let files = infer::collect_inputs(inputs)?;
    let gpu = Gpu::new(&request(flags))?;
    let p = infer::Predictor::load(&gpu, checkpoint)?;
    let k = top_k.clamp(1, p.class_names.len());
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| indicatif::ProgressBar::new(files.len() as u64));
    let preds = p.predict(&files, k, skip_unreadable, |done| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    infer::write_csv(out, &preds, &p.class_names, k)?;
    let failed = preds.iter().filter(|p| p.error.is_some()).count();
    let [c, h, w] = p.input();
    println!(
        "{} files as {c}x{h}x{w}{}: {}",
        preds.len(),
        match failed {
            0 => String::new(),
            n => format!(" ({n} unreadable, with their error)"),
        },
        out.display()
    );
    Ok(())
}

fn audit(
    flags: &GpuFlags,
    checkpoint: &std::path::Path,
    data_dir: Option<&std::path::Path>,
    bands: usize,
) -> Result<()> {
    let gpu = Gpu::new(&request(flags))?;
    let (a, names) = audit_checkpoint(&gpu, checkpoint, data_dir, bands)?;
    let pct = |k: usize, n: usize| 100.0 * k as f64 / n.max(1) as f64;
    println!(
        "training samples: {}; given labels right: {:.2}%; predictions right: {:.2}%",
        a.samples,
        pct(a.given_right, a.samples),
        pct(a.predicted_right, a.samples)
    );
    println!(
        "\nrelabel the highest-loss share of each class (by given label) with the prediction:"
    );
    println!(
        "  {:>6} {:>8} {:>13} {:>28}",
        "share", "changed", "labels right", "changed labels right before/after"
    );
    for r in &a.relabel {
        println!(
            "  {:>5}% {:>8} {:>12.2}% {:>14.1}% / {:.1}%",
            r.percent,
            r.changed,
            pct(r.labels_right, a.samples),
            pct(r.changed_right_before, r.changed),
            pct(r.changed_right_after, r.changed)
        );
    }
    println!(
        "\nper class (by given label) and loss band, lowest loss first: given labels right / predictions right (%)"
    );
    for (c, class_bands) in a.bands.iter().enumerate() {
        let n: usize = class_bands.iter().map(|b| b.samples).sum();
        let name = names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let cells: Vec<String> = class_bands
            .iter()
            .map(|b| {
                format!(
                    "{:.0}/{:.0}",
                    pct(b.given_right, b.samples),
                    pct(b.predicted_right, b.samples)
                )
            })
            .collect();
        println!("  {c:>3} {name:<14} {n:>6}  {}", cells.join(" "));
    }
    Ok(())
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Info => info(&cli.gpu),
        Command::Train(a) => train::run(&cli.gpu, a),
        Command::Eval { checkpoint, data } => eval(&cli.gpu, checkpoint, data),
        Command::Audit {
            checkpoint,
            data_dir,
            bands,
        } => audit(&cli.gpu, checkpoint, data_dir.as_deref(), *bands),
        Command::Labels {
            checkpoint,
            data_dir,
            out,
        } => labels(&cli.gpu, checkpoint, data_dir.as_deref(), out),
        Command::Predict {
            checkpoint,
            inputs,
            top_k,
            out,
            skip_unreadable,
        } => predict(&cli.gpu, checkpoint, inputs, *top_k, out, *skip_unreadable),
        Command::Data { command } => data::run(command),
        Command::Plot { runs, out } => {
            let path = plot_runs(runs, out.as_deref())?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Command::Sweep(a) => sweep::run(&cli.gpu, a),
        Command::Report(a) => sweep::report(a),
        Command::Bench { what } => bench::run(&Gpu::new(&request(&cli.gpu))?, what),
    }
}

/// The exit code for an error: 2 when no usable GPU was found, 130 when interrupted (as a
/// shell reports Ctrl-C), 1 otherwise.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::NoAdapter { .. } | Error::AdapterTooSmall { .. } => 2,
        Error::Interrupted { .. } | Error::Stopped(_) => 130,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        // Catches clashing flag names (e.g. two --seed) that clap only reports at run time.
        super::command().debug_assert();
    }
}
