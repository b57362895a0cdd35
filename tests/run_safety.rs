//! Nothing the user has is lost: two runs racing for one directory, someone else's files in
//! the output directory, a diverging run, Ctrl-C and SIGTERM, and the messages that used to
//! mislead (resume without a checkpoint, no Vulkan driver, a read-only directory). Each case
//! runs the real binary as a user would. (The idx header and list-line messages are tested
//! with their readers in data_idx.rs and data_folder.rs.)

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use dynloss_wgpu::train::Checkpoint;

const BIN: &str = env!("CARGO_BIN_EXE_dynloss-wgpu");

/// A tiny run on the built-in set: `epochs` epochs of 6 steps.
fn tiny(epochs: usize) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["train", "--image-size", "8", "--train-limit", "192"])
        .args(["--test-limit", "64", "--batch-size", "32", "--no-progress"])
        .args(["--epochs", &epochs.to_string()]);
    cmd
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out: Output = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.success(), text)
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(mut child: Child) -> (std::process::ExitStatus, String) {
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    (child.wait().unwrap(), log)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.starts_with("error:")).collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

fn tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<(String, Vec<f32>)> = Checkpoint::load(&dir.join("checkpoint.safetensors"))
        .unwrap()
        .tensors
        .into_iter()
        .map(|(n, _, d)| (n, d))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Case 1: two processes started together on one `--out`: one is refused with the directory
/// and the other's PID, the other's results are complete and its own.
#[test]
fn two_runs_started_together_on_one_directory() {
    let tmp = TempDir::new("race");
    let out = tmp.0.join("c2");
    let a = spawn(tiny(2).args(["--seed", "1", "--out"]).arg(&out));
    let b = spawn(tiny(2).args(["--seed", "2", "--out"]).arg(&out));
    let (pa, pb) = (a.id(), b.id());
    let (sa, la) = finish(a);
    let (sb, lb) = finish(b);
    assert!(
        sa.success() != sb.success(),
        "exactly one may run:\n{la}\n{lb}"
    );
    let (winner_seed, loser_log, winner_pid) = if sa.success() {
        (1, lb, pa)
    } else {
        (2, la, pb)
    };
    let errs = error_lines(&loser_log);
    assert_eq!(errs.len(), 1, "{loser_log}");
    assert!(
        errs[0].contains(&out.display().to_string())
            && errs[0].contains(&format!("in use by another run (process {winner_pid})")),
        "{loser_log}"
    );
    let s = summary(&out);
    assert_eq!(s["config"]["seed"], winner_seed);
    assert_eq!(s["epochs"], 2);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
    // The same with --resume: a second resumer is refused while the first runs.
    let first = spawn(tiny(4).args(["--seed", "1", "--out"]).arg(tmp.0.join("r")));
    let t0 = Instant::now();
    while !tmp.0.join("r/checkpoint.safetensors").exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ok, log) = run(Command::new(BIN)
        .args(["train", "--no-progress", "--resume"])
        .arg(tmp.0.join("r")));
    let (status, first_log) = finish(first);
    assert!(status.success(), "{first_log}");
    // Either refused as busy, or (if the first had just ended) resumed a finished run.
    assert!(
        log.contains("in use by another run") || ok,
        "second resumer: {log}"
    );
}

/// Case 2: someone else's files named like temporary files survive a refused `--out`, and a
/// resumed run removes only its own leftovers.
#[test]
fn foreign_files_survive() {
    let tmp = TempDir::new("foreign");
    let theirs = tmp.0.join("theirs");
    std::fs::create_dir_all(theirs.join("plots")).unwrap();
    let files = [".draft.4242.tmp", ".notes.txt.1.tmp", "plots/.fig.99.tmp"];
    for f in files {
        std::fs::write(theirs.join(f), "mine").unwrap();
    }
    let (ok, log) = run(tiny(1).arg("--out").arg(&theirs));
    assert!(!ok);
    assert!(log.contains("not empty"), "{log}");
    for f in files {
        assert_eq!(
            std::fs::read_to_string(theirs.join(f)).unwrap(),
            "mine",
            "{f}"
        );
    }
    assert!(!theirs.join(".lock").exists(), "nothing added either");

    // A run directory with our leftover and a foreign look-alike: only ours goes.
    let ours = tmp.0.join("ours");
    let (ok, log) = run(tiny(2).args(["--stop-after", "1", "--out"]).arg(&ours));
    assert!(ok, "{log}");
    std::fs::write(ours.join(".checkpoint.safetensors.99999.tmp"), "x").unwrap();
    std::fs::write(ours.join(".draft.4242.tmp"), "mine").unwrap();
    let (ok, log) = run(Command::new(BIN)
        .args(["train", "--no-progress", "--resume"])
        .arg(&ours));
    assert!(ok, "{log}");
    assert!(!ours.join(".checkpoint.safetensors.99999.tmp").exists());
    assert_eq!(
        std::fs::read_to_string(ours.join(".draft.4242.tmp")).unwrap(),
        "mine"
    );
}

