//! Every differentiable op of the engine against central finite differences, to first and
//! second order, in every entry of every input (the tensors are small enough for that).
//!
//! For an op f with inputs x_1..x_n and a fixed random v, L = <v, f(x)>, summed on the host in
//! f64 from the op's f32 output. First order: dL/dx_i from the engine, both through the fused
//! backward kernels (no graph kept) and through the differentiable rules (`create_graph`),
//! each against (L(x + s e) - L(x - s e)) / (2 s) for every entry e. Second order:
//! h_i = <u, dL/dx_i> with the gradient taken with `create_graph`, differentiated by the
//! engine with respect to every x_j, against central differences of h_i (each h_i evaluated
//! from a fresh gradient through the fused path, so the two sides share no backward code).
//!
//! A gradient that carries no graph fails the second-order check, unless the check declares
//! f linear in that input (then dL/dx_i is a constant, and the check proves it: every central
//! difference of h_i is zero). Every op also appears in a check where its output is squared,
//! so that the upstream gradient reaching its backward rule depends on the inputs: that is the
//! check a backward rule returning a detached gradient fails. `every_public_op_is_checked`
//! keeps the list complete.
//!
//! Tolerance, fixed and the same for every check: |engine - fd| <= ATOL + RTOL |fd| per entry,
//! with step S = 1e-2. The step's truncation error is S^2/6 |f'''| <= 1.7e-5 |f'''|, below
//! 1e-3 |fd| for the ops' third derivatives at inputs of size ~1 (RTOL = 1e-2 leaves a factor
//! ten). Rounding: the perturbed entry moves only the outputs that depend on it; each of those
//! is an f32 result of at most ~60 roundings (u = 6e-8) of terms of size <= ~2 and weight
//! |v| < 1, and there are at most ~30 of them, so one evaluation of L moves by at most
//! ~30 * 60 * 6e-8 * 2 = 2e-4 from rounding, and a quotient over 2 S = 2e-2 by at most 1e-2
//! in the worst case where every rounding adds up; they do not add up, and no check below
//! uses more than a tenth of this tolerance (each prints its share with `--nocapture`).
//! With `DYNLOSS_CONV=winograd` (run in CI) the 3x3 stride-1 convolutions go through
//! Winograd F(4x4, 3x3), whose rounding is about ten times the direct kernels' on planes
//! this small; its second-order checks then use up to 55% of the tolerance.
//! The perturbation itself is exact: the step is the f32 difference actually applied.
//! Kinks (ReLU, max pooling) are kept at least 5 S away from every perturbed input.

mod common;

use common::{Rng, gpu};
use dynloss_wgpu::Gpu;
use dynloss_wgpu::Result;
use dynloss_wgpu::Tensor;
use dynloss_wgpu::autograd::{self as ag, Var};
use dynloss_wgpu::tensor::conv::ConvGeom;
use dynloss_wgpu::tensor::pool::PoolGeom;

/// Finite-difference step.
const STEP: f32 = 1e-2;
/// Absolute part of the per-entry tolerance (see the module comment).
const ATOL: f64 = 2e-3;
/// Relative part of the per-entry tolerance.
const RTOL: f64 = 1e-2;

type OpFn = Box<dyn Fn(&[Var]) -> Result<Var>>;

/// One op under test.
struct Check {
    name: String,
    shapes: Vec<Vec<usize>>,
    /// Inputs that get gradients (the others are constants fed to the op).
    grad_inputs: Vec<usize>,
    /// Inputs f is declared linear in (dL/dx_i is then a constant: no graph, zero h).
    linear: Vec<usize>,
    /// Input values; random in [-1, 1) unless set.
    data: Option<Vec<Vec<f32>>>,
    /// Keep |x| at least this large (ReLU kinks), or make inputs positive (log, sqrt, 1/x).
    away_from_zero: f32,
    positive: bool,
    f: OpFn,
}

impl Check {
    fn new(
        name: impl Into<String>,
        shapes: Vec<Vec<usize>>,
        f: impl Fn(&[Var]) -> Result<Var> + 'static,
    ) -> Check {
        let n = shapes.len();
        Check {
            name: name.into(),
            shapes,
            grad_inputs: (0..n).collect(),
            linear: Vec::new(),
            data: None,
            away_from_zero: 0.0,
            positive: false,
            f: Box::new(f),
        }
    }
    fn linear_in(mut self, inputs: &[usize]) -> Check {
        self.linear = inputs.to_vec();
        self
    }
    fn grads_for(mut self, inputs: &[usize]) -> Check {
        self.grad_inputs = inputs.to_vec();
        self
    }
    fn away(mut self, a: f32) -> Check {
        self.away_from_zero = a;
        self
    }
    fn positive(mut self) -> Check {
        self.positive = true;
        self
    }
    fn with_data(mut self, d: Vec<Vec<f32>>) -> Check {
        self.data = Some(d);
        self
    }
}

