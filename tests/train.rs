//! End-to-end training on a tiny slice of the built-in data set: the loss falls, accuracy rises
//! above chance, a resumed run equals a straight one bit for bit, and bad input fails cleanly.

mod common;

use std::path::Path;

use common::{TempDir, gpu};
use dynloss_wgpu::train::{self, Checkpoint, RunOptions, TrainConfig, metrics::read_metrics};

/// A small VGG-style model in a user TOML file (also exercises `--model PATH`).
fn tiny_model(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("tiny.toml");
    std::fs::write(&p, "family = \"vgg\"\nlayers = [8, \"M\", 16, \"M\", 32]\n").unwrap();
    p.to_string_lossy().into_owned()
}

fn tiny_config(model: String) -> TrainConfig {
    TrainConfig {
        model,
        epochs: 12,
        batch_size: 32,
        lr: 0.05,
        lr_warmup_epochs: 0,
        augment: dynloss_wgpu::data::views::View::Weak,
        train_limit: Some(128),
        test_limit: Some(200),
        ..TrainConfig::default()
    }
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        resume: false,
        stop_after: None,
        progress: Some(false),
        verbose: false,
        stop: None,
    }
}

#[test]
fn loss_falls_and_accuracy_rises_above_chance() {
    let g = gpu();
    let tmp = TempDir::new("train-learn");
    let root = tmp.0.clone();
    let cfg = tiny_config(tiny_model(&root));
    let out = root.join("run");
    let s = train::train(&g, &cfg, &opts(&out)).unwrap();
    let m = read_metrics(&out.join("metrics.jsonl")).unwrap();
    eprintln!(
        "{:?}",
        m.iter()
            .map(|m| (m.loss, m.train_acc, m.test_acc))
            .collect::<Vec<_>>()
    );
    let last = m.last().unwrap();
    assert_eq!(m.len(), 12);
    assert!(
        last.loss < 0.9 * m[0].loss,
        "loss {} -> {}",
        m[0].loss,
        last.loss
    );
    assert!(
        last.train_acc > 20.0,
        "train accuracy {} (chance 10%)",
        last.train_acc
    );
    assert_eq!(last.per_class_acc.len(), 10);
    // The summary is the metrics' last and best epoch.
    let best = m.iter().map(|m| m.test_acc).fold(f64::MIN, f64::max);
    assert_eq!(
        (s.last_acc, s.best_acc, s.epochs),
        (last.test_acc, best, 12)
    );
    for f in [
        "checkpoint.safetensors",
        "summary.json",
        "plots/accuracy.png",
    ] {
        assert!(out.join(f).exists(), "{f} written");
    }
    // The output directory is never reused by accident.
    let e = train::train(&g, &cfg, &opts(&out)).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    // eval reproduces the last test accuracy on the same (limited) test split, and its
    // prediction counts agree with the per-class accuracies.
    let (_, test) = train::data::load_sets(&cfg).unwrap();
    let n = test.len();
    let labels = test.labels.clone();
    let ev = train::evaluate::evaluate_checkpoint_on(&g, &out.join("checkpoint.safetensors"), test)
        .unwrap();
    assert_eq!(ev.accuracy, last.test_acc);
    assert_eq!(ev.per_class, last.per_class_acc);
    assert_eq!(ev.predicted.iter().sum::<usize>(), n);
    for (c, &p) in ev.predicted.iter().enumerate() {
        let members = labels.iter().filter(|&&l| l as usize == c).count();
        let hits = (ev.per_class[c] * members as f64 / 100.0).round() as usize;
        assert!(hits <= p, "class {c}: {hits} right but only {p} predicted");
    }
}

