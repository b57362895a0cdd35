//! The bi-level meta step: a virtual SGD step of the classifier taken with the graph kept,
//! the meta loss of the virtually updated classifier, and its exact second-order gradient
//! with respect to the meta-net parameters.

use super::meta_net::{MetaNet, corrected_labels, dynamic_loss};
use crate::autograd::{self as ag, Var};
use crate::error::{Result, shape_err};
use crate::nn::{Mode, Model, RunningStats};
use crate::tensor::Tensor;

/// The real optimizer's state the virtual step copies.
pub struct VirtualSgd<'a> {
    /// Current learning rate.
    pub lr: f32,
    /// Momentum factor.
    pub momentum: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Momentum buffers per parameter (`None` before the first real step).
    pub buffers: Option<&'a [Tensor]>,
}

/// w' = w - lr (momentum buf + grad + wd w), differentiable in w and grad.
pub fn virtual_step(w: &[Var], grads: &[Var], opt: &VirtualSgd) -> Result<Vec<Var>> {
    if w.len() != grads.len() {
        return Err(shape_err(
            "virtual_step",
            format!("{} params, {} grads", w.len(), grads.len()),
        ));
    }
    w.iter()
        .zip(grads)
        .enumerate()
        .map(|(i, (w, g))| {
            let decayed = ag::affine(w, 1.0 - opt.lr * opt.weight_decay, 0.0)?;
            let mut step = ag::scale(g, opt.lr)?;
            if let Some(bufs) = opt.buffers
                && opt.momentum != 0.0
            {
                let m = Var::constant(crate::tensor::elementwise::affine(
                    &bufs[i],
                    opt.lr * opt.momentum,
                    0.0,
                )?);
                step = ag::add(&step, &m)?;
            }
            ag::sub(&decayed, &step)
        })
        .collect()
}

/// One training batch and one meta batch.
pub struct MetaBatch<'a> {
    /// Training images (weak or strong view) [B, C, H, W].
    pub x: &'a Tensor,
    /// Given (noisy) labels u32 [B].
    pub labels: &'a Tensor,
    /// Loss-rank bins u32 [B].
    pub bins: &'a Tensor,
    /// Meta images [M, C, H, W].
    pub meta_x: &'a Tensor,
    /// Meta labels u32 [M].
    pub meta_labels: &'a Tensor,
}

/// Which parts of the meta net are active (the ablations of the paper's Table 4).
#[derive(Debug, Clone, Copy)]
pub struct MetaParts<'a> {
    /// Use the label corrector (else y* = onehot(y)).
    pub corrector: bool,
    /// Use the margin generator (else no margins, or `fixed_margins`).
    pub generator: bool,
    /// Margins used when the generator is off (Balanced Softmax's log counts).
    pub fixed_margins: Option<&'a Tensor>,
    /// Soft bound B on the generated margins: q -> B tanh(q / B).
    pub margin_bound: Option<f32>,
    /// Added to the generated margins (the "anchored margins" variant: log class counts, so
    /// the generator learns a residual around Balanced Softmax's margins).
    pub anchor: Option<&'a Tensor>,
}

/// The margins q the classifier's loss adds to its logits under the meta net `theta`: the
/// generator's (bounded, plus the anchor if any), the fixed ones, or none.
pub fn margins(meta: &MetaNet, theta: &[Var], parts: MetaParts) -> Result<Option<Var>> {
    Ok(match (parts.generator, parts.fixed_margins) {
        (true, _) => {
            let q = meta.bounded_margins(theta, parts.margin_bound)?;
            Some(match parts.anchor {
                Some(a) => ag::add(&q, &Var::constant(a.clone()))?,
                None => q,
            })
        }
        (false, Some(m)) => Some(Var::constant(m.clone())),
        (false, None) => None,
    })
}

/// The classifier's loss under the meta net `theta`: mean soft-label CE of `logits` against
/// y*, with margins q.
pub fn classifier_loss(
    meta: &MetaNet,
    theta: &[Var],
    logits: &Var,
    batch: &MetaBatch,
    yhat: &Tensor,
    parts: MetaParts,
) -> Result<Var> {
    let ystar = if parts.corrector {
        let g = meta.label_weights(theta, batch.bins, batch.labels)?;
        corrected_labels(&g, batch.labels, yhat)?
    } else {
        Var::constant(crate::tensor::index::one_hot(
            batch.labels,
            yhat.shape()[1],
        )?)
    };
    let q = margins(meta, theta, parts)?;
    dynamic_loss(logits, &ystar, q.as_ref())
}

