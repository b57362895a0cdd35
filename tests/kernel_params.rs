//! Every host parameter struct (`tensor::PARAM_STRUCTS`, the structs the launchers bind) matches
//! the WGSL struct it mirrors as naga lays it out: same size, same members at the same offsets.

use std::mem::offset_of;

use dynloss_wgpu::gpu::shaders::SHADERS;
use dynloss_wgpu::gpu::{KernelParams, ParamLayout};
use dynloss_wgpu::tensor::PARAM_STRUCTS;

/// The differences between `host` and the WGSL struct it names, as naga lays that out.
fn mismatches(host: &ParamLayout) -> Vec<String> {
    let Some((_, src)) = SHADERS.iter().find(|(n, _)| *n == host.shader) else {
        return vec![format!("no shader family '{}'", host.shader)];
    };
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{}.wgsl: {}", host.shader, e.emit_to_string(src)));
    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .unwrap_or_else(|e| panic!("{}.wgsl: {e}", host.shader));
    let what = format!(
        "{}.wgsl `{}` vs {}",
        host.shader, host.wgsl_struct, host.host_struct
    );
    let Some((ty, t)) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(host.wgsl_struct))
    else {
        return vec![format!("{what}: no such WGSL struct")];
    };
    let naga::TypeInner::Struct { members, .. } = &t.inner else {
        return vec![format!("{what}: not a struct")];
    };
    let mut out = Vec::new();
    // It must be what binding 0 holds, the uniform the runtime fills.
    let bound = module.global_variables.iter().any(|(_, v)| {
        v.space == naga::AddressSpace::Uniform
            && v.binding
                .as_ref()
                .is_some_and(|b| b.group == 0 && b.binding == 0)
            && v.ty == ty
    });
    if !bound {
        out.push(format!("{what}: not the uniform at group 0, binding 0"));
    }
    let size = layouter[ty].size as usize;
    if size != host.size {
        out.push(format!("{what}: WGSL size {size}, host {}", host.size));
    }
    let wgsl: Vec<(&str, usize)> = members
        .iter()
        .map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize))
        .collect();
    if wgsl != host.fields {
        out.push(format!(
            "{what}: WGSL members {wgsl:?}, host fields {:?}",
            host.fields
        ));
    }
    out
}

#[test]
fn host_param_structs_match_naga_layouts() {
    let bad: Vec<String> = PARAM_STRUCTS.iter().flat_map(mismatches).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn every_shader_family_has_one_param_struct() {
    for (name, _) in SHADERS {
        let n = PARAM_STRUCTS.iter().filter(|p| p.shader == *name).count();
        assert_eq!(n, 1, "{name}.wgsl has {n} host parameter structs");
    }
}

/// batchnorm.wgsl's `Params` with its last field, `chunks`, left out.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[allow(dead_code)] // only the layout matters
struct MissingField {
    n: u32,
    c: u32,
    hw: u32,
    eps: f32,
    momentum: f32,
}

impl KernelParams for MissingField {
    const SHADER: &'static str = "batchnorm";
    const WGSL_STRUCT: &'static str = "Params";
    const NAME: &'static str = "MissingField";
    const FIELDS: &'static [(&'static str, usize)] = &[
        ("n", offset_of!(MissingField, n)),
        ("c", offset_of!(MissingField, c)),
        ("hw", offset_of!(MissingField, hw)),
        ("eps", offset_of!(MissingField, eps)),
        ("momentum", offset_of!(MissingField, momentum)),
    ];
}

/// index.wgsl's `Params` with a field misnamed: the same size, so only the member check sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[allow(dead_code)] // only the layout matters
struct Misnamed {
    rows: u32,
    cols: u32,
    dst_rows: u32,
}

impl KernelParams for Misnamed {
    const SHADER: &'static str = "index";
    const WGSL_STRUCT: &'static str = "Params";
    const NAME: &'static str = "Misnamed";
    const FIELDS: &'static [(&'static str, usize)] = &[
        ("rows", offset_of!(Misnamed, rows)),
        ("cols", offset_of!(Misnamed, cols)),
        ("dst_rows", offset_of!(Misnamed, dst_rows)),
    ];
}

#[test]
fn a_wrong_host_struct_is_caught() {
    let missing = mismatches(&ParamLayout::of::<MissingField>());
    assert!(
        missing.iter().any(|m| m.contains("WGSL size 24, host 20")),
        "{missing:?}"
    );
    let misnamed = mismatches(&ParamLayout::of::<Misnamed>());
    assert!(
        misnamed.len() == 1 && misnamed[0].contains("members"),
        "{misnamed:?}"
    );
}
