//! `bench kernels` and `bench step`.

use clap::Subcommand;
use dynloss_wgpu::bench::{
    KernelBench, StepBench, format_profile, format_steps, format_table, matmul_rate, profile_step,
    run_kernels, run_steps,
};
use dynloss_wgpu::choice::Choice;
use dynloss_wgpu::gpu::Gpu;
use dynloss_wgpu::train::Method;
use dynloss_wgpu::{Error, Result};

use super::choice;

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchWhat {
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
        #[arg(long, value_parser = choice::<Method>(), default_value_t = Method::Ce)]
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
        /// Meta batch of the Dynamic Loss steps (default: the batch). The paper's recipe at
        /// batch 512 uses the whole meta set: 150 samples when the smallest class has 60.
        #[arg(long)]
        meta_batch: Option<usize>,
        /// Timed repetitions per line (median reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Instead of the table, time every kernel of the step (of the Dynamic Loss
        /// iteration with --method dl) over --reps steps: per family and per kernel shape,
        /// time, share of the step, count and GFLOP/s or GB/s.
        #[arg(long)]
        profile: bool,
    },
}

/// Runs a benchmark on `gpu` and prints its table.
pub fn run(gpu: &Gpu, what: &BenchWhat) -> Result<()> {
    match what {
        BenchWhat::Kernels { quick, reps } => {
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
            let rows = run_kernels(gpu, &cfg)?;
            print!("{}", format_table(gpu, &rows));
            Ok(())
        }
        BenchWhat::Step {
            method,
            depth,
            input,
            batch,
            meta_batch,
            reps,
            profile,
        } => {
            if *batch < 2 || *reps == 0 {
                return Err(Error::Config(
                    "--batch must be at least 2 and --reps at least 1".into(),
                ));
            }
            let meta_batch = meta_batch.unwrap_or(*batch);
            if meta_batch < 2 {
                return Err(Error::Config("--meta-batch must be at least 2".into()));
            }
            let configs: Vec<(usize, [usize; 3])> = match (depth, input) {
                (None, None) => vec![(32, [3, 32, 32]), (8, [1, 28, 28])],
                (d, i) => vec![(
                    d.unwrap_or(32),
                    i.as_deref()
                        .map(parse_input)
                        .transpose()?
                        .unwrap_or([3, 32, 32]),
                )],
            };
            // Step times differ up to 4x between machines on one driver: this rate, from the
            // same run, is what they compare by.
            let rate = matmul_rate(gpu, 1024, 3)?;
            println!(
                "machine: matmul 1024^3 at {rate:.2} GFLOP/s ({} kernels)\n",
                gpu.tiling().name()
            );
            for (depth, input) in configs {
                let cfg = StepBench {
                    depth,
                    input,
                    classes: 10,
                    batch: *batch,
                    meta_batch,
                    reps: *reps,
                    dynamic_loss: *method == Method::Dl,
                };
                if *profile {
                    let p = profile_step(gpu, &cfg)?;
                    println!("{}", format_profile(gpu, &cfg, &p));
                } else {
                    let rows = run_steps(gpu, &cfg)?;
                    println!("{}", format_steps(gpu, &cfg, &rows));
                }
            }
            Ok(())
        }
    }
}

/// `CxHxW`, e.g. `3x32x32`.
fn parse_input(s: &str) -> Result<[usize; 3]> {
    let d: Vec<usize> = s.split('x').filter_map(|v| v.parse().ok()).collect();
    match d[..] {
        [c, h, w] if c * h * w > 0 => Ok([c, h, w]),
        _ => Err(Error::Config(format!("--input '{s}' is not CxHxW"))),
    }
}
