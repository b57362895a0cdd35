//! Checkpoints in safetensors format: named f32 tensors plus string metadata (epoch, step,
//! config, model description), written to a temporary file and renamed into place. Every
//! tensor and metadata field carries an MD5 checksum, verified at load, so a damaged file is
//! refused with the name of the tensor or field that changed.

use std::collections::HashMap;
use std::path::Path;

use md5::{Digest, Md5};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::report::write_atomic;
use crate::tensor::Tensor;

/// Tag stored in every checkpoint, checked on load.
pub const FORMAT: &str = "dynloss-wgpu-checkpoint-2";
/// The first format, without checksums: still read, unverified.
const FORMAT_UNCHECKED: &str = "dynloss-wgpu-checkpoint-1";
/// Metadata key of the checksum table (JSON: tensor name or `meta:KEY` -> MD5 hex).
const CHECKSUMS: &str = "checksums";

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

    /// A metadata value parsed as `T`, or an error naming the file, the field and its value.
    pub fn parse<T: std::str::FromStr>(&self, path: &Path, key: &str) -> Result<T> {
        let v = self.get(path, key)?;
        v.parse().map_err(|_| Error::Format {
            path: path.into(),
            msg: format!(
                "checkpoint metadata '{key}' is '{v}', not a valid {}",
                std::any::type_name::<T>()
            ),
        })
    }

    /// A metadata value holding JSON, parsed as `T`, or an error naming the file and field.
    pub fn json<T: serde::de::DeserializeOwned>(&self, path: &Path, key: &str) -> Result<T> {
        serde_json::from_str(self.get(path, key)?).map_err(|e| Error::Format {
            path: path.into(),
            msg: format!("checkpoint metadata '{key}': {e}"),
        })
    }

    /// The checksum of every tensor (by name) and every metadata field of `meta` (`meta:KEY`).
    fn checksums(&self, meta: &HashMap<String, String>) -> HashMap<String, String> {
        let md5 = |bytes: &[&[u8]]| {
            let mut h = Md5::new();
            for b in bytes {
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
            crate::data::fetch::hex(&h.finalize())
        };
        let mut sums = HashMap::new();
        for (name, shape, data) in &self.tensors {
            let shape: Vec<u8> = shape
                .iter()
                .flat_map(|&d| (d as u64).to_le_bytes())
                .collect();
            sums.insert(name.clone(), md5(&[&shape, bytemuck::cast_slice(data)]));
        }
        for (k, v) in meta.iter().filter(|(k, _)| *k != CHECKSUMS) {
            sums.insert(format!("meta:{k}"), md5(&[k.as_bytes(), v.as_bytes()]));
        }
        sums
    }

    /// Writes atomically: `path.tmp` then rename, so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.insert("format".into(), FORMAT.into());
        let sums = self.checksums(&meta);
        meta.insert(
            CHECKSUMS.into(),
            serde_json::to_string(&sums).expect("strings serialise"),
        );
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .map(|(n, s, d)| {
                let view = TensorView::new(Dtype::F32, s.clone(), bytemuck::cast_slice(d))
                    .expect("shape and data agree");
                (n.clone(), view)
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format {
            path: path.into(),
            msg: format!("serialising checkpoint: {e}"),
        })?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint file and verifies its checksums.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.into(),
            source: e,
        })?;
        let bad = |msg: String| Error::Format {
            path: path.into(),
            msg,
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            bad(format!(
                "not a complete safetensors file (truncated or damaged header): {e}"
            ))
        })?;
        let meta = header.metadata().clone().unwrap_or_default();
        let checked = match meta.get("format").map(String::as_str) {
            Some(FORMAT) => true,
            Some(FORMAT_UNCHECKED) => false,
            _ => {
                return Err(bad(
                    "not a dynloss-wgpu checkpoint (format tag missing or unknown)".into(),
                ));
            }
        };
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("corrupt or truncated checkpoint: {e}")))?;
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
        let ck = Checkpoint { tensors, meta };
        if checked {
            ck.verify(path)?;
        }
        ck.check_finite(path)?;
        Ok(ck)
    }

    /// Refuses a checkpoint holding NaN or infinite values (a diverged run's state, written
    /// by an older version): no evaluation or resumed run can come of it.
    fn check_finite(&self, path: &Path) -> Result<()> {
        let bad: Vec<(&str, usize)> = self
            .tensors
            .iter()
            .map(|(name, _, v)| (name.as_str(), v.iter().filter(|x| !x.is_finite()).count()))
            .filter(|(_, n)| *n > 0)
            .collect();
        match bad.first() {
            None => Ok(()),
            Some((name, n)) => Err(Error::Format {
                path: path.into(),
                msg: format!(
                    "tensor '{name}' holds {n} non-finite values ({} in {} tensors): the run had diverged; this checkpoint cannot be evaluated or resumed",
                    bad.iter().map(|(_, n)| n).sum::<usize>(),
                    bad.len()
                ),
            }),
        }
    }

    /// Compares every tensor and metadata field with the checksum written beside it.
    fn verify(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| Error::Format {
            path: path.into(),
            msg: format!("{msg}: the file is damaged; it was not used"),
        };
        let stored: HashMap<String, String> = serde_json::from_str(self.get(path, CHECKSUMS)?)
            .map_err(|_| bad("the checksum table is unreadable".into()))?;
        let actual = self.checksums(&self.meta);
        let mut names: Vec<&String> = actual.keys().chain(stored.keys()).collect();
        names.sort();
        names.dedup();
        for name in names {
            if actual.get(name) != stored.get(name) {
                let what = match name.strip_prefix("meta:") {
                    Some(k) => format!("metadata field '{k}'"),
                    None => format!("tensor '{name}'"),
                };
                return Err(bad(
                    match (actual.contains_key(name), stored.contains_key(name)) {
                        (true, true) => format!("{what} does not match its checksum"),
                        (true, false) => format!("{what} has no checksum"),
                        _ => format!("{what} is missing"),
                    },
                ));
            }
        }
        Ok(())
    }
}
