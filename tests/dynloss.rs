//! The Dynamic Loss pieces the trainer uses: per-class ranking on the GPU against the spec's
//! quantile bins, hierarchical meta-set sampling, layer selection for --meta-layers, and a
//! short run on clean balanced data where the corrector must keep trusting the labels.

mod common;

use common::{Rng, gpu};
use dynloss_wgpu::dynloss::meta_step::last_layers;
use dynloss_wgpu::dynloss::ranking::{Ranking, bin_of, hierarchical_split, rank};
use dynloss_wgpu::train::{self, Method, RunOptions, TrainConfig, metrics::read_metrics};

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
        let mut rng = dynloss_wgpu::data::rng_for(1, &[epoch]);
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
    let mut rng = dynloss_wgpu::data::rng_for(2, &[0]);
    let naive = hierarchical_split(&ranking, true, &mut rng);
    let want: Vec<usize> = ranking
        .by_class
        .iter()
        .flat_map(|c| c[..n_min / 4].to_vec())
        .collect();
    assert_eq!(naive.meta, want);
    // A class with fewer than 4 samples still contributes one.
    let tiny = toy_ranking(&[50, 3]);
    let mut rng = dynloss_wgpu::data::rng_for(3, &[0]);
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
        assert!(
            meta_set >= 10 && meta_set.is_multiple_of(10),
            "balanced meta set of {meta_set}"
        );
        if e > 0 {
            assert!(x["meta_loss"].as_f64().unwrap().is_finite());
            assert_eq!(x["margins"].as_array().unwrap().len(), 10);
        }
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
