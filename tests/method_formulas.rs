//! The method's formulas against plain CPU computations written from the specification
//! (tests/common/reference.rs): the meta net's initialisation and its two heads, the
//! corrected labels y*, the margin-shifted soft cross-entropy, the bounded margins, the hard
//! Gumbel-softmax sample, and "the virtual step is one real SGD step with the same lr,
//! momentum and weight decay", down to the meta loss that `meta_gradient` reports.

mod common;

use dynloss_wgpu::random::seeded;

use common::reference::{self as cpu, HIDDEN};
use common::{Rng, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::autograd::{self as ag, Var};
use dynloss_wgpu::dynloss::meta_net::{
    CORRECTOR_BIAS, GENERATOR_BIAS, MetaNet, corrected_labels, dynamic_loss,
};
use dynloss_wgpu::dynloss::meta_step::{
    MetaBatch, MetaParts, Pseudo, VirtualSgd, classifier_loss, last_layers, margins, meta_gradient,
    pseudo_labels, virtual_step,
};
use dynloss_wgpu::nn::zoo::{ModelSpec, VggItem, build};
use dynloss_wgpu::nn::{Mode, init::init_params};
use dynloss_wgpu::optim::Sgd;
use dynloss_wgpu::train::methods::baseline::log_counts;

fn host(theta: &[Tensor]) -> Vec<Vec<f32>> {
    theta.iter().map(|t| t.to_f32_vec().unwrap()).collect()
}

fn consts(theta: &[Tensor]) -> Vec<Var> {
    theta.iter().map(|t| Var::constant(t.clone())).collect()
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * (1.0 + want.abs()),
        "{what}: got {got}, want {want}"
    );
}

