//! What the Dynamic Loss reports each epoch: the meta net's state (label weights g, margins
//! q, meta loss), how well the corrected labels match the truth, alarms when the meta update
//! diverges, and the plots of these.

use serde::{Deserialize, Serialize};

use super::{DynamicLoss, MetaOutcome};
use crate::autograd as ag;
use crate::dynloss::ranking::Ranking;
use crate::error::{Error, Result};
use crate::train::method::EpochEnv;
use crate::train::state;

/// Margin magnitude above which the run reports that the margins are diverging.
pub const MARGIN_ALARM: f64 = 20.0;

/// Per-epoch diagnostics of the meta net, stored under `extra` in `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DlDiagnostics {
    /// True when this epoch was a warm-up epoch.
    pub warmup: bool,
    /// Mean meta loss over the epoch's meta steps (none in warm-up).
    pub meta_loss: Option<f64>,
    /// Largest |q_c|.
    pub max_abs_margin: f64,
    /// The margins q the classifier trains with (after the bound, if any; the running
    /// average with `--margin-average`).
    pub margins: Vec<f64>,
    /// With `--margin-average`: the meta net's own margins after the epoch's last meta step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_margins: Option<Vec<f64>>,
    /// Share of training samples whose corrected label argmax(y*) is the true label, percent.
    pub label_correction_acc: f64,
    /// Share whose given label is the true label, percent (the no-correction reference).
    pub given_label_acc: f64,
    /// Per class: share of samples (by given label) with g < 0.5, percent.
    pub est_noise_rate: Vec<f64>,
    /// g(r | y) for every bin r (rows) and class y (columns).
    pub g_table: Vec<Vec<f64>>,
    /// Meta-set size (0 in warm-up, which trains on the whole set).
    pub meta_set: usize,
    /// Samples the epoch trained on: the whole set in warm-up, the rest after the meta set.
    #[serde(default)]
    pub trained: usize,
    /// Share of the real step's hard pseudo-labels that equal the virtual step's, percent:
    /// each step draws its own Gumbel sample, so this is below 100 where predictions are
    /// uncertain (none in warm-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gumbel_agreement: Option<f64>,
    /// A warning when the margins or the meta loss diverge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
}

impl DynamicLoss {
    pub(super) fn diagnostics(
        &self,
        env: &EpochEnv,
        ranking: &Ranking,
        logits: &[f32],
        warmup: bool,
        outcome: &MetaOutcome,
        meta_set: usize,
    ) -> Result<DlDiagnostics> {
        let meta_loss = outcome.meta_loss;
        let data = env.data;
        let c = data.train.classes;
        let tv = self.theta_consts();
        let g = ag::no_grad(|| self.meta.label_weight_table(&tv))?.to_f32_vec()?;
        let widen = |q: Vec<f32>| q.into_iter().map(f64::from).collect::<Vec<f64>>();
        // The margins the loss adds (the generator's, with the anchor if any, or their running
        // average); the fixed ones of `--balanced-softmax` are not reported.
        let q = if self.parts().generator {
            widen(
                self.training_margins()?
                    .expect("the generator gives margins"),
            )
        } else {
            Vec::new()
        };
        let meta_margins = match self.margin_average {
            Some(_) => self.meta_margins()?.map(widen),
            None => None,
        };
        let (mut hit, mut given_hit) = (0usize, 0usize);
        let mut low = vec![0usize; c];
        for (i, (&y, &truth)) in data.train.labels.iter().zip(&data.true_labels).enumerate() {
            let w = if self.parts().corrector {
                g[ranking.bins[i] as usize * c + y as usize] as f64
            } else {
                1.0
            };
            let row = &logits[i * c..(i + 1) * c];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            let mut best = 0;
            let mut best_v = f64::NEG_INFINITY;
            for (j, &v) in row.iter().enumerate() {
                let ys =
                    (1.0 - w) * (v as f64 - m).exp() / z + if j == y as usize { w } else { 0.0 };
                if ys > best_v {
                    best_v = ys;
                    best = j;
                }
            }
            hit += (best == truth as usize) as usize;
            given_hit += (y == truth) as usize;
            low[y as usize] += (w < 0.5) as usize;
        }
        let n = data.train.len().max(1) as f64;
        let max_abs_margin = q.iter().map(|v| v.abs()).fold(0.0, f64::max);
        let best_meta = self
            .history
            .iter()
            .filter_map(|h| h.meta_loss)
            .fold(f64::INFINITY, f64::min);
        let alarm = if max_abs_margin > MARGIN_ALARM {
            Some(format!(
                "margins diverging: max |q| = {max_abs_margin:.1} (consider --margin-bound or --meta-lr-follows-classifier)"
            ))
        } else {
            meta_loss
                .filter(|&m| best_meta.is_finite() && m > 2.0 * best_meta)
                .map(|m| format!("meta loss rising: {m:.3} vs best {best_meta:.3}"))
        };
        Ok(DlDiagnostics {
            warmup,
            meta_loss,
            max_abs_margin,
            margins: q,
            meta_margins,
            label_correction_acc: 100.0 * hit as f64 / n,
            given_label_acc: 100.0 * given_hit as f64 / n,
            est_noise_rate: low
                .iter()
                .zip(&self.counts)
                .map(|(&l, &t)| {
                    if t == 0 {
                        0.0
                    } else {
                        100.0 * l as f64 / t as f64
                    }
                })
                .collect(),
            g_table: (0..self.bins)
                .map(|r| (0..c).map(|y| g[r * c + y] as f64).collect())
                .collect(),
            meta_set,
            trained: outcome.trained,
            gumbel_agreement: outcome.gumbel_agreement,
            alarm,
        })
    }

