//! Plain CPU references of the kernels, in f64 (the kernel tests compare each kernel with
//! one): elementwise maps and broadcasting, reductions, batch-norm statistics, matmul and the
//! convolutions, softmax and cross-entropy, the sort order. Written from the operations'
//! definitions, not from the kernels, so that a kernel bug cannot hide in a shared helper.

use dynloss_wgpu::tensor::elementwise::{Binary, Unary, broadcast_shape};
use dynloss_wgpu::tensor::pool::PoolGeom;

// Re-exported so that the kernel tests find every reference here; a test crate that uses
// neither would otherwise warn.
#[allow(unused_imports)]
pub use super::reference::{log_softmax, soft_cross_entropy};

/// `op` applied to `x`.
pub fn unary(op: Unary, x: f64) -> f64 {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    match op {
        Unary::Identity => x,
        Unary::Neg => -x,
        Unary::Relu => x.max(0.0),
        Unary::ReluMask => (x > 0.0) as u8 as f64,
        Unary::Sigmoid => sig(x),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Square => x * x,
        Unary::Recip => 1.0 / x,
        Unary::Abs => x.abs(),
        Unary::SigmoidGrad => sig(x) * (1.0 - sig(x)),
    }
}

/// `op` applied to `a` and `b`.
pub fn binary(op: Binary, a: f64, b: f64) -> f64 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Max => a.max(b),
        Binary::AddRelu => (a + b).max(0.0),
        Binary::ReluGrad => {
            if b > 0.0 {
                a
            } else {
                0.0
            }
        }
        Binary::Gt => (a > b) as u8 as f64,
        Binary::First => a,
    }
}

/// `op` over `a` [sa] and `b` [sb] broadcast like NumPy: the output shape and values.
pub fn broadcast(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
    op: Binary,
) -> (Vec<usize>, Vec<f64>) {
    let out = broadcast_shape(sa, sb).unwrap();
    let r = out.len();
    let pad = |s: &[usize]| {
        let mut v = vec![1; r - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    for i in 0..n {
        let mut rem = i;
        let mut idx = vec![0; r];
        for d in (0..r).rev() {
            idx[d] = rem % out[d];
            rem /= out[d];
        }
        let lin = |p: &[usize]| {
            let mut o = 0;
            for d in 0..r {
                o = o * p[d] + if p[d] == 1 { 0 } else { idx[d] };
            }
            o
        };
        res.push(binary(op, a[lin(&pa)] as f64, b[lin(&pb)] as f64));
    }
    (out, res)
}

/// Sum of `x` [shape] over `axes`, the kept axes in order.
pub fn sum_axes(x: &[f32], shape: &[usize], axes: &[usize]) -> Vec<f64> {
    let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
    let out_n: usize = kept.iter().map(|&i| shape[i]).product();
    let mut out = vec![0.0; out_n];
    for (i, &v) in x.iter().enumerate() {
        let mut rem = i;
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = rem % shape[d];
            rem /= shape[d];
        }
        let mut o = 0;
        for &d in &kept {
            o = o * shape[d] + idx[d];
        }
        out[o] += v as f64;
    }
    out
}

/// Per-channel batch statistics of `x` [N, C, HW]: mean and biased variance.
pub struct Stats {
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

/// The training statistics batch norm normalises with.
pub fn batch_stats(x: &[f32], n: usize, c: usize, hw: usize) -> Stats {
    let m = (n * hw) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| (0..hw).map(move |s| (b * c + ch) * hw + s))
            .map(|i| x[i] as f64)
            .collect();
        mean[ch] = vals.iter().sum::<f64>() / m;
        var[ch] = vals.iter().map(|v| (v - mean[ch]).powi(2)).sum::<f64>() / m;
    }
    Stats { mean, var }
}

/// C = op(A) op(B) for A [m, k] (or [k, m] with `ta`) and B [k, n] (or [n, k] with `tb`).
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for l in 0..k {
                let av = if ta { a[l * m + i] } else { a[i * k + l] };
                let bv = if tb { b[j * k + l] } else { b[l * n + j] };
                s += av as f64 * bv as f64;
            }
            c[i * n + j] = s;
        }
    }
    c
}

/// A convolution's shape: x [n, ci, h, w], w [co, ci, k, k], stride and zero padding.
pub struct Conv {
    pub n: usize,
    pub ci: usize,
    pub h: usize,
    pub w: usize,
    pub co: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    /// The 3x3 stride-1 convolution of x [n, ci, h, w] into co channels with padding `pad`.
    pub fn k3(n: usize, ci: usize, h: usize, w: usize, co: usize, pad: usize) -> Conv {
        Conv {
            n,
            ci,
            h,
            w,
            co,
            k: 3,
            stride: 1,
            pad,
        }
    }

    /// Output rows and columns.
    pub fn out(&self) -> (usize, usize) {
        let o = |s: usize| (s + 2 * self.pad - self.k) / self.stride + 1;
        (o(self.h), o(self.w))
    }

