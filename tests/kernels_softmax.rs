//! Softmax, log-softmax and the cross-entropy losses against f64 CPU references.

mod common;

use common::cpu::{self, row};
use common::{Rng, Tol, assert_within, check_kernel, f64s};
use dynloss_wgpu::tensor::softmax::{
    cross_entropy_hard, log_softmax, soft_cross_entropy, soft_cross_entropy_backward, softmax,
};
use dynloss_wgpu::{DType, Error, Gpu, Tensor};

/// Random soft targets in [0, 1) (rows do not sum to 1).
fn targets(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform()).collect()
}

fn upload(gpu: &Gpu, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu, shape, v).unwrap()
}

#[test]
fn softmax_and_log_softmax_match_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(10);
    for (b, c, scale) in [
        (7, 1, 1.0),
        (1, 1000, 5.0),
        (300, 10, 80.0),
        (33, 100, 1.0),
        (1, 1, 80.0),
    ] {
        let x: Vec<f32> = rng.vec(b * c).iter().map(|v| v * scale).collect();
        let xt = upload(&gpu, &[b, c], &x);
        let x64 = f64s(&x);
        let want_ls: Vec<f64> = (0..b)
            .flat_map(|r| cpu::log_softmax(&row(&x64, None, c, r)))
            .collect();
        let want_sm: Vec<f64> = want_ls.iter().map(|v| v.exp()).collect();
        let what = format!("[{b}, {c}] x{scale}");
        let sm = check_kernel(
            &format!("softmax {what}"),
            || softmax(&xt),
            &want_sm,
            Tol::abs_rel(1e-6, 1e-4),
        );
        assert_eq!(sm.shape(), [b, c]);
        check_kernel(
            &format!("log_softmax {what}"),
            || log_softmax(&xt),
            &want_ls,
            Tol::abs_rel(2e-5, 1e-5),
        );
    }
}

#[test]
fn soft_cross_entropy_matches_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(11);
    for (b, c, scale) in [(5, 1, 1.0), (1, 1000, 3.0), (257, 10, 80.0), (40, 100, 2.0)] {
        let x: Vec<f32> = rng.vec(b * c).iter().map(|v| v * scale).collect();
        let t = targets(&mut rng, b * c);
        let q: Vec<f32> = rng.vec(c).iter().map(|v| v * 3.0).collect();
        let (xt, tt, qt) = (
            upload(&gpu, &[b, c], &x),
            upload(&gpu, &[b, c], &t),
            upload(&gpu, &[c], &q),
        );
        let (x64, t64, q64) = (f64s(&x), f64s(&t), f64s(&q));
        let what = format!("[{b}, {c}] x{scale}");
        let want = cpu::soft_cross_entropy(&x64, &t64, None, c);
        let got = check_kernel(
            &format!("soft ce {what}"),
            || soft_cross_entropy(&xt, &tt, None),
            &want,
            Tol::abs_rel(1e-4, 1e-4),
        );
        assert_eq!(got.shape(), [b]);
        let want = cpu::soft_cross_entropy(&x64, &t64, Some(&q64), c);
        check_kernel(
            &format!("soft ce + margins {what}"),
            || soft_cross_entropy(&xt, &tt, Some(&qt)),
            &want,
            Tol::abs_rel(1e-4, 1e-4),
        );
    }
}