fn leaves(g: &Gpu, c: &Check, data: &[Vec<f32>]) -> Vec<Var> {
    data.iter()
        .zip(&c.shapes)
        .enumerate()
        .map(|(i, (d, s))| {
            Var::leaf(
                Tensor::from_f32(g, s, d).unwrap(),
                c.grad_inputs.contains(&i),
            )
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// L = <v, f(x)>, summed on the host.
fn loss(g: &Gpu, c: &Check, data: &[Vec<f32>], v: &[f32]) -> f64 {
    ag::no_grad(|| {
        let xs = leaves(g, c, data);
        dot(&(c.f)(&xs).unwrap().value().to_f32_vec().unwrap(), v)
    })
}

/// dL/dx_i through the fused backward path (no graph), as host values (zeros for `None`).
fn grad_values(g: &Gpu, c: &Check, data: &[Vec<f32>], vt: &Tensor, i: usize) -> Vec<f32> {
    let xs = leaves(g, c, data);
    let y = (c.f)(&xs).unwrap();
    let gi = ag::grad(&[&y], &[&xs[i]], Some(&[Var::constant(vt.clone())]), false)
        .unwrap()
        .remove(0);
    match gi {
        Some(gi) => gi.value().to_f32_vec().unwrap(),
        None => vec![0.0; data[i].len()],
    }
}

/// Central differences of `eval` with respect to every entry of input `j`.
fn central(data: &[Vec<f32>], j: usize, eval: &dyn Fn(&[Vec<f32>]) -> f64) -> Vec<f64> {
    (0..data[j].len())
        .map(|e| {
            let mut plus = data.to_vec();
            plus[j][e] += STEP;
            let mut minus = data.to_vec();
            minus[j][e] -= STEP;
            // The step actually applied, after rounding to f32.
            let step = plus[j][e] as f64 - minus[j][e] as f64;
            (eval(&plus) - eval(&minus)) / step
        })
        .collect()
}

/// Asserts every entry within the fixed tolerance; returns the largest share of the
/// tolerance used (for the record the module comment cites).
fn assert_entries(what: &str, got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (e, (&a, &b)) in got.iter().zip(want).enumerate() {
        let d = (a as f64 - b).abs();
        let tol = ATOL + RTOL * b.abs();
        assert!(
            d <= tol,
            "{what}: entry {e}: engine {a:e}, finite differences {b:e}\n engine {got:?}\n    fd {want:?}"
        );
        worst = worst.max(d / tol);
    }
    worst
}

fn input_data(c: &Check, rng: &mut Rng) -> Vec<Vec<f32>> {
    if let Some(d) = &c.data {
        return d.clone();
    }
    c.shapes
        .iter()
        .map(|s| {
            let n: usize = s.iter().product();
            rng.vec(n)
                .into_iter()
                .map(|x| {
                    let x = if c.positive { x.abs() + 0.5 } else { x };
                    if x.abs() < c.away_from_zero {
                        x.signum() * c.away_from_zero + x
                    } else {
                        x
                    }
                })
                .collect()
        })
        .collect()
}

/// Runs one check on `g`; returns the largest share of the tolerance used.
fn run(g: &Gpu, c: &Check) -> f64 {
    let mut rng = Rng::new(c.name.len() as u64 * 7919 + c.shapes.len() as u64);
    let data = input_data(c, &mut rng);
    let xs = leaves(g, c, &data);
    let y = (c.f)(&xs).unwrap();
    let v = rng.vec(y.value().numel());
    let vt = Tensor::from_f32(g, y.shape(), &v).unwrap();
    let wanted: Vec<&Var> = c.grad_inputs.iter().map(|&i| &xs[i]).collect();
    let graph = ag::grad(&[&y], &wanted, Some(&[Var::constant(vt.clone())]), true).unwrap();
    let mut worst = 0.0f64;
    for (k, &i) in c.grad_inputs.iter().enumerate() {
        let fd = central(&data, i, &|d| loss(g, c, d, &v));
        let what = |path: &str| format!("{}: dL/dx{i} ({path})", c.name);
        let Some(gi) = graph[k].as_ref() else {
            // The engine says x_i does not influence the output (a flat input such as
            // relu_grad's mask): the differences must say so too.
            let zeros = vec![0.0f32; data[i].len()];
            worst = worst.max(assert_entries(&what("no gradient"), &zeros, &fd));
            continue;
        };
        assert_eq!(gi.shape(), xs[i].shape(), "{}: gradient shape", c.name);
        worst = worst.max(assert_entries(
            &what("differentiable rules"),
            &gi.value().to_f32_vec().unwrap(),
            &fd,
        ));
        worst = worst.max(assert_entries(
            &what("fused backward"),
            &grad_values(g, c, &data, &vt, i),
            &fd,
        ));

        // Second order: h = <u, dL/dx_i>, differentiated with respect to every x_j.
        let u = rng.vec(data[i].len());
        let ut = Tensor::from_f32(g, xs[i].shape(), &u).unwrap();
        let h = ag::sum_all(&ag::mul(gi, &Var::constant(ut)).unwrap()).unwrap();
        let h_at = |d: &[Vec<f32>]| dot(&grad_values(g, c, d, &vt, i), &u);
        if !h.requires_grad() {
            // Allowed only where declared, and then proven: h does not move with any input.
            assert!(
                c.linear.contains(&i),
                "{}: dL/dx{i} carries no graph, so its second derivatives would be lost \
                 (a backward rule returned a detached gradient?)",
                c.name
            );
            for &j in &c.grad_inputs {
                let fd = central(&data, j, &h_at);
                let zeros = vec![0.0f32; fd.len()];
                let what = format!("{}: d/dx{j} <u, dL/dx{i}> (declared linear)", c.name);
                worst = worst.max(assert_entries(&what, &zeros, &fd));
            }
            continue;
        }
        let second = ag::grad(&[&h], &wanted, None, false).unwrap();
        for (k2, &j) in c.grad_inputs.iter().enumerate() {
            let got: Vec<f32> = match &second[k2] {
                Some(t) => t.value().to_f32_vec().unwrap(),
                None => vec![0.0; data[j].len()],
            };
            let fd = central(&data, j, &h_at);
            let what = format!("{}: d/dx{j} <u, dL/dx{i}>", c.name);
            worst = worst.max(assert_entries(&what, &got, &fd));
        }
    }
    worst
}

fn run_all(checks: Vec<Check>) {
    let g = gpu();
    for c in &checks {
        let worst = run(&g, c);
        println!("{}: {:.0}% of the tolerance used", c.name, 100.0 * worst);
    }
}

/// `f` squared elementwise: its backward then receives an upstream gradient that depends on
/// the inputs, which is what a second-order check of a linear op needs.
fn squared(f: impl Fn(&[Var]) -> Result<Var> + 'static) -> impl Fn(&[Var]) -> Result<Var> {
    move |x| ag::square(&f(x)?)
}

/// `n` (at most 101) values in [-2, 2] spaced at least 0.04 apart (4 steps), in a random
/// order: max pooling's winners then never change under a perturbation.
fn distinct(n: usize, rng: &mut Rng) -> Vec<f32> {
    assert!((2..=101).contains(&n));
    let mut keyed: Vec<(u64, usize)> = (0..n).map(|i| (rng.next_u64(), i)).collect();
    keyed.sort();
    keyed
        .iter()
        .map(|&(_, i)| -2.0 + 4.0 * i as f32 / (n - 1) as f32)
        .collect()
}

// ---------------------------------------------------------------- the checks

fn matmul_checks() -> Vec<Check> {
    let mut v = Vec::new();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let sa = if ta { vec![4, 3] } else { vec![3, 4] };
        let sb = if tb { vec![5, 4] } else { vec![4, 5] };
        v.push(Check::new(
            format!("matmul ta={ta} tb={tb}"),
            vec![sa.clone(), sb.clone()],
            move |x| ag::matmul(&x[0], &x[1], ta, tb),
        ));
        v.push(Check::new(
            format!("matmul^2 ta={ta} tb={tb}"),
            vec![sa, sb],
            squared(move |x| ag::matmul(&x[0], &x[1], ta, tb)),
        ));
    }
    v.push(
        Check::new("linear", vec![vec![3, 4], vec![2, 4], vec![2]], |x| {
            ag::linear(&x[0], &x[1], Some(&x[2]))
        })
        .linear_in(&[2]),
    );
    v.push(Check::new(
        "linear^2",
        vec![vec![3, 4], vec![2, 4], vec![2]],
        squared(|x| ag::linear(&x[0], &x[1], Some(&x[2]))),
    ));
    v
}

fn conv_checks() -> Vec<Check> {
    let mut v = Vec::new();
    // A 4x4 input with padding (the border rows and columns read the zero padding), a 5x5
    // one with stride 2 (the last window ends on the padding) and a 1x1 convolution.
    for (hw, stride, pad, k) in [(4, 1, 1, 3), (5, 2, 1, 3), (4, 1, 0, 1)] {
        let geom = ConvGeom { stride, pad };
        let o = geom.out_size(hw, k).unwrap();
        let x = vec![2, 2, hw, hw];
        let w = vec![3, 2, k, k];
        let dy = vec![2, 3, o, o];
        let tag = format!("{hw}x{hw} s{stride} p{pad} k{k}");
        v.push(Check::new(
            format!("conv2d {tag}"),
            vec![x.clone(), w.clone()],
            move |x| ag::conv2d(&x[0], &x[1], geom),
        ));
        v.push(Check::new(
            format!("conv2d^2 {tag}"),
            vec![x.clone(), w.clone()],
            squared(move |x| ag::conv2d(&x[0], &x[1], geom)),
        ));
        v.push(Check::new(
            format!("conv2d_input_grad^2 {tag}"),
            vec![dy.clone(), w.clone()],
            squared(move |x| ag::conv2d_input_grad(&x[0], &x[1], (hw, hw), geom)),
        ));
        v.push(Check::new(
            format!("conv2d_weight_grad^2 {tag}"),
            vec![x.clone(), dy.clone()],
            squared(move |x| ag::conv2d_weight_grad(&x[0], &x[1], (k, k), geom)),
        ));
    }
    v
}

/// Host batch-norm pre-activations gamma xhat + beta of x [N, C, ...] (for placing beta).
fn bn_pre(x: &[f32], gamma: &[f32], beta: &[f32], n: usize, c: usize) -> Vec<f64> {
    let hw = x.len() / (n * c);
    let mut out = vec![0.0; x.len()];
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|b| (0..hw).map(move |s| (b * c + ch) * hw + s))
            .collect();
        let m = idx.len() as f64;
        let mean = idx.iter().map(|&i| x[i] as f64).sum::<f64>() / m;
        let var = idx
            .iter()
            .map(|&i| (x[i] as f64 - mean).powi(2))
            .sum::<f64>()
            / m;
        for &i in &idx {
            out[i] =
                gamma[ch] as f64 * (x[i] as f64 - mean) / (var + 1e-5).sqrt() + beta[ch] as f64;
        }
    }
    out
}

