//! Row-wise softmax and log-softmax, the soft-label cross-entropy with additive margins, and
//! the gather by label (`pick`) with its adjoint.

use super::elementwise::{add, exp, mul, neg, reshape, sub, sum_axes, sum_to};
use super::{Grads, Op, inputs};
use crate::autograd::{Var, grad_enabled};
use crate::error::{Result, shape_err};
use crate::tensor::{Tensor, index, softmax as sm};

/// A softmax-family node and what its backward needs.
pub(in crate::autograd) enum SoftmaxOp {
    /// x[r, labels[r]]; input x.
    Pick { labels: Tensor },
    /// Its adjoint: g[r] scattered to column labels[r]; input g.
    Unpick { labels: Tensor },
    /// Input x.
    LogSoftmax,
    /// Input x.
    Softmax,
    /// Inputs z, t, and q when there are margins.
    SoftCe,
}

/// x[r, labels[r]] for x [B, C]: gather by label.
pub fn pick(x: &Var, labels: &Tensor) -> Result<Var> {
    let v = index::pick(x.value(), labels)?;
    let labels = labels.clone();
    Ok(Var::from_op(
        v,
        Op::Softmax(SoftmaxOp::Pick { labels }),
        &[x],
    ))
}

fn unpick(g: &Var, labels: &Tensor, classes: usize) -> Result<Var> {
    let v = index::unpick(g.value(), labels, classes)?;
    let labels = labels.clone();
    Ok(Var::from_op(
        v,
        Op::Softmax(SoftmaxOp::Unpick { labels }),
        &[g],
    ))
}

/// Row-wise log-softmax of [B, C].
pub fn log_softmax(x: &Var) -> Result<Var> {
    let v = sm::log_softmax(x.value())?;
    Ok(Var::from_op(v, Op::Softmax(SoftmaxOp::LogSoftmax), &[x]))
}

/// Row-wise softmax of [B, C].
pub fn softmax(x: &Var) -> Result<Var> {
    let v = sm::softmax(x.value())?;
    Ok(Var::from_op(v, Op::Softmax(SoftmaxOp::Softmax), &[x]))
}

/// Per-sample soft-label cross-entropy with additive margins:
/// loss[r] = -sum_j t[r,j] * log_softmax(z[r] + q)_j, for z, t [B, C] and q [C].
pub fn soft_cross_entropy(z: &Var, t: &Var, q: Option<&Var>) -> Result<Var> {
    let v = sm::soft_cross_entropy(z.value(), t.value(), q.map(|q| q.value()))?;
    let op = Op::Softmax(SoftmaxOp::SoftCe);
    Ok(match q {
        Some(q) => Var::from_op(v, op, &[z, t, q]),
        None => Var::from_op(v, op, &[z, t]),
    })
}

/// Per-sample cross-entropy with integer labels (a one-hot soft label).
pub fn cross_entropy(z: &Var, labels: &Tensor, q: Option<&Var>) -> Result<Var> {
    let classes = z.shape().get(1).copied().unwrap_or(0);
    let t = Var::constant(index::one_hot(labels, classes)?);
    soft_cross_entropy(z, &t, q)
}

impl SoftmaxOp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            SoftmaxOp::Pick { .. } => "pick",
            SoftmaxOp::Unpick { .. } => "unpick",
            SoftmaxOp::LogSoftmax => "log_softmax",
            SoftmaxOp::Softmax => "softmax",
            SoftmaxOp::SoftCe => "soft_cross_entropy",
        }
    }

    /// The rules, for node `y` (whose value softmax and log-softmax reuse) and output
    /// gradient `g`.
    pub(super) fn backward(&self, y: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
        match self {
            SoftmaxOp::Pick { labels } => {
                let [x] = inputs(y)?;
                grads.put(x, || unpick(g, labels, x.shape()[1]))
            }
            SoftmaxOp::Unpick { labels } => {
                let [up] = inputs(y)?;
                grads.put(up, || pick(g, labels))
            }
            SoftmaxOp::LogSoftmax => {
                // dx = g - softmax(x) * rowsum(g), with softmax(x) = exp(y).
                let [x] = inputs(y)?;
                grads.put(x, || {
                    let rows = reshape(&sum_axes(g, &[1])?, &[g.shape()[0], 1])?;
                    sub(g, &mul(&exp(y)?, &rows)?)
                })
            }
            SoftmaxOp::Softmax => {
                // dx = s * (g - rowsum(g * s)) with s = y.
                let [x] = inputs(y)?;
                grads.put(x, || {
                    let rows = reshape(&sum_axes(&mul(g, y)?, &[1])?, &[g.shape()[0], 1])?;
                    mul(y, &sub(g, &rows)?)
                })
            }
            SoftmaxOp::SoftCe => match &y.0.inputs[..] {
                [z, t] => soft_ce_backward(z, None, t, g, grads),
                [z, t, q] => soft_ce_backward(z, Some(q), t, g, grads),
                _ => Err(shape_err(
                    "backward",
                    format!("soft_cross_entropy with {} inputs", y.0.inputs.len()),
                )),
            },
        }
    }
}

/// loss = -sum_j t_j log_softmax(z + q)_j per row; with s = softmax(z + q):
/// dz = g (s * sum_j t_j - t), dq = sum over rows of dz, dt = -g log_softmax(z + q).
fn soft_ce_backward(z: &Var, q: Option<&Var>, t: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
    let b = z.shape()[0];
    let gcol = reshape(g, &[b, 1])?;
    let need_z = grads.needs(z) || q.is_some_and(|q| grads.needs(q));
    if need_z {
        let dz = if grad_enabled() {
            // Differentiable form (for double backward).
            let zq = match q {
                Some(q) => add(z, q)?,
                None => z.clone(),
            };
            let tsum = reshape(&sum_axes(t, &[1])?, &[b, 1])?;
            mul(&gcol, &sub(&mul(&softmax(&zq)?, &tsum)?, t)?)?
        } else {
            Var::constant(sm::soft_cross_entropy_backward(
                z.value(),
                t.value(),
                q.map(|q| q.value()),
                g.value(),
            )?)
        };
        grads.put(z, || Ok(dz.clone()))?;
        if let Some(q) = q {
            grads.put(q, || sum_to(&dz, q.shape()))?;
        }
    }
    grads.put(t, || {
        let zq = match q {
            Some(q) => add(z, q)?,
            None => z.clone(),
        };
        neg(&mul(&gcol, &log_softmax(&zq)?)?)
    })
}
