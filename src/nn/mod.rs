//! Models as small programs over explicit parameters: the forward takes the parameters as
//! `Var`s, so the same model runs with its own weights or with virtually updated ones (the
//! meta step's w - lr * grad), as PyTorch's `higher` does.

mod blocks;
pub mod init;
pub mod resnet;
pub mod zoo;

use crate::autograd::{self as ag, Var};
use crate::error::{Result, shape_err};
use crate::gpu::Gpu;
use crate::tensor::batchnorm::{BatchStats, bn_running_update};
use crate::tensor::conv::ConvGeom;
use crate::tensor::pool::PoolGeom;
use crate::tensor::{DType, Tensor};

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Kaiming-normal for ReLU networks: N(0, 2 / fan_in).
    KaimingNormal,
    /// Normal with this standard deviation.
    Normal(f32),
    /// Xavier (Glorot) normal: N(0, 2 / (fan_in + fan_out)).
    XavierNormal,
    /// Xavier uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
    XavierUniform,
    /// Every element equals this value.
    Const(f32),
}

/// One parameter tensor's name, shape and initialiser.
#[derive(Debug, Clone)]
pub struct ParamInfo {
    /// Dotted name, e.g. "stage1.block0.conv1.weight".
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Initialiser.
    pub init: Init,
}

/// One step of a model program.
#[derive(Debug, Clone)]
pub enum Layer {
    /// Convolution with weight parameter `w`.
    Conv {
        /// Index of the weight in the parameter list.
        w: usize,
        /// Stride and padding.
        geom: ConvGeom,
    },
    /// Batch norm with parameters `gamma`, `beta` and running statistics slot `stats`.
    BatchNorm {
        /// Scale parameter index.
        gamma: usize,
        /// Shift parameter index.
        beta: usize,
        /// Index into the model's running statistics.
        stats: usize,
        /// Apply ReLU after (fused).
        relu: bool,
    },
    /// ReLU.
    Relu,
    /// Residual block: relu(body(x) + shortcut(x)); an empty shortcut is the identity.
    Residual {
        /// The main path.
        body: Vec<Layer>,
        /// The shortcut path.
        shortcut: Vec<Layer>,
    },
    /// Option-A shortcut to `cout` channels (stride 2, zero channels).
    ShortcutA {
        /// Output channels.
        cout: usize,
    },
    /// Max pooling.
    MaxPool {
        /// Window, stride, padding.
        geom: PoolGeom,
    },
    /// Pre-activation block: h = relu(bn1(x)); out = conv2(relu(bn2(conv1(h)))) + s, where
    /// s = shortcut(h) when there is a shortcut conv, else x.
    PreAct {
        /// bn1 (with ReLU), conv1, bn2 (with ReLU), conv2.
        body: Vec<Layer>,
        /// Optional projection applied to relu(bn1(x)).
        shortcut: Vec<Layer>,
    },
    /// Global average pooling to [N, C].
    GlobalAvgPool,
    /// Fully connected layer x w^T + b.
    Linear {
        /// Weight index ([out, in]).
        w: usize,
        /// Bias index ([out]).
        b: usize,
    },
}

/// A model: parameter list, running-statistics count and the program.
#[derive(Debug, Clone)]
pub struct Model {
    /// Architecture name.
    pub name: String,
    /// Parameters in program order.
    pub params: Vec<ParamInfo>,
    /// Channels of each batch norm's running statistics.
    pub bn_channels: Vec<usize>,
    /// The layers.
    pub program: Vec<Layer>,
    /// Input shape [C, H, W].
    pub input: [usize; 3],
    /// Number of classes.
    pub classes: usize,
}

/// Batch-norm running statistics of a model.
pub struct RunningStats {
    /// Mean per batch norm.
    pub mean: Vec<Tensor>,
    /// Variance per batch norm.
    pub var: Vec<Tensor>,
}

/// Whether batch norm uses batch statistics (training) or running ones (evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics; collected for the running averages.
    Train,
    /// Running statistics.
    Eval,
}

/// Batch-norm epsilon (PyTorch's default).
pub const BN_EPS: f32 = 1e-5;
/// Running-statistics momentum (PyTorch's default).
pub const BN_MOMENTUM: f32 = 0.1;

