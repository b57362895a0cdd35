//! Batch norm: the training-mode op on batch statistics (fused kernels both ways), the
//! evaluation-mode composite, and the fused backward ops that keep the training-mode
//! backward differentiable (double backward, derived under its own heading below).

use super::elementwise::{
    self, add, affine, mean_axes, mul, recip, relu_grad, reshape, sqrt, square, sub, sum_all,
    sum_axes,
};
use super::{Grads, Op, inputs};
use crate::autograd::{Var, grad, grad_enabled, with_grad_mode, zeros_like};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor::batchnorm::{BatchStats, batch_stats, bn_apply, bn_backward, bn_normalize};
use crate::tensor::elementwise::{self as ew, Unary};

/// A batch-norm node; each keeps what the forward saved.
pub(in crate::autograd) enum BatchNormOp {
    /// y = gamma xhat + beta, then ReLU if `relu`; inputs x, gamma, beta.
    Forward { saved: Saved, relu: bool },
    /// dx of `Forward` for an upstream gradient; inputs x, gamma, upstream.
    InputGrad(Saved),
    /// dgamma of `Forward` for an upstream gradient; inputs x, upstream.
    GammaGrad(Saved),
    /// xhat = (x - mean) / sqrt(var + eps); input x.
    Normalize(Saved),
}

/// What the training-mode forward saves for the backward ops: the batch statistics of x,
/// and eps.
#[derive(Clone)]
pub(in crate::autograd) struct Saved {
    stats: BatchStats,
    eps: f32,
}

// ---------------------------------------------------------------- forward

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
    let op = BatchNormOp::Forward {
        saved: Saved { stats, eps },
        relu,
    };
    Ok((Var::from_op(v, Op::BatchNorm(op), &[x, gamma, beta]), copy))
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
    // Otherwise elementary ops, whose own rules give every derivative.
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
    // `relu` the flag shadows `relu` the op here.
    if relu { elementwise::relu(&y) } else { Ok(y) }
}

// ---------------------------------------------------------------- backward

impl BatchNormOp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            BatchNormOp::Forward { .. } => "batch_norm",
            BatchNormOp::InputGrad { .. } => "batch_norm_input_grad",
            BatchNormOp::GammaGrad { .. } => "batch_norm_gamma_grad",
            BatchNormOp::Normalize { .. } => "batch_norm_normalize",
        }
    }

    /// The rules, for node `y` (whose value's sign is the ReLU mask) and output gradient `g`.
    pub(super) fn backward(&self, y: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
        match self {
            BatchNormOp::Forward { saved, relu } => {
                let [x, gamma, beta] = inputs(y)?;
                let g = if *relu { relu_grad(g, y)? } else { g.clone() };
                batch_norm_backward(x, gamma, beta, saved, &g, grads)
            }
            BatchNormOp::InputGrad(saved) => {
                let [x, gamma, up] = inputs(y)?;
                input_grad_backward(x, gamma, up, saved, g, grads)
            }
            BatchNormOp::GammaGrad(saved) => {
                let [x, up] = inputs(y)?;
                gamma_grad_backward(x, up, saved, g, grads)
            }
            BatchNormOp::Normalize(saved) => {
                let [x] = inputs(y)?;
                grads.put(x, || normalize_backward(x, saved, g))
            }
        }
    }
}

/// Batch-norm backward. Without graph recording: the fused kernels. With it: the same fused
/// kernels, their results wrapped as the differentiable ops `GammaGrad` and `InputGrad`:
/// xhat = (x - mean) rstd, dxhat = g gamma, dgamma = sum(g xhat), dbeta = sum(g),
/// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)).
fn batch_norm_backward(
    x: &Var,
    gamma: &Var,
    beta: &Var,
    saved: &Saved,
    g: &Var,
    grads: &mut Grads,
) -> Result<()> {
    let Saved { stats, eps } = saved;
    let (dx, dgamma, dbeta) = bn_backward(x.value(), stats, gamma.value(), g.value(), *eps)?;
    if !grad_enabled() {
        for (p, d) in [(x, dx), (gamma, dgamma), (beta, dbeta)] {
            grads.put(p, || Ok(Var::constant(d)))?;
        }
        return Ok(());
    }
    grads.put(beta, || sum_axes(g, &channel_axes(x.shape().len())))?;
    grads.put(gamma, || {
        let op = BatchNormOp::GammaGrad(saved.clone());
        Ok(Var::from_op(dgamma, Op::BatchNorm(op), &[x, g]))
    })?;
    grads.put(x, || Ok(input_grad_node(dx, x, gamma, g, saved)))
}

