//! The `data` subcommands and the data flags shared with `eval`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use dynloss_wgpu::Result;
use dynloss_wgpu::choice::Choice;
use dynloss_wgpu::data::fetch::{self, FetchName, MIRROR_ENV};
use dynloss_wgpu::data::report::{preview_grid, stats_chart, stats_text};
use dynloss_wgpu::data::{
    DEFAULT_DATA_DIR, DataConfig, DatasetKind, NoiseType, check_config, load,
};

use super::choice;

/// Flags choosing and shaping the data, declared once for every command that reads a data
/// set (`train`, `eval`, `data stats`, `data preview`); each unset flag keeps the value of
/// the base it is applied to (the defaults, a config file, or a run's own settings).
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct DataFlags {
    /// Data set
    #[arg(long, value_parser = choice::<DatasetKind>())]
    pub dataset: Option<DatasetKind>,
    /// Folder holding the data set's files [default: data; Fashion-MNIST also looks in
    /// /usr/share/datasets/fashion-mnist]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Long-tail imbalance ratio rho (largest / smallest class); 1 keeps the set balanced
    #[arg(long, allow_negative_numbers = true)]
    pub imbalance: Option<f64>,
    /// Label-noise rate lambda in [0, 1]
    #[arg(long, allow_negative_numbers = true)]
    pub noise: Option<f64>,
    /// Noise model: lt (the paper's long-tail noise), sym (uniform), asym (CIFAR-10 flips)
    #[arg(long, value_parser = choice::<NoiseType>())]
    pub noise_type: Option<NoiseType>,
    /// Seed of everything random (the long tail, the noise, the built-in images; in training
    /// also the initial weights, the order and the augmentations)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Resize images to this side in pixels [default: native; 32 for folder and list]
    #[arg(long)]
    pub image_size: Option<usize>,
}

impl DataFlags {
    /// `base` with the flags that were given applied.
    pub fn over(&self, base: DataConfig) -> DataConfig {
        DataConfig {
            dataset: self.dataset.unwrap_or(base.dataset),
            data_dir: self.data_dir.clone().or(base.data_dir),
            imbalance: self.imbalance.unwrap_or(base.imbalance),
            noise: self.noise.unwrap_or(base.noise),
            noise_type: self.noise_type.unwrap_or(base.noise_type),
            seed: self.seed.unwrap_or(base.seed),
            image_size: self.image_size.or(base.image_size),
        }
    }

    /// The data configuration of the flags over the library's defaults, validated.
    pub fn to_config(&self) -> Result<DataConfig> {
        let cfg = self.over(DataConfig::default());
        check_config(&cfg)?;
        Ok(cfg)
    }
}

/// The `data` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum DataCommand {
    /// Download a data set from its official address, verify its checksums and unpack it.
    Fetch {
        /// Which data set.
        #[arg(value_parser = choice::<FetchName>())]
        name: FetchName,
        /// Folder to put it in.
        #[arg(long, default_value = DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Download from this base (http(s) URL, file:// URL or folder) instead of the
        /// official address; checksums are still verified.
        #[arg(long, env = MIRROR_ENV)]
        mirror: Option<String>,
    },
    /// Print per-class counts (true and noisy) and realised noise rates of the training set
    /// the data flags build, and draw them as a bar chart.
    Stats {
        /// The data set and how to long-tail and corrupt it.
        #[command(flatten)]
        flags: DataFlags,
        /// Where to write the bar chart (PNG).
        #[arg(long, default_value = "data_stats.png")]
        out: PathBuf,
    },
    /// Draw the first training images of every class (by given label) as a grid PNG.
    Preview {
        /// The data set and how to long-tail and corrupt it.
        #[command(flatten)]
        flags: DataFlags,
        /// Images per class (one row per class).
        #[arg(long, default_value_t = 12)]
        per_class: usize,
        /// Where to write the grid (PNG).
        #[arg(long, default_value = "data_preview.png")]
        out: PathBuf,
    },
}

/// Runs a `data` subcommand, printing its results to stdout.
pub fn run(cmd: &DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch {
            name,
            data_dir,
            mirror,
        } => {
            let mirror = mirror.as_deref().filter(|m| !m.is_empty());
            let from = mirror.unwrap_or("the official address");
            println!(
                "fetching {} from {from} into {}",
                name.name(),
                data_dir.display()
            );
            let dir = fetch::fetch(*name, data_dir, mirror)?;
            println!("ready: {}", dir.display());
            Ok(())
        }
        DataCommand::Stats { flags, out } => {
            let cfg = flags.to_config()?;
            let (train, test) = load(&cfg)?;
            print!("{}", stats_text(&cfg, &train, &test));
            stats_chart(out, &cfg, &train)?;
            println!("chart: {}", out.display());
            Ok(())
        }
        DataCommand::Preview {
            flags,
            per_class,
            out,
        } => {
            let cfg = flags.to_config()?;
            let (train, _) = load(&cfg)?;
            preview_grid(out, &train.data, *per_class)?;
            println!("preview: {}", out.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The `data` command alone.
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: DataCommand,
    }

    #[test]
    fn flags_parse_into_the_data_config() {
        let args = [
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
        ];
        let Cli {
            cmd: DataCommand::Stats { flags, out },
        } = Cli::try_parse_from(args).unwrap()
        else {
            panic!("not stats")
        };
        assert_eq!(out, PathBuf::from("s.png"));
        let cfg = flags.to_config().unwrap();
        assert_eq!(cfg.dataset, DatasetKind::FashionMnist);
        assert_eq!((cfg.imbalance, cfg.noise, cfg.seed), (100.0, 0.2, 3));
        assert_eq!(cfg.noise_type, NoiseType::Sym);

        // No flags: the library's defaults.
        let Cli {
            cmd: DataCommand::Stats { flags, out },
        } = Cli::try_parse_from(["x", "stats"]).unwrap()
        else {
            panic!("not stats")
        };
        assert_eq!(out, PathBuf::from("data_stats.png"));
        assert_eq!(flags.to_config().unwrap(), DataConfig::default());

        let args = [
            "x",
            "fetch",
            "cifar100",
            "--data-dir",
            "d",
            "--mirror",
            "http://127.0.0.1:1/",
        ];
        let Cli {
            cmd:
                DataCommand::Fetch {
                    name,
                    data_dir,
                    mirror,
                },
        } = Cli::try_parse_from(args).unwrap()
        else {
            panic!("not fetch")
        };
        assert_eq!(name, FetchName::Cifar100);
        assert_eq!(data_dir, PathBuf::from("d"));
        assert_eq!(mirror.as_deref(), Some("http://127.0.0.1:1/"));

        assert!(Cli::try_parse_from(["x", "fetch", "imagenet"]).is_err());
        assert!(Cli::try_parse_from(["x", "stats", "--noise-type", "pair"]).is_err());
        // Validation happens in the library and names the setting.
        let flags = DataFlags {
            imbalance: Some(0.5),
            ..flags
        };
        assert!(
            flags
                .to_config()
                .unwrap_err()
                .to_string()
                .contains("imbalance")
        );
    }
}