#[test]
fn soft_cross_entropy_backward_matches_analytic_and_finite_differences() {
    let gpu = common::gpu();
    let mut rng = Rng::new(12);
    for (b, c, scale) in [(3, 1, 1.0), (1, 1000, 2.0), (17, 10, 80.0), (6, 37, 1.5)] {
        let x: Vec<f32> = rng.vec(b * c).iter().map(|v| v * scale).collect();
        let t = targets(&mut rng, b * c);
        let q: Vec<f32> = rng.vec(c);
        let g: Vec<f32> = rng.vec(b);
        let (xt, tt, qt, gt) = (
            upload(&gpu, &[b, c], &x),
            upload(&gpu, &[b, c], &t),
            upload(&gpu, &[c], &q),
            upload(&gpu, &[b], &g),
        );
        let (x64, t64, q64, g64) = (f64s(&x), f64s(&t), f64s(&q), f64s(&g));
        for margins in [false, true] {
            let (qg, qc) = if margins {
                (Some(&qt), Some(&q64[..]))
            } else {
                (None, None)
            };
            let what = format!("[{b}, {c}] x{scale} margins {margins}");
            let got = soft_cross_entropy_backward(&xt, &tt, qg, &gt).unwrap();
            assert_eq!(got.shape(), [b, c]);
            let got = got.to_f32_vec().unwrap();
            let want = cpu::soft_cross_entropy_backward(&x64, &t64, qc, &g64, c);
            assert_within(
                &format!("analytic {what}"),
                &got,
                &want,
                Tol::abs_rel(1e-5, 1e-4),
            );

            // Central differences of L = sum_r g_r * loss_r w.r.t. every logit.
            let h = 1e-5;
            let objective = |xs: &[f64]| -> f64 {
                let l = cpu::soft_cross_entropy(xs, &t64, qc, c);
                l.iter().zip(&g64).map(|(l, g)| l * g).sum()
            };
            let mut xs = x64.clone();
            let fd: Vec<f64> = (0..b * c)
                .map(|i| {
                    xs[i] = x64[i] + h;
                    let up = objective(&xs);
                    xs[i] = x64[i] - h;
                    let down = objective(&xs);
                    xs[i] = x64[i];
                    (up - down) / (2.0 * h)
                })
                .collect();
            assert_within(
                &format!("finite differences {what}"),
                &got,
                &fd,
                Tol::abs_rel(1e-4, 1e-3),
            );
        }
    }
}

#[test]
fn hard_cross_entropy_matches_cpu() {
    let gpu = common::gpu();
    let mut rng = Rng::new(13);
    for (b, c, scale) in [
        (50_000, 10, 4.0),
        (2000, 100, 80.0),
        (3, 1000, 1.0),
        (4, 1, 1.0),
    ] {
        let x: Vec<f32> = rng.vec(b * c).iter().map(|v| v * scale).collect();
        let labels = rng.labels(b, c as u32);
        let q: Vec<f32> = rng.vec(c);
        let (xt, qt) = (upload(&gpu, &[b, c], &x), upload(&gpu, &[c], &q));
        let lt = Tensor::from_u32(&gpu, &[b], &labels).unwrap();
        let (x64, q64) = (f64s(&x), f64s(&q));
        for margins in [false, true] {
            let qc = margins.then_some(&q64[..]);
            let want: Vec<f64> = (0..b)
                .map(|r| -cpu::log_softmax(&row(&x64, qc, c, r))[labels[r] as usize])
                .collect();
            let what = format!("hard ce [{b}, {c}] x{scale} margins {margins}");
            let got = check_kernel(
                &what,
                || cross_entropy_hard(&xt, &lt, margins.then_some(&qt)),
                &want,
                Tol::abs_rel(2e-5, 1e-4),
            );
            assert_eq!(got.shape(), [b]);
        }
    }
    // An out-of-range label gives NaN for that sample only.
    let xt = upload(&gpu, &[2, 3], &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0]);
    let lt = Tensor::from_u32(&gpu, &[2], &[3, 2]).unwrap();
    let got = cross_entropy_hard(&xt, &lt, None)
        .unwrap()
        .to_f32_vec()
        .unwrap();
    assert!(got[0].is_nan() && got[1].is_finite());
}

#[test]
fn shape_errors() {
    let gpu = common::gpu();
    let x = Tensor::zeros(&gpu, &[4, 3], DType::F32);
    let bad_t = Tensor::zeros(&gpu, &[4, 2], DType::F32);
    let bad_q = Tensor::zeros(&gpu, &[4], DType::F32);
    let g = Tensor::zeros(&gpu, &[4], DType::F32);
    let labels = Tensor::zeros(&gpu, &[3], DType::U32);
    let shape_err = |r: Result<Tensor, Error>| matches!(r, Err(Error::Shape { .. }));
    assert!(shape_err(softmax(&g)));
    assert!(shape_err(log_softmax(&labels)));
    assert!(shape_err(soft_cross_entropy(&x, &bad_t, None)));
    assert!(shape_err(soft_cross_entropy(&x, &x, Some(&bad_q))));
    assert!(shape_err(soft_cross_entropy_backward(
        &x,
        &x,
        None,
        &bad_q.reshape(&[2, 2]).unwrap()
    )));
    assert!(shape_err(cross_entropy_hard(&x, &labels, None)));
    assert!(shape_err(cross_entropy_hard(&x, &g, None)));
    let empty = Tensor::zeros(&gpu, &[4, 0], DType::F32);
    assert!(shape_err(soft_cross_entropy(&empty, &empty, None)));
    assert_eq!(softmax(&empty).unwrap().shape(), [4, 0]);
}
