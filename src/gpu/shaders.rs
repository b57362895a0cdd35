//! The WGSL sources, one file per kernel family, compiled into the binary.

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
