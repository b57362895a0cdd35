//! Differentiable ops: each forward beside its backward rule. Backward rules use only `Var`
//! ops, so they are recorded (and differentiable) when the engine runs them with grad mode on.

use super::Var;
use crate::error::{Result, shape_err};
use crate::tensor::batchnorm::{BatchStats, batch_stats, bn_apply, bn_backward, bn_normalize};
use crate::tensor::conv::{self, ConvGeom};
use crate::tensor::elementwise::{self as ew, Binary, Unary};
use crate::tensor::pool::PoolGeom;
use crate::tensor::{DType, Tensor, index, matmul as mm, pool, reduce, softmax as sm};

/// The op that produced a node, holding what its backward rule needs.
pub(super) enum Op {
    Leaf,
    Matmul {
        a: Var,
        b: Var,
        ta: bool,
        tb: bool,
    },
    Conv {
        x: Var,
        w: Var,
        g: ConvGeom,
    },
    ConvInputGrad {
        dy: Var,
        w: Var,
        g: ConvGeom,
    },
    ConvWeightGrad {
        x: Var,
        dy: Var,
        g: ConvGeom,
    },
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    Affine {
        x: Var,
        alpha: f32,
    },
    Map {
        x: Var,
        op: Unary,
    },
    ReluGrad {
        dy: Var,
        x: Var,
    },
    Sum {
        x: Var,
        axes: Vec<usize>,
    },
    BroadcastTo {
        x: Var,
    },
    Reshape {
        x: Var,
    },
    Gap {
        x: Var,
    },
    GapBackward {
        dy: Var,
    },
    ShortcutA {
        x: Var,
    },
    ShortcutABackward {
        dy: Var,
    },
    Pick {
        x: Var,
        labels: Tensor,
    },
    Unpick {
        g: Var,
        labels: Tensor,
    },
    LogSoftmax {
        x: Var,
    },
    Softmax {
        x: Var,
    },
    SoftCe {
        z: Var,
        q: Option<Var>,
        t: Var,
    },
    BatchNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        stats: BatchStats,
        eps: f32,
        relu: bool,
    },
    BnInputGrad {
        x: Var,
        gamma: Var,
        g: Var,
        stats: BatchStats,
        eps: f32,
    },
    BnGammaGrad {
        x: Var,
        g: Var,
        stats: BatchStats,
        eps: f32,
    },
    BnNormalize {
        x: Var,
        stats: BatchStats,
        eps: f32,
    },
    AddRelu(Var, Var),
    MaxPool {
        x: Var,
        arg: Tensor,
        g: PoolGeom,
    },
    MaxPoolBackward {
        dy: Var,
        arg: Tensor,
        g: PoolGeom,
    },
    MaxPoolSelect {
        x: Var,
        arg: Tensor,
        g: PoolGeom,
    },
}

impl Op {
    /// The op's inputs that can carry gradients.
    pub(super) fn parents(&self) -> Vec<&Var> {
        use Op::*;
        match self {
            Leaf => vec![],
            Matmul { a, b, .. } | Add(a, b) | Sub(a, b) | Mul(a, b) | AddRelu(a, b) => vec![a, b],
            Conv { x, w, .. } => vec![x, w],
            ConvInputGrad { dy, w, .. } => vec![dy, w],
            ConvWeightGrad { x, dy, .. } => vec![x, dy],
            Affine { x, .. }
            | Map { x, .. }
            | Sum { x, .. }
            | BroadcastTo { x }
            | Reshape { x } => {
                vec![x]
            }
            ReluGrad { dy, x } => vec![dy, x],
            Gap { x } | ShortcutA { x } | Pick { x, .. } | LogSoftmax { x } | Softmax { x } => {
                vec![x]
            }
            GapBackward { dy } | ShortcutABackward { dy } => vec![dy],
            Unpick { g, .. } => vec![g],
            SoftCe { z, q, t } => {
                let mut v = vec![z, t];
                if let Some(q) = q {
                    v.push(q);
                }
                v
            }
            BatchNorm { x, gamma, beta, .. } => vec![x, gamma, beta],
            BnInputGrad { x, gamma, g, .. } => vec![x, gamma, g],
            BnGammaGrad { x, g, .. } => vec![x, g],
            BnNormalize { x, .. } => vec![x],
            MaxPool { x, .. } | MaxPoolSelect { x, .. } => vec![x],
            MaxPoolBackward { dy, .. } => vec![dy],
        }
    }

