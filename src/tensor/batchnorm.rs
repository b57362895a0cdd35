//! Batch normalisation kernels over NCHW activations (per-channel statistics).

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::Result;
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/batchnorm.wgsl.
    pub(crate) struct BatchNormParams for batchnorm::Params {
        n: u32,
        c: u32,
        hw: u32,
        eps: f32,
        momentum: f32,
        chunks: u32,
    }
}

const STATS_PARTIAL: Kernel<'static, BatchNormParams> = Kernel::new("stats_partial");
const STATS_FINISH: Kernel<'static, BatchNormParams> = Kernel::new("stats_finish");
const RUNNING_UPDATE: Kernel<'static, BatchNormParams> = Kernel::new("running_update");
const SUMS_PARTIAL: Kernel<'static, BatchNormParams> = Kernel::new("sums_partial");
const SUMS_FINISH: Kernel<'static, BatchNormParams> = Kernel::new("sums_finish");
const BACKWARD_APPLY: Kernel<'static, BatchNormParams> = Kernel::new("backward_apply");

/// The `apply` kernel, with the ReLU fused in or not.
fn apply_kernel(relu: bool) -> Kernel<'static, BatchNormParams> {
    if relu {
        Kernel::with_constants("apply", &[("RELU", 1.0)])
    } else {
        Kernel::with_constants("apply", &[("RELU", 0.0)])
    }
}

/// Every kernel this file launches.
pub(super) fn kernels() -> Vec<KernelVariant> {
    let mut out: Vec<KernelVariant> = [
        STATS_PARTIAL,
        STATS_FINISH,
        RUNNING_UPDATE,
        SUMS_PARTIAL,
        SUMS_FINISH,
        BACKWARD_APPLY,
    ]
    .iter()
    .map(KernelVariant::of)
    .collect();
    out.extend([false, true].map(|relu| KernelVariant::of(&apply_kernel(relu))));
    out
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
        chunks: chunks(n * hw) as u32,
    }
}

/// Partial sums per channel for `m` values: at least 32 values each (so the loop, not the
/// launch, dominates), at most 256 (so the in-order finish stays short).
fn chunks(m: usize) -> usize {
    (m / 32).clamp(1, 256)
}

/// Per-channel sums in two passes: `partial` writes [C, chunks] partial sums of two
/// quantities from `inputs`, `finish` adds them in order into two [C] outputs (with `x` as
/// its first input where it needs the data).
fn channel_sums(
    partial: &Kernel<BatchNormParams>,
    finish: &Kernel<BatchNormParams>,
    p: &BatchNormParams,
    inputs: &[&Tensor],
    finish_inputs: &[&Tensor],
) -> Result<(Tensor, Tensor)> {
    let gpu = inputs[0].gpu();
    let (c, s) = (p.c as usize, p.chunks as usize);
    let part = Tensor::empty(gpu, &[c, s], DType::F32);
    let part2 = Tensor::empty(gpu, &[c, s], DType::F32);
    let mut bound = inputs.to_vec();
    bound.extend([&part, &part2]);
    launch(partial, p, &bound, [s.div_ceil(64) as u32, c as u32, 1])?;
    let out = Tensor::empty(gpu, &[c], DType::F32);
    let out2 = Tensor::empty(gpu, &[c], DType::F32);
    let mut bound = finish_inputs.to_vec();
    bound.extend([&out, &out2, &part, &part2]);
    launch(finish, p, &bound, [c.div_ceil(64) as u32, 1, 1])?;
    Ok((out, out2))
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
    let p = params(n, c, hw, 0.0, 0.0);
    let (mean, var) = channel_sums(&STATS_PARTIAL, &STATS_FINISH, &p, &[x], &[x])?;
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
        plane_grid(n, c, hw)?,
    )?;
    Ok(out)
}

/// Values of one plane an `apply` / `backward_apply` workgroup covers (64 invocations x 16,
/// `PER` in the shader).
const PLANE_BLOCK: usize = 1024;

/// Grid of the per-plane kernels: blocks of a plane along x, channels along y, images along z,
/// so that each workgroup's channel is its y index (no division per element).
fn plane_grid(n: usize, c: usize, hw: usize) -> Result<[u32; 3]> {
    ensure(n <= 65535 && c <= 65535, "batch norm", || {
        format!("{n} images x {c} channels: at most 65535 of each per dispatch")
    })?;
    Ok([hw.div_ceil(PLANE_BLOCK) as u32, c as u32, n as u32])
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
    let (mean, var) = (&stats.mean, &stats.var);
    let (dbeta, dgamma) = channel_sums(&SUMS_PARTIAL, &SUMS_FINISH, &p, &[x, mean, var, dy], &[])?;
    let dx = Tensor::empty(gpu, x.shape(), DType::F32);
    launch(
        &BACKWARD_APPLY,
        &p,
        &[x, mean, var, gamma, dy, &dx, &dbeta, &dgamma],
        plane_grid(n, c, hw)?,
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
