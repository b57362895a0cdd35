//! Every shader parses and validates with naga, and every entry point's bindings are
//! reflected in the form the runtime expects (params uniform at 0, storage buffers after).

use dynloss_wgpu::gpu::shaders::{BindingKind, SHADERS, entry_bindings, validate};

#[test]
fn every_shader_validates_with_naga() {
    for (name, src) in SHADERS {
        let (module, info) = validate(name, src).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !module.entry_points.is_empty(),
            "{name}.wgsl has no entry point"
        );
        for ep in &module.entry_points {
            assert_eq!(ep.stage, naga::ShaderStage::Compute, "{name}:{}", ep.name);
            let b = entry_bindings(&module, &info, &ep.name).expect("entry exists");
            for (i, (binding, kind)) in b.iter().enumerate() {
                if *kind == BindingKind::Params {
                    assert_eq!(
                        *binding, 0,
                        "{name}:{} params must sit at binding 0",
                        ep.name
                    );
                    assert_eq!(i, 0);
                }
            }
            let storage = b.iter().filter(|(_, k)| *k != BindingKind::Params).count();
            assert!(
                storage <= 8,
                "{name}:{} binds {storage} storage buffers (max 8)",
                ep.name
            );
        }
    }
}

#[test]
fn validation_rejects_a_broken_shader() {
    let bad = "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }";
    assert!(validate("bad", bad).is_err());
}

/// naga does not enforce WGSL's uniformity rule for barriers; check the source by hand: a
/// `workgroupBarrier` may not sit inside a branch or loop whose condition mentions a
/// per-invocation value (local or global invocation id).
#[test]
fn barriers_sit_in_uniform_control_flow() {
    for (name, src) in SHADERS {
        let mut stack: Vec<bool> = Vec::new(); // per open brace: is the condition non-uniform?
        for (ln, line) in src.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let t = code.trim_start();
            let opens_branch = t.starts_with("if ")
                || t.starts_with("for ")
                || t.starts_with("while ")
                || t.starts_with("} else");
            let varying = ["lid", "local_invocation", "global_invocation"]
                .iter()
                .any(|v| t.contains(v));
            if t.contains("workgroupBarrier") {
                assert!(
                    !stack.iter().any(|&v| v),
                    "{name}.wgsl:{}: workgroupBarrier inside invocation-dependent control flow",
                    ln + 1
                );
            }
            for ch in code.chars() {
                match ch {
                    '{' => stack.push(opens_branch && varying),
                    '}' => {
                        stack.pop();
                    }
                    _ => {}
                }
            }
        }
    }
}