    /// A short name for debugging.
    pub(super) fn name(&self) -> &'static str {
        use Op::*;
        match self {
            Leaf => "leaf",
            Matmul { .. } => "matmul",
            Conv { .. } => "conv2d",
            ConvInputGrad { .. } => "conv2d_input_grad",
            ConvWeightGrad { .. } => "conv2d_weight_grad",
            Add(..) => "add",
            Sub(..) => "sub",
            Mul(..) => "mul",
            Affine { .. } => "affine",
            Map { .. } => "map",
            ReluGrad { .. } => "relu_grad",
            Sum { .. } => "sum",
            BroadcastTo { .. } => "broadcast_to",
            Reshape { .. } => "reshape",
            Gap { .. } => "global_avg_pool",
            GapBackward { .. } => "global_avg_pool_backward",
            ShortcutA { .. } => "shortcut_a",
            ShortcutABackward { .. } => "shortcut_a_backward",
            Pick { .. } => "pick",
            Unpick { .. } => "unpick",
            LogSoftmax { .. } => "log_softmax",
            Softmax { .. } => "softmax",
            SoftCe { .. } => "soft_cross_entropy",
            BatchNorm { .. } => "batch_norm",
            BnInputGrad { .. } => "batch_norm_input_grad",
            BnGammaGrad { .. } => "batch_norm_gamma_grad",
            BnNormalize { .. } => "batch_norm_normalize",
            AddRelu(..) => "add_relu",
            MaxPool { .. } => "max_pool",
            MaxPoolBackward { .. } => "max_pool_backward",
            MaxPoolSelect { .. } => "max_pool_select",
        }
    }
}

// ---------------------------------------------------------------- forward ops

/// op(a) @ op(b) for 2-D variables (see [`crate::tensor::matmul::matmul`]).
pub fn matmul(a: &Var, b: &Var, ta: bool, tb: bool) -> Result<Var> {
    let v = mm::matmul(a.value(), b.value(), ta, tb)?;
    Ok(Var::from_op(
        v,
        Op::Matmul {
            a: a.clone(),
            b: b.clone(),
            ta,
            tb,
        },
    ))
}

/// x @ w^T + b for x [B, in], w [out, in], b [out].
pub fn linear(x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
    let y = matmul(x, w, false, true)?;
    match b {
        Some(b) => add(&y, b),
        None => Ok(y),
    }
}

/// 2-D convolution of x [N,Ci,H,W] with w [Co,Ci,KH,KW].
pub fn conv2d(x: &Var, w: &Var, g: ConvGeom) -> Result<Var> {
    let v = conv::conv2d(x.value(), w.value(), g)?;
    Ok(Var::from_op(
        v,
        Op::Conv {
            x: x.clone(),
            w: w.clone(),
            g,
        },
    ))
}

/// The input gradient of a convolution, as a differentiable op (a transposed convolution).
pub fn conv2d_input_grad(dy: &Var, w: &Var, hw: (usize, usize), g: ConvGeom) -> Result<Var> {
    let v = conv::conv2d_input_grad(dy.value(), w.value(), hw, g)?;
    Ok(Var::from_op(
        v,
        Op::ConvInputGrad {
            dy: dy.clone(),
            w: w.clone(),
            g,
        },
    ))
}

/// The weight gradient of a convolution, as a differentiable op.
pub fn conv2d_weight_grad(x: &Var, dy: &Var, khw: (usize, usize), g: ConvGeom) -> Result<Var> {
    let v = conv::conv2d_weight_grad(x.value(), dy.value(), khw, g)?;
    Ok(Var::from_op(
        v,
        Op::ConvWeightGrad {
            x: x.clone(),
            dy: dy.clone(),
            g,
        },
    ))
}

/// a + b with broadcasting.
pub fn add(a: &Var, b: &Var) -> Result<Var> {
    let v = ew::add(a.value(), b.value())?;
    Ok(Var::from_op(v, Op::Add(a.clone(), b.clone())))
}

/// relu(a + b) in one pass (a residual join).
pub fn add_relu(a: &Var, b: &Var) -> Result<Var> {
    let v = ew::binary(a.value(), b.value(), Binary::AddRelu)?;
    Ok(Var::from_op(v, Op::AddRelu(a.clone(), b.clone())))
}

/// a - b with broadcasting.
pub fn sub(a: &Var, b: &Var) -> Result<Var> {
    let v = ew::sub(a.value(), b.value())?;
    Ok(Var::from_op(v, Op::Sub(a.clone(), b.clone())))
}

