// 2-D convolution (NCHW activations, [Co, Ci, KH, KW] weights) as implicit GEMM: the im2col
// matrix is never built; each load computes its input coordinate and zero-pads on the fly.
//
// Dispatch geometry (all entries): workgroups of WGX x WGY invocations (override constants,
// WGX * WGY = 256, WGX chosen by the host to fit the narrow GEMM dimension), each invocation
// owning a 4x4 block of its GEMM output:
// - forward:      Y[n,co,oh,ow] = sum_{ci,kh,kw} W[co,ci,kh,kw] * X[n,ci,oh*s-p+kh,ow*s-p+kw]
//                 GEMM rows = N*OH*OW output pixels (y), columns = Co (x);
//                 grid = (ceil(Co/(4 WGX)), ceil(N*OH*OW/(4 WGY)), 1).
// - input_grad:   dX[n,ci,ih,iw] = sum_{co,kh,kw} W[co,ci,kh,kw] * dY[n,co,oh,ow]
//                 where ih = oh*s - p + kh (and likewise w); columns = Ci. The input pixels
//                 are split into s*s phases (ih % s, iw % s), one per z slice, so that only
//                 taps that can contribute are visited; rows = N*ceil(H/s)*ceil(W/s) pixels
//                 of a phase; grid = (ceil(Ci/(4 WGX)), ceil(rows/(4 WGY)), s*s).
// - weight_grad:  dW[co,ci,kh,kw] = sum_{n,oh,ow} dY[n,co,oh,ow] * X[n,ci,oh*s-p+kh,ow*s-p+kw]
//                 rows = Co (y), columns = Ci*KH*KW (x); the long reduction over N*OH*OW is
//                 split into `splits` chunks along z (grid z = splits), each writing its own
//                 partial slice out[z, co, col]; the host sums the slices in a fixed order, so
//                 the result is deterministic.

struct Params {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    chunk: u32, // weight_grad: output pixels per split
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;    // X (forward, weight_grad) or dY (input_grad)
@group(0) @binding(2) var<storage, read> other: array<f32>;  // W (forward, input_grad) or dY (weight_grad)
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WGX: u32 = 16u;
override WGY: u32 = 16u;
// The convolution stride, as a constant so index arithmetic compiles to shifts and adds.
override STRIDE: u32 = 1u;

@compute @workgroup_size(WGX, WGY)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pixels = p.n * p.oh * p.ow;
    let pix0 = (wg.y * WGY + lid.y) * 4u;
    let co0 = (wg.x * WGX + lid.x) * 4u;
    if pix0 >= pixels || co0 >= p.co {
        return;
    }
    let hw = p.h * p.w;
    let khw = p.kh * p.kw;
    // Per output pixel: where its image starts and the top-left input coordinate it reads.
    var img: array<u32, 4>;
    var ih0: array<i32, 4>;
    var iw0: array<i32, 4>;
    for (var j = 0u; j < 4u; j++) {
        let q = min(pix0 + j, pixels - 1u);
        let ow = q % p.ow;
        let t = q / p.ow;
        let oh = t % p.oh;
        let n = t / p.oh;
        img[j] = n * p.ci * hw;
        ih0[j] = i32(oh * STRIDE) - i32(p.pad);
        iw0[j] = i32(ow * STRIDE) - i32(p.pad);
    }
    let cov = vec4<u32>(co0, min(co0 + 1u, p.co - 1u), min(co0 + 2u, p.co - 1u), min(co0 + 3u, p.co - 1u));
    let wrow = cov * (p.ci * khw);
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var ci = 0u; ci < p.ci; ci++) {
        let plane = ci * hw;
        for (var kh = 0u; kh < p.kh; kh++) {
            for (var kw = 0u; kw < p.kw; kw++) {
                let wk = ci * khw + kh * p.kw + kw;
                let wv = vec4<f32>(other[wrow.x + wk], other[wrow.y + wk], other[wrow.z + wk], other[wrow.w + wk]);
                acc0 += load_x(img[0] + plane, ih0[0] + i32(kh), iw0[0] + i32(kw)) * wv;
                acc1 += load_x(img[1] + plane, ih0[1] + i32(kh), iw0[1] + i32(kw)) * wv;
                acc2 += load_x(img[2] + plane, ih0[2] + i32(kh), iw0[2] + i32(kw)) * wv;
                acc3 += load_x(img[3] + plane, ih0[3] + i32(kh), iw0[3] + i32(kw)) * wv;
            }
        }
    }
    let ohw = p.oh * p.ow;
    store_pixel(pix0, pixels, co0, p.co, ohw, acc0);
    store_pixel(pix0 + 1u, pixels, co0, p.co, ohw, acc1);
    store_pixel(pix0 + 2u, pixels, co0, p.co, ohw, acc2);
    store_pixel(pix0 + 3u, pixels, co0, p.co, ohw, acc3);
}