/// How yhat, the model's own label guess, is made from detached logits.
#[derive(Debug, Clone, Copy)]
pub enum Pseudo<'a> {
    /// softmax(logits) (during warm-up).
    Softmax,
    /// A hard Gumbel-softmax sample (tau 1): one-hot of argmax(logits + Gumbel noise), with
    /// the noise drawn from this seed.
    HardGumbel(u64),
    /// The same sample with the noise's uniforms given, one per logit in row-major order
    /// (so a test can use another implementation's draws).
    HardGumbelFrom(&'a [f64]),
}

/// Where the uniforms behind a hard Gumbel sample come from.
#[derive(Debug, Clone, Copy)]
pub enum GumbelNoise<'a> {
    /// Drawn on the host from this seed, as training does.
    Seed(u64),
    /// Given, one per logit in row-major order.
    Uniforms(&'a [f64]),
}

impl<'a> GumbelNoise<'a> {
    /// The pseudo-label mode that samples with this noise.
    pub fn pseudo(self) -> Pseudo<'a> {
        match self {
            GumbelNoise::Seed(s) => Pseudo::HardGumbel(s),
            GumbelNoise::Uniforms(u) => Pseudo::HardGumbelFrom(u),
        }
    }

    /// The class each row of row-major `logits` [B, classes] draws with this noise.
    pub fn argmax(self, logits: &[f32], classes: usize) -> Result<Vec<usize>> {
        match self {
            GumbelNoise::Seed(s) => Ok(gumbel_argmax(logits, classes, s)),
            GumbelNoise::Uniforms(u) => {
                if u.len() != logits.len() {
                    return Err(shape_err(
                        "gumbel noise",
                        format!("{} uniforms for {} logits", u.len(), logits.len()),
                    ));
                }
                let mut it = u.iter().copied();
                Ok(gumbel_argmax_with(logits, classes, || it.next().unwrap()))
            }
        }
    }
}

/// yhat [B, C] from logits [B, C].
pub fn pseudo_labels(logits: &Tensor, mode: Pseudo) -> Result<Tensor> {
    let noise = match mode {
        Pseudo::Softmax => return crate::tensor::softmax::softmax(logits),
        Pseudo::HardGumbel(seed) => GumbelNoise::Seed(seed),
        Pseudo::HardGumbelFrom(u) => GumbelNoise::Uniforms(u),
    };
    let c = logits.shape()[1];
    let picks = noise.argmax(&logits.to_f32_vec()?, c)?;
    one_hot_rows(logits.gpu(), &picks, c)
}

/// The class each row of row-major `logits` [B, classes] draws in a hard Gumbel-softmax
/// sample (tau 1): argmax(logits + Gumbel noise), the noise drawn from `seed`.
pub fn gumbel_argmax(logits: &[f32], classes: usize, seed: u64) -> Vec<usize> {
    use rand::RngExt;
    let mut rng = crate::random::seeded(seed);
    gumbel_argmax_with(logits, classes, || rng.random::<f64>())
}

