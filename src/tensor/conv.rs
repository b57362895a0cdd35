//! 2-D convolution as implicit GEMM: forward, input gradient and weight gradient.
//! The three form a closed family: each one's derivatives are the other two.

use super::{DType, Tensor, ensure, fits_u32, reduce};
use crate::error::Result;
use crate::gpu::Kernel;

/// Stride and zero padding of a convolution (the same in both spatial dimensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Step between windows.
    pub stride: usize,
    /// Zeros added on each border.
    pub pad: usize,
}

impl ConvGeom {
    /// Output size along one dimension for input size `i` and kernel size `k`.
    pub fn out_size(&self, i: usize, k: usize) -> Option<usize> {
        (i + 2 * self.pad)
            .checked_sub(k)
            .map(|v| v / self.stride + 1)
    }
}

/// All sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
}

impl Dims {
    /// The kernel side if the kernel is square (a constant the shader can unroll), else 0.
    fn square_kernel(&self) -> usize {
        if self.kh == self.kw { self.kh } else { 0 }
    }

    fn params(&self, g: ConvGeom, chunk: usize) -> [u32; 12] {
        [
            self.n, self.ci, self.h, self.w, self.co, self.oh, self.ow, self.kh, self.kw, g.stride,
            g.pad, chunk,
        ]
        .map(|v| v as u32)
    }
}

/// Workgroup shape (WGX, WGY) with WGX*WGY = 256 and WGX just covering `cols` columns.
fn workgroup(cols: usize) -> (u32, u32) {
    let need = cols.next_power_of_two().clamp(1, 16) as u32;
    (need, 256 / need)
}

/// Output pixels per invocation in the forward and input-gradient kernels (`PIX` in WGSL).
const PIX: usize = 8;

/// Blocks of 4 channels per invocation (`CH_BLOCKS` in WGSL): a second block only pays when
/// there are at least 8 channels to fill it.
fn channel_blocks(channels: usize) -> usize {
    if channels >= 8 { 2 } else { 1 }
}

fn kernel<'a>(entry: &'static str, consts: &'a [(&'static str, f64)]) -> Kernel<'a> {
    Kernel {
        shader: "conv2d",
        entry,
        constants: consts,
    }
}

fn check(op: &'static str, g: ConvGeom) -> Result<()> {
    ensure(g.stride >= 1, op, || "stride must be at least 1".into())
}

/// Convolution of x [N,Ci,H,W] with w [Co,Ci,KH,KW]: returns [N,Co,OH,OW].
pub fn conv2d(x: &Tensor, w: &Tensor, g: ConvGeom) -> Result<Tensor> {
    check("conv2d", g)?;
    x.expect_dtype("conv2d", DType::F32)?;
    let xs = x.expect_rank("conv2d", 4)?;
    let ws = w.expect_rank("conv2d", 4)?;
    ensure(xs[1] == ws[1], "conv2d", || {
        format!(
            "input {xs:?} has {} channels, weight {ws:?} expects {}",
            xs[1], ws[1]
        )
    })?;
    let (oh, ow) = match (g.out_size(xs[2], ws[2]), g.out_size(xs[3], ws[3])) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(crate::error::shape_err(
                "conv2d",
                format!("kernel {ws:?} larger than padded input {xs:?}"),
            ));
        }
    };
    let d = Dims {
        n: xs[0],
        ci: xs[1],
        h: xs[2],
        w: xs[3],
        co: ws[0],
        oh,
        ow,
        kh: ws[2],
        kw: ws[3],
    };
    let out = Tensor::empty(x.gpu(), &[d.n, d.co, oh, ow], DType::F32);
    fits_u32("conv2d", out.numel().max(x.numel()))?;
    let cb = channel_blocks(d.co);
    let consts = [
        ("STRIDE", g.stride as f64),
        ("KSIZE", d.square_kernel() as f64),
        ("CH_BLOCKS", cb as f64),
    ];
    let rows = d.n * oh * ow;
    let groups = [
        rows.div_ceil(256 * PIX) as u32,
        d.co.div_ceil(4 * cb) as u32,
        1,
    ];
    x.gpu().dispatch(
        &kernel("forward", &consts),
        &d.params(g, 0),
        &[x.buffer(), w.buffer(), out.buffer()],
        groups,
    )?;
    Ok(out)
}