/// Inputs (x, gamma, beta) of a batch norm with ReLU whose pre-activations all stay at least
/// 0.1 from the kink: beta is chosen per channel, from a grid, to maximise that distance.
fn bn_relu_data(n: usize, c: usize, hw: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let x = rng.vec(n * c * hw);
    let gamma: Vec<f32> = rng.vec(c).iter().map(|g| 0.5 + 0.5 * g.abs()).collect();
    let mut beta = vec![0.0f32; c];
    for ch in 0..c {
        let mut best = (f64::MIN, 0.0f32);
        for k in 0..200 {
            let b = -1.0 + k as f32 * 0.01;
            let mut bb = beta.clone();
            bb[ch] = b;
            let pre = bn_pre(&x, &gamma, &bb, n, c);
            let gap = (0..n)
                .flat_map(|i| (0..hw).map(move |s| (i * c + ch) * hw + s))
                .map(|i| pre[i].abs())
                .fold(f64::MAX, f64::min);
            if gap > best.0 {
                best = (gap, b);
            }
        }
        assert!(best.0 > 0.1, "no beta keeps channel {ch} off the kink");
        beta[ch] = best.1;
    }
    vec![x, gamma, beta]
}

fn batch_norm_checks() -> Vec<Check> {
    let mut rng = Rng::new(31);
    let bn =
        |relu: bool| move |x: &[Var]| ag::batch_norm(&x[0], &x[1], &x[2], 1e-5, relu).map(|r| r.0);
    let shape = vec![vec![3, 2, 2, 2], vec![2], vec![2]];
    let mut v = vec![
        Check::new("batch_norm", shape.clone(), bn(false)).linear_in(&[2]),
        Check::new("batch_norm^2", shape.clone(), squared(bn(false))),
        Check::new(
            "batch_norm_1d^2",
            vec![vec![5, 3], vec![3], vec![3]],
            squared(bn(false)),
        ),
        Check::new("batch_norm+relu^2", shape.clone(), squared(bn(true)))
            .with_data(bn_relu_data(3, 2, 4, &mut rng)),
    ];
    let eval = |relu: bool| {
        move |x: &[Var]| {
            let g = x[0].value().gpu();
            let mean = Tensor::from_f32(g, &[2], &[0.3, -0.2])?;
            let var = Tensor::from_f32(g, &[2], &[0.5, 2.0])?;
            ag::batch_norm_eval(&x[0], &x[1], &x[2], &mean, &var, 1e-5, relu)
        }
    };
    let eshape = vec![vec![2, 2, 2, 2], vec![2], vec![2]];
    v.push(Check::new("batch_norm_eval", eshape.clone(), eval(false)).linear_in(&[2]));
    v.push(Check::new(
        "batch_norm_eval^2",
        eshape.clone(),
        squared(eval(false)),
    ));
    // With the ReLU: pre-activations (x - mean) / sqrt(var) * gamma + beta kept off the kink
    // by taking |x - mean| >= 0.3 and beta = 0.
    let mut x: Vec<f32> = rng.vec(16);
    for (i, xv) in x.iter_mut().enumerate() {
        let mean = if (i / 4) % 2 == 0 { 0.3 } else { -0.2 };
        let d = *xv - mean;
        if d.abs() < 0.3 {
            *xv = mean + 0.3 * d.signum() + d;
        }
    }
    v.push(
        Check::new("batch_norm_eval+relu^2", eshape, squared(eval(true)))
            .grads_for(&[0, 1])
            .with_data(vec![x, vec![0.8, 1.2], vec![0.0, 0.0]]),
    );
    v
}

