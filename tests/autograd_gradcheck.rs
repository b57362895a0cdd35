//! Every differentiable op: a finite-difference gradient check and a gradient-of-gradient
//! check, both on the real GPU path.
//!
//! For op f with inputs x_1..x_n and a fixed random v, L = <v, f(x)>. First order: dL/dx_i
//! from the engine against central differences of L. Second order: for each pair (i, j),
//! h = <u, dL/dx_i> with the gradient taken with `create_graph`; dh/dx_j from the engine
//! against central differences of h (each h evaluated with a fresh first-order gradient).

mod common;

use common::{Rng, gpu};
use dynloss_wgpu::Gpu;
use dynloss_wgpu::Result;
use dynloss_wgpu::Tensor;
use dynloss_wgpu::autograd::{self as ag, Var};
use dynloss_wgpu::tensor::conv::ConvGeom;
use dynloss_wgpu::tensor::pool::PoolGeom;

struct Check {
    name: &'static str,
    shapes: Vec<Vec<usize>>,
    /// Inputs that get gradients (others are constants fed to the op).
    grad_inputs: Vec<usize>,
    /// Keep |x| above this, for ops with kinks at 0 (ReLU) or poles.
    away_from_zero: f32,
    /// Make inputs positive (log, sqrt).
    positive: bool,
    /// Check second derivatives too.
    second_order: bool,
    tol: f64,
}

impl Check {
    fn new(name: &'static str, shapes: Vec<Vec<usize>>) -> Check {
        let n = shapes.len();
        Check {
            name,
            shapes,
            grad_inputs: (0..n).collect(),
            away_from_zero: 0.0,
            positive: false,
            second_order: true,
            tol: 2e-2,
        }
    }
}

type OpFn<'a> = &'a dyn Fn(&[Var]) -> Result<Var>;

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

fn inner(a: &Var, v: &Tensor) -> Var {
    ag::sum_all(&ag::mul(a, &Var::constant(v.clone())).unwrap()).unwrap()
}

fn loss(g: &Gpu, c: &Check, f: OpFn, data: &[Vec<f32>], v: &Tensor) -> f64 {
    ag::no_grad(|| {
        let xs = leaves(g, c, data);
        inner(&f(&xs).unwrap(), v).value().item().unwrap() as f64
    })
}

/// <u, dL/dx_i> evaluated without keeping a graph.
fn h_value(
    g: &Gpu,
    c: &Check,
    f: OpFn,
    data: &[Vec<f32>],
    v: &Tensor,
    i: usize,
    u: &Tensor,
) -> f64 {
    let xs = leaves(g, c, data);
    let l = inner(&f(&xs).unwrap(), v);
    let gi = ag::grad(&[&l], &[&xs[i]], None, false).unwrap().remove(0);
    match gi {
        Some(gi) => ag::no_grad(|| inner(&gi, u).value().item().unwrap() as f64),
        None => 0.0,
    }
}

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    num / den.max(1e-3)
}

/// Indices of up to `k` elements of an input to perturb.
fn probe(n: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    if n <= k {
        (0..n).collect()
    } else {
        (0..k).map(|_| rng.below(n as u32) as usize).collect()
    }
}

