//! Iteration parity with an independent PyTorch implementation of docs/method.md
//! (`tools/reference/parity.py`, float64). The golden file holds a small fixed case (ResNet-8
//! on 16 random 1x12x12 images, 10 classes, 10 rank bins, a meta batch of 10) with every input
//! and every intermediate of one warm-up iteration, two meta iterations and one step of the
//! meta-set pass. This test loads the inputs into a `Classifier` and a `DynamicLoss`, runs the
//! methods `train` runs (`warmup_step`, `meta_iteration_with`, `meta_set_step`) with the
//! reference's Gumbel uniforms injected, and compares every quantity. The meta step's
//! intermediates (y*, q, the dynamic loss, the virtual weights, the meta-net gradients) come
//! from `meta_gradient` called with the arguments `meta_step` passes it; the iteration's own
//! meta loss must agree with it. Regenerate the file as tools/reference/README.md says.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::gpu;
use dynloss_wgpu::Tensor;
use dynloss_wgpu::autograd::Var;
use dynloss_wgpu::dynloss::meta_net::{MetaNet, corrected_labels};
use dynloss_wgpu::dynloss::meta_step::{
    GumbelNoise, MetaBatch, MetaParts, Pseudo, VirtualSgd, margins, meta_gradient, one_hot_rows,
    pseudo_labels,
};
use dynloss_wgpu::nn::zoo;
use dynloss_wgpu::train::method::TrainingMethod;
use dynloss_wgpu::train::methods::dynamic_loss::{DynamicLoss, IterationBatch};
use dynloss_wgpu::train::{Checkpoint, Classifier, Method, TrainConfig};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/golden/parity.safetensors"
);
const CLASSES: usize = 10;
const BINS: usize = 10;
const BETA1: f64 = 0.9;

/// Tolerances on the relative error |got - want| / max(|want|, FLOOR * max|want of the tensor|).
///
/// Why these values: the Rust side runs in f32 (unit roundoff 6e-8) on the GPU, the reference
/// in f64 from the same f32 inputs, so the reference is exact for this purpose and every
/// difference is the f32 side's rounding, amplified by what each quantity goes through.
/// Forward values (logits, losses, g, q, y*, weights after an SGD step, running statistics)
/// pass through sums of up to 576 products and a batch-norm division by the batch's standard
/// deviation per layer; measured on lavapipe up to 4e-5 (small logits near the floor):
/// FORWARD = 5e-4. Gradients add a backward pass in which batch norm subtracts nearly equal
/// terms (dx = gamma rstd (dy - mean dy - xhat mean(dy xhat))); the classifier's gradients and
/// momentum buffers measure up to 1.6e-4, and the meta-net gradients, second order (a backward
/// through the virtual step and a double backward of the dynamic loss, the corrector's part
/// scaled by g (1 - g) ~ 0.02), up to 1e-4: GRAD = META_GRAD = 2e-3. Adam's moments are
/// gradient-like (up to 2.4e-4): ADAM = 3e-3. The meta net's weights after Adam move by
/// lr m / (sqrt(v) + eps) per element, so the moments' error becomes an absolute error of about
/// 1e-4 lr on each element, large relative to the small biases the steps have just moved
/// from 0 (measured up to 8e-5): META_WEIGHTS = 1e-3. Each bound is over 10x what is measured
/// (printed below; the second meta iteration starts from the state the Rust side left, so its
/// errors include the first one's), and below what a wrong formula does. Three one-line
/// mutations each fail it: the momentum term dropped from `virtual_step` (meta1 virtual
/// weights 3.9, meta loss 7.6e-2, meta-net grads 25), the running statistics updated by the
/// meta step's weak pass (meta1.real BN running mean 25, var 0.22), the margins added in the
/// meta loss (meta1 meta loss 4.3e-3, meta-net grads 85).
///
/// The floor: an element 100 times smaller than its tensor's largest is compared in absolute
/// terms against 1% of that largest, since its relative error says nothing about the
/// computation (it is the difference of larger terms). The Gumbel picks must match exactly;
/// the reference redraws the noise of rows whose two best scores are closer than 0.01.
const FLOOR: f64 = 1e-2;
const FORWARD: f64 = 5e-4;
const GRAD: f64 = 2e-3;
const META_GRAD: f64 = 2e-3;
const ADAM: f64 = 3e-3;
const META_WEIGHTS: f64 = 1e-3;