// X value at (ih, iw) of the plane starting at `plane`, zero outside the image (padding).
fn load_x(plane: u32, ih: i32, iw: i32) -> f32 {
    if ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w) {
        return 0.0;
    }
    return src[plane + u32(ih) * p.w + u32(iw)];
}

// Writes channels c0..c0+3 (those < channels) of pixel q of an NCHW tensor with `hw` pixels
// per plane.
fn store_pixel(q: u32, pixels: u32, c0: u32, channels: u32, hw: u32, v: vec4<f32>) {
    if q >= pixels {
        return;
    }
    let n = q / hw;
    let s = q % hw;
    for (var j = 0u; j < 4u; j++) {
        if c0 + j < channels {
            out[(n * channels + c0 + j) * hw + s] = v[j];
        }
    }
}

@compute @workgroup_size(WGX, WGY)
fn input_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Phase (ph, pw) = (ih % s, iw % s) is fixed per z slice, so every pixel of this
    // invocation is reached by the same taps kh = kh0, kh0 + s, ... (and likewise kw); no tap
    // is visited that cannot contribute, and oh = (ih + p - kh) / s is exact.
    let ph = wg.z / STRIDE;
    let pw = wg.z % STRIDE;
    if ph >= p.h || pw >= p.w {
        return;
    }
    let hp = (p.h - ph + STRIDE - 1u) / STRIDE;
    let wp = (p.w - pw + STRIDE - 1u) / STRIDE;
    let pixels = p.n * hp * wp;
    let pix0 = (wg.y * WGY + lid.y) * 4u;
    let ci0 = (wg.x * WGX + lid.x) * 4u;
    if pix0 >= pixels || ci0 >= p.ci {
        return;
    }
    let ohw = p.oh * p.ow;
    let khw = p.kh * p.kw;
    let kh0 = (ph + p.pad) % STRIDE;
    let kw0 = (pw + p.pad) % STRIDE;
    var img: array<u32, 4>;
    var oh0: array<i32, 4>; // (ih + pad - kh0) / s: output row reached by the first tap
    var ow0: array<i32, 4>;
    for (var j = 0u; j < 4u; j++) {
        let q = min(pix0 + j, pixels - 1u);
        let jw = q % wp;
        let t = q / wp;
        let jh = t % hp;
        let n = t / hp;
        img[j] = n * p.co * ohw;
        oh0[j] = (i32(ph + jh * STRIDE + p.pad) - i32(kh0)) / i32(STRIDE);
        ow0[j] = (i32(pw + jw * STRIDE + p.pad) - i32(kw0)) / i32(STRIDE);
    }
    let civ = vec4<u32>(ci0, min(ci0 + 1u, p.ci - 1u), min(ci0 + 2u, p.ci - 1u), min(ci0 + 3u, p.ci - 1u));
    let wcol = civ * khw;
    let wco = p.ci * khw;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var co = 0u; co < p.co; co++) {
        let plane = co * ohw;
        var dh = 0;
        for (var kh = kh0; kh < p.kh; kh += STRIDE) {
            var dw = 0;
            for (var kw = kw0; kw < p.kw; kw += STRIDE) {
                let wk = co * wco + kh * p.kw + kw;
                let wv = vec4<f32>(other[wk + wcol.x], other[wk + wcol.y], other[wk + wcol.z], other[wk + wcol.w]);
                acc0 += load_dy(img[0] + plane, oh0[0] - dh, ow0[0] - dw) * wv;
                acc1 += load_dy(img[1] + plane, oh0[1] - dh, ow0[1] - dw) * wv;
                acc2 += load_dy(img[2] + plane, oh0[2] - dh, ow0[2] - dw) * wv;
                acc3 += load_dy(img[3] + plane, oh0[3] - dh, ow0[3] - dw) * wv;
                dw += 1;
            }
            dh += 1;
        }
    }
    let hw = p.h * p.w;
    store_phase(pix0, pixels, hp, wp, ph, pw, ci0, hw, acc0);
    store_phase(pix0 + 1u, pixels, hp, wp, ph, pw, ci0, hw, acc1);
    store_phase(pix0 + 2u, pixels, hp, wp, ph, pw, ci0, hw, acc2);
    store_phase(pix0 + 3u, pixels, hp, wp, ph, pw, ci0, hw, acc3);
}

