// Global average pooling and the ResNet "option A" shortcut, forward and backward.
//
// Dispatch geometry (all entries): 1-D, 256 invocations per workgroup, one output element
// each, flat index (gid.y * num_workgroups.x + gid.x) * 256 + lid.x.
// - gap_forward:  out[n,c] = mean over the h*w plane of x[n,c]   (one invocation per (n,c))
// - gap_backward: dx[n,c,i] = dy[n,c] / (h*w)
// - shortcut_forward:  y[n,c,i,j] = x[n, c - pad, 2i, 2j] for pad <= c < pad + cin, else 0
//   (stride-2 subsample, new channels zero-padded on both sides; no parameters)
// - shortcut_backward: dx[n,c,i,j] = dy[n, c + pad, i/2, j/2] where i and j are even, else 0
// - maxpool_forward:  out[n,c,i,j] = max of the k x k window at (i*s - p, j*s - p), and
//   arg[n,c,i,j] = the winner's index within the h*w plane (first maximum wins)
// - maxpool_backward: one invocation per input element: the sum of dy over the (at most
//   ceil(k/s)^2) windows covering it whose winner it is (a gather, so no atomics)
// - maxpool_select:   out[n,c,i,j] = g[n, c, arg[n,c,i,j]] (the backward's own adjoint)

struct Params {
    n: u32,      // batch
    c: u32,      // input channels
    h: u32,      // input height
    w: u32,      // input width
    cout: u32,   // shortcut: output channels
    pad: u32,    // shortcut: zero channels before the copied ones
    oh: u32,     // shortcut: output height (ceil(h/2))
    ow: u32,     // shortcut: output width (ceil(w/2))
    k: u32,      // maxpool: window side
    stride: u32, // maxpool: step
    mpad: u32,   // maxpool: padding (padded cells never win)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg_out: array<u32>;
@group(0) @binding(4) var<storage, read> arg_in: array<u32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (gid.y * nwg.x + gid.x) * 256u + lid.x;
}

@compute @workgroup_size(256)
fn gap_forward(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = flat_index(gid, nwg, lid);
    if o >= p.n * p.c {
        return;
    }
    let hw = p.h * p.w;
    var s = 0.0;
    for (var i = 0u; i < hw; i++) {
        s += src[o * hw + i];
    }
    out[o] = s / f32(hw);
}

@compute @workgroup_size(256)
fn gap_backward(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    let hw = p.h * p.w;
    if i >= p.n * p.c * hw {
        return;
    }
    out[i] = src[i / hw] / f32(hw);
}

@compute @workgroup_size(256)
fn shortcut_forward(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.n * p.cout * p.oh * p.ow {
        return;
    }
    let x = i % p.ow;
    let t = i / p.ow;
    let y = t % p.oh;
    let t2 = t / p.oh;
    let c = t2 % p.cout;
    let n = t2 / p.cout;
    var v = 0.0;
    if c >= p.pad && c < p.pad + p.c {
        v = src[((n * p.c + (c - p.pad)) * p.h + 2u * y) * p.w + 2u * x];
    }
    out[i] = v;
}

@compute @workgroup_size(256)
fn shortcut_backward(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.n * p.c * p.h * p.w {
        return;
    }
    let x = i % p.w;
    let t = i / p.w;
    let y = t % p.h;
    let t2 = t / p.h;
    let c = t2 % p.c;
    let n = t2 / p.c;
    var v = 0.0;
    if x % 2u == 0u && y % 2u == 0u {
        v = src[((n * p.cout + c + p.pad) * p.oh + y / 2u) * p.ow + x / 2u];
    }
    out[i] = v;
}

// Pooling geometry for maxpool: p.h x p.w input planes, p.oh x p.ow output planes.
@compute @workgroup_size(256)
fn maxpool_forward(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = flat_index(gid, nwg, lid);
    if o >= p.n * p.c * p.oh * p.ow {
        return;
    }
    let j = o % p.ow;
    let i = (o / p.ow) % p.oh;
    let plane = o / (p.oh * p.ow);
    let base = plane * p.h * p.w;
    let y0 = i32(i * p.stride) - i32(p.mpad);
    let x0 = i32(j * p.stride) - i32(p.mpad);
    var best = -3.4e38;
    var best_at = 0u;
    var found = false;
    for (var a = 0u; a < p.k; a++) {
        for (var b = 0u; b < p.k; b++) {
            let y = y0 + i32(a);
            let x = x0 + i32(b);
            if y >= 0 && x >= 0 && y < i32(p.h) && x < i32(p.w) {
                let at = u32(y) * p.w + u32(x);
                let v = src[base + at];
                if !found || v > best {
                    best = v;
                    best_at = at;
                    found = true;
                }
            }
        }
    }
    out[o] = best;
    arg_out[o] = best_at;
}

@compute @workgroup_size(256)
fn maxpool_backward(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = flat_index(gid, nwg, lid);
    if e >= p.n * p.c * p.h * p.w {
        return;
    }
    let at = e % (p.h * p.w);
    let plane = e / (p.h * p.w);
    let y = i32(at / p.w) + i32(p.mpad);
    let x = i32(at % p.w) + i32(p.mpad);
    // Windows i with i*s <= y < i*s + k.
    let s = i32(p.stride);
    let k = i32(p.k);
    let i_lo = max((y - k + s) / s, 0);
    let i_hi = min(y / s, i32(p.oh) - 1);
    let j_lo = max((x - k + s) / s, 0);
    let j_hi = min(x / s, i32(p.ow) - 1);
    var acc = 0.0;
    for (var i = i_lo; i <= i_hi; i++) {
        for (var j = j_lo; j <= j_hi; j++) {
            let o = (plane * p.oh + u32(i)) * p.ow + u32(j);
            if arg_in[o] == at {
                acc += src[o];
            }
        }
    }
    out[e] = acc;
}

@compute @workgroup_size(256)
fn maxpool_select(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = flat_index(gid, nwg, lid);
    if o >= p.n * p.c * p.oh * p.ow {
        return;
    }
    let plane = o / (p.oh * p.ow);
    out[o] = src[plane * p.h * p.w + arg_in[o]];
}