/// Case 3: a diverging run never commits a checkpoint with a non-finite value; the error is
/// a divergence (not an invalid setting) naming epoch and step; `eval` refuses a checkpoint
/// that holds one.
#[test]
fn a_diverged_run_keeps_no_broken_checkpoint() {
    let tmp = TempDir::new("diverge");
    let out = tmp.0.join("d");
    let (ok, log) = run(tiny(3).args(["--lr", "1e6", "--out"]).arg(&out));
    assert!(!ok, "{log}");
    let errs = error_lines(&log);
    assert_eq!(errs.len(), 1, "{log}");
    assert!(
        errs[0].contains("training diverged at epoch")
            && errs[0].contains("step")
            && !errs[0].contains("invalid setting"),
        "{log}"
    );
    // Whatever was committed loads, and Checkpoint::load refuses non-finite values.
    if out.join("checkpoint.safetensors").exists() {
        tensors(&out);
    }

    // The state check before each commit catches what a finite loss hides: one overflowed
    // momentum value, named by its tensor.
    let g = common::gpu();
    let cfg = dynloss_wgpu::train::TrainConfig::default();
    let model = dynloss_wgpu::nn::zoo::build_named("resnet8", [3, 8, 8], 10).unwrap();
    let clf = dynloss_wgpu::train::Classifier::new(&g, &cfg, model, 6).unwrap();
    let method = dynloss_wgpu::train::methods::baseline::Baseline::cross_entropy();
    dynloss_wgpu::train::run::check_finite(&clf, &method).unwrap();
    let (name, t) = &clf.state_tensors()[40];
    let mut v = t.to_f32_vec().unwrap();
    let mid = v.len() / 2;
    v[mid] = f32::INFINITY;
    t.write_f32(&v).unwrap();
    let e = dynloss_wgpu::train::run::check_finite(&clf, &method)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("training diverged at epoch 1 step 0: ")
            && e.contains(&format!("tensor '{name}' holds 1 non-finite values")),
        "{e}"
    );

    // A checkpoint with a NaN (as an older version could write) is refused by eval.
    let good = tmp.0.join("good");
    let (ok, log) = run(tiny(1).arg("--out").arg(&good));
    assert!(ok, "{log}");
    let path = good.join("checkpoint.safetensors");
    let mut ck = Checkpoint::load(&path).unwrap();
    let (name, _, data) = &mut ck.tensors[0];
    let name = name.clone();
    data[0] = f32::NAN;
    ck.save(&path).unwrap();
    let (ok, log) = run(Command::new(BIN)
        .args(["eval", "--image-size", "8", "--checkpoint"])
        .arg(&path));
    assert!(!ok, "{log}");
    assert!(
        log.contains(&format!("tensor '{name}' holds 1 non-finite values")),
        "{log}"
    );
}

/// Case 4: Ctrl-C (and SIGTERM) abandon the epoch, say how to resume, exit 130, and the
/// resumed run ends exactly as an uninterrupted one; a second signal ends it at once.
#[test]
fn signals_stop_cleanly_and_resume_exactly() {
    let tmp = TempDir::new("signal");
    let straight = tmp.0.join("straight");
    let (ok, log) = run(tiny(3).args(["--seed", "4", "--out"]).arg(&straight));
    assert!(ok, "{log}");

    for sig in ["-INT", "-TERM"] {
        let out = tmp.0.join(format!("stopped{sig}"));
        let child = spawn(tiny(3).args(["--seed", "4", "--out"]).arg(&out));
        let t0 = Instant::now();
        while !out.join("checkpoint.safetensors").exists() {
            assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(&child, sig);
        let (status, log) = finish(child);
        assert_eq!(status.code(), Some(130), "{log}");
        let errs = error_lines(&log);
        assert_eq!(errs.len(), 1, "{log}");
        let want = format!(
            "; resume with: dynloss-wgpu train --resume {}",
            out.display()
        );
        assert!(
            errs[0].starts_with("error: interrupted at epoch ") && errs[0].ends_with(&want),
            "{log}"
        );
        let (ok, log) = run(Command::new(BIN)
            .args(["train", "--no-progress", "--resume"])
            .arg(&out));
        assert!(ok, "{log}");
        assert_eq!(tensors(&out), tensors(&straight), "{sig}");
        assert_eq!(summary(&out)["last_acc"], summary(&straight)["last_acc"]);
    }

    // Two signals: the second ends the process without waiting for the step.
    let out = tmp.0.join("twice");
    let child = spawn(tiny(50).args(["--seed", "4", "--out"]).arg(&out));
    let t0 = Instant::now();
    while !out.join("checkpoint.safetensors").exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(1));
    signal(&child, "-INT");
    let (status, log) = finish(child);
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(
        log.contains("stopped at once") || log.contains("error: interrupted at epoch"),
        "{log}"
    );
}

