//! 2-D convolution as implicit GEMM: forward, input gradient and weight gradient, in the
//! lane-blocked shape for CPU drivers or the workgroup-tiled one for GPUs, or by Winograd
//! (winograd.rs) for 3x3 stride-1 kernels. The three form a closed family: each one's
//! derivatives are the other two.

use super::winograd::Tile;
use super::{DType, Tensor, ensure, fits_u32, launch_noted, reduce};
use crate::error::{Result, shape_err};
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{ConvAlgo, Gpu, Kernel, Tiling, kernel_params};

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

kernel_params! {
    /// Mirrors `Params` in shaders/conv2d.wgsl.
    pub(crate) struct ConvParams for conv2d::Params {
        n: u32,
        ci: u32,
        h: u32,
        w: u32,
        co: u32,
        oh: u32,
        ow: u32,
        kh: u32,
        kw: u32,
        stride: u32,
        pad: u32,
        chunk: u32, // weight_grad: output pixels per split
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
    /// Sizes from the input shape [N, Ci, H, W], the output channels and plane, and the kernel.
    fn new(input: &[usize], co: usize, (oh, ow): (usize, usize), (kh, kw): (usize, usize)) -> Dims {
        Dims {
            n: input[0],
            ci: input[1],
            h: input[2],
            w: input[3],
            co,
            oh,
            ow,
            kh,
            kw,
        }
    }

    /// The kernel side if the kernel is square and at most [`MAX_CONST_KSIZE`] (a constant
    /// the shader can unroll), else 0 (the shader reads it from the parameters).
    fn square_kernel(&self) -> usize {
        if self.kh == self.kw && self.kh <= MAX_CONST_KSIZE {
            self.kh
        } else {
            0
        }
    }

    /// Multiply-adds of the convolution, counted as two operations each (the same in all
    /// three directions).
    fn flops(&self) -> f64 {
        2.0 * (self.n * self.co * self.oh * self.ow * self.ci * self.kh * self.kw) as f64
    }

    /// A profile label: direction, channels, input plane, kernel and stride.
    fn label(&self, direction: &str, g: ConvGeom) -> (String, f64) {
        (
            format!(
                "conv2d {direction} {}->{} {}x{} k{} s{}",
                self.ci, self.co, self.h, self.w, self.kh, g.stride
            ),
            self.flops(),
        )
    }

    fn params(&self, g: ConvGeom, chunk: usize) -> ConvParams {
        let u = |v: usize| v as u32;
        ConvParams {
            n: u(self.n),
            ci: u(self.ci),
            h: u(self.h),
            w: u(self.w),
            co: u(self.co),
            oh: u(self.oh),
            ow: u(self.ow),
            kh: u(self.kh),
            kw: u(self.kw),
            stride: u(g.stride),
            pad: u(g.pad),
            chunk: u(chunk),
        }
    }
}

/// Largest stride the kernels are compiled for (STRIDE is a constant; the model families use
/// 1 and 2). A finite set keeps every pipeline in the registry the translation tests check.
pub const MAX_STRIDE: usize = 4;

/// Largest square kernel side compiled as the constant KSIZE (the model families use 1, 3
/// and 7); larger or non-square kernels read their size from the parameters.
const MAX_CONST_KSIZE: usize = 7;

/// Largest weight-gradient kernel row taken whole by one invocation (KW_RUN).
const MAX_KW_RUN: usize = 4;

/// Widest weight-gradient workgroup (WGX); WGX*WGY = 256.
const MAX_WGX: usize = 16;

/// Workgroup shape (WGX, WGY) with WGX*WGY = 256 and WGX just covering `cols` columns.
fn workgroup(cols: usize) -> (u32, u32) {
    let need = cols.next_power_of_two().clamp(1, MAX_WGX) as u32;
    (need, 256 / need)
}

/// Override constants of the forward and input-gradient kernels.
fn pixel_constants(stride: usize, ksize: usize, cb: usize) -> [(&'static str, f64); 3] {
    [
        ("STRIDE", stride as f64),
        ("KSIZE", ksize as f64),
        ("CH_BLOCKS", cb as f64),
    ]
}

/// The weight-gradient register block for `cb` channel blocks and kernel width `kw`:
/// (output channels per invocation CO_PER, kernel columns per invocation KW_RUN).
fn weight_grad_block(cb: usize, kw: usize) -> (usize, usize) {
    // 16 x 8 was the fastest block measured on lavapipe (1.6x over 4 x 4); with fewer than
    // 8 input channels (the stem) 8 x 4 was.
    let co_per = if cb == 2 { 16 } else { 8 };
    // With few input channels (the stem) an invocation also takes a whole kernel row of
    // taps (KW_RUN), so it still does many multiply-adds per gathered value: 1.5x there.
    let kw_run = if cb == 1 && kw <= MAX_KW_RUN { kw } else { 1 };
    (co_per, kw_run)
}

/// Override constants of the weight-gradient kernel.
fn weight_grad_constants(
    (wx, wy): (u32, u32),
    stride: usize,
    cb: usize,
    (co_per, kw_run): (usize, usize),
) -> [(&'static str, f64); 6] {
    [
        ("WGX", wx as f64),
        ("WGY", wy as f64),
        ("STRIDE", stride as f64),
        ("CH_BLOCKS", cb as f64),
        ("CO_PER", co_per as f64),
        ("KW_RUN", kw_run as f64),
    ]
}

/// Every variant the three launchers can create: the constant functions above over every
/// stride, kernel size, channel count and block shape they accept (duplicates removed by
/// the registry).
pub(super) fn kernels() -> Vec<KernelVariant> {
    let mut out = Vec::new();
    for stride in 1..=MAX_STRIDE {
        for cb in [1, 2] {
            // Square sides up to the constant limit, plus 0 (larger or non-square).
            for ksize in 0..=MAX_CONST_KSIZE {
                let c = pixel_constants(stride, ksize, cb);
                for entry in ["forward", "input_grad"] {
                    out.push(KernelVariant::of(&Kernel::<ConvParams>::with_constants(
                        entry, &c,
                    )));
                }
            }
            for cols in 1..=MAX_WGX {
                for kw in 1..=MAX_KW_RUN + 1 {
                    let c = weight_grad_constants(
                        workgroup(cols),
                        stride,
                        cb,
                        weight_grad_block(cb, kw),
                    );
                    out.push(KernelVariant::of(&Kernel::<ConvParams>::with_constants(
                        "weight_grad",
                        &c,
                    )));
                }
            }
        }
    }
    for dir in [
        TiledGemm::Forward,
        TiledGemm::InputGrad,
        TiledGemm::WeightGrad,
    ] {
        for rows in [1, 2, 4] {
            out.push(KernelVariant::of(&Kernel::<ConvParams>::with_constants(
                "tiled",
                &dir.constants(rows),
            )));
        }
    }
    out
}

/// The three products of the workgroup-tiled kernel (`DIRECTION` in WGSL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TiledGemm {
    Forward = 0,
    InputGrad = 1,
    WeightGrad = 2,
}

impl TiledGemm {
    fn constants(self, rows: usize) -> [(&'static str, f64); 2] {
        [("DIRECTION", self as u32 as f64), ("ROWS", rows as f64)]
    }

    /// The direction's name in profiles (the same as the lane kernels').
    fn name(self) -> &'static str {
        match self {
            TiledGemm::Forward => "forward",
            TiledGemm::InputGrad => "input_grad",
            TiledGemm::WeightGrad => "weight_grad",
        }
    }
}

/// Columns of the GEMM output one tiled workgroup computes (`TILE` in WGSL).
const TILE: usize = 64;

/// Rows of C per invocation of the tiled kernel (`ROWS`): the fewest 16-row blocks that cover
/// `m` rows, at most 4 (a 64-row tile).
fn tiled_rows(m: usize) -> usize {
    m.div_ceil(16).next_power_of_two().min(4)
}

/// Runs one direction of convolution `d` with the workgroup-tiled kernel (GPUs): `src` is x
/// (forward, weight_grad) or dy (input_grad), `other` the weight (forward, input_grad) or dy
/// (weight_grad). Returns the output, or the weight gradient summed over its splits.
fn tiled(
    dir: TiledGemm,
    op: &'static str,
    src: &Tensor,
    other: &Tensor,
    d: Dims,
    g: ConvGeom,
) -> Result<Tensor> {
    fits_u32(op, src.numel().max(other.numel()))?;
    let khw = d.kh * d.kw;
    let pixels = d.n * d.oh * d.ow;
    // GEMM sizes (M, N), output shape and splits of the reduction.
    let (m, n, shape, splits) = match dir {
        TiledGemm::Forward => (d.co, pixels, vec![d.n, d.co, d.oh, d.ow], 1),
        TiledGemm::InputGrad => (d.ci, d.n * d.h * d.w, vec![d.n, d.ci, d.h, d.w], 1),
        TiledGemm::WeightGrad => {
            // A few output tiles and a long reduction: split it so that some 256 workgroups
            // exist (enough for a large GPU), each summing at least 1,024 pixels.
            let tiles = (d.ci * khw).div_ceil(TILE) * d.co.div_ceil(16 * tiled_rows(d.co));
            let splits = (256 / tiles).clamp(1, pixels.div_ceil(1024).max(1));
            (
                d.co,
                d.ci * khw,
                vec![splits, d.co, d.ci, d.kh, d.kw],
                splits,
            )
        }
    };
    let out = Tensor::empty(src.gpu(), &shape, DType::F32);
    fits_u32(op, out.numel())?;
    let rows = tiled_rows(m);
    let groups = [
        n.div_ceil(TILE) as u32,
        m.div_ceil(16 * rows) as u32,
        splits as u32,
    ];
    launch_noted(
        &Kernel::with_constants("tiled", &dir.constants(rows)),
        &d.params(g, pixels.div_ceil(splits)),
        &[src, other, &out],
        groups,
        || d.label(dir.name(), g),
    )?;
    match (dir, splits) {
        (TiledGemm::WeightGrad, 1) => out.reshape(&[d.co, d.ci, d.kh, d.kw]),
        (TiledGemm::WeightGrad, _) => reduce::sum_axes(&out, &[0]),
        _ => Ok(out),
    }
}

/// Output pixels per invocation in the forward and input-gradient kernels (`PIX` in WGSL).
const PIX: usize = 8;

/// Blocks of 4 channels per invocation (`CH_BLOCKS` in WGSL): a second block only pays when
/// there are at least 8 channels to fill it.
fn channel_blocks(channels: usize) -> usize {
    if channels >= 8 { 2 } else { 1 }
}

/// Checks the geometry and that both operands are rank 4; returns their shapes.
fn operands<'a>(
    op: &'static str,
    g: ConvGeom,
    a: &'a Tensor,
    b: &'a Tensor,
) -> Result<(&'a [usize], &'a [usize])> {
    ensure((1..=MAX_STRIDE).contains(&g.stride), op, || {
        format!("stride {} is not between 1 and {MAX_STRIDE}", g.stride)
    })?;
    Ok((a.expect_rank(op, 4)?, b.expect_rank(op, 4)?))
}

/// The two kernels that compute whole output pixels, PIX pixels of 4 * CH_BLOCKS channels per
/// invocation: the forward pass (from x) and the input gradient (from dy).
#[derive(Debug, Clone, Copy)]
enum PixelPass {
    Forward,
    InputGrad,
}

/// Launches `pass` on `src` (x or dy) and the weight `w`; returns its output.
fn pixel_pass(
    pass: PixelPass,
    op: &'static str,
    src: &Tensor,
    w: &Tensor,
    d: Dims,
    g: ConvGeom,
) -> Result<Tensor> {
    if src.gpu().tiling() == Tiling::Workgroup {
        let dir = match pass {
            PixelPass::Forward => TiledGemm::Forward,
            PixelPass::InputGrad => TiledGemm::InputGrad,
        };
        return tiled(dir, op, src, w, d, g);
    }
    // Entry, output channels and plane, pixels per z slice and z slices.
    let (entry, channels, (oh, ow), rows, slices) = match pass {
        PixelPass::Forward => ("forward", d.co, (d.oh, d.ow), d.n * d.oh * d.ow, 1),
        // One z slice per stride phase; phase (0, 0) has the most pixels.
        PixelPass::InputGrad => (
            "input_grad",
            d.ci,
            (d.h, d.w),
            d.n * d.h.div_ceil(g.stride) * d.w.div_ceil(g.stride),
            g.stride * g.stride,
        ),
    };
    let out = Tensor::empty(src.gpu(), &[d.n, channels, oh, ow], DType::F32);
    fits_u32(op, out.numel().max(src.numel()))?;
    let cb = channel_blocks(channels);
    let consts = pixel_constants(g.stride, d.square_kernel(), cb);
    let groups = [
        rows.div_ceil(256 * PIX) as u32,
        channels.div_ceil(4 * cb) as u32,
        slices as u32,
    ];
    launch_noted(
        &Kernel::with_constants(entry, &consts),
        &d.params(g, 0),
        &[src, w, &out],
        groups,
        || d.label(entry, g),
    )?;
    Ok(out)
}

/// Convolution of x [N,Ci,H,W] with w [Co,Ci,KH,KW]: returns [N,Co,OH,OW].
pub fn conv2d(x: &Tensor, w: &Tensor, g: ConvGeom) -> Result<Tensor> {
    const OP: &str = "conv2d";
    let (xs, ws) = operands(OP, g, x, w)?;
    x.expect_dtype(OP, DType::F32)?;
    ensure(xs[1] == ws[1], OP, || {
        format!(
            "input {xs:?} has {} channels, weight {ws:?} expects {}",
            xs[1], ws[1]
        )
    })?;
    let (Some(oh), Some(ow)) = (g.out_size(xs[2], ws[2]), g.out_size(xs[3], ws[3])) else {
        return Err(shape_err(
            OP,
            format!("kernel {ws:?} larger than padded input {xs:?}"),
        ));
    };
    let d = Dims::new(xs, ws[0], (oh, ow), (ws[2], ws[3]));
    if let Some(tile) = winograd_tile(x.gpu(), &d, g) {
        return super::winograd::conv2d(x, w, g.pad, tile);
    }
    pixel_pass(PixelPass::Forward, OP, x, w, d, g)
}

/// Gradient of conv2d with respect to its input (a transposed convolution): dy [N,Co,OH,OW],
/// w [Co,Ci,KH,KW], input size (H, W); returns [N,Ci,H,W].
pub fn conv2d_input_grad(
    dy: &Tensor,
    w: &Tensor,
    input_hw: (usize, usize),
    g: ConvGeom,
) -> Result<Tensor> {
    const OP: &str = "conv2d_input_grad";
    let (ys, ws) = operands(OP, g, dy, w)?;
    let (h, wd) = input_hw;
    ensure(
        ys[1] == ws[0]
            && g.out_size(h, ws[2]) == Some(ys[2])
            && g.out_size(wd, ws[3]) == Some(ys[3]),
        OP,
        || format!("gradient {ys:?} does not match weight {ws:?} on a {h}x{wd} input"),
    )?;
    let d = Dims::new(
        &[ys[0], ws[1], h, wd],
        ws[0],
        (ys[2], ys[3]),
        (ws[2], ws[3]),
    );
    if let Some(tile) = winograd_tile(dy.gpu(), &d, g) {
        return super::winograd::conv2d_input_grad(dy, w, g.pad, tile);
    }
    pixel_pass(PixelPass::InputGrad, OP, dy, w, d, g)
}

/// The Winograd tile convolution `d` runs with in every direction (the weight gradient only
/// has F(4x4), the only tile this returns), or `None` for the direct kernels: a 3x3 stride-1
/// kernel whose transformed tiles fit one storage binding, when the GPU's [`ConvAlgo`] asks
/// for it (auto: where `bench kernels` measured it faster; forced: F(4x4, 3x3)).
fn winograd_tile(gpu: &Gpu, d: &Dims, g: ConvGeom) -> Option<Tile> {
    if !super::winograd::applies((d.kh, d.kw), g.stride, g.pad) {
        return None;
    }
    let tile = match gpu.conv_algo() {
        ConvAlgo::Direct => None,
        ConvAlgo::Winograd => Some(Tile::F4),
        ConvAlgo::Auto => super::winograd::pays(d.n, d.ci, d.co, (d.oh, d.ow)),
    }?;
    let binding = gpu.device().limits().max_storage_buffer_binding_size as usize;
    let bytes = super::winograd::largest_buffer(tile, d.n, d.ci.max(d.co), (d.oh, d.ow));
    (bytes <= binding).then_some(tile)
}

/// Gradient of conv2d with respect to its weight: x [N,Ci,H,W], dy [N,Co,OH,OW], kernel size
/// (KH, KW); returns [Co,Ci,KH,KW].
pub fn conv2d_weight_grad(
    x: &Tensor,
    dy: &Tensor,
    (kh, kw): (usize, usize),
    g: ConvGeom,
) -> Result<Tensor> {
    const OP: &str = "conv2d_weight_grad";
    let (xs, ys) = operands(OP, g, x, dy)?;
    ensure(
        xs[0] == ys[0]
            && g.out_size(xs[2], kh) == Some(ys[2])
            && g.out_size(xs[3], kw) == Some(ys[3]),
        OP,
        || format!("input {xs:?} and gradient {ys:?} do not fit a {kh}x{kw} kernel"),
    )?;
    let d = Dims::new(xs, ys[1], (ys[2], ys[3]), (kh, kw));
    if winograd_tile(x.gpu(), &d, g).is_some() {
        return super::winograd::conv2d_weight_grad(x, dy, g.pad);
    }
    if x.gpu().tiling() == Tiling::Workgroup {
        return tiled(TiledGemm::WeightGrad, OP, x, dy, d, g);
    }
    fits_u32(OP, x.numel().max(dy.numel()))?;
    // Invocations along x: 4 * cb input channels at kw_run taps each; along y: co_per output
    // channels.
    let cb = channel_blocks(d.ci);
    let (co_per, kw_run) = weight_grad_block(cb, kw);
    let blocks = d.ci.div_ceil(4 * cb) * kh * (kw / kw_run);
    let pixels = d.n * d.oh * d.ow;
    let (wx, wy) = workgroup(blocks);
    let tiles = (blocks.div_ceil(wx as usize) * d.co.div_ceil(co_per * wy as usize)).max(1);
    // Split the long pixel reduction so that ~64 workgroups exist, each doing >= 256 pixels.
    let splits = (64 / tiles).clamp(1, pixels.div_ceil(256).max(1)).min(512);
    let chunk = pixels.div_ceil(splits);
    let consts = weight_grad_constants((wx, wy), g.stride, cb, (co_per, kw_run));
    let partial = Tensor::empty(x.gpu(), &[splits, d.co, d.ci, kh, kw], DType::F32);
    let groups = [
        blocks.div_ceil(wx as usize) as u32,
        d.co.div_ceil(co_per * wy as usize) as u32,
        splits as u32,
    ];
    launch_noted(
        &Kernel::with_constants("weight_grad", &consts),
        &d.params(g, chunk),
        &[x, dy, &partial],
        groups,
        || d.label("weight_grad", g),
    )?;
    if splits == 1 {
        return partial.reshape(&[d.co, d.ci, kh, kw]);
    }
    reduce::sum_axes(&partial, &[0])
}
