//! Relabelling the training set with a trained classifier: each class (by given label) is
//! ranked by the classifier's loss on the given label, and its highest-loss share takes the
//! classifier's prediction. `audit` measures what this would gain; `--relabel-from` trains on
//! the result.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::Gpu;

use super::checkpoint::Checkpoint;
use super::config::TrainConfig;
use super::data::TrainData;
use super::evaluate::classifier_for;
use super::state;

/// The argmax class of each row of row-major `logits` [N, classes].
pub fn predictions(logits: &[f32], classes: usize) -> Vec<u32> {
    logits.chunks(classes).map(argmax).collect()
}

/// The samples of each class (by `given` label) sorted by the cross-entropy of their given
/// label under `logits`, ascending; ties by index.
pub fn ranked_by_loss(logits: &[f32], given: &[u32], classes: usize) -> Vec<Vec<usize>> {
    assert_eq!(
        logits.len(),
        given.len() * classes,
        "logits are [N, classes]"
    );
    let loss: Vec<f64> = given
        .iter()
        .enumerate()
        .map(|(i, &y)| cross_entropy(&logits[i * classes..(i + 1) * classes], y))
        .collect();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &y) in given.iter().enumerate() {
        by_class[y as usize].push(i);
    }
    for members in &mut by_class {
        members.sort_by(|&a, &b| loss[a].total_cmp(&loss[b]).then(a.cmp(&b)));
    }
    by_class
}

/// `given` with the highest-loss `percent` of each class (`by_class`, as
/// [`ranked_by_loss`] orders it; rounded to whole samples) replaced by `predicted`.
pub fn relabel_top(
    by_class: &[Vec<usize>],
    predicted: &[u32],
    given: &[u32],
    percent: f64,
) -> Vec<u32> {
    let mut labels = given.to_vec();
    for members in by_class {
        let top = ((members.len() as f64 * percent / 100.0).round() as usize).min(members.len());
        for &i in &members[members.len() - top..] {
            labels[i] = predicted[i];
        }
    }
    labels
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best as u32
}

/// -log softmax(row)[y], in f64.
fn cross_entropy(row: &[f32], y: u32) -> f64 {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
    m + z.ln() - row[y as usize] as f64
}

/// The logits [N, classes] of the classifier in the checkpoint `ck` (read from `path`) on
/// `data`'s training set: weak view, evaluation mode.
pub fn training_logits(
    gpu: &Gpu,
    path: &Path,
    ck: &Checkpoint,
    data: &TrainData,
) -> Result<Vec<f32>> {
    let train = &data.train;
    let clf = classifier_for(gpu, path, ck, train)?;
    let n = train.len();
    clf.predict(data.predict_loader(train, (0..n).collect())?)
}

/// What `--relabel-from` changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Relabelled {
    /// Labels changed.
    pub changed: usize,
    /// Share of training labels that are right before, percent.
    pub right_before: f64,
    /// Share right after, percent.
    pub right_after: f64,
}

/// With `cfg.relabel_from` set: replaces the labels of the highest-loss `cfg.relabel_top`
/// percent of each class of `data` by the predictions of that checkpoint's classifier, which
/// must have been trained on the same data set, long tail, noise and seed.
pub fn relabel_from_checkpoint(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &mut TrainData,
) -> Result<Option<Relabelled>> {
    let Some(path) = &cfg.relabel_from else {
        return Ok(None);
    };
    let flag = format!("--relabel-from {}", path.display());
    let ck = Checkpoint::load(path)?;
    let saved = state::config_of(path, &ck)?;
    let data_of = |c: &TrainConfig| {
        vec![
            ("--dataset", c.dataset.to_string()),
            ("--imbalance", c.imbalance.to_string()),
            ("--noise", c.noise.to_string()),
            ("--noise-type", c.noise_type.to_string()),
            ("--seed", c.seed.to_string()),
            ("--image-size", format!("{:?}", c.image_size)),
            ("--train-limit", format!("{:?}", c.train_limit)),
        ]
    };
    for ((key, theirs), (_, ours)) in data_of(&saved).into_iter().zip(data_of(cfg)) {
        if theirs != ours {
            return Err(Error::Config(format!(
                "{flag}: its classifier was trained on other data ({key} {theirs}, this run {ours})"
            )));
        }
    }
    let logits = training_logits(gpu, path, &ck, data)?;
    let train = &data.train;
    let given = train.labels.clone();
    let by_class = ranked_by_loss(&logits, &given, train.classes);
    let labels = relabel_top(
        &by_class,
        &predictions(&logits, train.classes),
        &given,
        cfg.relabel_top,
    );
    let right = |l: &[u32]| {
        let hits = l
            .iter()
            .zip(&data.true_labels)
            .filter(|(a, b)| a == b)
            .count();
        100.0 * hits as f64 / l.len().max(1) as f64
    };
    let report = Relabelled {
        changed: labels.iter().zip(&given).filter(|(a, b)| a != b).count(),
        right_before: right(&given),
        right_after: right(&labels),
    };
    data.noise_rate = 1.0 - report.right_after / 100.0;
    std::sync::Arc::make_mut(&mut data.train).labels = labels;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_the_formula() {
        let row = [1.0f32, 2.0, 0.5];
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        assert!((cross_entropy(&row, 1) - (z.ln() - 2.0)).abs() < 1e-12);
        assert_eq!(argmax(&row), 1);
    }

    #[test]
    fn the_highest_loss_share_of_each_class_takes_the_prediction() {
        // Class 0: samples 0-3 with losses rising 0 < 1 < 2 < 3 (logit of class 0 falling);
        // class 1: samples 4-5. Every sample predicts the other class.
        let logits = [
            0.0, 1.0, // 0
            0.0, 2.0, // 1
            0.0, 3.0, // 2
            0.0, 4.0, // 3
            5.0, 0.0, // 4: loss 5 for label 1
            1.0, 0.0, // 5: loss 1
        ];
        let given = [0, 0, 0, 0, 1, 1];
        let by_class = ranked_by_loss(&logits, &given, 2);
        assert_eq!(by_class, vec![vec![0, 1, 2, 3], vec![5, 4]]);
        let predicted = predictions(&logits, 2);
        assert_eq!(predicted, vec![1, 1, 1, 1, 0, 0]);
        // 50%: two of class 0 (the highest losses, 2 and 3), one of class 1 (sample 4).
        assert_eq!(
            relabel_top(&by_class, &predicted, &given, 50.0),
            vec![0, 0, 1, 1, 0, 1]
        );
        // 25% of 4 is 1, of 2 rounds to 1 (0.5 rounds away from zero).
        assert_eq!(
            relabel_top(&by_class, &predicted, &given, 25.0),
            vec![0, 0, 0, 1, 0, 1]
        );
        assert_eq!(
            relabel_top(&by_class, &predicted, &given, 0.0),
            given.to_vec()
        );
        assert_eq!(relabel_top(&by_class, &predicted, &given, 100.0), predicted);
    }
}