/// [`gumbel_argmax`] with the uniforms taken from `uniform`, one per logit in row-major order.
pub fn gumbel_argmax_with(
    logits: &[f32],
    classes: usize,
    mut uniform: impl FnMut() -> f64,
) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|row| {
            let mut best = 0;
            let mut best_v = f64::NEG_INFINITY;
            for (j, &v) in row.iter().enumerate() {
                let u = uniform().clamp(1e-12, 1.0 - 1e-12);
                let s = v as f64 - (-u.ln()).ln();
                if s > best_v {
                    best_v = s;
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// One-hot rows [B, classes] of the classes `picks`.
pub fn one_hot_rows(gpu: &crate::gpu::Gpu, picks: &[usize], classes: usize) -> Result<Tensor> {
    let mut out = vec![0.0f32; picks.len() * classes];
    for (r, &j) in picks.iter().enumerate() {
        out[r * classes + j] = 1.0;
    }
    Tensor::from_f32(gpu, &[picks.len(), classes], &out)
}

/// Result of [`meta_gradient`].
pub struct MetaGrad {
    /// The meta loss (cross-entropy of the virtually updated classifier on the meta batch).
    pub meta_loss: Var,
    /// d meta_loss / d theta, one per meta parameter (`None` for unused parts).
    pub grads: Vec<Option<Tensor>>,
    /// The classifier's dynamic loss on the training batch.
    pub train_loss: Var,
    /// The training batch's logits (detached).
    pub logits: Tensor,
    /// The pseudo-labels yhat made from them.
    pub yhat: Tensor,
    /// The virtually stepped parameters w', one per index of `virtual_params`.
    pub virtual_weights: Vec<Tensor>,
}

/// The full second-order meta gradient: forward on the training batch, dynamic loss,
/// gradient with the graph kept, virtual step over the parameters `virtual_params` (indices;
/// the rest stay fixed), meta forward, meta cross-entropy, and its gradient to `theta`.
#[allow(clippy::too_many_arguments)]
pub fn meta_gradient(
    model: &Model,
    w: &[Tensor],
    running: &RunningStats,
    meta: &MetaNet,
    theta: &[Tensor],
    batch: &MetaBatch,
    pseudo: Pseudo,
    opt: &VirtualSgd,
    virtual_params: &[usize],
    parts: MetaParts,
) -> Result<MetaGrad> {
    let wv: Vec<Var> = w
        .iter()
        .enumerate()
        .map(|(i, t)| Var::leaf(t.clone(), virtual_params.contains(&i)))
        .collect();
    let tv: Vec<Var> = theta.iter().map(|t| Var::leaf(t.clone(), true)).collect();
    let (logits, _) = model.forward(&wv, &Var::constant(batch.x.clone()), Mode::Train, running)?;
    let yhat = pseudo_labels(logits.value(), pseudo)?;
    let train_loss = classifier_loss(meta, &tv, &logits, batch, &yhat, parts)?;
    let sel: Vec<&Var> = virtual_params.iter().map(|&i| &wv[i]).collect();
    let grads: Vec<Var> = ag::grad(&[&train_loss], &sel, None, true)?
        .into_iter()
        .zip(&sel)
        .map(|(g, w)| g.unwrap_or_else(|| Var::constant(ag::zeros_like(w))))
        .collect();
    let bufs: Option<Vec<Tensor>> = opt
        .buffers
        .map(|b| virtual_params.iter().map(|&i| b[i].clone()).collect());
    let sub_opt = VirtualSgd {
        buffers: bufs.as_deref(),
        ..*opt
    };
    let sel_owned: Vec<Var> = sel.iter().map(|v| (*v).clone()).collect();
    let stepped = virtual_step(&sel_owned, &grads, &sub_opt)?;
    let mut w2 = wv.clone();
    for (k, &i) in virtual_params.iter().enumerate() {
        w2[i] = stepped[k].clone();
    }
    let (meta_logits, _) = model.forward(
        &w2,
        &Var::constant(batch.meta_x.clone()),
        Mode::Train,
        running,
    )?;
    let meta_loss = ag::mean_all(&ag::cross_entropy(&meta_logits, batch.meta_labels, None)?)?;
    let tref: Vec<&Var> = tv.iter().collect();
    let g = ag::grad(&[&meta_loss], &tref, None, false)?;
    Ok(MetaGrad {
        grads: g
            .into_iter()
            .map(|v| v.map(|v| v.value().clone()))
            .collect(),
        meta_loss,
        train_loss,
        logits: logits.value().clone(),
        yhat,
        virtual_weights: stepped.iter().map(|v| v.value().clone()).collect(),
    })
}
/// Indices of the parameters of the last `k` parameterised layers (a layer = one name
/// prefix before ".weight" / ".bias").
pub fn last_layers(names: &[String], k: Option<usize>) -> Vec<usize> {
    let layer = |n: &str| {
        n.rsplit_once('.')
            .map(|(a, _)| a.to_string())
            .unwrap_or_default()
    };
    let mut layers: Vec<String> = Vec::new();
    for n in names {
        let l = layer(n);
        if layers.last() != Some(&l) {
            layers.push(l);
        }
    }
    let keep: Vec<String> = match k {
        Some(k) if k < layers.len() => layers[layers.len() - k..].to_vec(),
        _ => layers,
    };
    (0..names.len())
        .filter(|&i| keep.contains(&layer(&names[i])))
        .collect()
}
