//! Parameter initialisation, deterministic by seed.

use rand::RngExt;

use super::{Init, Model, ParamInfo};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::random::Rng;
use crate::tensor::Tensor;

/// A standard normal sample (Box-Muller).
pub fn normal(rng: &mut Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// (fan_in, fan_out) as PyTorch computes them: dims 1.. times the receptive field.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        _ => {
            let field: usize = shape[2..].iter().product();
            (shape[1] * field, shape[0] * field)
        }
    }
}

/// Host values for one parameter.
pub fn init_values(p: &ParamInfo, rng: &mut Rng) -> Vec<f32> {
    let n: usize = p.shape.iter().product();
    let (fan_in, fan_out) = fans(&p.shape);
    match p.init {
        Init::Const(v) => vec![v; n],
        Init::Normal(std) => (0..n).map(|_| std * normal(rng)).collect(),
        Init::KaimingNormal => {
            let std = (2.0 / fan_in as f32).sqrt();
            (0..n).map(|_| std * normal(rng)).collect()
        }
        Init::XavierNormal => {
            let std = (2.0 / (fan_in + fan_out) as f32).sqrt();
            (0..n).map(|_| std * normal(rng)).collect()
        }
        Init::XavierUniform => {
            let a = (6.0 / (fan_in + fan_out) as f32).sqrt();
            (0..n)
                .map(|_| a * (2.0 * rng.random::<f32>() - 1.0))
                .collect()
        }
    }
}

/// Freshly initialised parameter tensors for `model`, drawn from `rng`.
pub fn init_params(gpu: &Gpu, model: &Model, rng: &mut Rng) -> Result<Vec<Tensor>> {
    model
        .params
        .iter()
        .map(|p| Tensor::from_f32(gpu, &p.shape, &init_values(p, rng)))
        .collect()
}
