//! `sweep` and `report` through the real binary, with no training: bad input gets one line
//! naming the flag or key, the dry runs print the cells and the Slurm script, a changed cell is
//! refused by name, and `report` reads a sweep whose runs were written by hand. The sweep
//! files in `configs/sweeps/` expand to the paper's grids.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dynloss_wgpu::sweep::{expand, load_sweep_file};
use dynloss_wgpu::train::{Method, TrainConfig};

const BIN: &str = env!("CARGO_BIN_EXE_dynloss-wgpu");

fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sweep-cli-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Runs and expects a failure with one `error:` line containing each of `needles`.
fn refused(args: &[&str], needles: &[&str]) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in {err}");
    }
}

#[test]
fn bad_input_gets_one_line_naming_the_flag_or_key() {
    let d = tmp("bad");
    let out = d.join("s");
    let o = out.to_str().unwrap();
    refused(
        &["sweep", "--out", o, "--grid", "nosie=0.1,0.2"],
        &["--grid", "unknown config key 'nosie'"],
    );
    refused(
        &["sweep", "--out", o, "--grid", "seed"],
        &["--grid seed", "KEY=V1"],
    );
    refused(
        &["sweep", "--out", o, "--grid", "method=ce,xx"],
        &["--grid method=xx", "unknown method 'xx'"],
    );
    refused(
        &["sweep", "--out", o, "--grid", "epochs=1.5"],
        &["--grid epochs=1.5"],
    );
    refused(
        &["sweep", "--out", o, "--grid", "noise=0.1,2"],
        &["cell noise=2.0", "--noise"],
    );
    refused(
        &[
            "sweep",
            "--out",
            o,
            "--runner",
            "slurm",
            "--adapters",
            "a,b",
        ],
        &["--adapters", "--runner local"],
    );
    refused(
        &["sweep", "--out", o, "--sbatch-args", "--gres=gpu:1"],
        &["--sbatch-args", "--runner slurm"],
    );
    refused(&["sweep", "--out", o, "--jobs", "0"], &["--jobs"]);
    let missing = d.join("missing.toml");
    refused(
        &["sweep", "--out", o, "--config", missing.to_str().unwrap()],
        &["missing.toml"],
    );
    let bad_file = d.join("bad.toml");
    std::fs::write(&bad_file, "epochs = 2\n[grid]\nseeds = [0, 1]\n").unwrap();
    refused(
        &["sweep", "--out", o, "--config", bad_file.to_str().unwrap()],
        &["bad.toml", "unknown config key 'seeds'"],
    );
    std::fs::write(d.join("notes.txt"), "x").unwrap();
    refused(
        &["sweep", "--out", d.to_str().unwrap(), "--grid", "seed=0"],
        &["--out", "not a sweep"],
    );
    refused(
        &["report", d.to_str().unwrap()],
        &["not a run", "nor a sweep"],
    );
    assert!(!out.exists(), "nothing written by refused sweeps");
}

#[test]
fn dry_runs_print_the_commands_and_the_slurm_script() {
    let d = tmp("dry");
    let out = d.join("s");
    let o = out.to_str().unwrap();
    let r = run(&[
        "--backend",
        "vulkan",
        "sweep",
        "--out",
        o,
        "--grid",
        "method=ce,bs",
        "--grid",
        "seed=0,1",
        "--dry-run",
        "--jobs",
        "2",
        "--adapters",
        "A,B",
    ]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        text.contains("4 cells (4 new): 0 finished, 0 part-trained, 4 not started"),
        "{text}"
    );
    let cmds: Vec<&str> = text.lines().filter(|l| l.contains(" train ")).collect();
    assert_eq!(cmds.len(), 4, "{text}");
    assert!(
        cmds[0].contains("--backend vulkan --adapter A train --no-progress --config"),
        "{text}"
    );
    assert!(cmds[1].contains("--adapter B"), "{text}");
    assert!(
        cmds[3].contains("method=bs,seed=1/config.toml --out"),
        "{text}"
    );
    let manifest = std::fs::read_to_string(out.join("sweep.json")).unwrap();
    assert!(manifest.contains("\"method=ce,seed=1\""), "{manifest}");
    let cfg = TrainConfig::from_file(&out.join("method=bs,seed=1/config.toml")).unwrap();
    assert_eq!((cfg.method, cfg.seed), (Method::Bs, 1));

    let r = run(&[
        "sweep",
        "--out",
        o,
        "--grid",
        "method=ce,bs",
        "--grid",
        "seed=0,1",
        "--runner",
        "slurm",
        "--dry-run",
        "--sbatch-args",
        "--gres=gpu:1 --time=1:00:00",
    ]);
    let script = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(script.contains("0 new"), "{script}");
    assert!(script.contains("#SBATCH --array=0-3\n"), "{script}");
    assert!(script.contains("#SBATCH --requeue\n"), "{script}");
    assert!(
        script.contains("exec >>\"$cell/train.log\" 2>&1"),
        "{script}"
    );
    assert!(script.contains("--gres=gpu:1 --time=1:00:00"), "{script}");
    assert!(
        !out.join("sweep.sbatch").exists(),
        "a dry run submits nothing"
    );

    // The same cells with other settings are refused by name; nothing is changed.
    let other = d.join("other.toml");
    std::fs::write(&other, "epochs = 7\n").unwrap();
    refused(
        &[
            "sweep",
            "--out",
            o,
            "--config",
            other.to_str().unwrap(),
            "--grid",
            "method=ce",
            "--grid",
            "seed=0,1,2",
            "--dry-run",
        ],
        &["cell method=ce,seed=0", "epochs (was: 4, now: 7)"],
    );
    assert!(!out.join("method=ce,seed=2").exists());
}