impl Model {
    /// Adds a parameter, returning its index.
    pub fn add_param(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        self.params.push(ParamInfo { name, shape, init });
        self.params.len() - 1
    }

    /// Adds a batch norm over `c` channels (gamma 1, beta 0) and returns its layer.
    pub fn add_bn(&mut self, prefix: &str, c: usize, relu: bool) -> Layer {
        let gamma = self.add_param(format!("{prefix}.weight"), vec![c], Init::Const(1.0));
        let beta = self.add_param(format!("{prefix}.bias"), vec![c], Init::Const(0.0));
        self.bn_channels.push(c);
        Layer::BatchNorm {
            gamma,
            beta,
            stats: self.bn_channels.len() - 1,
            relu,
        }
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Fresh running statistics (mean 0, variance 1).
    pub fn new_running_stats(&self, gpu: &Gpu) -> RunningStats {
        RunningStats {
            mean: self
                .bn_channels
                .iter()
                .map(|&c| Tensor::zeros(gpu, &[c], DType::F32))
                .collect(),
            var: self
                .bn_channels
                .iter()
                .map(|&c| Tensor::full(gpu, &[c], 1.0))
                .collect(),
        }
    }

    /// Runs the program on x [N, C, H, W] with parameters `p`; in training mode returns the
    /// batch statistics of every batch norm (in order) for [`update_running_stats`].
    pub fn forward(
        &self,
        p: &[Var],
        x: &Var,
        mode: Mode,
        running: &RunningStats,
    ) -> Result<(Var, Vec<BatchStats>)> {
        if p.len() != self.params.len() {
            return Err(shape_err(
                "forward",
                format!(
                    "{} parameters given, model {} has {}",
                    p.len(),
                    self.name,
                    self.params.len()
                ),
            ));
        }
        let mut stats = Vec::new();
        let y = run(&self.program, p, x, mode, running, &mut stats)?;
        Ok((y, stats))
    }
}

fn run(
    layers: &[Layer],
    p: &[Var],
    x: &Var,
    mode: Mode,
    running: &RunningStats,
    stats: &mut Vec<BatchStats>,
) -> Result<Var> {
    let mut h = x.clone();
    for layer in layers {
        h = match layer {
            Layer::Conv { w, geom } => ag::conv2d(&h, &p[*w], *geom)?,
            Layer::BatchNorm {
                gamma,
                beta,
                stats: s,
                relu,
            } => match mode {
                Mode::Train => {
                    let (y, st) = ag::batch_norm(&h, &p[*gamma], &p[*beta], BN_EPS, *relu)?;
                    stats.push(st);
                    y
                }
                Mode::Eval => ag::batch_norm_eval(
                    &h,
                    &p[*gamma],
                    &p[*beta],
                    &running.mean[*s],
                    &running.var[*s],
                    BN_EPS,
                    *relu,
                )?,
            },
            Layer::Relu => ag::relu(&h)?,
            Layer::Residual { body, shortcut } => {
                let a = run(body, p, &h, mode, running, stats)?;
                let b = run(shortcut, p, &h, mode, running, stats)?;
                ag::add_relu(&a, &b)?
            }
            Layer::ShortcutA { cout } => ag::shortcut_a(&h, *cout)?,
            Layer::MaxPool { geom } => ag::max_pool(&h, *geom)?,
            Layer::PreAct { body, shortcut } => {
                let pre = run(&body[..1], p, &h, mode, running, stats)?;
                let s = if shortcut.is_empty() {
                    h.clone()
                } else {
                    run(shortcut, p, &pre, mode, running, stats)?
                };
                let y = run(&body[1..], p, &pre, mode, running, stats)?;
                ag::add(&y, &s)?
            }
            Layer::GlobalAvgPool => ag::global_avg_pool(&h)?,
            Layer::Linear { w, b } => ag::linear(&h, &p[*w], Some(&p[*b]))?,
        };
    }
    Ok(h)
}

/// Folds one training forward's batch statistics into the running averages.
pub fn update_running_stats(running: &RunningStats, batch: &[BatchStats]) -> Result<()> {
    for (i, b) in batch.iter().enumerate() {
        bn_running_update(&running.mean[i], &running.var[i], b, BN_MOMENTUM)?;
    }
    Ok(())
}
