//! The Dynamic Loss: label corrector, margin generator and the bi-level meta update
//! (../shared/spec/dynamic-loss.md).

pub mod meta_net;
pub mod meta_step;
pub mod ranking;
pub mod trainer;
