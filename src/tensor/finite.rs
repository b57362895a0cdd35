//! Finiteness checks: how many NaN or infinite values each of many tensors holds, counted on
//! the GPU and read back as one small vector (a training run checks its whole state before it
//! commits an epoch).

use super::{DType, Tensor, fits_u32, launch};
use crate::error::Result;
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/finite.wgsl.
    pub(crate) struct FiniteParams for finite::Params {
        len: u32,
        slot: u32,
    }
}

const COUNT: Kernel<'static, FiniteParams> = Kernel::new("count_nonfinite");

/// Every kernel this file launches.
pub(super) fn kernels() -> Vec<KernelVariant> {
    vec![KernelVariant::of(&COUNT)]
}

/// The number of non-finite values (NaN, +inf, -inf) in each f32 tensor of `tensors`, in
/// order: one dispatch per tensor into a shared buffer and a single readback.
pub fn count_nonfinite(tensors: &[&Tensor]) -> Result<Vec<u32>> {
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let counts = Tensor::zeros(first.gpu(), &[tensors.len()], DType::U32);
    for (slot, t) in tensors.iter().enumerate() {
        t.expect_dtype("count_nonfinite", DType::F32)?;
        if t.numel() == 0 {
            continue;
        }
        let p = FiniteParams {
            len: fits_u32("count_nonfinite", t.numel())?,
            slot: slot as u32,
        };
        launch(&COUNT, &p, &[t, &counts], [1, 1, 1])?;
    }
    counts.to_u32_vec()
}
