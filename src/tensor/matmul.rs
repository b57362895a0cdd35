//! Matrix products with transposed-operand variants.

use super::{DType, Tensor, ensure, fits_u32};
use crate::error::{Result, shape_err};
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Gpu, Kernel, Tiling, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/matmul.wgsl.
    pub(crate) struct MatmulParams for matmul::Params {
        m: u32,
        n: u32,
        k: u32,
        batch_stride_a: u32,
        batch_stride_b: u32,
        batch_stride_c: u32,
    }
}

/// `op(a) @ op(b)` for 2-D tensors, where op transposes when the flag is set:
/// a is [M,K] (or [K,M] with `trans_a`), b is [K,N] (or [N,K] with `trans_b`); returns [M,N].
pub fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let (m, k, n) = dims(a, b, trans_a, trans_b)?;
    let out = Tensor::empty(a.gpu(), &[m, n], DType::F32);
    launch(a, b, &out, trans_a, trans_b, false, (m, k, n))?;
    Ok(out)
}

/// `out += op(a) @ op(b)` in place (used to accumulate gradients).
pub fn matmul_acc(
    out: &Tensor,
    a: &Tensor,
    b: &Tensor,
    trans_a: bool,
    trans_b: bool,
) -> Result<()> {
    let (m, k, n) = dims(a, b, trans_a, trans_b)?;
    ensure(out.shape() == [m, n], "matmul_acc", || {
        format!("output {:?} but product is [{m}, {n}]", out.shape())
    })?;
    launch(a, b, out, trans_a, trans_b, true, (m, k, n))
}

/// `batch` independent products `out[z] = a[z] @ op(b[z])`: a holds `batch` row-major [M,K]
/// matrices back to back, b [K,N] ones (or [N,K] ones with `trans_b`), out [M,N] ones.
pub(crate) fn matmul_batched(
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    batch: usize,
    (m, k, n): (usize, usize, usize),
    trans_b: bool,
) -> Result<()> {
    ensure(
        a.numel() == batch * m * k && b.numel() == batch * n * k && out.numel() == batch * m * n,
        "matmul_batched",
        || {
            format!(
                "{batch} x [{m},{k}] x [{k},{n}] from {:?} x {:?}",
                a.shape(),
                b.shape()
            )
        },
    )?;
    if batch == 0 || m == 0 || n == 0 || k == 0 {
        return Err(shape_err("matmul_batched", "an empty dimension"));
    }
    fits_u32("matmul_batched", batch * m * k.max(n))?;
    let p = MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batch_stride_a: (m * k) as u32,
        batch_stride_b: (k * n) as u32,
        batch_stride_c: (m * n) as u32,
    };
    let consts = constants(false, trans_b, false);
    let (entry, tile) = entry(a.gpu());
    let kernel = Kernel::with_constants(entry, &consts);
    let groups = [
        n.div_ceil(tile) as u32,
        m.div_ceil(tile) as u32,
        batch as u32,
    ];
    super::launch_noted(&kernel, &p, &[a, b, out], groups, || {
        (
            format!("matmul {batch}x {m}x{k}x{n}"),
            2.0 * (batch * m * k * n) as f64,
        )
    })
}

fn dims(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<(usize, usize, usize)> {
    a.expect_dtype("matmul", DType::F32)?;
    b.expect_dtype("matmul", DType::F32)?;
    let sa = a.expect_rank("matmul", 2)?;
    let sb = b.expect_rank("matmul", 2)?;
    let (m, k) = if trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let (kb, n) = if trans_b {
        (sb[1], sb[0])
    } else {
        (sb[0], sb[1])
    };
    ensure(k == kb, "matmul", || {
        format!(
            "inner dimensions differ: {:?}{} x {:?}{}",
            sa,
            if trans_a { "^T" } else { "" },
            sb,
            if trans_b { "^T" } else { "" }
        )
    })?;
    Ok((m, k, n))
}

/// The kernel's override constants for one transposition / accumulation choice.
fn constants(trans_a: bool, trans_b: bool, acc: bool) -> [(&'static str, f64); 3] {
    [
        ("TRANS_A", trans_a as u32 as f64),
        ("TRANS_B", trans_b as u32 as f64),
        ("ACCUMULATE", acc as u32 as f64),
    ]
}

/// The entry point for the GPU's kernel shape and the side of the square tile of C one
/// workgroup computes: `main` (8x8 register blocks per lane, 128) or `tiled` (workgroup-memory
/// tiles, 64). Both take the same parameters.
fn entry(gpu: &Gpu) -> (&'static str, usize) {
    match gpu.tiling() {
        Tiling::Workgroup => ("tiled", 64),
        _ => ("main", 128),
    }
}

/// Every variant `launch` can create: both entries with all eight flag combinations.
pub(super) fn kernels() -> Vec<KernelVariant> {
    let mut out = Vec::new();
    for entry in ["main", "tiled"] {
        for bits in 0..8u32 {
            let c = constants(bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            out.push(KernelVariant::of(&Kernel::<MatmulParams>::with_constants(
                entry, &c,
            )));
        }
    }
    out
}

fn launch(
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    trans_a: bool,
    trans_b: bool,
    acc: bool,
    (m, k, n): (usize, usize, usize),
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    fits_u32("matmul", m * k.max(n))?;
    let constants = constants(trans_a, trans_b, acc);
    let (entry, tile) = entry(a.gpu());
    let kernel = Kernel::with_constants(entry, &constants);
    if k == 0 {
        // An empty sum: zeros (or nothing to add).
        if !acc {
            super::elementwise::fill(out, 0.0)?;
        }
        return Ok(());
    }
    let p = MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        ..Default::default()
    };
    let groups = [n.div_ceil(tile) as u32, m.div_ceil(tile) as u32, 1];
    super::launch_noted(&kernel, &p, &[a, b, out], groups, || {
        (format!("matmul {m}x{k}x{n}"), 2.0 * (m * k * n) as f64)
    })
}
