//! The recipe files in `configs/`: every one parses and validates, for dl and for the
//! baselines that share it, and holds the paper's proportions.

use std::path::PathBuf;

use dynloss_wgpu::data::DatasetKind;
use dynloss_wgpu::train::{LrSchedule, Method, TrainConfig};

fn recipes() -> Vec<(PathBuf, TrainConfig)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        // configs/sweeps/ holds sweep files (grids over these recipes; tests/sweep.rs).
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            assert_eq!(
                p.extension().and_then(|e| e.to_str()),
                Some("toml"),
                "{} is not a TOML recipe",
                p.display()
            );
            let cfg = TrainConfig::from_file(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, cfg)
        })
        .collect()
}

#[test]
fn every_recipe_parses_and_validates_for_every_method() {
    let all = recipes();
    assert!(all.len() >= 3, "{} recipes", all.len());
    for (path, cfg) in all {
        let name = path.display();
        for method in [Method::Dl, Method::Ce, Method::Bs] {
            let c = TrainConfig {
                method,
                ..cfg.clone()
            };
            c.validate()
                .unwrap_or_else(|e| panic!("{name} as --method {method}: {e}"));
        }
        // The paper's proportions.
        assert_eq!(cfg.method, Method::Dl, "{name}");
        assert_eq!(cfg.batch_size, 512, "{name}");
        assert_eq!(cfg.lr, 0.1, "{name}");
        assert_eq!(cfg.dl.warmup_epochs, 5, "{name}");
        assert_eq!(cfg.dl.meta_lr, 3e-3, "{name}");
        assert_eq!((cfg.imbalance, cfg.noise), (100.0, 0.2), "{name}");
        assert_eq!(cfg.lr_schedule(), LrSchedule::Epoch, "{name}");
        assert_eq!(cfg.lr_warmup(), 5, "{name}");
        match cfg.dataset {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => {
                assert_eq!(
                    (cfg.model.as_str(), cfg.epochs),
                    ("resnet32", 325),
                    "{name}"
                )
            }
            DatasetKind::FashionMnist => {
                assert_eq!(
                    (cfg.model.as_str(), cfg.epochs, cfg.seed),
                    ("resnet8", 40, 0)
                )
            }
            other => panic!("{name}: unexpected data set {other}"),
        }
    }
}
