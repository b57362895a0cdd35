//! In-place optimizer updates with PyTorch semantics. These are the only ops that mutate their
//! arguments: the weights and optimizer state are overwritten in their own buffers.

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::Result;
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/optim.wgsl.
    pub(crate) struct OptimParams for optim::Params {
        n: u32,
        lr: f32,       // sgd: learning rate; adam: lr / (1 - beta1^t)
        momentum: f32, // sgd: momentum; adam: beta1
        weight_decay: f32,
        beta2: f32,    // adam
        eps: f32,      // adam
        bc2_sqrt: f32, // adam: sqrt(1 - beta2^t)
    }
}

const SGD: Kernel<'static, OptimParams> = Kernel::new("sgd");
const ADAM: Kernel<'static, OptimParams> = Kernel::new("adam");

/// Every kernel this file launches (none takes override constants).
pub(super) fn kernels() -> Vec<KernelVariant> {
    [SGD, ADAM].iter().map(KernelVariant::of).collect()
}

/// Checks that all tensors are f32 with `w`'s element count and that no two share a buffer.
fn check(op: &'static str, w: &Tensor, others: &[&Tensor]) -> Result<u32> {
    w.expect_dtype(op, DType::F32)?;
    for (i, t) in others.iter().enumerate() {
        t.expect_dtype(op, DType::F32)?;
        ensure(t.numel() == w.numel(), op, || {
            format!("{:?} does not match weights {:?}", t.shape(), w.shape())
        })?;
        let aliased = t.same_storage(w) || others[..i].iter().any(|o| o.same_storage(t));
        ensure(!aliased, op, || {
            "weights, state and gradient must not share buffers".into()
        })?;
    }
    fits_u32(op, w.numel())
}

/// SGD step in place: `buf = momentum * buf + grad + wd * w; w -= lr * buf` (mutates `w`, `buf`).
///
/// PyTorch semantics with dampening 0 and no Nesterov; start from a zero `buf` to reproduce
/// PyTorch's first step (`buf = grad + wd * w`).
pub fn sgd_step(
    w: &Tensor,
    buf: &Tensor,
    grad: &Tensor,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> Result<()> {
    let n = check("sgd_step", w, &[buf, grad])?;
    let p = OptimParams {
        n,
        lr,
        momentum,
        weight_decay,
        ..Default::default()
    };
    launch(&SGD, &p, &[w, buf, grad], grid_1d(n as usize, 256))
}

/// Adam step `step` (1-based) in place, PyTorch semantics with L2 weight decay (mutates `w`, `m`, `v`).
///
/// `g = grad + wd * w; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`; start from zero `m` and `v`.
#[allow(clippy::too_many_arguments)]
pub fn adam_step(
    w: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step: u32,
) -> Result<()> {
    const OP: &str = "adam_step";
    let n = check(OP, w, &[m, v, grad])?;
    ensure(step >= 1, OP, || "step is 1-based".into())?;
    let bc1 = 1.0 - (beta1 as f64).powf(step as f64);
    let bc2 = 1.0 - (beta2 as f64).powf(step as f64);
    let step_size = (lr as f64 / bc1) as f32;
    let p = OptimParams {
        n,
        lr: step_size,
        momentum: beta1,
        weight_decay,
        beta2,
        eps,
        bc2_sqrt: bc2.sqrt() as f32,
    };
    launch(&ADAM, &p, &[w, m, v, grad], grid_1d(n as usize, 256))
}
