//! Typed kernel parameters: host structs that mirror each shader's uniform `Params` struct
//! (binding 0) field by field, so a launcher fills named fields instead of positional words.

/// A `#[repr(C)]` host struct mirroring the uniform parameter struct of one shader family.
///
/// Implemented by the `kernel_params!` macro, which also derives `Pod`, so the struct has no
/// hidden padding: WGSL padding appears as explicit fields.
pub trait KernelParams: bytemuck::Pod + std::fmt::Debug {
    /// Shader family (file name without `.wgsl`) whose parameters this struct mirrors.
    const SHADER: &'static str;
    /// Name of the WGSL struct it mirrors.
    const WGSL_STRUCT: &'static str;
    /// Name of the host struct.
    const NAME: &'static str;
    /// Host fields as (name, byte offset), in declaration order.
    const FIELDS: &'static [(&'static str, usize)];
}

/// The host side of one parameter struct, for checking it against naga's layout of the WGSL.
#[derive(Debug, Clone, Copy)]
pub struct ParamLayout {
    /// Shader family.
    pub shader: &'static str,
    /// Name of the WGSL struct.
    pub wgsl_struct: &'static str,
    /// Name of the host struct.
    pub host_struct: &'static str,
    /// `size_of` the host struct.
    pub size: usize,
    /// Host fields as (name, byte offset), in declaration order.
    pub fields: &'static [(&'static str, usize)],
}

impl ParamLayout {
    /// The layout of host struct `P`.
    pub const fn of<P: KernelParams>() -> ParamLayout {
        ParamLayout {
            shader: P::SHADER,
            wgsl_struct: P::WGSL_STRUCT,
            host_struct: P::NAME,
            size: size_of::<P>(),
            fields: P::FIELDS,
        }
    }
}

/// Declares a host parameter struct mirroring a WGSL struct:
/// `struct Name for shader::WgslStruct { field: type, ... }`. Fields keep the WGSL names;
/// `u32`/`f32` for scalars, `[u32; 4]` for `vec4<u32>`.
macro_rules! kernel_params {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident for $shader:ident :: $wgsl:ident {
            $($field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($field: $ty),*
        }

        impl $crate::gpu::KernelParams for $name {
            const SHADER: &'static str = stringify!($shader);
            const WGSL_STRUCT: &'static str = stringify!($wgsl);
            const NAME: &'static str = stringify!($name);
            const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($field), std::mem::offset_of!($name, $field))),*];
        }
    };
}
pub(crate) use kernel_params;
