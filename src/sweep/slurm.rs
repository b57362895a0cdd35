//! The Slurm runner: an sbatch job-array script with one array task per unfinished cell,
//! each task appending to its cell's `train.log` and resuming its cell if it has a checkpoint
//! (so a requeued or resubmitted task continues where it stopped), and its submission.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::report::write_atomic;

use super::manifest::PlannedCell;

/// The script a submission writes, in the sweep directory.
pub const SCRIPT: &str = "sweep.sbatch";
/// Slurm's own output files (one per array task; the training output goes to the cells).
pub const SLURM_LOGS: &str = "slurm";
/// The id of the last submitted job, to refuse a second submission while it runs.
pub const JOB_ID: &str = "slurm/job_id";

/// What goes into the script.
#[derive(Debug, Clone)]
pub struct SlurmJob {
    /// The executable every task runs (on a shared file system).
    pub program: PathBuf,
    /// Global flags before `train` (`--backend`, `--adapter`, ...).
    pub global_args: Vec<String>,
    /// The working directory of the tasks (relative data paths resolve from it).
    pub workdir: PathBuf,
    /// The job's name.
    pub name: String,
    /// At most this many tasks at once (`--array=...%N`).
    pub throttle: Option<usize>,
    /// Extra `sbatch` arguments (e.g. `--gres=gpu:1 --time=24:00:00`), given on its command line.
    pub sbatch_args: Vec<String>,
}

/// Quotes a word for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job-array script for `cells` (all absolute paths) of the sweep in `sweep_dir`.
pub fn script(job: &SlurmJob, sweep_dir: &Path, cells: &[&PlannedCell]) -> Result<String> {
    if cells.is_empty() {
        return Err(Error::Config("no unfinished cells to submit".into()));
    }
    let logs = sweep_dir.join(SLURM_LOGS);
    let throttle = job.throttle.map(|n| format!("%{n}")).unwrap_or_default();
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str(&format!(
        "# dynloss-wgpu sweep of {}: {} unfinished cell(s), one array task each.\n",
        sweep_dir.display(),
        cells.len()
    ));
    s.push_str(
        "# Each task appends to its cell's train.log and resumes the cell from its checkpoint if it\n\
         # has one, so a requeued task (--requeue) or a later resubmission continues where it stopped.\n\
         # A GPU cluster adds its GPU request, e.g. sweep --sbatch-args \"--gres=gpu:1 --time=24:00:00\"\n\
         # (the same as a line '#SBATCH --gres=gpu:1' here).\n",
    );
    if !job.sbatch_args.is_empty() {
        s.push_str(&format!(
            "# Submitted with: sbatch {}\n",
            job.sbatch_args.join(" ")
        ));
    }
    s.push_str(&format!("#SBATCH --job-name={}\n", job.name));
    s.push_str(&format!(
        "#SBATCH --array=0-{}{throttle}\n",
        cells.len() - 1
    ));
    s.push_str("#SBATCH --ntasks=1\n");
    s.push_str(&format!("#SBATCH --output={}/%A_%a.out\n", logs.display()));
    s.push_str("#SBATCH --open-mode=append\n");
    s.push_str("#SBATCH --requeue\n");
    s.push_str(&format!("#SBATCH --chdir={}\n", job.workdir.display()));
    s.push_str("set -euo pipefail\ncells=(\n");
    for c in cells {
        s.push_str(&format!("  {}\n", quote(&c.dir.display().to_string())));
    }
    s.push_str(")\n");
    s.push_str("cell=${cells[$SLURM_ARRAY_TASK_ID]}\n");
    s.push_str("exec >>\"$cell/train.log\" 2>&1\n");
    s.push_str(
        "echo \"== slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (${SLURM_JOB_ID}) on $(hostname) at $(date -u +%FT%TZ)\"\n",
    );
    let mut exe = quote(&job.program.display().to_string());
    for a in &job.global_args {
        exe.push(' ');
        exe.push_str(&quote(a));
    }
    s.push_str("if [ -f \"$cell/run/checkpoint.safetensors\" ]; then\n");
    s.push_str(&format!(
        "  exec {exe} train --no-progress --resume \"$cell/run\"\n"
    ));
    s.push_str("else\n");
    s.push_str(&format!(
        "  exec {exe} train --no-progress --config \"$cell/config.toml\" --out \"$cell/run\"\n"
    ));
    s.push_str("fi\n");
    Ok(s)
}

