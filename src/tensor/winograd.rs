//! 3x3 stride-1 convolutions by Winograd's minimal filtering: F(2x2, 3x3) makes 16
//! multiplications per 2x2 output tile and input channel instead of 36 (2.25x fewer),
//! F(4x4, 3x3) 36 per 4x4 tile instead of 144 (4x fewer), each at the cost of three
//! memory-bound transforms around one batched matmul (shaders/winograd.wgsl). Forward pass
//! and input gradient with either tile; the weight gradient with F(4x4).

use super::{DType, Tensor, ensure, launch_noted};
use crate::error::{Result, shape_err};
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/winograd.wgsl.
    pub(crate) struct WinogradParams for winograd::Params {
        n: u32,
        ci: u32,
        h: u32,
        w: u32,
        co: u32,
        oh: u32,
        ow: u32,
        pad: u32,
        tiles_h: u32,
        tiles_w: u32,
        lanes_log2: u32,
    }
}

/// The output tile of a Winograd convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// F(2x2, 3x3): 4x4 transformed tiles.
    F2,
    /// F(4x4, 3x3): 6x6 transformed tiles.
    F4,
}

impl Tile {
    /// Output pixels along each side of a tile.
    pub fn side(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Values of one transformed tile ((side + 2)^2).
    fn values(self) -> usize {
        (self.side() + 2).pow(2)
    }

    /// The entry points' names carry the tile ("input_transform", "input_transform4").
    fn entry(self, stage: &'static str) -> &'static str {
        match (self, stage) {
            (Tile::F2, "input") => "input_transform",
            (Tile::F2, "filter") => "filter_transform",
            (Tile::F2, _) => "output_transform",
            (Tile::F4, "input") => "input_transform4",
            (Tile::F4, "filter") => "filter_transform4",
            (Tile::F4, _) => "output_transform4",
        }
    }
}

/// Every variant the launchers here can create.
pub(super) fn kernels() -> Vec<KernelVariant> {
    let mut out = vec![
        KernelVariant::of(&Kernel::<WinogradParams>::new("output_grad_transform4")),
        KernelVariant::of(&Kernel::<WinogradParams>::new("weight_grad_products4")),
        KernelVariant::of(&Kernel::<WinogradParams>::new("filter_grad_transform4")),
    ];
    for tile in [Tile::F2, Tile::F4] {
        for stage in ["input", "output"] {
            out.push(KernelVariant::of(&Kernel::<WinogradParams>::new(
                tile.entry(stage),
            )));
        }
        for flip in [false, true] {
            out.push(KernelVariant::of(
                &Kernel::<WinogradParams>::with_constants(
                    tile.entry("filter"),
                    &flip_constant(flip),
                ),
            ));
        }
    }
    out
}

fn flip_constant(flip: bool) -> [(&'static str, f64); 1] {
    [("FLIP", flip as u32 as f64)]
}

/// The shader parameters of a stride-1 3x3 convolution of n x ci x h x w into co channels
/// with padding `pad`, tiled th x tw per image, with 2^`lanes_log2` lanes per block of the
/// weight gradient's products.
fn params(
    n: usize,
    ci: usize,
    (h, w): (usize, usize),
    co: usize,
    pad: usize,
    (th, tw): (usize, usize),
    lanes_log2: u32,
) -> WinogradParams {
    let u = |v: usize| v as u32;
    WinogradParams {
        n: u(n),
        ci: u(ci),
        h: u(h),
        w: u(w),
        co: u(co),
        oh: u(h + 2 * pad - 2),
        ow: u(w + 2 * pad - 2),
        pad: u(pad),
        tiles_h: u(th),
        tiles_w: u(tw),
        lanes_log2,
    }
}

/// Whether a convolution of kernel `k`, stride `stride` and padding `pad` can run here.
pub fn applies(k: (usize, usize), stride: usize, pad: usize) -> bool {
    k == (3, 3) && stride == 1 && pad <= 2
}

/// The shaders divide tile indices in single precision, exact below 2^24 tiles.
const MAX_TILES: usize = 1 << 24;

/// Bytes of the largest buffer a convolution with `tile` over `n` images of an `oh` x `ow`
/// output plane with at most `channels` channels on either side needs (`usize::MAX` past
/// the tiles the shaders index, so that the caller falls back to the direct kernels).
pub fn largest_buffer(tile: Tile, n: usize, channels: usize, (oh, ow): (usize, usize)) -> usize {
    let m = tile.side();
    let tiles = n * oh.div_ceil(m) * ow.div_ceil(m);
    if tiles >= MAX_TILES {
        return usize::MAX;
    }
    4 * tile.values() * channels * tiles
}

/// Fails unless `tiles` tiles of `values` values over `channels` channels can be indexed.
fn tiles_fit(op: &'static str, tiles: usize, values: usize, channels: usize) -> Result<()> {
    ensure(tiles < MAX_TILES, op, || {
        format!("{tiles} tiles exceed the {MAX_TILES} the shaders index")
    })?;
    super::fits_u32(op, values * tiles * channels).map(|_| ())
}

/// The tile that beats the direct kernels on a CPU driver for a convolution over `n` images,
/// if any: 16+ channels on both sides and at least 512 output tiles (measured with `bench
/// kernels` and on the quick first run, whose 128-288 tiles ran slower; see
/// docs/benchmarks.md).
pub fn pays(n: usize, ci: usize, co: usize, (oh, ow): (usize, usize)) -> Option<Tile> {
    let tiles = n * oh.div_ceil(4) * ow.div_ceil(4);
    (ci >= 16 && co >= 16 && tiles >= 512).then_some(Tile::F4)
}

/// The same as `conv::conv2d(x, w, ConvGeom { stride: 1, pad })` for a 3x3 `w` [K,C,3,3]
/// and x [N,C,H,W]; returns [N,K,H+2pad-2,W+2pad-2].
pub fn conv2d(x: &Tensor, w: &Tensor, pad: usize, tile: Tile) -> Result<Tensor> {
    const OP: &str = "winograd conv2d";
    let (xs, ws) = (x.expect_rank(OP, 4)?, w.expect_rank(OP, 4)?);
    filter_fits(OP, ws, pad)?;
    ensure(xs[1] == ws[1], OP, || {
        format!(
            "input {xs:?} has {} channels, weight {ws:?} expects {}",
            xs[1], ws[1]
        )
    })?;
    run(x, w, ws[0], pad, false, tile)
}

/// The same as `conv::conv2d_input_grad(dy, w, (h, w), ConvGeom { stride: 1, pad })` for a
/// 3x3 `w` [K,C,3,3]: the convolution of dy [N,K,OH,OW] with w rotated by 180 degrees and its
/// channel axes swapped, padded by 2 - pad; returns [N,C,H,W].
pub fn conv2d_input_grad(dy: &Tensor, w: &Tensor, pad: usize, tile: Tile) -> Result<Tensor> {
    const OP: &str = "winograd conv2d_input_grad";
    let (ds, ws) = (dy.expect_rank(OP, 4)?, w.expect_rank(OP, 4)?);
    filter_fits(OP, ws, pad)?;
    ensure(ds[1] == ws[0], OP, || {
        format!(
            "gradient {ds:?} has {} channels, weight {ws:?} gives {}",
            ds[1], ws[0]
        )
    })?;
    run(dy, w, ws[1], 2 - pad, true, tile)
}

/// Checks that `ws` is a 3x3 filter and `pad` at most 2.
fn filter_fits(op: &'static str, ws: &[usize], pad: usize) -> Result<()> {
    ensure(ws[2..] == [3, 3] && pad <= 2, op, || {
        format!("needs a 3x3 kernel and padding <= 2, got {ws:?} and {pad}")
    })
}

/// Input transform, filter transform, 16 products, output transform: `src` [N,C,H,W] with
/// the filter read from `w` (rotated and transposed when `flip`) into `co` channels.
fn run(src: &Tensor, w: &Tensor, co: usize, pad: usize, flip: bool, tile: Tile) -> Result<Tensor> {
    const OP: &str = "winograd";
    let s = src.shape();
    let (n, ci, h, wd) = (s[0], s[1], s[2], s[3]);
    let (oh, ow) = (h + 2 * pad - 2, wd + 2 * pad - 2);
    if n == 0 || ci == 0 || co == 0 || oh == 0 || ow == 0 {
        return Err(shape_err(OP, format!("empty convolution of {s:?}")));
    }
    let m = tile.side();
    let values = tile.values();
    let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
    let tiles = n * th * tw;
    tiles_fit(OP, tiles, values, ci.max(co))?;
    let gpu = src.gpu();
    let p = params(n, ci, (h, wd), co, pad, (th, tw), 0);
    let label = |stage: &str| format!("winograd F{m} {stage} {ci}->{co} {h}x{wd}");
    let v = Tensor::empty(gpu, &[values, ci, tiles], DType::F32);
    launch_noted(
        &Kernel::new(tile.entry("input")),
        &p,
        &[src, &v],
        [tiles.div_ceil(64) as u32, ci as u32, 1],
        || (label("input"), 0.0),
    )?;
    let u = Tensor::empty(gpu, &[values, co, ci], DType::F32);
    launch_noted(
        &Kernel::with_constants(tile.entry("filter"), &flip_constant(flip)),
        &p,
        &[w, &u],
        [ci.div_ceil(64) as u32, co as u32, 1],
        || (label("filter"), 0.0),
    )?;
    let prod = Tensor::empty(gpu, &[values, co, tiles], DType::F32);
    super::matmul::matmul_batched(&u, &v, &prod, values, (co, ci, tiles), false)?;
    let out = Tensor::empty(gpu, &[n, co, oh, ow], DType::F32);
    launch_noted(
        &Kernel::new(tile.entry("output")),
        &p,
        &[&prod, &out],
        [tiles.div_ceil(64) as u32, co as u32, 1],
        || (label("output"), 0.0),
    )?;
    Ok(out)
}

/// The same as `conv::conv2d_weight_grad(x, dy, (3, 3), ConvGeom { stride: 1, pad })` by
/// F(4x4, 3x3): x [N,C,H,W], dy [N,K,H+2pad-2,W+2pad-2]; returns [K,C,3,3]. The adjoint of
/// the forward pass: dU = sum over tiles of (A dy A^T) . (B^T d B) per tile, as 36 products
/// [K, tiles] x [tiles, C] (each summed by up to 64 lanes over interleaved tiles, then over
/// the lanes), then dw = G^T dU G.
pub fn conv2d_weight_grad(x: &Tensor, dy: &Tensor, pad: usize) -> Result<Tensor> {
    const OP: &str = "winograd conv2d_weight_grad";
    let (xs, ys) = (x.expect_rank(OP, 4)?, dy.expect_rank(OP, 4)?);
    let (n, ci, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let co = ys[1];
    ensure(
        pad <= 2 && h + 2 * pad >= 3 && wd + 2 * pad >= 3,
        OP,
        || format!("input {xs:?} does not fit a 3x3 kernel with padding {pad}"),
    )?;
    let (oh, ow) = (h + 2 * pad - 2, wd + 2 * pad - 2);
    ensure(ys == [n, co, oh, ow], OP, || {
        format!("gradient {ys:?} does not match input {xs:?} with padding {pad}")
    })?;
    if n == 0 || ci == 0 || co == 0 {
        return Err(shape_err(OP, format!("empty convolution of {xs:?}")));
    }
    let (th, tw) = (oh.div_ceil(4), ow.div_ceil(4));
    let tiles = n * th * tw;
    tiles_fit(OP, tiles, 36, ci.max(co))?;
    // Lanes per 8x8 block of the products: enough to fill a 64-invocation workgroup, and no
    // more than there are tiles.
    let lanes = (64 / ci.div_ceil(8).next_power_of_two())
        .min(tiles.next_power_of_two())
        .max(1);
    let gpu = x.gpu();
    let p = params(n, ci, (h, wd), co, pad, (th, tw), lanes.trailing_zeros());
    let label = |stage: &str| format!("winograd F4 {stage} {ci}->{co} {h}x{wd}");
    let v = Tensor::empty(gpu, &[36, ci, tiles], DType::F32);
    launch_noted(
        &Kernel::new(Tile::F4.entry("input")),
        &p,
        &[x, &v],
        [tiles.div_ceil(64) as u32, ci as u32, 1],
        || (label("input"), 0.0),
    )?;
    let dm = Tensor::empty(gpu, &[36, co, tiles], DType::F32);
    launch_noted(
        &Kernel::new("output_grad_transform4"),
        &p,
        &[dy, &dm],
        [tiles.div_ceil(64) as u32, co as u32, 1],
        || (label("output grad"), 0.0),
    )?;
    let parts = Tensor::empty(gpu, &[lanes, 36 * co * ci], DType::F32);
    // Bindings in order: src (dM), dst (the partial sums), src_v (V).
    launch_noted(
        &Kernel::new("weight_grad_products4"),
        &p,
        &[&dm, &parts, &v],
        [
            (lanes * ci.div_ceil(8)).div_ceil(64) as u32,
            co.div_ceil(8) as u32,
            36,
        ],
        || {
            (
                format!("winograd F4 weight-grad products {ci}->{co} {h}x{wd}"),
                2.0 * (36 * co * ci * tiles) as f64,
            )
        },
    )?;
    drop((v, dm));
    let du = if lanes == 1 {
        parts
    } else {
        super::reduce::sum_axes(&parts, &[0])?
    };
    let dw = Tensor::empty(gpu, &[co, ci, 3, 3], DType::F32);
    launch_noted(
        &Kernel::new("filter_grad_transform4"),
        &p,
        &[&du, &dw],
        [ci.div_ceil(64) as u32, co as u32, 1],
        || (label("filter grad"), 0.0),
    )?;
    Ok(dw)
}
