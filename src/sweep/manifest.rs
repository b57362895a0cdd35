//! The sweep directory on disk: `sweep.json` (every cell ever set up, with its directory),
//! each cell's `config.toml`, and where each cell stands (pending, part-trained, finished).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::write_atomic;
use crate::train::TrainConfig;
use crate::train::state::{CHECKPOINT, SUMMARY};

use super::expand::{Cell, differences, to_json};

/// The manifest of a sweep directory.
pub const MANIFEST: &str = "sweep.json";
/// The settings file of a cell (what `train --config` reads).
pub const CELL_CONFIG: &str = "config.toml";
/// The run directory inside a cell's directory (what `train --out` / `--resume` takes).
pub const RUN_DIR: &str = "run";
/// The log of a cell's `train` processes (appended to by every attempt).
pub const CELL_LOG: &str = "train.log";

/// `sweep.json`: the cells of a sweep, in the order they were added.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Every cell set up in this directory.
    pub cells: Vec<ManifestCell>,
}

/// One cell in `sweep.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestCell {
    /// Its name (`key=value,...`).
    pub name: String,
    /// Its directory, relative to the sweep directory.
    pub dir: String,
    /// The value of each axis.
    pub axes: Vec<(String, String)>,
}

/// Where a cell stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellStatus {
    /// Not started (or killed before its first epoch ended).
    Pending,
    /// Started: this many of its epochs are done; it resumes from its checkpoint.
    Partial(usize),
    /// All its epochs are done.
    Finished,
}

/// A cell of the current grid, set up on disk.
#[derive(Debug, Clone)]
pub struct PlannedCell {
    /// The cell.
    pub cell: Cell,
    /// Its directory.
    pub dir: PathBuf,
    /// Where it stands.
    pub status: CellStatus,
}

impl PlannedCell {
    /// The run directory `train` writes.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join(RUN_DIR)
    }
    /// The settings file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CELL_CONFIG)
    }
    /// The log of its `train` processes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(CELL_LOG)
    }
}

/// A sweep directory made ready: the current grid's cells, each with its status.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The sweep directory.
    pub dir: PathBuf,
    /// The cells of this grid, in grid order.
    pub cells: Vec<PlannedCell>,
    /// How many of them were new (set up by this call).
    pub added: usize,
}

impl Prepared {
    /// The cells still to run (pending or part-trained).
    pub fn unfinished(&self) -> Vec<&PlannedCell> {
        self.cells
            .iter()
            .filter(|c| c.status != CellStatus::Finished)
            .collect()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.into(),
        source: e,
    }
}

/// Reads `sweep.json` of `dir`; `None` if there is none.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Format {
            path,
            msg: format!("not a sweep manifest: {e}"),
        })
}

/// The `summary.json` fields a sweep reads.
#[derive(Debug, Clone, Deserialize)]
pub struct RunSummary {
    /// Test accuracy after the last epoch, percent.
    pub last_acc: f64,
    /// Best test accuracy over epochs, percent.
    pub best_acc: f64,
    /// Epochs completed.
    pub epochs: usize,
    /// The settings it ran with.
    pub config: TrainConfig,
}

impl RunSummary {
    /// Whether every epoch of the run is done.
    pub fn finished(&self) -> bool {
        self.epochs >= self.config.epochs
    }
}

/// Reads `summary.json` of a run directory; `None` if there is none yet.
pub fn read_summary(run_dir: &Path) -> Result<Option<RunSummary>> {
    let path = run_dir.join(SUMMARY);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Format {
            path,
            msg: format!("not a run summary: {e}"),
        })
}

/// Where the run in `run_dir` stands, for a run of `epochs` epochs.
pub fn run_status(run_dir: &Path, epochs: usize) -> Result<CellStatus> {
    if let Some(s) = read_summary(run_dir)? {
        if s.epochs >= epochs {
            return Ok(CellStatus::Finished);
        }
        if run_dir.join(CHECKPOINT).exists() {
            return Ok(CellStatus::Partial(s.epochs));
        }
    }
    Ok(if run_dir.join(CHECKPOINT).exists() {
        CellStatus::Partial(0)
    } else {
        CellStatus::Pending
    })
}

/// The text of a cell's `config.toml`.
fn config_text(cell: &Cell) -> Result<String> {
    // Through JSON, so that f32 settings read as written (0.1, not 0.10000000149011612);
    // unset settings are left out, as TOML has no null.
    let mut json = to_json(&cell.config);
    let drop_nulls =
        |m: &mut serde_json::Map<String, serde_json::Value>| m.retain(|_, v| !v.is_null());
    if let Some(m) = json.as_object_mut() {
        drop_nulls(m);
        if let Some(dl) = m.get_mut("dl").and_then(|v| v.as_object_mut()) {
            drop_nulls(dl);
        }
    }
    let body = toml::to_string(&json)
        .map_err(|e| Error::Config(format!("cell {}: settings as TOML: {e}", cell.name)))?;
    Ok(format!(
        "# Sweep cell {}: the settings it trains with (dynloss-wgpu train --config).\n{body}",
        cell.name
    ))
}

