//! `train --method dl` on noisy long-tailed data: the meta epochs must move the margins, and
//! towards the log class prior of the given labels (the clean, balanced run in dynloss.rs
//! would pass with a meta update that does nothing or points the wrong way).

mod common;

use common::{TempDir, gpu};
use dynloss_wgpu::data::noise::NoiseType;
use dynloss_wgpu::data::views::View;
use dynloss_wgpu::train::{self, Method, RunOptions, TrainConfig, metrics::read_metrics};

#[test]
fn meta_epochs_move_the_margins_towards_the_log_prior() {
    let g = gpu();
    let root = TempDir::new("dl-margins");
    let model = root.0.join("tiny.toml");
    std::fs::write(&model, "family = \"vgg\"\nlayers = [8, \"M\", 16]\n").unwrap();
    let mut cfg = TrainConfig {
        method: Method::Dl,
        model: model.to_string_lossy().into_owned(),
        imbalance: 20.0,
        noise: 0.2,
        noise_type: NoiseType::Lt,
        epochs: 3,
        batch_size: 32,
        lr: 0.05,
        lr_warmup_epochs: 0,
        image_size: Some(12),
        augment: View::Weak,
        train_limit: Some(640),
        test_limit: Some(100),
        ..TrainConfig::default()
    };
    cfg.dl.warmup_epochs = 1;
    cfg.dl.bins = Some(10);
    let out = root.0.join("run");
    let opts = RunOptions {
        out: out.clone(),
        resume: false,
        stop_after: None,
        progress: Some(false),
        verbose: false,
        stop: None,
    };
    train::train(&g, &cfg, &opts).unwrap();
    let m = read_metrics(&out.join("metrics.jsonl")).unwrap();
    let margins = |e: usize| -> Vec<f64> {
        m[e].extra.as_ref().unwrap()["margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    // The warm-up leaves the generator at its start; the meta epochs move it.
    let (start, end) = (margins(0), margins(2));
    let dq: Vec<f64> = end.iter().zip(&start).map(|(a, b)| a - b).collect();
    let (train_set, _) = train::data::load_sets(&cfg).unwrap();
    let counts = dynloss_wgpu::data::count_labels(&train_set.data.labels, 10);
    let log_prior: Vec<f64> = counts.iter().map(|&c| (c as f64).ln()).collect();
    let n = dq.len() as f64;
    let (mq, mp) = (
        dq.iter().sum::<f64>() / n,
        log_prior.iter().sum::<f64>() / n,
    );
    let cov: f64 = dq
        .iter()
        .zip(&log_prior)
        .map(|(a, b)| (a - mq) * (b - mp))
        .sum();
    let r = cov
        / (dq.iter().map(|a| (a - mq).powi(2)).sum::<f64>()
            * log_prior.iter().map(|b| (b - mp).powi(2)).sum::<f64>())
        .sqrt();
    println!("counts {counts:?}\nmargin change {dq:?}\ncorrelation with the log prior {r:.3}");
    assert!(
        dq.iter().map(|d| d.abs()).fold(0.0, f64::max) > 0.05,
        "the meta epochs must move the margins: {dq:?}"
    );
    assert!(
        r > 0.5,
        "the margins must move towards the log prior: r = {r}"
    );
}