/// The golden file: f32 tensors (f64 for the Gumbel uniforms) and its metadata.
struct Golden {
    tensors: HashMap<String, Vec<f64>>,
    meta: HashMap<String, String>,
    cap: usize,
    stride: usize,
}

impl Golden {
    fn load() -> Golden {
        let bytes = std::fs::read(GOLDEN).expect("tests/golden/parity.safetensors");
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors = HashMap::new();
        for name in st.names() {
            let v = st.tensor(name).unwrap();
            let data: Vec<f64> = match v.dtype() {
                Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::F64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                d => panic!("{name}: unexpected dtype {d:?}"),
            };
            tensors.insert(name.to_string(), data);
        }
        let num = |k: &str| meta[k].parse().unwrap();
        Golden {
            cap: num("sample_cap"),
            stride: num("sample_stride"),
            tensors,
            meta,
        }
    }

    fn get(&self, key: &str) -> &[f64] {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("golden file lacks '{key}'"))
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        self.get(key).iter().map(|&v| v as f32).collect()
    }

    fn u32s(&self, key: &str) -> Vec<u32> {
        self.get(key).iter().map(|&v| v as u32).collect()
    }

    fn names(&self, key: &str) -> Vec<String> {
        serde_json::from_str(&self.meta[key]).unwrap()
    }

    /// (index, value) pairs of an output of `numel` elements: all of them, or the fixed
    /// sample the reference keeps of a large tensor.
    fn indexed(&self, key: &str, numel: usize) -> Vec<(usize, f64)> {
        let v = self.get(key);
        if v.len() == numel {
            return v.iter().copied().enumerate().collect();
        }
        assert!(
            v.len() == self.cap && numel > self.cap,
            "{key}: {} values for {numel}",
            v.len()
        );
        (0..self.cap)
            .map(|k| ((k * self.stride + 13) % numel, v[k]))
            .collect()
    }
}

/// The largest error of each quantity, printed at the end; failures are collected so every
/// quantity is printed before the test fails.
struct Report<'a> {
    gold: &'a Golden,
    rows: Vec<(String, f64, f64, String)>,
}

impl Report<'_> {
    /// Compares tensors `got` (named `names`) with the golden `{key}.{name}`.
    fn tensors(&mut self, what: &str, key: &str, names: &[String], got: &[Vec<f64>], tol: f64) {
        let mut worst = (0.0f64, String::new());
        for (n, g) in names.iter().zip(got) {
            let want = self.gold.indexed(&format!("{key}.{n}"), g.len());
            let scale = want.iter().fold(0.0f64, |m, (_, w)| m.max(w.abs()));
            let floor = (FLOOR * scale).max(1e-30);
            for (i, w) in want {
                let e = (g[i] - w).abs() / w.abs().max(floor);
                let e = if e.is_nan() { f64::INFINITY } else { e };
                if e > worst.0 || worst.1.is_empty() {
                    worst = (e, format!("{n}[{i}]: got {} want {w}", g[i]));
                }
            }
        }
        self.rows.push((what.into(), worst.0, tol, worst.1));
    }

    /// Compares one tensor with the golden `key`.
    fn one(&mut self, what: &str, key: &str, got: &[f64], tol: f64) {
        let (prefix, name) = key.rsplit_once('.').unwrap();
        self.tensors(what, prefix, &[name.to_string()], &[got.to_vec()], tol);
    }

    /// Compares a value computed here with one of the golden file's inputs.
    fn scalar(&mut self, what: &str, got: f64, want: f64, tol: f64) {
        let e = (got - want).abs() / want.abs();
        self.rows
            .push((what.into(), e, tol, format!("got {got} want {want}")));
    }

    fn finish(self) {
        println!(
            "{:<34} {:>11} {:>9}  worst element",
            "quantity", "max rel err", "tol"
        );
        let mut failed = Vec::new();
        for (what, err, tol, worst) in &self.rows {
            let flag = if err <= tol { "" } else { "  FAIL" };
            println!("{what:<34} {err:>11.3e} {tol:>9.1e}  {worst}{flag}");
            if err > tol {
                failed.push(what.clone());
            }
        }
        assert!(failed.is_empty(), "beyond tolerance: {failed:?}");
    }
}