fn elementwise_checks() -> Vec<Check> {
    let mut rng = Rng::new(32);
    let mut v = vec![
        Check::new("add", vec![vec![2, 3, 4], vec![3, 1]], |x| {
            ag::add(&x[0], &x[1])
        })
        .linear_in(&[0, 1]),
        Check::new(
            "add^2",
            vec![vec![2, 3, 4], vec![3, 1]],
            squared(|x| ag::add(&x[0], &x[1])),
        ),
        Check::new("sub", vec![vec![4], vec![3, 4]], |x| ag::sub(&x[0], &x[1])).linear_in(&[0, 1]),
        Check::new(
            "sub^2",
            vec![vec![4], vec![3, 4]],
            squared(|x| ag::sub(&x[0], &x[1])),
        ),
        Check::new("mul", vec![vec![2, 3, 2, 2], vec![1, 3, 1, 1]], |x| {
            ag::mul(&x[0], &x[1])
        }),
        Check::new(
            "mul^2",
            vec![vec![2, 3, 2, 2], vec![1, 3, 1, 1]],
            squared(|x| ag::mul(&x[0], &x[1])),
        ),
        Check::new("affine", vec![vec![7]], |x| ag::affine(&x[0], -1.5, 0.25)).linear_in(&[0]),
        Check::new(
            "affine^2 (scale, neg)",
            vec![vec![7]],
            squared(|x| ag::neg(&ag::scale(&ag::affine(&x[0], -1.5, 0.25)?, 0.5)?)),
        ),
        Check::new(
            "broadcast_to^2",
            vec![vec![3, 1]],
            squared(|x| ag::broadcast_to(&x[0], &[2, 3, 4])),
        ),
        Check::new(
            "reshape^2",
            vec![vec![2, 6]],
            squared(|x| ag::reshape(&x[0], &[3, 4])),
        ),
        Check::new(
            "sum_to^2",
            vec![vec![2, 3, 4]],
            squared(|x| ag::sum_to(&x[0], &[3, 1])),
        ),
        Check::new("relu", vec![vec![3, 5]], |x| ag::relu(&x[0])).away(0.1),
        Check::new("relu^2", vec![vec![3, 5]], squared(|x| ag::relu(&x[0]))).away(0.1),
        Check::new("relu_mixed", vec![vec![3, 5], vec![3, 5]], |x| {
            ag::mul(&ag::relu(&x[0])?, &x[1])
        })
        .away(0.1),
        Check::new(
            "relu_grad^2",
            vec![vec![3, 5], vec![3, 5]],
            squared(|x| ag::relu_grad(&x[0], &x[1])),
        )
        .away(0.1),
        Check::new("sigmoid", vec![vec![3, 4]], |x| {
            ag::sigmoid(&ag::scale(&x[0], 3.0)?)
        }),
        Check::new("exp", vec![vec![6]], |x| ag::exp(&x[0])),
        Check::new("log", vec![vec![6]], |x| ag::log(&x[0])).positive(),
        Check::new("sqrt", vec![vec![6]], |x| ag::sqrt(&x[0])).positive(),
        Check::new("recip", vec![vec![6]], |x| ag::recip(&x[0])).positive(),
        Check::new("square", vec![vec![6]], |x| ag::square(&x[0])),
    ];
    // add_relu: a + b kept at least 0.1 from the kink.
    let a = rng.vec(12);
    let b: Vec<f32> = rng
        .vec(12)
        .iter()
        .zip(&a)
        .map(|(b, a)| {
            let s = a + b;
            if s.abs() < 0.1 {
                b + 0.2 * s.signum()
            } else {
                *b
            }
        })
        .collect();
    v.push(
        Check::new(
            "add_relu^2",
            vec![vec![2, 3, 2], vec![2, 3, 2]],
            squared(|x| ag::add_relu(&x[0], &x[1])),
        )
        .with_data(vec![a, b]),
    );
    v
}

