// Deterministic sums over chosen axes (no atomics: every output has one fixed summation order).
//
// The host merges adjacent axes so any reduction over a rank<=4 tensor becomes the canonical
// shape [R0, K0, R1, K1]: sum over r0 < R0 and r1 < R1, keep (k0, k1); element
// (r0, k0, r1, k1) sits at ((r0*K0 + k0)*R1 + r1)*K1 + k1 and output k0*K1 + k1.
// Dispatch geometry:
// - reduce_tree:  one workgroup of 256 invocations per output (grid folded to 2-D past 65535
//                 outputs); each invocation sums a strided slice, then a shared-memory tree.
//                 For long reductions.
// - reduce_small: one invocation per output, 256 per workgroup, sequential sum. For short
//                 reductions over many outputs (e.g. a row sum of [50000, 10]).
// Both scale the sum by `scale` (1 for sum, 1/count for mean).

struct Params {
    r0: u32,
    k0: u32,
    r1: u32,
    k1: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 256>;

// Sum of the reduced elements with linear reduced index r = r0 * R1 + r1 in [first, total)
// stepping by `step`, for output (k0, k1).
fn strided_sum(k0: u32, k1: u32, first: u32, step: u32) -> f32 {
    var s = 0.0;
    if p.r1 >= step || p.r0 == 1u {
        // Walk r1 inside each r0: no division in the loop.
        for (var r0 = 0u; r0 < p.r0; r0++) {
            let row = (r0 * p.k0 + k0) * p.r1;
            for (var r1 = first; r1 < p.r1; r1 += step) {
                s += src[(row + r1) * p.k1 + k1];
            }
        }
    } else {
        let total = p.r0 * p.r1;
        for (var r = first; r < total; r += step) {
            let r0 = r / p.r1;
            let r1 = r % p.r1;
            s += src[((r0 * p.k0 + k0) * p.r1 + r1) * p.k1 + k1];
        }
    }
    return s;
}

@compute @workgroup_size(256)
fn reduce_tree(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = gid.y * nwg.x + gid.x;
    let outputs = p.k0 * p.k1;
    // The whole workgroup shares `o`, so this guard keeps the barriers below uniform.
    if o >= outputs {
        return;
    }
    let k0 = o / p.k1;
    let k1 = o % p.k1;
    partial[lid.x] = strided_sum(k0, k1, lid.x, 256u);
    workgroupBarrier();
    for (var width = 128u; width > 0u; width >>= 1u) {
        if lid.x < width {
            partial[lid.x] += partial[lid.x + width];
        }
        workgroupBarrier();
    }
    if lid.x == 0u {
        out[o] = partial[0] * p.scale;
    }
}

@compute @workgroup_size(256)
fn reduce_small(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = (gid.y * nwg.x + gid.x) * 256u + lid.x;
    if o >= p.k0 * p.k1 {
        return;
    }
    out[o] = strided_sum(o / p.k1, o % p.k1, 0u, 1u) * p.scale;
}
