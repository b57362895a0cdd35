//! The `dynloss-wgpu` command line: parse, build a config, call the library.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dynloss_wgpu::bench::{
    KernelBench, StepBench, format_steps, format_table, run_kernels, run_steps,
};
use dynloss_wgpu::gpu::{AdapterRequest, Gpu, adapter};
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
    /// List every GPU adapter found, with the limits and features the kernels rely on.
    Info,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
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
    /// Training-step times: plain step, forward+backward, the second-order meta gradient and
    /// a whole Dynamic Loss iteration, with peak GPU memory.
    Step {
        /// CIFAR ResNet depth (6n+2).
        #[arg(long, default_value_t = 32)]
        depth: usize,
        /// Batch size.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Input channels, height and width, e.g. 3x32x32 or 1x28x28.
        #[arg(long, default_value = "3x32x32")]
        input: String,
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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => info(&cli.gpu),
        Command::Bench {
            what: BenchWhat::Kernels { quick, reps },
        } => {
            let gpu = Gpu::new(&request(&cli.gpu))?;
            let mut cfg = if quick {
                KernelBench::quick()
            } else {
                KernelBench::full()
            };
            if let Some(r) = reps {
                if r == 0 {
                    return Err(Error::Config("--reps must be at least 1".into()));
                }
                cfg.reps = r;
            }
            let rows = run_kernels(&gpu, &cfg)?;
            print!("{}", format_table(&gpu, &rows));
            Ok(())
        }
        Command::Bench {
            what:
                BenchWhat::Step {
                    depth,
                    batch,
                    input,
                    reps,
                },
        } => {
            let dims: Vec<usize> = input.split('x').filter_map(|v| v.parse().ok()).collect();
            let [c, h, w] = dims[..] else {
                return Err(Error::Config(format!("--input '{input}' is not CxHxW")));
            };
            if batch == 0 || reps == 0 {
                return Err(Error::Config(
                    "--batch and --reps must be at least 1".into(),
                ));
            }
            let gpu = Gpu::new(&request(&cli.gpu))?;
            let cfg = StepBench {
                depth,
                input: [c, h, w],
                classes: 10,
                batch,
                reps,
            };
            let rows = run_steps(&gpu, &cfg)?;
            print!("{}", format_steps(&gpu, &cfg, &rows));
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