fn reduction_and_pool_checks() -> Vec<Check> {
    let mut rng = Rng::new(33);
    let mut v = vec![
        Check::new("sum_axes", vec![vec![2, 3, 4]], |x| {
            ag::sum_axes(&x[0], &[0, 2])
        })
        .linear_in(&[0]),
        Check::new(
            "sum_axes^2",
            vec![vec![2, 3, 4]],
            squared(|x| ag::sum_axes(&x[0], &[0, 2])),
        ),
        Check::new(
            "mean_axes^2",
            vec![vec![2, 3, 4]],
            squared(|x| ag::mean_axes(&x[0], &[1])),
        ),
        Check::new("sum_all^2 / mean_all^2", vec![vec![5, 3]], |x| {
            ag::add(
                &ag::square(&ag::sum_all(&x[0])?)?,
                &ag::square(&ag::mean_all(&x[0])?)?,
            )
        }),
        Check::new("global_avg_pool", vec![vec![2, 3, 3, 3]], |x| {
            ag::global_avg_pool(&x[0])
        })
        .linear_in(&[0]),
        Check::new(
            "global_avg_pool^2",
            vec![vec![2, 3, 3, 3]],
            squared(|x| ag::global_avg_pool(&x[0])),
        ),
        // Option A from 2 to 4 channels (one zero channel each side) on odd and even sides.
        Check::new("shortcut_a", vec![vec![2, 2, 4, 4]], |x| {
            ag::shortcut_a(&x[0], 4)
        })
        .linear_in(&[0]),
        Check::new(
            "shortcut_a^2",
            vec![vec![2, 2, 4, 4]],
            squared(|x| ag::shortcut_a(&x[0], 4)),
        ),
        Check::new(
            "shortcut_a^2 odd",
            vec![vec![1, 3, 5, 3]],
            squared(|x| ag::shortcut_a(&x[0], 6)),
        ),
    ];
    for (geom, hw) in [
        (
            PoolGeom {
                k: 2,
                stride: 2,
                pad: 0,
            },
            4,
        ),
        (
            PoolGeom {
                k: 3,
                stride: 2,
                pad: 1,
            },
            5,
        ),
    ] {
        let n = 2 * 2 * hw * hw;
        v.push(
            Check::new(
                format!("max_pool k{}", geom.k),
                vec![vec![2, 2, hw, hw]],
                move |x| ag::max_pool(&x[0], geom),
            )
            .linear_in(&[0])
            .with_data(vec![distinct(n, &mut rng)]),
        );
        v.push(
            Check::new(
                format!("max_pool^2 k{}", geom.k),
                vec![vec![2, 2, hw, hw]],
                squared(move |x| ag::max_pool(&x[0], geom)),
            )
            .with_data(vec![distinct(n, &mut rng)]),
        );
    }
    v
}

