//! The whole Dynamic Loss meta gradient against central finite differences of the whole
//! function, on the paths real runs take.
//!
//! The function: the dynamic loss of a training batch under the meta net theta (hard
//! Gumbel-softmax pseudo-labels from a fixed sample, the corrector's g, the generator's
//! margins), its gradient in the classifier's weights with the graph kept, the virtual SGD
//! step with momentum buffers and weight decay, the meta batch's cross-entropy under the
//! stepped weights (batch statistics, as in training). `meta_gradient` differentiates it
//! back to theta through the second-order graph; here its directional derivative along
//! random unit directions, several per meta tensor, is compared with
//! (L(theta + S u) - L(theta - S u)) / 2S.
//!
//! Cases: a tiny CIFAR ResNet with both option-A shortcuts (an identity block and a stride-2
//! block whose shortcut subsamples and zero-pads channels), a tiny VGG with max pooling, the
//! MLP and the vector meta nets, the margin bound, fixed (Balanced Softmax) margins with the
//! corrector alone, and `--meta-layers K`; and two cases where only the first layers take
//! the virtual step, so that the whole meta gradient must come back through every later
//! layer's double backward (shortcuts, batch norms, max pooling), where with the full step
//! those terms could hide under 1% of the total.
//!
//! Tolerance, the same fixed numbers for every case (it never adapts to what a case
//! measures): |engine - fd| <= RTOL |fd| + NOISE / S,
//! with S = 5e-3, RTOL = 1e-2 and NOISE = 4e-6 (so an absolute part of 8e-4).
//! - NOISE bounds how far an f32 evaluation of the meta loss (a value between 1 and 2) can
//!   move from rounding alone between two nearby theta: 16 to 32 units in its last place
//!   (32 x 1.2e-7 at 1). `f32_noise_is_within_the_stated_bound` measures it on the device under
//!   test (the departures of L from a straight line along a segment too short for the
//!   function to bend) and fails if a device rounds worse, so the bound cannot silently stop
//!   holding.
//! - The quotient's truncation error is S^2/6 |L'''| = 4e-6 |L'''|; RTOL covers it up to a
//!   ratio |L'''| / |L'| of 2500. The meta MLPs' hidden ReLUs are kept away from every
//!   probed segment (checked on the host). The classifier's ReLUs in the meta forward move
//!   with theta too (through the stepped weights), and one that crosses its kink inside the
//!   segment makes the quotient average two slopes; the short step keeps that rare and
//!   small (at S = 2e-2 one such crossing used 89% of the tolerance; at 5e-3 no case below
//!   uses more than 15%, each prints its share with `--nocapture`).
//! - The virtual step's lr is 2 (4 in the VGG case that steps only the first layers),
//!   not a real run's 0.1: the meta gradient scales with it, so the signal stands further
//!   above the rounding; the code path is the same. Every case asserts that its directional
//!   derivatives are large against the tolerance (the largest at least 25 times its absolute
//!   part for each active part of the meta net; 10 and 8 times in the two first-layers cases,
//!   where a larger lr would bend the function), so a meta gradient that vanished or kept only
//!   its noise would fail.

mod common;

use dynloss_wgpu::random::seeded;

use common::reference::hidden_pre_activations;
use common::{Rng, gpu};
use dynloss_wgpu::Gpu;
use dynloss_wgpu::Tensor;
use dynloss_wgpu::dynloss::meta_net::MetaNet;
use dynloss_wgpu::dynloss::meta_step::{
    MetaBatch, MetaGrad, MetaParts, Pseudo, VirtualSgd, last_layers, meta_gradient,
};
use dynloss_wgpu::nn::zoo::{ModelSpec, VggItem, build};
use dynloss_wgpu::nn::{Init, Layer, Model, init::init_params};
use dynloss_wgpu::tensor::conv::ConvGeom;

/// Finite-difference step along a unit direction of one meta tensor.
const STEP: f64 = 5e-3;
/// Bound on the rounding-only movement of an f32 evaluation of the meta loss.
const NOISE: f64 = 4e-6;
/// Relative tolerance (truncation error of the central difference).
const RTOL: f64 = 1e-2;
/// Random directions per meta tensor.
const DIRECTIONS: usize = 3;