/// a * b with broadcasting.
pub fn mul(a: &Var, b: &Var) -> Result<Var> {
    let v = ew::mul(a.value(), b.value())?;
    Ok(Var::from_op(v, Op::Mul(a.clone(), b.clone())))
}

/// alpha * x + beta.
pub fn affine(x: &Var, alpha: f32, beta: f32) -> Result<Var> {
    let v = ew::affine(x.value(), alpha, beta)?;
    Ok(Var::from_op(
        v,
        Op::Affine {
            x: x.clone(),
            alpha,
        },
    ))
}

/// alpha * x.
pub fn scale(x: &Var, alpha: f32) -> Result<Var> {
    affine(x, alpha, 0.0)
}

/// -x.
pub fn neg(x: &Var) -> Result<Var> {
    affine(x, -1.0, 0.0)
}

fn unary(x: &Var, op: Unary) -> Result<Var> {
    let v = ew::map(x.value(), op)?;
    Ok(Var::from_op(v, Op::Map { x: x.clone(), op }))
}

/// max(x, 0).
pub fn relu(x: &Var) -> Result<Var> {
    unary(x, Unary::Relu)
}

/// The logistic function.
pub fn sigmoid(x: &Var) -> Result<Var> {
    unary(x, Unary::Sigmoid)
}

/// e^x.
pub fn exp(x: &Var) -> Result<Var> {
    unary(x, Unary::Exp)
}

/// ln x.
pub fn log(x: &Var) -> Result<Var> {
    unary(x, Unary::Log)
}

/// sqrt x.
pub fn sqrt(x: &Var) -> Result<Var> {
    unary(x, Unary::Sqrt)
}

/// 1 / x.
pub fn recip(x: &Var) -> Result<Var> {
    unary(x, Unary::Recip)
}

/// x^2.
pub fn square(x: &Var) -> Result<Var> {
    unary(x, Unary::Square)
}

/// dy * (x > 0): the ReLU backward as a differentiable op (linear in dy, flat in x).
pub fn relu_grad(dy: &Var, x: &Var) -> Result<Var> {
    let v = ew::binary(dy.value(), x.value(), Binary::ReluGrad)?;
    Ok(Var::from_op(
        v,
        Op::ReluGrad {
            dy: dy.clone(),
            x: x.clone(),
        },
    ))
}

/// Sum over `axes` (removed from the shape).
pub fn sum_axes(x: &Var, axes: &[usize]) -> Result<Var> {
    let v = reduce::sum_axes(x.value(), axes)?;
    Ok(Var::from_op(
        v,
        Op::Sum {
            x: x.clone(),
            axes: axes.to_vec(),
        },
    ))
}

/// Mean over `axes`.
pub fn mean_axes(x: &Var, axes: &[usize]) -> Result<Var> {
    let count: usize = axes
        .iter()
        .map(|&a| x.shape().get(a).copied().unwrap_or(1))
        .product();
    scale(&sum_axes(x, axes)?, 1.0 / count.max(1) as f32)
}

/// Sum of every element (shape []).
pub fn sum_all(x: &Var) -> Result<Var> {
    let axes: Vec<usize> = (0..x.shape().len()).collect();
    sum_axes(x, &axes)
}

/// Mean of every element (shape []).
pub fn mean_all(x: &Var) -> Result<Var> {
    let axes: Vec<usize> = (0..x.shape().len()).collect();
    mean_axes(x, &axes)
}

/// Expands x to `shape` by broadcasting.
pub fn broadcast_to(x: &Var, shape: &[usize]) -> Result<Var> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let v = ew::broadcast_to(x.value(), shape)?;
    Ok(Var::from_op(v, Op::BroadcastTo { x: x.clone() }))
}

/// The same data under another shape.
pub fn reshape(x: &Var, shape: &[usize]) -> Result<Var> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let v = x.value().reshape(shape)?;
    Ok(Var::from_op(v, Op::Reshape { x: x.clone() }))
}

/// Sums `g` down to `shape` (the adjoint of broadcasting to g's shape).
pub fn sum_to(g: &Var, shape: &[usize]) -> Result<Var> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let r = g.shape().len();
    if shape.len() > r {
        return Err(shape_err("sum_to", format!("{:?} to {shape:?}", g.shape())));
    }
    let off = r - shape.len();
    let axes: Vec<usize> = (0..r)
        .filter(|&i| i < off || (shape[i - off] == 1 && g.shape()[i] != 1))
        .collect();
    let s = if axes.is_empty() {
        g.clone()
    } else {
        sum_axes(g, &axes)?
    };
    reshape(&s, shape)
}

