//! Matrix products: `matmul` and the fully connected layer built on it.

use super::elementwise::add;
use super::{Grads, Op, inputs};
use crate::autograd::Var;
use crate::error::Result;
use crate::tensor::matmul as mm;

/// A matmul node keeps which of its inputs (a, b) enter transposed.
pub(in crate::autograd) struct MatmulOp {
    ta: bool,
    tb: bool,
}

/// op(a) @ op(b) for 2-D variables (see [`crate::tensor::matmul::matmul`]).
pub fn matmul(a: &Var, b: &Var, ta: bool, tb: bool) -> Result<Var> {
    let v = mm::matmul(a.value(), b.value(), ta, tb)?;
    Ok(Var::from_op(v, Op::Matmul(MatmulOp { ta, tb }), &[a, b]))
}

/// x @ w^T + b for x [B, in], w [out, in], b [out].
pub fn linear(x: &Var, w: &Var, b: Option<&Var>) -> Result<Var> {
    let y = matmul(x, w, false, true)?;
    match b {
        Some(b) => add(&y, b),
        None => Ok(y),
    }
}

impl MatmulOp {
    pub(super) fn name(&self) -> &'static str {
        "matmul"
    }

    /// C = A' B' with A' = op(A), B' = op(B): dA' = G B'^T, dB' = A'^T G.
    pub(super) fn backward(&self, y: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
        let [a, b] = inputs(y)?;
        let MatmulOp { ta, tb } = *self;
        grads.put(a, || {
            if ta {
                matmul(b, g, tb, true)
            } else {
                matmul(g, b, false, !tb)
            }
        })?;
        grads.put(b, || {
            if tb {
                matmul(g, a, true, ta)
            } else {
                matmul(a, g, !ta, false)
            }
        })
    }
}
