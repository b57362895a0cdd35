//! Kernel benchmarks: GFLOP/s of matmul and of every ResNet-32 convolution shape in all three
//! directions, and segmented-sort throughput. Shared by `cargo bench` and `dynloss-wgpu bench`.
//! Training-step times and the per-kernel profile of a step are in [`step`].

pub mod step;

pub use step::{StepBench, StepRow, format_profile, format_steps, profile_step, run_steps};

use std::time::Instant;

use crate::error::Result;
use crate::gpu::{ConvAlgo, Gpu, Tiling};
use crate::tensor::Tensor;
use crate::tensor::conv::{ConvGeom, conv2d, conv2d_input_grad, conv2d_weight_grad};
use crate::tensor::matmul::matmul;
use crate::tensor::sort::segmented_sort;
use crate::tensor::winograd::{self, Tile};

/// One measured line of the table.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// What was run.
    pub name: String,
    /// Its shape, human readable.
    pub shape: String,
    /// Median wall time of one run, in milliseconds.
    pub median_ms: f64,
    /// Throughput in `unit`.
    pub rate: f64,
    /// "GFLOP/s" or "Mkeys/s".
    pub unit: &'static str,
}

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct KernelBench {
    /// Batch for the convolution shapes (128 in the reported table).
    pub batch: usize,
    /// Side of the square matmul (1024 in the reported table).
    pub matmul: usize,
    /// Keys for the sort (50,000 in the reported table).
    pub sort_keys: usize,
    /// Timed repetitions per line (after one warm-up run).
    pub reps: usize,
}

impl KernelBench {
    /// The sizes the project reports.
    pub fn full() -> Self {
        KernelBench {
            batch: 128,
            matmul: 1024,
            sort_keys: 50_000,
            reps: 5,
        }
    }

    /// Small sizes for a smoke run.
    pub fn quick() -> Self {
        KernelBench {
            batch: 8,
            matmul: 256,
            sort_keys: 5_000,
            reps: 2,
        }
    }
}

