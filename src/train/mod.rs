//! Training: the settings, the classifier being trained, the data set-up, the epoch loop and
//! the methods it runs (the baselines and the Dynamic Loss), evaluation, and the run's state
//! on disk (checkpoints, metrics, summary).
//!
//! Dependencies point one way: `run` (the loop) uses the methods (`methods::baseline`,
//! `methods::dynamic_loss`), which use `method`, `classifier` and `data`; `state` writes and reads what
//! those own; `evaluate` rebuilds a checkpoint's classifier through `state` and
//! `classifier`, and `relabel` and `audit` use it.

pub mod accuracy;
pub mod audit;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod method;
pub mod methods;
pub mod metrics;
pub mod relabel;
pub mod run;
pub mod run_dir;
pub mod state;

pub use checkpoint::Checkpoint;
pub use classifier::Classifier;
pub use config::{DlConfig, LrSchedule, Method, TrainConfig};
pub use run::{RunOptions, Summary, train};
