//! Sums and means over axes, and the shape ops they are adjoint to (broadcasting, reshaping).

use super::{Grads, Op, inputs, scale};
use crate::autograd::Var;
use crate::error::{Result, shape_err};
use crate::tensor::elementwise as ew;
use crate::tensor::reduce;

/// A reduction or shape node (one input, x).
pub(in crate::autograd) enum ReduceOp {
    /// Sum over these axes (removed from the shape).
    Sum { axes: Vec<usize> },
    /// Broadcast to a larger shape.
    BroadcastTo,
    /// The same data under another shape.
    Reshape,
}

/// Sum over `axes` (removed from the shape).
pub fn sum_axes(x: &Var, axes: &[usize]) -> Result<Var> {
    let v = reduce::sum_axes(x.value(), axes)?;
    let op = ReduceOp::Sum {
        axes: axes.to_vec(),
    };
    Ok(Var::from_op(v, Op::Reduce(op), &[x]))
}

/// Mean over `axes`.
pub fn mean_axes(x: &Var, axes: &[usize]) -> Result<Var> {
    let count: usize = axes
        .iter()
        .map(|&a| x.shape().get(a).copied().unwrap_or(1))
        .product();
    scale(&sum_axes(x, axes)?, 1.0 / count.max(1) as f32)
}

/// Every axis of x.
fn all_axes(x: &Var) -> Vec<usize> {
    (0..x.shape().len()).collect()
}

/// Sum of every element (shape []).
pub fn sum_all(x: &Var) -> Result<Var> {
    sum_axes(x, &all_axes(x))
}

/// Mean of every element (shape []).
pub fn mean_all(x: &Var) -> Result<Var> {
    mean_axes(x, &all_axes(x))
}

/// Expands x to `shape` by broadcasting.
pub fn broadcast_to(x: &Var, shape: &[usize]) -> Result<Var> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let v = ew::broadcast_to(x.value(), shape)?;
    Ok(Var::from_op(v, Op::Reduce(ReduceOp::BroadcastTo), &[x]))
}

/// The same data under another shape.
pub fn reshape(x: &Var, shape: &[usize]) -> Result<Var> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let v = x.value().reshape(shape)?;
    Ok(Var::from_op(v, Op::Reduce(ReduceOp::Reshape), &[x]))
}

/// Sums `g` down to `shape` (the adjoint of broadcasting to g's shape).
pub fn sum_to(g: &Var, shape: &[usize]) -> Result<Var> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let r = g.shape().len();
    if shape.len() > r {
        return Err(shape_err("sum_to", format!("{:?} to {shape:?}", g.shape())));
    }
    let off = r - shape.len();
    let axes: Vec<usize> = (0..r)
        .filter(|&i| i < off || (shape[i - off] == 1 && g.shape()[i] != 1))
        .collect();
    let s = if axes.is_empty() {
        g.clone()
    } else {
        sum_axes(g, &axes)?
    };
    reshape(&s, shape)
}

impl ReduceOp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            ReduceOp::Sum { .. } => "sum",
            ReduceOp::BroadcastTo => "broadcast_to",
            ReduceOp::Reshape => "reshape",
        }
    }

    /// Each rule is its op's adjoint: a sum's is a broadcast, a broadcast's a sum, a reshape's
    /// a reshape back.
    pub(super) fn backward(&self, y: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
        let [x] = inputs(y)?;
        match self {
            ReduceOp::Sum { axes } => grads.put(x, || {
                let mut keep = x.shape().to_vec();
                for &a in axes {
                    keep[a] = 1;
                }
                broadcast_to(&reshape(g, &keep)?, x.shape())
            }),
            ReduceOp::BroadcastTo => grads.put(x, || sum_to(g, x.shape())),
            ReduceOp::Reshape => grads.put(x, || reshape(g, x.shape())),
        }
    }
}