/// Median wall time in seconds of `f` followed by a GPU sync, after one warm-up run.
pub fn median_secs(gpu: &Gpu, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    gpu.sync()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f()?;
        gpu.sync()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// GFLOP/s of an `n`^3 matmul with the GPU's kernels (median of `reps` after a warm-up):
/// the machine's speed, printed beside step times so that runs on different machines compare.
pub fn matmul_rate(gpu: &Gpu, n: usize, reps: usize) -> Result<f64> {
    let a = random(gpu, &[n, n], 1)?;
    let b = random(gpu, &[n, n], 2)?;
    let t = median_secs(gpu, reps, || matmul(&a, &b, false, false).map(|_| ()))?;
    Ok(2.0 * (n * n * n) as f64 / t / 1e9)
}

/// The distinct convolutions of ResNet-32 on 3x32x32: (Ci, Co, input side, stride).
pub const RESNET32_CONVS: [(usize, usize, usize, usize); 6] = [
    (3, 16, 32, 1),
    (16, 16, 32, 1),
    (16, 32, 32, 2),
    (32, 32, 16, 1),
    (32, 64, 16, 2),
    (64, 64, 8, 1),
];

pub(crate) fn random(gpu: &Gpu, shape: &[usize], seed: u32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    // A cheap integer hash: the values do not matter, only that they are not all equal.
    let data: Vec<f32> = (0..n as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13);
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    Tensor::from_f32(gpu, shape, &data)
}

/// Runs the whole table.
pub fn run_kernels(gpu: &Gpu, cfg: &KernelBench) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let n = cfg.matmul;
    let a = random(gpu, &[n, n], 1)?;
    let b = random(gpu, &[n, n], 2)?;
    // Both kernel shapes for matmul and the direct convolutions, whatever the adapter's own.
    let tiling = gpu.tiling();
    for kernel_shape in [Tiling::Lanes, Tiling::Workgroup] {
        gpu.set_tiling(kernel_shape);
        for (ta, tb, label) in [
            (false, false, "A B"),
            (true, false, "A^T B"),
            (false, true, "A B^T"),
        ] {
            let t = median_secs(gpu, cfg.reps, || matmul(&a, &b, ta, tb).map(|_| ()))?;
            rows.push(BenchRow {
                name: format!("matmul {label}{}", suffix(kernel_shape)),
                shape: format!("{n}x{n}x{n}"),
                median_ms: t * 1e3,
                rate: 2.0 * (n * n * n) as f64 / t / 1e9,
                unit: "GFLOP/s",
            });
        }
    }
    gpu.set_tiling(tiling);
    drop((a, b));
    // The plain rows time the direct kernels; the Winograd rows call it explicitly.
    let algo = gpu.conv_algo();
    gpu.set_conv_algo(ConvAlgo::Direct);
    for (ci, co, side, stride) in RESNET32_CONVS {
        let g = ConvGeom { stride, pad: 1 };
        let o = g.out_size(side, 3).expect("3x3 fits");
        let x = random(gpu, &[cfg.batch, ci, side, side], 3)?;
        let w = random(gpu, &[co, ci, 3, 3], 4)?;
        let dy = random(gpu, &[cfg.batch, co, o, o], 5)?;
        let flops = 2.0 * (cfg.batch * o * o * co * ci * 9) as f64;
        let shape = format!("N{} {ci}->{co} {side}x{side} s{stride}", cfg.batch);
        type Run<'a> = Box<dyn Fn() -> Result<()> + 'a>;
        let dirs: [(&str, Run); 3] = [
            ("conv forward", Box::new(|| conv2d(&x, &w, g).map(|_| ()))),
            (
                "conv input-grad",
                Box::new(|| conv2d_input_grad(&dy, &w, (side, side), g).map(|_| ())),
            ),
            (
                "conv weight-grad",
                Box::new(|| conv2d_weight_grad(&x, &dy, (3, 3), g).map(|_| ())),
            ),
        ];
        let mut wino: Vec<(String, Run)> = Vec::new();
        if winograd::applies((3, 3), stride, 1) {
            for (tile, fwd, bwd) in [
                (
                    Tile::F2,
                    "conv forward, winograd F2",
                    "conv input-grad, winograd F2",
                ),
                (
                    Tile::F4,
                    "conv forward, winograd F4",
                    "conv input-grad, winograd F4",
                ),
            ] {
                let (x, w, dy) = (&x, &w, &dy);
                wino.push((
                    fwd.into(),
                    Box::new(move || winograd::conv2d(x, w, 1, tile).map(|_| ())),
                ));
                wino.push((
                    bwd.into(),
                    Box::new(move || winograd::conv2d_input_grad(dy, w, 1, tile).map(|_| ())),
                ));
            }
        }
        // The direct rows once per kernel shape; Winograd with the adapter's own.
        let mut runs: Vec<(String, Tiling, &Run)> = Vec::new();
        for kernel_shape in [Tiling::Lanes, Tiling::Workgroup] {
            for (name, f) in &dirs {
                runs.push((format!("{name}{}", suffix(kernel_shape)), kernel_shape, f));
            }
        }
        for (name, f) in &wino {
            runs.push((name.clone(), tiling, f));
        }
        for (name, kernel_shape, f) in runs {
            gpu.set_tiling(kernel_shape);
            let t = median_secs(gpu, cfg.reps, f)?;
            rows.push(BenchRow {
                name,
                shape: shape.clone(),
                median_ms: t * 1e3,
                rate: flops / t / 1e9,
                unit: "GFLOP/s",
            });
        }
    }
    gpu.set_conv_algo(algo);
    gpu.set_tiling(tiling);
    for classes in [10u32, 100] {
        let k = cfg.sort_keys;
        let labels: Vec<u32> = (0..k as u32)
            .map(|i| i.wrapping_mul(2_654_435_761) % classes)
            .collect();
        let seg = Tensor::from_u32(gpu, &[k], &labels)?;
        let key = random(gpu, &[k], 6)?;
        let idx = Tensor::from_u32(gpu, &[k], &(0..k as u32).collect::<Vec<_>>())?;
        let t = median_secs(gpu, cfg.reps, || {
            segmented_sort(&seg, &key, &idx).map(|_| ())
        })?;
        rows.push(BenchRow {
            name: "segmented sort".into(),
            shape: format!("{k} keys, {classes} classes"),
            median_ms: t * 1e3,
            rate: k as f64 / t / 1e6,
            unit: "Mkeys/s",
        });
    }
    Ok(rows)
}

/// How a row names the kernel shape it ran with.
fn suffix(tiling: Tiling) -> &'static str {
    match tiling {
        Tiling::Workgroup => ", workgroup tiles",
        _ => "",
    }
}

/// The table as Markdown.
pub fn format_table(gpu: &Gpu, rows: &[BenchRow]) -> String {
    let info = gpu.info();
    let mut s = format!(
        "adapter: {} ({:?}, {} {})\n\n| kernel | shape | median ms | rate |\n|---|---|---:|---:|\n",
        info.name, info.backend, info.driver, info.driver_info
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.2} {} |\n",
            r.name, r.shape, r.median_ms, r.rate, r.unit
        ));
    }
    s
}
