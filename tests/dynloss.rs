//! The Dynamic Loss pieces the trainer uses: per-class ranking on the GPU against the spec's
//! quantile bins, hierarchical meta-set sampling, layer selection for --meta-layers, the
//! warm-up's corrector fit and the meta net's optimizer state, and a short run on clean
//! balanced data where the corrector must keep trusting the labels.

mod common;

use common::{Rng, assert_close, f64s, gpu, reference};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::dynloss::meta_net::MetaNet;
use dynloss_wgpu::dynloss::meta_step::last_layers;
use dynloss_wgpu::dynloss::ranking::{Ranking, bin_of, hierarchical_split, rank};
use dynloss_wgpu::nn::{Mode, zoo};
use dynloss_wgpu::train::method::TrainingMethod;
use dynloss_wgpu::train::methods::dynamic_loss::{DynamicLoss, IterationBatch};
use dynloss_wgpu::train::{
    self, Checkpoint, Classifier, Method, RunOptions, TrainConfig, metrics::read_metrics,
};

#[test]
fn ranks_are_the_spec_quantiles_of_each_class() {
    let g = gpu();
    let mut rng = Rng::new(5);
    let classes = 7;
    let n = 3000;
    // Unequal classes, many tied losses.
    let labels: Vec<u32> = (0..n).map(|i| ((i * i) % 97 % classes) as u32).collect();
    let losses: Vec<f32> = (0..n).map(|_| (rng.below(50) as f32) * 0.1).collect();
    let r = 100;
    let ranking = rank(&g, &losses, &labels, classes, r).unwrap();
    for (c, members) in ranking.by_class.iter().enumerate() {
        let want: Vec<usize> = {
            let mut v: Vec<usize> = (0..n).filter(|&i| labels[i] as usize == c).collect();
            v.sort_by(|&a, &b| losses[a].total_cmp(&losses[b]).then(a.cmp(&b)));
            v
        };
        assert_eq!(members, &want, "class {c}: ascending loss, ties by index");
        for (k, &i) in members.iter().enumerate() {
            assert_eq!(ranking.bins[i], bin_of(k, members.len(), r));
        }
    }
    // The spec's formula: floor(k / (n + 1) * R); lowest loss is bin 0, the top stays < R.
    assert_eq!(bin_of(0, 10, 100), 0);
    assert_eq!(bin_of(9, 10, 100), 81);
    assert_eq!(bin_of(4999, 5000, 100), 99);
}

fn toy_ranking(sizes: &[usize]) -> Ranking {
    let mut by_class = Vec::new();
    let mut next = 0;
    for &s in sizes {
        by_class.push((next..next + s).collect::<Vec<_>>());
        next += s;
    }
    Ranking {
        bins: vec![0; next],
        by_class,
    }
}

#[test]
fn hierarchical_sampling_gives_a_balanced_disjoint_fresh_meta_set() {
    let ranking = toy_ranking(&[500, 120, 60, 61, 300]);
    let n_min = 60;
    let mut seen = Vec::new();
    for epoch in 0..3u64 {
        let mut rng = dynloss_wgpu::random::seeded(100 + epoch);
        let split = hierarchical_split(&ranking, false, &mut rng);
        let total: usize = ranking.by_class.iter().map(|c| c.len()).sum();
        assert_eq!(split.meta.len() + split.train.len(), total);
        let meta: std::collections::HashSet<usize> = split.meta.iter().copied().collect();
        assert!(split.train.iter().all(|i| !meta.contains(i)), "disjoint");
        for class in &ranking.by_class {
            let k = class.iter().filter(|i| meta.contains(i)).count();
            assert_eq!(k, n_min / 4, "floor(0.25 n_min) per class");
            // The chosen are the lowest-loss n_min/4 of a primary set of n_min/2, so no chosen
            // sample can sit above position len - n_min/2 + n_min/4 - 1 of its class.
            let last = class.iter().rposition(|i| meta.contains(i)).unwrap();
            assert!(
                last < class.len() - n_min / 2 + n_min / 4,
                "position {last} of {}",
                class.len()
            );
        }
        seen.push(split.meta);
    }
    assert!(
        seen[0] != seen[1] && seen[1] != seen[2],
        "a fresh meta set every epoch"
    );
    // Naive sampling takes the lowest-loss samples of the whole class, the same every time.
    let mut rng = dynloss_wgpu::random::seeded(2);
    let naive = hierarchical_split(&ranking, true, &mut rng);
    let want: Vec<usize> = ranking
        .by_class
        .iter()
        .flat_map(|c| c[..n_min / 4].to_vec())
        .collect();
    assert_eq!(naive.meta, want);
    // A class with fewer than 4 samples still contributes one.
    let tiny = toy_ranking(&[50, 3]);
    let mut rng = dynloss_wgpu::random::seeded(3);
    let split = hierarchical_split(&tiny, false, &mut rng);
    assert_eq!(split.meta.iter().filter(|&&i| i >= 50).count(), 1);
}