/// Case 5: the messages that misled.
#[test]
fn messages_name_the_real_cause() {
    let tmp = TempDir::new("messages");
    // Resume of a run stopped before its first checkpoint (only its lock file is there).
    let early = tmp.0.join("early");
    std::fs::create_dir_all(&early).unwrap();
    std::fs::write(early.join(".lock"), "12345").unwrap();
    let (ok, log) = run(Command::new(BIN).args(["train", "--resume"]).arg(&early));
    assert!(!ok);
    assert!(
        log.contains("was stopped before its first epoch ended")
            && log.contains("start the run again"),
        "{log}"
    );
    assert!(!log.contains("No such file"), "{log}");

    // No Vulkan driver: one line says GL is used instead.
    let (ok, log) = run(Command::new(BIN)
        .arg("info")
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .env_remove("WGPU_BACKEND"));
    if ok {
        let warn: Vec<&str> = log.lines().filter(|l| l.starts_with("warning:")).collect();
        assert_eq!(warn.len(), 1, "{log}");
        assert!(
            warn[0].starts_with("warning: no usable Vulkan adapter found; using OpenGL ("),
            "{log}"
        );
    } else {
        // No GL driver either: the error says what was searched.
        assert!(log.contains("no usable GPU adapter"), "{log}");
    }

    // A read-only output directory fails before training, naming the directory. As root
    // (CI) permissions do not bind, so the run is made as the unprivileged user `nobody`.
    let ro = tmp.0.join("read-only");
    std::fs::create_dir_all(&ro).unwrap();
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut cmd = if root {
        // `nobody` must reach the binary (the checkout may sit in a private folder) and the
        // directory.
        let bin = tmp.0.join("dynloss-wgpu");
        std::fs::copy(BIN, &bin).unwrap();
        for d in [tmp.0.as_path(), ro.as_path()] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&bin);
        c
    } else {
        std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        Command::new(BIN)
    };
    let t0 = Instant::now();
    let (ok, log) = run(cmd
        .args([
            "train",
            "--image-size",
            "8",
            "--train-limit",
            "192",
            "--no-progress",
        ])
        .arg("--out")
        .arg(&ro));
    assert!(!ok, "{log}");
    let errs = error_lines(&log);
    assert_eq!(errs.len(), 1, "{log}");
    assert!(
        errs[0].contains(&ro.display().to_string())
            && errs[0].contains("cannot write in the output directory"),
        "{log}"
    );
    assert!(!log.contains("epoch 1/"), "it trained first: {log}");
    assert!(t0.elapsed() < Duration::from_secs(60));
}

/// A closed pipe ends the program quietly: no panic, no backtrace. The reader here exits
/// before the first line is written (`| true`), so every print meets a closed pipe.
#[test]
fn a_closed_pipe_ends_quietly() {
    let tmp = TempDir::new("pipe");
    let chart = tmp.0.join("stats.png");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{BIN}' data stats --out '{}' --imbalance 10 --noise 0.2 | true",
            chart.display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.is_empty(), "{err}");
}

/// `eval --checkpoint X` alone evaluates on the data the run used (here 8x8 built-in images,
/// which the defaults would not match); a data flag given overrides it.
#[test]
fn eval_without_data_flags_uses_the_runs_data() {
    let tmp = TempDir::new("eval-alone");
    let out = tmp.0.join("r");
    let (ok, log) = run(tiny(1).arg("--out").arg(&out));
    assert!(ok, "{log}");
    let ck = out.join("checkpoint.safetensors");
    // The class names travel with the run.
    let names: Vec<String> =
        serde_json::from_str(&Checkpoint::load(&ck).unwrap().meta["class_names"]).unwrap();
    assert_eq!(names.len(), 10);
    assert_eq!(summary(&out)["class_names"], serde_json::json!(names));
    let (ok, log) = run(Command::new(BIN).arg("eval").arg("--checkpoint").arg(&ck));
    assert!(ok, "{log}");
    assert!(log.contains("accuracy: "), "{log}");
    let (ok, log) = run(Command::new(BIN)
        .args(["eval", "--image-size", "12", "--checkpoint"])
        .arg(&ck));
    assert!(!ok);
    assert!(
        log.contains("trained on [3, 8, 8]") && log.contains("[3, 12, 12]"),
        "{log}"
    );
}

/// An output path that is a device or a pipe (`--out /dev/null`) is written to, never
/// replaced by a plain file (here a FIFO, read by another thread).
#[test]
fn an_output_device_is_written_not_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = TempDir::new("fifo");
    let fifo = tmp.0.join("out.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    dynloss_wgpu::report::write_atomic(&fifo, b"through the pipe").unwrap();
    assert_eq!(reader.join().unwrap(), b"through the pipe");
    let kind = std::fs::metadata(&fifo).unwrap().file_type();
    assert!(kind.is_fifo(), "the FIFO was replaced: {kind:?}");
    assert_eq!(
        std::fs::read_dir(&tmp.0).unwrap().count(),
        1,
        "no temporary left"
    );
}