const CLASSES: usize = 4;
const BINS: usize = 10;
const INPUT: [usize; 3] = [3, 6, 6];

/// A tiny CIFAR ResNet with the real model's blocks: conv-BN-ReLU stem at 4 channels, an
/// identity block at 4 channels, a stride-2 block to 8 channels whose option-A shortcut
/// subsamples and zero-pads the channels, global average pooling, linear head.
fn tiny_resnet() -> Model {
    let mut m = Model {
        name: "tiny_resnet".into(),
        params: Vec::new(),
        bn_channels: Vec::new(),
        program: Vec::new(),
        input: INPUT,
        classes: CLASSES,
    };
    let conv = |m: &mut Model, name: &str, cin: usize, cout: usize, stride: usize| {
        let w = m.add_param(
            format!("{name}.weight"),
            vec![cout, cin, 3, 3],
            Init::KaimingNormal,
        );
        Layer::Conv {
            w,
            geom: ConvGeom { stride, pad: 1 },
        }
    };
    let stem = conv(&mut m, "conv1", 3, 4, 1);
    let bn = m.add_bn("bn1", 4, true);
    m.program.extend([stem, bn]);
    for (p, cin, cout, stride) in [("layer1.0", 4, 4, 1), ("layer2.0", 4, 8, 2)] {
        let c1 = conv(&mut m, &format!("{p}.conv1"), cin, cout, stride);
        let b1 = m.add_bn(&format!("{p}.bn1"), cout, true);
        let c2 = conv(&mut m, &format!("{p}.conv2"), cout, cout, 1);
        let b2 = m.add_bn(&format!("{p}.bn2"), cout, false);
        let shortcut = if stride == 1 {
            vec![]
        } else {
            vec![Layer::ShortcutA { cout }]
        };
        m.program.push(Layer::Residual {
            body: vec![c1, b1, c2, b2],
            shortcut,
        });
    }
    m.program.push(Layer::GlobalAvgPool);
    let w = m.add_param("fc.weight".into(), vec![CLASSES, 8], Init::Normal(0.01));
    let b = m.add_param("fc.bias".into(), vec![CLASSES], Init::Const(0.0));
    m.program.push(Layer::Linear { w, b });
    m
}

/// A tiny VGG from the zoo: conv-BN-ReLU 4, 2x2 max pool, conv-BN-ReLU 8, pool, linear.
fn tiny_vgg() -> Model {
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
    build(&spec, INPUT, CLASSES).unwrap()
}

/// Which variant of the method a case runs.
#[derive(Clone, Copy)]
struct Variant {
    vector: bool,
    generator: bool,
    /// Balanced Softmax's log counts as fixed margins (with the generator off).
    fixed_margins: bool,
    margin_bound: Option<f32>,
    meta_layers: Option<usize>,
    /// The virtual step over the first K layers only, instead: not an option of the program,
    /// but it makes the whole meta gradient flow back through every later layer's double
    /// backward (a term the full step would let hide under 1% of the total).
    first_layers: Option<usize>,
    /// The virtual step's learning rate (see the module comment).
    lr: f32,
    /// The largest directional derivative of each active part must be at least this many
    /// times the tolerance's absolute part.
    min_signal: f64,
}

const DEFAULT: Variant = Variant {
    vector: false,
    generator: true,
    fixed_margins: false,
    margin_bound: None,
    meta_layers: None,
    first_layers: None,
    lr: 2.0,
    min_signal: 25.0,
};

/// Everything one meta-gradient evaluation needs, fixed for a case.
struct Setup {
    gpu: Gpu,
    model: Model,
    w: Vec<Tensor>,
    running: dynloss_wgpu::nn::RunningStats,
    meta: MetaNet,
    theta0: Vec<Vec<f32>>,
    x: Tensor,
    labels: Tensor,
    label_values: Vec<u32>,
    bins: Tensor,
    bin_values: Vec<u32>,
    meta_x: Tensor,
    meta_labels: Tensor,
    buffers: Vec<Tensor>,
    fixed: Option<Tensor>,
    variant: Variant,
    virtual_params: Vec<usize>,
    seed: u64,
}

