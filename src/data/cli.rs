//! Command-line pieces for data: the data flags shared with `train`, and the `data fetch` /
//! `data stats` subcommands.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::fetch::{self, FetchName, MIRROR_ENV};
use super::{DataConfig, Dataset, DatasetKind, NoiseType, TrainSet, check_config, load};
use crate::error::{Error, Result};
use crate::report::plot::{Canvas, bar_chart};

/// Flags choosing and shaping the training data (shared by `train` and `data stats`).
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct DataFlags {
    /// Data set to use.
    #[arg(long, value_enum, default_value_t = DatasetKind::Builtin)]
    pub dataset: DatasetKind,
    /// Folder holding the data set's files [default: data; Fashion-MNIST also looks in
    /// /usr/share/datasets/fashion-mnist].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Long-tail imbalance ratio rho (largest / smallest class); 1 keeps the set balanced.
    #[arg(long, default_value_t = 1.0)]
    pub imbalance: f64,
    /// Label-noise rate lambda in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub noise: f64,
    /// Noise model: lt (the paper's long-tail noise), sym (uniform), asym (CIFAR-10 flips).
    #[arg(long, value_enum, default_value_t = NoiseType::Lt)]
    pub noise_type: NoiseType,
    /// Seed of the long tail, the noise and the built-in images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Resize images to this side in pixels [default: native; 32 for folder and list].
    #[arg(long)]
    pub image_size: Option<usize>,
}

impl DataFlags {
    /// The data configuration these flags describe, validated.
    pub fn to_config(&self) -> Result<DataConfig> {
        let cfg = DataConfig {
            dataset: self.dataset,
            data_dir: self.data_dir.clone(),
            imbalance: self.imbalance,
            noise: self.noise,
            noise_type: self.noise_type,
            seed: self.seed,
            image_size: self.image_size,
        };
        check_config(&cfg)?;
        if self.noise_type == NoiseType::Asym
            && self.noise > 0.0
            && matches!(self.dataset, DatasetKind::Cifar100)
        {
            return Err(Error::Config(
                "asymmetric noise is defined for CIFAR-10's classes; use lt or sym for CIFAR-100"
                    .into(),
            ));
        }
        Ok(cfg)
    }
}

/// The `data` subcommands.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum DataCommand {
    /// Download a data set from its official address, verify its checksums and unpack it.
    Fetch {
        /// Which data set.
        #[arg(value_enum)]
        name: FetchName,
        /// Folder to put it in.
        #[arg(long, default_value = super::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Download from this base (http(s) URL, file:// URL or folder) instead of the
        /// official address; checksums are still verified.
        #[arg(long, env = MIRROR_ENV)]
        mirror: Option<String>,
    },
    /// Print per-class counts (true and noisy) and realised noise rates of the training set
    /// the data flags build, and draw them as a bar chart.
    Stats {
        /// The data set and how to long-tail and corrupt it.
        #[command(flatten)]
        flags: DataFlags,
        /// Where to write the bar chart (PNG).
        #[arg(long, default_value = "data_stats.png")]
        out: PathBuf,
    },
    /// Draw the first training images of every class (by given label) as a grid PNG.
    Preview {
        /// The data set and how to long-tail and corrupt it.
        #[command(flatten)]
        flags: DataFlags,
        /// Images per class (one row per class).
        #[arg(long, default_value_t = 12)]
        per_class: usize,
        /// Where to write the grid (PNG).
        #[arg(long, default_value = "data_preview.png")]
        out: PathBuf,
    },
}

/// Runs a `data` subcommand, printing its results to stdout.
pub fn run(cmd: &DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch {
            name,
            data_dir,
            mirror,
        } => {
            let mirror = mirror.as_deref().filter(|m| !m.is_empty());
            let from = mirror.unwrap_or("the official address");
            println!(
                "fetching {} from {from} into {}",
                name.name(),
                data_dir.display()
            );
            let dir = fetch::fetch(*name, data_dir, mirror)?;
            println!("ready: {}", dir.display());
            Ok(())
        }
        DataCommand::Stats { flags, out } => {
            let cfg = flags.to_config()?;
            let (train, test) = load(&cfg)?;
            print!("{}", stats_text(&cfg, &train, &test));
            stats_chart(out, &cfg, &train)?;
            println!("chart: {}", out.display());
            Ok(())
        }
        DataCommand::Preview {
            flags,
            per_class,
            out,
        } => {
            let cfg = flags.to_config()?;
            let (train, _) = load(&cfg)?;
            preview_grid(out, &train.data, *per_class)?;
            println!("preview: {}", out.display());
            Ok(())
        }
    }
}

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
