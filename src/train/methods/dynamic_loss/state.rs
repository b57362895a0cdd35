//! The Dynamic Loss's state in a checkpoint: the meta net and its Adam moments as tensors
//! (`meta.*`, `adam_m.*`, `adam_v.*`), everything else as one JSON record (`dl_state`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DlDiagnostics, DynamicLoss};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::train::checkpoint::Checkpoint;

/// Metadata key of [`SavedState`].
const KEY: &str = "dl_state";

/// What a checkpoint keeps of the method besides tensors.
#[derive(Serialize, Deserialize)]
struct SavedState {
    /// Adam's step count of each meta-net parameter (each counts its own, as PyTorch's).
    adam_steps: Vec<u32>,
    /// The running average of the margins (`--margin-average`), once the first meta step
    /// started it.
    margin_average: Option<Vec<f32>>,
    /// The diagnostics of every epoch so far.
    history: Vec<DlDiagnostics>,
}

impl SavedState {
    /// The record of a checkpoint written before it was one: separate fields, and before that
    /// one Adam step count shared by all parameters.
    fn legacy(path: &Path, ck: &Checkpoint, params: usize) -> Result<SavedState> {
        Ok(SavedState {
            adam_steps: match ck.meta.get("adam_steps") {
                Some(_) => ck.json(path, "adam_steps")?,
                None => vec![ck.parse(path, "adam_step")?; params],
            },
            margin_average: match ck.meta.get("margin_average") {
                Some(_) => Some(ck.json(path, "margin_average")?),
                None => None,
            },
            history: ck.json(path, "dl_history")?,
        })
    }
}

impl DynamicLoss {
    /// Every state tensor with its checkpoint name.
    pub(super) fn named_state(&self) -> Vec<(String, &Tensor)> {
        let names = self.names();
        let mut out = Vec::new();
        for (prefix, ts) in [
            ("meta", &self.theta),
            ("adam_m", &self.adam.m),
            ("adam_v", &self.adam.v),
        ] {
            out.extend(
                names
                    .iter()
                    .zip(ts)
                    .map(|(n, t)| (format!("{prefix}.{n}"), t)),
            );
        }
        if let Some(avg) = &self.margin_average {
            out.push(("margin_average".into(), avg));
        }
        out
    }

    /// Adds the meta net, its optimizer and the history to `ck`.
    pub(super) fn save_state(&self, ck: &mut Checkpoint) -> Result<()> {
        let names = self.names();
        ck.push_tensors("meta", &names, &self.theta)?;
        ck.push_tensors("adam_m", &names, &self.adam.m)?;
        ck.push_tensors("adam_v", &names, &self.adam.v)?;
        let state = SavedState {
            adam_steps: self.adam.steps.clone(),
            margin_average: match &self.margin_average {
                Some(avg) => Some(avg.to_f32_vec()?),
                None => None,
            },
            history: self.history.clone(),
        };
        ck.meta.insert(
            KEY.into(),
            serde_json::to_string(&state).expect("state serialises"),
        );
        Ok(())
    }

    /// Restores what [`Self::save_state`] wrote (or an older checkpoint's form of it).
    pub(super) fn restore_state(&mut self, path: &Path, ck: &Checkpoint) -> Result<()> {
        let names = self.names();
        ck.restore(path, "meta", &names, &self.theta)?;
        ck.restore(path, "adam_m", &names, &self.adam.m)?;
        ck.restore(path, "adam_v", &names, &self.adam.v)?;
        let state: SavedState = match ck.meta.get(KEY) {
            Some(_) => ck.json(path, KEY)?,
            None => SavedState::legacy(path, ck, names.len())?,
        };
        let bad = |msg: String| Error::Format {
            path: path.into(),
            msg,
        };
        if state.adam_steps.len() != names.len() {
            return Err(bad(format!(
                "the Dynamic Loss state has {} Adam step counts for {} meta-net parameters",
                state.adam_steps.len(),
                names.len()
            )));
        }
        self.margin_average = match state.margin_average {
            Some(avg) if avg.len() != self.counts.len() => {
                return Err(bad(format!(
                    "the Dynamic Loss state has {} averaged margins for {} classes",
                    avg.len(),
                    self.counts.len()
                )));
            }
            Some(avg) => Some(Tensor::from_f32(self.theta[0].gpu(), &[avg.len()], &avg)?),
            None => None,
        };
        self.adam.steps = state.adam_steps;
        self.history = state.history;
        Ok(())
    }
}