#[test]
fn meta_layers_selects_the_last_parameterised_layers() {
    let names: Vec<String> = [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "fc.weight",
        "fc.bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(last_layers(&names, None), vec![0, 1, 2, 3, 4]);
    assert_eq!(last_layers(&names, Some(1)), vec![3, 4]);
    assert_eq!(last_layers(&names, Some(2)), vec![1, 2, 3, 4]);
    assert_eq!(last_layers(&names, Some(9)), vec![0, 1, 2, 3, 4]);
}

#[test]
fn corrector_keeps_trusting_clean_balanced_labels_and_runs_reproduce() {
    let g = gpu();
    let root = std::env::temp_dir().join(format!("dynloss-dl-{}", std::process::id()));
    std::fs::remove_dir_all(&root).ok();
    std::fs::create_dir_all(&root).unwrap();
    let model = root.join("tiny.toml");
    std::fs::write(&model, "family = \"vgg\"\nlayers = [8, \"M\", 16]\n").unwrap();
    let mut cfg = TrainConfig {
        method: Method::Dl,
        model: model.to_string_lossy().into_owned(),
        epochs: 3,
        batch_size: 32,
        lr: 0.05,
        lr_warmup_epochs: 0,
        train_limit: Some(320),
        test_limit: Some(100),
        ..TrainConfig::default()
    };
    cfg.dl.warmup_epochs = 1;
    cfg.dl.bins = Some(10);
    let out = root.join("run");
    let opts = RunOptions {
        out: out.clone(),
        resume: false,
        stop_after: Some(2),
        progress: Some(false),
        verbose: false,
        stop: None,
    };
    train::train(&g, &cfg, &opts).unwrap();
    // Resume for the last epoch: the meta net and its Adam state come back from the checkpoint.
    let opts = RunOptions {
        resume: true,
        stop_after: None,
        ..opts
    };
    train::train(&g, &cfg, &opts).unwrap();
    let m = read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(m.len(), 3);
    for (e, line) in m.iter().enumerate() {
        let x = line.extra.as_ref().expect("dl diagnostics");
        let table = x["g_table"].as_array().unwrap();
        let vals: Vec<f64> = table
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        assert!(
            mean > 0.9,
            "epoch {}: mean g {mean} should stay near 1 on clean labels",
            e + 1
        );
        assert_eq!(x["warmup"].as_bool(), Some(e == 0));
        assert_eq!(x["given_label_acc"].as_f64(), Some(100.0));
        assert!(x["label_correction_acc"].as_f64().unwrap() > 95.0);
        let meta_set = x["meta_set"].as_u64().unwrap();
        let trained = x["trained"].as_u64().unwrap();
        if e == 0 {
            // The warm-up trains on the whole set: no meta set is held out.
            assert_eq!((meta_set, trained), (0, 320));
            assert!(x.get("gumbel_agreement").is_none());
        } else {
            assert!(
                meta_set >= 10 && meta_set.is_multiple_of(10),
                "balanced meta set of {meta_set}"
            );
            assert_eq!(meta_set + trained, 320);
            assert!(x["meta_loss"].as_f64().unwrap().is_finite());
            assert_eq!(x["margins"].as_array().unwrap().len(), 10);
            // The real step draws its own Gumbel sample: on a classifier this young it
            // often differs from the virtual step's.
            let agree = x["gumbel_agreement"].as_f64().unwrap();
            assert!(agree > 0.0 && agree < 100.0, "agreement {agree}%");
        }
    }
    // The authors' schedule by epoch (lr 0.05, 3 epochs, 1 warm-up epoch of 10 steps): the
    // warm-up's last step at 0.1 + 0.9 x 9/10 of the cosine's start, then the cosine's value
    // for epochs 1 and 2, 0.025 (1 + cos(pi e / 3)).
    let lrs: Vec<f64> = m.iter().map(|l| l.lr).collect();
    for (got, want) in lrs.iter().zip([0.05 * 0.91, 0.0375, 0.0125]) {
        assert!((got - want).abs() < 1e-7, "lr per epoch {lrs:?}");
    }
    for f in [
        "label_weights.png",
        "margins.png",
        "label_accuracy.png",
        "accuracy.png",
    ] {
        assert!(out.join("plots").join(f).exists(), "{f}");
    }
    // Reproducible: the same settings run straight through give the same metrics, bit for
    // bit, as the interrupted and resumed run (meta net, Adam state, rankings and samplers
    // all come back).
    let straight = root.join("straight");
    let opts = RunOptions {
        out: straight.clone(),
        resume: false,
        stop_after: None,
        progress: Some(false),
        verbose: false,
        stop: None,
    };
    train::train(&g, &cfg, &opts).unwrap();
    let s = read_metrics(&straight.join("metrics.jsonl")).unwrap();
    for (a, b) in m.iter().zip(&s) {
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "epoch {} loss", a.epoch);
        assert_eq!(a.test_acc, b.test_acc, "epoch {} test accuracy", a.epoch);
        assert_eq!(a.extra, b.extra, "epoch {} diagnostics", a.epoch);
    }
    std::fs::remove_dir_all(&root).ok();
}

