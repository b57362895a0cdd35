//! Row-wise softmax, log-softmax and the cross-entropy losses of the Dynamic Loss method
//! (soft labels with per-class margins, and hard labels for ranking the training set).

use super::{DType, Tensor, ensure, fits_u32, launch};
use crate::error::Result;
use crate::gpu::shaders::KernelVariant;
use crate::gpu::{Kernel, grid_1d, kernel_params};

kernel_params! {
    /// Mirrors `Params` in shaders/softmax.wgsl.
    pub(crate) struct SoftmaxParams for softmax::Params {
        rows: u32,
        cols: u32,
        has_margin: u32, // cross-entropy: 1 when margins are bound
        mode: u32,       // softmax_rows: 0 softmax, 1 log-softmax
    }
}

const SOFTMAX_ROWS: Kernel<'static, SoftmaxParams> = Kernel::new("softmax_rows");
const SOFT_CE: Kernel<'static, SoftmaxParams> = Kernel::new("soft_ce");
const SOFT_CE_BACK: Kernel<'static, SoftmaxParams> = Kernel::new("soft_ce_back");
const HARD_CE: Kernel<'static, SoftmaxParams> = Kernel::new("hard_ce");

/// Every kernel this file launches (none takes override constants).
pub(super) fn kernels() -> Vec<KernelVariant> {
    [SOFTMAX_ROWS, SOFT_CE, SOFT_CE_BACK, HARD_CE]
        .iter()
        .map(KernelVariant::of)
        .collect()
}

/// Checks that `x` is f32 [B, C] and returns (B, C).
fn logits_shape(op: &'static str, x: &Tensor) -> Result<(u32, u32)> {
    x.expect_dtype(op, DType::F32)?;
    let s = x.expect_rank(op, 2)?;
    fits_u32(op, x.numel())?;
    Ok((s[0] as u32, s[1] as u32))
}

/// Checks soft targets (f32, same shape as the logits).
fn check_targets(op: &'static str, x: &Tensor, t: &Tensor) -> Result<()> {
    t.expect_dtype(op, DType::F32)?;
    ensure(t.shape() == x.shape(), op, || {
        format!("targets {:?} differ from logits {:?}", t.shape(), x.shape())
    })
}

/// Checks that `t` is one value per row: `dtype` [rows].
fn check_per_row(op: &'static str, what: &str, t: &Tensor, dtype: DType, rows: u32) -> Result<()> {
    t.expect_dtype(op, dtype)?;
    ensure(t.shape() == [rows as usize], op, || {
        format!("{what} {:?} must be [{rows}]", t.shape())
    })
}

/// One cross-entropy launch: checked logits and margins, ready to bind.
struct CrossEntropy<'a> {
    p: SoftmaxParams,
    logits: &'a Tensor,
    /// The margins, or the logits standing in (unread when `has_margin` is 0).
    margins: &'a Tensor,
}

impl<'a> CrossEntropy<'a> {
    /// Checks logits f32 [B, C] with C > 0 and the optional margins f32 [C].
    fn new(op: &'static str, logits: &'a Tensor, margins: Option<&'a Tensor>) -> Result<Self> {
        let (rows, cols) = logits_shape(op, logits)?;
        ensure(cols > 0, op, || "logits need at least one class".into())?;
        if let Some(q) = margins {
            q.expect_dtype(op, DType::F32)?;
            ensure(q.shape() == [cols as usize], op, || {
                format!("margins {:?} must be [{cols}]", q.shape())
            })?;
        }
        let p = SoftmaxParams {
            rows,
            cols,
            has_margin: margins.is_some() as u32,
            mode: 0,
        };
        Ok(CrossEntropy {
            p,
            logits,
            margins: margins.unwrap_or(logits),
        })
    }

    /// Records `k`, one invocation per row, binding logits, margins, `rest` and a new `out_shape`
    /// output; returns the output.
    fn launch(
        &self,
        k: &Kernel<SoftmaxParams>,
        rest: &[&Tensor],
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let out = Tensor::empty(self.logits.gpu(), out_shape, DType::F32);
        let mut bufs = vec![self.logits, self.margins];
        bufs.extend_from_slice(rest);
        bufs.push(&out);
        launch(k, &self.p, &bufs, grid_1d(self.p.rows as usize, 256))?;
        Ok(out)
    }

    /// Rows as a shape: [B].
    fn rows(&self) -> [usize; 1] {
        [self.p.rows as usize]
    }
}

fn rows_op(x: &Tensor, mode: u32, op: &'static str) -> Result<Tensor> {
    let (rows, cols) = logits_shape(op, x)?;
    let out = Tensor::empty(x.gpu(), x.shape(), DType::F32);
    if cols > 0 {
        let p = SoftmaxParams {
            rows,
            cols,
            has_margin: 0,
            mode,
        };
        launch(&SOFTMAX_ROWS, &p, &[x, &out], grid_1d(rows as usize, 256))?;
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
    soft_ce("soft_cross_entropy", logits, targets, margins, None)
}

/// Gradient [B, C] of `sum_r g_r * soft_cross_entropy_r` w.r.t. the logits (and margins, summed
/// over rows): `g_r * (softmax(z + q)_j * sum_i t_i - t_j)`.
pub fn soft_cross_entropy_backward(
    logits: &Tensor,
    targets: &Tensor,
    margins: Option<&Tensor>,
    grad_loss: &Tensor,
) -> Result<Tensor> {
    soft_ce(
        "soft_cross_entropy_backward",
        logits,
        targets,
        margins,
        Some(grad_loss),
    )
}

/// The soft-label loss per row, or with `grad_loss` its gradient w.r.t. the logits.
fn soft_ce(
    op: &'static str,
    logits: &Tensor,
    targets: &Tensor,
    margins: Option<&Tensor>,
    grad_loss: Option<&Tensor>,
) -> Result<Tensor> {
    let ce = CrossEntropy::new(op, logits, margins)?;
    check_targets(op, logits, targets)?;
    match grad_loss {
        None => ce.launch(&SOFT_CE, &[targets], &ce.rows()),
        Some(g) => {
            check_per_row(op, "grad_loss", g, DType::F32, ce.p.rows)?;
            ce.launch(&SOFT_CE_BACK, &[targets, g], logits.shape())
        }
    }
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
    let ce = CrossEntropy::new(OP, logits, margins)?;
    check_per_row(OP, "labels", labels, DType::U32, ce.p.rows)?;
    ce.launch(&HARD_CE, &[labels], &ce.rows())
}
