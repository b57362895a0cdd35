//! The same fixed-seed training runs of every method on Vulkan and on OpenGL give the same
//! numbers, and `eval` of one checkpoint gives the same accuracy on both. Ignored in a plain
//! `cargo test` (it needs both drivers and takes minutes); `.ci/run` runs it with
//! `cargo test --test two_drivers -- --ignored` after installing lavapipe and llvmpipe.

use std::path::{Path, PathBuf};
use std::process::Command;

use dynloss_wgpu::train::metrics::read_metrics;

/// Largest accepted difference in test accuracy (percentage points; 5 of the 500 images).
const ACC_TOLERANCE: f64 = 1.0;
/// Largest accepted relative difference in an epoch's training loss.
const LOSS_TOLERANCE: f64 = 1e-3;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dynloss-wgpu"));
    // The backend comes from --backend alone.
    c.env_remove("WGPU_BACKEND").env_remove("WGPU_ADAPTER_NAME");
    c
}

/// Runs the binary with `args`; returns stdout, stderr (panics naming the command on failure).
fn run(args: &[&str]) -> (String, String) {
    let out = bin().args(args).output().expect("run dynloss-wgpu");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "dynloss-wgpu {args:?} failed:\n{so}\n{se}"
    );
    (so, se)
}

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("dynloss-two-drivers-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

/// A 2-epoch run on a long-tailed noisy slice of the built-in set (quick preset: 12x12, weak
/// view, batch 32).
fn train(backend: &str, method: &str, out: &Path) -> String {
    let out = out.to_string_lossy();
    let mut args = vec![
        "--backend",
        backend,
        "train",
        "--method",
        method,
        "--epochs",
        "2",
        "--train-limit",
        "1024",
        "--test-limit",
        "500",
        "--imbalance",
        "10",
        "--noise",
        "0.2",
        "--seed",
        "0",
        "--no-progress",
        "--out",
        &out,
    ];
    if method == "dl" {
        // One warm-up epoch, so the second runs the meta update.
        args.extend(["--warmup-epochs", "1"]);
    }
    run(&args).1
}

#[test]
#[ignore = "needs Vulkan and GL drivers; run by .ci/run"]
fn every_method_gives_the_same_numbers_on_vulkan_and_gl() {
    let root = tmp();
    let mut worst = (0.0f64, 0.0f64);
    for method in ["ce", "bs", "dl"] {
        let mut metrics = Vec::new();
        for (backend, name) in [("vulkan", "(Vulkan)"), ("gl", "(Gl)")] {
            let out = root.join(format!("{method}-{backend}"));
            let log = train(backend, method, &out);
            let first = log.lines().next().unwrap_or("");
            assert!(
                first.contains(name),
                "{method} on {backend} ran on: {first}"
            );
            metrics.push(read_metrics(&out.join("metrics.jsonl")).unwrap());
        }
        let (vk, gl) = (&metrics[0], &metrics[1]);
        assert_eq!(vk.len(), 2, "{method}: epochs on Vulkan");
        assert_eq!(gl.len(), 2, "{method}: epochs on GL");
        for (a, b) in vk.iter().zip(gl) {
            let dacc = (a.test_acc - b.test_acc).abs();
            let dloss = (a.loss - b.loss).abs() / a.loss.abs().max(1e-9);
            eprintln!(
                "{method} epoch {}: loss {} vs {}, test acc {} vs {} (Vulkan vs GL)",
                a.epoch, a.loss, b.loss, a.test_acc, b.test_acc
            );
            assert!(
                dacc <= ACC_TOLERANCE && dloss <= LOSS_TOLERANCE,
                "{method} epoch {}: Vulkan loss {} acc {}%, GL loss {} acc {}%",
                a.epoch,
                a.loss,
                a.test_acc,
                b.loss,
                b.test_acc
            );
            worst = (worst.0.max(dacc), worst.1.max(dloss));
        }
    }
    eprintln!(
        "largest Vulkan-GL difference: {} points of test accuracy, {:e} relative loss",
        worst.0, worst.1
    );

    // One checkpoint, evaluated on the whole 12x12 test split by each driver.
    let ck = root.join("dl-vulkan/checkpoint.safetensors");
    let ck = ck.to_string_lossy();
    let acc = |backend: &str| {
        let (so, _) = run(&[
            "--backend",
            backend,
            "eval",
            "--checkpoint",
            &ck,
            "--dataset",
            "builtin",
            "--image-size",
            "12",
        ]);
        so.lines()
            .find(|l| l.starts_with("accuracy: "))
            .unwrap_or_else(|| panic!("no accuracy line in:\n{so}"))
            .to_string()
    };
    let (vk, gl) = (acc("vulkan"), acc("gl"));
    eprintln!("eval: {vk} (Vulkan), {gl} (GL)");
    assert_eq!(vk, gl, "eval of one checkpoint differs between drivers");
    std::fs::remove_dir_all(&root).ok();
}
