//! Elementwise maps: unary functions, broadcasting binary ops and fused tails.

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::{Result, shape_err};
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, grid_1d, kernel_params};

/// A unary function; the discriminant is the kernel's op code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// x
    Identity = 0,
    /// -x
    Neg = 1,
    /// max(x, 0)
    Relu = 2,
    /// 1 where x > 0, else 0
    ReluMask = 3,
    /// 1 / (1 + e^-x)
    Sigmoid = 4,
    /// e^x
    Exp = 5,
    /// ln x
    Log = 6,
    /// sqrt x
    Sqrt = 7,
    /// x^2
    Square = 8,
    /// 1 / x
    Recip = 9,
    /// |x|
    Abs = 10,
    /// s (1 - s) with s = sigmoid(x)
    SigmoidGrad = 11,
}

/// A binary function; the discriminant is the kernel's op code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// a + b
    Add = 0,
    /// a - b
    Sub = 1,
    /// a * b
    Mul = 2,
    /// a / b
    Div = 3,
    /// max(a, b)
    Max = 4,
    /// relu(a + b): a residual add fused with the activation
    AddRelu = 5,
    /// a * (b > 0): ReLU backward given the pre-activation b
    ReluGrad = 6,
    /// 1 where a > b, else 0
    Gt = 7,
    /// a (with broadcasting: expands a to the output shape)
    First = 8,
}

kernel_params! {
    /// Mirrors `Params` in shaders/elementwise.wgsl.
    pub(crate) struct ElementwiseParams for elementwise::Params {
        n: u32,
        op: u32,
        bcast: u32,
        alpha: f32,
        beta: f32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
        dims: [u32; 4],
        stride_a: [u32; 4],
        stride_b: [u32; 4],
    }
}

const UNARY: Kernel<'static, ElementwiseParams> = Kernel::new("unary");
const BINARY: Kernel<'static, ElementwiseParams> = Kernel::new("binary");
const FILL: Kernel<'static, ElementwiseParams> = Kernel::new("fill");

/// Every kernel this file launches (none takes override constants).
pub(super) fn kernels() -> Vec<KernelVariant> {
    [UNARY, BINARY, FILL]
        .iter()
        .map(KernelVariant::of)
        .collect()
}

/// Parameters of a launch over `n` elements of one shape (no broadcasting).
fn flat(n: u32, op: u32, alpha: f32, beta: f32) -> ElementwiseParams {
    ElementwiseParams {
        n,
        op,
        alpha,
        beta,
        ..Default::default()
    }
}

/// Parameters of a broadcasting `binary` launch over the rank-4 output `out4` of `n` elements.
fn broadcast(
    n: u32,
    op: Binary,
    alpha: f32,
    out4: [usize; 4],
    stride_a: [u32; 4],
    stride_b: [u32; 4],
) -> ElementwiseParams {
    ElementwiseParams {
        bcast: 1,
        dims: out4.map(|d| d as u32),
        stride_a,
        stride_b,
        ..flat(n, op as u32, alpha, 0.0)
    }
}

/// `shape` (rank up to 4) padded with leading 1s to rank 4.
fn rank4(shape: &[usize]) -> [usize; 4] {
    let mut out4 = [1usize; 4];
    out4[4 - shape.len()..].copy_from_slice(shape);
    out4
}

/// `alpha * op(x) + beta`, elementwise.
pub fn unary(x: &Tensor, op: Unary, alpha: f32, beta: f32) -> Result<Tensor> {
    x.expect_dtype("unary", DType::F32)?;
    let n = fits_u32("unary", x.numel())?;
    let out = Tensor::empty(x.gpu(), x.shape(), DType::F32);
    let p = flat(n, op as u32, alpha, beta);
    launch(&UNARY, &p, &[x, &out], grid_1d(x.numel(), 256))?;
    Ok(out)
}

/// `op(x)`, elementwise.
pub fn map(x: &Tensor, op: Unary) -> Result<Tensor> {
    unary(x, op, 1.0, 0.0)
}

/// `alpha * x + beta`.
pub fn affine(x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    unary(x, Unary::Identity, alpha, beta)
}

/// Sets every element of `t` to `value` (in place).
pub fn fill(t: &Tensor, value: f32) -> Result<()> {
    t.expect_dtype("fill", DType::F32)?;
    let n = fits_u32("fill", t.numel())?;
    let p = flat(n, 0, value, 0.0);
    launch(&FILL, &p, &[t], grid_1d(t.numel(), 256))
}

/// The broadcast of two shapes by NumPy's rules (aligned at the right).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// Element strides of `shape` broadcast to rank-4 `out4` (0 on broadcast dimensions).
fn strides4(shape: &[usize], out4: &[usize; 4]) -> [u32; 4] {
    let mut s4 = [1usize; 4];
    let off = 4 - shape.len();
    s4[off..].copy_from_slice(shape);
    let mut strides = [0u32; 4];
    let mut acc = 1usize;
    for i in (0..4).rev() {
        strides[i] = if s4[i] == 1 && out4[i] != 1 {
            0
        } else {
            acc as u32
        };
        acc *= s4[i];
    }
    strides
}

/// `alpha * op(a, b)` with NumPy broadcasting (ranks up to 4).
pub fn binary_scaled(a: &Tensor, b: &Tensor, op: Binary, alpha: f32) -> Result<Tensor> {
    a.expect_dtype("binary", DType::F32)?;
    b.expect_dtype("binary", DType::F32)?;
    let shape = broadcast_shape(a.shape(), b.shape()).ok_or_else(|| {
        shape_err(
            "binary",
            format!("{:?} and {:?} do not broadcast", a.shape(), b.shape()),
        )
    })?;
    let out = Tensor::empty(a.gpu(), &shape, DType::F32);
    let n = fits_u32("binary", out.numel())?;
    let same = a.shape() == shape.as_slice() && b.shape() == shape.as_slice();
    let p = if same {
        flat(n, op as u32, alpha, 0.0)
    } else {
        ensure(shape.len() <= 4, "binary", || {
            format!("broadcast of rank {} (max 4)", shape.len())
        })?;
        let out4 = rank4(&shape);
        let (sa, sb) = (strides4(a.shape(), &out4), strides4(b.shape(), &out4));
        broadcast(n, op, alpha, out4, sa, sb)
    };
    launch(&BINARY, &p, &[a, b, &out], grid_1d(out.numel(), 256))?;
    Ok(out)
}

/// `op(a, b)` with NumPy broadcasting (ranks up to 4).
pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    binary_scaled(a, b, op, 1.0)
}

/// a + b (broadcasting).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Add)
}

/// a - b (broadcasting).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Sub)
}

/// a * b (broadcasting).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Mul)
}

/// Expands `x` to `shape` by NumPy broadcasting (ranks up to 4).
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    x.expect_dtype("broadcast_to", DType::F32)?;
    ensure(
        broadcast_shape(x.shape(), shape).as_deref() == Some(shape) && shape.len() <= 4,
        "broadcast_to",
        || format!("cannot broadcast {:?} to {shape:?}", x.shape()),
    )?;
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let out = Tensor::empty(x.gpu(), shape, DType::F32);
    let n = fits_u32("broadcast_to", out.numel())?;
    let out4 = rank4(shape);
    let p = broadcast(
        n,
        Binary::First,
        1.0,
        out4,
        strides4(x.shape(), &out4),
        [0; 4],
    );
    launch(&BINARY, &p, &[x, x, &out], grid_1d(out.numel(), 256))?;
    Ok(out)
}
