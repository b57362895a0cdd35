//! Data: readers (CIFAR binary, MNIST idx, image folders, list files, a built-in generated
//! set), the long-tailed noisy training-set construction of the spec, and augmented views
//! prepared by a background loader.
//!
//! Everything random here is drawn from the run's named streams ([`crate::random`]), so a
//! data set, its long tail, its noise and every augmented batch are reproducible from the
//! seed alone, whatever the thread count.

pub mod augment;
pub mod builtin;
pub mod cifar;
pub mod fetch;
pub mod folder;
pub mod idx;
pub mod longtail;
pub mod noise;
pub mod report;
pub mod views;

use std::path::{Path, PathBuf};

pub use noise::NoiseType;
pub use views::{Batch, Loader, View};

use crate::choice::Choice;
use crate::error::{Error, Result};

/// Images and labels in memory: `images` holds N samples of C x H x W bytes (CHW order).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// N*C*H*W pixel bytes, sample-major, each sample in CHW order.
    pub images: Vec<u8>,
    /// One class index per sample.
    pub labels: Vec<u32>,
    /// [C, H, W] of every sample.
    pub shape: [usize; 3],
    /// Number of classes (labels are < classes).
    pub classes: usize,
    /// Human-readable class names, `classes` of them.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per sample (C*H*W).
    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The CHW bytes of sample `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Samples per class (by `labels`).
    pub fn class_counts(&self) -> Vec<usize> {
        count_labels(&self.labels, self.classes)
    }

    /// A new data set of the samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes,
            class_names: self.class_names.clone(),
        }
    }

    /// Checks the invariants the rest of the crate relies on (sizes agree, labels in range),
    /// blaming `path` for a violation.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let fail = |msg: String| {
            Err(Error::Format {
                path: path.to_path_buf(),
                msg,
            })
        };
        if self.images.len() != self.labels.len() * self.sample_len() {
            return fail(format!(
                "{} pixel bytes for {} samples of shape {:?}",
                self.images.len(),
                self.labels.len(),
                self.shape
            ));
        }
        if self.class_names.len() != self.classes {
            return fail(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.classes
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= self.classes)
        {
            return fail(format!(
                "sample {i}: label {l} out of range 0..{}",
                self.classes
            ));
        }
        Ok(())
    }
}

/// A long-tailed, noisy training set: `data.labels` are the given (noisy) labels used for
/// training; `true_labels` are kept only to report the realised noise and correction accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSet {
    /// The kept samples; `data.labels` are the NOISY labels.
    pub data: Dataset,
    /// The clean label of each kept sample (never used for training).
    pub true_labels: Vec<u32>,
    /// Index of each kept sample in the full source training set.
    pub source_index: Vec<usize>,
}

impl TrainSet {
    /// Fraction of samples whose given label differs from the true one.
    pub fn noise_rate(&self) -> f64 {
        if self.true_labels.is_empty() {
            return 0.0;
        }
        let flipped = self
            .true_labels
            .iter()
            .zip(&self.data.labels)
            .filter(|(t, n)| t != n)
            .count();
        flipped as f64 / self.true_labels.len() as f64
    }

    /// Per class c: (samples whose TRUE class is c, samples GIVEN label c, fraction of true-c
    /// samples carrying a wrong label).
    pub fn class_stats(&self) -> Vec<(usize, usize, f64)> {
        let c = self.data.classes;
        let truth = count_labels(&self.true_labels, c);
        let given = count_labels(&self.data.labels, c);
        let mut flipped = vec![0usize; c];
        for (&t, &n) in self.true_labels.iter().zip(&self.data.labels) {
            if t != n {
                flipped[t as usize] += 1;
            }
        }
        (0..c)
            .map(|k| {
                let rate = if truth[k] == 0 {
                    0.0
                } else {
                    flipped[k] as f64 / truth[k] as f64
                };
                (truth[k], given[k], rate)
            })
            .collect()
    }
}

/// Which data set to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// 10 procedurally generated classes of 32x32 RGB shapes and textures (no files needed).
    Builtin,
    /// CIFAR-10, official binary version.
    Cifar10,
    /// CIFAR-100 (fine labels), official binary version.
    Cifar100,
    /// MNIST idx files (plain or gzipped).
    Mnist,
    /// Fashion-MNIST idx files (plain or gzipped).
    FashionMnist,
    /// Image folders: train/ and test/ with one sub-folder per class, or `<label>_<id>.jpg`.
    Folder,
    /// `path label` list files (train.txt / test.txt, ImageNet-LT or WebVision style).
    List,
}

impl Choice for DatasetKind {
    const WHAT: &'static str = "dataset";
    const ALL: &'static [Self] = &[
        DatasetKind::Builtin,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Folder,
        DatasetKind::List,
    ];

    fn name(self) -> &'static str {
        match self {
            DatasetKind::Builtin => "builtin",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Folder => "folder",
            DatasetKind::List => "list",
        }
    }
}
crate::choice_by_name!(DatasetKind);

/// Everything that decides which training and test sets `load` builds.
#[derive(Clone, Debug, PartialEq)]
pub struct DataConfig {
    /// Which data set.
    pub dataset: DatasetKind,
    /// Where its files are (default `data`, plus well-known system locations).
    pub data_dir: Option<PathBuf>,
    /// Long-tail imbalance ratio rho = n_max / n_min; 1 keeps the whole training set.
    pub imbalance: f64,
    /// Noise rate lambda in [0, 1].
    pub noise: f64,
    /// Which noise model.
    pub noise_type: NoiseType,
    /// Seed of every random choice (long tail, noise, generated images).
    pub seed: u64,
    /// Resize every image to this side (default: native size; 32 for folders and lists).
    pub image_size: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: DatasetKind::Builtin,
            data_dir: None,
            imbalance: 1.0,
            noise: 0.0,
            noise_type: NoiseType::Lt,
            seed: 0,
            image_size: None,
        }
    }
}

/// Side that folder and list images are resized to when none is given.
pub const DEFAULT_FOLDER_SIDE: usize = 32;

/// Where data sets live when no `--data-dir` is given.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Reads the full (balanced, clean) training set and the test set of `cfg.dataset`, resized
/// to `cfg.image_size` if given.
pub fn load_raw(cfg: &DataConfig) -> Result<(Dataset, Dataset)> {
    let dir = cfg
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let side = cfg.image_size;
    if side == Some(0) || side.is_some_and(|s| s > 1024) {
        return Err(Error::Config(format!(
            "image size {} is outside 1..=1024",
            side.unwrap_or(0)
        )));
    }
    let (train, test) = match cfg.dataset {
        DatasetKind::Builtin => {
            let s = side.unwrap_or(builtin::SIDE);
            return Ok(builtin::generate(
                cfg.seed,
                s,
                builtin::TRAIN_PER_CLASS,
                builtin::TEST_PER_CLASS,
            ));
        }
        DatasetKind::Cifar10 => cifar::read_cifar10(&dir)?,
        DatasetKind::Cifar100 => cifar::read_cifar100(&dir)?,
        DatasetKind::Mnist => idx::read_mnist(&dir, cfg.data_dir.is_some(), false)?,
        DatasetKind::FashionMnist => idx::read_mnist(&dir, cfg.data_dir.is_some(), true)?,
        DatasetKind::Folder => {
            return folder::read_folder_root(&dir, side.unwrap_or(DEFAULT_FOLDER_SIDE));
        }
        DatasetKind::List => {
            return folder::read_list_root(&dir, side.unwrap_or(DEFAULT_FOLDER_SIDE));
        }
    };
    Ok(match side {
        Some(s) if s != train.shape[1] || s != train.shape[2] => {
            (resize_dataset(&train, s), resize_dataset(&test, s))
        }
        _ => (train, test),
    })
}

/// Reads `cfg.dataset` and builds the long-tailed noisy training set and the clean balanced
/// test set.
pub fn load(cfg: &DataConfig) -> Result<(TrainSet, Dataset)> {
    check_config(cfg)?;
    let (train, test) = load_raw(cfg)?;
    let ts = build_train_set(&train, cfg.imbalance, cfg.noise, cfg.noise_type, cfg.seed)?;
    Ok((ts, test))
}

/// Rejects settings no data set can satisfy, before any file is read.
pub fn check_config(cfg: &DataConfig) -> Result<()> {
    if !(cfg.imbalance.is_finite() && cfg.imbalance >= 1.0) {
        return Err(Error::Config(format!(
            "imbalance ratio must be a number >= 1 (1 = balanced), got {}",
            cfg.imbalance
        )));
    }
    if !(cfg.noise.is_finite() && (0.0..=1.0).contains(&cfg.noise)) {
        return Err(Error::Config(format!(
            "noise rate must be in [0, 1], got {}",
            cfg.noise
        )));
    }
    if cfg.noise_type == NoiseType::Asym && cfg.noise > 0.0 && cfg.dataset == DatasetKind::Cifar100
    {
        return Err(Error::Config(
            "asymmetric noise is defined for CIFAR-10's classes; use lt or sym for CIFAR-100"
                .into(),
        ));
    }
    Ok(())
}

/// Applies the long tail (rho = `imbalance`) and then label noise to a full training set.
pub fn build_train_set(
    full: &Dataset,
    imbalance: f64,
    noise: f64,
    noise_type: NoiseType,
    seed: u64,
) -> Result<TrainSet> {
    let keep = longtail::long_tail_indices(&full.labels, full.classes, imbalance, seed)
        .map_err(|e| name_class(e, &full.class_names))?;
    let data = full.subset(&keep);
    let true_labels = data.labels.clone();
    let noisy = noise::apply_noise(&true_labels, data.classes, noise, noise_type, seed)?;
    Ok(TrainSet {
        data: Dataset {
            labels: noisy,
            ..data
        },
        true_labels,
        source_index: keep,
    })
}

/// Adds the class name to a long-tail error that names a class by index ("class 3 ...").
fn name_class(e: Error, names: &[String]) -> Error {
    let Error::Config(msg) = e else { return e };
    let named = msg.strip_prefix("class ").and_then(|rest| {
        let num = rest.split_whitespace().next()?;
        let name = names.get(num.parse::<usize>().ok()?)?;
        Some(format!("class {num} ('{name}'){}", &rest[num.len()..]))
    });
    Error::Config(named.unwrap_or(msg))
}

/// Per-channel mean and standard deviation of the pixels scaled to [0, 1], for normalising.
pub fn mean_std(ds: &Dataset) -> (Vec<f32>, Vec<f32>) {
    let [c, h, w] = ds.shape;
    let plane = h * w;
    let mut sum = vec![0u64; c];
    let mut sq = vec![0u64; c];
    for img in ds.images.chunks_exact(c * plane) {
        for ch in 0..c {
            for &v in &img[ch * plane..(ch + 1) * plane] {
                sum[ch] += v as u64;
                sq[ch] += (v as u64) * (v as u64);
            }
        }
    }
    let n = (ds.len() * plane).max(1) as f64;
    let mut mean = Vec::with_capacity(c);
    let mut std = Vec::with_capacity(c);
    for ch in 0..c {
        let m = sum[ch] as f64 / n;
        let var = (sq[ch] as f64 / n - m * m).max(0.0);
        mean.push((m / 255.0) as f32);
        // A constant channel would divide by zero when normalising: floor the deviation.
        std.push(((var.sqrt() / 255.0) as f32).max(1e-3));
    }
    (mean, std)
}

/// Bilinear resize of every image to `side` x `side` (used when a caller asks for a size the
/// files do not have, e.g. MNIST at 32).
pub fn resize_dataset(ds: &Dataset, side: usize) -> Dataset {
    let [c, h, w] = ds.shape;
    let mut images = vec![0u8; ds.len() * c * side * side];
    for (src, dst) in ds
        .images
        .chunks_exact(c * h * w)
        .zip(images.chunks_exact_mut(c * side * side))
    {
        for ch in 0..c {
            resize_plane(
                &src[ch * h * w..(ch + 1) * h * w],
                h,
                w,
                &mut dst[ch * side * side..(ch + 1) * side * side],
                side,
                side,
            );
        }
    }
    Dataset {
        images,
        labels: ds.labels.clone(),
        shape: [c, side, side],
        classes: ds.classes,
        class_names: ds.class_names.clone(),
    }
}

/// Bilinear resampling of one plane with pixel-centre alignment.
fn resize_plane(src: &[u8], h: usize, w: usize, dst: &mut [u8], oh: usize, ow: usize) {
    for y in 0..oh {
        let sy = ((y as f32 + 0.5) * h as f32 / oh as f32 - 0.5).clamp(0.0, (h - 1) as f32);
        let y0 = sy.floor() as usize;
        let y1 = (y0 + 1).min(h - 1);
        let fy = sy - y0 as f32;
        for x in 0..ow {
            let sx = ((x as f32 + 0.5) * w as f32 / ow as f32 - 0.5).clamp(0.0, (w - 1) as f32);
            let x0 = sx.floor() as usize;
            let x1 = (x0 + 1).min(w - 1);
            let fx = sx - x0 as f32;
            let p = |yy: usize, xx: usize| src[yy * w + xx] as f32;
            let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
            let bot = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
            dst[y * ow + x] = (top * (1.0 - fy) + bot * fy).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Samples per class of `labels` (labels >= `classes` are ignored).
pub fn count_labels(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0usize; classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    counts
}

/// Maps an I/O error on `path` into the crate error.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A malformed-content error on `path`.
pub(crate) fn format_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// A "not found" error on `path` that says how to get the data.
pub(crate) fn missing(path: &Path, hint: &str) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, hint.to_string()),
    }
}
