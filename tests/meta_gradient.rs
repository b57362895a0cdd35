//! The whole Dynamic Loss meta gradient on a tiny network (conv - BN - ReLU - pool - linear,
//! the spec's two meta MLPs, virtual SGD step with momentum and weight decay, meta
//! cross-entropy) against central finite differences of that whole function with respect to
//! the meta-net parameters.

mod common;

use common::{Rng, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::dynloss::meta_net::MetaNet;
use dynloss_wgpu::dynloss::meta_step::{MetaBatch, MetaParts, VirtualSgd, meta_gradient};
use dynloss_wgpu::nn::{init::init_params, resnet::tiny_cnn};
use dynloss_wgpu::tensor::softmax::softmax;

#[test]
fn meta_gradient_matches_finite_differences() {
    let g = gpu();
    let mut rng = Rng::new(7);
    let (classes, bins, b, m) = (4usize, 10usize, 6usize, 5usize);
    let model = tiny_cnn([3, 6, 6], 4, classes);
    let w = init_params(&g, &model, 1).unwrap();
    let running = model.new_running_stats(&g);
    let meta = MetaNet::new(bins, classes, false);
    let theta0: Vec<Vec<f32>> = meta
        .init(&g, 2)
        .unwrap()
        .iter()
        .map(|t| t.to_f32_vec().unwrap())
        .collect();
    let x = Tensor::from_f32(&g, &[b, 3, 6, 6], &rng.vec(b * 108)).unwrap();
    let labels = Tensor::from_u32(&g, &[b], &rng.labels(b, classes as u32)).unwrap();
    let rank_bins = Tensor::from_u32(&g, &[b], &rng.labels(b, bins as u32)).unwrap();
    let yhat =
        softmax(&Tensor::from_f32(&g, &[b, classes], &rng.vec(b * classes)).unwrap()).unwrap();
    let meta_x = Tensor::from_f32(&g, &[m, 3, 6, 6], &rng.vec(m * 108)).unwrap();
    let meta_labels = Tensor::from_u32(&g, &[m], &rng.labels(m, classes as u32)).unwrap();
    let buffers: Vec<Tensor> = w
        .iter()
        .map(|t| {
            Tensor::from_f32(
                &g,
                t.shape(),
                &rng.vec(t.numel())
                    .iter()
                    .map(|v| 0.1 * v)
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        })
        .collect();
    let batch = MetaBatch {
        x: &x,
        labels: &labels,
        bins: &rank_bins,
        yhat: &yhat,
        meta_x: &meta_x,
        meta_labels: &meta_labels,
    };
    let opt = VirtualSgd {
        lr: 0.5,
        momentum: 0.9,
        weight_decay: 5e-4,
        buffers: Some(&buffers),
    };
    let all: Vec<usize> = (0..w.len()).collect();
    let parts = MetaParts {
        corrector: true,
        generator: true,
    };
    let run = |theta: &[Vec<f32>]| {
        let th: Vec<Tensor> = theta
            .iter()
            .zip(&meta.params)
            .map(|(v, p)| Tensor::from_f32(&g, &p.shape, v).unwrap())
            .collect();
        meta_gradient(&model, &w, &running, &meta, &th, &batch, &opt, &all, parts).unwrap()
    };
    let res = run(&theta0);
    let grads: Vec<Vec<f32>> = res
        .grads
        .iter()
        .map(|t| t.as_ref().unwrap().to_f32_vec().unwrap())
        .collect();
    // Probe: every parameter tensor, a few entries each (the largest-gradient entry included).
    let eps = 1e-2f32;
    let mut got = Vec::new();
    let mut want = Vec::new();
    for (pi, gv) in grads.iter().enumerate() {
        let mut idx: Vec<usize> = (0..3)
            .map(|_| rng.below(gv.len() as u32) as usize)
            .collect();
        let best = (0..gv.len())
            .max_by(|&a, &b| gv[a].abs().total_cmp(&gv[b].abs()))
            .unwrap();
        idx.push(best);
        for e in idx {
            let mut plus = theta0.clone();
            plus[pi][e] += eps;
            let mut minus = theta0.clone();
            minus[pi][e] -= eps;
            let lp = run(&plus).meta_loss.value().item().unwrap() as f64;
            let lm = run(&minus).meta_loss.value().item().unwrap() as f64;
            got.push(gv[e] as f64);
            want.push((lp - lm) / (2.0 * eps as f64));
        }
    }
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert!(
        scale > 1e-4,
        "the meta gradient should not vanish here (max |fd| = {scale})"
    );
    let err: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt()
        / want.iter().map(|b| b * b).sum::<f64>().sqrt();
    assert!(
        err < 3e-2,
        "meta gradient rel err {err:.3e}\n got {got:?}\nwant {want:?}"
    );
    // The sign of every clearly non-zero entry must agree (a sign error would flip them all).
    for (a, b) in got.iter().zip(&want) {
        if b.abs() > 0.1 * scale {
            assert!(a.signum() == b.signum(), "sign: got {a}, want {b}");
        }
    }
}
