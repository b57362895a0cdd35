//! The data flags and `data stats`: parsing, validation, the printed table and the chart.

mod common;

use common::TempDir;
use std::path::PathBuf;

use clap::Parser;
use dynloss_wgpu::data::cli::{DataCommand, DataFlags, run, stats_chart, stats_text};
use dynloss_wgpu::data::fetch::FetchName;
use dynloss_wgpu::data::{self, DatasetKind, NoiseType};

/// A stand-in for the binary's `data` command.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: DataCommand,
}

#[test]
fn flags_parse_and_validate() {
    let cli = Cli::try_parse_from([
        "x",
        "stats",
        "--dataset",
        "fashion-mnist",
        "--imbalance",
        "100",
        "--noise",
        "0.2",
        "--noise-type",
        "sym",
        "--seed",
        "3",
        "--out",
        "s.png",
    ])
    .unwrap();
    let DataCommand::Stats { flags, out } = cli.cmd else {
        panic!("not stats")
    };
    assert_eq!(out, PathBuf::from("s.png"));
    let cfg = flags.to_config().unwrap();
    assert_eq!(cfg.dataset, DatasetKind::FashionMnist);
    assert_eq!((cfg.imbalance, cfg.noise, cfg.seed), (100.0, 0.2, 3));
    assert_eq!(cfg.noise_type, NoiseType::Sym);

    let Cli { cmd } = Cli::try_parse_from(["x", "stats"]).unwrap();
    let DataCommand::Stats { flags, out } = cmd else {
        panic!()
    };
    assert_eq!(out, PathBuf::from("data_stats.png"));
    assert_eq!(flags.to_config().unwrap(), data::DataConfig::default());

    let Cli { cmd } = Cli::try_parse_from([
        "x",
        "fetch",
        "cifar100",
        "--data-dir",
        "d",
        "--mirror",
        "http://127.0.0.1:1/",
    ])
    .unwrap();
    match cmd {
        DataCommand::Fetch {
            name,
            data_dir,
            mirror,
        } => {
            assert_eq!(name, FetchName::Cifar100);
            assert_eq!(data_dir, PathBuf::from("d"));
            assert_eq!(mirror.as_deref(), Some("http://127.0.0.1:1/"));
        }
        _ => panic!(),
    }
    assert!(Cli::try_parse_from(["x", "fetch", "imagenet"]).is_err());
    assert!(Cli::try_parse_from(["x", "stats", "--noise-type", "pair"]).is_err());

    let bad = |f: DataFlags| f.to_config().unwrap_err().to_string();
    let base = DataFlags {
        dataset: DatasetKind::Builtin,
        data_dir: None,
        imbalance: 1.0,
        noise: 0.0,
        noise_type: NoiseType::Lt,
        seed: 0,
        image_size: None,
    };
    assert!(
        bad(DataFlags {
            imbalance: 0.5,
            ..base.clone()
        })
        .contains("imbalance")
    );
    assert!(
        bad(DataFlags {
            noise: 1.5,
            ..base.clone()
        })
        .contains("noise rate")
    );
    let asym100 = DataFlags {
        dataset: DatasetKind::Cifar100,
        noise: 0.2,
        noise_type: NoiseType::Asym,
        ..base
    };
    assert!(bad(asym100).contains("asymmetric"));
}

#[test]
fn stats_table_and_chart_on_the_builtin_set() {
    let tmp = TempDir::new("stats");
    let out = std::env::var("DYNLOSS_PREVIEW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.0.clone())
        .join("data_stats.png");
    let flags = DataFlags {
        dataset: DatasetKind::Builtin,
        data_dir: None,
        imbalance: 10.0,
        noise: 0.4,
        noise_type: NoiseType::Lt,
        seed: 1,
        image_size: None,
    };
    let cfg = flags.to_config().unwrap();
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

    // The whole subcommand, as the binary runs it.
    let out2 = tmp.0.join("run.png");
    run(&DataCommand::Stats {
        flags,
        out: out2.clone(),
    })
    .unwrap();
    assert!(out2.is_file());

    // A missing data set is one clear error, not a panic.
    let flags = DataFlags {
        dataset: DatasetKind::Cifar10,
        data_dir: Some(tmp.0.join("nothing-here")),
        imbalance: 1.0,
        noise: 0.0,
        noise_type: NoiseType::Lt,
        seed: 0,
        image_size: None,
    };
    let msg = run(&DataCommand::Stats {
        flags,
        out: tmp.0.join("no.png"),
    })
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("data_batch_1.bin") && msg.contains("not found"),
        "{msg}"
    );
}
