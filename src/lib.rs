//! dynloss-wgpu: robust training on long-tailed, mislabelled image data with the Dynamic Loss
//! method, on any GPU wgpu can drive, with hand-written WGSL kernels.
//!
//! Data flows one way: `gpu` (device, buffers, kernels) <- `tensor` (shapes and op launches).

pub mod autograd;
pub mod bench;
pub mod choice;
pub mod data;
pub mod dynloss;
pub mod error;
pub mod gpu;
pub mod nn;
pub mod optim;
pub mod probe;
pub mod report;
pub mod sweep;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
