//! Differentiable ops, one file per family (the elementwise ops share theirs with the
//! reductions and shape ops). Each file holds its family's node enum (what a node keeps
//! besides its input `Var`s: geometry, axes, saved statistics), its forwards, and below them
//! the backward rules of the same ops. Families depend only on `elementwise.rs` and on this
//! file. Backward rules use only `Var` ops, so they are recorded (and differentiable) when
//! the engine runs them with grad mode on.

mod batchnorm;
mod conv;
mod elementwise;
mod matmul;
mod pool;
mod softmax;

pub use batchnorm::*;
pub use conv::*;
pub use elementwise::*;
pub use matmul::*;
pub use pool::*;
pub use softmax::*;

use super::Var;
use crate::error::{Result, shape_err};

/// The op that produced a node: its family and what its backward rule needs besides the
/// node's inputs, which the node holds itself.
pub(super) enum Op {
    /// A leaf, or a result computed with nothing to record.
    Leaf,
    Matmul(matmul::MatmulOp),
    Conv(conv::ConvOp),
    Elementwise(elementwise::ElementwiseOp),
    Reduce(elementwise::ReduceOp),
    Pool(pool::PoolOp),
    Softmax(softmax::SoftmaxOp),
    BatchNorm(batchnorm::BatchNormOp),
}

impl Op {
    /// A short name for debugging.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Op::Leaf => "leaf",
            Op::Matmul(op) => op.name(),
            Op::Conv(op) => op.name(),
            Op::Elementwise(op) => op.name(),
            Op::Reduce(op) => op.name(),
            Op::Pool(op) => op.name(),
            Op::Softmax(op) => op.name(),
            Op::BatchNorm(op) => op.name(),
        }
    }
}

/// Gradients for the inputs of `v` given its output gradient `g`; `need` says which inputs
/// lie on a path to a requested input (the others are skipped).
pub(super) fn backward(v: &Var, g: &Var, need: &dyn Fn(&Var) -> bool) -> Result<Vec<(Var, Var)>> {
    let mut grads = Grads {
        need,
        out: Vec::new(),
    };
    // Each family's rule reads the node `v` itself: its inputs, and its output value,
    // which some rules reuse (the ReLU mask, exp of a log-softmax).
    match &v.0.op {
        Op::Leaf => {}
        Op::Matmul(op) => op.backward(v, g, &mut grads)?,
        Op::Conv(op) => op.backward(v, g, &mut grads)?,
        Op::Elementwise(op) => op.backward(v, g, &mut grads)?,
        Op::Reduce(op) => op.backward(v, g, &mut grads)?,
        Op::Pool(op) => op.backward(v, g, &mut grads)?,
        Op::Softmax(op) => op.backward(v, g, &mut grads)?,
        Op::BatchNorm(op) => op.backward(v, g, &mut grads)?,
    }
    Ok(grads.out)
}

/// The input gradients one backward rule produces, in the order it produces them (the order
/// in which the engine sums them, so it is part of the numbers).
struct Grads<'a> {
    need: &'a dyn Fn(&Var) -> bool,
    out: Vec<(Var, Var)>,
}

impl Grads<'_> {
    /// Whether input `p` needs a gradient.
    fn needs(&self, p: &Var) -> bool {
        (self.need)(p)
    }

    /// Adds `f()` as the gradient of `p`; `f` runs only when `p` needs one.
    fn put(&mut self, p: &Var, f: impl FnOnce() -> Result<Var>) -> Result<()> {
        if self.needs(p) {
            self.out.push((p.clone(), f()?));
        }
        Ok(())
    }
}

/// The inputs of node `y` as an array: every op of a kind records the same number.
fn inputs<const N: usize>(y: &Var) -> Result<&[Var; N]> {
    let inputs = &y.0.inputs[..];
    inputs.try_into().map_err(|_| {
        shape_err(
            "backward",
            format!("{} with {} inputs, not {N}", y.op_name(), inputs.len()),
        )
    })
}
