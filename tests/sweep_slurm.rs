//! A real sweep on a real Slurm (`.ci/slurm.sh start` sets up a single-node one): 2 methods x
//! 2 seeds of a tiny run on the built-in set, submitted with `--runner slurm`, waited for,
//! and its `report` checked against the cells' own summaries; then the same sweep with
//! `--runner local --jobs 2`, whose report must agree cell by cell (runs are deterministic
//! per seed). Ignored by a plain `cargo test` (it trains); `.ci/run` runs it with
//! `-- --ignored`. Without `sbatch` it skips, except under CI=true, where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dynloss-wgpu");
/// The longest the Slurm array may take.
const SLURM_LIMIT: Duration = Duration::from_secs(600);
const CELLS: [&str; 4] = [
    "method=ce,seed=0",
    "method=ce,seed=1",
    "method=bs,seed=0",
    "method=bs,seed=1",
];

fn run(args: &[&str]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sweep_args<'a>(base: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "sweep",
        "--config",
        base,
        "--out",
        out,
        "--grid",
        "method=ce,bs",
        "--grid",
        "seed=0,1",
    ]
}

/// (last, best) from a cell's own summary, if finished.
fn summary(cell: &Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(cell.join("run/summary.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (v["epochs"] == v["config"]["epochs"]).then(|| {
        (
            v["last_acc"].as_f64().unwrap(),
            v["best_acc"].as_f64().unwrap(),
        )
    })
}

fn logs(dir: &Path) -> String {
    let mut s = String::new();
    for c in CELLS {
        let log = std::fs::read_to_string(dir.join(c).join("train.log")).unwrap_or_default();
        s.push_str(&format!("--- {c}/train.log\n{log}\n"));
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("slurm")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            s.push_str(&format!("--- {}\n{text}\n", e.path().display()));
        }
    }
    s
}

/// The report's CSV of `dir`, checked against the cells' summaries: one line per method,
/// 2 seeds, the mean and sample standard deviation of the two runs.
fn checked_report(dir: &Path) -> String {
    let csv = dir.join("table.csv");
    let out = run(&[
        "report",
        dir.to_str().unwrap(),
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(!md.contains('*'), "no unfinished cell:\n{md}");
    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    for (line, method) in lines[1..].iter().zip(["ce", "bs"]) {
        let runs: Vec<(f64, f64)> = [0, 1]
            .iter()
            .map(|s| summary(&dir.join(format!("method={method},seed={s}"))).unwrap())
            .collect();
        let mean = |f: fn(&(f64, f64)) -> f64| (f(&runs[0]) + f(&runs[1])) / 2.0;
        // Two values: the sample standard deviation is |a - b| / sqrt(2).
        let sd = |f: fn(&(f64, f64)) -> f64| (f(&runs[0]) - f(&runs[1])).abs() / 2f64.sqrt();
        let want = format!(
            "{method},2,0,{:.4},{:.4},{:.4},{:.4}",
            mean(|r| r.0),
            sd(|r| r.0),
            mean(|r| r.1),
            sd(|r| r.1)
        );
        assert_eq!(*line, want, "{csv}");
        assert!(
            md.contains(&format!("{:.2} ± {:.2} / ", mean(|r| r.0), sd(|r| r.0))),
            "{md}"
        );
    }
    csv
}

#[test]
#[ignore = "trains 8 tiny runs and needs Slurm (.ci/slurm.sh start); .ci/run runs it"]
fn a_slurm_sweep_and_a_local_sweep_report_the_same_table() {
    let have_sbatch = Command::new("sbatch").arg("--version").output().is_ok();
    if !have_sbatch {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but sbatch is missing: run `bash .ci/slurm.sh start` first"
        );
        eprintln!("skipped: no sbatch on PATH (bash .ci/slurm.sh start sets up a local Slurm)");
        return;
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sweep-slurm");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let base = root.join("tiny.toml");
    // A few hundred images of the built-in set at 12 x 12, one epoch.
    std::fs::write(
        &base,
        "dataset = \"builtin\"\nmodel = \"resnet8\"\nimage_size = 12\naugment = \"weak\"\n\
         epochs = 1\nbatch_size = 32\nlr_warmup_epochs = 0\ntrain_limit = 320\ntest_limit = 200\n",
    )
    .unwrap();
    let base = base.to_str().unwrap();

    // Slurm: submit, then wait for every cell's summary (bounded).
    let sdir = root.join("slurm");
    let s = sdir.to_str().unwrap();
    let mut args = sweep_args(base, s);
    args.extend(["--runner", "slurm", "--sbatch-args", "--cpus-per-task=1"]);
    let t0 = Instant::now();
    let out = run(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("submitted Slurm job"), "{text}");
    let id = std::fs::read_to_string(sdir.join("slurm/job_id")).unwrap();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", id.trim()])
            .output()
            .unwrap();
        let queued = !String::from_utf8_lossy(&q.stdout).trim().is_empty();
        if !queued {
            break;
        }
        if t0.elapsed() > SLURM_LIMIT {
            let _ = Command::new("scancel").arg(id.trim()).status();
            panic!(
                "the Slurm array did not finish in {SLURM_LIMIT:?}\n{}",
                logs(&sdir)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("slurm array done in {:.0} s", t0.elapsed().as_secs_f64());
    for c in CELLS {
        assert!(
            summary(&sdir.join(c)).is_some(),
            "{c} did not finish under Slurm\n{}",
            logs(&sdir)
        );
        let log = std::fs::read_to_string(sdir.join(c).join("train.log")).unwrap();
        assert!(
            log.contains("== slurm job ") && log.contains("done: 1 epochs"),
            "{log}"
        );
    }
    let slurm_csv = checked_report(&sdir);
    // Submitting again finds nothing to do.
    let out = run(&args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to run"));

    // Local, two at a time: the same cells, the same numbers.
    let ldir = root.join("local");
    let l = ldir.to_str().unwrap();
    let mut args = sweep_args(base, l);
    args.extend(["--runner", "local", "--jobs", "2"]);
    let t1 = Instant::now();
    let out = run(&args);
    eprintln!("local sweep done in {:.0} s", t1.elapsed().as_secs_f64());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("all 4 cell(s) done"), "{text}");
    let local_csv = checked_report(&ldir);
    for c in CELLS {
        assert_eq!(
            summary(&sdir.join(c)),
            summary(&ldir.join(c)),
            "{c}: Slurm and local runs differ"
        );
    }
    assert_eq!(slurm_csv, local_csv);
    let out = run(&args);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to run"));
}