fn softmax_checks() -> Vec<Check> {
    let labels = |x: &Var| Tensor::from_u32(x.value().gpu(), &[4], &[2, 0, 1, 2]);
    vec![
        Check::new("pick", vec![vec![4, 3]], move |x| {
            ag::pick(&x[0], &labels(&x[0])?)
        })
        .linear_in(&[0]),
        Check::new(
            "pick^2",
            vec![vec![4, 3]],
            squared(move |x| ag::pick(&x[0], &labels(&x[0])?)),
        ),
        Check::new("log_softmax", vec![vec![4, 5]], |x| ag::log_softmax(&x[0])),
        Check::new("softmax", vec![vec![4, 5]], |x| ag::softmax(&x[0])),
        // Soft labels that depend on an input through a sigmoid, as the corrector's do.
        Check::new(
            "soft_cross_entropy",
            vec![vec![4, 3], vec![4, 3], vec![3]],
            |x| ag::soft_cross_entropy(&x[0], &ag::sigmoid(&x[1])?, Some(&x[2])),
        ),
        Check::new(
            "soft_cross_entropy^2",
            vec![vec![4, 3], vec![4, 3], vec![3]],
            squared(|x| ag::soft_cross_entropy(&x[0], &x[1], Some(&x[2]))),
        ),
        Check::new("soft_ce_no_margin", vec![vec![4, 3], vec![4, 3]], |x| {
            ag::soft_cross_entropy(&x[0], &x[1], None)
        }),
        Check::new("cross_entropy", vec![vec![4, 3], vec![3]], move |x| {
            ag::cross_entropy(&x[0], &labels(&x[0])?, Some(&x[1]))
        }),
    ]
}

#[test]
fn matmul_and_linear() {
    run_all(matmul_checks());
}

#[test]
fn conv2d_and_its_gradients() {
    run_all(conv_checks());
}

#[test]
fn batch_norm_training_and_eval() {
    run_all(batch_norm_checks());
}

#[test]
fn elementwise_and_broadcasting() {
    run_all(elementwise_checks());
}

#[test]
fn reductions_shortcut_and_pooling() {
    run_all(reduction_and_pool_checks());
}

#[test]
fn gather_softmax_and_margin_cross_entropy() {
    run_all(softmax_checks());
}

