//! `data stats`: validation of the data configuration, the printed table and the chart.
//! (Parsing of the flags is tested beside them, in the binary's `cli::data`.)

mod common;

use common::TempDir;
use std::path::PathBuf;

use dynloss_wgpu::data::report::{stats_chart, stats_text};
use dynloss_wgpu::data::{self, DataConfig, DatasetKind, NoiseType, check_config};

#[test]
fn bad_data_settings_are_refused_by_name() {
    let bad = |c: DataConfig| check_config(&c).unwrap_err().to_string();
    let base = DataConfig::default();
    assert!(check_config(&base).is_ok());
    assert!(
        bad(DataConfig {
            imbalance: 0.5,
            ..base.clone()
        })
        .contains("imbalance")
    );
    assert!(
        bad(DataConfig {
            noise: 1.5,
            ..base.clone()
        })
        .contains("noise rate")
    );
    let asym100 = DataConfig {
        dataset: DatasetKind::Cifar100,
        noise: 0.2,
        noise_type: NoiseType::Asym,
        ..base.clone()
    };
    assert!(bad(asym100).contains("asymmetric"));
    // The same flips on CIFAR-10 are what asym means.
    assert!(
        check_config(&DataConfig {
            dataset: DatasetKind::Cifar10,
            noise: 0.2,
            noise_type: NoiseType::Asym,
            ..base
        })
        .is_ok()
    );
}

#[test]
fn stats_table_and_chart_on_the_builtin_set() {
    let tmp = TempDir::new("stats");
    let out = std::env::var("DYNLOSS_PREVIEW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.0.clone())
        .join("data_stats.png");
    let cfg = DataConfig {
        imbalance: 10.0,
        noise: 0.4,
        seed: 1,
        ..DataConfig::default()
    };
    let (train, test) = data::load(&cfg).unwrap();
    let text = stats_text(&cfg, &train, &test);
    println!("{text}");
    assert!(text.contains("training samples: 8169"), "{text}");
    assert!(text.contains("test samples: 5000"), "{text}");
    assert!(text.contains("   0  disk"), "{text}");
    assert!(text.contains("realised"), "{text}");
    assert_eq!(text.lines().count(), 5 + 10);
    stats_chart(&out, &cfg, &train).unwrap();
    let img = image::open(&out).unwrap();
    assert!(img.width() >= 600);

    // A missing data set is one clear error, not a panic.
    let missing = DataConfig {
        dataset: DatasetKind::Cifar10,
        data_dir: Some(tmp.0.join("nothing-here")),
        ..DataConfig::default()
    };
    let msg = data::load(&missing).unwrap_err().to_string();
    assert!(
        msg.contains("data_batch_1.bin") && msg.contains("not found"),
        "{msg}"
    );
}
