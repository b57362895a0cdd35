//! `sweep` and `report`: flags into the library's sweep types (`dynloss_wgpu::sweep`), the
//! Ctrl-C handler, and the lines that say what happened.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, ValueEnum};
use dynloss_wgpu::choice::Choice;
use dynloss_wgpu::sweep::local::LocalRunner;
use dynloss_wgpu::sweep::manifest::CellStatus;
use dynloss_wgpu::sweep::slurm::{self, SlurmJob};
use dynloss_wgpu::sweep::{self as sw, report};
use dynloss_wgpu::train::TrainConfig;
use dynloss_wgpu::{Error, Result};

/// Where the cells run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Runner {
    /// `train` processes on this machine.
    Local,
    /// An sbatch job array, one task per unfinished cell.
    Slurm,
}

/// Flags of `sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Base settings: a training config, or a sweep file (a config with optional `base =
    /// "FILE.toml"` and a `[grid]` table of arrays) [default: the defaults of train --full]
    #[arg(long)]
    config: Option<PathBuf>,
    /// An axis of the grid: a config key (dl keys too) and its values; repeat for more axes
    #[arg(long = "grid", value_name = "KEY=V1,V2,...")]
    grid: Vec<String>,
    /// The sweep directory: sweep.json and one directory per cell
    #[arg(long)]
    out: PathBuf,
    /// local: train processes here; slurm: an sbatch job array
    #[arg(long, value_enum, default_value_t = Runner::Local)]
    runner: Runner,
    /// Cells at a time (slurm: the array's throttle) [default: 1 local, no limit slurm]
    #[arg(long)]
    jobs: Option<usize>,
    /// local: spread the cells over these GPUs (adapter names, as --adapter), comma separated
    #[arg(long, value_delimiter = ',')]
    adapters: Vec<String>,
    /// slurm: extra sbatch arguments, e.g. "--gres=gpu:1 --time=24:00:00"
    #[arg(long, allow_hyphen_values = true)]
    sbatch_args: Option<String>,
    /// Set up the cells and print what would run (slurm: the script) without running it
    #[arg(long)]
    dry_run: bool,
}

/// Flags of `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Run directories, sweep directories or sweep cells
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Also write the Markdown table to this file
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the table as CSV (one line per setting and method)
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Draw the mean last accuracy of each setting and method as a bar chart (PNG)
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// The global GPU flags a child `train` takes (with `--adapter` unless spread by `--adapters`).
fn global_args(g: &super::GpuFlags, with_adapter: bool) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(b) = &g.backend {
        a.extend(["--backend".into(), b.clone()]);
    }
    if let (Some(n), true) = (&g.adapter, with_adapter) {
        a.extend(["--adapter".into(), n.clone()]);
    }
    if let Some(c) = g.conv {
        a.extend(["--conv".into(), c.name().into()]);
    }
    if let Some(t) = g.tiling {
        a.extend(["--tiling".into(), t.name().into()]);
    }
    a
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.into(),
        source: e,
    }
}

