//! The WGSL sources, one file per kernel family, compiled into the binary; their validation,
//! specialisation and reflection; and `KernelVariant`, one pipeline named without its
//! parameter type.

use std::fmt;

use super::{Gpu, Kernel, KernelParams};
use crate::error::Result;

/// Every shader file: (family name, WGSL source).
pub const SHADERS: &[(&str, &str)] = &[
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    ("batchnorm", include_str!("../../shaders/batchnorm.wgsl")),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("pool", include_str!("../../shaders/pool.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("sort", include_str!("../../shaders/sort.wgsl")),
    ("index", include_str!("../../shaders/index.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("winograd", include_str!("../../shaders/winograd.wgsl")),
    ("finite", include_str!("../../shaders/finite.wgsl")),
];

/// The WGSL source of family `name`.
pub fn source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Parses and validates WGSL with naga; returns the module and its validation info.
pub fn validate(name: &str, src: &str) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(src)
        .map_err(|e| format!("{name}.wgsl: {}", e.emit_to_string(src)))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| format!("{name}.wgsl: {}", e.emit_to_string(src)))?;
    Ok((module, info))
}

/// Kind of one resource binding an entry point uses (all in bind group 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// The per-dispatch parameter block (uniform, dynamic offset).
    Params,
    /// A storage buffer only read.
    ReadOnly,
    /// A storage buffer written.
    ReadWrite,
}

/// The bindings (binding index, kind) that entry point `entry` of a validated module uses,
/// sorted by binding index. Read from naga's reflection so layouts never drift from the WGSL.
pub fn entry_bindings(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
) -> Option<Vec<(u32, BindingKind)>> {
    let idx = module.entry_points.iter().position(|e| e.name == entry)?;
    let fi = info.get_entry_point(idx);
    let mut out = Vec::new();
    for (h, var) in module.global_variables.iter() {
        if fi[h].is_empty() {
            continue;
        }
        let Some(rb) = &var.binding else { continue };
        let kind = match var.space {
            naga::AddressSpace::Uniform => BindingKind::Params,
            naga::AddressSpace::Storage { access } => {
                if access.contains(naga::StorageAccess::STORE) {
                    BindingKind::ReadWrite
                } else {
                    BindingKind::ReadOnly
                }
            }
            _ => continue,
        };
        out.push((rb.binding, kind));
    }
    out.sort_by_key(|b| b.0);
    Some(out)
}

/// Bytes of the module's uniform parameter struct as naga lays it out (WGSL's uniform layout
/// rules), or `None` when the module has no uniform or naga cannot lay it out.
pub fn params_size(module: &naga::Module) -> Option<u32> {
    let var = module
        .global_variables
        .iter()
        .map(|(_, v)| v)
        .find(|v| v.space == naga::AddressSpace::Uniform)?;
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).ok()?;
    Some(layouter[var.ty].size)
}

/// `src` validated, with `constants` substituted for its `override` declarations and only
/// entry point `entry` kept: the module a driver receives for one pipeline.
pub fn specialise(
    name: &str,
    src: &str,
    entry: &str,
    constants: &[(&str, f64)],
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let (module, info) = validate(name, src)?;
    specialise_parsed(name, &module, &info, entry, constants)
}

/// [`specialise`] for a module already parsed and validated by [`validate`].
pub fn specialise_parsed(
    name: &str,
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
    constants: &[(&str, f64)],
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let stage = module
        .entry_points
        .iter()
        .find(|e| e.name == entry)
        .map(|e| e.stage)
        .ok_or_else(|| format!("{name}.wgsl has no entry point '{entry}'"))?;
    let values: naga::back::PipelineConstants =
        constants.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    let (m, i) = naga::back::pipeline_constants::process_overrides(
        module,
        info,
        Some((stage, entry)),
        &values,
    )
    .map_err(|e| format!("{name}.wgsl entry '{entry}' constants {constants:?}: {e}"))?;
    Ok((m.into_owned(), i.into_owned()))
}

/// What one entry point asks of the device, read from naga's reflection of a specialised
/// module: the quantities WebGPU limits per pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelNeeds {
    /// Storage buffers bound (`max_storage_buffers_per_shader_stage`).
    pub storage_buffers: u32,
    /// Uniform buffers bound (`max_uniform_buffers_per_shader_stage`).
    pub uniform_buffers: u32,
    /// Uniform buffers with a dynamic offset (the parameter block, one per dispatch slot).
    pub dynamic_uniform_buffers: u32,
    /// Workgroup size x, y, z (`max_compute_workgroup_size_x/y/z`).
    pub workgroup_size: [u32; 3],
    /// Invocations per workgroup (`max_compute_invocations_per_workgroup`).
    pub invocations: u32,
    /// Workgroup memory in bytes, each variable rounded up to 16 as WebGPU counts it
    /// (`max_compute_workgroup_storage_size`).
    pub workgroup_bytes: u32,
    /// Bytes of the uniform parameter block (`max_uniform_buffer_binding_size`).
    pub uniform_bytes: u32,
}

impl KernelNeeds {
    /// The larger of each need in `self` and `other`.
    pub fn max(self, other: KernelNeeds) -> KernelNeeds {
        let ws = |i: usize| self.workgroup_size[i].max(other.workgroup_size[i]);
        KernelNeeds {
            storage_buffers: self.storage_buffers.max(other.storage_buffers),
            uniform_buffers: self.uniform_buffers.max(other.uniform_buffers),
            dynamic_uniform_buffers: self
                .dynamic_uniform_buffers
                .max(other.dynamic_uniform_buffers),
            workgroup_size: [ws(0), ws(1), ws(2)],
            invocations: self.invocations.max(other.invocations),
            workgroup_bytes: self.workgroup_bytes.max(other.workgroup_bytes),
            uniform_bytes: self.uniform_bytes.max(other.uniform_bytes),
        }
    }

