//! Global average pooling and the ResNet "option A" shortcut.

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::Result;
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/pool.wgsl.
    pub(crate) struct PoolParams for pool::Params {
        n: u32,      // batch
        c: u32,      // input channels
        h: u32,      // input height
        w: u32,      // input width
        cout: u32,   // shortcut: output channels
        pad: u32,    // shortcut: zero channels before the copied ones
        oh: u32,     // shortcut, maxpool: output height
        ow: u32,     // shortcut, maxpool: output width
        k: u32,      // maxpool: window side
        stride: u32, // maxpool: step
        mpad: u32,   // maxpool: padding (padded cells never win)
    }
}

const GAP_FORWARD: Kernel<'static, PoolParams> = Kernel::new("gap_forward");
const GAP_BACKWARD: Kernel<'static, PoolParams> = Kernel::new("gap_backward");
const SHORTCUT_FORWARD: Kernel<'static, PoolParams> = Kernel::new("shortcut_forward");
const SHORTCUT_BACKWARD: Kernel<'static, PoolParams> = Kernel::new("shortcut_backward");
const MAXPOOL_FORWARD: Kernel<'static, PoolParams> = Kernel::new("maxpool_forward");
const MAXPOOL_BACKWARD: Kernel<'static, PoolParams> = Kernel::new("maxpool_backward");
const MAXPOOL_SELECT: Kernel<'static, PoolParams> = Kernel::new("maxpool_select");

/// Every kernel this file launches (none takes override constants).
pub(super) fn kernels() -> Vec<KernelVariant> {
    [
        GAP_FORWARD,
        GAP_BACKWARD,
        SHORTCUT_FORWARD,
        SHORTCUT_BACKWARD,
        MAXPOOL_FORWARD,
        MAXPOOL_BACKWARD,
        MAXPOOL_SELECT,
    ]
    .iter()
    .map(KernelVariant::of)
    .collect()
}

/// Parameters for an [N, C, H, W] input and an (OH, OW) output plane; the shortcut and window
/// fields are zero.
fn params(nchw: [usize; 4], (oh, ow): (usize, usize)) -> PoolParams {
    let [n, c, h, w] = nchw.map(|v| v as u32);
    PoolParams {
        n,
        c,
        h,
        w,
        oh: oh as u32,
        ow: ow as u32,
        ..Default::default()
    }
}

impl PoolParams {
    /// These parameters with the max-pooling window `g`.
    fn window(self, g: PoolGeom) -> PoolParams {
        PoolParams {
            k: g.k as u32,
            stride: g.stride as u32,
            mpad: g.pad as u32,
            ..self
        }
    }
}

/// Records `k` over `n` invocations, binding the tensors in order.
fn launch_n(k: &Kernel<PoolParams>, p: PoolParams, tensors: &[&Tensor], n: usize) -> Result<()> {
    fits_u32(k.entry, n.max(tensors[0].numel()))?;
    launch(k, &p, tensors, grid_1d(n, 256))
}

/// Mean over the spatial plane: [N,C,H,W] -> [N,C].
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.expect_dtype("global_avg_pool", DType::F32)?;
    let s = x.expect_rank("global_avg_pool", 4)?.to_vec();
    let out = Tensor::empty(x.gpu(), &[s[0], s[1]], DType::F32);
    let p = params([s[0], s[1], s[2], s[3]], (0, 0));
    launch_n(&GAP_FORWARD, p, &[x, &out], s[0] * s[1])?;
    Ok(out)
}

/// Gradient of [`global_avg_pool`]: dy [N,C] spread evenly over an (H, W) plane.
pub fn global_avg_pool_backward(dy: &Tensor, hw: (usize, usize)) -> Result<Tensor> {
    let s = dy.expect_rank("global_avg_pool_backward", 2)?.to_vec();
    let out = Tensor::empty(dy.gpu(), &[s[0], s[1], hw.0, hw.1], DType::F32);
    let p = params([s[0], s[1], hw.0, hw.1], (0, 0));
    launch_n(&GAP_BACKWARD, p, &[dy, &out], out.numel())?;
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
    let p = PoolParams {
        cout: cout as u32,
        pad: shortcut_pad(s[1], cout) as u32,
        ..params([s[0], s[1], s[2], s[3]], (oh, ow))
    };
    launch_n(&SHORTCUT_FORWARD, p, &[x, &out], out.numel())?;
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
    let p = PoolParams {
        cout: s[1] as u32,
        pad: shortcut_pad(cin, s[1]) as u32,
        ..params([s[0], cin, h, w], (s[2], s[3]))
    };
    launch_n(&SHORTCUT_BACKWARD, p, &[dy, &out], out.numel())?;
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
    let p = params([s[0], s[1], s[2], s[3]], (oh, ow)).window(g);
    launch_n(&MAXPOOL_FORWARD, p, &[x, &out, &arg], out.numel())?;
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
    let p = params([s[0], s[1], hw.0, hw.1], (s[2], s[3])).window(g);
    launch_n(&MAXPOOL_BACKWARD, p, &[dy, &out, arg], out.numel())?;
    Ok(out)
}

/// g [N,C,H,W] read at the winners: the adjoint of [`max_pool_backward`].
pub fn max_pool_select(g: &Tensor, arg: &Tensor) -> Result<Tensor> {
    let s = g.expect_rank("max_pool_select", 4)?.to_vec();
    let a = arg.shape().to_vec();
    let out = Tensor::empty(g.gpu(), &a, DType::F32);
    // The select kernel reads only the winners' indices; a 1x1 window stands in.
    let one = PoolGeom {
        k: 1,
        stride: 1,
        pad: 0,
    };
    let p = params([s[0], s[1], s[2], s[3]], (a[2], a[3])).window(one);
    launch_n(&MAXPOOL_SELECT, p, &[g, &out, arg], out.numel())?;
    Ok(out)
}
