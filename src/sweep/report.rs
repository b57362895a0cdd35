//! The results table of runs and sweeps, in the paper's layout: one row per setting, one
//! column per method, each cell the mean and standard deviation over seeds of the last and
//! the best test accuracy, read from the runs' own `summary.json`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::train::TrainConfig;
use crate::train::state::{CHECKPOINT, SUMMARY, saved_config};

use super::expand::{flat_settings, is_dl_key};
use super::manifest::{CELL_CONFIG, MANIFEST, RUN_DIR, read_manifest, read_summary};

/// One run found: its settings, and its accuracies if it finished.
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// The run directory.
    pub dir: PathBuf,
    /// Its settings.
    pub config: TrainConfig,
    /// (last, best) test accuracy in percent, if every epoch is done.
    pub result: Option<(f64, f64)>,
}

/// The entry of a run directory (summary, else checkpoint, else the cell's `config.toml`).
fn entry(run: &Path, cell_config: Option<&Path>) -> Result<RunEntry> {
    if let Some(s) = read_summary(run)? {
        let result = s.finished().then_some((s.last_acc, s.best_acc));
        return Ok(RunEntry {
            dir: run.into(),
            config: s.config,
            result,
        });
    }
    let config = if run.join(CHECKPOINT).exists() {
        saved_config(&run.join(CHECKPOINT))?
    } else if let Some(c) = cell_config {
        TrainConfig::from_file(c)?
    } else {
        return Err(not_a_run(run));
    };
    Ok(RunEntry {
        dir: run.into(),
        config,
        result: None,
    })
}

fn not_a_run(dir: &Path) -> Error {
    Error::Config(format!(
        "{}: not a run (no {SUMMARY}) nor a sweep (no {MANIFEST})",
        dir.display()
    ))
}

/// The runs in `dirs`: each a sweep directory (all its cells), a sweep cell, or a run
/// directory. Refuses anything else, naming it; a run given twice counts once.
pub fn collect(dirs: &[PathBuf]) -> Result<Vec<RunEntry>> {
    let mut out: Vec<RunEntry> = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "{}: no such directory (report takes run and sweep directories)",
                dir.display()
            )));
        }
        let found = if let Some(m) = read_manifest(dir)? {
            m.cells
                .iter()
                .map(|c| {
                    let cell = dir.join(&c.dir);
                    entry(&cell.join(RUN_DIR), Some(&cell.join(CELL_CONFIG)))
                })
                .collect::<Result<Vec<_>>>()?
        } else if dir.join(CELL_CONFIG).exists() && !dir.join(SUMMARY).exists() {
            vec![entry(&dir.join(RUN_DIR), Some(&dir.join(CELL_CONFIG)))?]
        } else if dir.join(SUMMARY).exists() || dir.join(CHECKPOINT).exists() {
            vec![entry(dir, None)?]
        } else {
            return Err(not_a_run(dir));
        };
        for e in found {
            let key = std::fs::canonicalize(&e.dir).unwrap_or_else(|_| e.dir.clone());
            let seen = out
                .iter()
                .any(|o| std::fs::canonicalize(&o.dir).unwrap_or_else(|_| o.dir.clone()) == key);
            if !seen {
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// Mean and sample standard deviation (n - 1; 0 for one value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// One cell of the table: the runs of one setting and one method.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// (last, best) of each finished run, in the order found.
    pub finished: Vec<(f64, f64)>,
    /// Runs not finished (pending or part-trained).
    pub unfinished: usize,
}

impl Group {
    /// Mean and standard deviation of last and of best accuracy, if any run finished.
    pub fn stats(&self) -> Option<((f64, f64), (f64, f64))> {
        if self.finished.is_empty() {
            return None;
        }
        let last: Vec<f64> = self.finished.iter().map(|r| r.0).collect();
        let best: Vec<f64> = self.finished.iter().map(|r| r.1).collect();
        Some((mean_sd(&last), mean_sd(&best)))
    }

    /// The Markdown text of the cell.
    pub fn text(&self) -> String {
        let n = self.finished.len();
        let mark = if self.unfinished > 0 {
            format!(" ({} unfinished) *", self.unfinished)
        } else {
            String::new()
        };
        match self.stats() {
            None if self.unfinished == 0 => String::new(),
            None => format!("– (n=0){mark}"),
            Some(((lm, ls), (bm, bs))) => {
                format!("{lm:.2} ± {ls:.2} / {bm:.2} ± {bs:.2} (n={n}){mark}")
            }
        }
    }
}

/// The table: settings by methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The settings that differ between rows (their keys), in a fixed order.
    pub row_keys: Vec<String>,
    /// Each row's values of `row_keys`.
    pub rows: Vec<Vec<String>>,
    /// Column labels: the method, with the `[dl]` settings that differ between dl columns.
    pub columns: Vec<String>,
    /// `cells[row][column]`.
    pub cells: Vec<Vec<Group>>,
    /// Settings shared by every run (a few that say what was trained).
    pub common: Vec<(String, String)>,
}

