//! The model zoo: architectures described in `models/*.toml` (compiled in, so the binary
//! works anywhere) or in a user's TOML file, built for the data set's input and classes.

use serde::Deserialize;

use super::blocks::{Shortcut, add_stages, basic_block, conv, conv_bn, empty, head, preact_block};
use super::resnet::resnet_cifar;
use super::{Layer, Model};
use crate::error::{Error, Result};
use crate::tensor::pool::PoolGeom;

/// The built-in architecture files: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("resnet8", include_str!("../../models/resnet8.toml")),
    ("resnet14", include_str!("../../models/resnet14.toml")),
    ("resnet20", include_str!("../../models/resnet20.toml")),
    ("resnet32", include_str!("../../models/resnet32.toml")),
    (
        "preact_resnet18",
        include_str!("../../models/preact_resnet18.toml"),
    ),
    ("resnet10", include_str!("../../models/resnet10.toml")),
    ("vgg19_bn", include_str!("../../models/vgg19_bn.toml")),
];

/// One entry of a VGG layer list: a conv width or "M" for max pooling.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VggItem {
    /// 3x3 conv -> BN -> ReLU with this many channels.
    Conv(usize),
    /// "M": 2x2 max pool.
    Pool(String),
}

/// An architecture description (the TOML schema).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// "resnet_cifar", "preact_resnet", "resnet" or "vgg".
    pub family: String,
    /// resnet_cifar: depth 6n+2.
    pub depth: Option<usize>,
    /// preact_resnet / resnet: blocks per stage.
    pub blocks: Option<Vec<usize>>,
    /// preact_resnet / resnet: channels per stage.
    pub widths: Option<Vec<usize>>,
    /// vgg: the layer list.
    pub layers: Option<Vec<VggItem>>,
}

/// Finds a model by built-in name or TOML path; returns its name and spec.
pub fn resolve(name_or_path: &str) -> Result<(String, ModelSpec)> {
    let key = name_or_path.to_lowercase().replace(['-', '_'], "");
    if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| n.replace('_', "") == key) {
        let spec =
            toml::from_str(text).map_err(|e| Error::Config(format!("built-in {name}: {e}")))?;
        return Ok((name.to_string(), spec));
    }
    let path = std::path::Path::new(name_or_path);
    if !path.exists() {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        return Err(Error::Config(format!(
            "unknown model '{name_or_path}': not a file, and not one of {}",
            names.join(", ")
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.into(),
        source: e,
    })?;
    let spec: ModelSpec = toml::from_str(&text)
        .map_err(|e| crate::error::toml_err(path, &text, "not a model description", &e))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok((name, spec))
}

/// Builds a model from `name_or_path` for inputs [C, H, W] and `classes` classes.
pub fn build_named(name_or_path: &str, input: [usize; 3], classes: usize) -> Result<Model> {
    let (name, spec) = resolve(name_or_path)?;
    let path = std::path::Path::new(name_or_path);
    let mut m = build(&spec, input, classes).map_err(|e| match e {
        // A description the user wrote: name its file.
        Error::Config(msg) if path.is_file() => Error::Format {
            path: path.into(),
            msg,
        },
        e => e,
    })?;
    m.name = name;
    Ok(m)
}

/// The stages of a `preact_resnet` or `resnet` spec as (blocks, width, stride): every stage
/// after the first halves the resolution.
fn stage_plan(spec: &ModelSpec) -> Result<Vec<(usize, usize, usize)>> {
    let blocks = spec
        .blocks
        .clone()
        .ok_or_else(|| Error::Config(format!("{} needs `blocks`", spec.family)))?;
    let widths = spec
        .widths
        .clone()
        .ok_or_else(|| Error::Config(format!("{} needs `widths`", spec.family)))?;
    if blocks.len() != widths.len() || blocks.is_empty() || widths.contains(&0) {
        return Err(Error::Config(
            "`blocks` and `widths` must be non-empty lists of equal length".into(),
        ));
    }
    let strides = std::iter::once(1).chain(std::iter::repeat(2));
    Ok(blocks
        .into_iter()
        .zip(widths)
        .zip(strides)
        .map(|((n, w), s)| (n, w, s))
        .collect())
}

/// Builds a model from a spec.
pub fn build(spec: &ModelSpec, input: [usize; 3], classes: usize) -> Result<Model> {
    if classes < 2 || input.contains(&0) {
        return Err(Error::Config(format!(
            "cannot build a model for input {input:?} and {classes} classes"
        )));
    }
    let mut m = empty(&spec.family, input, classes);
    match spec.family.as_str() {
        "resnet_cifar" => {
            let depth = spec
                .depth
                .ok_or_else(|| Error::Config("resnet_cifar needs `depth`".into()))?;
            return resnet_cifar(depth, input, classes).ok_or_else(|| {
                Error::Config(format!(
                    "resnet_cifar depth must be 6n+2 (8, 14, 20, 32, ...), got {depth}"
                ))
            });
        }
        "preact_resnet" => {
            let plan = stage_plan(spec)?;
            let stem = conv(&mut m, "conv1", input[0], plan[0].1, 3, 1);
            m.program.push(stem);
            let cout = add_stages(&mut m, plan[0].1, &plan, preact_block);
            // As the CIFAR reference code: the last block's output goes straight to the pool.
            head(&mut m, cout, 0.01);
        }
        "resnet" => {
            let plan = stage_plan(spec)?;
            let stem = conv_bn(&mut m, ("conv1", "bn1"), input[0], plan[0].1, 7, 2, true);
            m.program.extend(stem);
            m.program.push(Layer::MaxPool {
                geom: PoolGeom {
                    k: 3,
                    stride: 2,
                    pad: 1,
                },
            });
            let cout = add_stages(&mut m, plan[0].1, &plan, |m, p, cin, cout, stride| {
                basic_block(m, p, cin, cout, stride, Shortcut::Projection)
            });
            head(&mut m, cout, 0.01);
        }
        "vgg" => {
            let layers = spec
                .layers
                .clone()
                .ok_or_else(|| Error::Config("vgg needs `layers`".into()))?;
            let mut cin = input[0];
            let (mut side_h, mut side_w) = (input[1], input[2]);
            for (i, item) in layers.iter().enumerate() {
                match item {
                    VggItem::Conv(c) => {
                        let name = format!("features.{i}");
                        let unit =
                            conv_bn(&mut m, (&name, &format!("{name}.bn")), cin, *c, 3, 1, true);
                        m.program.extend(unit);
                        cin = *c;
                    }
                    VggItem::Pool(s) if s == "M" => {
                        // Skip pools once the map is 1 pixel (small inputs such as 28x28).
                        if side_h >= 2 && side_w >= 2 {
                            m.program.push(Layer::MaxPool {
                                geom: PoolGeom {
                                    k: 2,
                                    stride: 2,
                                    pad: 0,
                                },
                            });
                            side_h /= 2;
                            side_w /= 2;
                        }
                    }
                    VggItem::Pool(s) => {
                        return Err(Error::Config(format!(
                            "vgg layer '{s}' is neither a width nor \"M\""
                        )));
                    }
                }
            }
            head(&mut m, cin, 0.01);
        }
        other => {
            return Err(Error::Config(format!(
                "unknown model family '{other}' (resnet_cifar, preact_resnet, resnet, vgg)"
            )));
        }
    }
    Ok(m)
}
