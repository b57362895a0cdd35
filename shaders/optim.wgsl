// In-place optimizer updates (PyTorch semantics), one parameter element per invocation.
//
// Dispatch geometry (all entries): 1-D over n elements, 256 invocations per workgroup; the
// flat index is (gid.y * num_workgroups.x + gid.x) * 256 + lid.x.
// - sgd:  d = g + wd * w; buf = momentum * buf + d; w -= lr * buf  (dampening 0, no nesterov;
//         a zero initial buffer reproduces PyTorch's first step, buf = d).
// - adam: d = g + wd * w; m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2;
//         w -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), bc1 = 1 - b1^t, bc2 = 1 - b2^t
//         (the host passes lr / bc1 as `step_size` and sqrt(bc2)).

struct Params {
    n: u32,
    lr: f32,           // sgd: learning rate; adam: lr / (1 - beta1^t)
    momentum: f32,     // sgd: momentum; adam: beta1
    weight_decay: f32,
    beta2: f32,        // adam
    eps: f32,          // adam
    bc2_sqrt: f32,     // adam: sqrt(1 - beta2^t)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> buf: array<f32>;  // sgd: momentum; adam: m
@group(0) @binding(3) var<storage, read_write> buf2: array<f32>; // adam: v
@group(0) @binding(4) var<storage, read> grad: array<f32>;

fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (gid.y * nwg.x + gid.x) * 256u + lid.x;
}

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.n {
        return;
    }
    let x = w[i];
    let d = grad[i] + p.weight_decay * x;
    let b = p.momentum * buf[i] + d;
    buf[i] = b;
    w[i] = x - p.lr * b;
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(gid, nwg, lid);
    if i >= p.n {
        return;
    }
    let x = w[i];
    let d = grad[i] + p.weight_decay * x;
    let b1 = p.momentum;
    let m = b1 * buf[i] + (1.0 - b1) * d;
    let v = p.beta2 * buf2[i] + (1.0 - p.beta2) * d * d;
    buf[i] = m;
    buf2[i] = v;
    w[i] = x - p.lr * m / (sqrt(v) / p.bc2_sqrt + p.eps);
}
