// Batch normalisation over NCHW activations, per channel c (M = N*H*W values each).
//
// Dispatch geometry:
// - stats, backward_sums: one workgroup of 256 invocations per channel (grid = (C,1,1));
//   each invocation walks a strided slice of the channel's N*H*W values, then a
//   shared-memory tree combines the 256 partial sums in a fixed order (deterministic).
//   stats writes the batch mean and the biased variance (two passes, for accuracy).
//   backward_sums writes sum(dy) and sum(dy * xhat) for the input gradient.
// - apply: 1-D over all elements (256 per workgroup, grid folded to 2-D), computing
//   y = (x - mean[c]) * rsqrt(var[c] + eps) * gamma[c] + beta[c], then ReLU if RELU is set.
//   Training passes the batch statistics, evaluation the running ones.
// - backward_apply: 1-D like apply,
//   dx = gamma[c] * rstd[c] * (dy - sum_dy[c]/M - xhat * sum_dy_xhat[c]/M).
// - running_update: 1-D over channels, running = (1 - momentum) * running + momentum * batch
//   (the variance unbiased by M / (M - 1), as PyTorch does).

struct Params {
    n: u32,
    c: u32,
    hw: u32,
    eps: f32,
    momentum: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> variance: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;
@group(0) @binding(8) var<storage, read_write> out2: array<f32>;

override RELU: bool = false;

var<workgroup> partial: array<f32, 256>;
var<workgroup> partial2: array<f32, 256>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (gid.y * nwg.x + gid.x) * 256u + lid.x;
}

// Sums partial[] and partial2[] across the workgroup into element 0. Call from uniform flow.
fn tree_sum(t: u32) {
    workgroupBarrier();
    for (var width = 128u; width > 0u; width >>= 1u) {
        if t < width {
            partial[t] += partial[t + width];
            partial2[t] += partial2[t + width];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn stats(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = gid.x;
    let t = lid.x;
    let m = p.n * p.hw;
    // Value j of the channel lives at (j / hw) * C*hw + ch*hw + j % hw; (n, s) below track
    // j = t + 256 k without dividing.
    var s = 0.0;
    var n = t / p.hw;
    var q = t % p.hw;
    for (var j = t; j < m; j += 256u) {
        s += x[(n * p.c + ch) * p.hw + q];
        q += 256u;
        while q >= p.hw {
            q -= p.hw;
            n += 1u;
        }
    }
    partial[t] = s;
    partial2[t] = 0.0;
    tree_sum(t);
    let mu = partial[0] / f32(m);
    workgroupBarrier();
    var v = 0.0;
    n = t / p.hw;
    q = t % p.hw;
    for (var j = t; j < m; j += 256u) {
        let d = x[(n * p.c + ch) * p.hw + q] - mu;
        v += d * d;
        q += 256u;
        while q >= p.hw {
            q -= p.hw;
            n += 1u;
        }
    }
    partial[t] = v;
    tree_sum(t);
    if t == 0u {
        out[ch] = mu;
        out2[ch] = partial[0] / f32(m);
    }
}

@compute @workgroup_size(256)
fn apply(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.n * p.c * p.hw {
        return;
    }
    let ch = (i / p.hw) % p.c;
    var y = (x[i] - mean[ch]) * inverseSqrt(variance[ch] + p.eps) * gamma[ch] + beta[ch];
    if RELU {
        y = max(y, 0.0);
    }
    out[i] = y;
}

@compute @workgroup_size(256)
fn backward_sums(@builtin(workgroup_id) gid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = gid.x;
    let t = lid.x;
    let m = p.n * p.hw;
    let mu = mean[ch];
    let rstd = inverseSqrt(variance[ch] + p.eps);
    var s = 0.0;
    var s2 = 0.0;
    var n = t / p.hw;
    var q = t % p.hw;
    for (var j = t; j < m; j += 256u) {
        let i = (n * p.c + ch) * p.hw + q;
        let g = dy[i];
        s += g;
        s2 += g * (x[i] - mu) * rstd;
        q += 256u;
        while q >= p.hw {
            q -= p.hw;
            n += 1u;
        }
    }
    partial[t] = s;
    partial2[t] = s2;
    tree_sum(t);
    if t == 0u {
        out[ch] = partial[0];
        out2[ch] = partial2[0];
    }
}

@group(0) @binding(9) var<storage, read> sum_dy: array<f32>;
@group(0) @binding(10) var<storage, read> sum_dy_xhat: array<f32>;

@compute @workgroup_size(256)
fn backward_apply(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    let m = p.n * p.hw;
    if i >= m * p.c {
        return;
    }
    let ch = (i / p.hw) % p.c;
    let rstd = inverseSqrt(variance[ch] + p.eps);
    let xhat = (x[i] - mean[ch]) * rstd;
    let inv_m = 1.0 / f32(m);
    out[i] = gamma[ch] * rstd * (dy[i] - sum_dy[ch] * inv_m - xhat * sum_dy_xhat[ch] * inv_m);
}

@compute @workgroup_size(256)
fn running_update(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ch = flat_index(gid, nwg, lid);
    if ch >= p.c {
        return;
    }
    let m = f32(p.n * p.hw);
    let unbias = select(1.0, m / (m - 1.0), m > 1.0);
    out[ch] = (1.0 - p.momentum) * out[ch] + p.momentum * mean[ch];
    out2[ch] = (1.0 - p.momentum) * out2[ch] + p.momentum * variance[ch] * unbias;
}