/// Every public differentiable function of `src/autograd/ops/` (read from the source, so a
/// new op cannot be added without a check) appears in a check whose second-order part runs
/// with a graph: a squared check, or one of the nonlinear ops.
#[test]
fn every_public_op_is_checked() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/autograd/ops");
    let mut ops = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            // `pub fn name(` and the macro entries `    name(a, b) => Op;` / `    name => Op;`.
            let name = if let Some(rest) = line.strip_prefix("pub fn ") {
                rest.split('(').next()
            } else if line.starts_with("    ")
                && line.trim_end().ends_with(';')
                && line.contains(" => ")
            {
                line.trim().split(['(', ' ']).next()
            } else {
                None
            };
            if let Some(n) = name {
                ops.push(n.to_string());
            }
        }
    }
    ops.sort();
    ops.dedup();
    assert!(ops.len() >= 30, "parsed too few ops: {ops:?}");
    println!("public ops: {ops:?}");
    // Which check covers each op to second order (by the name's first word).
    let covered: &[(&str, &str)] = &[
        ("matmul", "matmul^2"),
        ("linear", "linear^2"),
        ("conv2d", "conv2d^2"),
        ("conv2d_input_grad", "conv2d_input_grad^2"),
        ("conv2d_weight_grad", "conv2d_weight_grad^2"),
        ("batch_norm", "batch_norm+relu^2"),
        ("batch_norm_eval", "batch_norm_eval+relu^2"),
        ("add", "add^2"),
        ("add_relu", "add_relu^2"),
        ("sub", "sub^2"),
        ("mul", "mul^2"),
        ("relu_grad", "relu_grad^2"),
        ("affine", "affine^2"),
        ("scale", "affine^2"),
        ("neg", "affine^2"),
        ("relu", "relu^2"),
        ("sigmoid", "sigmoid"),
        ("exp", "exp"),
        ("log", "log"),
        ("sqrt", "sqrt"),
        ("recip", "recip"),
        ("square", "square"),
        ("sum_axes", "sum_axes^2"),
        ("mean_axes", "mean_axes^2"),
        ("sum_all", "sum_all^2"),
        ("mean_all", "sum_all^2"),
        ("broadcast_to", "broadcast_to^2"),
        ("reshape", "reshape^2"),
        ("sum_to", "sum_to^2"),
        ("global_avg_pool", "global_avg_pool^2"),
        ("shortcut_a", "shortcut_a^2"),
        ("max_pool", "max_pool^2"),
        ("pick", "pick^2"),
        ("log_softmax", "log_softmax"),
        ("softmax", "softmax"),
        ("soft_cross_entropy", "soft_cross_entropy^2"),
        ("cross_entropy", "cross_entropy"),
    ];
    let names: Vec<String> = [
        matmul_checks(),
        conv_checks(),
        batch_norm_checks(),
        elementwise_checks(),
        reduction_and_pool_checks(),
        softmax_checks(),
    ]
    .into_iter()
    .flatten()
    .map(|c| c.name)
    .collect();
    for op in &ops {
        let (_, check) = covered
            .iter()
            .find(|(o, _)| o == op)
            .unwrap_or_else(|| panic!("op `{op}` has no second-order check listed here"));
        assert!(
            names
                .iter()
                .any(|n| n.split(' ').next() == check.split(' ').next()),
            "op `{op}`: check `{check}` does not exist"
        );
    }
}