/// Global average pooling [N,C,H,W] -> [N,C].
pub fn global_avg_pool(x: &Var) -> Result<Var> {
    let v = pool::global_avg_pool(x.value())?;
    Ok(Var::from_op(v, Op::Gap { x: x.clone() }))
}

fn gap_backward(dy: &Var, hw: (usize, usize)) -> Result<Var> {
    let v = pool::global_avg_pool_backward(dy.value(), hw)?;
    Ok(Var::from_op(v, Op::GapBackward { dy: dy.clone() }))
}

/// The option-A shortcut: stride-2 subsample, channels zero-padded to `cout`.
pub fn shortcut_a(x: &Var, cout: usize) -> Result<Var> {
    let v = pool::shortcut_a(x.value(), cout)?;
    Ok(Var::from_op(v, Op::ShortcutA { x: x.clone() }))
}

fn shortcut_a_backward(dy: &Var, cin: usize, hw: (usize, usize)) -> Result<Var> {
    let v = pool::shortcut_a_backward(dy.value(), cin, hw)?;
    Ok(Var::from_op(v, Op::ShortcutABackward { dy: dy.clone() }))
}

/// Max pooling of [N,C,H,W].
pub fn max_pool(x: &Var, g: PoolGeom) -> Result<Var> {
    let (v, arg) = pool::max_pool(x.value(), g)?;
    Ok(Var::from_op(
        v,
        Op::MaxPool {
            x: x.clone(),
            arg,
            g,
        },
    ))
}

fn max_pool_backward(dy: &Var, arg: &Tensor, hw: (usize, usize), g: PoolGeom) -> Result<Var> {
    let v = pool::max_pool_backward(dy.value(), arg, hw, g)?;
    Ok(Var::from_op(
        v,
        Op::MaxPoolBackward {
            dy: dy.clone(),
            arg: arg.clone(),
            g,
        },
    ))
}

fn max_pool_select(x: &Var, arg: &Tensor, g: PoolGeom) -> Result<Var> {
    let v = pool::max_pool_select(x.value(), arg)?;
    Ok(Var::from_op(
        v,
        Op::MaxPoolSelect {
            x: x.clone(),
            arg: arg.clone(),
            g,
        },
    ))
}

/// x[r, labels[r]] for x [B, C]: gather by label.
pub fn pick(x: &Var, labels: &Tensor) -> Result<Var> {
    let v = index::pick(x.value(), labels)?;
    Ok(Var::from_op(
        v,
        Op::Pick {
            x: x.clone(),
            labels: labels.clone(),
        },
    ))
}

fn unpick(g: &Var, labels: &Tensor, classes: usize) -> Result<Var> {
    let v = index::unpick(g.value(), labels, classes)?;
    Ok(Var::from_op(
        v,
        Op::Unpick {
            g: g.clone(),
            labels: labels.clone(),
        },
    ))
}

/// Row-wise log-softmax of [B, C].
pub fn log_softmax(x: &Var) -> Result<Var> {
    let v = sm::log_softmax(x.value())?;
    Ok(Var::from_op(v, Op::LogSoftmax { x: x.clone() }))
}

/// Row-wise softmax of [B, C].
pub fn softmax(x: &Var) -> Result<Var> {
    let v = sm::softmax(x.value())?;
    Ok(Var::from_op(v, Op::Softmax { x: x.clone() }))
}

/// Per-sample soft-label cross-entropy with additive margins:
/// loss[r] = -sum_j t[r,j] * log_softmax(z[r] + q)_j, for z, t [B, C] and q [C].
pub fn soft_cross_entropy(z: &Var, t: &Var, q: Option<&Var>) -> Result<Var> {
    let v = sm::soft_cross_entropy(z.value(), t.value(), q.map(|q| q.value()))?;
    Ok(Var::from_op(
        v,
        Op::SoftCe {
            z: z.clone(),
            q: q.cloned(),
            t: t.clone(),
        },
    ))
}

/// Per-sample cross-entropy with integer labels (a one-hot soft label).
pub fn cross_entropy(z: &Var, labels: &Tensor, q: Option<&Var>) -> Result<Var> {
    let classes = z.shape().get(1).copied().unwrap_or(0);
    let t = Var::constant(index::one_hot(labels, classes)?);
    soft_cross_entropy(z, &t, q)
}