/// Expands the grid, sets up the sweep directory and runs the unfinished cells.
pub fn run(g: &super::GpuFlags, a: &SweepArgs) -> Result<()> {
    if a.jobs == Some(0) {
        return Err(Error::Config("--jobs must be at least 1".into()));
    }
    match a.runner {
        Runner::Slurm if !a.adapters.is_empty() => {
            return Err(Error::Config(
                "--adapters is for --runner local (Slurm gives each task its GPU: --sbatch-args \"--gres=gpu:1\")".into(),
            ));
        }
        Runner::Local if a.sbatch_args.is_some() => {
            return Err(Error::Config("--sbatch-args is for --runner slurm".into()));
        }
        _ => {}
    }
    if a.adapters.iter().any(|n| n.trim().is_empty()) {
        return Err(Error::Config("--adapters: empty adapter name".into()));
    }
    let (base, mut axes) = match &a.config {
        Some(path) => sw::load_sweep_file(path)?,
        None => (TrainConfig::default(), Vec::new()),
    };
    let flags = a
        .grid
        .iter()
        .map(|s| sw::parse_axis(s))
        .collect::<Result<Vec<_>>>()?;
    // A flag replaces the sweep file's axis of the same key.
    axes.retain(|x| !flags.iter().any(|f| f.key == x.key));
    axes.extend(flags);
    let cells = sw::expand(&base, &axes)?;
    let out = std::path::absolute(&a.out).map_err(io(&a.out))?;
    let p = sw::prepare(&out, &cells)?;
    let count = |f: &dyn Fn(CellStatus) -> bool| p.cells.iter().filter(|c| f(c.status)).count();
    println!(
        "sweep {}: {} cells ({} new): {} finished, {} part-trained, {} not started",
        out.display(),
        p.cells.len(),
        p.added,
        count(&|s| s == CellStatus::Finished),
        count(&|s| matches!(s, CellStatus::Partial(_))),
        count(&|s| s == CellStatus::Pending),
    );
    let todo = p.unfinished();
    let report_hint = format!("results: dynloss-wgpu report {}", out.display());
    if todo.is_empty() {
        println!("nothing to run; {report_hint}");
        return Ok(());
    }
    let program = std::env::current_exe().map_err(io(std::path::Path::new("dynloss-wgpu")))?;
    match a.runner {
        Runner::Slurm => {
            let sbatch_args: Vec<String> = a
                .sbatch_args
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
            let job = SlurmJob {
                program,
                global_args: global_args(g, true),
                workdir: std::env::current_dir().map_err(io(std::path::Path::new(".")))?,
                name: format!(
                    "dynloss-{}",
                    out.file_name()
                        .map_or("sweep".into(), |n| n.to_string_lossy())
                ),
                throttle: a.jobs,
                sbatch_args: sbatch_args.clone(),
            };
            let text = slurm::script(&job, &out, &todo)?;
            if a.dry_run {
                print!("{text}");
                println!(
                    "# (dry run: not submitted; it would be written to {} and submitted with: sbatch {}{})",
                    out.join(slurm::SCRIPT).display(),
                    sbatch_args
                        .iter()
                        .map(|s| format!("{s} "))
                        .collect::<String>(),
                    out.join(slurm::SCRIPT).display()
                );
                return Ok(());
            }
            let id = slurm::submit(&text, &out, &sbatch_args)?;
            println!(
                "submitted Slurm job {id}: {} array task(s), each logging to its cell's train.log; follow it with: squeue -j {id}",
                todo.len()
            );
            println!(
                "{report_hint} (when it is done; running this sweep again resumes what is unfinished)"
            );
            Ok(())
        }
        Runner::Local => {
            let runner = LocalRunner {
                program,
                global_args: global_args(g, a.adapters.is_empty()),
                jobs: a.jobs.unwrap_or(1),
                adapters: a.adapters.clone(),
            };
            if a.dry_run {
                for (i, c) in todo.iter().enumerate() {
                    let adapter = (!runner.adapters.is_empty())
                        .then(|| runner.adapters[i % runner.jobs % runner.adapters.len()].as_str());
                    let args = sw::local::train_args(c, &runner.global_args, adapter);
                    println!("{} {}", runner.program.display(), args.join(" "));
                }
                return Ok(());
            }
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
                .map_err(|e| Error::Device(format!("cannot catch Ctrl-C: {e}")))?;
            println!("running {} cell(s), {} at a time", todo.len(), runner.jobs);
            let o = runner.run(&todo, &stop, &mut |line| println!("  {line}"))?;
            if o.stopped {
                return Err(Error::Stopped(format!(
                    "children stopped; {} cell(s) finished in this run. Run the same command again to resume (finished cells are skipped, started ones continue from their last epoch)",
                    o.finished.len()
                )));
            }
            if !o.failed.is_empty() {
                let list: Vec<String> = o
                    .failed
                    .iter()
                    .map(|f| format!("{} ({}; log: {})", f.cell, f.status, f.log.display()))
                    .collect();
                return Err(Error::RunsFailed(format!(
                    "{} of {} cell(s) failed: {}",
                    o.failed.len(),
                    todo.len(),
                    list.join(", ")
                )));
            }
            println!("all {} cell(s) done; {report_hint}", todo.len());
            Ok(())
        }
    }
}

/// Prints (and writes) the table of the runs in the given directories.
pub fn report(a: &ReportArgs) -> Result<()> {
    let entries = report::collect(&a.dirs)?;
    let t = report::table(&entries);
    let md = t.markdown();
    print!("{md}");
    let write = |path: &PathBuf, text: &str| {
        dynloss_wgpu::report::write_atomic(path, text.as_bytes())
            .map(|()| eprintln!("wrote {}", path.display()))
    };
    if let Some(p) = &a.out {
        write(p, &md)?;
    }
    if let Some(p) = &a.csv {
        write(p, &t.csv())?;
    }
    if let Some(p) = &a.plot {
        t.plot(p)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
