//! Every pipeline the launchers can create (the kernel registry, which every launch is
//! checked against), specialised with its override constants and written in each back end's
//! shader language: SPIR-V (Vulkan), MSL 2.0 (Metal), HLSL shader model 6.0 (DX12) and
//! GLSL ES 3.10 compute (GL / GLES). Only Vulkan and GL run in CI; this is what shows that
//! the Metal and DX12 paths can at least compile every kernel.
//!
//! Options mirror what wgpu-hal passes each back end (resource slots numbered per kind, a
//! sizes buffer for runtime-sized arrays on Metal), in both runtime modes: the default with
//! wgpu's injected checks off, and `DYNLOSS_SHADER_CHECKS=1` with bounds checks on.
//!
//! Where Khronos' tools are installed (`.ci/install-vulkan.sh` installs them), the SPIR-V is
//! also checked by `spirv-val` and the GLSL ES compiled by `glslangValidator`, so naga's
//! output, not only naga's acceptance, is tested for those two; MSL and HLSL have no
//! compiler on Linux.

use std::collections::BTreeMap;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use dynloss_wgpu::gpu::shaders::{self, SHADERS};
use dynloss_wgpu::tensor::kernels;
use naga::back::{glsl, hlsl, msl, spv};
use naga::proc::{BoundsCheckPolicies, BoundsCheckPolicy};
use naga::valid::ModuleInfo;
use naga::{AddressSpace, Module, ResourceBinding, ShaderStage, TypeInner};

/// A back end and the language version it is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Spirv,
    Msl,
    Hlsl,
    GlslEs,
}

const BACKENDS: [Backend; 4] = [Backend::Spirv, Backend::Msl, Backend::Hlsl, Backend::GlslEs];

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Spirv => "SPIR-V 1.0 (Vulkan)",
            // The oldest Metal Shading Language wgpu selects (macOS 10.13 / iOS 11).
            Backend::Msl => "MSL 2.0 (Metal)",
            Backend::Hlsl => "HLSL shader model 6.0 (DX12)",
            Backend::GlslEs => "GLSL ES 3.10 (GL)",
        }
    }
}

/// What kind of resource one binding is, for numbering slots the way wgpu-hal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Res {
    Uniform,
    Storage { read_only: bool },
    Texture,
    StorageTexture,
    Sampler,
}

/// The bindings the (single) entry point of a specialised module uses, by binding order.
fn resources(module: &Module, info: &ModuleInfo) -> Vec<(ResourceBinding, Res)> {
    let fi = info.get_entry_point(0);
    let mut out: Vec<(ResourceBinding, Res)> = module
        .global_variables
        .iter()
        .filter(|(h, _)| !fi[*h].is_empty())
        .filter_map(|(_, v)| {
            let rb = v.binding?;
            let res = match v.space {
                AddressSpace::Uniform => Res::Uniform,
                AddressSpace::Storage { access } => Res::Storage {
                    read_only: !access.contains(naga::StorageAccess::STORE),
                },
                AddressSpace::Handle => match module.types[v.ty].inner {
                    TypeInner::Sampler { .. } => Res::Sampler,
                    TypeInner::Image {
                        class: naga::ImageClass::Storage { .. },
                        ..
                    } => Res::StorageTexture,
                    _ => Res::Texture,
                },
                _ => return None,
            };
            Some((rb, res))
        })
        .collect();
    out.sort_by_key(|(rb, _)| (rb.group, rb.binding));
    out
}

/// What a back end produced: text, or SPIR-V words.
enum Output {
    Text(String),
    Words(Vec<u32>),
}

