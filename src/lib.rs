//! dynloss-wgpu: robust training on long-tailed, mislabelled image data with the Dynamic Loss
//! method, on any GPU wgpu can drive, with hand-written WGSL kernels.
//!
//! Dependencies point one way (no module uses one that uses it): `gpu` (device, buffers,
//! kernels) <- `tensor` (shapes and op launches) <- `autograd` <- `nn`, `optim` <- `dynloss`
//! (the method's algorithm) <- `train` (the loop, the methods, checkpoints); `report` (files,
//! plots) <- `data` (files to host batches) <- `dynloss`, `train`; `bench` and `probe` measure
//! the layers below `train`.

pub mod autograd;
pub mod bench;
pub mod choice;
pub mod data;
pub mod dynloss;
pub mod error;
pub mod gpu;
pub mod infer;
pub mod labels;
pub mod nn;
pub mod optim;
pub mod probe;
pub mod random;
pub mod report;
pub mod sweep;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
