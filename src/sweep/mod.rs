//! Sweeps: a grid of training settings (the product of `KEY=V1,V2,...` axes over a base
//! config), one run directory per cell, run here (`local`) or as a Slurm job array (`slurm`),
//! and the table of their results (`report`).
//!
//! A sweep directory holds `sweep.json` (the cells and their directories) and, per cell, a
//! directory with `config.toml` (the full settings it trains with), `train.log` and `run/`
//! (the run directory `train` writes). Every cell is resumable, so running a sweep again
//! skips finished cells and resumes the others.

pub mod expand;
pub mod local;
pub mod manifest;
pub mod report;
pub mod slurm;

pub use expand::{Axis, Cell, expand, load_sweep_file, parse_axis};
pub use manifest::{CellStatus, Manifest, PlannedCell, Prepared, prepare};