/// Training-mode batch norm over [N,C,H,W] or [N,C] with batch statistics, then ReLU if
/// `relu`. Returns the output and the batch statistics (for the running averages).
pub fn batch_norm(
    x: &Var,
    gamma: &Var,
    beta: &Var,
    eps: f32,
    relu: bool,
) -> Result<(Var, BatchStats)> {
    let stats = batch_stats(x.value())?;
    let v = bn_apply(
        x.value(),
        &stats.mean,
        &stats.var,
        gamma.value(),
        beta.value(),
        eps,
        relu,
    )?;
    let copy = BatchStats {
        mean: stats.mean.clone(),
        var: stats.var.clone(),
        count: stats.count,
    };
    let op = Op::BatchNorm {
        x: x.clone(),
        gamma: gamma.clone(),
        beta: beta.clone(),
        stats,
        eps,
        relu,
    };
    Ok((Var::from_op(v, op), copy))
}

/// Evaluation-mode batch norm with fixed statistics: (x - mean) / sqrt(var + eps) * gamma + beta,
/// then ReLU if `relu`; differentiable in x, gamma and beta.
pub fn batch_norm_eval(
    x: &Var,
    gamma: &Var,
    beta: &Var,
    mean: &Tensor,
    var: &Tensor,
    eps: f32,
    relu: bool,
) -> Result<Var> {
    if !x.requires_grad() && !gamma.requires_grad() && !beta.requires_grad() {
        // The common case (evaluation): one fused pass.
        let v = bn_apply(x.value(), mean, var, gamma.value(), beta.value(), eps, relu)?;
        return Ok(Var::constant(v));
    }
    let c = gamma.shape()[0];
    let bshape = channel_shape(x.shape(), c);
    let rstd = Var::constant(ew::map(&ew::affine(var, 1.0, eps)?, Unary::Sqrt)?);
    let rstd = Var::constant(ew::map(rstd.value(), Unary::Recip)?);
    let scale_c = mul(gamma, &rstd)?;
    let shift_c = sub(beta, &mul(&Var::constant(mean.clone()), &scale_c)?)?;
    let y = add(
        &mul(x, &reshape(&scale_c, &bshape)?)?,
        &reshape(&shift_c, &bshape)?,
    )?;
    if relu { self::relu(&y) } else { Ok(y) }
}

/// The shape [1, C, 1, 1] (or [1, C]) that broadcasts a per-channel vector over x.
fn channel_shape(x: &[usize], c: usize) -> Vec<usize> {
    let mut s = vec![1; x.len()];
    s[1] = c;
    s
}

fn channel_axes(rank: usize) -> Vec<usize> {
    std::iter::once(0).chain(2..rank).collect()
}

// ---------------------------------------------------------------- backward rules

