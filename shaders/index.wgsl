// Integer-indexed row/element access: one-hot, row gather/scatter, pick and its gradient.
// Out-of-range labels or indices are never dereferenced: their outputs are 0 (one_hot,
// gather_rows, pick, unpick) or they are skipped (scatter_rows).
//
// Dispatch geometry (all entries): 1-D, 256 invocations per workgroup, one output element
// each; the flat index is (gid.y * num_workgroups.x + gid.x) * 256 + lid.x.
// - one_hot:      over rows * cols outputs: out[r, c] = (idx[r] == c).
// - gather_rows:  over rows * cols outputs: out[r, d] = src[idx[r], d] (0 if idx[r] >= src_rows).
// - pick:         over rows outputs: out[r] = src[r, idx[r]] (0 if idx[r] >= cols).
// - unpick:       over rows * cols outputs: out[r, c] = src[r] if idx[r] == c, else 0.
// - scatter_rows: over rows * cols inputs: out[idx[r], d] = src[r, d] (skipped if
//                 idx[r] >= src_rows, here the destination's row count); the host zeroes
//                 `out` first. Indices must be unique, otherwise the winner is unspecified.

struct Params {
    rows: u32,     // B: index entries
    cols: u32,     // C or D: row length
    src_rows: u32, // gather: rows of src; scatter: rows of out
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (gid.y * nwg.x + gid.x) * 256u + lid.x;
}

@compute @workgroup_size(256)
fn one_hot(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.rows * p.cols {
        return;
    }
    let r = i / p.cols;
    let c = i - r * p.cols;
    out[i] = select(0.0, 1.0, idx[r] == c);
}

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.rows * p.cols {
        return;
    }
    let r = i / p.cols;
    let d = i - r * p.cols;
    let s = idx[r];
    var v = 0.0;
    if s < p.src_rows {
        v = src[s * p.cols + d];
    }
    out[i] = v;
}

@compute @workgroup_size(256)
fn pick(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat_index(gid, nwg, lid);
    if r >= p.rows {
        return;
    }
    let c = idx[r];
    var v = 0.0;
    if c < p.cols {
        v = src[r * p.cols + c];
    }
    out[r] = v;
}

@compute @workgroup_size(256)
fn unpick(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.rows * p.cols {
        return;
    }
    let r = i / p.cols;
    let c = i - r * p.cols;
    var v = 0.0;
    if idx[r] == c {
        v = src[r];
    }
    out[i] = v;
}

@compute @workgroup_size(256)
fn scatter_rows(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.rows * p.cols {
        return;
    }
    let r = i / p.cols;
    let d = i - r * p.cols;
    let t = idx[r];
    if t < p.src_rows {
        out[t * p.cols + d] = src[i];
    }
}