impl Setup {
    fn new(model: Model, variant: Variant, seed: u64) -> Setup {
        let gpu = gpu();
        let mut rng = Rng::new(seed);
        let mut w = init_params(&gpu, &model, &mut seeded(seed)).unwrap();
        // The head at the scale of a trained one, not its initial N(0, 0.01) (the zoo's):
        // every gradient reaching the earlier layers passes through it twice, and at 0.01
        // their part of the meta gradient would sink below f32 rounding.
        let fc = model
            .params
            .iter()
            .position(|p| p.name == "fc.weight")
            .unwrap();
        let head: Vec<f32> = rng.vec(w[fc].numel()).iter().map(|v| 0.8 * v).collect();
        w[fc] = Tensor::from_f32(&gpu, w[fc].shape(), &head).unwrap();
        let running = model.new_running_stats(&gpu);
        let meta = MetaNet::new(BINS, CLASSES, variant.vector);
        let mut theta0: Vec<Vec<f32>> = meta
            .init(&gpu, &mut seeded(seed + 1))
            .unwrap()
            .iter()
            .map(|t| t.to_f32_vec().unwrap())
            .collect();
        // The test point: the spec's initialisation, moved where finite differences can see
        // the derivative. The corrector is unsaturated (its last bias 0.5 instead of 3.98,
        // g near 0.6 rather than 0.98, so g (1 - g) does not shrink its gradient 40-fold),
        // and the hidden biases are placed so that no hidden unit sits near its ReLU kink
        // (`place_hidden_biases`; the probes below check that none is crossed). The vector
        // net gets values spread around the same points.
        for (p, v) in meta.params.iter().zip(theta0.iter_mut()) {
            let n = p.name.as_str();
            if n == "corrector.fc2.bias" {
                v.iter_mut().for_each(|x| *x = 0.5);
            } else if n == "corrector.vector" {
                v.iter_mut().for_each(|x| *x = 0.5 + rng.range(-0.5, 0.5));
            } else if n == "generator.vector" {
                v.iter_mut().for_each(|x| *x = 1.0 + rng.range(-0.5, 0.5));
            }
        }
        let (b, m) = (8, 6);
        let image = INPUT.iter().product::<usize>();
        let x = Tensor::from_f32(&gpu, &[b, 3, 6, 6], &rng.vec(b * image)).unwrap();
        let label_values = rng.labels(b, CLASSES as u32);
        let labels = Tensor::from_u32(&gpu, &[b], &label_values).unwrap();
        let bin_values = rng.labels(b, BINS as u32);
        if !variant.vector {
            place_hidden_biases(&mut theta0, &bin_values, &mut rng);
        }
        let bins = Tensor::from_u32(&gpu, &[b], &bin_values).unwrap();
        let meta_x = Tensor::from_f32(&gpu, &[m, 3, 6, 6], &rng.vec(m * image)).unwrap();
        let meta_labels = Tensor::from_u32(&gpu, &[m], &rng.labels(m, CLASSES as u32)).unwrap();
        let buffers = w
            .iter()
            .map(|t| {
                let v: Vec<f32> = rng.vec(t.numel()).iter().map(|v| 0.1 * v).collect();
                Tensor::from_f32(&gpu, t.shape(), &v).unwrap()
            })
            .collect();
        // Log counts of a long tail, as Balanced Softmax's margins.
        let fixed = variant.fixed_margins.then(|| {
            Tensor::from_f32(
                &gpu,
                &[CLASSES],
                &[500f32.ln(), 120f32.ln(), 30f32.ln(), 5f32.ln()],
            )
            .unwrap()
        });
        let names: Vec<String> = model.params.iter().map(|p| p.name.clone()).collect();
        let virtual_params = match variant.first_layers {
            Some(k) => first_layers(&names, k),
            None => last_layers(&names, variant.meta_layers),
        };
        Setup {
            gpu,
            model,
            w,
            running,
            meta,
            theta0,
            x,
            labels,
            label_values,
            bins,
            bin_values,
            meta_x,
            meta_labels,
            buffers,
            fixed,
            variant,
            virtual_params,
            seed,
        }
    }