// dY value at output pixel (oh, ow) of one plane, zero outside the output.
fn load_dy(plane: u32, oh: i32, ow: i32) -> f32 {
    if oh < 0 || ow < 0 || oh >= i32(p.oh) || ow >= i32(p.ow) {
        return 0.0;
    }
    return src[plane + u32(oh) * p.ow + u32(ow)];
}

// Writes channels c0..c0+3 of phase pixel q (image n, phase-grid position (jh, jw)).
fn store_phase(q: u32, pixels: u32, hp: u32, wp: u32, ph: u32, pw: u32, c0: u32, hw: u32, v: vec4<f32>) {
    if q >= pixels {
        return;
    }
    let jw = q % wp;
    let t = q / wp;
    let jh = t % hp;
    let n = t / hp;
    let s = (ph + jh * STRIDE) * p.w + pw + jw * STRIDE;
    for (var j = 0u; j < 4u; j++) {
        if c0 + j < p.ci {
            out[(n * p.ci + c0 + j) * hw + s] = v[j];
        }
    }
}

@compute @workgroup_size(WGX, WGY)
fn weight_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let khw = p.kh * p.kw;
    let cols = p.ci * khw;
    let co0 = (wg.y * WGY + lid.y) * 4u;
    let col0 = (wg.x * WGX + lid.x) * 4u;
    if co0 >= p.co || col0 >= cols {
        return;
    }
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    let start = wg.z * p.chunk;
    let end = min(start + p.chunk, total);
    // Per weight column: which input plane it reads and its tap offset.
    var plane: array<u32, 4>;
    var dh: array<i32, 4>;
    var dw: array<i32, 4>;
    for (var j = 0u; j < 4u; j++) {
        let col = min(col0 + j, cols - 1u);
        let ci = col / khw;
        let r = col % khw;
        plane[j] = ci * hw;
        dh[j] = i32(r / p.kw) - i32(p.pad);
        dw[j] = i32(r % p.kw) - i32(p.pad);
    }
    let cov = vec4<u32>(co0, min(co0 + 1u, p.co - 1u), min(co0 + 2u, p.co - 1u), min(co0 + 3u, p.co - 1u));
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    if start < end {
        // Walk output pixels in order, stepping (n, oh, ow) without divisions.
        var ow = start % p.ow;
        var oh = (start / p.ow) % p.oh;
        var n = start / ohw;
        for (var q = start; q < end; q++) {
            let ybase = n * p.co * ohw + oh * p.ow + ow;
            let dy = vec4<f32>(other[ybase + cov.x * ohw], other[ybase + cov.y * ohw], other[ybase + cov.z * ohw], other[ybase + cov.w * ohw]);
            let xbase = n * p.ci * hw;
            let ih = i32(oh * STRIDE);
            let iw = i32(ow * STRIDE);
            let xv = vec4<f32>(
                load_x(xbase + plane[0], ih + dh[0], iw + dw[0]),
                load_x(xbase + plane[1], ih + dh[1], iw + dw[1]),
                load_x(xbase + plane[2], ih + dh[2], iw + dw[2]),
                load_x(xbase + plane[3], ih + dh[3], iw + dw[3]));
            acc0 += dy.x * xv;
            acc1 += dy.y * xv;
            acc2 += dy.z * xv;
            acc3 += dy.w * xv;
            ow += 1u;
            if ow == p.ow {
                ow = 0u;
                oh += 1u;
                if oh == p.oh {
                    oh = 0u;
                    n += 1u;
                }
            }
        }
    }
    let base = wg.z * p.co * cols;
    store_wrow(base, co0, col0, cols, acc0);
    store_wrow(base, co0 + 1u, col0, cols, acc1);
    store_wrow(base, co0 + 2u, col0, cols, acc2);
    store_wrow(base, co0 + 3u, col0, cols, acc3);
}

fn store_wrow(base: u32, co: u32, col0: u32, cols: u32, v: vec4<f32>) {
    if co >= p.co {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if col0 + j < cols {
            out[base + co * cols + col0 + j] = v[j];
        }
    }
}
