//! The step profiler: every recorded command lands under its label with the right count and
//! operation count, and `bench step --profile` prints the per-family and per-kernel tables.

mod common;

use dynloss_wgpu::tensor::Tensor;
use dynloss_wgpu::tensor::conv::{ConvGeom, conv2d, conv2d_input_grad, conv2d_weight_grad};
use dynloss_wgpu::tensor::matmul::matmul;

#[test]
fn profile_counts_each_kernel_with_its_label_and_flops() {
    // GPU timestamps (lavapipe has them) and the host-timed fallback.
    for gpu_timestamps in [true, false] {
        profile_counts(gpu_timestamps);
    }
}

fn profile_counts(gpu_timestamps: bool) {
    let gpu = common::gpu();
    let mut rng = common::Rng::new(3);
    let x = Tensor::from_f32(&gpu, &[2, 3, 8, 8], &rng.vec(2 * 3 * 64)).unwrap();
    let w = Tensor::from_f32(&gpu, &[4, 3, 3, 3], &rng.vec(4 * 27)).unwrap();
    let a = Tensor::from_f32(&gpu, &[5, 6], &rng.vec(30)).unwrap();
    let b = Tensor::from_f32(&gpu, &[6, 7], &rng.vec(42)).unwrap();
    let g = ConvGeom { stride: 2, pad: 1 };
    // Work recorded before the profile starts is not counted.
    let before = conv2d(&x, &w, g).unwrap();
    assert!(gpu.finish_profile().is_err(), "no profile was open");

    gpu.start_profile(gpu_timestamps).unwrap();
    let want_timer = if gpu_timestamps {
        "GPU timestamps"
    } else {
        "host timing"
    };
    let y = conv2d(&x, &w, g).unwrap();
    let y2 = conv2d(&x, &w, g).unwrap();
    conv2d_input_grad(&y, &w, (8, 8), g).unwrap();
    conv2d_weight_grad(&x, &y2, (3, 3), g).unwrap();
    let c = matmul(&a, &b, false, false).unwrap();
    let read = c.to_f32_vec().unwrap();
    let p = gpu.finish_profile().unwrap();
    drop(before);

    assert_eq!(read.len(), 35);
    assert_eq!(p.timer, want_timer);
    let line = |label: &str| {
        p.lines
            .iter()
            .find(|l| l.label == label)
            .unwrap_or_else(|| panic!("no line '{label}' in {:#?}", p.lines))
    };
    // 2 images, 4 output channels on a 4x4 plane, 3 channels x 3x3 taps each: 2 flops per
    // multiply-add.
    let conv_flops = 2.0 * (2 * 4 * 4 * 4 * 3 * 9) as f64;
    let fwd = line("conv2d forward 3->4 8x8 k3 s2");
    assert_eq!(fwd.count, 2);
    assert_eq!(fwd.flops, 2.0 * conv_flops);
    assert_eq!(line("conv2d input_grad 3->4 8x8 k3 s2").count, 1);
    assert_eq!(line("conv2d weight_grad 3->4 8x8 k3 s2").flops, conv_flops);
    let mm = line("matmul 5x6x7");
    assert_eq!((mm.count, mm.flops), (1, 2.0 * 210.0));
    // Bound bytes: a, b and the output.
    assert_eq!(mm.bytes, 4.0 * (30 + 42 + 35) as f64);
    assert_eq!(line("readback").count, 1);
    assert!(p.lines.iter().all(|l| l.seconds >= 0.0));
    assert!(p.total_seconds() > 0.0);
    let families: Vec<String> = p.families().iter().map(|f| f.label.clone()).collect();
    for f in [
        "conv2d forward",
        "conv2d input_grad",
        "conv2d weight_grad",
        "matmul",
    ] {
        assert!(
            families.contains(&f.to_string()),
            "{f} missing in {families:?}"
        );
    }
    let fwd_family = p
        .families()
        .into_iter()
        .find(|f| f.label == "conv2d forward")
        .unwrap();
    assert_eq!(fwd_family.count, 2);
    // Per-step totals divide everything.
    let half = p.per(2);
    assert_eq!(
        half.lines
            .iter()
            .find(|l| l.label == fwd.label)
            .unwrap()
            .flops,
        conv_flops
    );
}

#[test]
fn bench_step_profile_prints_families_and_kernels() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynloss-wgpu"))
        .args([
            "bench",
            "step",
            "--depth",
            "8",
            "--input",
            "1x8x8",
            "--batch",
            "4",
            "--reps",
            "1",
            "--profile",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("profile of one plain training step"),
        "{text}"
    );
    assert!(text.contains("| family | ms per step |"), "{text}");
    assert!(text.contains("| kernel | ms per step |"), "{text}");
    // ResNet-8 on 1x8x8: the stem convolution, forward, with its GFLOP/s.
    let stem = text
        .lines()
        .find(|l| l.starts_with("| conv2d forward 1->16 8x8 k3 s1 |"))
        .unwrap_or_else(|| panic!("no stem line in\n{text}"));
    assert!(stem.contains("GFLOP/s"), "{stem}");
    for family in ["batchnorm", "optim", "conv2d weight_grad"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("| {family} |"))),
            "{family} missing in\n{text}"
        );
    }
}

/// `bench step --method dl` at batch 8 on ResNet-8 (1x16x16) with `extra` flags: its output
/// and the table's rows as (name, median ms, peak MiB).
fn bench_step_dl(extra: &[&str]) -> (String, Vec<(String, f64, f64)>) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynloss-wgpu"))
        .args([
            "bench", "step", "--method", "dl", "--depth", "8", "--input", "1x16x16", "--batch",
            "8", "--reps", "2",
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = text
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| step"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let num = |i: usize| cells[i].parse::<f64>().unwrap_or(f64::NAN);
            (cells[1].to_string(), num(2), num(5))
        })
        .collect();
    (text, rows)
}

/// `bench step --method dl` prints its four steps in order, each with its own peak memory:
/// the second-order ones hold the recorded graph, the plain ones do not (so rows whose names
/// and measurements were paired wrongly while the steps take turns show up).
#[test]
fn bench_step_dl_prints_the_four_steps_with_their_memory() {
    let (text, rows) = bench_step_dl(&[]);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "forward + backward (cross-entropy)",
            "plain training step (+ SGD)",
            "meta gradient (2nd order)",
            "Dynamic Loss iteration"
        ],
        "{text}"
    );
    assert!(rows.iter().all(|r| r.1 > 0.0), "{text}");
    let peak: Vec<f64> = rows.iter().map(|r| r.2).collect();
    assert!(peak[2] > 1.5 * peak[1], "meta gradient memory: {text}");
    assert!(peak[3] >= peak[2], "iteration memory: {text}");
    assert!(text.contains("batch 8, 10 classes"), "{text}");

    // A smaller meta batch is named in the header and shrinks the meta pass's memory only.
    let (small, small_rows) = bench_step_dl(&["--meta-batch", "2"]);
    assert!(
        small.contains("batch 8 (meta batch 2), 10 classes"),
        "{small}"
    );
    assert_eq!(small_rows[1].2, rows[1].2, "plain step memory: {small}");
    assert!(small_rows[2].2 < peak[2], "meta gradient memory: {small}");
}