    fn run(&self, theta: &[Vec<f32>]) -> MetaGrad {
        let th: Vec<Tensor> = theta
            .iter()
            .zip(&self.meta.params)
            .map(|(v, p)| Tensor::from_f32(&self.gpu, &p.shape, v).unwrap())
            .collect();
        let batch = MetaBatch {
            x: &self.x,
            labels: &self.labels,
            bins: &self.bins,
            meta_x: &self.meta_x,
            meta_labels: &self.meta_labels,
        };
        let opt = VirtualSgd {
            // Larger than a real run's 0.1 (see the module comment).
            lr: self.variant.lr,
            momentum: 0.9,
            weight_decay: 5e-4,
            buffers: Some(&self.buffers),
        };
        let parts = MetaParts {
            corrector: true,
            generator: self.variant.generator,
            fixed_margins: self.fixed.as_ref(),
            margin_bound: self.variant.margin_bound,
            anchor: None,
        };
        meta_gradient(
            &self.model,
            &self.w,
            &self.running,
            &self.meta,
            &th,
            &batch,
            Pseudo::HardGumbel(self.seed * 31 + 7),
            &opt,
            &self.virtual_params,
            parts,
        )
        .unwrap()
    }

    fn loss(&self, theta: &[Vec<f32>]) -> f64 {
        self.run(theta).meta_loss.value().item().unwrap() as f64
    }
}

/// Sets the hidden biases of both meta MLPs so that every hidden pre-activation the batch
/// reaches is at least 0.02 from zero, with units on for some rows and off for others where
/// the rows allow it: per unit, the threshold -b goes in the middle of the widest gap between
/// the unit's pre-activations over the rows (or below them all, the unit then always on).
/// A unit direction of step 5e-3 moves a pre-activation by well under 1e-3.
fn place_hidden_biases(theta: &mut [Vec<f32>], bins: &[u32], rng: &mut Rng) {
    use common::reference::{HIDDEN, Mlp};
    let mut rows: Vec<usize> = bins.iter().map(|&b| b as usize).collect();
    rows.sort();
    rows.dedup();
    for (head, rows) in [(0usize, rows), (7, vec![0])] {
        for layer in 0..2 {
            let bias = head + 2 + 2 * layer;
            theta[bias].iter_mut().for_each(|b| *b = 0.0);
            // Pre-activations without this layer's bias (those before it already placed).
            let pre: Vec<Vec<f64>> = rows
                .iter()
                .map(|&r| {
                    let acts = Mlp::at(theta, head).forward(r).1;
                    acts[layer * HIDDEN..(layer + 1) * HIDDEN].to_vec()
                })
                .collect();
            for o in 0..HIDDEN {
                let mut vals: Vec<f64> = pre.iter().map(|p| p[o]).collect();
                vals.sort_by(f64::total_cmp);
                let widest = vals
                    .windows(2)
                    .map(|w| (w[1] - w[0], 0.5 * (w[0] + w[1])))
                    .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
                let threshold = if widest.0 >= 0.04 {
                    widest.1
                } else if rng.uniform() < 0.5 || vals.len() > 1 {
                    vals[0] - 0.3 // always on
                } else {
                    vals[0] + 0.3 // the single row off
                };
                theta[bias][o] = -threshold as f32;
            }
        }
    }
}

/// Indices of the parameters of the first `k` layers (a layer: the name before its last dot).
fn first_layers(names: &[String], k: usize) -> Vec<usize> {
    let layer = |n: &str| n.rsplit_once('.').map(|(a, _)| a.to_string()).unwrap();
    let mut seen: Vec<String> = Vec::new();
    (0..names.len())
        .filter(|&i| {
            let l = layer(&names[i]);
            if !seen.contains(&l) {
                seen.push(l);
            }
            seen.len() <= k
        })
        .collect()
}

/// theta with tensor `p` moved by `step` along `u`.
fn shifted(theta: &[Vec<f32>], p: usize, u: &[f64], step: f64) -> Vec<Vec<f32>> {
    let mut t = theta.to_vec();
    for (x, d) in t[p].iter_mut().zip(u) {
        *x = (*x as f64 + step * d) as f32;
    }
    t
}