    /// Every (x index, w index, y index) product of the convolution, in the order the
    /// references sum them (input channel, then kernel row and column, per output).
    fn taps(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (oh, ow) = self.out();
        for n in 0..self.n {
            for co in 0..self.co {
                for i in 0..oh {
                    for j in 0..ow {
                        let yi = ((n * self.co + co) * oh + i) * ow + j;
                        for ci in 0..self.ci {
                            for a in 0..self.k {
                                for b in 0..self.k {
                                    let ih = (i * self.stride + a) as isize - self.pad as isize;
                                    let iw = (j * self.stride + b) as isize - self.pad as isize;
                                    if ih < 0
                                        || iw < 0
                                        || ih >= self.h as isize
                                        || iw >= self.w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * self.ci + ci) * self.h + ih as usize) * self.w
                                        + iw as usize;
                                    let wi = ((co * self.ci + ci) * self.k + a) * self.k + b;
                                    f(xi, wi, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// y = conv(x, w), and per output the sum of |x| |w| over its window (the size of the terms
/// the sum is made of, for tolerances that scale with the problem).
pub fn conv2d(x: &[f32], w: &[f32], c: &Conv) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = c.out();
    let mut y = vec![0.0; c.n * c.co * oh * ow];
    let mut s = vec![0.0; y.len()];
    c.taps(|xi, wi, yi| {
        let t = x[xi] as f64 * w[wi] as f64;
        y[yi] += t;
        s[yi] += t.abs();
    });
    (y, s)
}

/// The input gradient of [`conv2d`] (its adjoint in x) for upstream gradient dy.
pub fn conv2d_input_grad(w: &[f32], dy: &[f32], c: &Conv) -> Vec<f64> {
    let mut dx = vec![0.0; c.n * c.ci * c.h * c.w];
    c.taps(|xi, wi, yi| dx[xi] += dy[yi] as f64 * w[wi] as f64);
    dx
}

/// The weight gradient of [`conv2d`] for upstream gradient dy, and per entry the sum of
/// |dy| |x| over its terms.
pub fn conv2d_weight_grad(x: &[f32], dy: &[f32], c: &Conv) -> (Vec<f64>, Vec<f64>) {
    let mut dw = vec![0.0; c.co * c.ci * c.k * c.k];
    let mut terms = vec![0.0; dw.len()];
    c.taps(|xi, wi, yi| {
        let t = dy[yi] as f64 * x[xi] as f64;
        dw[wi] += t;
        terms[wi] += t.abs();
    });
    (dw, terms)
}

/// w [K, C, 3, 3] as the forward weight of the input gradient: rotated by 180 degrees, channel
/// axes swapped ([C, K, 3, 3]).
pub fn flipped(w: &[f32], k: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for a in 0..k {
        for b in 0..c {
            for i in 0..3 {
                for j in 0..3 {
                    out[((b * k + a) * 3 + i) * 3 + j] =
                        w[((a * c + b) * 3 + (2 - i)) * 3 + (2 - j)];
                }
            }
        }
    }
    out
}

/// Row r of x [_, c] plus margins q [c] (or none).
pub fn row(x: &[f64], q: Option<&[f64]>, c: usize, r: usize) -> Vec<f64> {
    (0..c)
        .map(|j| x[r * c + j] + q.map_or(0.0, |q| q[j]))
        .collect()
}

/// The analytic gradient of sum_r g_r soft_ce_r with respect to the logits:
/// g_r (softmax_j sum t - t_j).
pub fn soft_cross_entropy_backward(
    x: &[f64],
    t: &[f64],
    q: Option<&[f64]>,
    g: &[f64],
    c: usize,
) -> Vec<f64> {
    let b = g.len();
    let mut out = vec![0.0; b * c];
    for r in 0..b {
        let ls = log_softmax(&row(x, q, c, r));
        let total: f64 = t[r * c..(r + 1) * c].iter().sum();
        for j in 0..c {
            out[r * c + j] = g[r] * (ls[j].exp() * total - t[r * c + j]);
        }
    }
    out
}

/// The sort kernel's order-preserving map of f32 bits (NaN after +inf, -0 before +0).
pub fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        b | 0x8000_0000
    } else if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// (segment, key, value) triples sorted ascending, keys in [`order_key`] order.
pub fn segmented_sort(seg: &[u32], key: &[f32], val: &[u32]) -> Vec<(u32, f32, u32)> {
    let mut v: Vec<(u32, f32, u32)> = (0..seg.len()).map(|i| (seg[i], key[i], val[i])).collect();
    v.sort_by_key(|&(s, k, x)| (s, order_key(k), x));
    v
}

/// Max pooling of `planes` planes [h, w] of x into [oh, ow] (padding never wins): the maxima
/// and the in-plane index of each winner (the first on ties).
pub fn max_pool(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    geom: PoolGeom,
) -> (Vec<f64>, Vec<u32>) {
    let mut want = vec![0.0f64; planes * oh * ow];
    let mut want_arg = vec![0u32; want.len()];
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut best = f64::NEG_INFINITY;
                let mut at = 0;
                for a in 0..geom.k {
                    for b in 0..geom.k {
                        let (yy, xx) = (
                            (i * geom.stride + a) as isize - geom.pad as isize,
                            (j * geom.stride + b) as isize - geom.pad as isize,
                        );
                        if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                            continue;
                        }
                        let v = x[pl * h * w + yy as usize * w + xx as usize] as f64;
                        if v > best {
                            best = v;
                            at = yy as usize * w + xx as usize;
                        }
                    }
                }
                want[(pl * oh + i) * ow + j] = best;
                want_arg[(pl * oh + i) * ow + j] = at as u32;
            }
        }
    }
    (want, want_arg)
}

/// ResNet's option-A shortcut of x [n, c, h, w] into `cout` channels: every second pixel,
/// the channels centred between zero channels.
pub fn shortcut_a(x: &[f32], (n, c, h, w): (usize, usize, usize, usize), cout: usize) -> Vec<f64> {
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let pad = (cout - c) / 2;
    let mut want = vec![0.0f64; n * cout * oh * ow];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    want[((b * cout + ch + pad) * oh + i) * ow + j] =
                        x[((b * c + ch) * h + 2 * i) * w + 2 * j] as f64;
                }
            }
        }
    }
    want
}

