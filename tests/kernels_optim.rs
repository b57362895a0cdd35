//! In-place SGD and Adam steps against f64 CPU references over several steps.

mod common;

use common::{Rng, Tol, check_output, cpu};
use dynloss_wgpu::tensor::optim::{adam_step, sgd_step};
use dynloss_wgpu::{DType, Error, Tensor};

/// Element counts: one, a workgroup plus one, and an awkward size past a million.
const SIZES: [usize; 3] = [1, 257, 1_000_003];
const STEPS: usize = 4;

#[test]
fn sgd_matches_pytorch_semantics() {
    let gpu = common::gpu();
    let mut rng = Rng::new(30);
    for n in SIZES {
        for (lr, momentum, wd) in [(0.1f32, 0.9f32, 5e-4f32), (0.05, 0.0, 0.0)] {
            let w0 = rng.vec(n);
            let w = Tensor::from_f32(&gpu, &[n], &w0).unwrap();
            let buf = Tensor::zeros(&gpu, &[n], DType::F32);
            let mut cw: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
            let mut cb = vec![0.0f64; n];
            for step in 0..STEPS {
                let g = rng.vec(n);
                sgd_step(
                    &w,
                    &buf,
                    &Tensor::from_f32(&gpu, &[n], &g).unwrap(),
                    lr,
                    momentum,
                    wd,
                )
                .unwrap();
                cpu::sgd_step(&mut cw, &mut cb, &g, (lr, momentum, wd), step == 0);
            }
            let what = format!("sgd n={n} lr={lr} momentum={momentum} wd={wd}");
            check_output(&format!("{what} w"), &w, &cw, Tol::abs_rel(1e-5, 1e-5));
            check_output(&format!("{what} buf"), &buf, &cb, Tol::abs_rel(1e-5, 1e-5));
        }
    }
}

#[test]
fn adam_matches_pytorch_semantics() {
    let gpu = common::gpu();
    let mut rng = Rng::new(31);
    for n in SIZES {
        for (lr, b1, b2, eps, wd) in [
            (3e-3f32, 0.9f32, 0.999f32, 1e-8f32, 0.0f32),
            (0.01, 0.8, 0.99, 1e-6, 0.01),
        ] {
            let w0 = rng.vec(n);
            let w = Tensor::from_f32(&gpu, &[n], &w0).unwrap();
            let m = Tensor::zeros(&gpu, &[n], DType::F32);
            let v = Tensor::zeros(&gpu, &[n], DType::F32);
            let mut cw: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
            let (mut cm, mut cv) = (vec![0.0f64; n], vec![0.0f64; n]);
            for t in 1..=STEPS {
                let g = rng.vec(n);
                let gt = Tensor::from_f32(&gpu, &[n], &g).unwrap();
                adam_step(&w, &m, &v, &gt, lr, b1, b2, eps, wd, t as u32).unwrap();
                cpu::adam_step(&mut cw, &mut cm, &mut cv, &g, (lr, b1, b2, eps, wd), t);
            }
            let what = format!("adam n={n} lr={lr} b1={b1} b2={b2} wd={wd}");
            check_output(&format!("{what} w"), &w, &cw, Tol::abs_rel(1e-5, 1e-5));
            check_output(&format!("{what} m"), &m, &cm, Tol::abs_rel(1e-6, 1e-5));
            check_output(&format!("{what} v"), &v, &cv, Tol::abs_rel(1e-7, 1e-4));
        }
    }
}

#[test]
fn shape_and_alias_errors() {
    let gpu = common::gpu();
    let w = Tensor::zeros(&gpu, &[4], DType::F32);
    let b = Tensor::zeros(&gpu, &[4], DType::F32);
    let v = Tensor::zeros(&gpu, &[4], DType::F32);
    let short = Tensor::zeros(&gpu, &[3], DType::F32);
    let ints = Tensor::zeros(&gpu, &[4], DType::U32);
    let shape_err = |r: Result<(), Error>| matches!(r, Err(Error::Shape { .. }));
    assert!(shape_err(sgd_step(&w, &b, &short, 0.1, 0.9, 0.0)));
    assert!(shape_err(sgd_step(&w, &b, &ints, 0.1, 0.9, 0.0)));
    assert!(shape_err(sgd_step(&w, &b, &w, 0.1, 0.9, 0.0)));
    assert!(shape_err(sgd_step(
        &w,
        &b,
        &b.reshape(&[2, 2]).unwrap(),
        0.1,
        0.9,
        0.0
    )));
    assert!(shape_err(adam_step(
        &w, &b, &v, &v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1
    )));
    assert!(shape_err(adam_step(
        &w, &b, &v, &short, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1
    )));
    assert!(shape_err(adam_step(
        &w, &b, &v, &ints, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1
    )));
    let g4 = Tensor::zeros(&gpu, &[4], DType::F32);
    assert!(shape_err(adam_step(
        &w, &b, &v, &g4, 1e-3, 0.9, 0.999, 1e-8, 0.0, 0
    )));
    // A [2, 2] gradient for [4] weights is fine: only element counts must agree.
    let g = Tensor::from_f32(&gpu, &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    sgd_step(&w, &b, &g, 0.5, 0.9, 0.0).unwrap();
    assert_eq!(w.to_f32_vec().unwrap(), [-0.5, -1.0, -1.5, -2.0]);
}
