//! The training methods the epoch loop runs, each a [`super::method::TrainingMethod`]: the
//! baselines (cross-entropy, Balanced Softmax) and the Dynamic Loss.

pub mod baseline;
pub mod dynamic_loss;
