// Segmented sort of (segment u32, key f32, value u32) triples by the composite key
// (segment, key, value), all ascending, plus the per-segment rank bins of the sorted order.
//
// The sort is one global bitonic sort over m = max(512, next_pow2(n)) packed elements
// vec4<u32>(segment, ordered key bits, value, 0). Pad elements are all 0xFFFFFFFF, so they
// sort last and `unpack` drops them. Keys are compared as order-preserving u32s (negative:
// !bits, otherwise bits | 0x80000000; every NaN becomes a positive NaN, which sorts last).
// Stage k, step j compares i with i + j (i's bit j clear), ascending where i's bit k is clear.
//
// Dispatch geometry (workgroup index w = gid.y * num_workgroups.x + gid.x; flat invocation
// index = w * 256 + lid.x; grids are folded into 2-D past 65535 workgroups):
// - pack:        1-D over m elements, 256 invocations per workgroup, one element each.
// - local_sort:  m / 512 workgroups of 256 invocations; workgroup w loads elements
//                [512 w, 512 w + 512) into shared memory and runs every stage k = 2..512
//                (all steps j), one compare-exchange per invocation per step.
// - local_merge: m / 512 workgroups of 256 invocations; for one stage k > 512, the steps
//                j = 256..1 of that stage in shared memory.
// - global_step: 1-D over the m / 2 compare-exchange pairs of one step (k, j), j >= 512.
// - unpack:      1-D over n elements: splits the first n sorted elements into the outputs.
// - rank_bins:   1-D over n sorted elements: bin = (k * bins) / (len + 1) for the element at
//                within-segment position k of a segment of length len (u32::MAX when the
//                segment id, length or position is inconsistent with the given ones).

struct Params {
    n: u32,        // real elements
    m: u32,        // padded element count, a power of two >= 512
    k: u32,        // bitonic stage (local_merge, global_step)
    j: u32,        // step within the stage (global_step)
    segments: u32, // rank_bins: entries in seg_start / seg_len
    bins: u32,     // rank_bins: number of bins R
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> seg_in: array<u32>;
@group(0) @binding(2) var<storage, read> key_in: array<u32>; // f32 bits
@group(0) @binding(3) var<storage, read> val_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> elems: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> seg_out: array<u32>;
@group(0) @binding(6) var<storage, read_write> key_out: array<u32>; // f32 bits
@group(0) @binding(7) var<storage, read_write> val_out: array<u32>;
@group(0) @binding(8) var<storage, read> seg_start: array<u32>;
@group(0) @binding(9) var<storage, read> seg_len: array<u32>;
@group(0) @binding(10) var<storage, read_write> bin_out: array<u32>;

const PAD: u32 = 0xFFFFFFFFu;

var<workgroup> tile: array<vec4<u32>, 512>;

fn group_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x + gid.x;
}

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return group_index(gid, nwg) * 256u + lid.x;
}

// f32 bits -> u32 whose unsigned order is the float order (NaN after +inf).
fn order_key(bits: u32) -> u32 {
    if (bits & 0x7FFFFFFFu) > 0x7F800000u {
        return bits | 0x80000000u;
    }
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// Inverse of order_key (NaNs come back positive).
fn unorder_key(o: u32) -> u32 {
    if (o & 0x80000000u) != 0u {
        return o & 0x7FFFFFFFu;
    }
    return ~o;
}

// a > b in (segment, key, value) order.
fn greater(a: vec4<u32>, b: vec4<u32>) -> bool {
    if a.x != b.x {
        return a.x > b.x;
    }
    if a.y != b.y {
        return a.y > b.y;
    }
    return a.z > b.z;
}

// Index of the lower element of pair t in a step of distance j (a power of two).
fn pair_low(t: u32, j: u32) -> u32 {
    return ((t & ~(j - 1u)) << 1u) | (t & (j - 1u));
}

// True when the pair (a at global index i, b at i + j) must be swapped in stage k.
fn out_of_order(a: vec4<u32>, b: vec4<u32>, i: u32, k: u32) -> bool {
    if (i & k) == 0u {
        return greater(a, b);
    }
    return greater(b, a);
}

// One compare-exchange of step (k, j) on the shared tile of the block starting at `base`.
fn exchange_local(t: u32, base: u32, k: u32, j: u32) {
    let i = pair_low(t, j);
    let a = tile[i];
    let b = tile[i + j];
    if out_of_order(a, b, base + i, k) {
        tile[i] = b;
        tile[i + j] = a;
    }
}

@compute @workgroup_size(256)
fn pack(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.m {
        return;
    }
    var e = vec4<u32>(PAD);
    if i < p.n {
        e = vec4<u32>(seg_in[i], order_key(key_in[i]), val_in[i], 0u);
    }
    elems[i] = e;
}

@compute @workgroup_size(256)
fn local_sort(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = group_index(gid, nwg) * 512u;
    // Depends only on the workgroup id, so the barriers below stay in uniform control flow.
    if base >= p.m {
        return;
    }
    let t = lid.x;
    tile[t] = elems[base + t];
    tile[t + 256u] = elems[base + t + 256u];
    workgroupBarrier();
    for (var k = 2u; k <= 512u; k <<= 1u) {
        for (var j = k >> 1u; j > 0u; j >>= 1u) {
            exchange_local(t, base, k, j);
            workgroupBarrier();
        }
    }
    elems[base + t] = tile[t];
    elems[base + t + 256u] = tile[t + 256u];
}

@compute @workgroup_size(256)
fn local_merge(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = group_index(gid, nwg) * 512u;
    // Uniform per workgroup (see local_sort).
    if base >= p.m {
        return;
    }
    let t = lid.x;
    tile[t] = elems[base + t];
    tile[t + 256u] = elems[base + t + 256u];
    workgroupBarrier();
    for (var j = 256u; j > 0u; j >>= 1u) {
        exchange_local(t, base, p.k, j);
        workgroupBarrier();
    }
    elems[base + t] = tile[t];
    elems[base + t + 256u] = tile[t + 256u];
}

@compute @workgroup_size(256)
fn global_step(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = flat_index(gid, nwg, lid);
    if t >= p.m / 2u {
        return;
    }
    let i = pair_low(t, p.j);
    let a = elems[i];
    let b = elems[i + p.j];
    if out_of_order(a, b, i, p.k) {
        elems[i] = b;
        elems[i + p.j] = a;
    }
}

@compute @workgroup_size(256)
fn unpack(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.n {
        return;
    }
    let e = elems[i];
    seg_out[i] = e.x;
    key_out[i] = unorder_key(e.y);
    val_out[i] = e.z;
}

@compute @workgroup_size(256)
fn rank_bins(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.n {
        return;
    }
    let s = seg_in[i];
    var bin = PAD;
    if s < p.segments {
        let start = seg_start[s];
        let len = seg_len[s];
        if len <= p.n && i >= start && i - start < len {
            // The host checks that n * bins fits in u32, so k * bins cannot overflow.
            bin = ((i - start) * p.bins) / (len + 1u);
        }
    }
    bin_out[i] = bin;
}
