//! Checkpoints in safetensors format: named f32 tensors plus string metadata (epoch, step,
//! config, model description), written to a temporary file and renamed into place.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::report::write_atomic;
use crate::tensor::Tensor;

/// Tag stored in every checkpoint, checked on load.
pub const FORMAT: &str = "dynloss-wgpu-checkpoint-1";

/// Host copy of a checkpoint.
#[derive(Debug, Default, Clone)]
pub struct Checkpoint {
    /// Named tensors: (shape, values).
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// String metadata.
    pub meta: HashMap<String, String>,
}

impl Checkpoint {
    /// Adds GPU tensors under `prefix.name` (reads them back).
    pub fn push_tensors(&mut self, prefix: &str, names: &[String], ts: &[Tensor]) -> Result<()> {
        for (n, t) in names.iter().zip(ts) {
            self.tensors
                .push((format!("{prefix}.{n}"), t.shape().to_vec(), t.to_f32_vec()?));
        }
        Ok(())
    }

    /// Copies the stored `prefix.name` tensors into `ts` (shapes must match).
    pub fn restore(
        &self,
        path: &Path,
        prefix: &str,
        names: &[String],
        ts: &[Tensor],
    ) -> Result<()> {
        for (n, t) in names.iter().zip(ts) {
            let key = format!("{prefix}.{n}");
            let (_, shape, data) =
                self.tensors
                    .iter()
                    .find(|(k, _, _)| *k == key)
                    .ok_or_else(|| Error::Format {
                        path: path.into(),
                        msg: format!(
                            "checkpoint has no tensor '{key}' (does it belong to another model?)"
                        ),
                    })?;
            if shape.as_slice() != t.shape() {
                return Err(Error::Format {
                    path: path.into(),
                    msg: format!(
                        "tensor '{key}' has shape {shape:?}, the model needs {:?}",
                        t.shape()
                    ),
                });
            }
            t.write_f32(data)?;
        }
        Ok(())
    }

    /// A metadata value, or a clear error naming the file.
    pub fn get(&self, path: &Path, key: &str) -> Result<&str> {
        self.meta
            .get(key)
            .map(|s| s.as_str())
            .ok_or_else(|| Error::Format {
                path: path.into(),
                msg: format!("checkpoint metadata lacks '{key}'"),
            })
    }

    /// Writes atomically: `path.tmp` then rename, so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .map(|(n, s, d)| {
                let view = TensorView::new(Dtype::F32, s.clone(), bytemuck::cast_slice(d))
                    .expect("shape and data agree");
                (n.clone(), view)
            })
            .collect();
        let mut meta = self.meta.clone();
        meta.insert("format".into(), FORMAT.into());
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format {
            path: path.into(),
            msg: format!("serialising checkpoint: {e}"),
        })?;
        write_atomic(path, &bytes)
    }

    /// Reads and checks a checkpoint file.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })?;
        let bad = |msg: String| Error::Format {
            path: path.into(),
            msg,
        };
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(
                "not a dynloss-wgpu checkpoint (format tag missing)".into()
            ));
        }
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("corrupt checkpoint: {e}")))?;
        let mut tensors = Vec::new();
        for name in st.names() {
            let v = st
                .tensor(name)
                .map_err(|e| bad(format!("tensor '{name}': {e}")))?;
            if v.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor '{name}' is {:?}, expected F32",
                    v.dtype()
                )));
            }
            tensors.push((
                name.to_string(),
                v.shape().to_vec(),
                bytemuck::pod_collect_to_vec(v.data()),
            ));
        }
        Ok(Checkpoint { tensors, meta })
    }
}