/// Gradients for the parents of `v` given its output gradient `g`; `need` says which parents
/// lie on a path to a requested input (the others are skipped).
pub(super) fn backward(v: &Var, g: &Var, need: &dyn Fn(&Var) -> bool) -> Result<Vec<(Var, Var)>> {
    let mut out: Vec<(Var, Var)> = Vec::new();
    let mut push = |p: &Var, f: &mut dyn FnMut() -> Result<Var>| -> Result<()> {
        if need(p) {
            out.push((p.clone(), f()?));
        }
        Ok(())
    };
    use Op::*;
    match &v.0.op {
        Leaf => {}
        Matmul { a, b, ta, tb } => {
            let (ta, tb) = (*ta, *tb);
            // C = A' B' with A' = op(A), B' = op(B): dA' = G B'^T, dB' = A'^T G.
            push(a, &mut || {
                if ta {
                    matmul(b, g, tb, true)
                } else {
                    matmul(g, b, false, !tb)
                }
            })?;
            push(b, &mut || {
                if tb {
                    matmul(g, a, true, ta)
                } else {
                    matmul(a, g, !ta, false)
                }
            })?;
        }
        Conv { x, w, g: geom } => {
            let s = x.shape();
            let hw = (s[2], s[3]);
            let khw = (w.shape()[2], w.shape()[3]);
            push(x, &mut || conv2d_input_grad(g, w, hw, *geom))?;
            push(w, &mut || conv2d_weight_grad(x, g, khw, *geom))?;
        }
        ConvInputGrad { dy, w, g: geom } => {
            // dx = sum W * dy is bilinear: d/d(dy) is the forward conv, d/dW a weight gradient.
            let khw = (w.shape()[2], w.shape()[3]);
            push(dy, &mut || conv2d(g, w, *geom))?;
            push(w, &mut || conv2d_weight_grad(g, dy, khw, *geom))?;
        }
        ConvWeightGrad { x, dy, g: geom } => {
            let hw = (x.shape()[2], x.shape()[3]);
            push(x, &mut || conv2d_input_grad(dy, g, hw, *geom))?;
            push(dy, &mut || conv2d(x, g, *geom))?;
        }
        Add(a, b) => {
            push(a, &mut || sum_to(g, a.shape()))?;
            push(b, &mut || sum_to(g, b.shape()))?;
        }
        Sub(a, b) => {
            push(a, &mut || sum_to(g, a.shape()))?;
            push(b, &mut || neg(&sum_to(g, b.shape())?))?;
        }
        Mul(a, b) => {
            push(a, &mut || sum_to(&mul(g, b)?, a.shape()))?;
            push(b, &mut || sum_to(&mul(g, a)?, b.shape()))?;
        }
        Affine { x, alpha } => push(x, &mut || scale(g, *alpha))?,
        Map { x, op } => {
            let y = v; // the op's own output
            push(x, &mut || match op {
                Unary::Relu => relu_grad(g, x),
                Unary::Sigmoid => mul(g, &mul(y, &affine(y, -1.0, 1.0)?)?),
                Unary::Exp => mul(g, y),
                Unary::Log => mul(g, &recip(x)?),
                Unary::Sqrt => mul(g, &scale(&recip(y)?, 0.5)?),
                Unary::Recip => neg(&mul(g, &square(y)?)?),
                Unary::Square => mul(g, &scale(x, 2.0)?),
                other => Err(shape_err(
                    "backward",
                    format!("{other:?} has no gradient rule"),
                )),
            })?;
        }
        ReluGrad { dy, x } => push(dy, &mut || relu_grad(g, x))?, // flat in x
        Sum { x, axes } => {
            push(x, &mut || {
                let mut keep = x.shape().to_vec();
                for &a in axes {
                    keep[a] = 1;
                }
                broadcast_to(&reshape(g, &keep)?, x.shape())
            })?;
        }
        BroadcastTo { x } => push(x, &mut || sum_to(g, x.shape()))?,
        Reshape { x } => push(x, &mut || reshape(g, x.shape()))?,
        Gap { x } => push(x, &mut || gap_backward(g, (x.shape()[2], x.shape()[3])))?,
        GapBackward { dy } => push(dy, &mut || global_avg_pool(g))?,
        ShortcutA { x } => {
            let s = x.shape();
            push(x, &mut || shortcut_a_backward(g, s[1], (s[2], s[3])))?;
        }
        ShortcutABackward { dy } => push(dy, &mut || shortcut_a(g, dy.shape()[1]))?,
        Pick { x, labels } => push(x, &mut || unpick(g, labels, x.shape()[1]))?,
        Unpick { g: up, labels } => push(up, &mut || pick(g, labels))?,
        LogSoftmax { x } => {
            // dx = g - softmax(x) * rowsum(g), with softmax(x) = exp(y).
            push(x, &mut || {
                let rows = reshape(&sum_axes(g, &[1])?, &[g.shape()[0], 1])?;
                sub(g, &mul(&exp(v)?, &rows)?)
            })?;
        }
        Softmax { x } => {
            // dx = s * (g - rowsum(g * s)).
            push(x, &mut || {
                let rows = reshape(&sum_axes(&mul(g, v)?, &[1])?, &[g.shape()[0], 1])?;
                mul(v, &sub(g, &rows)?)
            })?;
        }
        SoftCe { z, q, t } => soft_ce_backward(z, q.as_ref(), t, g, need, &mut out)?,
        MaxPool { x, arg, g: geom } => {
            let hw = (x.shape()[2], x.shape()[3]);
            push(x, &mut || max_pool_backward(g, arg, hw, *geom))?;
        }
        MaxPoolBackward { dy, arg, g: geom } => push(dy, &mut || max_pool_select(g, arg, *geom))?,
        MaxPoolSelect { x, arg, g: geom } => {
            let hw = (x.shape()[2], x.shape()[3]);
            push(x, &mut || max_pool_backward(g, arg, hw, *geom))?;
        }
        AddRelu(a, b) => {
            // The mask of relu(a + b) is the mask of the output itself.
            let m = relu_grad(g, v)?;
            push(a, &mut || sum_to(&m, a.shape()))?;
            push(b, &mut || sum_to(&m, b.shape()))?;
        }
        BnInputGrad {
            x,
            gamma,
            g: up,
            stats,
            eps,
        } => {
            // dx is linear in the upstream gradient and self-adjoint in it.
            push(up, &mut || bn_input_grad(x, gamma, g, stats, *eps))?;
            push(gamma, &mut || {
                let ones = Var::constant(Tensor::full(x.value().gpu(), gamma.shape(), 1.0));
                let per_gamma = bn_input_grad(x, &ones, up, stats, *eps)?;
                sum_axes(&mul(g, &per_gamma)?, &channel_axes(x.shape().len()))
            })?;
            push(x, &mut || {
                nested_grad(x, g, &|| bn_dx_composite(x, gamma, up, *eps))
            })?;
        }
        BnGammaGrad {
            x,
            g: up,
            stats,
            eps,
        } => {
            push(up, &mut || {
                let xhat = bn_normalize_var(x, stats, *eps)?;
                mul(&xhat, &reshape(g, &channel_shape(x.shape(), g.shape()[0]))?)
            })?;
            push(x, &mut || {
                nested_grad(x, g, &|| {
                    let (xhat, _) = bn_xhat_composite(x, *eps)?;
                    sum_axes(&mul(up, &xhat)?, &channel_axes(x.shape().len()))
                })
            })?;
        }
        BnNormalize { x, stats, eps } => {
            push(x, &mut || {
                let c = stats.mean.numel();
                let ones = Var::constant(Tensor::full(x.value().gpu(), &[c], 1.0));
                bn_input_grad(x, &ones, g, stats, *eps)
            })?;
        }
        BatchNorm {
            x,
            gamma,
            beta,
            stats,
            eps,
            relu,
        } => {
            let g = if *relu { relu_grad(g, v)? } else { g.clone() };
            batch_norm_backward(x, gamma, beta, stats, *eps, &g, need, &mut out)?;
        }
    }
    Ok(out)
}

