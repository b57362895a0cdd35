//! The local runner: N cells at a time, each a `train` child process of the same executable,
//! its output appended to the cell's `train.log`, spread over GPUs by adapter name.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

use super::manifest::{CellStatus, PlannedCell};

/// How the local runner starts its children.
#[derive(Debug, Clone)]
pub struct LocalRunner {
    /// The executable (the running `dynloss-wgpu`).
    pub program: PathBuf,
    /// Global flags for every child, before `train` (`--backend`, `--conv`, ...).
    pub global_args: Vec<String>,
    /// Cells at a time.
    pub jobs: usize,
    /// Adapter names; job slot k runs its cells with `--adapter` the k-th (cyclically).
    pub adapters: Vec<String>,
}

/// A cell whose `train` process failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The cell's name.
    pub cell: String,
    /// Its log.
    pub log: PathBuf,
    /// How the process ended.
    pub status: String,
}

/// What a local run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Cells whose `train` ended well.
    pub finished: Vec<String>,
    /// Cells whose `train` failed.
    pub failed: Vec<Failure>,
    /// Whether the stop flag ended the run early (children stopped).
    pub stopped: bool,
}

/// The arguments after the program for one cell: resume if it has a checkpoint, else start
/// from its `config.toml`.
pub fn train_args(cell: &PlannedCell, global: &[String], adapter: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = global.to_vec();
    if let Some(name) = adapter {
        a.extend(["--adapter".into(), name.into()]);
    }
    a.extend(["train".into(), "--no-progress".into()]);
    let run = cell.run_dir().display().to_string();
    match cell.status {
        CellStatus::Partial(_) => a.extend(["--resume".into(), run]),
        _ => a.extend([
            "--config".into(),
            cell.config_path().display().to_string(),
            "--out".into(),
            run,
        ]),
    }
    a
}

/// "exit status 1", "killed by signal 9".
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => "ended abnormally".into(),
    }
}