/// A classifier for 3 x 8 x 8 inputs of `classes` classes and a Dynamic Loss for it.
fn tiny_dl(g: &dynloss_wgpu::Gpu, classes: usize) -> (TrainConfig, Classifier, DynamicLoss) {
    tiny_dl_with(g, classes, |_| {})
}

/// As [`tiny_dl`], with the settings changed by `edit` first.
fn tiny_dl_with(
    g: &dynloss_wgpu::Gpu,
    classes: usize,
    edit: impl Fn(&mut TrainConfig),
) -> (TrainConfig, Classifier, DynamicLoss) {
    let mut cfg = TrainConfig {
        method: Method::Dl,
        ..TrainConfig::default()
    };
    cfg.dl.bins = Some(5);
    edit(&mut cfg);
    let model = zoo::build_named("resnet8", [3, 8, 8], classes).unwrap();
    let clf = Classifier::new(g, &cfg, model, 10).unwrap();
    let labels: Vec<u32> = (0..40).map(|i| i % classes as u32).collect();
    let dl = DynamicLoss::for_labels(g, &cfg, &labels, classes, &clf).unwrap();
    (cfg, clf, dl)
}

fn max_gap(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn the_warmup_fit_uses_each_batch_s_current_weak_logits_in_training_mode() {
    let g = gpu();
    let (_, mut clf, mut dl) = tiny_dl(&g, 4);
    let mut rng = Rng::new(9);
    let b = 8;
    let image = |rng: &mut Rng| Tensor::from_f32(&g, &[b, 3, 8, 8], &rng.vec(b * 192)).unwrap();
    let (strong, weak) = (image(&mut rng), image(&mut rng));
    let labels = Tensor::from_u32(&g, &[b], &rng.labels(b, 4)).unwrap();
    let bins = Tensor::from_u32(&g, &[b], &rng.labels(b, 5)).unwrap();
    let mut used = Vec::new();
    for it in 0..2 {
        let train_mode = clf
            .logits(&weak, Mode::Train)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let eval_mode = clf.logits(&weak, Mode::Eval).unwrap().to_f32_vec().unwrap();
        let (_, fit) = dl
            .warmup_step(&mut clf, &strong, Some(&weak), &labels, &bins)
            .unwrap();
        let fit = fit.expect("the corrector is fitted").to_f32_vec().unwrap();
        assert_close(
            &format!("iteration {it}: the fit's logits"),
            &fit,
            &f64s(&train_mode),
            1e-6,
            1e-5,
        );
        let scale = fit.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            max_gap(&fit, &eval_mode) > 0.05 * scale,
            "iteration {it}: training and evaluation mode should differ here"
        );
        used.push(fit);
    }
    // Each iteration fits on the logits of its own parameters: the step between moved them.
    let scale = used[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(max_gap(&used[0], &used[1]) > 0.01 * scale);
    // When the training view is the weak view, the step's own logits are the fit's.
    let (out, fit) = dl
        .warmup_step(&mut clf, &weak, None, &labels, &bins)
        .unwrap();
    assert_eq!(
        fit.unwrap().to_f32_vec().unwrap(),
        out.logits.to_f32_vec().unwrap()
    );
}

/// The corrector's trust g per (bin, class) of `dl`, from its saved parameters.
fn trust_table(dl: &DynamicLoss, bins: usize) -> Vec<Vec<f64>> {
    let mut ck = Checkpoint::default();
    dl.save(&mut ck).unwrap();
    let theta: Vec<Vec<f32>> = ck
        .tensors
        .iter()
        .filter(|(name, ..)| name.starts_with("meta."))
        .map(|(_, _, v)| v.clone())
        .collect();
    common::reference::corrector_table(&theta, bins)
}

/// `--corrector-target T`: the warm-up fit pulls every trained (bin, label) entry of the
/// corrector towards g = T, where the authors' fit (reproduce the given labels) pushes g
/// towards 1.
#[test]
fn a_corrector_target_pulls_the_warmup_fit_to_it() {
    let g = gpu();
    let mut rng = Rng::new(12);
    let b = 20;
    let x = Tensor::from_f32(&g, &[b, 3, 8, 8], &rng.vec(b * 192)).unwrap();
    let label_ids: Vec<u32> = (0..b as u32).map(|i| i % 4).collect();
    let bin_ids: Vec<u32> = (0..b as u32).map(|i| i % 5).collect();
    let labels = Tensor::from_u32(&g, &[b], &label_ids).unwrap();
    let bins = Tensor::from_u32(&g, &[b], &bin_ids).unwrap();
    let mut trained = Vec::new();
    for target in [None, Some(0.3f32)] {
        let (_, mut clf, mut dl) = tiny_dl_with(&g, 4, |c| {
            c.dl.corrector_target = target;
            c.dl.meta_lr = 0.03;
        });
        for _ in 0..60 {
            dl.warmup_step(&mut clf, &x, None, &labels, &bins).unwrap();
        }
        let table = trust_table(&dl, 5);
        // The entries the batch trained: (bin, label) pairs it contains.
        let seen: Vec<f64> = bin_ids
            .iter()
            .zip(&label_ids)
            .map(|(&r, &y)| table[r as usize][y as usize])
            .collect();
        println!("target {target:?}: trained g {seen:.3?}");
        if let Some(t) = target {
            for v in &seen {
                assert!((v - t as f64).abs() < 0.05, "g {v} should be near {t}");
            }
        }
        trained.push(seen);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&trained[0]) > 0.95,
        "the authors' fit raises g: {:?}",
        trained[0]
    );
}

