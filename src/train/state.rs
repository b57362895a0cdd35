//! A run's state on disk: the file names in a run directory, and what a checkpoint holds
//! (classifier, method state, epoch, step, settings, normalisation) written and read back.

use std::path::Path;

use crate::error::{Error, Result};

use super::checkpoint::Checkpoint;
use super::classifier::Classifier;
use super::config::{LrSchedule, TrainConfig};
use super::data::TrainData;
use super::method::TrainingMethod;
use super::metrics::EpochMetrics;

/// The checkpoint of a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// One JSON line per finished epoch.
pub const METRICS: &str = "metrics.jsonl";
/// The run's summary.
pub const SUMMARY: &str = "summary.json";
/// The lock file a running process holds (its content: the process id).
pub const LOCK: &str = ".lock";
/// The Dynamic Loss's plots of the corrector's trust, the margins and the labels' accuracy.
pub const LABEL_WEIGHTS_PLOT: &str = "plots/label_weights.png";
/// See [`LABEL_WEIGHTS_PLOT`].
pub const MARGINS_PLOT: &str = "plots/margins.png";
/// See [`LABEL_WEIGHTS_PLOT`].
pub const LABEL_ACCURACY_PLOT: &str = "plots/label_accuracy.png";

/// Every file a run writes in its directory, relative to it: only these (and their temporary
/// copies) are ever removed or replaced by this program.
pub const RUN_FILES: &[&str] = &[
    CHECKPOINT,
    METRICS,
    SUMMARY,
    LOCK,
    super::metrics::ACCURACY_PLOT,
    LABEL_WEIGHTS_PLOT,
    MARGINS_PLOT,
    LABEL_ACCURACY_PLOT,
];

/// Where a run stands after an epoch.
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Wall time of all invocations so far, seconds.
    pub seconds: f64,
    /// The metrics of every completed epoch (what `metrics.jsonl` holds).
    pub history: Vec<EpochMetrics>,
}

/// Writes the checkpoint of a run after `progress.epoch` epochs. It carries the metrics of
/// every epoch so far, so that it alone is the commit point of an epoch: the metrics file and
/// the summary written after it can always be rebuilt from it.
pub fn save(
    path: &Path,
    cfg: &TrainConfig,
    data: &TrainData,
    clf: &Classifier,
    method: &dyn TrainingMethod,
    progress: &Progress,
) -> Result<()> {
    let mut ck = Checkpoint::default();
    clf.save(&mut ck)?;
    method.save(&mut ck)?;
    let m = &mut ck.meta;
    m.insert("epoch".into(), progress.epoch.to_string());
    m.insert("seconds".into(), progress.seconds.to_string());
    m.insert(
        "metrics".into(),
        serde_json::to_string(&progress.history).expect("metrics serialise"),
    );
    m.insert(
        "config".into(),
        serde_json::to_string(cfg).expect("config serialises"),
    );
    m.insert("train_labels".into(), labels_digest(&data.train.labels));
    m.insert("model".into(), cfg.model.clone());
    m.insert("input".into(), format!("{:?}", data.train.shape));
    m.insert(
        "class_names".into(),
        serde_json::to_string(&data.train.class_names).expect("names serialise"),
    );
    m.insert("classes".into(), data.train.classes.to_string());
    m.insert(
        "mean".into(),
        serde_json::to_string(&data.mean).expect("floats"),
    );
    m.insert(
        "std".into(),
        serde_json::to_string(&data.std).expect("floats"),
    );
    ck.save(path)
}