// ---------------------------------------------------------------- double backward
//
// With grad mode on, the backward above records two fused ops. Per channel c, over the
// m = N*H*W values of that channel (sum_c and mean_c reduce over them; per-channel values
// broadcast back over them):
//   mean = mean_c(x), var = mean_c((x - mean)^2), rstd = 1 / sqrt(var + eps),
//   xhat = (x - mean) rstd,
//   GammaGrad: G(x, g)        = sum_c(g xhat)                                    (= dgamma)
//   InputGrad: D(x, gamma, g) = gamma rstd (g - mean_c(g) - xhat mean_c(g xhat))  (= dx)
// (dbeta = sum_c(g) is an ordinary sum.) Differentiating one of them again, for an upstream
// gradient u shaped like its output, means taking the gradient of the scalar <u, op(...)>
// with respect to each of the op's inputs:
//
// <u, D(x, gamma, g)>:
//   d/dg:     D is linear in g: D = gamma rstd P g with P = I - 11^T/m - xhat xhat^T/m per
//             channel, a symmetric matrix, so g -> D is self-adjoint and d/dg = D(x, gamma, u),
//             the same fused op applied to u.
//   d/dgamma: D is linear in each gamma_c: D = gamma_c D(x, 1, g), so
//             d/dgamma_c = sum_c(u D(x, 1, g)).
//   d/dx:     mean, var, rstd and xhat all move with x, and no closed form is kept: D is
//             rebuilt from elementary ops with the statistics computed from x
//             (`bn_dx_composite`) and the engine differentiates <u, D> (`nested_grad`).
// <u, G(x, g)> = sum over channels of u_c sum_c(g xhat):
//   d/dg:     u_c xhat, with xhat taken from the `Normalize` op so that it stays
//             differentiable in x.
//   d/dx:     rebuilt and differentiated like D, from `bn_xhat_composite`.
// <u, xhat(x)> (`Normalize`): xhat is the forward with gamma = 1, beta = 0, so its
//   d/dx = D(x, 1, u): dxhat_i/dx_j = rstd (delta_ij - 1/m - xhat_i xhat_j / m).

/// The rule of `InputGrad` (inputs x, gamma, up) for the upstream gradient `g`.
fn input_grad_backward(
    x: &Var,
    gamma: &Var,
    up: &Var,
    saved: &Saved,
    g: &Var,
    grads: &mut Grads,
) -> Result<()> {
    grads.put(up, || bn_input_grad(x, gamma, g, saved))?;
    grads.put(gamma, || {
        let ones = Var::constant(Tensor::full(x.value().gpu(), gamma.shape(), 1.0));
        let per_gamma = bn_input_grad(x, &ones, up, saved)?;
        sum_axes(&mul(g, &per_gamma)?, &channel_axes(x.shape().len()))
    })?;
    grads.put(x, || {
        // The partial derivative in x alone: gamma and `up` are held fixed. `up` depends on
        // the activations whenever the loss is not linear in them, and that dependence is
        // already carried by the rule for `up` above; differentiating through it here too
        // counted it twice.
        let (gamma, up) = (gamma.detach(), up.detach());
        nested_grad(x, g, &|| bn_dx_composite(x, &gamma, &up, saved.eps))
    })
}

/// The rule of `GammaGrad` (inputs x, up) for the upstream gradient `g`.
fn gamma_grad_backward(x: &Var, up: &Var, saved: &Saved, g: &Var, grads: &mut Grads) -> Result<()> {
    grads.put(up, || {
        let xhat = bn_normalize_var(x, saved)?;
        mul(&xhat, &reshape(g, &channel_shape(x.shape(), g.shape()[0]))?)
    })?;
    grads.put(x, || {
        // As for `InputGrad`: `up` held fixed, its own dependence on x has its own rule.
        let up = up.detach();
        nested_grad(x, g, &|| {
            let (xhat, _) = bn_xhat_composite(x, saved.eps)?;
            sum_axes(&mul(&up, &xhat)?, &channel_axes(x.shape().len()))
        })
    })
}