/// `--margin-average B`: after every meta step the running average becomes
/// B avg + (1 - B) q (the first meta step starts it at q), the real step adds that average
/// rather than the latest q, it stays put while meta updates are off, and a checkpoint keeps
/// it.
#[test]
fn the_real_step_adds_the_running_average_of_the_margins() {
    let g = gpu();
    let classes = 4;
    let settings = |c: &mut TrainConfig| {
        // Without the corrector y* is the given label, so the real step's loss depends on
        // the margins and the logits only.
        c.dl.no_label_corrector = true;
        c.dl.margin_average = Some(0.5);
        c.dl.meta_lr = 0.3;
    };
    let (_, mut clf, mut dl) = tiny_dl_with(&g, classes, settings);
    let mut rng = Rng::new(21);
    let b = 8;
    let mut image = || Tensor::from_f32(&g, &[b, 3, 8, 8], &rng.vec(b * 192)).unwrap();
    let (weak, strong, meta_x) = (image(), image(), image());
    let label_ids: Vec<u32> = (0..b as u32).map(|i| i % classes as u32).collect();
    let up = IterationBatch {
        weak,
        strong,
        labels: Tensor::from_u32(&g, &[b], &label_ids).unwrap(),
        meta_x,
        meta_labels: Tensor::from_u32(&g, &[b], &label_ids).unwrap(),
        bins: Tensor::from_u32(&g, &[b], &[0, 1, 2, 3, 4, 0, 1, 2]).unwrap(),
    };
    let mut onehot = vec![0.0; b * classes];
    for (i, &y) in label_ids.iter().enumerate() {
        onehot[i * classes + y as usize] = 1.0;
    }
    let real_loss = |logits: &Tensor, q: &[f64]| {
        let z = f64s(&logits.to_f32_vec().unwrap());
        reference::mean(&reference::soft_cross_entropy(
            &z,
            &onehot,
            Some(q),
            classes,
        ))
    };
    let mut average: Option<Vec<f64>> = None;
    for it in 0..4u64 {
        // The last iteration has meta updates off (as after --meta-stop).
        let meta_active = it < 3;
        let step = dl
            .meta_iteration(&mut clf, &up, [it, 100 + it], meta_active)
            .unwrap();
        assert_eq!(step.meta_loss.is_some(), meta_active);
        let latest = f64s(&dl.meta_margins().unwrap().unwrap());
        average = Some(match average {
            None => latest.clone(),
            Some(a) if meta_active => a
                .iter()
                .zip(&latest)
                .map(|(a, q)| 0.5 * a + 0.5 * q)
                .collect(),
            Some(a) => a,
        });
        let avg = average.as_ref().unwrap();
        let trained = dl.training_margins().unwrap().unwrap();
        assert_close(
            &format!("iteration {it}: average"),
            &trained,
            avg,
            1e-6,
            1e-6,
        );
        let (want, other) = (
            real_loss(&step.real.logits, avg),
            real_loss(&step.real.logits, &latest),
        );
        println!(
            "iteration {it}: real loss {} (average {want:.6}, latest {other:.6})",
            step.real.loss
        );
        assert!(
            (step.real.loss as f64 - want).abs() < 1e-5 * want.max(1.0),
            "iteration {it}: real loss {} should be {want} (with the latest margins {other})",
            step.real.loss
        );
        if it > 0 {
            assert!(
                (want - other).abs() > 1e-3,
                "iteration {it}: the two margins should differ"
            );
        }
    }
    // A checkpoint keeps the average: restored, the real step adds it, not the meta net's.
    let mut ck = Checkpoint::default();
    dl.save(&mut ck).unwrap();
    let path = std::path::Path::new("ck.safetensors");
    let (_, _, mut other) = tiny_dl_with(&g, classes, settings);
    other.restore(path, &ck).unwrap();
    assert_eq!(
        other.training_margins().unwrap(),
        dl.training_margins().unwrap()
    );
    assert_ne!(
        other.training_margins().unwrap(),
        other.meta_margins().unwrap()
    );
    let mut state: serde_json::Value = serde_json::from_str(&ck.meta["dl_state"]).unwrap();
    state["margin_average"] = serde_json::json!([1.0, 2.0]);
    ck.meta.insert("dl_state".into(), state.to_string());
    let e = other.restore(path, &ck).unwrap_err().to_string();
    assert!(e.contains("has 2 averaged margins for 4 classes"), "{e}");
}

