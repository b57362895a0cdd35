//! Balanced Softmax (`--method bs`): its margins are the log class counts, its loss is the
//! cross-entropy of the logits plus those margins (against a CPU computation), and it trains
//! in the direction it exists for: where cross-entropy on a long tail learns the head's prior
//! into the classifier, Balanced Softmax does not, so at test time (no margins) it predicts the
//! tail classes more often than cross-entropy does.

mod common;

use common::reference::{log_softmax, mean};
use common::{Rng, TempDir, gpu};
use dynloss_wgpu::Tensor;
use dynloss_wgpu::autograd::{self as ag, Var};
use dynloss_wgpu::data::views::View;
use dynloss_wgpu::train::methods::baseline::{Baseline, log_counts};
use dynloss_wgpu::train::{self, Method, RunOptions, TrainConfig};

/// Long-tailed labels: `counts[c]` samples of class c, interleaved.
fn long_tail(counts: &[usize]) -> Vec<u32> {
    let mut v: Vec<u32> = counts
        .iter()
        .enumerate()
        .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
        .collect();
    // Interleave deterministically, so that no method could lean on the order.
    let mut rng = Rng::new(1);
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i as u32 + 1) as usize);
    }
    v
}

fn cpu_ce(z: &[f32], labels: &[u32], margins: &[f64], classes: usize) -> f64 {
    let per: Vec<f64> = z
        .chunks(classes)
        .zip(labels)
        .map(|(row, &y)| {
            let shifted: Vec<f64> = row
                .iter()
                .zip(margins)
                .map(|(&v, m)| v as f64 + m)
                .collect();
            -log_softmax(&shifted)[y as usize]
        })
        .collect();
    mean(&per)
}

#[test]
fn balanced_softmax_loss_is_cross_entropy_with_log_count_margins() {
    let g = gpu();
    let mut rng = Rng::new(2);
    let counts = [50, 20, 7, 3];
    let classes = counts.len();
    let labels = long_tail(&counts);
    let n = labels.len();
    let want_margins: Vec<f64> = counts.iter().map(|&c| (c as f64).ln()).collect();
    let got = log_counts(&g, &labels, classes)
        .unwrap()
        .to_f32_vec()
        .unwrap();
    for c in 0..classes {
        assert!(
            (got[c] as f64 - want_margins[c]).abs() < 1e-6,
            "log count {c}"
        );
    }
    let z = rng.vec(n * classes);
    let zt = Var::constant(Tensor::from_f32(&g, &[n, classes], &z).unwrap());
    let lt = Tensor::from_u32(&g, &[n], &labels).unwrap();
    let bs = Baseline::balanced_softmax(&g, &labels, classes).unwrap();
    let ce = Baseline::cross_entropy();
    let got_bs = bs.loss(&zt, &lt).unwrap().value().item().unwrap() as f64;
    let got_ce = ce.loss(&zt, &lt).unwrap().value().item().unwrap() as f64;
    let want_bs = cpu_ce(&z, &labels, &want_margins, classes);
    let want_ce = cpu_ce(&z, &labels, &[0.0; 4], classes);
    assert!(
        (got_bs - want_bs).abs() < 1e-5 * want_bs,
        "{got_bs} vs {want_bs}"
    );
    assert!(
        (got_ce - want_ce).abs() < 1e-5 * want_ce,
        "{got_ce} vs {want_ce}"
    );
    assert!((want_bs - want_ce).abs() > 0.1, "the margins matter here");
}

/// From equal logits (a fresh head), cross-entropy's gradient in the biases is 1/C - p_c
/// (p_c the class shares): the first SGD step raises the head's bias and lowers the tail's.
/// Balanced Softmax's is softmax(log n)_c - p_c = 0: the prior stays out of the classifier.
#[test]
fn balanced_softmax_keeps_the_prior_out_of_the_biases() {
    let g = gpu();
    let counts = [50, 20, 7, 3];
    let classes = counts.len();
    let labels = long_tail(&counts);
    let n = labels.len();
    let lt = Tensor::from_u32(&g, &[n], &labels).unwrap();
    let bias_grad = |method: &Baseline| -> Vec<f32> {
        let b = Var::leaf(
            Tensor::zeros(&g, &[classes], dynloss_wgpu::DType::F32),
            true,
        );
        let zeros = Var::constant(Tensor::zeros(&g, &[n, classes], dynloss_wgpu::DType::F32));
        let logits = ag::add(&zeros, &b).unwrap();
        let loss = method.loss(&logits, &lt).unwrap();
        ag::backward(&loss, &[&b]).unwrap()[0]
            .as_ref()
            .unwrap()
            .to_f32_vec()
            .unwrap()
    };
    let ce = bias_grad(&Baseline::cross_entropy());
    let bs = bias_grad(&Baseline::balanced_softmax(&g, &labels, classes).unwrap());
    for c in 0..classes {
        let p = counts[c] as f64 / n as f64;
        assert!(
            (ce[c] as f64 - (0.25 - p)).abs() < 1e-6,
            "CE bias gradient {c}"
        );
        assert!(
            (bs[c] as f64).abs() < 1e-6,
            "BS bias gradient {c}: {}",
            bs[c]
        );
    }
    assert!(ce[0] < 0.0 && ce[classes - 1] > 0.0);
}

/// Whole runs of `--method ce` and `--method bs` on a long-tailed slice of the built-in data
/// (same seed, model and schedule): on the balanced test set, Balanced Softmax predicts the
/// tail half of the classes more often than cross-entropy, and the head class less often.
#[test]
fn balanced_softmax_runs_predict_the_tail_more_often_than_cross_entropy() {
    let g = gpu();
    let root = TempDir::new("bs");
    let model = root.0.join("tiny.toml");
    std::fs::write(&model, "family = \"vgg\"\nlayers = [8, \"M\", 16]\n").unwrap();
    let run = |method: Method| {
        let cfg = TrainConfig {
            method,
            model: model.to_string_lossy().into_owned(),
            imbalance: 20.0,
            epochs: 3,
            batch_size: 32,
            lr: 0.05,
            lr_warmup_epochs: 0,
            image_size: Some(12),
            augment: View::Weak,
            train_limit: Some(640),
            test_limit: Some(400),
            ..TrainConfig::default()
        };
        let out = root.0.join(format!("{method:?}"));
        let opts = RunOptions {
            out: out.clone(),
            resume: false,
            stop_after: None,
            progress: Some(false),
            verbose: false,
            stop: None,
        };
        train::train(&g, &cfg, &opts).unwrap();
        let (_, test) = train::data::load_sets(&cfg).unwrap();
        train::evaluate::evaluate_checkpoint_on(&g, &out.join("checkpoint.safetensors"), test)
            .unwrap()
            .predicted
    };
    let ce = run(Method::Ce);
    let bs = run(Method::Bs);
    println!("predictions per class: ce {ce:?}, bs {bs:?}");
    let tail = |p: &[usize]| p[p.len() / 2..].iter().sum::<usize>();
    assert!(
        tail(&bs) > tail(&ce),
        "tail predictions: bs {} vs ce {}",
        tail(&bs),
        tail(&ce)
    );
    assert!(
        bs[0] < ce[0],
        "head predictions: bs {} vs ce {}",
        bs[0],
        ce[0]
    );
}