/// Mean and standard deviation of a sample.
fn moments(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

/// The spec's meta net: names, shapes and initial distributions of both MLP heads
/// (xavier-uniform embeddings, xavier-normal Linear weights, zero hidden biases, last biases
/// 3.98 and 1), with PyTorch's fans computed here for each shape; then g near 0.98 and the
/// margins near 1 everywhere at the start.
#[test]
fn meta_net_initialisation_follows_the_spec() {
    let g = gpu();
    let (bins, classes) = (100, 10);
    let meta = MetaNet::new(bins, classes, false);
    let mut want = Vec::new();
    for (head, rows) in [("corrector", bins), ("generator", 1)] {
        want.push((format!("{head}.embedding"), vec![rows, HIDDEN]));
        for (i, out) in [HIDDEN, HIDDEN, classes].into_iter().enumerate() {
            want.push((format!("{head}.fc{i}.weight"), vec![out, HIDDEN]));
            want.push((format!("{head}.fc{i}.bias"), vec![out]));
        }
    }
    let got: Vec<(String, Vec<usize>)> = meta
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(meta.split, 7);
    assert_eq!((CORRECTOR_BIAS, GENERATOR_BIAS), (3.98, 1.0));

    let theta = meta.init(&g, &mut seeded(11)).unwrap();
    let values = host(&theta);
    for (p, v) in meta.params.iter().zip(&values) {
        let n = p.name.as_str();
        // PyTorch's fans of a 2-D tensor [out, in]: fan_in = in, fan_out = out.
        let (fan_in, fan_out) = (p.shape.last().copied().unwrap() as f64, p.shape[0] as f64);
        let (m, sd) = moments(v);
        let k = v.len() as f64;
        if n.ends_with("embedding") {
            let a = (6.0 / (fan_in + fan_out)).sqrt();
            assert!(
                v.iter().all(|&x| (x as f64).abs() <= a),
                "{n}: U(-{a}, {a})"
            );
            // Uniform on (-a, a): sd a / sqrt(3). Five standard errors of a sample sd (at most
            // sd / sqrt(2k) for these distributions) and of a mean (sd / sqrt(k)).
            let want_sd = a / 3f64.sqrt();
            assert!(
                (sd - want_sd).abs() < 5.0 * want_sd / (2.0 * k).sqrt(),
                "{n}: sd {sd}, xavier-uniform {want_sd}"
            );
            assert!(m.abs() < 5.0 * want_sd / k.sqrt(), "{n}: mean {m}");
        } else if n.ends_with("weight") {
            let want_sd = (2.0 / (fan_in + fan_out)).sqrt();
            assert!(
                (sd - want_sd).abs() < 5.0 * want_sd / (2.0 * k).sqrt(),
                "{n}: sd {sd}, xavier-normal {want_sd}"
            );
            assert!(m.abs() < 5.0 * want_sd / k.sqrt(), "{n}: mean {m}");
        } else {
            let want = match n {
                "corrector.fc2.bias" => 3.98,
                "generator.fc2.bias" => 1.0,
                _ => 0.0,
            };
            assert!(v.iter().all(|&x| x == want), "{n}: all {want}");
        }
    }
    // The labels are trusted at first, and the margins start near 1.
    let table = meta.label_weight_table(&consts(&theta)).unwrap();
    let want = cpu::corrector_table(&values, bins);
    let gv = table.to_f32_vec().unwrap();
    for r in 0..bins {
        for c in 0..classes {
            close("g(r|y)", gv[r * classes + c] as f64, want[r][c], 1e-5);
            assert!(
                want[r][c] > 0.9,
                "g({r}|{c}) = {} starts near 0.98",
                want[r][c]
            );
        }
    }
    let q = meta
        .margins(&consts(&theta))
        .unwrap()
        .value()
        .to_f32_vec()
        .unwrap();
    let want_q = cpu::margins(&values, None);
    for c in 0..classes {
        close("q", q[c] as f64, want_q[c], 1e-5);
        assert!(
            (want_q[c] - 1.0).abs() < 0.5,
            "q[{c}] = {} starts near 1",
            want_q[c]
        );
    }
    // The vector ablation: one value per bin and per class, at the same starting points.
    let vec_meta = MetaNet::new(bins, classes, true);
    let vt = host(&vec_meta.init(&g, &mut seeded(1)).unwrap());
    assert_eq!(vt[0], vec![3.98; bins]);
    assert_eq!(vt[1], vec![1.0; classes]);
}

/// g(r | y) of given bins and labels, the corrected labels y* = onehot(y) g + yhat (1 - g),
/// the margins with and without the soft bound B tanh(q / B), and the dynamic loss
/// mean(-(y* . log_softmax(z + q))), for random meta nets (MLP and vector) and soft and hard
/// yhat.
#[test]
fn corrected_labels_margins_and_dynamic_loss_match_the_cpu() {
    let g = gpu();
    let mut rng = Rng::new(3);
    let (bins, classes, b) = (10, 5, 9);
    for vector in [false, true] {
        let meta = MetaNet::new(bins, classes, vector);
        // Random parameters everywhere (not the initial constants), so that every g and q
        // differs and a mixed-up index shows; small enough that g and the bounded margins
        // stay off saturation, where a wrong formula could still agree.
        let scale = if vector { 1.0 } else { 0.3 };
        let values: Vec<Vec<f32>> = meta
            .params
            .iter()
            .map(|p| {
                let n = p.shape.iter().product();
                rng.vec(n).iter().map(|v| scale * v).collect()
            })
            .collect();
        let theta: Vec<Tensor> = meta
            .params
            .iter()
            .zip(&values)
            .map(|(p, v)| Tensor::from_f32(&g, &p.shape, v).unwrap())
            .collect();
        let tv = consts(&theta);
        let bin_v = rng.labels(b, bins as u32);
        let lab_v = rng.labels(b, classes as u32);
        let bins_t = Tensor::from_u32(&g, &[b], &bin_v).unwrap();
        let labels = Tensor::from_u32(&g, &[b], &lab_v).unwrap();
        // CPU g per sample: the table's row of its bin, column of its label (vector: the bin's
        // value alone).
        let want_g: Vec<f64> = if vector {
            bin_v
                .iter()
                .map(|&r| cpu::sigmoid(values[0][r as usize] as f64))
                .collect()
        } else {
            let table = cpu::corrector_table(&values, bins);
            bin_v
                .iter()
                .zip(&lab_v)
                .map(|(&r, &y)| table[r as usize][y as usize])
                .collect()
        };
        let got_g = meta.label_weights(&tv, &bins_t, &labels).unwrap();
        for (i, (a, w)) in got_g
            .value()
            .to_f32_vec()
            .unwrap()
            .iter()
            .zip(&want_g)
            .enumerate()
        {
            close(
                &format!("vector={vector}: g of sample {i}"),
                *a as f64,
                *w,
                1e-5,
            );
        }
        let raw_q: Vec<f64> = if vector {
            values[1].iter().map(|&v| v as f64).collect()
        } else {
            cpu::margins(&values, None)
        };
        assert!(
            raw_q.iter().all(|q| q.abs() < 3.0) && raw_q.iter().any(|q| q.abs() > 0.3),
            "margins {raw_q:?} in the range where the bounds below bend"
        );
        assert!(
            want_g.iter().all(|g| (0.05..0.95).contains(g)),
            "g {want_g:?}"
        );
        for bound in [None, Some(0.5f32), Some(3.0)] {
            let q = meta.bounded_margins(&tv, bound).unwrap();
            let want = cpu::bounded(&raw_q, bound);
            for (c, (a, w)) in q
                .value()
                .to_f32_vec()
                .unwrap()
                .iter()
                .zip(&want)
                .enumerate()
            {
                close(
                    &format!("vector={vector} bound={bound:?}: q[{c}]"),
                    *a as f64,
                    *w,
                    1e-5,
                );
            }
            if let Some(bd) = bound {
                assert!(want.iter().all(|v| v.abs() <= bd as f64));
            }
        }
        let z = rng.vec(b * classes);
        let zt = Var::constant(Tensor::from_f32(&g, &[b, classes], &z).unwrap());
        let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let soft = pseudo_labels(zt.value(), Pseudo::Softmax).unwrap();
        let hard = pseudo_labels(zt.value(), Pseudo::HardGumbel(9)).unwrap();
        for yhat in [soft, hard] {
            let yv: Vec<f64> = yhat
                .to_f32_vec()
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            let ystar = corrected_labels(&got_g, &labels, &yhat).unwrap();
            let want = cpu::corrected_labels(&want_g, &lab_v, &yv, classes);
            for (k, (a, w)) in ystar
                .value()
                .to_f32_vec()
                .unwrap()
                .iter()
                .zip(&want)
                .enumerate()
            {
                close(&format!("vector={vector}: y*[{k}]"), *a as f64, *w, 1e-5);
            }
            for bound in [None, Some(0.5f32)] {
                let q = meta.bounded_margins(&tv, bound).unwrap();
                let qv = cpu::bounded(&raw_q, bound);
                let dl = dynamic_loss(&zt, &ystar, Some(&q))
                    .unwrap()
                    .value()
                    .item()
                    .unwrap();
                let want_dl = cpu::mean(&cpu::soft_cross_entropy(&z64, &want, Some(&qv), classes));
                close(
                    &format!("vector={vector} bound={bound:?}: DL"),
                    dl as f64,
                    want_dl,
                    1e-5,
                );
            }
        }
    }
}

/// The margins each configuration adds to the logits: the generator's (bounded or not), the
/// anchored variant's log class counts plus the generator's, Balanced Softmax's fixed log
/// counts, or none; and the classifier's loss with the anchored margins against the CPU
/// dynamic loss with log n_c + q.
#[test]
fn anchored_margins_are_the_log_counts_plus_the_generated_ones() {
    let g = gpu();
    let mut rng = Rng::new(21);
    let (bins, classes, b) = (10, 4, 7);
    let meta = MetaNet::new(bins, classes, false);
    let values: Vec<Vec<f32>> = meta
        .params
        .iter()
        .map(|p| {
            let n = p.shape.iter().product();
            rng.vec(n).iter().map(|v| 0.3 * v).collect()
        })
        .collect();
    let theta: Vec<Tensor> = meta
        .params
        .iter()
        .zip(&values)
        .map(|(p, v)| Tensor::from_f32(&g, &p.shape, v).unwrap())
        .collect();
    let tv = consts(&theta);
    // A long tail: 50, 20, 5 and 1 samples.
    let counts = [50usize, 20, 5, 1];
    let train_labels: Vec<u32> = (0..classes)
        .flat_map(|c| std::iter::repeat_n(c as u32, counts[c]))
        .collect();
    let prior = log_counts(&g, &train_labels, classes).unwrap();
    let log_n: Vec<f64> = counts.iter().map(|&n| (n as f64).ln()).collect();
    let raw_q = cpu::margins(&values, None);
    let parts = |generator, fixed, bound, anchor| MetaParts {
        corrector: true,
        generator,
        fixed_margins: fixed,
        margin_bound: bound,
        anchor,
    };
    let values_of = |q: Option<Var>| q.map(|q| q.value().to_f32_vec().unwrap());
    for bound in [None, Some(1.5f32)] {
        let generated = cpu::bounded(&raw_q, bound);
        let anchored: Vec<f64> = generated.iter().zip(&log_n).map(|(q, l)| q + l).collect();
        let cases = [
            (
                "generator",
                parts(true, None, bound, None),
                Some(generated.clone()),
            ),
            (
                "anchored",
                parts(true, None, bound, Some(&prior)),
                Some(anchored),
            ),
            (
                "fixed",
                parts(false, Some(&prior), bound, None),
                Some(log_n.clone()),
            ),
            ("none", parts(false, None, bound, None), None),
        ];
        for (what, p, want) in cases {
            let got = values_of(margins(&meta, &tv, p).unwrap());
            assert_eq!(got.is_some(), want.is_some(), "{what}: margins or none");
            for (c, (a, w)) in got.iter().flatten().zip(want.iter().flatten()).enumerate() {
                close(
                    &format!("{what} bound={bound:?}: q[{c}]"),
                    *a as f64,
                    *w,
                    1e-5,
                );
            }
        }
    }
    // The loss with the anchored margins, against the CPU dynamic loss.
    let z = rng.vec(b * classes);
    let zt = Var::constant(Tensor::from_f32(&g, &[b, classes], &z).unwrap());
    let z64: Vec<f64> = z.iter().map(|&v| v as f64).collect();
    let lab_v = rng.labels(b, classes as u32);
    let bin_v = rng.labels(b, bins as u32);
    let labels = Tensor::from_u32(&g, &[b], &lab_v).unwrap();
    let bins_t = Tensor::from_u32(&g, &[b], &bin_v).unwrap();
    let yhat = pseudo_labels(zt.value(), Pseudo::HardGumbel(5)).unwrap();
    let yv: Vec<f64> = yhat
        .to_f32_vec()
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let batch = MetaBatch {
        x: zt.value(),
        labels: &labels,
        bins: &bins_t,
        meta_x: zt.value(),
        meta_labels: &labels,
    };
    let loss = classifier_loss(
        &meta,
        &tv,
        &zt,
        &batch,
        &yhat,
        parts(true, None, None, Some(&prior)),
    )
    .unwrap()
    .value()
    .item()
    .unwrap();
    let table = cpu::corrector_table(&values, bins);
    let gs: Vec<f64> = bin_v
        .iter()
        .zip(&lab_v)
        .map(|(&r, &y)| table[r as usize][y as usize])
        .collect();
    let ystar = cpu::corrected_labels(&gs, &lab_v, &yv, classes);
    let q: Vec<f64> = raw_q.iter().zip(&log_n).map(|(q, l)| q + l).collect();
    let want = cpu::mean(&cpu::soft_cross_entropy(&z64, &ystar, Some(&q), classes));
    close("anchored dynamic loss", loss as f64, want, 1e-5);
    // Without the anchor the loss differs by far more than rounding: the anchor is used.
    let plain = classifier_loss(
        &meta,
        &tv,
        &zt,
        &batch,
        &yhat,
        parts(true, None, None, None),
    )
    .unwrap()
    .value()
    .item()
    .unwrap();
    assert!((plain - loss).abs() > 0.1, "anchored {loss}, plain {plain}");
}

/// Hard Gumbel-softmax pseudo-labels (tau 1): one-hot rows, the same for the same seed, other
/// draws for other seeds, and each class drawn with its softmax probability (the Gumbel-max
/// property: a sign error in the noise, or a temperature other than 1, changes the
/// frequencies).
#[test]
fn hard_gumbel_samples_follow_the_softmax() {
    let g = gpu();
    let row = [2.0f32, 1.0, 0.0, -1.0];
    let rows = 64;
    let logits: Vec<f32> = row.iter().copied().cycle().take(rows * 4).collect();
    let lt = Tensor::from_f32(&g, &[rows, 4], &logits).unwrap();
    let p: Vec<f64> = cpu::log_softmax(&row.map(|v| v as f64))
        .iter()
        .map(|l| l.exp())
        .collect();
    let mut counts = [0usize; 4];
    let draws = 60;
    for seed in 0..draws {
        let y = pseudo_labels(&lt, Pseudo::HardGumbel(seed))
            .unwrap()
            .to_f32_vec()
            .unwrap();
        assert_eq!(
            y,
            pseudo_labels(&lt, Pseudo::HardGumbel(seed))
                .unwrap()
                .to_f32_vec()
                .unwrap(),
            "same seed, same sample"
        );
        for r in y.chunks(4) {
            assert_eq!(r.iter().filter(|&&v| v == 1.0).count(), 1);
            assert!(r.iter().all(|&v| v == 0.0 || v == 1.0));
            counts[r.iter().position(|&v| v == 1.0).unwrap()] += 1;
        }
    }
    let other = pseudo_labels(&lt, Pseudo::HardGumbel(draws)).unwrap();
    let first = pseudo_labels(&lt, Pseudo::HardGumbel(0)).unwrap();
    assert_ne!(other.to_f32_vec().unwrap(), first.to_f32_vec().unwrap());
    let n = (rows as u64 * draws) as f64;
    for c in 0..4 {
        let f = counts[c] as f64 / n;
        let se = (p[c] * (1.0 - p[c]) / n).sqrt();
        assert!(
            (f - p[c]).abs() < 5.0 * se,
            "class {c}: drawn {f:.4}, softmax {:.4} (counts {counts:?})",
            p[c]
        );
    }
}

/// w' = w - lr (momentum buf + grad + wd w) from `virtual_step`, against the CPU formula and
/// against one real step of the SGD optimizer from the same state (PyTorch's semantics: the
/// buffer becomes momentum buf + grad + wd w, then w -= lr buf), with and without buffers; and
/// its derivatives: (1 - lr wd) in w and -lr in the gradient.
#[test]
fn virtual_step_is_one_real_sgd_step() {
    let g = gpu();
    let mut rng = Rng::new(8);
    let shapes = [vec![3, 2], vec![5]];
    let (lr, momentum, wd) = (0.3f32, 0.9f32, 5e-2f32);
    for with_buffers in [true, false] {
        let w: Vec<Vec<f32>> = shapes.iter().map(|s| rng.vec(s.iter().product())).collect();
        let gr: Vec<Vec<f32>> = shapes.iter().map(|s| rng.vec(s.iter().product())).collect();
        let bufs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| {
                if with_buffers {
                    rng.vec(s.iter().product())
                } else {
                    vec![0.0; s.iter().product()]
                }
            })
            .collect();
        let t = |v: &[Vec<f32>]| -> Vec<Tensor> {
            v.iter()
                .zip(&shapes)
                .map(|(d, s)| Tensor::from_f32(&g, s, d).unwrap())
                .collect()
        };
        let buf_t = t(&bufs);
        let wv: Vec<Var> = t(&w).into_iter().map(|x| Var::leaf(x, true)).collect();
        let gv: Vec<Var> = t(&gr).into_iter().map(|x| Var::leaf(x, true)).collect();
        let opt = VirtualSgd {
            lr,
            momentum,
            weight_decay: wd,
            buffers: with_buffers.then_some(buf_t.as_slice()),
        };
        let stepped = virtual_step(&wv, &gv, &opt).unwrap();
        // The real optimizer on copies of the same state.
        let real_w = t(&w);
        let mut sgd = Sgd::new(&real_w, momentum, wd);
        sgd.buffers = t(&bufs);
        let grads: Vec<Option<Tensor>> = t(&gr).into_iter().map(Some).collect();
        sgd.step(&real_w, &grads, lr).unwrap();
        for k in 0..shapes.len() {
            let virt = stepped[k].value().to_f32_vec().unwrap();
            let real = real_w[k].to_f32_vec().unwrap();
            let buf_after = sgd.buffers[k].to_f32_vec().unwrap();
            for e in 0..virt.len() {
                let (w0, g0, b0) = (w[k][e] as f64, gr[k][e] as f64, bufs[k][e] as f64);
                let (lr, m, wd) = (lr as f64, momentum as f64, wd as f64);
                let want = w0 - lr * (m * b0 + g0 + wd * w0);
                close("virtual step", virt[e] as f64, want, 1e-6);
                close("real SGD step", real[e] as f64, want, 1e-6);
                close(
                    "momentum buffer",
                    buf_after[e] as f64,
                    m * b0 + g0 + wd * w0,
                    1e-6,
                );
            }
        }
        // d<v, w'>/dw = (1 - lr wd) v and d<v, w'>/dgrad = -lr v.
        let v: Vec<Tensor> = t(&shapes
            .iter()
            .map(|s| rng.vec(s.iter().product()))
            .collect::<Vec<_>>());
        let dot = stepped
            .iter()
            .zip(&v)
            .map(|(s, v)| ag::sum_all(&ag::mul(s, &Var::constant(v.clone())).unwrap()).unwrap())
            .reduce(|a, b| ag::add(&a, &b).unwrap())
            .unwrap();
        let refs: Vec<&Var> = wv.iter().chain(&gv).collect();
        let d = ag::grad(&[&dot], &refs, None, false).unwrap();
        for k in 0..shapes.len() {
            let vk = v[k].to_f32_vec().unwrap();
            let dw = d[k].as_ref().unwrap().value().to_f32_vec().unwrap();
            let dg = d[shapes.len() + k]
                .as_ref()
                .unwrap()
                .value()
                .to_f32_vec()
                .unwrap();
            for e in 0..vk.len() {
                close(
                    "dw'/dw",
                    dw[e] as f64,
                    (1.0 - lr as f64 * wd as f64) * vk[e] as f64,
                    1e-6,
                );
                close("dw'/dgrad", dg[e] as f64, -(lr as f64) * vk[e] as f64, 1e-6);
            }
        }
    }
}

