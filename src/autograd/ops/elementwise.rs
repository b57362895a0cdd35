//! Elementwise ops (broadcasting binary ops: add, sub, mul, the fused residual add+ReLU and
//! the ReLU backward; affine maps; unary functions), then the reductions and shape ops that
//! undo broadcasting (sums, means, broadcast_to, reshape). The two groups' backward rules are
//! written with each other, so they share a file; every other family's rules use them.

use super::{Grads, Op, inputs};
use crate::autograd::Var;
use crate::error::{Result, shape_err};
use crate::tensor::elementwise::{self as ew, Binary, Unary};
use crate::tensor::reduce;

// ---------------------------------------------------------------- elementwise

/// An elementwise node's function (its inputs are the operands).
pub(in crate::autograd) enum ElementwiseOp {
    /// One of add, sub, mul, add_relu, relu_grad.
    Binary(Binary),
    /// alpha * x + beta (beta does not enter the gradient).
    Affine { alpha: f32 },
    /// A unary function.
    Map(Unary),
}

fn binary(a: &Var, b: &Var, op: Binary) -> Result<Var> {
    let v = ew::binary(a.value(), b.value(), op)?;
    Ok(Var::from_op(
        v,
        Op::Elementwise(ElementwiseOp::Binary(op)),
        &[a, b],
    ))
}

fn unary(x: &Var, op: Unary) -> Result<Var> {
    let v = ew::map(x.value(), op)?;
    Ok(Var::from_op(
        v,
        Op::Elementwise(ElementwiseOp::Map(op)),
        &[x],
    ))
}

/// Declares `pub fn name(a, b)` as the binary op `Binary::Op` of its two arguments.
macro_rules! binary_ops {
    ($($(#[doc = $doc:literal])* $name:ident($a:ident, $b:ident) => $op:ident;)*) => {$(
        $(#[doc = $doc])*
        pub fn $name($a: &Var, $b: &Var) -> Result<Var> {
            binary($a, $b, Binary::$op)
        }
    )*};
}

/// Declares `pub fn name(x)` as the unary function `Unary::Op` of x.
macro_rules! unary_ops {
    ($($(#[doc = $doc:literal])* $name:ident => $op:ident;)*) => {$(
        $(#[doc = $doc])*
        pub fn $name(x: &Var) -> Result<Var> {
            unary(x, Unary::$op)
        }
    )*};
}

binary_ops! {
    /// a + b with broadcasting.
    add(a, b) => Add;
    /// relu(a + b) in one pass (a residual join).
    add_relu(a, b) => AddRelu;
    /// a - b with broadcasting.
    sub(a, b) => Sub;
    /// a * b with broadcasting.
    mul(a, b) => Mul;
    /// dy * (x > 0): the ReLU backward as a differentiable op (linear in dy, flat in x).
    relu_grad(dy, x) => ReluGrad;
}

/// alpha * x + beta.
pub fn affine(x: &Var, alpha: f32, beta: f32) -> Result<Var> {
    let v = ew::affine(x.value(), alpha, beta)?;
    Ok(Var::from_op(
        v,
        Op::Elementwise(ElementwiseOp::Affine { alpha }),
        &[x],
    ))
}

/// alpha * x.
pub fn scale(x: &Var, alpha: f32) -> Result<Var> {
    affine(x, alpha, 0.0)
}

/// -x.
pub fn neg(x: &Var) -> Result<Var> {
    affine(x, -1.0, 0.0)
}

unary_ops! {
    /// max(x, 0).
    relu => Relu;
    /// The logistic function.
    sigmoid => Sigmoid;
    /// e^x.
    exp => Exp;
    /// ln x.
    log => Log;
    /// sqrt x.
    sqrt => Sqrt;
    /// 1 / x.
    recip => Recip;
    /// x^2.
    square => Square;
}

impl ElementwiseOp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            ElementwiseOp::Binary(Binary::Add) => "add",
            ElementwiseOp::Binary(Binary::Sub) => "sub",
            ElementwiseOp::Binary(Binary::Mul) => "mul",
            ElementwiseOp::Binary(Binary::AddRelu) => "add_relu",
            ElementwiseOp::Binary(Binary::ReluGrad) => "relu_grad",
            ElementwiseOp::Binary(_) => "binary",
            ElementwiseOp::Affine { .. } => "affine",
            ElementwiseOp::Map(_) => "map",
        }
    }

    /// The rules, for node `y` (whose value several of them reuse) and output gradient `g`.
    pub(super) fn backward(&self, y: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
        match *self {
            ElementwiseOp::Binary(op) => {
                let [a, b] = inputs(y)?;
                binary_backward(op, y, a, b, g, grads)
            }
            ElementwiseOp::Affine { alpha } => {
                let [x] = inputs(y)?;
                grads.put(x, || scale(g, alpha))
            }
            ElementwiseOp::Map(op) => {
                let [x] = inputs(y)?;
                grads.put(x, || map_backward(op, y, x, g))
            }
        }
    }
}

/// Gradients of `y = op(a, b)`; sums undo the broadcasting.
fn binary_backward(
    op: Binary,
    y: &Var,
    a: &Var,
    b: &Var,
    g: &Var,
    grads: &mut Grads,
) -> Result<()> {
    match op {
        Binary::Add => {
            grads.put(a, || sum_to(g, a.shape()))?;
            grads.put(b, || sum_to(g, b.shape()))
        }
        Binary::Sub => {
            grads.put(a, || sum_to(g, a.shape()))?;
            grads.put(b, || neg(&sum_to(g, b.shape())?))
        }
        Binary::Mul => {
            grads.put(a, || sum_to(&mul(g, b)?, a.shape()))?;
            grads.put(b, || sum_to(&mul(g, a)?, b.shape()))
        }
        Binary::AddRelu => {
            // The mask of relu(a + b) is the mask of the output itself.
            let m = relu_grad(g, y)?;
            grads.put(a, || sum_to(&m, a.shape()))?;
            grads.put(b, || sum_to(&m, b.shape()))
        }
        // relu_grad(dy, x) is linear in dy and flat in x.
        Binary::ReluGrad => grads.put(a, || relu_grad(g, b)),
        other => Err(shape_err(
            "backward",
            format!("{other:?} has no gradient rule"),
        )),
    }
}

/// dx for y = op(x), written with y where that is cheaper.
fn map_backward(op: Unary, y: &Var, x: &Var, g: &Var) -> Result<Var> {
    match op {
        Unary::Relu => relu_grad(g, x),
        Unary::Sigmoid => mul(g, &mul(y, &affine(y, -1.0, 1.0)?)?),
        Unary::Exp => mul(g, y),
        Unary::Log => mul(g, &recip(x)?),
        Unary::Sqrt => mul(g, &scale(&recip(y)?, 0.5)?),
        Unary::Recip => neg(&mul(g, &square(y)?)?),
        Unary::Square => mul(g, &scale(x, 2.0)?),
        other => Err(shape_err(
            "backward",
            format!("{other:?} has no gradient rule"),
        )),
    }
}

// ---------------------------------------------------------------- reductions and shape ops

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
