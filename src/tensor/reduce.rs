//! Deterministic sums and means over chosen axes.

use super::{DType, Tensor, fits_u32, launch};
use crate::error::{Result, shape_err};
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, MAX_GROUPS, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/reduce.wgsl.
    pub(crate) struct ReduceParams for reduce::Params {
        r0: u32,
        k0: u32,
        r1: u32,
        k1: u32,
        scale: f32,
    }
}

const TREE: Kernel<'static, ReduceParams> = Kernel::new("reduce_tree");
const SMALL: Kernel<'static, ReduceParams> = Kernel::new("reduce_small");

/// Every kernel this file launches (none takes override constants).
pub(super) fn kernels() -> Vec<KernelVariant> {
    [TREE, SMALL].iter().map(KernelVariant::of).collect()
}

/// Reductions shorter than this run one invocation per output.
const SMALL_REDUCTION: usize = 64;

/// Merges runs of reduced / kept axes and returns the canonical [R0, K0, R1, K1] form,
/// or `None` when the pattern needs more than two reduced runs.
fn canonical(shape: &[usize], axes: &[usize]) -> Option<[usize; 4]> {
    // Runs of (reduced?, size), skipping size-1 axes (they change nothing).
    let mut runs: Vec<(bool, usize)> = Vec::new();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let red = axes.contains(&i);
        match runs.last_mut() {
            Some((r, size)) if *r == red => *size *= d,
            _ => runs.push((red, d)),
        }
    }
    let mut out = [1usize; 4];
    let mut slot = 0;
    for (red, size) in runs {
        // Slots alternate reduced (even) and kept (odd).
        let want_even = red;
        if (slot % 2 == 0) != want_even {
            slot += 1;
        }
        if slot >= 4 {
            return None;
        }
        out[slot] = size;
        slot += 1;
    }
    Some(out)
}

/// Sum over `axes`, scaled by `scale`; the reduced axes are removed from the shape.
pub fn sum_axes_scaled(x: &Tensor, axes: &[usize], scale: f32) -> Result<Tensor> {
    x.expect_dtype("sum", DType::F32)?;
    if let Some(&a) = axes.iter().find(|&&a| a >= x.shape().len()) {
        return Err(shape_err(
            "sum",
            format!("axis {a} out of range for {:?}", x.shape()),
        ));
    }
    let kept: Vec<usize> = (0..x.shape().len())
        .filter(|i| !axes.contains(i))
        .map(|i| x.shape()[i])
        .collect();
    let [r0, k0, r1, k1] = canonical(x.shape(), axes).ok_or_else(|| {
        shape_err(
            "sum",
            format!(
                "axes {axes:?} of {:?}: too many separate reduced runs",
                x.shape()
            ),
        )
    })?;
    let outputs = k0 * k1;
    let out = Tensor::empty(x.gpu(), &kept, DType::F32);
    fits_u32("sum", x.numel())?;
    let p = ReduceParams {
        r0: r0 as u32,
        k0: k0 as u32,
        r1: r1 as u32,
        k1: k1 as u32,
        scale,
    };
    if r0 * r1 < SMALL_REDUCTION {
        launch(&SMALL, &p, &[x, &out], grid_1d(outputs, 256))?;
    } else {
        let groups = if outputs <= MAX_GROUPS as usize {
            [outputs as u32, 1, 1]
        } else {
            let y = outputs.div_ceil(MAX_GROUPS as usize);
            [outputs.div_ceil(y) as u32, y as u32, 1]
        };
        launch(&TREE, &p, &[x, &out], groups)?;
    }
    Ok(out)
}

/// Sum over `axes`.
pub fn sum_axes(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    sum_axes_scaled(x, axes, 1.0)
}

/// Mean over `axes`.
pub fn mean_axes(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    let count: usize = axes
        .iter()
        .map(|&a| x.shape().get(a).copied().unwrap_or(1))
        .product();
    sum_axes_scaled(x, axes, 1.0 / count.max(1) as f32)
}

/// Sum of every element, as a one-element tensor of shape [].
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    let axes: Vec<usize> = (0..x.shape().len()).collect();
    sum_axes(x, &axes)
}

/// Mean of every element, as a one-element tensor of shape [].
pub fn mean_all(x: &Tensor) -> Result<Tensor> {
    let axes: Vec<usize> = (0..x.shape().len()).collect();
    mean_axes(x, &axes)
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical(&[4, 3, 5, 6], &[0, 2, 3]), Some([4, 3, 30, 1]));
        assert_eq!(canonical(&[4, 5], &[1]), Some([1, 4, 5, 1]));
        assert_eq!(canonical(&[4, 5], &[0]), Some([4, 5, 1, 1]));
        assert_eq!(canonical(&[4, 5], &[0, 1]), Some([20, 1, 1, 1]));
        assert_eq!(canonical(&[4, 1, 5], &[0, 2]), Some([20, 1, 1, 1]));
        assert_eq!(canonical(&[2, 3, 4, 5, 6], &[0, 2, 4]), None);
        assert_eq!(canonical(&[2, 3, 4], &[]), Some([1, 24, 1, 1]));
    }
}
