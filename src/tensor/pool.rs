//! Global average pooling and the ResNet "option A" shortcut.

use super::{DType, Tensor, ensure, fits_u32};
use crate::error::Result;
use crate::gpu::{Kernel, grid_1d};

fn launch(entry: &'static str, p: [usize; 8], src: &Tensor, out: &Tensor, n: usize) -> Result<()> {
    fits_u32(entry, n.max(src.numel()))?;
    src.gpu().dispatch(
        &Kernel::new("pool", entry),
        &p.map(|v| v as u32),
        &[src.buffer(), out.buffer()],
        grid_1d(n, 256),
    )
}

/// Mean over the spatial plane: [N,C,H,W] -> [N,C].
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype("global_avg_pool", DType::F32)?;
    let s = x.expect_rank("global_avg_pool", 4)?.to_vec();
    let out = Tensor::empty(x.gpu(), &[s[0], s[1]], DType::F32);
    launch(
        "gap_forward",
        [s[0], s[1], s[2], s[3], 0, 0, 0, 0],
        x,
        &out,
        s[0] * s[1],
    )?;
    Ok(out)
}

/// Gradient of [`global_avg_pool`]: dy [N,C] spread evenly over an (H, W) plane.
pub fn global_avg_pool_backward(dy: &Tensor, hw: (usize, usize)) -> Result<Tensor> {
    let s = dy.expect_rank("global_avg_pool_backward", 2)?.to_vec();
    let out = Tensor::empty(dy.gpu(), &[s[0], s[1], hw.0, hw.1], DType::F32);
    launch(
        "gap_backward",
        [s[0], s[1], hw.0, hw.1, 0, 0, 0, 0],
        dy,
        &out,
        out.numel(),
    )?;
    Ok(out)
}

/// Output channels of the option-A shortcut are split as `pad` zeros, the input, the rest zeros.
fn shortcut_pad(cin: usize, cout: usize) -> usize {
    (cout - cin) / 2
}

/// Option-A shortcut: stride-2 subsample of x [N,Cin,H,W] and zero-padded channels up to `cout`.
pub fn shortcut_a(x: &Tensor, cout: usize) -> Result<Tensor> {
    x.expect_dtype("shortcut_a", DType::F32)?;
    let s = x.expect_rank("shortcut_a", 4)?.to_vec();
    ensure(cout >= s[1], "shortcut_a", || {
        format!("cannot shrink {} channels to {cout}", s[1])
    })?;
    let (oh, ow) = (s[2].div_ceil(2), s[3].div_ceil(2));
    let out = Tensor::empty(x.gpu(), &[s[0], cout, oh, ow], DType::F32);
    let pad = shortcut_pad(s[1], cout);
    launch(
        "shortcut_forward",
        [s[0], s[1], s[2], s[3], cout, pad, oh, ow],
        x,
        &out,
        out.numel(),
    )?;
    Ok(out)
}

/// Gradient of [`shortcut_a`] for an input of shape `[N, cin, h, w]`.
pub fn shortcut_a_backward(dy: &Tensor, cin: usize, hw: (usize, usize)) -> Result<Tensor> {
    let s = dy.expect_rank("shortcut_a_backward", 4)?.to_vec();
    let (h, w) = hw;
    ensure(
        s[1] >= cin && s[2] == h.div_ceil(2) && s[3] == w.div_ceil(2),
        "shortcut_a_backward",
        || format!("gradient {s:?} does not fit an input of {cin}x{h}x{w}"),
    )?;
    let out = Tensor::empty(dy.gpu(), &[s[0], cin, h, w], DType::F32);
    let pad = shortcut_pad(cin, s[1]);
    launch(
        "shortcut_backward",
        [s[0], cin, h, w, s[1], pad, s[2], s[3]],
        dy,
        &out,
        out.numel(),
    )?;
    Ok(out)
}