/// A random unit direction of `n` entries.
fn direction(n: usize, rng: &mut Rng) -> Vec<f64> {
    let mut u: Vec<f64> = (0..n).map(|_| rng.range(-1.0, 1.0) as f64).collect();
    let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    u.iter_mut().for_each(|v| *v /= norm);
    u
}

fn check(name: &str, model: Model, variant: Variant, seed: u64) {
    let s = Setup::new(model, variant, seed);
    let res = s.run(&s.theta0);
    // A hard Gumbel sample that agrees with every given label would make the corrector's
    // gradient vanish (y* = onehot(y) whatever g is): the fixed sample must disagree.
    let yhat = res.yhat.to_f32_vec().unwrap();
    let differ = (0..s.label_values.len())
        .filter(|&i| yhat[i * CLASSES + s.label_values[i] as usize] != 1.0)
        .count();
    assert!(
        yhat.iter().all(|&v| v == 0.0 || v == 1.0) && differ >= 2,
        "{name}: the pseudo-labels must be one-hot and differ from the labels on some rows"
    );
    let grads: Vec<Option<Vec<f32>>> = res
        .grads
        .iter()
        .map(|t| t.as_ref().map(|t| t.to_f32_vec().unwrap()))
        .collect();
    let mut rng = Rng::new(seed ^ 0xD1);
    let atol = NOISE / STEP;
    let mut largest = [0.0f64; 2];
    let mut used = 0.0f64;
    for (p, info) in s.meta.params.iter().enumerate() {
        let part = usize::from(p >= s.meta.split);
        let active = part == 0 || variant.generator;
        let Some(gv) = &grads[p] else {
            assert!(!active, "{name}: no meta gradient for {}", info.name);
            continue;
        };
        assert!(active, "{name}: a gradient for the unused {}", info.name);
        for d in 0..DIRECTIONS {
            let u = direction(gv.len(), &mut rng);
            let plus = shifted(&s.theta0, p, &u, STEP);
            let minus = shifted(&s.theta0, p, &u, -STEP);
            if !variant.vector {
                // No hidden ReLU of the meta net changes sides along the probed segment.
                let at = |t: &[Vec<f32>]| hidden_pre_activations(t, &s.bin_values);
                let (a, b, c) = (at(&minus), at(&s.theta0), at(&plus));
                for k in 0..b.len() {
                    assert!(
                        a[k].signum() == b[k].signum() && c[k].signum() == b[k].signum(),
                        "{name}: {} direction {d} crosses a hidden ReLU's kink; pick another seed",
                        info.name
                    );
                }
            }
            let fd = (s.loss(&plus) - s.loss(&minus)) / (2.0 * STEP);
            // The engine's derivative along the step actually applied (after f32 rounding).
            let engine: f64 = gv
                .iter()
                .zip(plus[p].iter().zip(&minus[p]))
                .map(|(g, (a, b))| *g as f64 * (*a as f64 - *b as f64))
                .sum::<f64>()
                / (2.0 * STEP);
            assert!(
                (engine - fd).abs() <= RTOL * fd.abs() + atol,
                "{name}: {} direction {d}: meta gradient {engine:e}, finite differences {fd:e} \
                 (tolerance {:e})",
                info.name,
                RTOL * fd.abs() + atol
            );
            largest[part] = largest[part].max(fd.abs());
            used = used.max((engine - fd).abs() / (RTOL * fd.abs() + atol));
        }
    }
    println!(
        "{name}: largest directional derivative {:.1e} (corrector), {:.1e} (generator); \
         absolute tolerance {atol:.1e}; {:.0}% of the tolerance used",
        largest[0],
        largest[1],
        100.0 * used
    );
    assert!(
        largest[0] > variant.min_signal * atol,
        "{name}: the corrector's meta gradient is too small to be checked here ({:e})",
        largest[0]
    );
    assert!(
        !variant.generator || largest[1] > variant.min_signal * atol,
        "{name}: the generator's meta gradient is too small to be checked here ({:e})",
        largest[1]
    );
}

