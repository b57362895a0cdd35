//! Elementwise ops: broadcasting binary ops (add, sub, mul, the fused residual add+ReLU and
//! the ReLU backward), affine maps and unary functions.

use super::{Grads, Op, inputs, sum_to};
use crate::autograd::Var;
use crate::error::{Result, shape_err};
use crate::tensor::elementwise::{self as ew, Binary, Unary};

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