/// Writes the entry point of a specialised module in `backend`'s language; returns the
/// output or the writer's error.
fn write(
    module: &Module,
    info: &ModuleInfo,
    entry: &str,
    backend: Backend,
    checked: bool,
) -> Result<Output, String> {
    // wgpu-hal: ReadZeroSkipWrite everywhere when runtime checks are on, else Unchecked.
    let policy = if checked {
        BoundsCheckPolicy::ReadZeroSkipWrite
    } else {
        BoundsCheckPolicy::Unchecked
    };
    let policies = BoundsCheckPolicies {
        index: policy,
        buffer: policy,
        image_load: policy,
        binding_array: BoundsCheckPolicy::Unchecked,
    };
    let res = resources(module, info);
    match backend {
        Backend::Spirv => {
            let options = spv::Options {
                bounds_check_policies: policies,
                force_loop_bounding: checked,
                emit_int_div_checks: checked,
                zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
                ..Default::default()
            };
            let pipeline = spv::PipelineOptions {
                shader_stage: ShaderStage::Compute,
                entry_point: entry.into(),
            };
            let words = spv::write_vec(module, info, &options, Some(&pipeline))
                .map_err(|e| e.to_string())?;
            if words.first() != Some(&0x0723_0203) {
                return Err("output lacks the SPIR-V magic number".into());
            }
            Ok(Output::Words(words))
        }
        Backend::Msl => {
            let mut ep = msl::EntryPointResources::default();
            let (mut buffers, mut textures, mut samplers) = (0u8, 0u8, 0u8);
            let mut runtime_sized = false;
            for (rb, r) in &res {
                let mut target = msl::BindTarget::default();
                match r {
                    Res::Uniform | Res::Storage { .. } => {
                        target.buffer = Some(buffers);
                        buffers += 1;
                        if let Res::Storage { read_only } = r {
                            target.mutable = !read_only;
                            runtime_sized = true;
                        }
                    }
                    Res::Texture | Res::StorageTexture => {
                        target.texture = Some(textures);
                        target.mutable = *r == Res::StorageTexture;
                        textures += 1;
                    }
                    Res::Sampler => {
                        target.sampler = Some(msl::BindSamplerTarget::Resource(samplers));
                        samplers += 1;
                    }
                }
                ep.resources.insert(*rb, target);
            }
            // wgpu-hal reserves the next buffer slot for array lengths whenever a storage
            // buffer is bound.
            if runtime_sized {
                ep.sizes_buffer = Some(buffers);
            }
            let options = msl::Options {
                lang_version: (2, 0),
                per_entry_point_map: BTreeMap::from([(entry.to_string(), ep)]),
                fake_missing_bindings: false,
                bounds_check_policies: policies,
                zero_initialize_workgroup_memory: false,
                force_loop_bounding: checked,
                emit_int_div_checks: checked,
                ..Default::default()
            };
            let pipeline = msl::PipelineOptions {
                entry_point: Some((ShaderStage::Compute, entry.into())),
                ..Default::default()
            };
            let (text, tinfo) =
                msl::write_string(module, info, &options, &pipeline).map_err(|e| e.to_string())?;
            // Per-entry failures (a missing binding) are reported here, not as an Err.
            for r in &tinfo.entry_point_names {
                r.as_ref().map_err(|e| e.to_string())?;
            }
            Ok(Output::Text(text))
        }
        Backend::Hlsl => {
            let mut map = hlsl::BindingMap::new();
            let (mut b, mut t, mut u, mut s) = (0u32, 0u32, 0u32, 0u32);
            for (rb, r) in &res {
                // Registers numbered per class (b: constant buffers, t: read-only views,
                // u: writable views, s: samplers), as the DX12 root signature does.
                let counter = match r {
                    Res::Uniform => &mut b,
                    Res::Storage { read_only: true } | Res::Texture => &mut t,
                    Res::Storage { read_only: false } | Res::StorageTexture => &mut u,
                    Res::Sampler => &mut s,
                };
                map.insert(
                    *rb,
                    hlsl::BindTarget {
                        space: 0,
                        register: *counter,
                        binding_array_size: None,
                        dynamic_storage_buffer_offsets_index: None,
                        restrict_indexing: true,
                    },
                );
                *counter += 1;
            }
            let options = hlsl::Options {
                shader_model: hlsl::ShaderModel::V6_0,
                binding_map: map,
                fake_missing_bindings: false,
                zero_initialize_workgroup_memory: false,
                force_loop_bounding: checked,
                ..Default::default()
            };
            let pipeline = hlsl::PipelineOptions {
                entry_point: Some((ShaderStage::Compute, entry.into())),
            };
            let mut text = String::new();
            hlsl::Writer::new(&mut text, &options, &pipeline)
                .write(module, info, None)
                .map_err(|e| e.to_string())?;
            Ok(Output::Text(text))
        }
        Backend::GlslEs => {
            let mut map = glsl::BindingMap::default();
            let mut counters = [0u8; 5];
            for (rb, r) in &res {
                // Slots numbered per kind, as wgpu-hal's GL pipeline layout does.
                let kind = match r {
                    Res::Uniform => 0,
                    Res::Storage { .. } => 1,
                    Res::Texture => 2,
                    Res::StorageTexture => 3,
                    Res::Sampler => 4,
                };
                map.insert(*rb, counters[kind]);
                counters[kind] += 1;
            }
            let options = glsl::Options {
                version: glsl::Version::new_gles(310),
                writer_flags: glsl::WriterFlags::empty(),
                binding_map: map,
                zero_initialize_workgroup_memory: false,
            };
            let pipeline = glsl::PipelineOptions {
                shader_stage: ShaderStage::Compute,
                entry_point: entry.into(),
                multiview: None,
            };
            let mut text = String::new();
            glsl::Writer::new(&mut text, module, info, &options, &pipeline, policies)
                .and_then(|mut w| w.write())
                .map_err(|e| e.to_string())?;
            Ok(Output::Text(text))
        }
    }
}