/// loss = -sum_j t_j log_softmax(z + q)_j per row; with s = softmax(z + q):
/// dz = g (s * sum_j t_j - t), dq = sum over rows of dz, dt = -g log_softmax(z + q).
fn soft_ce_backward(
    z: &Var,
    q: Option<&Var>,
    t: &Var,
    g: &Var,
    need: &dyn Fn(&Var) -> bool,
    out: &mut Vec<(Var, Var)>,
) -> Result<()> {
    let b = z.shape()[0];
    let gcol = reshape(g, &[b, 1])?;
    let need_z = need(z) || q.is_some_and(need);
    if need_z {
        let dz = if super::grad_enabled() {
            // Differentiable form (for double backward).
            let zq = match q {
                Some(q) => add(z, q)?,
                None => z.clone(),
            };
            let tsum = reshape(&sum_axes(t, &[1])?, &[b, 1])?;
            mul(&gcol, &sub(&mul(&softmax(&zq)?, &tsum)?, t)?)?
        } else {
            Var::constant(sm::soft_cross_entropy_backward(
                z.value(),
                t.value(),
                q.map(|q| q.value()),
                g.value(),
            )?)
        };
        if need(z) {
            out.push((z.clone(), dz.clone()));
        }
        if let Some(q) = q
            && need(q)
        {
            out.push((q.clone(), sum_to(&dz, q.shape())?));
        }
    }
    if need(t) {
        let zq = match q {
            Some(q) => add(z, q)?,
            None => z.clone(),
        };
        out.push((t.clone(), neg(&mul(&gcol, &log_softmax(&zq)?)?)?));
    }
    Ok(())
}

