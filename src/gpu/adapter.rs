//! Finding and choosing a wgpu adapter across every backend, and describing it.

use crate::error::{Error, Result};

/// How the user asked for a GPU: flags first, then `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`.
#[derive(Debug, Clone, Default)]
pub struct AdapterRequest {
    /// Comma list of backends (vulkan, metal, dx12, gl); `None` means all.
    pub backend: Option<String>,
    /// Case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// Convolution algorithm; `None` keeps `DYNLOSS_CONV` or auto.
    pub conv: Option<super::ConvAlgo>,
    /// Kernel shape; `None` keeps `DYNLOSS_TILING` or the adapter type's.
    pub tiling: Option<super::Tiling>,
}

/// The limits the kernels rely on, with the minimum each needs: WebGPU's defaults, which every
/// kernel fits (tests/kernel_limits.rs checks each kernel's reflected needs against them), and
/// which every WebGPU implementation offers.
pub const REQUIRED_LIMITS: &[(&str, u64)] = &[
    ("max_compute_invocations_per_workgroup", 256),
    ("max_compute_workgroup_size_x", 256),
    ("max_compute_workgroup_storage_size", 16384),
    ("max_compute_workgroups_per_dimension", 65535),
    ("max_storage_buffers_per_shader_stage", 8),
    ("max_storage_buffer_binding_size", 128 << 20),
    ("max_uniform_buffer_binding_size", 256),
    ("max_dynamic_uniform_buffers_per_pipeline_layout", 1),
];

/// The limits a device is requested with: WebGPU's defaults for everything a kernel's shape
/// decides (buffers per stage, workgroup size and memory, ...), so that a kernel over them
/// fails in CI as it would on the weakest adapter; lowered to the adapter's own values only
/// for limits the kernels do not use (textures, vertices: GL adapters may lack the defaults
/// there; [`unusable_reason`] already refused adapters below the kernels' needs). Two limits
/// are raised to the adapter's own: the buffer size and the storage binding size. They bound
/// the data (batch size times image size), not the kernels: a GPU that binds more runs larger
/// batches, and a tensor above the limit is refused by `Gpu::dispatch` with an error naming
/// the kernel and the size. (Mesa's CPU drivers bind 128 MiB, the WebGPU default, so CI
/// runs with the default here too.)
pub fn device_limits(adapter: &wgpu::Adapter) -> wgpu::Limits {
    let own = adapter.limits();
    wgpu::Limits {
        max_buffer_size: own.max_buffer_size,
        max_storage_buffer_binding_size: own.max_storage_buffer_binding_size,
        ..wgpu::Limits::default().or_worse_values_from(&own)
    }
}

/// Reads one of the [`REQUIRED_LIMITS`] by name.
pub fn limit_value(l: &wgpu::Limits, name: &str) -> u64 {
    match name {
        "max_compute_invocations_per_workgroup" => l.max_compute_invocations_per_workgroup as u64,
        "max_compute_workgroup_size_x" => l.max_compute_workgroup_size_x as u64,
        "max_compute_workgroup_storage_size" => l.max_compute_workgroup_storage_size as u64,
        "max_compute_workgroups_per_dimension" => l.max_compute_workgroups_per_dimension as u64,
        "max_storage_buffers_per_shader_stage" => l.max_storage_buffers_per_shader_stage as u64,
        "max_storage_buffer_binding_size" => l.max_storage_buffer_binding_size,
        "max_uniform_buffer_binding_size" => l.max_uniform_buffer_binding_size,
        "max_dynamic_uniform_buffers_per_pipeline_layout" => {
            l.max_dynamic_uniform_buffers_per_pipeline_layout as u64
        }
        _ => 0,
    }
}

impl AdapterRequest {
    /// The backends to search: the flag, else `WGPU_BACKEND`, else all.
    pub fn backends(&self) -> Result<wgpu::Backends> {
        let text = self
            .backend
            .clone()
            .or_else(|| std::env::var("WGPU_BACKEND").ok());
        match text {
            None => Ok(wgpu::Backends::all()),
            Some(t) => {
                let b = wgpu::Backends::from_comma_list(&t);
                if b.is_empty() {
                    Err(Error::Config(format!(
                        "unknown backend '{t}' (use vulkan, metal, dx12 or gl, comma separated)"
                    )))
                } else {
                    Ok(b)
                }
            }
        }
    }

    /// The adapter-name filter: the flag, else `WGPU_ADAPTER_NAME`.
    pub fn name_filter(&self) -> Option<String> {
        self.adapter
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.trim().is_empty())
    }
}

/// A new wgpu instance over the requested backends.
pub fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu finds on `backends`.
pub fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let inst = instance(backends);
    pollster::block_on(inst.enumerate_adapters(backends))
}

