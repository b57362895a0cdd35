//! The Dynamic Loss algorithm (docs/method.md): the meta net (label corrector and margin
//! generator), the virtual step and the meta gradient through it, and the loss ranks with the
//! hierarchical sampling of the meta set. It knows nothing of loaders, checkpoints or the
//! epoch loop; `train::methods::dynamic_loss` runs it as a training method.

pub mod meta_net;
pub mod meta_step;
pub mod ranking;