/// Keys that never make rows: the columns' method, the seeds averaged over, and the worker
/// count (results do not depend on it).
const NOT_ROWS: [&str; 3] = ["method", "seed", "workers"];
/// Keys shown as common settings when every run shares them.
const SHOWN_COMMON: [&str; 7] = [
    "dataset",
    "model",
    "epochs",
    "batch_size",
    "imbalance",
    "noise_type",
    "noise",
];

/// Builds the table of `entries`.
pub fn table(entries: &[RunEntry]) -> Table {
    let flat: Vec<Vec<(String, String)>> =
        entries.iter().map(|e| flat_settings(&e.config)).collect();
    let keys: Vec<String> = flat
        .first()
        .map(|f| f.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let varies = |k: usize| flat.iter().any(|f| f[k].1 != flat[0][k].1);
    let row_idx: Vec<usize> = (0..keys.len())
        .filter(|&k| !NOT_ROWS.contains(&keys[k].as_str()) && !is_dl_key(&keys[k]) && varies(k))
        .collect();
    let dl_idx: Vec<usize> = (0..keys.len())
        .filter(|&k| is_dl_key(&keys[k]) && varies(k))
        .collect();
    let common = SHOWN_COMMON
        .iter()
        .filter_map(|name| keys.iter().position(|k| k == name))
        .filter(|&k| !varies(k))
        .map(|k| (keys[k].clone(), flat[0][k].1.clone()))
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    // (method order, first seen, label)
    let mut columns: Vec<(usize, String)> = Vec::new();
    let mut placed = Vec::with_capacity(entries.len());
    for (e, f) in entries.iter().zip(&flat) {
        let row: Vec<String> = row_idx.iter().map(|&k| f[k].1.clone()).collect();
        let r = rows.iter().position(|x| *x == row).unwrap_or_else(|| {
            rows.push(row);
            rows.len() - 1
        });
        let method = e.config.method.to_string();
        let variant: Vec<String> = dl_idx
            .iter()
            .filter(|_| e.config.method == crate::train::Method::Dl)
            .map(|&k| format!("{}={}", f[k].0, f[k].1))
            .collect();
        let label = std::iter::once(method)
            .chain(variant)
            .collect::<Vec<_>>()
            .join(" ");
        if !columns.iter().any(|(_, l)| *l == label) {
            let order = <crate::train::Method as crate::choice::Choice>::ALL
                .iter()
                .position(|m| *m == e.config.method)
                .unwrap_or(0);
            columns.push((order, label.clone()));
        }
        placed.push((r, label));
    }
    // By method (ce, bs, dl), then in the order found.
    columns.sort_by_key(|(order, _)| *order);
    let columns: Vec<String> = columns.into_iter().map(|(_, l)| l).collect();
    let mut cells = vec![vec![Group::default(); columns.len()]; rows.len()];
    for (e, (r, label)) in entries.iter().zip(placed) {
        let c = columns.iter().position(|l| *l == label).expect("placed");
        match e.result {
            Some(acc) => cells[r][c].finished.push(acc),
            None => cells[r][c].unfinished += 1,
        }
    }
    Table {
        row_keys: row_idx.iter().map(|&k| keys[k].clone()).collect(),
        rows,
        columns,
        cells,
        common,
    }
}

impl Table {
    /// A row's label: its settings as `key=value`, comma separated.
    pub fn row_label(&self, r: usize) -> String {
        if self.row_keys.is_empty() {
            return "all runs".into();
        }
        self.row_keys
            .iter()
            .zip(&self.rows[r])
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether any cell has unfinished runs.
    pub fn has_unfinished(&self) -> bool {
        self.cells.iter().flatten().any(|g| g.unfinished > 0)
    }

    /// The table as Markdown, with a line on what the numbers are.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "Test accuracy (%), last epoch / best epoch: mean ± standard deviation over seeds \
             (n = finished seeds).\n",
        );
        if !self.common.is_empty() {
            let c: Vec<String> = self
                .common
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("Every run: {}.\n", c.join(", ")));
        }
        if self.has_unfinished() {
            s.push_str(
                "* unfinished: some runs of the cell are pending or part-trained; its numbers are \
                 over the finished ones.\n",
            );
        }
        s.push_str(&format!("\n| setting | {} |\n", self.columns.join(" | ")));
        s.push_str(&format!("|---|{}\n", "---|".repeat(self.columns.len())));
        for (r, row) in self.cells.iter().enumerate() {
            let texts: Vec<String> = row.iter().map(Group::text).collect();
            s.push_str(&format!(
                "| {} | {} |\n",
                self.row_label(r),
                texts.join(" | ")
            ));
        }
        s
    }

    /// The table as CSV: one line per setting and method.
    pub fn csv(&self) -> String {
        let mut s = self
            .row_keys
            .iter()
            .map(String::as_str)
            .chain([
                "method",
                "seeds",
                "unfinished",
                "last_mean",
                "last_sd",
                "best_mean",
                "best_sd",
            ])
            .collect::<Vec<_>>()
            .join(",");
        s.push('\n');
        let field = |t: &str| {
            if t.contains([',', '"']) {
                format!("\"{}\"", t.replace('"', "\"\""))
            } else {
                t.to_string()
            }
        };
        for (r, row) in self.cells.iter().enumerate() {
            for (c, g) in row.iter().enumerate() {
                if g.finished.is_empty() && g.unfinished == 0 {
                    continue;
                }
                let mut f: Vec<String> = self.rows[r].iter().map(|v| field(v)).collect();
                f.push(field(&self.columns[c]));
                f.push(g.finished.len().to_string());
                f.push(g.unfinished.to_string());
                match g.stats() {
                    Some(((lm, ls), (bm, bs))) => {
                        f.extend([lm, ls, bm, bs].iter().map(|v| format!("{v:.4}")))
                    }
                    None => f.extend(std::iter::repeat_n(String::new(), 4)),
                }
                s.push_str(&f.join(","));
                s.push('\n');
            }
        }
        s
    }

    /// A grouped bar chart of the mean last accuracy: one group per setting, one bar per method.
    pub fn plot(&self, path: &Path) -> Result<()> {
        let labels: Vec<String> = (0..self.rows.len()).map(|r| self.row_label(r)).collect();
        let series: Vec<(&str, Vec<f64>)> = self
            .columns
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let v = self
                    .cells
                    .iter()
                    .map(|row| row[c].stats().map_or(f64::NAN, |s| s.0.0))
                    .collect();
                (name.as_str(), v)
            })
            .collect();
        crate::report::plot::bar_chart(
            path,
            "last test accuracy (%), mean over seeds",
            &labels,
            &series,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Method;

    fn run(method: Method, noise: f64, seed: u64, acc: Option<(f64, f64)>) -> RunEntry {
        RunEntry {
            dir: format!("r-{method}-{noise}-{seed}").into(),
            config: TrainConfig {
                method,
                noise,
                seed,
                ..TrainConfig::default()
            },
            result: acc,
        }
    }

    #[test]
    fn means_and_spreads_match_a_hand_computed_table() {
        use Method::*;
        let entries = vec![
            run(Ce, 0.1, 0, Some((60.0, 62.0))),
            run(Ce, 0.1, 1, Some((62.0, 66.0))),
            run(Ce, 0.1, 2, Some((64.0, 67.0))),
            run(Bs, 0.1, 0, Some((70.0, 71.0))),
            run(Bs, 0.1, 1, Some((71.0, 73.0))),
            run(Bs, 0.2, 0, Some((50.5, 51.5))),
            run(Bs, 0.2, 1, None),
            run(Ce, 0.2, 0, None),
        ];
        let t = table(&entries);
        assert_eq!(t.row_keys, ["noise"]);
        assert_eq!(t.columns, ["ce", "bs"]);
        // ce at 0.1: last 60, 62, 64: mean 62, sd sqrt(((-2)^2 + 0 + 2^2) / 2) = 2;
        // best 62, 66, 67: mean 65, sd sqrt((9 + 1 + 4) / 2) = sqrt(7) = 2.6458.
        // bs at 0.1: last 70, 71: mean 70.5, sd sqrt(0.5) = 0.7071; best 71, 73: 72, 1.4142.
        let want = "\
| setting | ce | bs |
|---|---|---|
| noise=0.1 | 62.00 ± 2.00 / 65.00 ± 2.65 (n=3) | 70.50 ± 0.71 / 72.00 ± 1.41 (n=2) |
| noise=0.2 | – (n=0) (1 unfinished) * | 50.50 ± 0.00 / 51.50 ± 0.00 (n=1) (1 unfinished) * |
";
        let md = t.markdown();
        assert!(md.ends_with(want), "{md}");
        assert!(md.contains("* unfinished"), "{md}");
        assert!(
            md.contains("Every run: dataset=builtin, model=resnet8, epochs=4, batch_size=128"),
            "{md}"
        );
        let csv = t.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "noise,method,seeds,unfinished,last_mean,last_sd,best_mean,best_sd"
        );
        assert_eq!(lines[1], "0.1,ce,3,0,62.0000,2.0000,65.0000,2.6458");
        assert_eq!(lines[2], "0.1,bs,2,0,70.5000,0.7071,72.0000,1.4142");
        assert_eq!(lines[3], "0.2,ce,0,1,,,,");
        assert_eq!(lines[4], "0.2,bs,1,1,50.5000,0.0000,51.5000,0.0000");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn dl_variants_are_columns_of_their_own() {
        let mut a = run(Method::Dl, 0.2, 0, Some((1.0, 2.0)));
        a.config.dl.bins = Some(20);
        let b = run(Method::Dl, 0.2, 0, Some((3.0, 4.0)));
        let c = run(Method::Ce, 0.2, 0, Some((5.0, 6.0)));
        let t = table(&[a, b, c]);
        assert_eq!(t.columns, ["ce", "dl bins=20", "dl bins=none"]);
        assert_eq!(t.rows.len(), 1);
        assert!(t.markdown().contains("| all runs | 5.00 ± 0.00"));
    }

    #[test]
    fn a_directory_that_is_neither_run_nor_sweep_is_refused() {
        let dir = std::env::temp_dir().join(format!("dynloss-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = collect(std::slice::from_ref(&dir)).unwrap_err().to_string();
        assert!(e.contains("not a run") && e.contains("nor a sweep"), "{e}");
        let e = collect(&[dir.join("missing")]).unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
