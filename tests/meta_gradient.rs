//! The whole Dynamic Loss meta gradient on a tiny network (conv - BN - ReLU - pool - linear,
//! the spec's two meta MLPs, virtual SGD step with momentum and weight decay, meta
//! cross-entropy) against central finite differences of that whole function with respect to
//! the meta-net parameters.

mod common;

use common::{Rng, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::dynloss::meta_net::MetaNet;
use dynloss_wgpu::dynloss::meta_step::{MetaBatch, MetaParts, Pseudo, VirtualSgd, meta_gradient};
use dynloss_wgpu::nn::{init::init_params, resnet::tiny_cnn};

#[test]
fn meta_gradient_matches_finite_differences() {
    // All parameters stepped, then only the conv and BN ones: the second case makes the
    // whole meta gradient flow back through the network's own backward ops.
    check(false);
    check(true);
}

fn check(skip_fc: bool) {
    let g = gpu();
    let mut rng = Rng::new(7);
    let (classes, bins, b, m) = (4usize, 10usize, 6usize, 5usize);
    let model = tiny_cnn([3, 6, 6], 4, classes);
    let w = init_params(&g, &model, 1).unwrap();
    let running = model.new_running_stats(&g);
    let meta = MetaNet::new(bins, classes, false);
    let mut theta0: Vec<Vec<f32>> = meta
        .init(&g, 2)
        .unwrap()
        .iter()
        .map(|t| t.to_f32_vec().unwrap())
        .collect();
    // Finite differences only check a derivative where the function is differentiable: lift
    // the meta MLPs' hidden biases so that no hidden ReLU sits near its kink at the test point
    // (at the spec's zero biases a few of the 64 units per sample do, and a perturbation of
    // 1e-2 flips them; per-entry checks then disagree exactly on those units).
    for (p, v) in meta.params.iter().zip(theta0.iter_mut()) {
        if p.name.ends_with("fc0.bias") || p.name.ends_with("fc1.bias") {
            v.iter_mut().for_each(|x| *x = 0.5);
        }
    }
    let x = Tensor::from_f32(&g, &[b, 3, 6, 6], &rng.vec(b * 108)).unwrap();
    let labels = Tensor::from_u32(&g, &[b], &rng.labels(b, classes as u32)).unwrap();
    let rank_bins = Tensor::from_u32(&g, &[b], &rng.labels(b, bins as u32)).unwrap();
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
        meta_x: &meta_x,
        meta_labels: &meta_labels,
    };
    let opt = VirtualSgd {
        // The conv-only meta gradient is small; a large virtual lr lifts it above f32 noise.
        lr: if skip_fc { 5.0 } else { 1.0 },
        momentum: 0.9,
        weight_decay: 5e-4,
        buffers: Some(&buffers),
    };
    let n_virtual = if skip_fc { w.len() - 2 } else { w.len() };
    let all: Vec<usize> = (0..n_virtual).collect();
    let parts = MetaParts {
        corrector: true,
        generator: true,
        fixed_margins: None,
        margin_bound: None,
    };
    let run = |theta: &[Vec<f32>]| {
        let th: Vec<Tensor> = theta
            .iter()
            .zip(&meta.params)
            .map(|(v, p)| Tensor::from_f32(&g, &p.shape, v).unwrap())
            .collect();
        meta_gradient(
            &model,
            &w,
            &running,
            &meta,
            &th,
            &batch,
            Pseudo::Softmax,
            &opt,
            &all,
            parts,
        )
        .unwrap()
    };
    let res = run(&theta0);
    let grads: Vec<Vec<f32>> = res
        .grads
        .iter()
        .map(|t| t.as_ref().unwrap().to_f32_vec().unwrap())
        .collect();
    // Probe: every parameter tensor, a few entries each (the largest-gradient entry included).
    // Directional derivatives: for each meta tensor, a random unit direction u; the engine's
    // <grad, u> against (L(theta + eps u) - L(theta - eps u)) / 2 eps. A whole-tensor
    // direction gives a large signal, while each entry moves too little to cross a ReLU kink.
    // f32 losses near 1 resolve ~1e-7, so a quotient with step eps is good to ~2.4e-7/eps.
    // Each direction is measured with two steps; where they disagree the function is not
    // smooth there (a hidden ReLU of the meta net flips) and the tolerance widens by that gap.
    let eps = 0.04f64;
    let mut got = Vec::new();
    let mut want = Vec::new();
    let mut kink = Vec::new();
    for (pi, gv) in grads.iter().enumerate() {
        let mut u: Vec<f64> = (0..gv.len()).map(|_| rng.range(-1.0, 1.0) as f64).collect();
        let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
        u.iter_mut().for_each(|v| *v /= norm);
        let shifted = |step: f64| {
            let mut t = theta0.clone();
            for (x, d) in t[pi].iter_mut().zip(&u) {
                *x += (step * d) as f32;
            }
            run(&t).meta_loss.value().item().unwrap() as f64
        };
        let fd = |e: f64| (shifted(e) - shifted(-e)) / (2.0 * e);
        let (coarse, fine) = (fd(eps), fd(eps / 2.0));
        got.push(gv.iter().zip(&u).map(|(a, b)| *a as f64 * b).sum::<f64>());
        want.push(fine);
        kink.push((coarse - fine).abs());
    }
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert!(
        scale > 1e-4,
        "the meta gradient should not vanish here (max |fd| = {scale})"
    );
    let noise = 2.4e-7 / (eps / 2.0);
    for ((a, b), k) in got.iter().zip(&want).zip(&kink) {
        assert!(
            (a - b).abs() <= 2.0 * noise + 0.03 * b.abs() + 2.0 * k,
            "skip_fc={skip_fc}: meta gradient {a:e} vs finite differences {b:e}\n got {got:?}\nwant {want:?}\nkink {kink:?}"
        );
    }
    // The sign of every clearly non-zero entry must agree (a sign error would flip them all).
    for (a, b) in got.iter().zip(&want) {
        if b.abs() > 0.1 * scale {
            assert!(a.signum() == b.signum(), "sign: got {a}, want {b}");
        }
    }
}
