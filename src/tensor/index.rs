//! Integer-indexed access: one-hot labels, row gather/scatter, and picking one element per row.
//!
//! Indices are not checked on the host (that would need a readback): the kernels never read or
//! write out of range, giving 0 for an out-of-range label or index (`scatter_rows` skips it).

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::Result;
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/index.wgsl.
    pub(crate) struct IndexParams for index::Params {
        rows: u32,     // B: index entries
        cols: u32,     // C or D: row length
        src_rows: u32, // gather: rows of src; scatter: rows of out
    }
}

const ONE_HOT: Kernel<'static, IndexParams> = Kernel::new("one_hot");
const GATHER_ROWS: Kernel<'static, IndexParams> = Kernel::new("gather_rows");
const PICK: Kernel<'static, IndexParams> = Kernel::new("pick");
const UNPICK: Kernel<'static, IndexParams> = Kernel::new("unpick");
const SCATTER_ROWS: Kernel<'static, IndexParams> = Kernel::new("scatter_rows");

/// Every kernel this file launches (none takes override constants).
pub(super) fn kernels() -> Vec<KernelVariant> {
    [ONE_HOT, GATHER_ROWS, PICK, UNPICK, SCATTER_ROWS]
        .iter()
        .map(KernelVariant::of)
        .collect()
}

/// Checks that `idx` is u32 [B] and returns B.
fn index_len(op: &'static str, idx: &Tensor) -> Result<usize> {
    idx.expect_dtype(op, DType::U32)?;
    Ok(idx.expect_rank(op, 1)?[0])
}

/// Checks that `src` is f32 [rows, cols] and returns (rows, cols).
fn matrix(op: &'static str, src: &Tensor) -> Result<(usize, usize)> {
    src.expect_dtype(op, DType::F32)?;
    let s = src.expect_rank(op, 2)?;
    Ok((s[0], s[1]))
}

/// Checks that `src` is f32 [B, D] and `idx` (named `what`) u32 [B]; returns (B, D).
fn matrix_with_index(
    op: &'static str,
    what: &str,
    src: &Tensor,
    idx: &Tensor,
) -> Result<(usize, usize)> {
    let (b, d) = matrix(op, src)?;
    ensure(idx.shape() == [b], op, || {
        format!(
            "{what} {:?} must be [{b}] for src {:?}",
            idx.shape(),
            src.shape()
        )
    })?;
    index_len(op, idx)?;
    Ok((b, d))
}

/// Records `k` with parameters (rows, cols, src_rows) over `items` invocations unless there is
/// nothing to do.
fn launch_items(
    k: &Kernel<IndexParams>,
    op: &'static str,
    [rows, cols, src_rows]: [usize; 3],
    tensors: &[&Tensor],
    items: usize,
) -> Result<()> {
    fits_u32(op, items)?;
    if items == 0 {
        return Ok(());
    }
    let p = IndexParams {
        rows: rows as u32,
        cols: cols as u32,
        src_rows: src_rows as u32,
    };
    launch(k, &p, tensors, grid_1d(items, 256))
}

/// One-hot rows f32 [B, classes] of labels u32 [B] (a label >= classes gives a zero row).
pub fn one_hot(labels: &Tensor, classes: usize) -> Result<Tensor> {
    const OP: &str = "one_hot";
    let b = index_len(OP, labels)?;
    fits_u32(OP, b * classes)?;
    let out = Tensor::empty(labels.gpu(), &[b, classes], DType::F32);
    launch_items(&ONE_HOT, OP, [b, classes, 0], &[labels, &out], b * classes)?;
    Ok(out)
}

/// Rows `src[idx[r]]` of f32 [N, D] for idx u32 [B], giving [B, D] (zero row if idx[r] >= N).
pub fn gather_rows(src: &Tensor, idx: &Tensor) -> Result<Tensor> {
    const OP: &str = "gather_rows";
    let (n, d) = matrix(OP, src)?;
    let b = index_len(OP, idx)?;
    fits_u32(OP, n * d)?;
    let out = Tensor::empty(src.gpu(), &[b, d], DType::F32);
    launch_items(&GATHER_ROWS, OP, [b, d, n], &[src, idx, &out], b * d)?;
    Ok(out)
}

/// `src[r, labels[r]]` of f32 [B, C] for labels u32 [B], giving [B] (0 if the label >= C).
pub fn pick(src: &Tensor, labels: &Tensor) -> Result<Tensor> {
    const OP: &str = "pick";
    let (b, c) = matrix_with_index(OP, "labels", src, labels)?;
    fits_u32(OP, b * c)?;
    let out = Tensor::empty(src.gpu(), &[b], DType::F32);
    launch_items(&PICK, OP, [b, c, 0], &[src, labels, &out], b)?;
    Ok(out)
}

/// Gradient of [`pick`]: f32 [B, classes] with `grad[r]` at (r, labels[r]) and zeros elsewhere.
pub fn unpick(grad: &Tensor, labels: &Tensor, classes: usize) -> Result<Tensor> {
    const OP: &str = "unpick";
    grad.expect_dtype(OP, DType::F32)?;
    let b = index_len(OP, labels)?;
    ensure(grad.shape() == [b], OP, || {
        format!(
            "grad {:?} must match labels {:?}",
            grad.shape(),
            labels.shape()
        )
    })?;
    let out = Tensor::empty(grad.gpu(), &[b, classes], DType::F32);
    let bufs = [grad, labels, &out];
    launch_items(&UNPICK, OP, [b, classes, 0], &bufs, b * classes)?;
    Ok(out)
}

/// f32 [dst_rows, D] of zeros except row `idx[r]` = `src[r]` for src [B, D], idx u32 [B].
///
/// Indices must be unique (with duplicates, which row wins is unspecified); an index
/// `>= dst_rows` is skipped.
pub fn scatter_rows(dst_rows: usize, src: &Tensor, idx: &Tensor) -> Result<Tensor> {
    const OP: &str = "scatter_rows";
    let (b, d) = matrix_with_index(OP, "idx", src, idx)?;
    fits_u32(OP, dst_rows * d)?;
    let out = Tensor::zeros(src.gpu(), &[dst_rows, d], DType::F32);
    let bufs = [src, idx, &out];
    launch_items(&SCATTER_ROWS, OP, [b, d, dst_rows], &bufs, b * d)?;
    Ok(out)
}