    /// Each need paired with the limit it is checked against, by the limit's name.
    pub fn against(&self, l: &wgpu::Limits) -> Vec<(&'static str, u64, u64)> {
        vec![
            (
                "max_storage_buffers_per_shader_stage",
                self.storage_buffers as u64,
                l.max_storage_buffers_per_shader_stage as u64,
            ),
            (
                "max_uniform_buffers_per_shader_stage",
                self.uniform_buffers as u64,
                l.max_uniform_buffers_per_shader_stage as u64,
            ),
            (
                "max_dynamic_uniform_buffers_per_pipeline_layout",
                self.dynamic_uniform_buffers as u64,
                l.max_dynamic_uniform_buffers_per_pipeline_layout as u64,
            ),
            (
                "max_compute_workgroup_size_x",
                self.workgroup_size[0] as u64,
                l.max_compute_workgroup_size_x as u64,
            ),
            (
                "max_compute_workgroup_size_y",
                self.workgroup_size[1] as u64,
                l.max_compute_workgroup_size_y as u64,
            ),
            (
                "max_compute_workgroup_size_z",
                self.workgroup_size[2] as u64,
                l.max_compute_workgroup_size_z as u64,
            ),
            (
                "max_compute_invocations_per_workgroup",
                self.invocations as u64,
                l.max_compute_invocations_per_workgroup as u64,
            ),
            (
                "max_compute_workgroup_storage_size",
                self.workgroup_bytes as u64,
                l.max_compute_workgroup_storage_size as u64,
            ),
            (
                "max_uniform_buffer_binding_size",
                self.uniform_bytes as u64,
                l.max_uniform_buffer_binding_size,
            ),
        ]
    }

    /// The needs `l` does not meet, as `name = need > limit` phrases.
    pub fn unmet(&self, l: &wgpu::Limits) -> Vec<String> {
        self.against(l)
            .into_iter()
            .filter(|(_, need, limit)| need > limit)
            .map(|(name, need, limit)| format!("{name}: needs {need} > {limit}"))
            .collect()
    }
}

/// The needs of entry point `entry` of a specialised module (see [`specialise`]).
pub fn needs(
    module: &naga::Module,
    info: &naga::valid::ModuleInfo,
    entry: &str,
) -> Option<KernelNeeds> {
    let idx = module.entry_points.iter().position(|e| e.name == entry)?;
    let ep = &module.entry_points[idx];
    let bindings = entry_bindings(module, info, entry)?;
    let count = |f: fn(&BindingKind) -> bool| bindings.iter().filter(|(_, k)| f(k)).count() as u32;
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).ok()?;
    let fi = info.get_entry_point(idx);
    let workgroup_bytes = module
        .global_variables
        .iter()
        .filter(|(h, v)| v.space == naga::AddressSpace::WorkGroup && !fi[*h].is_empty())
        .map(|(_, v)| layouter[v.ty].size.next_multiple_of(16))
        .sum();
    let uniforms = count(|k| *k == BindingKind::Params);
    let ws = ep.workgroup_size;
    Some(KernelNeeds {
        storage_buffers: count(|k| *k != BindingKind::Params),
        uniform_buffers: uniforms,
        // The runtime binds every parameter block with a dynamic offset into its arena.
        dynamic_uniform_buffers: uniforms,
        workgroup_size: ws,
        invocations: ws.iter().product(),
        workgroup_bytes,
        uniform_bytes: if uniforms > 0 {
            params_size(module).unwrap_or(0)
        } else {
            0
        },
    })
}

/// One pipeline: shader family, entry point and override constants, without the parameter
/// type (the kernel registry in `tensor::kernels` lists every one the launchers create).
#[derive(Clone)]
pub struct KernelVariant {
    /// Shader family (file name without `.wgsl`).
    pub shader: &'static str,
    /// Entry point in that file.
    pub entry: &'static str,
    /// Values of the file's `override` constants, in the order the launcher passes them.
    pub constants: Vec<(&'static str, f64)>,
    // Compiles the variant with its typed parameter struct (for `info`'s timing).
    prepare: fn(&Gpu, &KernelVariant) -> Result<()>,
}

impl KernelVariant {
    /// The variant `k` names.
    pub(crate) fn of<P: KernelParams>(k: &Kernel<P>) -> KernelVariant {
        KernelVariant {
            shader: k.shader,
            entry: k.entry,
            constants: k.constants.to_vec(),
            prepare: prepare_as::<P>,
        }
    }

    /// A key unique to the variant: `shader:entry:NAME=value:...`.
    pub fn key(&self) -> String {
        key_of(self.shader, self.entry, &self.constants)
    }

    /// Compiles (or finds cached) this variant's pipeline on `gpu` without running it.
    pub fn prepare(&self, gpu: &Gpu) -> Result<()> {
        (self.prepare)(gpu, self)
    }
}

impl fmt::Debug for KernelVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KernelVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.wgsl entry '{}' constants [", self.shader, self.entry)?;
        for (i, (n, v)) in self.constants.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v}")?;
        }
        f.write_str("]")
    }
}

fn prepare_as<P: KernelParams>(gpu: &Gpu, v: &KernelVariant) -> Result<()> {
    gpu.prepare(&Kernel::<P>::with_constants(v.entry, &v.constants))
}

pub(crate) fn key_of(shader: &str, entry: &str, constants: &[(&str, f64)]) -> String {
    let mut key = format!("{shader}:{entry}");
    for (n, v) in constants {
        key.push_str(&format!(":{n}={v}"));
    }
    key
}