fn run(c: Check, f: OpFn) {
    let g = gpu();
    let mut rng = Rng::new(c.name.len() as u64 * 7919);
    let data: Vec<Vec<f32>> = c
        .shapes
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
        .collect();
    let xs = leaves(&g, &c, &data);
    let y = f(&xs).unwrap();
    let v = Tensor::from_f32(&g, y.shape(), &rng.vec(y.value().numel())).unwrap();
    let l = inner(&y, &v);
    let wanted: Vec<&Var> = c.grad_inputs.iter().map(|&i| &xs[i]).collect();
    let grads = ag::grad(&[&l], &wanted, None, true).unwrap();
    let eps = 1e-2f32;
    for (k, &i) in c.grad_inputs.iter().enumerate() {
        let gi = grads[k]
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no gradient for input {i}", c.name));
        assert_eq!(gi.shape(), xs[i].shape(), "{}: gradient shape", c.name);
        let got_all = gi.value().to_f32_vec().unwrap();
        let idx = probe(data[i].len(), 12, &mut rng);
        let mut got = Vec::new();
        let mut want = Vec::new();
        for &e in &idx {
            let mut plus = data.clone();
            plus[i][e] += eps;
            let mut minus = data.clone();
            minus[i][e] -= eps;
            let fd =
                (loss(&g, &c, f, &plus, &v) - loss(&g, &c, f, &minus, &v)) / (2.0 * eps as f64);
            got.push(got_all[e] as f64);
            want.push(fd);
        }
        let err = rel_err(&got, &want);
        assert!(
            err < c.tol,
            "{}: d/dx{i}: rel err {err:.2e}\n got {got:?}\nwant {want:?}",
            c.name
        );

        if !c.second_order {
            continue;
        }
        // Second order: h = <u, dL/dx_i>, differentiated with respect to every x_j.
        let u = Tensor::from_f32(&g, xs[i].shape(), &rng.vec(data[i].len())).unwrap();
        let h = inner(gi, &u);
        if !h.requires_grad() {
            continue; // dL/dx_i does not depend on any input (f linear in x_i alone)
        }
        let second = ag::grad(&[&h], &wanted, None, false).unwrap();
        for (k2, &j) in c.grad_inputs.iter().enumerate() {
            let got_all: Vec<f32> = match &second[k2] {
                Some(t) => t.value().to_f32_vec().unwrap(),
                None => vec![0.0; data[j].len()],
            };
            let idx = probe(data[j].len(), 8, &mut rng);
            let mut got = Vec::new();
            let mut want = Vec::new();
            for &e in &idx {
                let mut plus = data.clone();
                plus[j][e] += eps;
                let mut minus = data.clone();
                minus[j][e] -= eps;
                let fd = (h_value(&g, &c, f, &plus, &v, i, &u)
                    - h_value(&g, &c, f, &minus, &v, i, &u))
                    / (2.0 * eps as f64);
                got.push(got_all[e] as f64);
                want.push(fd);
            }
            let scale: f64 = want.iter().map(|w| w.abs()).fold(0.0, f64::max);
            let err = if scale < 1e-3 {
                got.iter().map(|a| a.abs()).fold(0.0, f64::max) // both should be ~0
            } else {
                rel_err(&got, &want)
            };
            assert!(
                err < c.tol * 2.5,
                "{}: d/dx{j} <u, dL/dx{i}>: err {err:.2e}\n got {got:?}\nwant {want:?}",
                c.name
            );
        }
    }
}

#[test]
fn matmul_all_transposes() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let sa = if ta { vec![4, 3] } else { vec![3, 4] };
        let sb = if tb { vec![5, 4] } else { vec![4, 5] };
        run(Check::new("matmul", vec![sa, sb]), &|x| {
            ag::matmul(&x[0], &x[1], ta, tb)
        });
    }
}

#[test]
fn linear_with_bias() {
    run(
        Check::new("linear", vec![vec![3, 4], vec![2, 4], vec![2]]),
        &|x| ag::linear(&x[0], &x[1], Some(&x[2])),
    );
}

#[test]
fn conv2d_family() {
    for (stride, pad, k) in [(1, 1, 3), (2, 1, 3), (1, 0, 1)] {
        let g = ConvGeom { stride, pad };
        let o = g.out_size(5, k).unwrap();
        run(
            Check::new("conv2d", vec![vec![2, 3, 5, 5], vec![4, 3, k, k]]),
            &move |x| ag::conv2d(&x[0], &x[1], g),
        );
        run(
            Check::new(
                "conv2d_input_grad",
                vec![vec![2, 4, o, o], vec![4, 3, k, k]],
            ),
            &move |x| ag::conv2d_input_grad(&x[0], &x[1], (5, 5), g),
        );
        run(
            Check::new(
                "conv2d_weight_grad",
                vec![vec![2, 3, 5, 5], vec![2, 4, o, o]],
            ),
            &move |x| ag::conv2d_weight_grad(&x[0], &x[1], (k, k), g),
        );
    }
}

