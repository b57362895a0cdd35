//! What `data stats` and `data preview` show: the per-class table, the bar chart of true,
//! given and mislabelled counts, and a grid of example images.

use std::fmt::Write as _;
use std::path::Path;

use super::{DataConfig, Dataset, TrainSet};
use crate::choice::Choice;
use crate::error::{Error, Result};
use crate::report::plot::{Canvas, bar_chart};

/// Widest preview grid drawn, in pixels.
pub const MAX_PREVIEW_WIDTH: usize = 4096;

/// Draws up to `per_class` images of each class (first in data set order, by given label) in
/// one row per class, enlarged to at least 64 pixels, with the class name on the left.
pub fn preview_grid(path: &Path, ds: &Dataset, per_class: usize) -> Result<()> {
    if per_class == 0 {
        return Err(Error::Config("--per-class must be at least 1".into()));
    }
    let [c, h, w] = ds.shape;
    let scale = 64usize.div_ceil(h.max(w)).max(1);
    let (cell_w, cell_h) = (w * scale + 2, h * scale + 2);
    // Room for 12 characters of the 5x7 font (6-pixel cells) plus margins.
    let label_w = 8 * 13;
    // No wider than the largest class needs, nor than a picture viewer shows.
    let largest = ds.class_counts().into_iter().max().unwrap_or(0);
    let per_class = per_class
        .min(largest)
        .min((MAX_PREVIEW_WIDTH - label_w) / cell_w)
        .max(1);
    let mut canvas = Canvas::new(
        (label_w + per_class * cell_w) as u32,
        (ds.classes * cell_h) as u32,
    );
    let mut filled = vec![0usize; ds.classes];
    let plane = h * w;
    for (i, &label) in ds.labels.iter().enumerate() {
        let k = label as usize;
        if filled[k] >= per_class {
            continue;
        }
        let img = ds.image(i);
        let (x0, y0) = (label_w + filled[k] * cell_w + 1, k * cell_h + 1);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let p = (y / scale) * w + x / scale;
                let px = std::array::from_fn(|ch| img[ch.min(c - 1) * plane + p]);
                canvas.put((x0 + x) as i64, (y0 + y) as i64, px);
            }
        }
        filled[k] += 1;
    }
    for (k, name) in ds.class_names.iter().enumerate() {
        let short: String = name.chars().take(12).collect();
        canvas.text(
            4,
            (k * cell_h + cell_h / 2) as i64 - 4,
            &short,
            1,
            [30, 30, 30],
        );
    }
    canvas.save_png(path)
}

/// A one-line description of the configuration, used in titles.
pub fn describe(cfg: &DataConfig) -> String {
    let mut s = cfg.dataset.name().to_string();
    if cfg.imbalance != 1.0 {
        let _ = write!(s, " rho={}", cfg.imbalance);
    }
    if cfg.noise > 0.0 {
        let _ = write!(s, " {} noise {}", cfg.noise_type.name(), cfg.noise);
    }
    s
}

/// The per-class table `data stats` prints.
pub fn stats_text(cfg: &DataConfig, train: &TrainSet, test: &Dataset) -> String {
    let ds = &train.data;
    let [c, h, w] = ds.shape;
    let stats = train.class_stats();
    let test_counts = test.class_counts();
    let flipped: usize = train
        .true_labels
        .iter()
        .zip(&ds.labels)
        .filter(|(a, b)| a != b)
        .count();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "data set: {} ({} classes, {c}x{h}x{w}), seed {}",
        cfg.dataset.name(),
        ds.classes,
        cfg.seed
    );
    let head = stats.iter().map(|t| t.0).max().unwrap_or(0);
    let tail = stats.iter().map(|t| t.0).min().unwrap_or(0);
    let _ = writeln!(
        s,
        "training samples: {} (imbalance {}: largest class {head}, smallest {tail})",
        ds.len(),
        cfg.imbalance
    );
    let _ = writeln!(
        s,
        "noise: {} {} -> realised {:.2}% ({flipped} of {} labels differ from the truth)",
        cfg.noise_type.name(),
        cfg.noise,
        100.0 * train.noise_rate(),
        ds.len()
    );
    let _ = writeln!(s, "test samples: {} (clean)", test.len());
    let name_w = ds
        .class_names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 24);
    let _ = writeln!(
        s,
        "{:>4}  {:<name_w$}  {:>7}  {:>7}  {:>9}  {:>6}",
        "id", "class", "true", "given", "mislabel%", "test"
    );
    for (k, &(t, g, rate)) in stats.iter().enumerate() {
        let _ = writeln!(
            s,
            "{k:>4}  {:<name_w$}  {t:>7}  {g:>7}  {:>8.2}%  {:>6}",
            ds.class_names[k],
            100.0 * rate,
            test_counts.get(k).copied().unwrap_or(0)
        );
    }
    s
}

/// Draws the `data stats` bar chart: true count, given (noisy) count and mislabelled count per
/// class.
pub fn stats_chart(path: &Path, cfg: &DataConfig, train: &TrainSet) -> Result<()> {
    let stats = train.class_stats();
    let truth: Vec<f64> = stats.iter().map(|t| t.0 as f64).collect();
    let given: Vec<f64> = stats.iter().map(|t| t.1 as f64).collect();
    let wrong: Vec<f64> = stats.iter().map(|t| (t.0 as f64 * t.2).round()).collect();
    let title = format!(
        "{}: {} samples, realised noise {:.1}%",
        describe(cfg),
        train.data.len(),
        100.0 * train.noise_rate()
    );
    bar_chart(
        path,
        &title,
        &train.data.class_names,
        &[
            ("true label", truth),
            ("given (noisy) label", given),
            ("mislabelled", wrong),
        ],
    )
}