impl LocalRunner {
    fn spawn(&self, cell: &PlannedCell, slot: usize) -> Result<Child> {
        let log = cell.log_path();
        let io = |e| Error::Io {
            path: log.clone(),
            source: e,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io)?;
        let err = file.try_clone().map_err(io)?;
        let adapter =
            (!self.adapters.is_empty()).then(|| self.adapters[slot % self.adapters.len()].as_str());
        let mut cmd = Command::new(&self.program);
        cmd.args(train_args(cell, &self.global_args, adapter))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        // Its own process group: a Ctrl-C reaches the runner only, which stops the children
        // itself and says how to resume.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().map_err(|e| Error::Io {
            path: self.program.clone(),
            source: e,
        })
    }

    /// Runs `cells`, `jobs` at a time, until all have ended or `stop` is set; a failed cell
    /// is recorded and the others go on. `report` hears one line per start and end.
    pub fn run(
        &self,
        cells: &[&PlannedCell],
        stop: &AtomicBool,
        report: &mut dyn FnMut(&str),
    ) -> Result<Outcome> {
        let jobs = self.jobs.max(1);
        let mut slots: Vec<Option<(Child, usize)>> = (0..jobs).map(|_| None).collect();
        let mut next = 0;
        let mut out = Outcome::default();
        loop {
            if stop.load(Ordering::SeqCst) {
                for (child, i) in slots.iter_mut().filter_map(Option::take) {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    report(&format!("stopped {}", cells[i].cell.name));
                }
                out.stopped = true;
                return Ok(out);
            }
            for (k, slot) in slots.iter_mut().enumerate() {
                if let Some((child, i)) = slot {
                    let status = child.try_wait().map_err(|e| Error::Io {
                        path: self.program.clone(),
                        source: e,
                    })?;
                    let Some(status) = status else { continue };
                    let cell = cells[*i];
                    if status.success() {
                        report(&format!("finished {}", cell.cell.name));
                        out.finished.push(cell.cell.name.clone());
                    } else if !stop.load(Ordering::SeqCst) {
                        let f = Failure {
                            cell: cell.cell.name.clone(),
                            log: cell.log_path(),
                            status: describe(status),
                        };
                        report(&format!(
                            "FAILED {} ({}): see {}",
                            f.cell,
                            f.status,
                            f.log.display()
                        ));
                        out.failed.push(f);
                    }
                    *slot = None;
                }
                if slot.is_none() && next < cells.len() && !stop.load(Ordering::SeqCst) {
                    let cell = cells[next];
                    let child = self.spawn(cell, k)?;
                    let how = match cell.status {
                        CellStatus::Partial(e) => format!("resuming after epoch {e}"),
                        _ => "starting".into(),
                    };
                    report(&format!(
                        "{how} {} (log: {})",
                        cell.cell.name,
                        cell.log_path().display()
                    ));
                    *slot = Some((child, next));
                    next += 1;
                }
            }
            if next == cells.len() && slots.iter().all(Option::is_none) {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::sweep::expand::{expand, parse_axis};
    use crate::sweep::manifest::prepare;
    use crate::train::TrainConfig;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    /// A stand-in for the executable: logs its arguments, fails for seed 1, sleeps for seed 3.
    fn fake_program(dir: &std::path::Path) -> PathBuf {
        let p = dir.join("fake-train.sh");
        std::fs::write(
            &p,
            "#!/bin/sh\necho \"args: $*\"\ncase \"$*\" in *seed=1*) exit 3;; *seed=3*) sleep 30;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn setup(name: &str, seeds: &str) -> (PathBuf, crate::sweep::Prepared) {
        let dir = std::env::temp_dir().join(format!("dynloss-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cells = expand(&TrainConfig::default(), &[parse_axis(seeds).unwrap()]).unwrap();
        let p = prepare(&dir.join("sweep"), &cells).unwrap();
        (dir, p)
    }

    #[test]
    fn a_failed_cell_is_reported_with_its_log_and_the_others_run() {
        let (dir, p) = setup("fail", "seed=0,1,2");
        let runner = LocalRunner {
            program: fake_program(&dir),
            global_args: vec!["--backend".into(), "vulkan".into()],
            jobs: 2,
            adapters: vec!["gpu-a".into(), "gpu-b".into()],
        };
        let cells: Vec<_> = p.cells.iter().collect();
        let mut lines = Vec::new();
        let out = runner
            .run(&cells, &AtomicBool::new(false), &mut |l| {
                lines.push(l.to_string())
            })
            .unwrap();
        assert_eq!(out.finished.len(), 2, "{lines:?}");
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].cell, "seed=1");
        assert_eq!(out.failed[0].status, "exit status 3");
        assert_eq!(out.failed[0].log, p.cells[1].log_path());
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("FAILED seed=1") && l.contains("train.log"))
        );
        let log = std::fs::read_to_string(p.cells[0].log_path()).unwrap();
        assert!(
            log.contains("--backend vulkan --adapter gpu-a train --no-progress --config"),
            "{log}"
        );
        assert!(log.contains("seed=0/config.toml --out"), "{log}");
        let log = std::fs::read_to_string(p.cells[1].log_path()).unwrap();
        assert!(log.contains("--adapter gpu-b"), "{log}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_stop_flag_stops_the_children_and_a_started_cell_resumes() {
        let (dir, p) = setup("stop", "seed=3,4");
        let runner = LocalRunner {
            program: fake_program(&dir),
            global_args: vec![],
            jobs: 1,
            adapters: vec![],
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            s2.store(true, Ordering::SeqCst);
        });
        let cells: Vec<_> = p.cells.iter().collect();
        let start = std::time::Instant::now();
        let out = runner.run(&cells, &stop, &mut |_| {}).unwrap();
        t.join().unwrap();
        assert!(out.stopped && out.failed.is_empty() && out.finished.is_empty());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the sleeper was killed"
        );
        // A cell with a checkpoint resumes instead of starting.
        let mut cell = p.cells[0].clone();
        cell.status = CellStatus::Partial(1);
        let a = train_args(&cell, &[], None);
        assert_eq!(a[..3], ["train", "--no-progress", "--resume"]);
        assert!(a[3].ends_with("seed=3/run"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
