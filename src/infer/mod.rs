//! A checkpoint as a standalone classifier: predictions for image files that have no labels,
//! with the preprocessing (input size, channels, normalisation) and class names the
//! checkpoint carries.

use std::path::{Path, PathBuf};

use crate::data::folder::{IMAGE_EXTS, MAX_IMAGE_BYTES, decode_image_as};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::{Mode, zoo};
use crate::report::{csv_field, write_atomic};
use crate::tensor::Tensor;
use crate::train::checkpoint::Checkpoint;
use crate::train::classifier::Classifier;
use crate::train::state;

/// Images per GPU batch.
const BATCH: usize = 256;

/// A trained classifier loaded from a checkpoint, with what it needs to read new images.
pub struct Predictor {
    gpu: Gpu,
    clf: Classifier,
    input: [usize; 3],
    mean: Vec<f32>,
    std: Vec<f32>,
    /// Class names in class-index order (the indices for checkpoints without names).
    pub class_names: Vec<String>,
}

/// The answer for one input file.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The file.
    pub path: PathBuf,
    /// The most probable classes, most probable first: (class index, probability).
    pub top: Vec<(usize, f32)>,
    /// Why the file could not be read (with `skip_unreadable`), else `None`.
    pub error: Option<String>,
}

impl Predictor {
    /// Loads the checkpoint at `path`: model, weights, running statistics, normalisation and
    /// class names.
    pub fn load(gpu: &Gpu, path: &Path) -> Result<Predictor> {
        let ck = Checkpoint::load(path)?;
        let saved = state::config_of(path, &ck)?;
        let classes: usize = ck.parse(path, "classes")?;
        let input: [usize; 3] = ck.json(path, "input")?;
        let class_names = match ck.meta.get("class_names") {
            Some(_) => ck.json(path, "class_names")?,
            None => (0..classes).map(|c| c.to_string()).collect(),
        };
        let model = zoo::build_named(&saved.model, input, classes)?;
        let mut clf = Classifier::new(gpu, &saved, model, 1)?;
        clf.restore_weights(path, &ck)?;
        let (mean, std) = state::normalisation_of(path, &ck)?;
        Ok(Predictor {
            gpu: gpu.clone(),
            clf,
            input,
            mean,
            std,
            class_names,
        })
    }

    /// The image shape [C, H, W] the classifier takes (files are converted to it).
    pub fn input(&self) -> [usize; 3] {
        self.input
    }

    /// The `top_k` most probable classes of each file, in order. An unreadable file fails the
    /// whole call, naming it, unless `skip_unreadable`, when its answer carries the error.
    /// `progress` is called with the number of files done after each batch.
    pub fn predict(
        &self,
        files: &[PathBuf],
        top_k: usize,
        skip_unreadable: bool,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Prediction>> {
        let [c, h, w] = self.input;
        let plane = h * w;
        let classes = self.class_names.len();
        let mut out = Vec::with_capacity(files.len());
        for chunk in files.chunks(BATCH) {
            let mut x = Vec::with_capacity(chunk.len() * c * plane);
            let mut errors = Vec::with_capacity(chunk.len());
            for f in chunk {
                match read_file(f, self.input) {
                    Ok(bytes) => {
                        x.extend(bytes.iter().enumerate().map(|(i, &v)| {
                            let ch = i / plane;
                            (v as f32 / 255.0 - self.mean[ch]) / self.std[ch]
                        }));
                        errors.push(None);
                    }
                    Err(e) if skip_unreadable => errors.push(Some(e.to_string())),
                    Err(e) => return Err(e),
                }
            }
            let n = x.len() / (c * plane);
            let logits = if n == 0 {
                Vec::new()
            } else {
                let t = Tensor::from_f32(&self.gpu, &[n, c, h, w], &x)?;
                self.clf.logits(&t, Mode::Eval)?.to_f32_vec()?
            };
            let mut rows = logits.chunks_exact(classes.max(1));
            for (f, error) in chunk.iter().zip(errors) {
                let top = match error {
                    Some(_) => Vec::new(),
                    None => top_classes(rows.next().expect("one row per read file"), top_k),
                };
                out.push(Prediction {
                    path: f.clone(),
                    top,
                    error,
                });
            }
            progress(out.len());
        }
        Ok(out)
    }
}

/// The `k` largest softmax probabilities of `logits` with their classes, largest first.
fn top_classes(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let exp: Vec<f64> = logits.iter().map(|&z| (z as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut p: Vec<(usize, f32)> = exp
        .iter()
        .enumerate()
        .map(|(i, e)| (i, (e / sum) as f32))
        .collect();
    // Stable: equal probabilities keep class order.
    p.sort_by(|a, b| b.1.total_cmp(&a.1));
    p.truncate(k);
    p
}

/// Reads one image file into `shape` bytes, refusing oversized files.
fn read_file(path: &Path, shape: [usize; 3]) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| Error::Io {
        path: path.into(),
        source: e,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_IMAGE_BYTES {
        return Err(Error::Format {
            path: path.into(),
            msg: format!("{len} bytes is larger than the {MAX_IMAGE_BYTES}-byte image limit"),
        });
    }
    decode_image_as(&std::fs::read(path).map_err(io)?, path, shape)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The image files `inputs` name, in order: files as given, folders searched recursively
/// (sorted, images by extension), and list files (`.txt`: one path per line, relative to the
/// list's folder, an optional label after the last space ignored).
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| Error::Io {
            path: p.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else if p.extension().is_some_and(|e| e == "txt") {
            let text = std::fs::read_to_string(p).map_err(|e| Error::Io {
                path: p.clone(),
                source: e,
            })?;
            let base = p.parent().unwrap_or(Path::new("."));
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // `path label` lines (the list data sets' form) name the path first.
                let file = match line.rsplit_once(char::is_whitespace) {
                    Some((f, label)) if label.parse::<u32>().is_ok() => f.trim(),
                    _ => line,
                };
                out.push(base.join(file));
            }
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "no image files ({}) in {}",
            IMAGE_EXTS.join(", "),
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io {
            path: dir.into(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// The predictions as CSV text: `path`, then `class_1, prob_1, ... class_k, prob_k`, and an
/// `error` column for unreadable files.
pub fn to_csv(preds: &[Prediction], class_names: &[String], top_k: usize) -> String {
    let mut s = String::from("path");
    for k in 1..=top_k {
        s.push_str(&format!(",class_{k},prob_{k}"));
    }
    s.push_str(",error\n");
    for p in preds {
        s.push_str(&csv_field(&p.path.to_string_lossy()));
        for k in 0..top_k {
            match p.top.get(k) {
                Some(&(c, prob)) => {
                    s.push_str(&format!(",{},{prob:.6}", csv_field(&class_names[c])))
                }
                None => s.push_str(",,"),
            }
        }
        s.push(',');
        s.push_str(&csv_field(p.error.as_deref().unwrap_or("")));
        s.push('\n');
    }
    s
}

/// Writes [`to_csv`] to `path` atomically: the file is complete or absent, never half written.
pub fn write_csv(
    path: &Path,
    preds: &[Prediction],
    class_names: &[String],
    top_k: usize,
) -> Result<()> {
    write_atomic(path, to_csv(preds, class_names, top_k).as_bytes())
}
