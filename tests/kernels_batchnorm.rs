//! Batch norm kernels (training statistics, apply with fused ReLU, running update, backward)
//! against f64 CPU references.

mod common;

use common::{Rng, Tol, check_output, cpu, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::tensor::batchnorm::{batch_stats, bn_apply, bn_backward, bn_running_update};

#[test]
fn batchnorm_training_forward_backward_and_running_stats() {
    let g = gpu();
    let mut rng = Rng::new(20);
    let eps = 1e-5f32;
    // (N, C, H, W, offset): partial sums per channel from 1 to 256 (several workgroups of
    // them), [N, C] inputs, planes of several 1024-value apply blocks, and values far from
    // zero (where a one-pass variance without a shift loses every digit).
    for (n, c, h, w, offset) in [
        (4, 3, 5, 5, 1.0),
        (1, 2, 1, 1, 1.0),
        (2, 16, 17, 9, 1.0),
        (300, 2, 1, 1, 1.0),
        (3, 5, 16, 16, 1.0),
        (64, 3, 16, 16, 1.0),
        (8, 4, 12, 12, 50.0),
        (2, 3, 20, 27, 1.0),
        (2, 3, 40, 37, 1.0),
    ] {
        let hw = h * w;
        let shape = if h * w == 1 {
            vec![n, c]
        } else {
            vec![n, c, h, w]
        };
        let x: Vec<f32> = rng
            .vec(n * c * hw)
            .iter()
            .map(|v| 3.0 * v + offset)
            .collect();
        let gamma = rng.vec(c);
        let beta = rng.vec(c);
        let dy = rng.vec(n * c * hw);
        let xt = Tensor::from_f32(&g, &shape, &x).unwrap();
        let gt = Tensor::from_f32(&g, &[c], &gamma).unwrap();
        let bt = Tensor::from_f32(&g, &[c], &beta).unwrap();
        let what = format!("{n}x{c}x{h}x{w}");

        let r = cpu::batch_stats(&x, n, c, hw);
        let stats = batch_stats(&xt).unwrap();
        check_output(
            &format!("mean {what}"),
            &stats.mean,
            &r.mean,
            Tol::abs_rel(1e-5, 1e-5),
        );
        check_output(
            &format!("var {what}"),
            &stats.var,
            &r.var,
            Tol::abs_rel(1e-5, 1e-4),
        );

        let yhat = |i: usize| {
            let ch = (i / hw) % c;
            (x[i] as f64 - r.mean[ch]) / (r.var[ch] + eps as f64).sqrt()
        };
        for relu in [false, true] {
            let y = bn_apply(&xt, &stats.mean, &stats.var, &gt, &bt, eps, relu).unwrap();
            let want: Vec<f64> = (0..x.len())
                .map(|i| {
                    let ch = (i / hw) % c;
                    let v = yhat(i) * gamma[ch] as f64 + beta[ch] as f64;
                    if relu { v.max(0.0) } else { v }
                })
                .collect();
            check_output(
                &format!("apply relu={relu} {what}"),
                &y,
                &want,
                Tol::abs_rel(1e-4, 1e-4),
            );
        }

        // Backward: dbeta = sum dy, dgamma = sum dy*xhat,
        // dx = gamma*rstd*(dy - mean(dy) - xhat*mean(dy*xhat)).
        let dyt = Tensor::from_f32(&g, &shape, &dy).unwrap();
        let (dx, dgamma, dbeta) = bn_backward(&xt, &stats, &gt, &dyt, eps).unwrap();
        let m = (n * hw) as f64;
        let mut sdy = vec![0.0; c];
        let mut sdyx = vec![0.0; c];
        for (i, &d) in dy.iter().enumerate() {
            let ch = (i / hw) % c;
            sdy[ch] += d as f64;
            sdyx[ch] += d as f64 * yhat(i);
        }
        let want_dx: Vec<f64> = (0..x.len())
            .map(|i| {
                let ch = (i / hw) % c;
                let rstd = 1.0 / (r.var[ch] + eps as f64).sqrt();
                gamma[ch] as f64 * rstd * (dy[i] as f64 - sdy[ch] / m - yhat(i) * sdyx[ch] / m)
            })
            .collect();
        let tol = if n * hw == 1 { 1e-2 } else { 1e-4 };
        check_output(
            &format!("dbeta {what}"),
            &dbeta,
            &sdy,
            Tol::abs_rel(1e-4, 1e-4),
        );
        check_output(
            &format!("dgamma {what}"),
            &dgamma,
            &sdyx,
            Tol::abs_rel(1e-4, 1e-4),
        );
        check_output(
            &format!("dx {what}"),
            &dx,
            &want_dx,
            Tol::abs_rel(tol, 1e-3),
        );

        // Running statistics (momentum 0.1, unbiased variance), starting from (0, 1).
        let rm = Tensor::zeros(&g, &[c], dynloss_wgpu::DType::F32);
        let rv = Tensor::full(&g, &[c], 1.0);
        bn_running_update(&rm, &rv, &stats, 0.1).unwrap();
        let unbias = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let want_rm: Vec<f64> = r.mean.iter().map(|v| 0.1 * v).collect();
        let want_rv: Vec<f64> = r.var.iter().map(|v| 0.9 + 0.1 * v * unbias).collect();
        check_output("running mean", &rm, &want_rm, Tol::abs_rel(1e-6, 1e-5));
        check_output("running var", &rv, &want_rv, Tol::abs_rel(1e-6, 1e-5));

        // Evaluation mode is the same apply with the running statistics.
        let y = bn_apply(&xt, &rm, &rv, &gt, &bt, eps, false).unwrap();
        let want: Vec<f64> = (0..x.len())
            .map(|i| {
                let ch = (i / hw) % c;
                (x[i] as f64 - want_rm[ch]) / (want_rv[ch] + eps as f64).sqrt() * gamma[ch] as f64
                    + beta[ch] as f64
            })
            .collect();
        check_output("eval apply", &y, &want, Tol::abs_rel(1e-4, 1e-4));
    }
}

#[test]
fn batchnorm_rejects_wrong_parameter_shapes() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[2, 3, 4, 4], dynloss_wgpu::DType::F32);
    let s = batch_stats(&x).unwrap();
    let bad = Tensor::zeros(&g, &[4], dynloss_wgpu::DType::F32);
    assert!(bn_apply(&x, &s.mean, &s.var, &bad, &bad, 1e-5, false).is_err());
    assert!(batch_stats(&Tensor::zeros(&g, &[2, 3, 4], dynloss_wgpu::DType::F32)).is_err());
}