fn host(ts: &[Tensor]) -> Vec<Vec<f64>> {
    ts.iter()
        .map(|t| t.to_f32_vec().unwrap().iter().map(|&v| v as f64).collect())
        .collect()
}

fn host1(t: &Tensor) -> Vec<f64> {
    host(std::slice::from_ref(t)).remove(0)
}

fn consts(ts: &[Tensor]) -> Vec<Var> {
    ts.iter().map(|t| Var::constant(t.clone())).collect()
}

/// The meta net's parameters and Adam state as `DynamicLoss::save` writes them.
struct MetaState {
    theta: Vec<Tensor>,
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    steps: Vec<u32>,
}

fn meta_state(g: &dynloss_wgpu::Gpu, dl: &DynamicLoss, names: &[String]) -> MetaState {
    let mut ck = Checkpoint::default();
    dl.save(&mut ck).unwrap();
    let part = |prefix: &str| -> Vec<(Vec<usize>, Vec<f32>)> {
        names
            .iter()
            .map(|n| {
                let key = format!("{prefix}.{n}");
                let (_, s, d) = ck.tensors.iter().find(|(k, _, _)| *k == key).unwrap();
                (s.clone(), d.clone())
            })
            .collect()
    };
    let f64s = |p: Vec<(Vec<usize>, Vec<f32>)>| -> Vec<Vec<f64>> {
        p.into_iter()
            .map(|(_, d)| d.iter().map(|&v| v as f64).collect())
            .collect()
    };
    MetaState {
        theta: part("meta")
            .into_iter()
            .map(|(s, d)| Tensor::from_f32(g, &s, &d).unwrap())
            .collect(),
        m: f64s(part("adam_m")),
        v: f64s(part("adam_v")),
        steps: {
            let state: serde_json::Value = serde_json::from_str(&ck.meta["dl_state"]).unwrap();
            serde_json::from_value(state["adam_steps"].clone()).unwrap()
        },
    }
}

/// Checks the classifier after a step against `{key}.param/.buffer/.grad/.bn`. The gradient
/// the step applied is read off the momentum buffers: buf' = momentum buf + grad + wd w.
fn check_classifier(
    rep: &mut Report,
    key: &str,
    clf: &Classifier,
    before: &(Vec<Vec<f64>>, Vec<Vec<f64>>),
) {
    let names = clf.param_names();
    let (w0, b0) = before;
    let (m, wd) = (clf.sgd().momentum as f64, clf.sgd().weight_decay as f64);
    let b1 = host(&clf.sgd().buffers);
    let grads: Vec<Vec<f64>> = (0..names.len())
        .map(|k| {
            (0..b1[k].len())
                .map(|e| b1[k][e] - m * b0[k][e] - wd * w0[k][e])
                .collect()
        })
        .collect();
    rep.tensors(
        &format!("{key} grads"),
        &format!("{key}.grad"),
        &names,
        &grads,
        GRAD,
    );
    rep.tensors(
        &format!("{key} momentum buffers"),
        &format!("{key}.buffer"),
        &names,
        &b1,
        GRAD,
    );
    rep.tensors(
        &format!("{key} weights"),
        &format!("{key}.param"),
        &names,
        &host(clf.params()),
        FORWARD,
    );
    let n = clf.running().mean.len();
    let bn = |s: &str| (0..n).map(|i| format!("{i}.{s}")).collect::<Vec<_>>();
    rep.tensors(
        &format!("{key} BN running mean"),
        &format!("{key}.bn"),
        &bn("running_mean"),
        &host(&clf.running().mean),
        FORWARD,
    );
    rep.tensors(
        &format!("{key} BN running var"),
        &format!("{key}.bn"),
        &bn("running_var"),
        &host(&clf.running().var),
        FORWARD,
    );
}

