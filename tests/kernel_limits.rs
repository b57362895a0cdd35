//! Every kernel fits WebGPU's default limits (what the weakest adapter offers), read from
//! naga's reflection of each specialised pipeline: storage and uniform buffers per stage (the
//! pipeline layout the runtime builds from the same reflection), workgroup size and
//! invocations, workgroup memory. The device is requested with those limits, and a tensor
//! too large to bind is refused with an error naming the kernel, not a crash.

mod common;

use common::gpu;
use dynloss_wgpu::gpu::adapter::{REQUIRED_LIMITS, limit_value};
use dynloss_wgpu::gpu::shaders::{self, KernelNeeds};
use dynloss_wgpu::tensor::conv::{ConvGeom, MAX_STRIDE, conv2d};
use dynloss_wgpu::tensor::elementwise::fill;
use dynloss_wgpu::tensor::kernels;
use dynloss_wgpu::{DType, Error, Tensor};

#[test]
fn every_kernel_fits_the_webgpu_default_limits() {
    let defaults = wgpu::Limits::default();
    let all = kernels::all();
    let needs = kernels::needs_of(&all).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    for (v, n) in all.iter().zip(&needs) {
        for unmet in n.unmet(&defaults) {
            failures.push(format!("{v}: {unmet}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The reflection sees what the kernels declare: the tiled matmul's and convolution's two
    // 16 x 65-word operand tiles (8,320 B) are the largest workgroup memory, the batch-norm backward_apply binds 8 storage
    // buffers (exactly the default), and the weight gradient's override-sized workgroups
    // reach 256 invocations along either axis.
    let max = needs.iter().fold(KernelNeeds::default(), |a, b| a.max(*b));
    assert_eq!(max.workgroup_bytes, 2 * 16 * 65 * 4, "{max:?}");
    assert_eq!(max.invocations, 256, "{max:?}");
    assert_eq!(max.workgroup_size, [256, 256, 1], "{max:?}");
    assert_eq!(max.storage_buffers, 8, "{max:?}");
    assert_eq!(max.dynamic_uniform_buffers, 1, "{max:?}");
    eprintln!("largest needs over {} kernels: {max:?}", all.len());
}

/// The adapter check (`REQUIRED_LIMITS`) asks for no more than WebGPU's defaults and at least
/// what the kernels need, so an adapter it accepts runs every kernel.
#[test]
fn required_limits_lie_between_the_kernels_needs_and_the_defaults() {
    let defaults = wgpu::Limits::default();
    let max = kernels::max_needs().unwrap();
    for (name, min) in REQUIRED_LIMITS {
        let default = limit_value(&defaults, name);
        assert!(
            *min <= default,
            "{name}: requires {min} > default {default}"
        );
        if let Some((_, need, _)) = max.against(&defaults).iter().find(|(n, ..)| n == name) {
            assert!(need <= min, "{name}: kernels need {need} > required {min}");
        }
    }
}

/// The reflection is not blind: kernels over each limit are reported, naming the limit.
#[test]
fn needs_over_the_defaults_are_reported() {
    let defaults = wgpu::Limits::default();
    let check = |src: &str| {
        let (m, i) = shaders::specialise("big", src, "k", &[]).unwrap();
        shaders::needs(&m, &i, "k").unwrap().unmet(&defaults)
    };
    let wide = check("@compute @workgroup_size(512) fn k() {}");
    assert_eq!(wide.len(), 2, "{wide:?}"); // size x and invocations
    assert!(wide[0].starts_with("max_compute_workgroup_size_x: needs 512 > 256"));
    let memory = check(
        "var<workgroup> tile: array<vec4<f32>, 1025>;
         @compute @workgroup_size(64) fn k() { tile[0] = vec4(1.0); }",
    );
    assert_eq!(
        memory,
        ["max_compute_workgroup_storage_size: needs 16400 > 16384"]
    );
    let mut many = String::new();
    for b in 0..9 {
        many.push_str(&format!(
            "@group(0) @binding({b}) var<storage, read_write> s{b}: array<f32>;\n"
        ));
    }
    many.push_str("@compute @workgroup_size(1) fn k() {");
    for b in 0..9 {
        many.push_str(&format!("s{b}[0] = 1.0;"));
    }
    many.push('}');
    assert_eq!(
        check(&many),
        ["max_storage_buffers_per_shader_stage: needs 9 > 8"]
    );
}

/// The device gets WebGPU's defaults for what the kernels use, not the adapter's own limits
/// (lavapipe offers 48 storage buffers, 1024 invocations and 32 KiB of workgroup memory), so
/// a kernel over the defaults fails here as it would on the weakest adapter; only the data
/// limits (buffer and binding size) are the adapter's.
#[test]
fn the_device_is_requested_with_the_default_limits() {
    let g = gpu();
    let got = g.device().limits();
    let want = wgpu::Limits::default();
    let data_limits = ["max_storage_buffer_binding_size"];
    for (name, _) in REQUIRED_LIMITS {
        if data_limits.contains(name) {
            continue;
        }
        assert_eq!(
            limit_value(&got, name),
            limit_value(&want, name),
            "{name} on {}",
            g.info().name
        );
    }
    assert_eq!(got.max_storage_buffers_per_shader_stage, 8);
    assert_eq!(got.max_compute_invocations_per_workgroup, 256);
    assert_eq!(got.max_compute_workgroup_storage_size, 16384);
    assert_eq!(got.max_compute_workgroup_size_y, 256);
    assert!(got.max_storage_buffer_binding_size >= want.max_storage_buffer_binding_size);
    assert!(got.max_buffer_size >= got.max_storage_buffer_binding_size);
}

/// A tensor above the device's storage binding limit (128 MiB on Mesa's CPU drivers) is
/// refused when a kernel would bind it, with an error naming the kernel and the size, instead
/// of a wgpu validation panic.
#[test]
fn binding_a_tensor_over_the_binding_limit_is_a_clear_error() {
    let g = gpu();
    let limit = g.device().limits().max_storage_buffer_binding_size;
    if limit > 1 << 30 {
        // A real GPU binding gigabytes: too large to allocate twice in a test.
        eprintln!("skipped: {} binds {limit} bytes", g.info().name);
        return;
    }
    let n = (limit / 4 + 1) as usize;
    let big = Tensor::empty(&g, &[n], DType::F32);
    let err = fill(&big, 1.0).expect_err("a tensor over the limit was bound");
    assert!(matches!(err, Error::Device(_)), "{err:?}");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("elementwise:fill"), "{msg}");
    assert!(msg.contains(&format!("a {}-byte tensor", n * 4)), "{msg}");
    assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}");
    drop(big);
    // One exactly at the limit still runs.
    let ok = Tensor::empty(&g, &[(limit / 4) as usize], DType::F32);
    fill(&ok, 1.0).unwrap();
    g.sync().unwrap();
}

/// Strides outside the compiled set are refused with a shape error, not an unknown kernel.
#[test]
fn conv_strides_beyond_the_compiled_set_are_refused() {
    let g = gpu();
    let x = Tensor::zeros(&g, &[1, 1, 12, 12], DType::F32);
    let w = Tensor::zeros(&g, &[1, 1, 3, 3], DType::F32);
    let ok = conv2d(
        &x,
        &w,
        ConvGeom {
            stride: MAX_STRIDE,
            pad: 1,
        },
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
    let err = conv2d(
        &x,
        &w,
        ConvGeom {
            stride: MAX_STRIDE + 1,
            pad: 1,
        },
    )
    .expect_err("stride above the compiled set");
    assert!(matches!(err, Error::Shape { op: "conv2d", .. }), "{err:?}");
}

/// `info` names the selected adapter's backend, says whether every kernel's needs are met and
/// reports the compile times.
#[test]
fn info_reports_backend_needs_and_compile_time() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynloss-wgpu"))
        .arg("info")
        .output()
        .expect("run dynloss-wgpu info");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let selected = text
        .split("\nselected: ")
        .nth(1)
        .expect("a selected adapter");
    let backend = format!("{:?}", gpu().info().backend);
    assert!(
        selected.contains(&format!("  backend: {backend}\n")),
        "{selected}"
    );
    assert!(
        selected.contains("  every kernel's needs met: yes\n"),
        "{selected}"
    );
    let n = kernels::all().len();
    assert!(
        selected.contains(&format!("  pipelines: all {n} created in ")),
        "{selected}"
    );
    assert!(
        selected.contains("  first-dispatch compile time: "),
        "{selected}"
    );
}