/// Why `adapter` cannot run the kernels, if it cannot.
pub fn unusable_reason(adapter: &wgpu::Adapter) -> Option<String> {
    let limits = adapter.limits();
    let short: Vec<String> = REQUIRED_LIMITS
        .iter()
        .filter(|(name, min)| limit_value(&limits, name) < *min)
        .map(|(name, min)| format!("{name} = {} < {min}", limit_value(&limits, name)))
        .collect();
    let caps = adapter.get_downlevel_capabilities();
    if !caps.flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS) {
        return Some("no compute shaders".into());
    }
    (!short.is_empty()).then(|| short.join(", "))
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    // Native APIs before GL: GL compute is the least tested path.
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    }
}

/// Picks the best usable adapter for `req`, or says what was tried.
pub fn select(req: &AdapterRequest) -> Result<wgpu::Adapter> {
    let backends = req.backends()?;
    let filter = req.name_filter();
    let found = enumerate(backends);
    let mut rejected = Vec::new();
    let mut usable: Vec<wgpu::Adapter> = Vec::new();
    for a in found {
        let info = a.get_info();
        if let Some(f) = &filter
            && !info.name.to_lowercase().contains(&f.to_lowercase())
        {
            rejected.push(format!(
                "{} ({:?}): name does not match '{f}'",
                info.name, info.backend
            ));
            continue;
        }
        match unusable_reason(&a) {
            Some(why) => rejected.push(format!("{} ({:?}): {why}", info.name, info.backend)),
            None => usable.push(a),
        }
    }
    usable.sort_by_key(|a| {
        let i = a.get_info();
        (type_rank(i.device_type), backend_rank(i.backend))
    });
    if let Some(a) = usable.into_iter().next() {
        let info = a.get_info();
        if info.backend == wgpu::Backend::Gl && backends.contains(wgpu::Backends::VULKAN) {
            // Asked for any backend and Vulkan gave nothing usable: say so, since GL is
            // slower and a missing Vulkan driver is usually an installation slip.
            eprintln!(
                "warning: no usable Vulkan adapter found; using OpenGL ({}) instead",
                info.name
            );
        }
        return Ok(a);
    }
    let mut tried = format!("searched backends [{}]", backend_names(backends));
    if let Some(f) = &filter {
        tried.push_str(&format!(" for a name containing '{f}'"));
    }
    if rejected.is_empty() {
        tried.push_str(", found no adapter");
    } else {
        tried.push_str(&format!(", rejected: {}", rejected.join("; ")));
    }
    Err(Error::NoAdapter {
        tried,
        hint: driver_hint().into(),
    })
}

/// The platform's advice for getting a driver.
pub fn driver_hint() -> &'static str {
    if cfg!(target_os = "linux") {
        "Install a Vulkan driver: your GPU vendor's, or Mesa's CPU driver lavapipe \
         (`sudo apt-get install mesa-vulkan-drivers` on Debian/Ubuntu), then run `dynloss-wgpu info`."
    } else if cfg!(target_os = "macos") {
        "Metal needs macOS 10.13+ on a Mac with a Metal-capable GPU."
    } else if cfg!(target_os = "windows") {
        "Update your GPU driver (DX12 or Vulkan), or install WARP via the Windows graphics tools."
    } else {
        "Install a Vulkan, Metal, DX12 or OpenGL ES 3.1 driver."
    }
}

/// Backend names in a set, comma separated.
pub fn backend_names(b: wgpu::Backends) -> String {
    let all = [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::GL, "gl"),
    ];
    all.iter()
        .filter(|(f, _)| b.contains(*f))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A multi-line description of one adapter: identity, driver, limits and features.
pub fn describe(adapter: &wgpu::Adapter) -> String {
    let i = adapter.get_info();
    let l = adapter.limits();
    let mut s = format!(
        "{} [{:?}, {:?}]\n  driver: {} {}\n  vendor 0x{:04x} device 0x{:04x}\n",
        i.name, i.backend, i.device_type, i.driver, i.driver_info, i.vendor, i.device
    );
    for (name, min) in REQUIRED_LIMITS {
        let v = limit_value(&l, name);
        let mark = if v >= *min { "ok" } else { "TOO SMALL" };
        s.push_str(&format!("  {name}: {v} (need {min}, {mark})\n"));
    }
    s.push_str(&format!(
        "  max_buffer_size: {}\n  min_uniform_buffer_offset_alignment: {}\n",
        l.max_buffer_size, l.min_uniform_buffer_offset_alignment
    ));
    let f = adapter.features();
    let interesting = [
        (wgpu::Features::SHADER_F16, "shader-f16"),
        (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
        (wgpu::Features::SUBGROUP, "subgroup"),
    ];
    let has: Vec<&str> = interesting
        .iter()
        .filter(|(x, _)| f.contains(*x))
        .map(|(_, n)| *n)
        .collect();
    s.push_str(&format!(
        "  optional features: {} (none required)\n",
        if has.is_empty() {
            "none".to_string()
        } else {
            has.join(", ")
        }
    ));
    match unusable_reason(adapter) {
        None => s.push_str("  usable: yes\n"),
        Some(w) => s.push_str(&format!("  usable: no ({w})\n")),
    }
    s
}
