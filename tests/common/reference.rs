//! Plain f64 CPU computations of the method's formulas, written from the specification
//! (docs/method.md) without the library's code: the meta net's two heads, the corrected
//! labels, the margin-shifted soft cross-entropy and the hard Gumbel-softmax sample.

/// Hidden width of the meta MLPs (the spec's 64).
pub const HIDDEN: usize = 64;

/// One head of the meta net as host values, in the spec's order: the embedding [rows, 64],
/// then (weight [out, in], bias [out]) of Linear(64,64), Linear(64,64) and Linear(64,C).
pub struct Mlp<'a> {
    pub embedding: &'a [f32],
    pub layers: [(&'a [f32], &'a [f32]); 3],
}

impl<'a> Mlp<'a> {
    /// The head whose 7 tensors start at `theta[at]`.
    pub fn at(theta: &'a [Vec<f32>], at: usize) -> Mlp<'a> {
        let t = |k: usize| theta[at + k].as_slice();
        Mlp {
            embedding: t(0),
            layers: [(t(1), t(2)), (t(3), t(4)), (t(5), t(6))],
        }
    }

    /// The output for embedding row `row` (the one-hot input's row), and the pre-activations
    /// of the two hidden ReLU layers (to keep finite differences away from their kinks).
    pub fn forward(&self, row: usize) -> (Vec<f64>, Vec<f64>) {
        let mut h: Vec<f64> = self.embedding[row * HIDDEN..(row + 1) * HIDDEN]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let mut pre_acts = Vec::new();
        for (k, (w, b)) in self.layers.iter().enumerate() {
            // PyTorch's Linear: y = x W^T + b with W [out, in].
            let out = b.len();
            let y: Vec<f64> = (0..out)
                .map(|o| {
                    b[o] as f64
                        + (0..h.len())
                            .map(|i| w[o * h.len() + i] as f64 * h[i])
                            .sum::<f64>()
                })
                .collect();
            if k < 2 {
                pre_acts.extend(&y);
                h = y.iter().map(|v| v.max(0.0)).collect();
            } else {
                h = y;
            }
        }
        (h, pre_acts)
    }
}

/// The logistic function.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The corrector's table g(r | y) [R][C]: sigmoid of the MLP's output for bin r, column y.
pub fn corrector_table(theta: &[Vec<f32>], bins: usize) -> Vec<Vec<f64>> {
    let mlp = Mlp::at(theta, 0);
    (0..bins)
        .map(|r| mlp.forward(r).0.into_iter().map(sigmoid).collect())
        .collect()
}

/// The generator's margins q [C] (its 7 tensors start at `theta[7]`), softly bounded by
/// B tanh(q / B) when `bound` is given.
pub fn margins(theta: &[Vec<f32>], bound: Option<f32>) -> Vec<f64> {
    let q = Mlp::at(theta, 7).forward(0).0;
    bounded(&q, bound)
}

/// B tanh(q / B), or q.
pub fn bounded(q: &[f64], bound: Option<f32>) -> Vec<f64> {
    match bound {
        Some(b) => q
            .iter()
            .map(|&v| b as f64 * (v / b as f64).tanh())
            .collect(),
        None => q.to_vec(),
    }
}

/// The pre-activations of every hidden ReLU of both MLP heads (corrector rows `bins`).
pub fn hidden_pre_activations(theta: &[Vec<f32>], bins: &[u32]) -> Vec<f64> {
    let c = Mlp::at(theta, 0);
    let mut out: Vec<f64> = bins.iter().flat_map(|&r| c.forward(r as usize).1).collect();
    out.extend(Mlp::at(theta, 7).forward(0).1);
    out
}

/// y* = onehot(y) g + yhat (1 - g), one row per sample.
pub fn corrected_labels(g: &[f64], labels: &[u32], yhat: &[f64], classes: usize) -> Vec<f64> {
    let mut out = vec![0.0; labels.len() * classes];
    for (i, &y) in labels.iter().enumerate() {
        for j in 0..classes {
            let onehot = if j == y as usize { 1.0 } else { 0.0 };
            out[i * classes + j] = onehot * g[i] + yhat[i * classes + j] * (1.0 - g[i]);
        }
    }
    out
}

/// log_softmax of one row, computed with the maximum subtracted.
pub fn log_softmax(row: &[f64]) -> Vec<f64> {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    row.iter().map(|v| v - lse).collect()
}

/// Per-sample -(t . log_softmax(z + q)) for rows of z and t [B, C], margins q [C] (or none).
pub fn soft_cross_entropy(z: &[f64], t: &[f64], q: Option<&[f64]>, classes: usize) -> Vec<f64> {
    z.chunks(classes)
        .zip(t.chunks(classes))
        .map(|(zr, tr)| {
            let shifted: Vec<f64> = zr
                .iter()
                .enumerate()
                .map(|(j, v)| v + q.map_or(0.0, |q| q[j]))
                .collect();
            -log_softmax(&shifted)
                .iter()
                .zip(tr)
                .map(|(l, t)| l * t)
                .sum::<f64>()
        })
        .collect()
}

/// Mean of a slice.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}