fn check_meta(rep: &mut Report, key: &str, st: &MetaState, names: &[String]) {
    rep.tensors(
        &format!("{key} meta-net weights"),
        &format!("{key}.meta"),
        names,
        &host(&st.theta),
        META_WEIGHTS,
    );
    rep.tensors(
        &format!("{key} Adam m"),
        &format!("{key}.adam_m"),
        names,
        &st.m,
        ADAM,
    );
    rep.tensors(
        &format!("{key} Adam v"),
        &format!("{key}.adam_v"),
        names,
        &st.v,
        ADAM,
    );
}

fn snapshot(clf: &Classifier) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    (host(clf.params()), host(&clf.sgd().buffers))
}

#[test]
fn iterations_match_the_pytorch_reference() {
    let g = gpu();
    let gold = Golden::load();
    let mut rep = Report {
        gold: &gold,
        rows: Vec::new(),
    };
    // The reference's schedule: lr 0.1 by epoch over 10 epochs, one warm-up epoch of one step.
    let mut cfg = TrainConfig {
        method: Method::Dl,
        epochs: 10,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        ..TrainConfig::default()
    };
    cfg.dl.warmup_epochs = 1;
    cfg.dl.bins = Some(BINS);
    cfg.dl.meta_lr = 3e-3;
    let model = zoo::build_named("resnet8", [1, 12, 12], CLASSES).unwrap();
    let mut clf = Classifier::new(&g, &cfg, model, 1).unwrap();
    let names = clf.param_names();
    assert_eq!(names, gold.names("param_names"), "parameter order");
    for (n, t) in names.iter().zip(clf.params()) {
        t.write_f32(&gold.f32s(&format!("input.param.{n}")))
            .unwrap();
    }
    for i in 0..clf.running().mean.len() {
        let r = clf.running();
        r.mean[i]
            .write_f32(&gold.f32s(&format!("input.bn.{i}.running_mean")))
            .unwrap();
        r.var[i]
            .write_f32(&gold.f32s(&format!("input.bn.{i}.running_var")))
            .unwrap();
    }
    // The momentum buffers start at zero in both (a fresh optimizer).
    let t = |key: &str, shape: &[usize]| Tensor::from_f32(&g, shape, &gold.f32s(key)).unwrap();
    let u = |key: &str, n: usize| Tensor::from_u32(&g, &[n], &gold.u32s(key)).unwrap();
    let x_weak = t("input.x_weak", &[16, 1, 12, 12]);
    let x_strong = t("input.x_strong", &[16, 1, 12, 12]);
    let meta_x = t("input.meta_x", &[10, 1, 12, 12]);
    let labels = u("input.labels", 16);
    let bins = u("input.bins", 16);
    let meta_labels = u("input.meta_labels", 10);

    let meta = MetaNet::new(BINS, CLASSES, false);
    let mnames: Vec<String> = meta.params.iter().map(|p| p.name.clone()).collect();
    assert_eq!(mnames, gold.names("meta_names"), "meta-net parameter order");
    let mut dl =
        DynamicLoss::for_labels(&g, &cfg, &gold.u32s("input.labels"), CLASSES, &clf).unwrap();
    let mut ck = Checkpoint::default();
    for (n, p) in mnames.iter().zip(&meta.params) {
        let v = gold.f32s(&format!("input.meta.{n}"));
        let zeros = vec![0.0f32; v.len()];
        ck.tensors.push((format!("meta.{n}"), p.shape.clone(), v));
        ck.tensors
            .push((format!("adam_m.{n}"), p.shape.clone(), zeros.clone()));
        ck.tensors
            .push((format!("adam_v.{n}"), p.shape.clone(), zeros));
    }
    let state = serde_json::json!({
        "adam_steps": vec![0u32; mnames.len()],
        "margin_average": null,
        "history": [],
    });
    ck.meta.insert("dl_state".into(), state.to_string());
    dl.restore(Path::new(GOLDEN), &ck).unwrap();
    let lrs = gold.get("lr").to_vec();
    // The schedule's f32 cosine against the reference's f64 one rounded to f32: an ulp or so.
    let lr_check = |rep: &mut Report, what: &str, k: usize, clf: &Classifier| {
        rep.scalar(what, clf.lr() as f64, lrs[k], 1e-6)
    };

    // ---- warm-up iteration: cross-entropy step on the strong view, corrector fit.
    clf.begin_epoch(0);
    lr_check(&mut rep, "warm lr", 0, &clf);
    let theta0 = meta_state(&g, &dl, &mnames).theta;
    let before = snapshot(&clf);
    let (out, weak) = dl
        .warmup_step(&mut clf, &x_strong, Some(&x_weak), &labels, &bins)
        .unwrap();
    let weak = weak.expect("the corrector is fitted");
    rep.one(
        "warm weak logits",
        "warm.weak_logits",
        &host1(&weak),
        FORWARD,
    );
    rep.one("warm loss", "warm.loss", &[out.loss as f64], FORWARD);
    rep.one("warm logits", "warm.logits", &host1(&out.logits), FORWARD);
    check_classifier(&mut rep, "warm", &clf, &before);
    let gw = meta
        .label_weights(&consts(&theta0), &bins, &labels)
        .unwrap();
    let yhat = pseudo_labels(&weak, Pseudo::Softmax).unwrap();
    let ystar = corrected_labels(&gw, &labels, &yhat).unwrap();
    rep.one("warm g", "warm.g", &host1(gw.value()), FORWARD);
    rep.one("warm y*", "warm.ystar", &host1(ystar.value()), FORWARD);
    let st = meta_state(&g, &dl, &mnames);
    // Adam's first moment after its first step is (1 - beta1) grad.
    let fit_grads: Vec<Vec<f64>> = st.m[..meta.split]
        .iter()
        .map(|m| m.iter().map(|v| v / (1.0 - BETA1)).collect())
        .collect();
    rep.tensors(
        "warm corrector-fit grads",
        "warm.fit_grad",
        &mnames[..meta.split],
        &fit_grads,
        GRAD,
    );
    check_meta(&mut rep, "warm", &st, &mnames);
    let mut want_steps = vec![1u32; meta.split];
    want_steps.resize(mnames.len(), 0);
    assert_eq!(
        st.steps, want_steps,
        "only the corrector counts the fit step"
    );

    // ---- two meta iterations.
    clf.begin_epoch(1);
    let parts = MetaParts {
        corrector: true,
        generator: true,
        fixed_margins: None,
        margin_bound: None,
        anchor: None,
    };
    let all: Vec<usize> = (0..names.len()).collect();
    for it in 1..=2 {
        let key = format!("meta{it}");
        lr_check(&mut rep, &format!("{key} lr"), it, &clf);
        let u_v = gold.get(&format!("input.noise.{key}.virtual")).to_vec();
        let u_r = gold.get(&format!("input.noise.{key}.real")).to_vec();
        let theta = meta_state(&g, &dl, &mnames).theta;
        let batch = MetaBatch {
            x: &x_weak,
            labels: &labels,
            bins: &bins,
            meta_x: &meta_x,
            meta_labels: &meta_labels,
        };
        // The meta step's intermediates, from the call `meta_step` makes.
        let opt = VirtualSgd {
            lr: clf.lr(),
            momentum: clf.sgd().momentum,
            weight_decay: clf.sgd().weight_decay,
            buffers: Some(&clf.sgd().buffers),
        };
        let mg = meta_gradient(
            clf.model(),
            clf.params(),
            clf.running(),
            &meta,
            &theta,
            &batch,
            Pseudo::HardGumbelFrom(&u_v),
            &opt,
            &all,
            parts,
        )
        .unwrap();
        let k = |s: &str| format!("{key}.{s}");
        rep.one(
            &k("weak logits"),
            &k("weak_logits"),
            &host1(&mg.logits),
            FORWARD,
        );
        rep.one(&k("yhat (Gumbel)"), &k("yhat"), &host1(&mg.yhat), 0.0);
        let tv = consts(&theta);
        let gv = meta.label_weights(&tv, &bins, &labels).unwrap();
        let q = margins(&meta, &tv, parts).unwrap().unwrap();
        let ystar = corrected_labels(&gv, &labels, &mg.yhat).unwrap();
        rep.one(&k("g"), &k("g"), &host1(gv.value()), FORWARD);
        rep.one(&k("q"), &k("q"), &host1(q.value()), FORWARD);
        rep.one(&k("y*"), &k("ystar"), &host1(ystar.value()), FORWARD);
        let train_loss = mg.train_loss.value().item().unwrap() as f64;
        rep.one(
            &k("dynamic loss"),
            &k("dynamic_loss"),
            &[train_loss],
            FORWARD,
        );
        rep.tensors(
            &k("virtual weights"),
            &k("virtual"),
            &names,
            &host(&mg.virtual_weights),
            FORWARD,
        );
        let meta_loss = mg.meta_loss.value().item().unwrap() as f64;
        rep.one(&k("meta loss"), &k("meta_loss"), &[meta_loss], FORWARD);
        let grads: Vec<Tensor> = mg.grads.into_iter().map(|g| g.unwrap()).collect();
        rep.tensors(
            &k("meta-net grads"),
            &k("meta_grad"),
            &mnames,
            &host(&grads),
            META_GRAD,
        );

        // The iteration `train` runs: meta step, Adam, real step.
        let up = IterationBatch {
            weak: x_weak.clone(),
            strong: x_strong.clone(),
            labels: labels.clone(),
            meta_x: meta_x.clone(),
            meta_labels: meta_labels.clone(),
            bins: bins.clone(),
        };
        let before = snapshot(&clf);
        let noise = [GumbelNoise::Uniforms(&u_v), GumbelNoise::Uniforms(&u_r)];
        let step = dl.meta_iteration_with(&mut clf, &up, noise, true).unwrap();
        // The iteration's own meta step must be the call above.
        rep.one(
            &k("meta loss (iteration)"),
            &k("meta_loss"),
            &[step.meta_loss.unwrap()],
            FORWARD,
        );
        let st = meta_state(&g, &dl, &mnames);
        check_meta(&mut rep, &key, &st, &mnames);
        // The real step: a fresh sample from the same weak logits, the updated meta net.
        let picks = GumbelNoise::Uniforms(&u_r)
            .argmax(&mg.logits.to_f32_vec().unwrap(), CLASSES)
            .unwrap();
        let yhat_r = one_hot_rows(&g, &picks, CLASSES).unwrap();
        let tv = consts(&st.theta);
        let gv = meta.label_weights(&tv, &bins, &labels).unwrap();
        let ystar_r = corrected_labels(&gv, &labels, &yhat_r).unwrap();
        let q_r = dl.training_margins().unwrap().unwrap();
        let q_r: Vec<f64> = q_r.iter().map(|&v| v as f64).collect();
        rep.one(
            &k("real yhat (Gumbel)"),
            &k("real.yhat"),
            &host1(&yhat_r),
            0.0,
        );
        rep.one(&k("real q"), &k("real.q"), &q_r, FORWARD);
        rep.one(
            &k("real y*"),
            &k("real.ystar"),
            &host1(ystar_r.value()),
            FORWARD,
        );
        rep.one(
            &k("real loss"),
            &k("real.loss"),
            &[step.real.loss as f64],
            FORWARD,
        );
        rep.one(
            &k("real logits"),
            &k("real.logits"),
            &host1(&step.real.logits),
            FORWARD,
        );
        check_classifier(&mut rep, &k("real"), &clf, &before);
    }

    // ---- one step of the meta-set pass: cross-entropy plus q, off the schedule.
    lr_check(&mut rep, "pass lr", 3, &clf);
    let steps = clf.steps();
    let q = dl.meta_set_margins().unwrap();
    rep.one(
        "pass q",
        "pass.q",
        &host1(q.as_ref().unwrap().value()),
        FORWARD,
    );
    let before = snapshot(&clf);
    let out = dl
        .meta_set_step(&mut clf, &meta_x, &meta_labels, q.as_ref())
        .unwrap();
    assert_eq!(clf.steps(), steps, "the meta-set pass is off the schedule");
    rep.one("pass loss", "pass.loss", &[out.loss as f64], FORWARD);
    rep.one("pass logits", "pass.logits", &host1(&out.logits), FORWARD);
    check_classifier(&mut rep, "pass", &clf, &before);
    rep.finish();
}
