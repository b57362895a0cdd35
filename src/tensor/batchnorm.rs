//! Batch normalisation kernels over NCHW activations (per-channel statistics).

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::Result;
use crate::gpu::{Kernel, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/batchnorm.wgsl.
    pub(crate) struct BatchNormParams for batchnorm::Params {
        n: u32,
        c: u32,
        hw: u32,
        eps: f32,
        momentum: f32,
    }
}

const STATS: Kernel<'static, BatchNormParams> = Kernel::new("stats");
const RUNNING_UPDATE: Kernel<'static, BatchNormParams> = Kernel::new("running_update");
const BACKWARD_SUMS: Kernel<'static, BatchNormParams> = Kernel::new("backward_sums");
const BACKWARD_APPLY: Kernel<'static, BatchNormParams> = Kernel::new("backward_apply");

/// The `apply` kernel, with the ReLU fused in or not.
fn apply_kernel(relu: bool) -> Kernel<'static, BatchNormParams> {
    if relu {
        Kernel::with_constants("apply", &[("RELU", 1.0)])
    } else {
        Kernel::with_constants("apply", &[("RELU", 0.0)])
    }
}

/// Per-channel batch statistics: mean and biased variance.
#[derive(Clone)]
pub struct BatchStats {
    /// Mean per channel, [C].
    pub mean: Tensor,
    /// Biased variance per channel, [C].
    pub var: Tensor,
    /// Values per channel the statistics were taken over (N*H*W).
    pub count: usize,
}

fn nchw(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    x.expect_dtype(op, DType::F32)?;
    let s = x.shape();
    ensure(s.len() == 2 || s.len() == 4, op, || {
        format!("expected [N,C] or [N,C,H,W], got {s:?}")
    })?;
    let hw = if s.len() == 4 { s[2] * s[3] } else { 1 };
    fits_u32(op, x.numel())?;
    Ok((s[0], s[1], hw))
}

fn params(n: usize, c: usize, hw: usize, eps: f32, momentum: f32) -> BatchNormParams {
    BatchNormParams {
        n: n as u32,
        c: c as u32,
        hw: hw as u32,
        eps,
        momentum,
    }
}

fn check_channels(op: &'static str, c: usize, ts: &[&Tensor]) -> Result<()> {
    for t in ts {
        ensure(t.shape() == [c], op, || {
            format!("per-channel tensor {:?} should be [{c}]", t.shape())
        })?;
    }
    Ok(())
}

/// Batch mean and biased variance of each channel of x ([N,C,H,W] or [N,C]).
pub fn batch_stats(x: &Tensor) -> Result<BatchStats> {
    let (n, c, hw) = nchw("batch_stats", x)?;
    let gpu = x.gpu();
    let mean = Tensor::empty(gpu, &[c], DType::F32);
    let var = Tensor::empty(gpu, &[c], DType::F32);
    launch(
        &STATS,
        &params(n, c, hw, 0.0, 0.0),
        &[x, &mean, &var],
        [c as u32, 1, 1],
    )?;
    Ok(BatchStats {
        mean,
        var,
        count: n * hw,
    })
}

/// y = (x - mean) / sqrt(var + eps) * gamma + beta per channel, then ReLU if `relu`.
pub fn bn_apply(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    relu: bool,
) -> Result<Tensor> {
    let (n, c, hw) = nchw("bn_apply", x)?;
    check_channels("bn_apply", c, &[mean, var, gamma, beta])?;
    let out = Tensor::empty(x.gpu(), x.shape(), DType::F32);
    launch(
        &apply_kernel(relu),
        &params(n, c, hw, eps, 0.0),
        &[x, mean, var, gamma, beta, &out],
        grid_1d(x.numel(), 256),
    )?;
    Ok(out)
}

/// Updates running statistics in place: r = (1 - momentum) r + momentum * batch, with the
/// batch variance unbiased by M/(M-1), M = the batch's value count per channel.
pub fn bn_running_update(
    running_mean: &Tensor,
    running_var: &Tensor,
    batch: &BatchStats,
    momentum: f32,
) -> Result<()> {
    let c = batch.mean.numel();
    check_channels(
        "bn_running_update",
        c,
        &[running_mean, running_var, &batch.var],
    )?;
    launch(
        &RUNNING_UPDATE,
        &params(batch.count, c, 1, 0.0, momentum),
        &[&batch.mean, &batch.var, running_mean, running_var],
        grid_1d(c, 256),
    )
}

/// Gradients of training-mode batch norm: returns (dx, dgamma, dbeta) given x, its batch
/// statistics, gamma and the output gradient dy (of the affine output, before any ReLU).
pub fn bn_backward(
    x: &Tensor,
    stats: &BatchStats,
    gamma: &Tensor,
    dy: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, hw) = nchw("bn_backward", x)?;
    ensure(dy.shape() == x.shape(), "bn_backward", || {
        format!("dy {:?} vs x {:?}", dy.shape(), x.shape())
    })?;
    check_channels("bn_backward", c, &[&stats.mean, &stats.var, gamma])?;
    let gpu = x.gpu();
    let p = params(n, c, hw, eps, 0.0);
    // sum(dy) is dbeta and sum(dy * xhat) is dgamma.
    let dbeta = Tensor::empty(gpu, &[c], DType::F32);
    let dgamma = Tensor::empty(gpu, &[c], DType::F32);
    let (mean, var) = (&stats.mean, &stats.var);
    launch(
        &BACKWARD_SUMS,
        &p,
        &[x, mean, var, dy, &dbeta, &dgamma],
        [c as u32, 1, 1],
    )?;
    let dx = Tensor::empty(gpu, x.shape(), DType::F32);
    launch(
        &BACKWARD_APPLY,
        &p,
        &[x, mean, var, gamma, dy, &dx, &dbeta, &dgamma],
        grid_1d(x.numel(), 256),
    )?;
    Ok((dx, dgamma, dbeta))
}

/// The normalised input xhat = (x - mean) / sqrt(var + eps) (no affine, no ReLU).
pub fn bn_normalize(x: &Tensor, stats: &BatchStats, eps: f32) -> Result<Tensor> {
    let c = stats.mean.numel();
    let ones = Tensor::full(x.gpu(), &[c], 1.0);
    let zeros = Tensor::zeros(x.gpu(), &[c], DType::F32);
    bn_apply(x, &stats.mean, &stats.var, &ones, &zeros, eps, false)
}