/// The rule of `Normalize` (input x) for the upstream gradient `g`: D(x, 1, g).
fn normalize_backward(x: &Var, saved: &Saved, g: &Var) -> Result<Var> {
    let c = saved.stats.mean.numel();
    let ones = Var::constant(Tensor::full(x.value().gpu(), &[c], 1.0));
    bn_input_grad(x, &ones, g, saved)
}

/// D(x, gamma, g): dx of training-mode batch norm for upstream gradient g, as the fused
/// differentiable op.
fn bn_input_grad(x: &Var, gamma: &Var, g: &Var, saved: &Saved) -> Result<Var> {
    let Saved { stats, eps } = saved;
    let (dx, _, _) = bn_backward(x.value(), stats, gamma.value(), g.value(), *eps)?;
    Ok(input_grad_node(dx, x, gamma, g, saved))
}

/// The `InputGrad` node holding `dx`, already computed from (x, gamma, g).
fn input_grad_node(dx: Tensor, x: &Var, gamma: &Var, g: &Var, saved: &Saved) -> Var {
    let op = BatchNormOp::InputGrad(saved.clone());
    Var::from_op(dx, Op::BatchNorm(op), &[x, gamma, g])
}

/// xhat = (x - mean) / sqrt(var + eps) with the saved statistics, as a differentiable op.
fn bn_normalize_var(x: &Var, saved: &Saved) -> Result<Var> {
    let v = bn_normalize(x.value(), &saved.stats, saved.eps)?;
    let op = BatchNormOp::Normalize(saved.clone());
    Ok(Var::from_op(v, Op::BatchNorm(op), &[x]))
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

/// D(x, gamma, g) = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) with dxhat = g gamma,
/// from elementary ops.
fn bn_dx_composite(x: &Var, gamma: &Var, g: &Var, eps: f32) -> Result<Var> {
    let axes = channel_axes(x.shape().len());
    let bshape = channel_shape(x.shape(), gamma.shape()[0]);
    let (xhat, rstd) = bn_xhat_composite(x, eps)?;
    let dxhat = mul(g, &reshape(gamma, &bshape)?)?;
    let m1 = reshape(&mean_axes(&dxhat, &axes)?, &bshape)?;
    let m2 = reshape(&mean_axes(&mul(&dxhat, &xhat)?, &axes)?, &bshape)?;
    mul(&sub(&sub(&dxhat, &m1)?, &mul(&xhat, &m2)?)?, &rstd)
}

/// d<upstream, f(x)>/dx for a composite f rebuilt from x: the partial derivative of a fused op
/// with respect to an input its own rule has no closed form for. `f` must take its other
/// inputs detached, and `upstream` is detached here, so that no path through them back to x
/// is counted; the result is exact for second derivatives (the meta gradient's order) and,
/// when grad mode is on, recorded as a function of x alone.
fn nested_grad(x: &Var, upstream: &Var, f: &dyn Fn() -> Result<Var>) -> Result<Var> {
    let create = grad_enabled();
    let y = with_grad_mode(true, f)?;
    let upstream = upstream.detach();
    let dot = with_grad_mode(true, || sum_all(&mul(&y, &upstream)?))?;
    let g = grad(&[&dot], &[x], None, create)?.remove(0);
    Ok(g.unwrap_or_else(|| Var::constant(zeros_like(x))))
}

// ---------------------------------------------------------------- channel shapes

/// The shape [1, C, 1, 1] (or [1, C]) that broadcasts a per-channel vector over x.
fn channel_shape(x: &[usize], c: usize) -> Vec<usize> {
    let mut s = vec![1; x.len()];
    s[1] = c;
    s
}

/// Every axis of a rank-`rank` tensor but the channel axis 1.
fn channel_axes(rank: usize) -> Vec<usize> {
    std::iter::once(0).chain(2..rank).collect()
}
