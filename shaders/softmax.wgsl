// Row-wise softmax family over logits [rows, cols] (row-major), numerically stable: every row
// is shifted by its maximum. z = x + q, where q (margins, [cols]) is added to every row when
// `has_margin` is 1; otherwise the margins binding holds some other buffer and is never read.
// Each row's max and sum of exponentials come from one pass (online softmax: the running sum
// is rescaled when the running max grows), in a fixed order, so results are deterministic.
//
// Dispatch geometry (all entries): 1-D over rows, 256 invocations per workgroup, one row per
// invocation; the flat row index is (gid.y * num_workgroups.x + gid.x) * 256 + lid.x.
// - softmax_rows: out[r, j] = softmax(x[r])_j, or log_softmax(x[r])_j when `mode` is 1.
// - soft_ce:      out[r] = -sum_j t[r, j] * log_softmax(z[r])_j.
// - soft_ce_back: out[r, j] = g[r] * (softmax(z[r])_j * sum_i t[r, i] - t[r, j]).
// - hard_ce:      out[r] = logsumexp(z[r]) - z[r, label[r]]; NaN when label[r] >= cols.

struct Params {
    rows: u32,
    cols: u32,
    has_margin: u32,
    mode: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> margins: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<f32>;
@group(0) @binding(4) var<storage, read> labels: array<u32>;
@group(0) @binding(5) var<storage, read> grad: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

fn row_index(gid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (gid.y * nwg.x + gid.x) * 256u + lid.x;
}

// Logit j of the row starting at `base`, without margins.
fn logit(base: u32, j: u32) -> f32 {
    return x[base + j];
}

// Logit j of the row starting at `base`, plus margin j when margins are given.
fn shifted_logit(base: u32, j: u32) -> f32 {
    var z = x[base + j];
    if p.has_margin != 0u {
        z += margins[j];
    }
    return z;
}

// (max, sum of exp(z - max)) of a row of plain logits.
fn row_stats(base: u32) -> vec2<f32> {
    var m = logit(base, 0u);
    var s = 1.0;
    for (var j = 1u; j < p.cols; j++) {
        let z = logit(base, j);
        if z > m {
            s = s * exp(m - z) + 1.0;
            m = z;
        } else {
            s += exp(z - m);
        }
    }
    return vec2<f32>(m, s);
}

// (max, sum of exp(z - max)) of a row of logits plus margins.
fn shifted_row_stats(base: u32) -> vec2<f32> {
    var m = shifted_logit(base, 0u);
    var s = 1.0;
    for (var j = 1u; j < p.cols; j++) {
        let z = shifted_logit(base, j);
        if z > m {
            s = s * exp(m - z) + 1.0;
            m = z;
        } else {
            s += exp(z - m);
        }
    }
    return vec2<f32>(m, s);
}

@compute @workgroup_size(256)
fn softmax_rows(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(gid, nwg, lid);
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    let st = row_stats(base);
    if p.mode == 1u {
        let log_s = log(st.y);
        for (var j = 0u; j < p.cols; j++) {
            out[base + j] = (logit(base, j) - st.x) - log_s;
        }
    } else {
        let inv = 1.0 / st.y;
        for (var j = 0u; j < p.cols; j++) {
            out[base + j] = exp(logit(base, j) - st.x) * inv;
        }
    }
}

@compute @workgroup_size(256)
fn soft_ce(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(gid, nwg, lid);
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    let st = shifted_row_stats(base);
    let log_s = log(st.y);
    var loss = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        // -log_softmax_j as (max - z_j) + log(sum): large logits cancel exactly first.
        loss += targets[base + j] * ((st.x - shifted_logit(base, j)) + log_s);
    }
    out[r] = loss;
}

@compute @workgroup_size(256)
fn soft_ce_back(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(gid, nwg, lid);
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    let st = shifted_row_stats(base);
    var total = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        total += targets[base + j];
    }
    let g = grad[r];
    let scale = total / st.y;
    for (var j = 0u; j < p.cols; j++) {
        let sm = exp(shifted_logit(base, j) - st.x);
        out[base + j] = g * (sm * scale - targets[base + j]);
    }
}

@compute @workgroup_size(256)
fn hard_ce(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_index(gid, nwg, lid);
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    let label = labels[r];
    var m = shifted_logit(base, 0u);
    var s = 1.0;
    var picked = m;
    for (var j = 1u; j < p.cols; j++) {
        let z = shifted_logit(base, j);
        if j == label {
            picked = z;
        }
        if z > m {
            s = s * exp(m - z) + 1.0;
            m = z;
        } else {
            s += exp(z - m);
        }
    }
    var loss = (m - picked) + log(s);
    if label >= p.cols {
        loss = bitcast<f32>(0x7FC00000u);
    }
    out[r] = loss;
}