fn run_tool(cmd: &mut Command, what: &str) -> Result<std::process::Output> {
    cmd.output().map_err(|e| {
        Error::Config(format!(
            "{what}: {e} (is Slurm installed and on PATH on this machine?)"
        ))
    })
}

/// Refuses to submit while the last job submitted from `sweep_dir` is still queued or
/// running (its tasks would run the same cells twice).
fn check_not_running(sweep_dir: &Path) -> Result<()> {
    let Ok(id) = std::fs::read_to_string(sweep_dir.join(JOB_ID)) else {
        return Ok(());
    };
    let id = id.trim();
    let out = run_tool(
        Command::new("squeue").args(["-h", "-o", "%i", "-j", id]),
        "squeue",
    )?;
    // squeue fails for an id it no longer knows: the job is over.
    if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
        return Err(Error::Config(format!(
            "Slurm job {id} of {} is still queued or running: wait for it (squeue -j {id}) or cancel it (scancel {id}) before submitting again",
            sweep_dir.display()
        )));
    }
    Ok(())
}

/// Writes the script into the sweep directory and submits it; returns the job id.
pub fn submit(script_text: &str, sweep_dir: &Path, sbatch_args: &[String]) -> Result<String> {
    check_not_running(sweep_dir)?;
    let path = sweep_dir.join(SCRIPT);
    write_atomic(&path, script_text.as_bytes())?;
    let logs = sweep_dir.join(SLURM_LOGS);
    std::fs::create_dir_all(&logs).map_err(|e| Error::Io {
        path: logs.clone(),
        source: e,
    })?;
    let out = run_tool(
        Command::new("sbatch")
            .arg("--parsable")
            .args(sbatch_args)
            .arg(&path),
        "sbatch",
    )?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "sbatch {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // --parsable prints "ID" or "ID;CLUSTER".
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    write_atomic(&sweep_dir.join(JOB_ID), id.as_bytes())?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::expand::{expand, parse_axis};
    use crate::sweep::manifest::{CellStatus, prepare};
    use crate::train::TrainConfig;

    #[test]
    fn the_script_has_one_task_per_unfinished_cell_logging_into_its_directory() {
        let dir = std::env::temp_dir().join(format!("dynloss-slurm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cells = expand(
            &TrainConfig::default(),
            &[
                parse_axis("method=ce,bs").unwrap(),
                parse_axis("seed=0,1").unwrap(),
            ],
        )
        .unwrap();
        let mut p = prepare(&dir, &cells).unwrap();
        p.cells[1].status = CellStatus::Finished;
        let todo = p.unfinished();
        let job = SlurmJob {
            program: "/opt/bin/dynloss-wgpu".into(),
            global_args: vec!["--backend".into(), "vulkan".into()],
            workdir: "/home/me/project".into(),
            name: "sweep".into(),
            throttle: Some(2),
            sbatch_args: vec!["--gres=gpu:1".into()],
        };
        let s = script(&job, &dir, &todo).unwrap();
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("\n#SBATCH --array=0-2%2\n"), "{s}");
        assert!(s.contains("\n#SBATCH --requeue\n"));
        assert!(s.contains("\n#SBATCH --chdir=/home/me/project\n"));
        assert!(s.contains(&format!(
            "\n#SBATCH --output={}/slurm/%A_%a.out\n",
            dir.display()
        )));
        assert!(s.contains("# Submitted with: sbatch --gres=gpu:1\n"));
        // The three unfinished cells, in order, the finished one left out.
        let listed: Vec<&str> = s
            .lines()
            .skip_while(|l| *l != "cells=(")
            .skip(1)
            .take_while(|l| *l != ")")
            .collect();
        let want: Vec<String> = ["method=ce,seed=0", "method=bs,seed=0", "method=bs,seed=1"]
            .iter()
            .map(|n| format!("  '{}'", dir.join(n).display()))
            .collect();
        assert_eq!(listed, want);
        assert!(s.contains("exec >>\"$cell/train.log\" 2>&1\n"));
        assert!(s.contains(
            "exec '/opt/bin/dynloss-wgpu' '--backend' 'vulkan' train --no-progress --resume \"$cell/run\""
        ));
        assert!(s.contains("--config \"$cell/config.toml\" --out \"$cell/run\""));
        // bash accepts it.
        let check = std::process::Command::new("bash")
            .arg("-n")
            .arg("-c")
            .arg(&s)
            .status();
        if let Ok(st) = check {
            assert!(st.success(), "bash -n rejects the script");
        }
        assert!(script(&job, &dir, &[]).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