/// `audit` rebuilds the run's noisy training set from the checkpoint's own settings: its given
/// labels are right exactly as often as the run's data says, the bands add up to the whole,
/// and every relabelling line balances.
#[test]
fn audit_rebuilds_the_noisy_training_set() {
    let g = gpu();
    let tmp = TempDir::new("train-audit");
    let root = tmp.0.clone();
    let cfg = TrainConfig {
        epochs: 1,
        noise: 0.3,
        noise_type: dynloss_wgpu::data::NoiseType::Sym,
        ..tiny_config(tiny_model(&root))
    };
    let out = root.join("run");
    train::train(&g, &cfg, &opts(&out)).unwrap();
    let data = train::data::TrainData::load(&cfg).unwrap();
    let ckpt = out.join("checkpoint.safetensors");
    let (a, names) = train::audit::audit_checkpoint(&g, &ckpt, None, 4).unwrap();
    let right = data
        .train
        .labels
        .iter()
        .zip(&data.true_labels)
        .filter(|(y, t)| y == t)
        .count();
    assert_eq!((a.samples, a.given_right), (data.train.len(), right));
    assert!(right < a.samples, "the run's labels are noisy");
    assert_eq!(names.len(), 10);
    let bands: Vec<_> = a.bands.iter().flatten().collect();
    assert_eq!(bands.iter().map(|b| b.samples).sum::<usize>(), a.samples);
    assert_eq!(bands.iter().map(|b| b.given_right).sum::<usize>(), right);
    assert_eq!(
        bands.iter().map(|b| b.predicted_right).sum::<usize>(),
        a.predicted_right
    );
    for (r, next) in a.relabel.iter().zip(a.relabel.iter().skip(1)) {
        assert!(
            r.changed <= next.changed,
            "a larger share changes no fewer labels"
        );
        assert_eq!(
            r.labels_right + r.changed_right_before,
            right + r.changed_right_after
        );
    }
    let e = train::audit::audit_checkpoint(&g, &ckpt, None, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--bands 0"), "{e}");
    // --relabel-from trains on exactly the labels the audit's 50% line counts.
    let relabelled = TrainConfig {
        relabel_from: Some(ckpt.clone()),
        relabel_top: 50.0,
        epochs: 2,
        ..cfg.clone()
    };
    let out2 = root.join("relabelled");
    let stop = RunOptions {
        stop_after: Some(1),
        ..opts(&out2)
    };
    let s = train::train(&g, &relabelled, &stop).unwrap();
    let half = a.relabel.iter().find(|r| r.percent == 50.0).unwrap();
    assert!(half.changed > 0);
    let right_after = half.labels_right as f64 / a.samples as f64;
    assert!((s.noise_rate - (1.0 - right_after)).abs() < 1e-12);
    // A checkpoint of other data is refused, naming the setting.
    let other = TrainConfig {
        seed: cfg.seed + 1,
        ..relabelled.clone()
    };
    let e = train::train(&g, &other, &opts(&root.join("other")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--relabel-from") && e.contains("--seed"), "{e}");
    // Resuming after the relabelling checkpoint changed is refused: train another classifier
    // into its place.
    let again = TrainConfig {
        lr: 0.2,
        ..cfg.clone()
    };
    let out3 = root.join("again");
    train::train(&g, &again, &opts(&out3)).unwrap();
    std::fs::copy(out3.join("checkpoint.safetensors"), &ckpt).unwrap();
    let resume = RunOptions {
        resume: true,
        ..opts(&out2)
    };
    let e = train::train(&g, &relabelled, &resume)
        .unwrap_err()
        .to_string();
    assert!(e.contains("training labels differ"), "{e}");
}

#[test]
fn resumed_run_equals_straight_run() {
    let g = gpu();
    let tmp = TempDir::new("train-resume");
    let root = tmp.0.clone();
    let mut cfg = tiny_config(tiny_model(&root));
    cfg.epochs = 4;
    cfg.train_limit = Some(96);
    cfg.test_limit = Some(50);
    cfg.augment = dynloss_wgpu::data::views::View::Strong;
    let straight = root.join("straight");
    train::train(&g, &cfg, &opts(&straight)).unwrap();
    let split = root.join("split");
    let mut o = opts(&split);
    o.stop_after = Some(2);
    let s = train::train(&g, &cfg, &o).unwrap();
    assert_eq!(s.epochs, 2);
    o.stop_after = None;
    o.resume = true;
    let s = train::train(&g, &cfg, &o).unwrap();
    assert_eq!(s.epochs, 4);
    let mut a = Checkpoint::load(&straight.join("checkpoint.safetensors")).unwrap();
    let mut b = Checkpoint::load(&split.join("checkpoint.safetensors")).unwrap();
    a.tensors.sort_by(|x, y| x.0.cmp(&y.0));
    b.tensors.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((na, _, va), (nb, _, vb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(na, nb);
        assert!(va == vb, "tensor {na} differs after resume");
    }
    let ma = read_metrics(&straight.join("metrics.jsonl")).unwrap();
    let mb = read_metrics(&split.join("metrics.jsonl")).unwrap();
    assert_eq!(
        ma.iter().map(|m| m.test_acc).collect::<Vec<_>>(),
        mb.iter().map(|m| m.test_acc).collect::<Vec<_>>()
    );
    // Resuming with other settings is refused.
    let mut other = cfg.clone();
    other.lr = 0.01;
    let e = train::train(&g, &other, &o).unwrap_err().to_string();
    assert!(e.contains("settings differ"), "{e}");
}

#[test]
fn bad_input_fails_with_one_clear_error() {
    let g = gpu();
    let tmp = TempDir::new("train-bad");
    let root = tmp.0.clone();
    let model = tiny_model(&root);
    let mut cfg = tiny_config(model.clone());
    cfg.epochs = 0;
    assert!(
        train::train(&g, &cfg, &opts(&root.join("a")))
            .unwrap_err()
            .to_string()
            .contains("--epochs")
    );
    let mut cfg = tiny_config("no-such-model".into());
    cfg.epochs = 1;
    assert!(
        train::train(&g, &cfg, &opts(&root.join("b")))
            .unwrap_err()
            .to_string()
            .contains("unknown model")
    );
    // An unknown data set in a config file: refused by name, with the file.
    let file = root.join("bad.toml");
    std::fs::write(&file, "dataset = \"imagenet\"\n").unwrap();
    let e = TrainConfig::from_file(&file).unwrap_err().to_string();
    assert!(
        e.contains("unknown dataset 'imagenet'") && e.contains("bad.toml"),
        "{e}"
    );
    let mut cfg = tiny_config(model.clone());
    cfg.dl.no_label_corrector = true;
    assert!(
        train::train(&g, &cfg, &opts(&root.join("d")))
            .unwrap_err()
            .to_string()
            .contains("--method dl")
    );
    // A checkpoint holding a NaN (a diverged run's, written by an older version) is refused
    // on resume, naming the tensor, and left as it was.
    let mut cfg = tiny_config(model.clone());
    cfg.epochs = 3;
    cfg.train_limit = Some(64);
    cfg.test_limit = Some(20);
    let out = root.join("nan");
    let mut o = opts(&out);
    o.stop_after = Some(1);
    train::train(&g, &cfg, &o).unwrap();
    // Poison the weights.
    let mut ck = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let w = ck
        .tensors
        .iter_mut()
        .find(|t| t.0 == "param.fc.weight")
        .unwrap();
    w.2[0] = f32::NAN;
    let poisoned = root.join("poisoned");
    std::fs::create_dir_all(&poisoned).unwrap();
    for f in ["metrics.jsonl", "summary.json"] {
        std::fs::copy(out.join(f), poisoned.join(f)).unwrap();
    }
    ck.save(&poisoned.join("checkpoint.safetensors")).unwrap();
    let saved = std::fs::read(poisoned.join("checkpoint.safetensors")).unwrap();
    let mut o = opts(&poisoned);
    o.resume = true;
    let e = train::train(&g, &cfg, &o).unwrap_err().to_string();
    assert!(
        e.contains("tensor 'param.fc.weight' holds 1 non-finite values"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(poisoned.join("checkpoint.safetensors")).unwrap(),
        saved,
        "checkpoint kept"
    );
    // A checkpoint of other inputs is refused on eval, naming both shapes; a missing one is
    // named.
    let mut other = tiny_config(model);
    other.image_size = Some(16);
    let e = train::evaluate::evaluate_checkpoint(
        &g,
        &out.join("checkpoint.safetensors"),
        &other.data_config(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("trained on [3, 32, 32]") && e.contains("[3, 16, 16]"),
        "{e}"
    );
    let e = train::evaluate::evaluate_checkpoint(
        &g,
        &root.join("missing.safetensors"),
        &other.data_config(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}

#[test]
fn a_subset_that_empties_a_class_is_refused() {
    let cfg = TrainConfig {
        imbalance: 1000.0,
        train_limit: Some(64),
        ..TrainConfig::default()
    };
    let Err(e) = train::data::load_sets(&cfg) else {
        panic!("a subset without some classes was accepted")
    };
    let e = e.to_string();
    assert!(
        e.contains("--train-limit 64") && e.contains("without training samples"),
        "{e}"
    );
    // The same long tail without the subset keeps every class.
    let full = TrainConfig {
        train_limit: None,
        ..cfg
    };
    assert!(train::data::load_sets(&full).is_ok());
}

#[test]
fn prediction_counts_and_accuracy_on_known_logits() {
    // Rows predict 2, 0, 2, 1 (the first of a tie wins); labels 2, 1, 0, 1.
    let logits = [0.0, 1.0, 3.0, 5.0, 5.0, 1.0, -1.0, -2.0, 0.5, 0.0, 2.0, 2.0];
    assert_eq!(
        train::accuracy::prediction_counts(&logits, 3),
        vec![1, 1, 2]
    );
    let (acc, per) = train::accuracy::accuracy(&logits, &[2, 1, 0, 1], 3);
    assert_eq!(acc, 50.0);
    assert_eq!(per, vec![0.0, 50.0, 100.0]);
}
