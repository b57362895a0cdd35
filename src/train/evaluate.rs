//! Evaluation of a saved checkpoint on a test split.

use std::path::Path;

use crate::data::views::{Loader, View};
use crate::data::{DataConfig, Dataset};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::nn::zoo;

use super::accuracy::{accuracy, prediction_counts};
use super::checkpoint::Checkpoint;
use super::classifier::Classifier;
use super::state;

/// A checkpoint's result on a test split.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Overall accuracy, percent.
    pub accuracy: f64,
    /// Accuracy per true class, percent.
    pub per_class: Vec<f64>,
    /// How many test images were predicted as each class (a collapse onto a few classes, or a
    /// class never predicted, shows here).
    pub predicted: Vec<usize>,
    /// Class names of the data set.
    pub class_names: Vec<String>,
}

/// The classifier saved in checkpoint `ck` (read from `path`), with its weights and running
/// statistics, after checking that it takes `ds`'s images and classes.
pub fn classifier_for(gpu: &Gpu, path: &Path, ck: &Checkpoint, ds: &Dataset) -> Result<Classifier> {
    let saved = state::config_of(path, ck)?;
    let classes: usize = ck.parse(path, "classes")?;
    let input = ck.get(path, "input")?;
    if classes != ds.classes || input != format!("{:?}", ds.shape) {
        return Err(Error::Format {
            path: path.into(),
            msg: format!(
                "checkpoint was trained on {input} images with {classes} classes; this data set has {:?} and {}",
                ds.shape, ds.classes
            ),
        });
    }
    let model = zoo::build_named(&saved.model, ds.shape, ds.classes)?;
    let mut clf = Classifier::new(gpu, &saved, model, 1)?;
    clf.restore_weights(path, ck)?;
    Ok(clf)
}

/// The data the run saved in the checkpoint at `path` was trained on (data set, folder, long
/// tail, noise, seed, image size): what `eval` evaluates on unless told otherwise.
pub fn run_data(path: &Path) -> Result<DataConfig> {
    Ok(state::config_of(path, &Checkpoint::load(path)?)?.data_config())
}

/// Evaluates the checkpoint at `path` on the test split of `data`.
pub fn evaluate_checkpoint(gpu: &Gpu, path: &Path, data: &DataConfig) -> Result<Evaluation> {
    let (_, test) = crate::data::load_raw(data)?;
    evaluate_checkpoint_on(gpu, path, test)
}

/// Evaluates the checkpoint at `path` on `test`.
pub fn evaluate_checkpoint_on(gpu: &Gpu, path: &Path, test: Dataset) -> Result<Evaluation> {
    let ck = Checkpoint::load(path)?;
    let clf = classifier_for(gpu, path, &ck, &test)?;
    let classes = test.classes;
    let (mean, std) = state::normalisation_of(path, &ck)?;
    let n = test.len();
    let (labels, class_names) = (test.labels.clone(), test.class_names.clone());
    let loader = Loader::new(
        std::sync::Arc::new(test),
        (0..n).collect(),
        super::data::PREDICT_BATCH,
        View::Weak,
        mean,
        std,
        0,
    )?;
    let logits = clf.predict(loader)?;
    let (acc, per) = accuracy(&logits, &labels, classes);
    Ok(Evaluation {
        accuracy: acc,
        per_class: per,
        predicted: prediction_counts(&logits, classes),
        class_names,
    })
}