/// Gradient of conv2d with respect to its input (a transposed convolution): dy [N,Co,OH,OW],
/// w [Co,Ci,KH,KW], input size (H, W); returns [N,Ci,H,W].
pub fn conv2d_input_grad(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    g: ConvGeom,
) -> Result<Tensor> {
    check("conv2d_input_grad", g)?;
    let ys = dy.expect_rank("conv2d_input_grad", 4)?;
    let ws = w.expect_rank("conv2d_input_grad", 4)?;
    let (h, wd) = input_hw;
    ensure(
        ys[1] == ws[0]
            && g.out_size(h, ws[2]) == Some(ys[2])
            && g.out_size(wd, ws[3]) == Some(ys[3]),
        "conv2d_input_grad",
        || format!("gradient {ys:?} does not match weight {ws:?} on a {h}x{wd} input"),
    )?;
    let d = Dims {
        n: ys[0],
        ci: ws[1],
        h,
        w: wd,
        co: ws[0],
        oh: ys[2],
        ow: ys[3],
        kh: ws[2],
        kw: ws[3],
    };
    let out = Tensor::empty(dy.gpu(), &[d.n, d.ci, h, wd], DType::F32);
    fits_u32("conv2d_input_grad", out.numel().max(dy.numel()))?;
    let cb = channel_blocks(d.ci);
    let consts = [
        ("STRIDE", g.stride as f64),
        ("KSIZE", d.square_kernel() as f64),
        ("CH_BLOCKS", cb as f64),
    ];
    // One z slice per stride phase; phase (0, 0) has the most pixels.
    let rows = d.n * h.div_ceil(g.stride) * wd.div_ceil(g.stride);
    let groups = [
        rows.div_ceil(256 * PIX) as u32,
        d.ci.div_ceil(4 * cb) as u32,
        (g.stride * g.stride) as u32,
    ];
    dy.gpu().dispatch(
        &kernel("input_grad", &consts),
        &d.params(g, 0),
        &[dy.buffer(), w.buffer(), out.buffer()],
        groups,
    )?;
    Ok(out)
}

/// Gradient of conv2d with respect to its weight: x [N,Ci,H,W], dy [N,Co,OH,OW], kernel size
/// (KH, KW); returns [Co,Ci,KH,KW].
pub fn conv2d_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    kernel_hw: (usize, usize),
    g: ConvGeom,
) -> Result<Tensor> {
    check("conv2d_weight_grad", g)?;
    let xs = x.expect_rank("conv2d_weight_grad", 4)?;
    let ys = dy.expect_rank("conv2d_weight_grad", 4)?;
    let (kh, kw) = kernel_hw;
    ensure(
        xs[0] == ys[0]
            && g.out_size(xs[2], kh) == Some(ys[2])
            && g.out_size(xs[3], kw) == Some(ys[3]),
        "conv2d_weight_grad",
        || format!("input {xs:?} and gradient {ys:?} do not fit a {kh}x{kw} kernel"),
    )?;
    let d = Dims {
        n: xs[0],
        ci: xs[1],
        h: xs[2],
        w: xs[3],
        co: ys[1],
        oh: ys[2],
        ow: ys[3],
        kh,
        kw,
    };
    fits_u32("conv2d_weight_grad", x.numel().max(dy.numel()))?;
    // Invocations along x: 4 * cb input channels at kw_run taps each; along y: co_per output
    // channels. 16 x 8 was the fastest block measured on lavapipe (1.6x over 4 x 4); with
    // fewer than 8 input channels (the stem) 8 x 4 was.
    let cb = channel_blocks(d.ci);
    let co_per = if cb == 2 { 16 } else { 8 };
    // With few input channels (the stem) an invocation also takes a whole kernel row of
    // taps (KW_RUN), so it still does many multiply-adds per gathered value: 1.5x there.
    let kw_run = if cb == 1 && kw <= 4 { kw } else { 1 };
    let blocks = d.ci.div_ceil(4 * cb) * kh * (kw / kw_run);
    let pixels = d.n * d.oh * d.ow;
    let (wx, wy) = workgroup(blocks);
    let tiles = (blocks.div_ceil(wx as usize) * d.co.div_ceil(co_per * wy as usize)).max(1);
    // Split the long pixel reduction so that ~64 workgroups exist, each doing >= 256 pixels.
    let splits = (64 / tiles).clamp(1, pixels.div_ceil(256).max(1)).min(512);
    let chunk = pixels.div_ceil(splits);
    let consts = [
        ("WGX", wx as f64),
        ("WGY", wy as f64),
        ("STRIDE", g.stride as f64),
        ("CH_BLOCKS", cb as f64),
        ("CO_PER", co_per as f64),
        ("KW_RUN", kw_run as f64),
    ];
    let partial = Tensor::empty(x.gpu(), &[splits, d.co, d.ci, kh, kw], DType::F32);
    let groups = [
        blocks.div_ceil(wx as usize) as u32,
        d.co.div_ceil(co_per * wy as usize) as u32,
        splits as u32,
    ];
    let k = Kernel {
        shader: "conv2d",
        entry: "weight_grad",
        constants: &consts,
    };
    x.gpu().dispatch(
        &k,
        &d.params(g, chunk),
        &[x.buffer(), dy.buffer(), partial.buffer()],
        groups,
    )?;
    if splits == 1 {
        return partial.reshape(&[d.co, d.ci, kh, kw]);
    }
    reduce::sum_axes(&partial, &[0])
}