#[test]
fn resnet_option_a_shortcuts_mlp_meta_net_hard_gumbel() {
    check("resnet", tiny_resnet(), DEFAULT, 1);
}

#[test]
fn resnet_margin_bound_and_meta_layers() {
    // The bound at 1.5 with margins near 1 sits in tanh's bend; the last three layers
    // (layer2.0.conv2, its batch norm, fc) are the virtual step's.
    let v = Variant {
        margin_bound: Some(1.5),
        meta_layers: Some(3),
        ..DEFAULT
    };
    check("resnet bound 1.5, meta-layers 3", tiny_resnet(), v, 2);
}

#[test]
fn vgg_max_pooling_vector_meta_net() {
    let v = Variant {
        vector: true,
        ..DEFAULT
    };
    check("vgg vector", tiny_vgg(), v, 3);
}

#[test]
fn resnet_stem_only_through_both_blocks() {
    // Only conv1 and bn1 step: every term of the meta gradient passes back through both
    // residual blocks (the identity and the option-A shortcut) and their batch norms. The
    // stem's step moves the meta loss less than the head's; a larger lr would bend the
    // function (at lr 4 the central differences used 88% of the tolerance), so the signal
    // asked for is smaller: 10 times the absolute tolerance, measured 22 times.
    let v = Variant {
        first_layers: Some(2),
        min_signal: 10.0,
        ..DEFAULT
    };
    check("resnet stem only", tiny_resnet(), v, 5);
}

#[test]
fn vgg_layers_before_the_pool_only() {
    // Only the first conv and its batch norm step: every term passes back through the max
    // pooling's double backward. The batch norm right after the stepped convolution cancels
    // most of the step's effect; lr 4 doubles what is left (measured 12 times the absolute
    // tolerance for the corrector, 8.4 for the generator, 3% of the tolerance used).
    let v = Variant {
        first_layers: Some(2),
        lr: 4.0,
        min_signal: 8.0,
        ..DEFAULT
    };
    check("vgg before the pool", tiny_vgg(), v, 6);
}

#[test]
fn corrector_with_fixed_balanced_softmax_margins() {
    let v = Variant {
        generator: false,
        fixed_margins: true,
        ..DEFAULT
    };
    check("resnet corrector + fixed margins", tiny_resnet(), v, 4);
}

/// The tolerance's NOISE: along a segment of length 8e-5 in theta the meta loss is a straight
/// line to within 1e-8 (|L''| < 1 times 1e-8 / 2), so its departures from the fitted line are
/// rounding alone (each step changes theta's f32 entries by hundreds of units in the last
/// place, enough to decorrelate the roundings); the largest must stay within NOISE / 2
/// (each finite difference subtracts two evaluations).
#[test]
fn f32_noise_is_within_the_stated_bound() {
    let s = Setup::new(tiny_resnet(), DEFAULT, 1);
    let mut rng = Rng::new(5);
    let p = s.meta.split - 1; // the corrector's last bias: every sample's g moves with it
    let u = direction(s.theta0[p].len(), &mut rng);
    let ts: Vec<f64> = (-4..=4).map(|k| k as f64 * 1e-5).collect();
    let ls: Vec<f64> = ts
        .iter()
        .map(|&t| s.loss(&shifted(&s.theta0, p, &u, t)))
        .collect();
    // Least-squares line through the points; the residuals are the rounding.
    let n = ts.len() as f64;
    let (mt, ml) = (ts.iter().sum::<f64>() / n, ls.iter().sum::<f64>() / n);
    let slope = ts
        .iter()
        .zip(&ls)
        .map(|(t, l)| (t - mt) * (l - ml))
        .sum::<f64>()
        / ts.iter().map(|t| (t - mt).powi(2)).sum::<f64>();
    let worst = ts
        .iter()
        .zip(&ls)
        .map(|(t, l)| (l - ml - slope * (t - mt)).abs())
        .fold(0.0, f64::max);
    println!("meta loss {ml:.6}: rounding moves it by up to {worst:.1e} (bound {NOISE:.0e})");
    assert!(
        worst <= NOISE / 2.0,
        "f32 rounding of the meta loss: {worst:e}"
    );
}