/// The meta loss `meta_gradient` reports is the meta batch's cross-entropy after one real
/// step: the dynamic loss's gradient through the fused backward kernels, the SGD optimizer's
/// own step on copies of the weights and buffers (all layers, and only the last one for
/// --meta-layers 1), then a plain forward. And its training loss is the CPU dynamic loss of
/// its logits with the CPU meta net's g and q and its own pseudo-labels, which are the hard
/// Gumbel sample of the seed it was given.
#[test]
fn meta_loss_is_the_loss_after_a_real_sgd_step() {
    let g = gpu();
    let mut rng = Rng::new(12);
    let (classes, bins, b, m) = (4, 10, 8, 6);
    let spec = ModelSpec {
        family: "vgg".into(),
        depth: None,
        blocks: None,
        widths: None,
        layers: Some(vec![
            VggItem::Conv(4),
            VggItem::Pool("M".into()),
            VggItem::Conv(8),
        ]),
    };
    let model = build(&spec, [3, 6, 6], classes).unwrap();
    let w = init_params(&g, &model, &mut seeded(3)).unwrap();
    let running = model.new_running_stats(&g);
    let meta = MetaNet::new(bins, classes, false);
    let theta = meta.init(&g, &mut seeded(4)).unwrap();
    let values = host(&theta);
    let x = Tensor::from_f32(&g, &[b, 3, 6, 6], &rng.vec(b * 108)).unwrap();
    let lab_v = rng.labels(b, classes as u32);
    let labels = Tensor::from_u32(&g, &[b], &lab_v).unwrap();
    let bin_v = rng.labels(b, bins as u32);
    let bins_t = Tensor::from_u32(&g, &[b], &bin_v).unwrap();
    let meta_x = Tensor::from_f32(&g, &[m, 3, 6, 6], &rng.vec(m * 108)).unwrap();
    let meta_labels = Tensor::from_u32(&g, &[m], &rng.labels(m, classes as u32)).unwrap();
    let buffers: Vec<Tensor> = w
        .iter()
        .map(|t| {
            let v: Vec<f32> = rng.vec(t.numel()).iter().map(|v| 0.1 * v).collect();
            Tensor::from_f32(&g, t.shape(), &v).unwrap()
        })
        .collect();
    let batch = MetaBatch {
        x: &x,
        labels: &labels,
        bins: &bins_t,
        meta_x: &meta_x,
        meta_labels: &meta_labels,
    };
    let parts = MetaParts {
        corrector: true,
        generator: true,
        fixed_margins: None,
        margin_bound: Some(2.0),
        anchor: None,
    };
    let (lr, momentum, wd) = (0.1f32, 0.9f32, 5e-4f32);
    let opt = VirtualSgd {
        lr,
        momentum,
        weight_decay: wd,
        buffers: Some(&buffers),
    };
    let names: Vec<String> = model.params.iter().map(|p| p.name.clone()).collect();
    let pseudo = Pseudo::HardGumbel(77);
    let meta_ce = |weights: &[Tensor]| -> f64 {
        let wv: Vec<Var> = weights.iter().map(|t| Var::constant(t.clone())).collect();
        let (logits, _) = model
            .forward(&wv, &Var::constant(meta_x.clone()), Mode::Train, &running)
            .unwrap();
        let ce = ag::cross_entropy(&logits, &meta_labels, None).unwrap();
        ag::mean_all(&ce).unwrap().value().item().unwrap() as f64
    };
    let before = meta_ce(&w);
    for k in [None, Some(1)] {
        let selected = last_layers(&names, k);
        let mg = meta_gradient(
            &model, &w, &running, &meta, &theta, &batch, pseudo, &opt, &selected, parts,
        )
        .unwrap();
        // Its pseudo-labels are the sample of the seed it was given, from its own logits.
        assert_eq!(
            mg.yhat.to_f32_vec().unwrap(),
            pseudo_labels(&mg.logits, pseudo)
                .unwrap()
                .to_f32_vec()
                .unwrap()
        );
        // Its training loss is the CPU dynamic loss of those logits.
        let z: Vec<f64> = mg
            .logits
            .to_f32_vec()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let yhat: Vec<f64> = mg
            .yhat
            .to_f32_vec()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        let table = cpu::corrector_table(&values, bins);
        let gs: Vec<f64> = bin_v
            .iter()
            .zip(&lab_v)
            .map(|(&r, &y)| table[r as usize][y as usize])
            .collect();
        let ystar = cpu::corrected_labels(&gs, &lab_v, &yhat, classes);
        let q = cpu::margins(&values, Some(2.0));
        let want = cpu::mean(&cpu::soft_cross_entropy(&z, &ystar, Some(&q), classes));
        close(
            "training loss",
            mg.train_loss.value().item().unwrap() as f64,
            want,
            1e-5,
        );

        // The real step: same loss, fused backward, the optimizer's own kernel.
        let wv: Vec<Var> = w.iter().map(|t| Var::leaf(t.clone(), true)).collect();
        let (logits, _) = model
            .forward(&wv, &Var::constant(x.clone()), Mode::Train, &running)
            .unwrap();
        let loss =
            classifier_loss(&meta, &consts(&theta), &logits, &batch, &mg.yhat, parts).unwrap();
        let refs: Vec<&Var> = selected.iter().map(|&i| &wv[i]).collect();
        let sel_grads = ag::backward(&loss, &refs).unwrap();
        let mut grads: Vec<Option<Tensor>> = vec![None; w.len()];
        for (&i, gr) in selected.iter().zip(sel_grads) {
            grads[i] = gr;
        }
        let copies: Vec<Tensor> = w.iter().map(|t| t.deep_clone()).collect();
        let mut sgd = Sgd::new(&copies, momentum, wd);
        sgd.buffers = buffers.iter().map(|t| t.deep_clone()).collect();
        sgd.step(&copies, &grads, lr).unwrap();
        let after = meta_ce(&copies);
        let got = mg.meta_loss.value().item().unwrap() as f64;
        println!("meta-layers {k:?}: meta loss {got}, after a real step {after}, before {before}");
        // Two f32 computations of the same value: 1e-5 relative. The step must matter far
        // more than that, or the comparison would not see a wrong step.
        close(&format!("meta-layers {k:?}: meta loss"), got, after, 1e-5);
        assert!(
            (after - before).abs() > 100.0 * 1e-5 * (1.0 + before),
            "the step barely moves the meta loss ({before} -> {after})"
        );
    }
}