/// The workgroup size as each text back end declares it, to check that the override
/// constants reached the output.
fn declares_workgroup_size(backend: Backend, out: &Output, [x, y, z]: [u32; 3]) -> bool {
    match (backend, out) {
        (Backend::Hlsl, Output::Text(t)) => t.contains(&format!("[numthreads({x}, {y}, {z})]")),
        (Backend::GlslEs, Output::Text(t)) => t.contains(&format!(
            "layout(local_size_x = {x}, local_size_y = {y}, local_size_z = {z}) in;"
        )),
        // MSL takes it from the pipeline; SPIR-V must start with its magic number.
        (Backend::Msl, Output::Text(_)) => true,
        (Backend::Spirv, Output::Words(w)) => w.first() == Some(&0x0723_0203),
        _ => false,
    }
}

/// Whether `tool` runs here.
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Outputs waiting for Khronos' validators where installed: SPIR-V files for `spirv-val`
/// (cheap, run one by one) and GLSL ES files for `glslangValidator` (about 0.1 s to start, so
/// all are compiled in one run).
struct Validation {
    dir: PathBuf,
    files: Vec<(PathBuf, Backend, String)>,
}

impl Validation {
    fn new(label: &str) -> Validation {
        let dir =
            std::env::temp_dir().join(format!("dynloss-shaders-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Validation {
            dir,
            files: Vec::new(),
        }
    }

    /// Keeps `out` for validation under the description `what`.
    fn add(&mut self, backend: Backend, out: &Output, what: String) {
        let n = self.files.len();
        let (path, bytes) = match (backend, out) {
            (Backend::Spirv, Output::Words(w)) => (
                self.dir.join(format!("{n}.spv")),
                w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
            ),
            (Backend::GlslEs, Output::Text(t)) => {
                (self.dir.join(format!("{n}.comp")), t.clone().into_bytes())
            }
            _ => return,
        };
        std::fs::write(&path, bytes).unwrap();
        self.files.push((path, backend, what));
    }

    /// Runs the validators that are installed; one message per rejected output.
    fn run(self) -> Vec<String> {
        let mut failures = Vec::new();
        if have("spirv-val") {
            for (path, _, what) in self.files.iter().filter(|f| f.1 == Backend::Spirv) {
                let out = Command::new("spirv-val")
                    .args(["--target-env", "vulkan1.0"])
                    .arg(path)
                    .output()
                    .unwrap();
                if !out.status.success() {
                    failures.push(format!(
                        "{what}: spirv-val rejects the output: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
        let glsl: Vec<&(PathBuf, Backend, String)> = self
            .files
            .iter()
            .filter(|f| f.1 == Backend::GlslEs)
            .collect();
        if have("glslangValidator") && !glsl.is_empty() {
            let out = Command::new("glslangValidator")
                .args(glsl.iter().map(|f| &f.0))
                .output()
                .unwrap();
            // It prints each file's name, then that file's errors.
            let text = String::from_utf8_lossy(&out.stdout);
            let mut current: Option<&str> = None;
            let mut errors: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for line in text.lines() {
                if let Some(f) = glsl.iter().find(|f| f.0.to_string_lossy() == line) {
                    current = Some(f.2.as_str());
                } else if line.starts_with("ERROR") {
                    errors.entry(current.unwrap_or("?")).or_default().push(line);
                }
            }
            for (what, lines) in errors {
                failures.push(format!(
                    "{what}: glslangValidator rejects the output: {}",
                    lines.join(" / ")
                ));
            }
            if failures.is_empty() && !out.status.success() {
                failures.push(format!("glslangValidator failed: {text}"));
            }
        }
        std::fs::remove_dir_all(&self.dir).ok();
        failures
    }
}

/// Specialises entry `entry` of `src` with `constants` and writes it for every back end in
/// both runtime modes; returns one message per failure, naming module, entry point,
/// constants and back end.
fn translate_everywhere(
    name: &str,
    src: &str,
    entry: &str,
    constants: &[(&'static str, f64)],
    validation: &mut Validation,
) -> Vec<String> {
    let what = format!("{name}.wgsl entry '{entry}' constants {constants:?}");
    let (module, info) = match shaders::specialise(name, src, entry, constants) {
        Ok(m) => m,
        Err(e) => return vec![format!("{what}: specialisation failed: {e}")],
    };
    let size = module.entry_points[0].workgroup_size;
    let mut failures = Vec::new();
    for backend in BACKENDS {
        for checked in [false, true] {
            let mode = if checked { "checked" } else { "unchecked" };
            match write(&module, &info, entry, backend, checked) {
                Ok(out) if declares_workgroup_size(backend, &out, size) => {
                    validation.add(
                        backend,
                        &out,
                        format!("{what} on {} ({mode})", backend.name()),
                    );
                }
                Ok(_) => failures.push(format!(
                    "{what} on {} ({mode}): output does not declare workgroup size {size:?}",
                    backend.name()
                )),
                Err(e) => failures.push(format!("{what} on {} ({mode}): {e}", backend.name())),
            }
        }
    }
    failures
}

#[test]
fn every_kernel_variant_translates_to_every_backend() {
    for tool in ["spirv-val", "glslangValidator"] {
        if !have(tool) {
            eprintln!("{tool} not installed: its language is translated but not validated");
        }
    }
    let all = kernels::all();
    let mut failures = Vec::new();
    let mut validation = Validation::new("all");
    for v in &all {
        let src = shaders::source(v.shader).expect("registered family has a source");
        failures.extend(translate_everywhere(
            v.shader,
            src,
            v.entry,
            &v.constants,
            &mut validation,
        ));
    }
    failures.extend(validation.run());
    assert!(
        failures.is_empty(),
        "{} of {} translations failed:\n{}",
        failures.len(),
        all.len() * BACKENDS.len() * 2,
        failures.join("\n")
    );
}

/// The registry covers every entry point of every shader file, and names only real ones, so
/// no kernel in shaders/ escapes translation.
#[test]
fn registry_covers_every_entry_point() {
    let all = kernels::all();
    for (name, src) in SHADERS {
        let (module, _) = shaders::validate(name, src).unwrap();
        for ep in &module.entry_points {
            assert!(
                all.iter().any(|v| v.shader == *name && v.entry == ep.name),
                "{name}.wgsl entry '{}' is in no launcher's kernels()",
                ep.name
            );
        }
    }
    for v in &all {
        assert!(
            shaders::source(v.shader).is_some(),
            "registry names unknown family {}",
            v.shader
        );
    }
}

/// A construct valid WGSL but beyond one back end (GLSL ES has no texture-level query):
/// the harness must fail, and only for that back end, naming it.
#[test]
fn a_construct_one_backend_lacks_fails_naming_it() {
    let src = "
        @group(0) @binding(0) var t: texture_2d<f32>;
        @group(0) @binding(1) var<storage, read_write> out: array<u32>;
        @compute @workgroup_size(64)
        fn levels() { out[0] = textureNumLevels(t); }
    ";
    let mut validation = Validation::new("broken");
    let mut failures = translate_everywhere("broken", src, "levels", &[], &mut validation);
    failures.extend(validation.run());
    assert_eq!(failures.len(), 2, "{failures:#?}"); // GLSL ES, checked and unchecked
    for f in &failures {
        assert!(
            f.starts_with("broken.wgsl entry 'levels' constants [] on GLSL ES 3.10 (GL)"),
            "{f}"
        );
    }
    eprintln!("{}", failures[0]);
}

/// Override constants reach the output: the same entry with two workgroup shapes declares
/// each shape, and an unknown constant is refused.
#[test]
fn constants_are_applied_and_checked() {
    let src = "
        override WX: u32 = 1u;
        @group(0) @binding(0) var<storage, read_write> out: array<u32>;
        @compute @workgroup_size(WX, 256u / WX)
        fn k(@builtin(local_invocation_index) i: u32) { out[i] = WX; }
    ";
    let mut validation = Validation::new("wx");
    assert!(translate_everywhere("wx", src, "k", &[("WX", 4.0)], &mut validation).is_empty());
    assert!(validation.run().is_empty());
    let (m, _) = shaders::specialise("wx", src, "k", &[("WX", 16.0)]).unwrap();
    assert_eq!(m.entry_points[0].workgroup_size, [16, 16, 1]);
    let bad = translate_everywhere("wx", src, "k", &[("WY", 4.0)], &mut Validation::new("wy"));
    assert_eq!(bad.len(), 1);
    assert!(bad[0].contains("specialisation failed"), "{}", bad[0]);
}

/// The external validators, where installed, reject bad output and name what it was.
#[test]
fn validators_reject_bad_output() {
    let mut v = Validation::new("bad");
    let glsl = "#version 310 es\nlayout(local_size_x = 1) in;\nvoid main() { int x = 1.5; }\n";
    v.add(
        Backend::GlslEs,
        &Output::Text(glsl.into()),
        "bad glsl".into(),
    );
    // A SPIR-V header with no capabilities or memory model.
    v.add(
        Backend::Spirv,
        &Output::Words(vec![0x0723_0203, 0x0001_0000, 0, 1, 0]),
        "bad spirv".into(),
    );
    let failures = v.run();
    let expect = [
        ("glslangValidator", "bad glsl: glslangValidator rejects"),
        ("spirv-val", "bad spirv: spirv-val rejects"),
    ];
    for (tool, prefix) in expect {
        if have(tool) {
            assert!(
                failures.iter().any(|f| f.starts_with(prefix)),
                "{tool}: {failures:?}"
            );
        } else {
            eprintln!("{tool} not installed: not checked");
        }
    }
}

/// Every kernel launch goes through `tensor::launch` / `launch_noted`, which check the
/// registry: no other file calls `Gpu::dispatch` directly, so no kernel can bypass the list
/// this file translates.
#[test]
fn every_dispatch_goes_through_the_registry_check() {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for dir in ["src", "benches"] {
        rust_files(std::path::Path::new(dir), &mut files);
    }
    let allowed = ["src/gpu/dispatch.rs", "src/tensor/mod.rs"];
    let mut launchers = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let calls = text.matches(".dispatch(").count() + text.matches(".dispatch_noted(").count();
        if allowed.iter().any(|a| f.ends_with(a)) {
            launchers += calls;
            continue;
        }
        assert_eq!(
            calls,
            0,
            "{} dispatches without the registry check",
            f.display()
        );
    }
    // The check sees the real calls: tensor::launch and launch_noted.
    assert!(
        launchers >= 2,
        "found {launchers} dispatch calls in the allowed files"
    );
}