/// Sets up the cells of a grid in the sweep directory `dir`: a new cell gets its directory
/// and `config.toml`, a cell already there must have the same settings (else nothing is
/// written and the cell is named), and `sweep.json` lists every cell, old and new. Refuses a
/// non-empty directory that is not a sweep.
pub fn prepare(dir: &Path, cells: &[Cell]) -> Result<Prepared> {
    let existing = read_manifest(dir)?;
    if existing.is_none()
        && dir.exists()
        && std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .next()
            .is_some()
    {
        return Err(Error::Config(format!(
            "--out {}: the directory is not empty and has no {MANIFEST} (not a sweep): choose another --out",
            dir.display()
        )));
    }
    // Check every cell before writing anything.
    for cell in cells {
        let path = dir.join(&cell.name).join(CELL_CONFIG);
        if path.exists() {
            let old = TrainConfig::from_file(&path)?;
            if old != cell.config {
                return Err(Error::Config(format!(
                    "cell {} of {} was set up with other settings: {} (a finished or started cell is never changed: use another --out, or delete the cell's directory to run it anew)",
                    cell.name,
                    dir.display(),
                    differences(&old, &cell.config).join(", ")
                )));
            }
        }
    }
    let mut manifest = existing.unwrap_or_default();
    let mut planned = Vec::with_capacity(cells.len());
    let mut added = 0;
    for cell in cells {
        let cell_dir = dir.join(&cell.name);
        let path = cell_dir.join(CELL_CONFIG);
        if !path.exists() {
            let text = config_text(cell)?;
            write_atomic(&path, text.as_bytes())?;
            // What train will read must be what the grid says (floats survive the TOML).
            if TrainConfig::from_file(&path)? != cell.config {
                return Err(Error::Format {
                    path,
                    msg: "the settings do not read back as written".into(),
                });
            }
        }
        if !manifest.cells.iter().any(|c| c.name == cell.name) {
            manifest.cells.push(ManifestCell {
                name: cell.name.clone(),
                dir: cell.name.clone(),
                axes: cell.axes.clone(),
            });
            added += 1;
        }
        let status = run_status(&cell_dir.join(RUN_DIR), cell.config.epochs)?;
        planned.push(PlannedCell {
            cell: cell.clone(),
            dir: cell_dir,
            status,
        });
    }
    let text = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_atomic(&dir.join(MANIFEST), &text)?;
    Ok(Prepared {
        dir: dir.to_path_buf(),
        cells: planned,
        added,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::expand::{expand, parse_axis};

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("dynloss-manifest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn grid(specs: &[&str], base: &TrainConfig) -> Vec<Cell> {
        let axes: Vec<_> = specs.iter().map(|s| parse_axis(s).unwrap()).collect();
        expand(base, &axes).unwrap()
    }

    /// Writes a summary as `train` would after `epochs` of `cfg.epochs` epochs.
    fn fake_summary(run: &Path, cfg: &TrainConfig, epochs: usize, with_checkpoint: bool) {
        std::fs::create_dir_all(run).unwrap();
        let s = serde_json::json!({"last_acc": 50.0, "best_acc": 55.0, "epochs": epochs,
            "seconds": 1.0, "noise_rate": 0.2, "train_samples": 100, "config": cfg,
            "adapter": "test"});
        std::fs::write(run.join(SUMMARY), s.to_string()).unwrap();
        if with_checkpoint {
            std::fs::write(run.join(CHECKPOINT), b"x").unwrap();
        }
    }

    #[test]
    fn a_rerun_skips_finished_cells_resumes_started_ones_and_adds_new_ones() {
        let dir = tmp("rerun");
        let base = TrainConfig {
            lr: 0.03,
            ..TrainConfig::default()
        };
        let cells = grid(&["method=ce,bs", "seed=0,1"], &base);
        let p = prepare(&dir, &cells).unwrap();
        assert_eq!((p.cells.len(), p.added, p.unfinished().len()), (4, 4, 4));
        for c in &p.cells {
            assert_eq!(
                TrainConfig::from_file(&c.config_path()).unwrap(),
                c.cell.config
            );
        }
        fake_summary(&p.cells[0].run_dir(), &cells[0].config, 4, true);
        fake_summary(&p.cells[1].run_dir(), &cells[1].config, 2, true);
        std::fs::create_dir_all(p.cells[2].run_dir()).unwrap();
        // The same grid plus a seed: the finished cell is skipped, the others stay or start.
        let more = grid(&["method=ce,bs", "seed=0,1,2"], &base);
        let p = prepare(&dir, &more).unwrap();
        assert_eq!((p.cells.len(), p.added), (6, 2));
        let status = |name: &str| p.cells.iter().find(|c| c.cell.name == name).unwrap().status;
        assert_eq!(status("method=ce,seed=0"), CellStatus::Finished);
        assert_eq!(status("method=ce,seed=1"), CellStatus::Partial(2));
        assert_eq!(status("method=bs,seed=0"), CellStatus::Pending);
        assert_eq!(p.unfinished().len(), 5);
        let m = read_manifest(&dir).unwrap().unwrap();
        assert_eq!(m.cells.len(), 6);
        // A smaller grid leaves the other cells listed.
        let p = prepare(&dir, &grid(&["method=ce", "seed=0"], &base)).unwrap();
        assert_eq!((p.cells.len(), p.added, p.unfinished().len()), (1, 0, 0));
        assert_eq!(read_manifest(&dir).unwrap().unwrap().cells.len(), 6);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_cell_whose_settings_changed_is_refused_by_name_and_nothing_is_written() {
        let dir = tmp("changed");
        let base = TrainConfig::default();
        prepare(&dir, &grid(&["seed=0,1"], &base)).unwrap();
        let other = TrainConfig {
            epochs: 9,
            ..base.clone()
        };
        let e = prepare(&dir, &grid(&["seed=1,2"], &other))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cell seed=1 ") && e.contains("epochs (was: 4, now: 9)"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
        assert!(!dir.join("seed=2").exists(), "nothing written");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_non_empty_directory_that_is_not_a_sweep_is_refused() {
        let dir = tmp("notsweep");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        let e = prepare(&dir, &grid(&["seed=0"], &TrainConfig::default()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--out") && e.contains("not a sweep"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