/// Writes `summary.json` into a cell's run directory as `train` would.
fn fake_run(cell: &Path, last: f64, best: f64, epochs_done: usize) {
    let cfg = TrainConfig::from_file(&cell.join("config.toml")).unwrap();
    let run = cell.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let s = serde_json::json!({"last_acc": last, "best_acc": best, "epochs": epochs_done,
        "seconds": 1.0, "noise_rate": 0.1, "train_samples": 10, "config": cfg, "adapter": "x"});
    std::fs::write(run.join("summary.json"), s.to_string()).unwrap();
    std::fs::write(run.join("checkpoint.safetensors"), b"").unwrap();
}

#[test]
fn report_reads_a_sweep_and_marks_unfinished_cells() {
    let d = tmp("report");
    let out = d.join("s");
    let o = out.to_str().unwrap();
    let base = d.join("base.toml");
    std::fs::write(&base, "epochs = 2\n").unwrap();
    let r = run(&[
        "sweep",
        "--out",
        o,
        "--config",
        base.to_str().unwrap(),
        "--grid",
        "noise=0.1,0.2",
        "--grid",
        "method=ce,bs",
        "--grid",
        "seed=0,1",
        "--dry-run",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let cell = |n: &str| out.join(n);
    fake_run(&cell("noise=0.1,method=ce,seed=0"), 40.0, 41.0, 2);
    fake_run(&cell("noise=0.1,method=ce,seed=1"), 44.0, 47.0, 2);
    fake_run(&cell("noise=0.1,method=bs,seed=0"), 50.0, 50.0, 2);
    fake_run(&cell("noise=0.1,method=bs,seed=1"), 52.0, 53.0, 1); // part-trained
    fake_run(&cell("noise=0.2,method=bs,seed=0"), 30.0, 31.0, 2);
    fake_run(&cell("noise=0.2,method=bs,seed=1"), 34.0, 35.0, 2);
    let csv = d.join("t.csv");
    let md = d.join("t.md");
    let r = run(&[
        "report",
        o,
        "--out",
        md.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&md).unwrap(), text);
    // ce 0.1: last 40, 44 -> 42 ± 2.83 (sqrt 8); best 41, 47 -> 44 ± 4.24 (sqrt 18).
    assert!(text.contains(
        "| noise=0.1 | 42.00 ± 2.83 / 44.00 ± 4.24 (n=2) | 50.00 ± 0.00 / 50.00 ± 0.00 (n=1) (1 unfinished) * |"
    ), "{text}");
    assert!(
        text.contains(
            "| noise=0.2 | – (n=0) (2 unfinished) * | 32.00 ± 2.83 / 33.00 ± 2.83 (n=2) |"
        ),
        "{text}"
    );
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(
        csv.contains("0.1,ce,2,0,42.0000,2.8284,44.0000,4.2426\n"),
        "{csv}"
    );
    // A rerun resumes the part-trained cell and starts the pending ones, skipping the rest.
    let r = run(&[
        "sweep",
        "--out",
        o,
        "--config",
        base.to_str().unwrap(),
        "--grid",
        "noise=0.1,0.2",
        "--grid",
        "method=ce,bs",
        "--grid",
        "seed=0,1",
        "--dry-run",
    ]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("8 cells (0 new): 5 finished, 1 part-trained, 2 not started"),
        "{text}"
    );
    let cmds: Vec<&str> = text.lines().filter(|l| l.contains(" train ")).collect();
    assert_eq!(cmds.len(), 3, "{text}");
    assert!(
        cmds[0].contains("--resume") && cmds[0].contains("method=bs,seed=1/run"),
        "{text}"
    );
    // One run directory reports too.
    let r = run(&[
        "report",
        cell("noise=0.2,method=bs,seed=0")
            .join("run")
            .to_str()
            .unwrap(),
    ]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("| all runs | 30.00 ± 0.00 / 31.00 ± 0.00 (n=1) |"),
        "{text}"
    );
}

#[test]
fn the_paper_grids_expand_to_valid_cells() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweeps");
    for (file, dataset_cells) in [("cifar10-paper.toml", 90), ("fashion-mnist.toml", 90)] {
        let (base, axes) = load_sweep_file(&dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let cells = expand(&base, &axes).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(cells.len(), dataset_cells, "{file}");
        let keys: Vec<&str> = axes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["imbalance", "noise", "method", "seed"], "{file}");
        assert!(cells.iter().all(|c| c.config.batch_size == 512), "{file}");
        assert_eq!(
            cells[0].name, "imbalance=10.0,noise=0.1,method=ce,seed=0",
            "{file}"
        );
    }
}
