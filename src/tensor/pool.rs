//! Global average pooling and the ResNet "option A" shortcut.

use super::{DType, Tensor, ensure, fits_u32};
use crate::error::Result;
use crate::gpu::{Kernel, grid_1d};

fn launch(entry: &'static str, p: [usize; 8], src: &Tensor, out: &Tensor, n: usize) -> Result<()> {
    launch_with(entry, p, [0; 3], &[src, out], n)
}

fn launch_with(
    entry: &'static str,
    p: [usize; 8],
    pool: [usize; 3],
    bufs: &[&Tensor],
    n: usize,
) -> Result<()> {
    fits_u32(entry, n.max(bufs[0].numel()))?;
    let mut words: Vec<u32> = p.iter().map(|&v| v as u32).collect();
    words.extend(pool.iter().map(|&v| v as u32));
    let b: Vec<_> = bufs.iter().map(|t| t.buffer()).collect();
    bufs[0]
        .gpu()
        .dispatch(&Kernel::new("pool", entry), &words, &b, grid_1d(n, 256))
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

/// Window side, stride and padding of a max pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    /// Window side.
    pub k: usize,
    /// Step between windows.
    pub stride: usize,
    /// Padding on each border (padded cells never win).
    pub pad: usize,
}

impl PoolGeom {
    /// Output size along one dimension for input size `i`.
    pub fn out_size(&self, i: usize) -> Option<usize> {
        (i + 2 * self.pad)
            .checked_sub(self.k)
            .map(|v| v / self.stride + 1)
    }
}

fn pool_dims(op: &'static str, s: &[usize], g: PoolGeom) -> Result<(usize, usize)> {
    ensure(g.k >= 1 && g.stride >= 1 && g.pad < g.k, op, || {
        format!("bad pooling {g:?}")
    })?;
    match (g.out_size(s[2]), g.out_size(s[3])) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(crate::error::shape_err(
            op,
            format!("window {g:?} larger than input {s:?}"),
        )),
    }
}

/// Max pooling of x [N,C,H,W]; returns the output and the winners' plane indices (u32).
pub fn max_pool(x: &Tensor, g: PoolGeom) -> Result<(Tensor, Tensor)> {
    x.expect_dtype("max_pool", DType::F32)?;
    let s = x.expect_rank("max_pool", 4)?.to_vec();
    let (oh, ow) = pool_dims("max_pool", &s, g)?;
    let out = Tensor::empty(x.gpu(), &[s[0], s[1], oh, ow], DType::F32);
    let arg = Tensor::empty(x.gpu(), &[s[0], s[1], oh, ow], DType::U32);
    let p = [s[0], s[1], s[2], s[3], 0, 0, oh, ow];
    launch_with(
        "maxpool_forward",
        p,
        [g.k, g.stride, g.pad],
        &[x, &out, &arg],
        out.numel(),
    )?;
    Ok((out, arg))
}

/// Gradient of [`max_pool`]: dy [N,C,OH,OW] routed to the winners of an (H, W) input.
pub fn max_pool_backward(
    dy: &Tensor,
    arg: &Tensor,
    hw: (usize, usize),
    g: PoolGeom,
) -> Result<Tensor> {
    let s = dy.expect_rank("max_pool_backward", 4)?.to_vec();
    ensure(arg.shape() == s.as_slice(), "max_pool_backward", || {
        format!("indices {:?} vs gradient {s:?}", arg.shape())
    })?;
    let out = Tensor::empty(dy.gpu(), &[s[0], s[1], hw.0, hw.1], DType::F32);
    let p = [s[0], s[1], hw.0, hw.1, 0, 0, s[2], s[3]];
    launch_with(
        "maxpool_backward",
        p,
        [g.k, g.stride, g.pad],
        &[dy, &out, arg],
        out.numel(),
    )?;
    Ok(out)
}

/// g [N,C,H,W] read at the winners: the adjoint of [`max_pool_backward`].
pub fn max_pool_select(g: &Tensor, arg: &Tensor) -> Result<Tensor> {
    let s = g.expect_rank("max_pool_select", 4)?.to_vec();
    let a = arg.shape().to_vec();
    let out = Tensor::empty(g.gpu(), &a, DType::F32);
    let p = [s[0], s[1], s[2], s[3], 0, 0, a[2], a[3]];
    launch_with("maxpool_select", p, [1, 1, 0], &[g, &out, arg], out.numel())?;
    Ok(out)
}