    /// Writes the label-weight, margin and label-accuracy plots of the latest epoch.
    pub(super) fn plots(&self, env: &EpochEnv) -> Result<()> {
        let dir = env.out;
        use crate::report::plot::{bar_chart, line_chart};
        let last = self.history.last().expect("called after an epoch");
        let plots = dir.join("plots");
        std::fs::create_dir_all(&plots).map_err(|e| Error::Io {
            path: plots.clone(),
            source: e,
        })?;
        let names = &env.data.train.class_names;
        let curves: Vec<(String, Vec<(f64, f64)>)> = (0..env.data.train.classes)
            .map(|y| {
                (
                    names.get(y).cloned().unwrap_or_else(|| y.to_string()),
                    last.g_table
                        .iter()
                        .enumerate()
                        .map(|(r, row)| (r as f64, row[y]))
                        .collect(),
                )
            })
            .collect();
        let refs: Vec<(&str, Vec<(f64, f64)>)> = curves
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        line_chart(
            &dir.join(state::LABEL_WEIGHTS_PLOT),
            "label weight g(r|y) per class",
            "loss-rank bin r",
            "g",
            &refs,
        )?;
        if !last.margins.is_empty() {
            let logn: Vec<f64> = self
                .counts
                .iter()
                .map(|&n| (n.max(1) as f64).ln())
                .collect();
            // Both centred: the loss is unchanged by a common shift of the margins, so only
            // the bars' differences from their mean can be compared with the log counts.
            bar_chart(
                &dir.join(state::MARGINS_PLOT),
                "centred margin q and centred log class count",
                names,
                &[
                    ("q - mean", centred(&last.margins)),
                    ("ln(count) - mean", centred(&logn)),
                ],
            )?;
        }
        let acc: Vec<(f64, f64)> = self
            .history
            .iter()
            .enumerate()
            .map(|(e, h)| ((e + 1) as f64, h.label_correction_acc))
            .collect();
        let given: Vec<(f64, f64)> = self
            .history
            .iter()
            .enumerate()
            .map(|(e, h)| ((e + 1) as f64, h.given_label_acc))
            .collect();
        line_chart(
            &dir.join(state::LABEL_ACCURACY_PLOT),
            "label-correction accuracy",
            "epoch",
            "accuracy (%)",
            &[("corrected labels", acc), ("given labels", given)],
        )
    }
}

/// `v` minus its mean.
fn centred(v: &[f64]) -> Vec<f64> {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    v.iter().map(|x| x - mean).collect()
}

#[cfg(test)]
mod tests {
    use super::centred;

    #[test]
    fn centring_removes_the_common_shift_and_keeps_differences() {
        let c = centred(&[3.0, 1.0, -1.0, 5.0]);
        assert_eq!(c, vec![1.0, -1.0, -3.0, 3.0]);
        assert!(centred(&[]).is_empty());
    }
}
