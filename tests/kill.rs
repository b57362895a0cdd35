//! A run survives being killed at any instant: the real binary is SIGKILLed at random moments
//! and while each kind of file is being written, resumed each time, and must end with the
//! same weights, metrics (timing aside) and summary as a run that was never interrupted.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Rng, TempDir};
use dynloss_wgpu::train::Checkpoint;

const BIN: &str = env!("CARGO_BIN_EXE_dynloss-wgpu");

fn start(out: &Path) -> Child {
    let resume = out.join("checkpoint.safetensors").exists();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "train",
        "--image-size",
        "8",
        "--train-limit",
        "192",
        "--test-limit",
        "64",
    ])
    .args([
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--seed",
        "3",
        "--no-progress",
    ]);
    if resume {
        cmd.arg("--resume").arg(out);
    } else {
        cmd.arg("--out").arg(out);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a temporary file whose name contains `kind` appears in `out` (or `out/plots`),
/// or the child exits; returns whether one was seen.
fn wait_for_temp(child: &mut Child, out: &Path, kind: &str, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        for d in [out.to_path_buf(), out.join("plots")] {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if n.ends_with(".tmp") && n.contains(kind) {
                        return true;
                    }
                }
            }
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<(String, Vec<f32>)> = Checkpoint::load(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(n, _, d)| (n, d))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn without_timing(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        for k in ["seconds", "images_per_sec"] {
            o.remove(k);
        }
    }
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v = serde_json::from_str(l).unwrap();
            without_timing(&mut v);
            v
        })
        .collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    let mut v =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    without_timing(&mut v);
    v
}

#[test]
fn killed_and_resumed_runs_end_as_an_uninterrupted_one() {
    let tmp = TempDir::new("kill");
    let straight = tmp.0.join("straight");
    let t0 = Instant::now();
    let mut child = start(&straight);
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    let whole = t0.elapsed();
    // The log's first line says what runs where, backend included.
    let first = log.lines().next().unwrap_or("");
    assert!(
        first.starts_with("training ce on builtin")
            && ["(Vulkan)", "(Gl)", "(Metal)", "(Dx12)"]
                .iter()
                .any(|b| first.contains(b)),
        "{first}"
    );

    let out = tmp.0.join("killed");
    let mut rng = Rng::new(5);
    let mut kills = 0;
    // During each kind of write, then at random instants, until the run finishes.
    let targets = [
        "checkpoint",
        "metrics",
        "summary",
        "accuracy",
        "checkpoint",
        "metrics",
    ];
    for round in 0..40 {
        let mut child = start(&out);
        let killed = match targets.get(round) {
            Some(kind) => wait_for_temp(&mut child, &out, kind, whole * 2),
            None => {
                let at = whole.mul_f32(rng.uniform());
                std::thread::sleep(at);
                child.try_wait().unwrap().is_none()
            }
        };
        if killed {
            child.kill().unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        if !killed && status.success() && round >= targets.len() {
            break;
        }
        assert!(killed || status.success(), "a resumed run failed: {status}");
        if !killed && status.success() {
            // Finished before the write we waited for: start over in a fresh directory.
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    assert!(kills >= 4, "only {kills} kills landed");
    assert_eq!(
        tensors(&out.join("checkpoint.safetensors")),
        tensors(&straight.join("checkpoint.safetensors"))
    );
    assert_eq!(metrics(&out), metrics(&straight));
    assert_eq!(summary(&out), summary(&straight));
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temp files left behind: {left:?}");
}
