//! 2-D convolution and its two gradients, each a differentiable op of its own: the three are
//! bilinear in the same pair of tensors, so each one's backward is made of the other two.

use super::{Grads, Op, inputs};
use crate::autograd::Var;
use crate::error::Result;
use crate::tensor::conv::{self, ConvGeom};

/// Which of the three a conv node is, and its stride and padding.
pub(in crate::autograd) enum ConvOp {
    /// y = conv(x, w); inputs x, w.
    Forward(ConvGeom),
    /// dx = conv^T(dy, w); inputs dy, w.
    InputGrad(ConvGeom),
    /// dw = corr(x, dy); inputs x, dy.
    WeightGrad(ConvGeom),
}

/// 2-D convolution of x [N,Ci,H,W] with w [Co,Ci,KH,KW].
pub fn conv2d(x: &Var, w: &Var, g: ConvGeom) -> Result<Var> {
    let v = conv::conv2d(x.value(), w.value(), g)?;
    Ok(Var::from_op(v, Op::Conv(ConvOp::Forward(g)), &[x, w]))
}

/// The input gradient of a convolution, as a differentiable op (a transposed convolution).
pub fn conv2d_input_grad(dy: &Var, w: &Var, hw: (usize, usize), g: ConvGeom) -> Result<Var> {
    let v = conv::conv2d_input_grad(dy.value(), w.value(), hw, g)?;
    Ok(Var::from_op(v, Op::Conv(ConvOp::InputGrad(g)), &[dy, w]))
}

/// The weight gradient of a convolution, as a differentiable op.
pub fn conv2d_weight_grad(x: &Var, dy: &Var, khw: (usize, usize), g: ConvGeom) -> Result<Var> {
    let v = conv::conv2d_weight_grad(x.value(), dy.value(), khw, g)?;
    Ok(Var::from_op(v, Op::Conv(ConvOp::WeightGrad(g)), &[x, dy]))
}

/// The spatial size (H, W) or kernel size (KH, KW) of a 4-D tensor.
fn hw(v: &Var) -> (usize, usize) {
    (v.shape()[2], v.shape()[3])
}

impl ConvOp {
    pub(super) fn name(&self) -> &'static str {
        match self {
            ConvOp::Forward(_) => "conv2d",
            ConvOp::InputGrad(_) => "conv2d_input_grad",
            ConvOp::WeightGrad(_) => "conv2d_weight_grad",
        }
    }

    /// Each of the three is bilinear, so each input's gradient is one of the other two ops.
    pub(super) fn backward(&self, y: &Var, g: &Var, grads: &mut Grads) -> Result<()> {
        match *self {
            ConvOp::Forward(geom) => {
                let [x, w] = inputs(y)?;
                grads.put(x, || conv2d_input_grad(g, w, hw(x), geom))?;
                grads.put(w, || conv2d_weight_grad(x, g, hw(w), geom))
            }
            ConvOp::InputGrad(geom) => {
                // dx = sum W * dy is bilinear: d/d(dy) is the forward conv, d/dW a weight
                // gradient.
                let [dy, w] = inputs(y)?;
                grads.put(dy, || conv2d(g, w, geom))?;
                grads.put(w, || conv2d_weight_grad(g, dy, hw(w), geom))
            }
            ConvOp::WeightGrad(geom) => {
                let [x, dy] = inputs(y)?;
                grads.put(x, || conv2d_input_grad(dy, g, hw(x), geom))?;
                grads.put(dy, || conv2d(x, g, geom))
            }
        }
    }
}