/// Batch-norm backward. Without graph recording: the fused kernels. With it: the same
/// formula from differentiable ops, with the statistics recomputed from x so that second
/// derivatives through x are exact:
/// xhat = (x - mean) rstd, dxhat = g gamma, dgamma = sum(g xhat), dbeta = sum(g),
/// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)).
#[allow(clippy::too_many_arguments)]
fn batch_norm_backward(
    x: &Var,
    gamma: &Var,
    beta: &Var,
    stats: &BatchStats,
    eps: f32,
    g: &Var,
    need: &dyn Fn(&Var) -> bool,
    out: &mut Vec<(Var, Var)>,
) -> Result<()> {
    if !super::grad_enabled() {
        let (dx, dgamma, dbeta) = bn_backward(x.value(), stats, gamma.value(), g.value(), eps)?;
        for (p, d) in [(x, dx), (gamma, dgamma), (beta, dbeta)] {
            if need(p) {
                out.push((p.clone(), Var::constant(d)));
            }
        }
        return Ok(());
    }
    // Recorded: the same fused kernels, wrapped as differentiable ops.
    let (dx, dgamma, _) = bn_backward(x.value(), stats, gamma.value(), g.value(), eps)?;
    if need(beta) {
        out.push((beta.clone(), sum_axes(g, &channel_axes(x.shape().len()))?));
    }
    if need(gamma) {
        let op = Op::BnGammaGrad {
            x: x.clone(),
            g: g.clone(),
            stats: stats.clone(),
            eps,
        };
        out.push((gamma.clone(), Var::from_op(dgamma, op)));
    }
    if need(x) {
        let op = Op::BnInputGrad {
            x: x.clone(),
            gamma: gamma.clone(),
            g: g.clone(),
            stats: stats.clone(),
            eps,
        };
        out.push((x.clone(), Var::from_op(dx, op)));
    }
    Ok(())
}

/// dx of training-mode batch norm for upstream gradient g, as a differentiable op.
fn bn_input_grad(x: &Var, gamma: &Var, g: &Var, stats: &BatchStats, eps: f32) -> Result<Var> {
    let (dx, _, _) = bn_backward(x.value(), stats, gamma.value(), g.value(), eps)?;
    let op = Op::BnInputGrad {
        x: x.clone(),
        gamma: gamma.clone(),
        g: g.clone(),
        stats: stats.clone(),
        eps,
    };
    Ok(Var::from_op(dx, op))
}

/// xhat = (x - mean) / sqrt(var + eps) with the given statistics, as a differentiable op.
fn bn_normalize_var(x: &Var, stats: &BatchStats, eps: f32) -> Result<Var> {
    let v = bn_normalize(x.value(), stats, eps)?;
    Ok(Var::from_op(
        v,
        Op::BnNormalize {
            x: x.clone(),
            stats: stats.clone(),
            eps,
        },
    ))
}

/// xhat and rstd computed from x with elementary ops (so that every derivative through the
/// batch statistics is exact); only used for derivatives with respect to x of the fused
/// backward ops, i.e. true second derivatives through the activations.
fn bn_xhat_composite(x: &Var, eps: f32) -> Result<(Var, Var)> {
    let c = x.shape()[1];
    let axes = channel_axes(x.shape().len());
    let bshape = channel_shape(x.shape(), c);
    let mean = mean_axes(x, &axes)?;
    let xc = sub(x, &reshape(&mean, &bshape)?)?;
    let var = mean_axes(&square(&xc)?, &axes)?;
    let rstd = reshape(&recip(&sqrt(&affine(&var, 1.0, eps)?)?)?, &bshape)?;
    Ok((mul(&xc, &rstd)?, rstd))
}

/// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with dxhat = g gamma, from
/// elementary ops.
fn bn_dx_composite(x: &Var, gamma: &Var, g: &Var, eps: f32) -> Result<Var> {
    let axes = channel_axes(x.shape().len());
    let bshape = channel_shape(x.shape(), gamma.shape()[0]);
    let (xhat, rstd) = bn_xhat_composite(x, eps)?;
    let dxhat = mul(g, &reshape(gamma, &bshape)?)?;
    let m1 = reshape(&mean_axes(&dxhat, &axes)?, &bshape)?;
    let m2 = reshape(&mean_axes(&mul(&dxhat, &xhat)?, &axes)?, &bshape)?;
    mul(&sub(&sub(&dxhat, &m1)?, &mul(&xhat, &m2)?)?, &rstd)
}

/// d<upstream, f(x)>/dx for a composite f rebuilt from x: the derivative of a fused op with
/// respect to an input its own rule has no closed form for. Recorded when grad mode is on.
fn nested_grad(x: &Var, upstream: &Var, f: &dyn Fn() -> Result<Var>) -> Result<Var> {
    let create = super::grad_enabled();
    let y = super::with_grad_mode(true, f)?;
    let dot = super::with_grad_mode(true, || sum_all(&mul(&y, upstream)?))?;
    let g = super::grad(&[&dot], &[x], None, create)?.remove(0);
    Ok(g.unwrap_or_else(|| Var::constant(zeros_like(x))))
}

/// A zero tensor shaped like `v` (for tests and optimisers).
pub fn zeros_like(v: &Var) -> Tensor {
    Tensor::zeros(v.value().gpu(), v.shape(), DType::F32)
}