#[test]
fn batch_norm_training() {
    for relu in [false, true] {
        let mut c = Check::new("batch_norm", vec![vec![3, 2, 3, 3], vec![2], vec![2]]);
        c.tol = 3e-2;
        // Keep the ReLU kink away from the perturbations: beta shifts the outputs.
        run(c, &move |x| {
            ag::batch_norm(&x[0], &x[1], &x[2], 1e-5, relu).map(|r| r.0)
        });
    }
    let c = Check::new("batch_norm_1d", vec![vec![6, 3], vec![3], vec![3]]);
    run(c, &|x| {
        ag::batch_norm(&x[0], &x[1], &x[2], 1e-5, false).map(|r| r.0)
    });
}

#[test]
fn batch_norm_eval_mode() {
    run(
        Check::new("batch_norm_eval", vec![vec![2, 2, 2, 2], vec![2], vec![2]]),
        &|x| {
            let g = x[0].value().gpu();
            let mean = Tensor::from_f32(g, &[2], &[0.3, -0.2])?;
            let var = Tensor::from_f32(g, &[2], &[0.5, 2.0])?;
            ag::batch_norm_eval(&x[0], &x[1], &x[2], &mean, &var, 1e-5, false)
        },
    );
}

#[test]
fn elementwise_and_broadcasting() {
    run(Check::new("add", vec![vec![2, 3, 4], vec![3, 1]]), &|x| {
        ag::add(&x[0], &x[1])
    });
    run(Check::new("sub", vec![vec![4], vec![3, 4]]), &|x| {
        ag::sub(&x[0], &x[1])
    });
    run(
        Check::new("mul", vec![vec![2, 3, 2, 2], vec![1, 3, 1, 1]]),
        &|x| ag::mul(&x[0], &x[1]),
    );
    run(Check::new("affine", vec![vec![7]]), &|x| {
        ag::affine(&x[0], -1.5, 0.25)
    });
    run(Check::new("broadcast_to", vec![vec![3, 1]]), &|x| {
        ag::broadcast_to(&x[0], &[2, 3, 4])
    });
    run(Check::new("reshape", vec![vec![2, 6]]), &|x| {
        ag::reshape(&x[0], &[3, 4])
    });
    let mut c = Check::new("relu", vec![vec![3, 5]]);
    c.away_from_zero = 0.1;
    run(c, &|x| ag::relu(&x[0]));
    // Products with a ReLU, so that the second derivative is not trivially zero.
    let mut c = Check::new("relu_mixed", vec![vec![3, 5], vec![3, 5]]);
    c.away_from_zero = 0.1;
    run(c, &|x| ag::mul(&ag::relu(&x[0])?, &x[1]));
    let mut c = Check::new("add_relu", vec![vec![2, 3, 2], vec![2, 3, 2]]);
    c.away_from_zero = 0.1;
    run(c, &|x| ag::mul(&ag::add_relu(&x[0], &x[1])?, &x[0]));
    run(Check::new("sigmoid", vec![vec![3, 4]]), &|x| {
        ag::sigmoid(&ag::scale(&x[0], 3.0)?)
    });
    run(Check::new("exp", vec![vec![6]]), &|x| ag::exp(&x[0]));
    let mut c = Check::new("log", vec![vec![6]]);
    c.positive = true;
    run(c, &|x| ag::log(&x[0]));
    let mut c = Check::new("sqrt", vec![vec![6]]);
    c.positive = true;
    run(c, &|x| ag::sqrt(&x[0]));
    let mut c = Check::new("recip", vec![vec![6]]);
    c.positive = true;
    run(c, &|x| ag::recip(&x[0]));
    run(Check::new("square", vec![vec![6]]), &|x| ag::square(&x[0]));
}

