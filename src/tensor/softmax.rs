//! Row-wise softmax, log-softmax and the cross-entropy losses of the Dynamic Loss method
//! (soft labels with per-class margins, and hard labels for ranking the training set).

use super::{DType, Tensor, ensure, fits_u32};
use crate::error::Result;
use crate::gpu::{Kernel, grid_1d};

const SOFTMAX_ROWS: Kernel<'static> = Kernel::new("softmax", "softmax_rows");
const SOFT_CE: Kernel<'static> = Kernel::new("softmax", "soft_ce");
const SOFT_CE_BACK: Kernel<'static> = Kernel::new("softmax", "soft_ce_back");
const HARD_CE: Kernel<'static> = Kernel::new("softmax", "hard_ce");

/// Checks that `x` is f32 [B, C] and returns (B, C) as kernel words.
fn logits_shape(op: &'static str, x: &Tensor) -> Result<(u32, u32)> {
    x.expect_dtype(op, DType::F32)?;
    let s = x.expect_rank(op, 2)?;
    fits_u32(op, x.numel())?;
    Ok((s[0] as u32, s[1] as u32))
}

/// Checks the optional margins (f32 [C]); returns the `has_margin` word.
fn margin_word(op: &'static str, margins: Option<&Tensor>, cols: u32) -> Result<u32> {
    let Some(q) = margins else { return Ok(0) };
    q.expect_dtype(op, DType::F32)?;
    ensure(q.shape() == [cols as usize], op, || {
        format!("margins {:?} must be [{cols}]", q.shape())
    })?;
    Ok(1)
}

/// Checks soft targets (f32, same shape as the logits).
fn check_targets(op: &'static str, x: &Tensor, t: &Tensor) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    ensure(t.shape() == x.shape(), op, || {
        format!("targets {:?} differ from logits {:?}", t.shape(), x.shape())
    })
}

fn rows_op(x: &Tensor, mode: u32, op: &'static str) -> Result<Tensor> {
    let (rows, cols) = logits_shape(op, x)?;
    let out = Tensor::empty(x.gpu(), x.shape(), DType::F32);
    if cols > 0 {
        x.gpu().dispatch(
            &SOFTMAX_ROWS,
            &[rows, cols, 0, mode],
            &[x.buffer(), out.buffer()],
            grid_1d(rows as usize, 256),
        )?;
    }
    Ok(out)
}

/// Softmax over the last axis of f32 [B, C].
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    rows_op(x, 0, "softmax")
}

/// Log-softmax over the last axis of f32 [B, C].
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    rows_op(x, 1, "log_softmax")
}

/// Per-sample soft cross-entropy [B]: `-sum_j t_j * log_softmax(z + q)_j`, q optional [C].
pub fn soft_cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    margins: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "soft_cross_entropy";
    let (rows, cols) = logits_shape(OP, logits)?;
    ensure(cols > 0, OP, || "logits need at least one class".into())?;
    check_targets(OP, logits, targets)?;
    let has_margin = margin_word(OP, margins, cols)?;
    let q = margins.unwrap_or(logits);
    let out = Tensor::empty(logits.gpu(), &[rows as usize], DType::F32);
    logits.gpu().dispatch(
        &SOFT_CE,
        &[rows, cols, has_margin, 0],
        &[logits.buffer(), q.buffer(), targets.buffer(), out.buffer()],
        grid_1d(rows as usize, 256),
    )?;
    Ok(out)
}

/// Gradient [B, C] of `sum_r g_r * soft_cross_entropy_r` w.r.t. the logits (and margins, summed
/// over rows): `g_r * (softmax(z + q)_j * sum_i t_i - t_j)`.
pub fn soft_cross_entropy_backward(
    logits: &Tensor,
    targets: &Tensor,
    margins: Option<&Tensor>,
    grad_loss: &Tensor,
) -> Result<Tensor> {
    const OP: &str = "soft_cross_entropy_backward";
    let (rows, cols) = logits_shape(OP, logits)?;
    ensure(cols > 0, OP, || "logits need at least one class".into())?;
    check_targets(OP, logits, targets)?;
    let has_margin = margin_word(OP, margins, cols)?;
    grad_loss.expect_dtype(OP, DType::F32)?;
    ensure(grad_loss.shape() == [rows as usize], OP, || {
        format!("grad_loss {:?} must be [{rows}]", grad_loss.shape())
    })?;
    let q = margins.unwrap_or(logits);
    let out = Tensor::empty(logits.gpu(), logits.shape(), DType::F32);
    logits.gpu().dispatch(
        &SOFT_CE_BACK,
        &[rows, cols, has_margin, 0],
        &[
            logits.buffer(),
            q.buffer(),
            targets.buffer(),
            grad_loss.buffer(),
            out.buffer(),
        ],
        grid_1d(rows as usize, 256),
    )?;
    Ok(out)
}

/// Per-sample cross-entropy [B] with integer labels u32 [B]: `logsumexp(z + q) - (z + q)_y`.
///
/// A label outside [0, C) gives NaN for that sample (labels are not checked on the host).
pub fn cross_entropy_hard(
    logits: &Tensor,
    labels: &Tensor,
    margins: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "cross_entropy_hard";
    let (rows, cols) = logits_shape(OP, logits)?;
    ensure(cols > 0, OP, || "logits need at least one class".into())?;
    labels.expect_dtype(OP, DType::U32)?;
    ensure(labels.shape() == [rows as usize], OP, || {
        format!("labels {:?} must be [{rows}]", labels.shape())
    })?;
    let has_margin = margin_word(OP, margins, cols)?;
    let q = margins.unwrap_or(logits);
    let out = Tensor::empty(logits.gpu(), &[rows as usize], DType::F32);
    logits.gpu().dispatch(
        &HARD_CE,
        &[rows, cols, has_margin, 0],
        &[logits.buffer(), q.buffer(), labels.buffer(), out.buffer()],
        grid_1d(rows as usize, 256),
    )?;
    Ok(out)
}
