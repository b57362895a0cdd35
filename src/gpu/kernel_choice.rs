//! Which kernels run where there is a choice: the convolution algorithm and the kernels' shape
//! (register blocks per SIMD lane for CPU drivers, workgroup-memory tiles for GPUs). Both are
//! chosen once per device (flag or environment variable) and read by the launchers.

use crate::choice::Choice;
use crate::error::{Error, Result};

/// Which algorithm runs 3x3 stride-1 convolutions (forward and input gradient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvAlgo {
    /// Winograd F(4x4, 3x3) where `bench kernels` found it faster, direct elsewhere.
    #[default]
    Auto,
    /// Always the direct kernels.
    Direct,
    /// Winograd wherever it applies and its buffers fit the device.
    Winograd,
}

impl Choice for ConvAlgo {
    const WHAT: &'static str = "convolution algorithm";
    const ALL: &'static [Self] = &[ConvAlgo::Auto, ConvAlgo::Direct, ConvAlgo::Winograd];

    fn name(self) -> &'static str {
        match self {
            ConvAlgo::Auto => "auto",
            ConvAlgo::Direct => "direct",
            ConvAlgo::Winograd => "winograd",
        }
    }
}

/// How matmul and the direct convolutions spread their work: the choice between the two
/// kernel shapes that suit CPU drivers and GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tiling {
    /// `lanes` on CPU drivers (lavapipe, llvmpipe, SwiftShader, WARP), `workgroup` elsewhere.
    #[default]
    Auto,
    /// Each invocation (one SIMD lane on a CPU driver) computes a large register block from
    /// storage directly: no workgroup memory, no barriers.
    Lanes,
    /// Each workgroup stages tiles of both operands in workgroup memory and its invocations
    /// compute from there: coalesced loads and operand reuse, as GPUs want.
    Workgroup,
}

impl Choice for Tiling {
    const WHAT: &'static str = "kernel tiling";
    const ALL: &'static [Self] = &[Tiling::Auto, Tiling::Lanes, Tiling::Workgroup];

    fn name(self) -> &'static str {
        match self {
            Tiling::Auto => "auto",
            Tiling::Lanes => "lanes",
            Tiling::Workgroup => "workgroup",
        }
    }
}

impl Tiling {
    /// The concrete shape for an adapter of type `device`: `Auto` resolved.
    pub fn resolve(self, device: wgpu::DeviceType) -> Tiling {
        match (self, device) {
            (Tiling::Auto, wgpu::DeviceType::Cpu) => Tiling::Lanes,
            (Tiling::Auto, _) => Tiling::Workgroup,
            (chosen, _) => chosen,
        }
    }
}

/// The value of environment variable `var` parsed as `T`, `None` when unset, or an error
/// naming the variable and the valid values.
pub fn from_env<T: Choice>(var: &str) -> Result<Option<T>> {
    match std::env::var(var) {
        Ok(v) => T::parse_name(&v)
            .map(Some)
            .map_err(|e| Error::Config(format!("{var}: {e}"))),
        Err(_) => Ok(None),
    }
}