/// The meta optimizer's per-parameter step counts, as a checkpoint of `dl` stores them.
fn saved_counts(dl: &DynamicLoss) -> Vec<u32> {
    let mut ck = Checkpoint::default();
    dl.save(&mut ck).unwrap();
    let state: serde_json::Value = serde_json::from_str(&ck.meta["dl_state"]).unwrap();
    serde_json::from_value(state["adam_steps"].clone()).unwrap()
}

#[test]
fn the_meta_optimizer_counts_steps_per_parameter_in_checkpoints() {
    let g = gpu();
    let (_, mut clf, mut dl) = tiny_dl(&g, 4);
    let shape = MetaNet::new(5, 4, false);
    let split = shape.split;
    let mut rng = Rng::new(4);
    let b = 8;
    let x = Tensor::from_f32(&g, &[b, 3, 8, 8], &rng.vec(b * 192)).unwrap();
    let labels = Tensor::from_u32(&g, &[b], &rng.labels(b, 4)).unwrap();
    let bins = Tensor::from_u32(&g, &[b], &rng.labels(b, 5)).unwrap();
    for _ in 0..3 {
        dl.warmup_step(&mut clf, &x, None, &labels, &bins).unwrap();
    }
    // The warm-up fit moves the corrector only: the generator's parameters have not
    // counted a step, so their first meta step will be bias-corrected as a first step.
    let counts = saved_counts(&dl);
    assert_eq!(counts.len(), shape.params.len());
    assert!(counts[..split].iter().all(|&c| c == 3), "{counts:?}");
    assert!(counts[split..].iter().all(|&c| c == 0), "{counts:?}");
    // A checkpoint restores the counts.
    let mut ck = Checkpoint::default();
    dl.save(&mut ck).unwrap();
    let path = std::path::Path::new("ck.safetensors");
    let (_, _, mut other) = tiny_dl(&g, 4);
    other.restore(path, &ck).unwrap();
    assert_eq!(saved_counts(&other), counts);
    // The state's older forms still load: separate fields (adam_steps, margin_average,
    // dl_history), and before that one count, which every parameter's bias correction used.
    let state: serde_json::Value = serde_json::from_str(&ck.meta["dl_state"]).unwrap();
    let mut legacy = ck.clone();
    legacy.meta.remove("dl_state");
    legacy
        .meta
        .insert("dl_history".into(), state["history"].to_string());
    legacy
        .meta
        .insert("adam_steps".into(), state["adam_steps"].to_string());
    let (_, _, mut old) = tiny_dl(&g, 4);
    old.restore(path, &legacy).unwrap();
    assert_eq!(saved_counts(&old), counts);
    legacy.meta.remove("adam_steps");
    legacy.meta.insert("adam_step".into(), "7".into());
    other.restore(path, &legacy).unwrap();
    assert_eq!(saved_counts(&other), vec![7; counts.len()]);
    // A record that does not fit the meta net is refused with what is wrong.
    let mut broken = state.clone();
    broken["adam_steps"] = serde_json::json!([1, 2]);
    ck.meta.insert("dl_state".into(), broken.to_string());
    let e = other.restore(path, &ck).unwrap_err().to_string();
    assert!(e.contains("has 2 Adam step counts for"), "{e}");
    ck.meta.insert("dl_state".into(), "{".into());
    let e = other.restore(path, &ck).unwrap_err().to_string();
    assert!(e.contains("checkpoint metadata 'dl_state'"), "{e}");
}