#[test]
fn reductions_and_pooling() {
    run(Check::new("sum_axes", vec![vec![2, 3, 4]]), &|x| {
        ag::sum_axes(&x[0], &[0, 2])
    });
    run(Check::new("sum_squares", vec![vec![2, 3, 4]]), &|x| {
        ag::sum_axes(&ag::square(&x[0])?, &[1])
    });
    run(Check::new("mean_all", vec![vec![5, 3]]), &|x| {
        ag::mean_all(&ag::square(&x[0])?)
    });
    run(
        Check::new("global_avg_pool", vec![vec![2, 3, 4, 4]]),
        &|x| ag::global_avg_pool(&ag::square(&x[0])?),
    );
    for g in [
        PoolGeom {
            k: 2,
            stride: 2,
            pad: 0,
        },
        PoolGeom {
            k: 3,
            stride: 2,
            pad: 1,
        },
    ] {
        run(Check::new("max_pool", vec![vec![2, 2, 5, 5]]), &move |x| {
            ag::max_pool(&ag::square(&x[0])?, g)
        });
    }
    run(Check::new("shortcut_a", vec![vec![2, 2, 4, 4]]), &|x| {
        ag::shortcut_a(&ag::square(&x[0])?, 4)
    });
}

#[test]
fn gather_softmax_and_margin_cross_entropy() {
    let labels = |x: &Var| Tensor::from_u32(x.value().gpu(), &[4], &[2, 0, 1, 2]);
    run(Check::new("pick", vec![vec![4, 3]]), &|x| {
        ag::pick(&ag::square(&x[0])?, &labels(&x[0])?)
    });
    run(Check::new("log_softmax", vec![vec![4, 5]]), &|x| {
        ag::log_softmax(&x[0])
    });
    run(Check::new("softmax", vec![vec![4, 5]]), &|x| {
        ag::softmax(&x[0])
    });
    // Soft labels depend on an input through a sigmoid, as the label corrector's do.
    run(
        Check::new("soft_cross_entropy", vec![vec![4, 3], vec![4, 3], vec![3]]),
        &|x| ag::soft_cross_entropy(&x[0], &ag::sigmoid(&x[1])?, Some(&x[2])),
    );
    run(
        Check::new("soft_ce_no_margin", vec![vec![4, 3], vec![4, 3]]),
        &|x| ag::soft_cross_entropy(&x[0], &x[1], None),
    );
    run(
        Check::new("cross_entropy", vec![vec![4, 3], vec![3]]),
        &|x| ag::cross_entropy(&x[0], &labels(&x[0])?, Some(&x[1])),
    );
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

/// The fused backward kernels (used when no graph is recorded) and the differentiable
/// backward rules (used with `create_graph`) must agree.
#[test]
fn fused_and_differentiable_backward_rules_agree() {
    let g = gpu();
    let mut rng = Rng::new(99);
    let leaf = |s: &[usize], rng: &mut Rng| {
        Var::leaf(
            Tensor::from_f32(&g, s, &rng.vec(s.iter().product())).unwrap(),
            true,
        )
    };
    let x = leaf(&[3, 2, 4, 4], &mut rng);
    let gamma = leaf(&[2], &mut rng);
    let beta = leaf(&[2], &mut rng);
    let z = leaf(&[5, 4], &mut rng);
    let t = leaf(&[5, 4], &mut rng);
    let q = leaf(&[4], &mut rng);
    let (y, _) = ag::batch_norm(&x, &gamma, &beta, 1e-5, true).unwrap();
    let ce = ag::soft_cross_entropy(&z, &t, Some(&q)).unwrap();
    let l = ag::add(
        &ag::sum_all(&ag::square(&y).unwrap()).unwrap(),
        &ag::sum_all(&ce).unwrap(),
    )
    .unwrap();
    let params = [&x, &gamma, &beta, &z, &t, &q];
    let fused = ag::grad(&[&l], &params, None, false).unwrap();
    let graph = ag::grad(&[&l], &params, None, true).unwrap();
    for (i, (a, b)) in fused.iter().zip(&graph).enumerate() {
        let a = a.as_ref().unwrap().value().to_f32_vec().unwrap();
        let b: Vec<f64> = b
            .as_ref()
            .unwrap()
            .value()
            .to_f32_vec()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        common::assert_close(&format!("param {i}"), &a, &b, 1e-4, 1e-3);
    }
}
