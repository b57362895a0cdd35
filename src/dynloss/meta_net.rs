//! The meta net: a label corrector g(r | y) and a margin generator q, two small MLPs trained
//! together by one Adam optimizer. Built and initialised exactly as the spec says.

use crate::autograd::{self as ag, Var};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::nn::{Init, ParamInfo, init};
use crate::tensor::{Tensor, index};

/// Hidden width of both MLPs.
pub const HIDDEN: usize = 64;
/// Initial bias of the corrector's last layer: sigmoid(3.98) ~ 0.98, trust the labels at first.
pub const CORRECTOR_BIAS: f32 = 3.98;
/// Initial bias of the generator's last layer.
pub const GENERATOR_BIAS: f32 = 1.0;

/// Shape of the meta net: rank bins R, classes C, and whether each part is a plain vector
/// (the "vector meta" ablation) instead of an MLP.
#[derive(Debug, Clone)]
pub struct MetaNet {
    /// Rank bins R.
    pub bins: usize,
    /// Classes C.
    pub classes: usize,
    /// Replace each MLP by a learnable vector (R values / C values).
    pub vector: bool,
    /// Parameter list: corrector first, then generator.
    pub params: Vec<ParamInfo>,
    /// Parameters [0, split) belong to the corrector.
    pub split: usize,
}

fn mlp_params(
    out: &mut Vec<ParamInfo>,
    prefix: &str,
    input: (usize, usize),
    classes: usize,
    last_bias: f32,
) {
    let mut push =
        |name: String, shape: Vec<usize>, init: Init| out.push(ParamInfo { name, shape, init });
    push(
        format!("{prefix}.embedding"),
        vec![input.0, input.1],
        Init::XavierUniform,
    );
    for (i, (fi, fo)) in [(HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, classes)]
        .into_iter()
        .enumerate()
    {
        push(
            format!("{prefix}.fc{i}.weight"),
            vec![fo, fi],
            Init::XavierNormal,
        );
        let b = if i == 2 { last_bias } else { 0.0 };
        push(format!("{prefix}.fc{i}.bias"), vec![fo], Init::Const(b));
    }
}

impl MetaNet {
    /// The meta net for R bins and C classes.
    pub fn new(bins: usize, classes: usize, vector: bool) -> MetaNet {
        let mut params = Vec::new();
        if vector {
            let p = |name: &str, shape: Vec<usize>, v: f32| ParamInfo {
                name: name.into(),
                shape,
                init: Init::Const(v),
            };
            params.push(p("corrector.vector", vec![bins], CORRECTOR_BIAS));
            params.push(p("generator.vector", vec![classes], GENERATOR_BIAS));
            return MetaNet {
                bins,
                classes,
                vector,
                params,
                split: 1,
            };
        }
        mlp_params(
            &mut params,
            "corrector",
            (bins, HIDDEN),
            classes,
            CORRECTOR_BIAS,
        );
        let split = params.len();
        mlp_params(
            &mut params,
            "generator",
            (1, HIDDEN),
            classes,
            GENERATOR_BIAS,
        );
        MetaNet {
            bins,
            classes,
            vector,
            params,
            split,
        }
    }

    /// Freshly initialised parameters.
    pub fn init(&self, gpu: &Gpu, rng: &mut crate::random::Rng) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|p| Tensor::from_f32(gpu, &p.shape, &init::init_values(p, rng)))
            .collect()
    }

    fn mlp(p: &[Var], input: &Var) -> Result<Var> {
        let mut h = ag::matmul(input, &p[0], false, false)?;
        for (i, pair) in p[1..].chunks(2).enumerate() {
            h = ag::linear(&h, &pair[0], Some(&pair[1]))?;
            if i < 2 {
                h = ag::relu(&h)?;
            }
        }
        Ok(h)
    }

    /// g(r | y) in (0, 1) for each sample: rank bins u32 [B], given labels u32 [B] -> [B].
    pub fn label_weights(&self, p: &[Var], bins: &Tensor, labels: &Tensor) -> Result<Var> {
        let onehot = Var::constant(index::one_hot(bins, self.bins)?);
        if self.vector {
            // sigmoid(v[r]): the label is ignored, as a vector has one value per bin.
            let v = ag::reshape(&p[0], &[self.bins, 1])?;
            let b = bins.shape()[0];
            return ag::reshape(&ag::sigmoid(&ag::matmul(&onehot, &v, false, false)?)?, &[b]);
        }
        let out = ag::sigmoid(&Self::mlp(&p[..self.split], &onehot)?)?;
        ag::pick(&out, labels)
    }

    /// The per-class margins q [C].
    pub fn margins(&self, p: &[Var]) -> Result<Var> {
        if self.vector {
            return Ok(p[self.split].clone());
        }
        let gpu = p[self.split].value().gpu();
        let one = Var::constant(Tensor::full(gpu, &[1, 1], 1.0));
        let q = Self::mlp(&p[self.split..], &one)?;
        ag::reshape(&q, &[self.classes])
    }
}

impl MetaNet {
    /// The margins, softly bounded to (-B, B) by q -> B tanh(q / B) when `bound` is given.
    pub fn bounded_margins(&self, p: &[Var], bound: Option<f32>) -> Result<Var> {
        let q = self.margins(p)?;
        match bound {
            None => Ok(q),
            // B tanh(q / B) = B (2 sigmoid(2 q / B) - 1).
            Some(b) => ag::affine(&ag::sigmoid(&ag::scale(&q, 2.0 / b)?)?, 2.0 * b, -b),
        }
    }

    /// The corrector's whole table g(r | y), [R, C] (row r: bin r, column y: given label).
    pub fn label_weight_table(&self, p: &[Var]) -> Result<Tensor> {
        let gpu = p[0].value().gpu();
        let r = self.bins as u32;
        let bins = Tensor::from_u32(gpu, &[self.bins], &(0..r).collect::<Vec<_>>())?;
        let onehot = Var::constant(index::one_hot(&bins, self.bins)?);
        if self.vector {
            let v = ag::reshape(&p[0], &[self.bins, 1])?;
            let col = ag::sigmoid(&ag::matmul(&onehot, &v, false, false)?)?;
            let ones = Var::constant(Tensor::full(gpu, &[1, self.classes], 1.0));
            return Ok(ag::matmul(&col, &ones, false, false)?.value().clone());
        }
        Ok(ag::sigmoid(&Self::mlp(&p[..self.split], &onehot)?)?
            .value()
            .clone())
    }
}

/// y* = onehot(y) g + yhat (1 - g) = yhat + g (onehot(y) - yhat), rows of [B, C].
pub fn corrected_labels(g: &Var, labels: &Tensor, yhat: &Tensor) -> Result<Var> {
    let classes = yhat.shape()[1];
    let onehot = index::one_hot(labels, classes)?;
    let diff = Var::constant(crate::tensor::elementwise::sub(&onehot, yhat)?);
    let gcol = ag::reshape(g, &[g.shape()[0], 1])?;
    ag::add(&Var::constant(yhat.clone()), &ag::mul(&gcol, &diff)?)
}

/// The dynamic loss: mean over the batch of -(y* . log_softmax(logits + q)).
pub fn dynamic_loss(logits: &Var, ystar: &Var, q: Option<&Var>) -> Result<Var> {
    ag::mean_all(&ag::soft_cross_entropy(logits, ystar, q)?)
}
