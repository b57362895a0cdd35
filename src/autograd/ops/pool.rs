//! Pooling: global average pooling, the option-A shortcut (a strided subsample) and max
//! pooling. Each backward is a differentiable op whose own backward is the forward again
//! (they are linear maps and their adjoints).

use super::{Grads, Op, inputs};
use crate::autograd::Var;
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor::pool::{self, PoolGeom};

/// A pooling node (one input) and what its backward needs.
pub(in crate::autograd) enum PoolOp {
    /// [N,C,H,W] -> [N,C] mean; input x.
    Gap,
    /// Its adjoint, spreading [N,C] over H x W; input dy.
    GapBackward,
    /// Option-A shortcut; input x.
    ShortcutA,
    /// Its adjoint; input dy.
    ShortcutABackward,
    /// Max pooling with the winners' indices `arg`; input x.
    MaxPool { arg: Tensor, g: PoolGeom },
    /// Its adjoint, scattering dy to the winners; input dy.
    MaxPoolBackward { arg: Tensor, g: PoolGeom },
    /// Gathers x at the winners (the adjoint of the scatter); input x.
    MaxPoolSelect { arg: Tensor, g: PoolGeom },
}

fn node(v: Tensor, op: PoolOp, input: &Var) -> Var {
    Var::from_op(v, Op::Pool(op), &[input])
}

/// Global average pooling [N,C,H,W] -> [N,C].
pub fn global_avg_pool(x: &Var) -> Result<Var> {
    let v = pool::global_avg_pool(x.value())?;
    Ok(node(v, PoolOp::Gap, x))
}

fn gap_backward(dy: &Var, hw: (usize, usize)) -> Result<Var> {
    let v = pool::global_avg_pool_backward(dy.value(), hw)?;
    Ok(node(v, PoolOp::GapBackward, dy))
}

/// The option-A shortcut: stride-2 subsample, channels zero-padded to `cout`.
pub fn shortcut_a(x: &Var, cout: usize) -> Result<Var> {
    let v = pool::shortcut_a(x.value(), cout)?;
    Ok(node(v, PoolOp::ShortcutA, x))
}

fn shortcut_a_backward(dy: &Var, cin: usize, hw: (usize, usize)) -> Result<Var> {
    let v = pool::shortcut_a_backward(dy.value(), cin, hw)?;
    Ok(node(v, PoolOp::ShortcutABackward, dy))
}

/// Max pooling of [N,C,H,W].
pub fn max_pool(x: &Var, g: PoolGeom) -> Result<Var> {
    let (v, arg) = pool::max_pool(x.value(), g)?;
    Ok(node(v, PoolOp::MaxPool { arg, g }, x))
}

fn max_pool_backward(dy: &Var, arg: &Tensor, hw: (usize, usize), g: PoolGeom) -> Result<Var> {
    let v = pool::max_pool_backward(dy.value(), arg, hw, g)?;
    let arg = arg.clone();
    Ok(node(v, PoolOp::MaxPoolBackward { arg, g }, dy))
}

fn max_pool_select(x: &Var, arg: &Tensor, g: PoolGeom) -> Result<Var> {
    let v = pool::max_pool_select(x.value(), arg)?;
    let arg = arg.clone();
    Ok(node(v, PoolOp::MaxPoolSelect { arg, g }, x))
}

/// The spatial size (H, W) of [N,C,H,W].
fn hw(x: &Var) -> (usize, usize) {
    (x.shape()[2], x.shape()[3])
}

impl PoolOp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            PoolOp::Gap => "global_avg_pool",
            PoolOp::GapBackward => "global_avg_pool_backward",
            PoolOp::ShortcutA => "shortcut_a",
            PoolOp::ShortcutABackward => "shortcut_a_backward",
            PoolOp::MaxPool { .. } => "max_pool",
            PoolOp::MaxPoolBackward { .. } => "max_pool_backward",
            PoolOp::MaxPoolSelect { .. } => "max_pool_select",
        }
    }

    /// With the winners fixed every op here is linear, and each rule is its op's adjoint.
    pub(super) fn backward(&self, y: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
        let [x] = inputs(y)?;
        match self {
            PoolOp::Gap => grads.put(x, || gap_backward(g, hw(x))),
            PoolOp::GapBackward => grads.put(x, || global_avg_pool(g)),
            PoolOp::ShortcutA => grads.put(x, || shortcut_a_backward(g, x.shape()[1], hw(x))),
            PoolOp::ShortcutABackward => grads.put(x, || shortcut_a(g, x.shape()[1])),
            PoolOp::MaxPool { arg, g: geom } | PoolOp::MaxPoolSelect { arg, g: geom } => {
                grads.put(x, || max_pool_backward(g, arg, hw(x), *geom))
            }
            PoolOp::MaxPoolBackward { arg, g: geom } => {
                grads.put(x, || max_pool_select(g, arg, *geom))
            }
        }
    }
}