/// One SGD step in place, as PyTorch takes it: d = g + wd w; buf = d on the first step,
/// momentum buf + d afterwards; w -= lr buf.
pub fn sgd_step(
    w: &mut [f64],
    buf: &mut [f64],
    g: &[f32],
    (lr, momentum, wd): (f32, f32, f32),
    first: bool,
) {
    for i in 0..w.len() {
        let d = g[i] as f64 + wd as f64 * w[i];
        buf[i] = if first {
            d
        } else {
            momentum as f64 * buf[i] + d
        };
        w[i] -= lr as f64 * buf[i];
    }
}

/// Adam step `t` (from 1) in place, as PyTorch takes it (L2 weight decay added to the
/// gradient, bias-corrected moments, eps outside the square root).
pub fn adam_step(
    w: &mut [f64],
    m: &mut [f64],
    v: &mut [f64],
    g: &[f32],
    (lr, b1, b2, eps, wd): (f32, f32, f32, f32, f32),
    t: usize,
) {
    let (b1d, b2d) = (b1 as f64, b2 as f64);
    let (bc1, bc2) = (1.0 - b1d.powi(t as i32), 1.0 - b2d.powi(t as i32));
    for i in 0..w.len() {
        let d = g[i] as f64 + wd as f64 * w[i];
        m[i] = b1d * m[i] + (1.0 - b1d) * d;
        v[i] = b2d * v[i] + (1.0 - b2d) * d * d;
        w[i] -= lr as f64 * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps as f64);
    }
}

/// One row of `classes` per label: 1 at the label, zeros elsewhere (a zero row when the
/// label is out of range).
pub fn one_hot(labels: &[u32], classes: usize) -> Vec<f64> {
    let mut out = vec![0.0; labels.len() * classes];
    for (r, &l) in labels.iter().enumerate() {
        if (l as usize) < classes {
            out[r * classes + l as usize] = 1.0;
        }
    }
    out
}

/// Rows `idx` of src [_, d] (a zero row for an index out of range).
pub fn gather_rows(src: &[f32], d: usize, idx: &[u32]) -> Vec<f64> {
    let rows = src.len() / d;
    idx.iter()
        .flat_map(|&s| {
            (0..d).map(move |j| {
                if (s as usize) < rows {
                    src[s as usize * d + j] as f64
                } else {
                    0.0
                }
            })
        })
        .collect()
}

/// Entry `labels[r]` of each row r of src [_, c] (zero for a label out of range).
pub fn pick(src: &[f32], c: usize, labels: &[u32]) -> Vec<f64> {
    labels
        .iter()
        .enumerate()
        .map(|(r, &l)| {
            if (l as usize) < c {
                src[r * c + l as usize] as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// The adjoint of [`pick`]: grad[r] at column `labels[r]` of row r, zeros elsewhere.
pub fn unpick(grad: &[f32], labels: &[u32], c: usize) -> Vec<f64> {
    let mut out = vec![0.0; labels.len() * c];
    for (r, &l) in labels.iter().enumerate() {
        if (l as usize) < c {
            out[r * c + l as usize] = grad[r] as f64;
        }
    }
    out
}

/// src [b, d] written to rows `idx` of a zero [rows, d] (rows out of range dropped).
pub fn scatter_rows(src: &[f32], d: usize, idx: &[u32], rows: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * d];
    for (r, &t) in idx.iter().enumerate() {
        if (t as usize) < rows {
            for j in 0..d {
                out[t as usize * d + j] = src[r * d + j] as f64;
            }
        }
    }
    out
}
