//! Which training labels are probably wrong: per-sample label-quality scores from a trained
//! classifier's probabilities on the weak view, and flags by confident learning. Where the
//! training set's true labels are known (noise injected by this program), how well the
//! scores find the changed labels.

use std::path::Path;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::report::{csv_field, write_atomic};
use crate::train::checkpoint::Checkpoint;
use crate::train::data::TrainData;
use crate::train::relabel::training_logits;
use crate::train::state;

/// What the classifier says of one training sample's given label.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleLabel {
    /// Index of the sample in the run's training set.
    pub index: usize,
    /// The given (possibly wrong) label.
    pub given: u32,
    /// The classifier's most probable class.
    pub suggested: u32,
    /// Label quality: the classifier's probability of the given label.
    pub quality: f32,
    /// Normalised margin: the given label's probability minus the largest other one
    /// (negative when another class is more probable).
    pub margin: f32,
    /// Flagged by confident learning: some other class's probability reaches that class's
    /// threshold.
    pub flagged: bool,
}

/// Row-major softmax probabilities of row-major logits.
pub fn softmax_rows(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(classes) {
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let exp: Vec<f64> = row.iter().map(|&z| (z as f64 - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        out.extend(exp.iter().map(|e| (e / sum) as f32));
    }
    out
}

/// Confident learning's per-class thresholds: for each class, the mean probability the
/// classifier gives that class over the samples labelled with it (0 for an empty class).
pub fn class_thresholds(probs: &[f32], given: &[u32], classes: usize) -> Vec<f64> {
    let mut sum = vec![0.0f64; classes];
    let mut count = vec![0usize; classes];
    for (row, &y) in probs.chunks_exact(classes).zip(given) {
        sum[y as usize] += row[y as usize] as f64;
        count[y as usize] += 1;
    }
    sum.iter()
        .zip(&count)
        .map(|(s, &n)| if n == 0 { 0.0 } else { s / n as f64 })
        .collect()
}

/// Scores every sample of row-major `probs` [N, classes] against its `given` label, most
/// suspect (lowest quality) first; ties keep the sample order.
pub fn score_labels(probs: &[f32], given: &[u32], classes: usize) -> Vec<SampleLabel> {
    let thresholds = class_thresholds(probs, given, classes);
    let mut out: Vec<SampleLabel> = probs
        .chunks_exact(classes)
        .zip(given)
        .enumerate()
        .map(|(index, (row, &y))| {
            let y = y as usize;
            let (mut best, mut other) = (0usize, f32::NEG_INFINITY);
            for (c, &p) in row.iter().enumerate() {
                if p > row[best] {
                    best = c;
                }
                if c != y && p > other {
                    other = p;
                }
            }
            let flagged = row
                .iter()
                .enumerate()
                .any(|(c, &p)| c != y && p as f64 >= thresholds[c]);
            SampleLabel {
                index,
                given: y as u32,
                suggested: best as u32,
                quality: row[y],
                margin: row[y] - other,
                flagged,
            }
        })
        .collect();
    out.sort_by(|a, b| a.quality.total_cmp(&b.quality));
    out
}

/// How well flags and a ranking find the labels that differ from the truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Labels that differ from the truth.
    pub wrong: usize,
    /// Samples flagged.
    pub flagged: usize,
    /// Share of flagged samples whose label is wrong.
    pub precision: f64,
    /// Share of wrong labels that are flagged.
    pub recall: f64,
    /// Share of wrong labels among the `wrong` lowest-quality samples.
    pub precision_at_wrong: f64,
}

/// [`Detection`] of `scored` (most suspect first) against the true labels `truth`.
pub fn detection(scored: &[SampleLabel], truth: &[u32]) -> Detection {
    let is_wrong = |s: &SampleLabel| s.given != truth[s.index];
    let wrong = scored.iter().filter(|s| is_wrong(s)).count();
    let flagged = scored.iter().filter(|s| s.flagged).count();
    let hit = scored.iter().filter(|s| s.flagged && is_wrong(s)).count();
    let top = scored[..wrong].iter().filter(|s| is_wrong(s)).count();
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Detection {
        wrong,
        flagged,
        precision: share(hit, flagged),
        recall: share(hit, wrong),
        precision_at_wrong: share(top, wrong),
    }
}

/// The label report of a checkpoint on its own training set.
pub struct LabelReport {
    /// Every sample, most suspect first.
    pub samples: Vec<SampleLabel>,
    /// Class names in class-index order.
    pub class_names: Vec<String>,
    /// Against the true labels, when the run injected its noise (so knows them).
    pub detection: Option<Detection>,
}

/// Scores the labels of the training set the checkpoint at `path` was trained on (rebuilt
/// from its saved settings; `data_dir` overrides where the files are).
pub fn label_report(gpu: &Gpu, path: &Path, data_dir: Option<&Path>) -> Result<LabelReport> {
    let ck = Checkpoint::load(path)?;
    let mut cfg = state::config_of(path, &ck)?;
    if let Some(d) = data_dir {
        cfg.data_dir = Some(d.to_path_buf());
    }
    let data = TrainData::load(&cfg)?;
    let train = &data.train;
    let probs = softmax_rows(&training_logits(gpu, path, &ck, &data)?, train.classes);
    let samples = score_labels(&probs, &train.labels, train.classes);
    let detection = (cfg.noise > 0.0).then(|| detection(&samples, &data.true_labels));
    Ok(LabelReport {
        samples,
        class_names: train.class_names.clone(),
        detection,
    })
}

/// The report as CSV, one row per sample, most suspect first.
pub fn to_csv(r: &LabelReport) -> String {
    let mut s = String::from("sample,given,suggested,quality,margin,flagged\n");
    for x in &r.samples {
        s.push_str(&format!(
            "{},{},{},{:.6},{:.6},{}\n",
            x.index,
            csv_field(&r.class_names[x.given as usize]),
            csv_field(&r.class_names[x.suggested as usize]),
            x.quality,
            x.margin,
            x.flagged as u8
        ));
    }
    s
}

/// Writes [`to_csv`] to `path` atomically.
pub fn write_csv(path: &Path, r: &LabelReport) -> Result<()> {
    write_atomic(path, to_csv(r).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four samples, three classes. Class 0's labelled samples get p0 = 0.8 and 0.6 (threshold
    /// 0.7), class 1's 0.5 (threshold 0.5), class 2's 0.15 (threshold 0.15).
    const PROBS: [f32; 12] = [
        0.8, 0.1, 0.1, // given 0: fine
        0.6, 0.3, 0.1, // given 0: p1 0.3 < 0.5, p2 0.1 < 0.2: not flagged
        0.1, 0.5, 0.4, // given 1: p2 0.4 >= 0.15: flagged
        0.75, 0.1, 0.15, // given 2: p0 0.75 >= 0.7: flagged, suggests 0
    ];
    const GIVEN: [u32; 4] = [0, 0, 1, 2];

    #[test]
    fn thresholds_scores_and_flags_follow_confident_learning() {
        let t = class_thresholds(&PROBS, &GIVEN, 3);
        assert!((t[0] - 0.7).abs() < 1e-6 && (t[1] - 0.5).abs() < 1e-6);
        assert!((t[2] - 0.15).abs() < 1e-6);
        let s = score_labels(&PROBS, &GIVEN, 3);
        // Most suspect first: quality 0.15 (sample 3), 0.5, 0.6, 0.8.
        assert_eq!(s.iter().map(|x| x.index).collect::<Vec<_>>(), [3, 2, 1, 0]);
        assert_eq!(s[0].suggested, 0);
        assert!((s[0].margin - (0.15 - 0.75)).abs() < 1e-6);
        assert!((s[1].margin - (0.5 - 0.4)).abs() < 1e-6);
        let flags: Vec<(usize, bool)> = s.iter().map(|x| (x.index, x.flagged)).collect();
        assert_eq!(flags, [(3, true), (2, true), (1, false), (0, false)]);
    }

    #[test]
    fn detection_counts_against_the_truth() {
        let s = score_labels(&PROBS, &GIVEN, 3);
        // Samples 3 and 1 are wrong: flagged {3, 2} finds one of them; the two lowest-quality
        // samples (3, 2) hold one.
        let d = detection(&s, &[0, 1, 1, 0]);
        assert_eq!((d.wrong, d.flagged), (2, 2));
        assert!((d.precision - 0.5).abs() < 1e-12 && (d.recall - 0.5).abs() < 1e-12);
        assert!((d.precision_at_wrong - 0.5).abs() < 1e-12);
        let p = softmax_rows(&[0.0, 0.0, 2.0f32.ln()], 3);
        assert!((p[2] - 0.5).abs() < 1e-6 && (p[0] - 0.25).abs() < 1e-6);
    }
}