/// Restores the classifier and the method from the checkpoint at `path`; returns where the
/// run stood. A checkpoint written before the metrics were stored in it takes them from
/// `metrics_file`.
pub fn restore(
    path: &Path,
    ck: &Checkpoint,
    clf: &mut Classifier,
    method: &mut dyn TrainingMethod,
    metrics_file: &Path,
) -> Result<Progress> {
    clf.restore(path, ck)?;
    method.restore(path, ck)?;
    let epoch: usize = ck.parse(path, "epoch")?;
    let history = match ck.meta.get("metrics") {
        Some(text) => serde_json::from_str(text).map_err(|e| Error::Format {
            path: path.into(),
            msg: format!("checkpoint metadata 'metrics': {e}"),
        })?,
        None => {
            let mut h = super::metrics::read_metrics(metrics_file)?;
            h.truncate(epoch);
            h
        }
    };
    Ok(Progress {
        epoch,
        seconds: ck.parse(path, "seconds")?,
        history,
    })
}

/// A digest of the training labels a run trains on (they depend on `--relabel-from`'s
/// checkpoint as well as on the settings).
fn labels_digest(labels: &[u32]) -> String {
    let h = labels.iter().fold(labels.len() as u64, |h, &l| {
        crate::random::mix64(h ^ l as u64)
    });
    format!("{h:016x}")
}

/// Refuses to resume on training labels other than the run's (a `--relabel-from` checkpoint
/// that changed since). Checkpoints from before the digest was stored pass.
pub fn check_labels(path: &Path, ck: &Checkpoint, data: &TrainData) -> Result<()> {
    match ck.meta.get("train_labels") {
        Some(saved) if *saved != labels_digest(&data.train.labels) => Err(Error::Config(format!(
            "--resume: the training labels differ from those {} was trained on (has the --relabel-from checkpoint changed?)",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// The settings a checkpoint was trained with. A checkpoint written before the choice of
/// learning-rate schedule existed ran the per-step form, so it resumes with it.
pub fn config_of(path: &Path, ck: &Checkpoint) -> Result<TrainConfig> {
    let bad = |e: serde_json::Error| Error::Format {
        path: path.into(),
        msg: format!("config in checkpoint: {e}"),
    };
    let mut value: serde_json::Value =
        serde_json::from_str(ck.get(path, "config")?).map_err(bad)?;
    if let Some(obj) = value.as_object_mut() {
        obj.entry("lr_schedule")
            .or_insert_with(|| serde_json::Value::from(LrSchedule::Step.to_string()));
    }
    serde_json::from_value(value).map_err(bad)
}

/// The settings of the checkpoint file at `path`.
pub fn saved_config(path: &Path) -> Result<TrainConfig> {
    config_of(path, &Checkpoint::load(path)?)
}

/// The per-channel mean and standard deviation a checkpoint's inputs were normalised with.
pub fn normalisation_of(path: &Path, ck: &Checkpoint) -> Result<(Vec<f32>, Vec<f32>)> {
    let parse = |k: &str| -> Result<Vec<f32>> {
        serde_json::from_str(ck.get(path, k)?).map_err(|e| Error::Format {
            path: path.into(),
            msg: format!("{k}: {e}"),
        })
    };
    Ok((parse("mean")?, parse("std")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::Method;

    fn checkpoint_with(config: serde_json::Value) -> Checkpoint {
        let mut ck = Checkpoint::default();
        ck.meta.insert("config".into(), config.to_string());
        ck
    }

    #[test]
    fn a_checkpoint_from_before_the_schedule_choice_keeps_the_per_step_schedule() {
        let cfg = TrainConfig {
            method: Method::Dl,
            epochs: 9,
            ..TrainConfig::default()
        };
        let path = Path::new("ck.safetensors");
        let mut value = serde_json::to_value(&cfg).unwrap();
        // A new run stores its choice (here: none, the method's default) and gets it back.
        let back = config_of(path, &checkpoint_with(value.clone())).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.lr_schedule(), LrSchedule::Epoch);
        // An old one has no key: it ran the per-step form, and resumes with it.
        value.as_object_mut().unwrap().remove("lr_schedule");
        let old = config_of(path, &checkpoint_with(value)).unwrap();
        assert_eq!(old.lr_schedule, Some(LrSchedule::Step));
        assert_eq!(old.epochs, 9);
    }
}
