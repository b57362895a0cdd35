//! Label audit of a checkpoint on the noisy training set it was trained on: per class and
//! loss band, how many given labels are right and how many of the classifier's predictions
//! are, and how right the labels would be if the highest-loss samples of every class took the
//! prediction instead. This is what a label corrector can gain from a classifier of that
//! strength; it uses the true labels, which training never sees.

use std::path::Path;

use crate::dynloss::ranking::bin_of;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

use super::checkpoint::Checkpoint;
use super::data::TrainData;
use super::relabel::{predictions, ranked_by_loss, relabel_top, training_logits};
use super::state;

/// Shares of the highest-loss samples per class that [`audit_checkpoint`] relabels, percent.
pub const RELABEL_PERCENTS: [f64; 7] = [1.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0];

/// One loss band of one class (by given label).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Samples in the band.
    pub samples: usize,
    /// Of those, how many given labels are the true label.
    pub given_right: usize,
    /// Of those, how many predictions (argmax of the logits) are the true label.
    pub predicted_right: usize,
}

/// The outcome of relabelling the highest-loss share of every class with the prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Relabel {
    /// The share of each class relabelled, percent.
    pub percent: f64,
    /// Samples whose label the relabelling changes (prediction differs from the given label).
    pub changed: usize,
    /// Of the changed samples, how many given labels were right.
    pub changed_right_before: usize,
    /// Of the changed samples, how many predictions are right.
    pub changed_right_after: usize,
    /// Labels right over the whole set after relabelling.
    pub labels_right: usize,
}

/// The audit of one classifier's logits against the given and the true labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelAudit {
    /// Training samples.
    pub samples: usize,
    /// Given labels that are right.
    pub given_right: usize,
    /// Predictions that are right.
    pub predicted_right: usize,
    /// Per class (by given label), its loss bands, lowest loss first.
    pub bands: Vec<Vec<Band>>,
    /// One line per relabelled share.
    pub relabel: Vec<Relabel>,
}

/// Audits row-major `logits` [N, classes] against the `given` and `truth` labels: each class
/// (by given label) is sorted by the cross-entropy of its given label, ascending (ties by
/// index), and cut into `bands` bands as the Dynamic Loss cuts rank bins.
pub fn audit_labels(
    logits: &[f32],
    given: &[u32],
    truth: &[u32],
    classes: usize,
    bands: usize,
    percents: &[f64],
) -> LabelAudit {
    let n = given.len();
    assert_eq!(truth.len(), n, "one true label per sample");
    let predicted = predictions(logits, classes);
    let by_class = ranked_by_loss(logits, given, classes);
    let empty = Band {
        samples: 0,
        given_right: 0,
        predicted_right: 0,
    };
    let band_table = by_class
        .iter()
        .map(|members| {
            let mut out = vec![empty.clone(); bands];
            for (k, &i) in members.iter().enumerate() {
                let b = &mut out[bin_of(k, members.len(), bands) as usize];
                b.samples += 1;
                b.given_right += (given[i] == truth[i]) as usize;
                b.predicted_right += (predicted[i] == truth[i]) as usize;
            }
            out
        })
        .collect();
    let given_right = (0..n).filter(|&i| given[i] == truth[i]).count();
    let relabel = percents
        .iter()
        .map(|&percent| {
            let labels = relabel_top(&by_class, &predicted, given, percent);
            let mut line = Relabel {
                percent,
                changed: 0,
                changed_right_before: 0,
                changed_right_after: 0,
                labels_right: 0,
            };
            for i in 0..n {
                line.labels_right += (labels[i] == truth[i]) as usize;
                if labels[i] != given[i] {
                    line.changed += 1;
                    line.changed_right_before += (given[i] == truth[i]) as usize;
                    line.changed_right_after += (labels[i] == truth[i]) as usize;
                }
            }
            line
        })
        .collect();
    LabelAudit {
        samples: n,
        given_right,
        predicted_right: (0..n).filter(|&i| predicted[i] == truth[i]).count(),
        bands: band_table,
        relabel,
    }
}

/// Audits the checkpoint at `path` on the training set its own settings build (`data_dir`
/// overrides where the data set's files are), with `bands` loss bands per class.
pub fn audit_checkpoint(
    gpu: &Gpu,
    path: &Path,
    data_dir: Option<&Path>,
    bands: usize,
) -> Result<(LabelAudit, Vec<String>)> {
    if !(1..=1000).contains(&bands) {
        return Err(Error::Config(format!(
            "--bands {bands}: expected 1 to 1000"
        )));
    }
    let ck = Checkpoint::load(path)?;
    let mut cfg = state::config_of(path, &ck)?;
    if let Some(d) = data_dir {
        cfg.data_dir = Some(d.to_path_buf());
    }
    let data = TrainData::load(&cfg)?;
    let logits = training_logits(gpu, path, &ck, &data)?;
    let train = &data.train;
    let audit = audit_labels(
        &logits,
        &train.labels,
        &data.true_labels,
        train.classes,
        bands,
        &RELABEL_PERCENTS,
    );
    Ok((audit, train.class_names.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes, four samples each; logits chosen so the losses order is known.
    #[test]
    fn bands_and_relabelling_on_known_logits() {
        // Given label 0 for samples 0-3, 1 for 4-7. True labels: sample 3 is really 1,
        // sample 7 really 0. Logits: the model predicts the truth except for sample 2.
        let logits = [
            3.0, 0.0, // 0: predicts 0, low loss for label 0
            2.0, 0.0, // 1: predicts 0
            0.0, 1.0, // 2: predicts 1 (wrong), higher loss for label 0
            0.0, 4.0, // 3: predicts 1 (right), highest loss for label 0
            0.0, 3.0, // 4: predicts 1
            0.0, 2.0, // 5: predicts 1
            0.0, 1.5, // 6: predicts 1
            5.0, 0.0, // 7: predicts 0 (right), highest loss for label 1
        ];
        let given = [0, 0, 0, 0, 1, 1, 1, 1];
        let truth = [0, 0, 0, 1, 1, 1, 1, 0];
        let a = audit_labels(&logits, &given, &truth, 2, 2, &[0.0, 25.0, 50.0]);
        assert_eq!(a.samples, 8);
        assert_eq!(a.given_right, 6);
        assert_eq!(a.predicted_right, 7);
        // Class 0 by loss: 0, 1 | 2, 3 (bin_of(k, 4, 2) = 0, 0, 0, 1 for k = 0..3).
        let band = |s, g, p| Band {
            samples: s,
            given_right: g,
            predicted_right: p,
        };
        assert_eq!(a.bands[0], vec![band(3, 3, 2), band(1, 0, 1)]);
        assert_eq!(a.bands[1], vec![band(3, 3, 3), band(1, 0, 1)]);
        // 0%: nothing changes. 25%: one per class, samples 3 and 7, both fixed.
        assert_eq!(a.relabel[0].changed, 0);
        assert_eq!(a.relabel[0].labels_right, 6);
        assert_eq!(
            a.relabel[1],
            Relabel {
                percent: 25.0,
                changed: 2,
                changed_right_before: 0,
                changed_right_after: 2,
                labels_right: 8,
            }
        );
        // 50%: sample 2 joins and is broken (right given label, wrong prediction); sample 6
        // agrees with its label and is unchanged.
        assert_eq!(
            a.relabel[2],
            Relabel {
                percent: 50.0,
                changed: 3,
                changed_right_before: 1,
                changed_right_after: 2,
                labels_right: 7,
            }
        );
    }
}