#[test]
fn no_grad_detach_and_pruning() {
    let g = gpu();
    let w = Var::leaf(
        Tensor::from_f32(&g, &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
        true,
    );
    let x = Var::constant(Tensor::from_f32(&g, &[1, 2], &[1.0, -1.0]).unwrap());
    let y = ag::no_grad(|| ag::matmul(&x, &w, false, false).unwrap());
    assert!(!y.requires_grad(), "no_grad records nothing");
    let y = ag::matmul(&x, &w, false, false).unwrap();
    assert!(y.requires_grad());
    assert!(!y.detach().requires_grad());
    // Pruning: x does not require grad, so asking for it yields None.
    let l = ag::sum_all(&y).unwrap();
    let r = ag::grad(&[&l], &[&w, &x], None, false).unwrap();
    assert!(r[0].is_some() && r[1].is_none());
    assert_eq!(
        r[0].as_ref().unwrap().value().to_f32_vec().unwrap(),
        vec![1.0, 1.0, -1.0, -1.0]
    );
    assert!(
        ag::backward(&y, &[&w]).is_err(),
        "backward needs a scalar loss"
    );
}

/// Training-mode batch norm as this test composes it from elementary ops (means, squares, a
/// square root, products): an independent path to the same function, whose derivatives come
/// from the elementary ops' own rules and never touch the batch-norm kernels.
fn bn_composite(x: &Var, gamma: &Var, beta: &Var, relu: bool) -> Result<Var> {
    let c = gamma.shape()[0];
    let axes = [0, 2, 3];
    let per_channel = [1, c, 1, 1];
    let mean = ag::reshape(&ag::mean_axes(x, &axes)?, &per_channel)?;
    let xc = ag::sub(x, &mean)?;
    let var = ag::mean_axes(&ag::square(&xc)?, &axes)?;
    let rstd = ag::recip(&ag::sqrt(&ag::affine(&var, 1.0, 1e-5)?)?)?;
    let xhat = ag::mul(&xc, &ag::reshape(&rstd, &per_channel)?)?;
    let y = ag::add(
        &ag::mul(&xhat, &ag::reshape(gamma, &per_channel)?)?,
        &ag::reshape(beta, &per_channel)?,
    )?;
    if relu { ag::relu(&y) } else { Ok(y) }
}

/// Batch norm's fused op (fused kernels forward and backward, and the fused ops that keep its
/// backward differentiable) against `bn_composite`, values, first and second derivatives, on
/// a tensor too large for entry-by-entry finite differences. Both sides are f32 with other
/// summation orders: they agree to 1e-4 + 1e-3 |value|.
#[test]
fn batch_norm_fused_agrees_with_an_elementary_composition() {
    let g = gpu();
    let mut rng = Rng::new(99);
    let (n, c, h, w) = (4, 3, 5, 5);
    let close = |what: &str, a: &Var, b: &Var| {
        let a = a.value().to_f32_vec().unwrap();
        let b = common::f64s(&b.value().to_f32_vec().unwrap());
        common::assert_close(what, &a, &b, 1e-4, 1e-3);
    };
    for relu in [false, true] {
        let xd = rng.vec(n * c * h * w);
        let gd: Vec<f32> = rng.vec(c).iter().map(|v| 0.5 + v.abs()).collect();
        let bd = rng.vec(c);
        // No pre-activation so close to the ReLU's kink that rounding could flip its mask.
        let pre = bn_pre(&xd, &gd, &bd, n, c);
        assert!(pre.iter().all(|p| p.abs() > 1e-4), "pick another seed");
        let leaf = |d: &[f32], s: &[usize]| Var::leaf(Tensor::from_f32(&g, s, d).unwrap(), true);
        let (x, gamma, beta) = (leaf(&xd, &[n, c, h, w]), leaf(&gd, &[c]), leaf(&bd, &[c]));
        let v = Var::constant(Tensor::from_f32(&g, &[n, c, h, w], &rng.vec(xd.len())).unwrap());
        // L = <v, y> + <y, y> / 2: nonlinear in y, so every second derivative is exercised.
        let objective = |y: &Var| {
            ag::add(
                &ag::sum_all(&ag::mul(y, &v)?)?,
                &ag::scale(&ag::sum_all(&ag::square(y)?)?, 0.5)?,
            )
        };
        let fused_y = ag::batch_norm(&x, &gamma, &beta, 1e-5, relu).unwrap().0;
        let comp_y = bn_composite(&x, &gamma, &beta, relu).unwrap();
        close(&format!("relu={relu}: output"), &fused_y, &comp_y);
        let lf = objective(&fused_y).unwrap();
        let lc = objective(&comp_y).unwrap();
        let params = [&x, &gamma, &beta];
        let fused_nograph = ag::grad(&[&lf], &params, None, false).unwrap();
        let fused = ag::grad(&[&lf], &params, None, true).unwrap();
        let comp = ag::grad(&[&lc], &params, None, true).unwrap();
        for k in 0..3 {
            let (a, b, z) = (
                fused[k].as_ref().unwrap(),
                comp[k].as_ref().unwrap(),
                fused_nograph[k].as_ref().unwrap(),
            );
            close(&format!("relu={relu}: gradient {k} (graph)"), a, b);
            close(&format!("relu={relu}: gradient {k} (fused kernels)"), z, b);
            // Second order: d/d(x, gamma, beta) of <u, dL/dparam_k>.
            let u = Var::constant(
                Tensor::from_f32(&g, a.shape(), &rng.vec(a.value().numel())).unwrap(),
            );
            let hf = ag::sum_all(&ag::mul(a, &u).unwrap()).unwrap();
            let hc = ag::sum_all(&ag::mul(b, &u).unwrap()).unwrap();
            assert!(
                hf.requires_grad(),
                "relu={relu}: fused gradient {k} has no graph"
            );
            let sf = ag::grad(&[&hf], &params, None, false).unwrap();
            let sc = ag::grad(&[&hc], &params, None, false).unwrap();
            for j in 0..3 {
                match (&sf[j], &sc[j]) {
                    (Some(a), Some(b)) => {
                        close(&format!("relu={relu}: d/dparam{j} <u, dL/dparam{k}>"), a, b)
                    }
                    (None, None) => {}
                    (a, b) => {
                        // One side pruned a zero derivative: the other must be zero too.
                        let t = a.as_ref().or(b.as_ref()).unwrap();
                        let m = t.value().to_f32_vec().unwrap();
                        assert!(
                            m.iter().all(|v| v.abs() < 1e-5),
                            "relu={relu}: d/dparam{j} <u, dL/dparam{k}>: one side missing"
                        );
                    }
                }
            }
        }
    }
}
