//! Per-epoch metrics (`metrics.jsonl`), the run summary (`summary.json`) and the plots.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::write_atomic;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy against the given labels, percent.
    pub train_acc: f64,
    /// Test accuracy, percent.
    pub test_acc: f64,
    /// Test accuracy per class, percent.
    pub per_class_acc: Vec<f64>,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Wall time of the epoch (training and evaluation), seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_sec: f64,
    /// Method-specific extras (Dynamic Loss diagnostics), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// Reads `metrics.jsonl` (missing file: empty).
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                path: path.into(),
                source: e,
            });
        }
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Format {
                path: path.into(),
                msg: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Rewrites `metrics.jsonl` with `lines` (atomically).
pub fn write_metrics(path: &Path, lines: &[EpochMetrics]) -> Result<()> {
    let mut buf = Vec::new();
    for m in lines {
        serde_json::to_writer(&mut buf, m).expect("metrics serialise");
        buf.write_all(b"\n").expect("write to memory");
    }
    write_atomic(path, &buf)
}

/// Writes any serialisable value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).expect("json serialise");
    write_atomic(path, &text)
}

/// The accuracy plot of a run directory.
pub const ACCURACY_PLOT: &str = "plots/accuracy.png";

/// Draws [`ACCURACY_PLOT`]: train and test accuracy over epochs.
pub fn plot_accuracy(dir: &Path, lines: &[EpochMetrics]) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(|e| Error::Io {
        path: plots.clone(),
        source: e,
    })?;
    let pts = |f: &dyn Fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
        lines.iter().map(|m| (m.epoch as f64, f(m))).collect()
    };
    crate::report::plot::line_chart(
        &dir.join(ACCURACY_PLOT),
        "accuracy",
        "epoch",
        "accuracy (%)",
        &[
            ("test", pts(&|m| m.test_acc)),
            ("train (given labels)", pts(&|m| m.train_acc)),
        ],
    )
}

/// Draws the test-accuracy curves of several run directories into one chart; returns its path.
pub fn plot_runs(runs: &[std::path::PathBuf], out: Option<&Path>) -> Result<std::path::PathBuf> {
    let mut series = Vec::new();
    for dir in runs {
        let lines = read_metrics(&dir.join("metrics.jsonl"))?;
        if lines.is_empty() {
            return Err(Error::Config(format!(
                "{} has no metrics.jsonl lines",
                dir.display()
            )));
        }
        let label = dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        series.push((
            label,
            lines
                .iter()
                .map(|m| (m.epoch as f64, m.test_acc))
                .collect::<Vec<_>>(),
        ));
    }
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => {
            let parent = runs[0]
                .parent()
                .filter(|p| runs.iter().all(|r| r.parent() == Some(p)))
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| std::path::PathBuf::from("."));
            parent.join("accuracy_comparison.png")
        }
    };
    let refs: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, v)| (n.as_str(), v.clone()))
        .collect();
    crate::report::plot::line_chart(&path, "test accuracy", "epoch", "accuracy (%)", &refs)?;
    Ok(path)
}
