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
//                 rows = Co (y), columns = ceil(Ci/4) channel blocks x KH*KW taps (x, each
//                 invocation 4 channels at one tap); the long reduction over N*OH*OW is
//                 split into chunks along z (grid z = splits), each writing its own partial
//                 slice out[split, co, col]; the host sums the slices in a fixed order, so the
//                 result is deterministic. (Lanes past the edge cost little: CPU drivers skip
//                 SIMD batches whose lanes have all returned.)

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
// Square kernel side as a constant when the host sets it (0 = read the parameters): a
// constant trip count lets the driver unroll the tap loops. (Doing the same for the stem's
// 3 input channels made it slower on lavapipe, 8.8 -> 5.4 GFLOP/s, so channels stay dynamic.)
override KSIZE: u32 = 0u;

fn kh_n() -> u32 {
    return select(p.kh, KSIZE, KSIZE != 0u);
}

fn kw_n() -> u32 {
    return select(p.kw, KSIZE, KSIZE != 0u);
}


@compute @workgroup_size(WGX, WGY)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pixels = p.n * p.oh * p.ow;
    let pix0 = (wg.y * WGY + lid.y) * 4u;
    let co0 = (wg.x * WGX + lid.x) * 4u;
    if pix0 >= pixels || co0 >= p.co {
        return;
    }
    let hw = p.h * p.w;
    let khw = kh_n() * kw_n();
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
    // Taps outside, channels inside: each pixel's input offset and padding mask are worked
    // out once per tap, so the channel loop is pure loads and FMAs.
    for (var kh = 0u; kh < kh_n(); kh++) {
        for (var kw = 0u; kw < kw_n(); kw++) {
            var off: array<u32, 4>;
            var mask: vec4<f32>;
            for (var j = 0u; j < 4u; j++) {
                let ih = ih0[j] + i32(kh);
                let iw = iw0[j] + i32(kw);
                let inside = ih >= 0 && iw >= 0 && ih < i32(p.h) && iw < i32(p.w);
                off[j] = select(0u, img[j] + u32(ih) * p.w + u32(iw), inside);
                mask[j] = select(0.0, 1.0, inside);
            }
            var wk = kh * kw_n() + kw;
            for (var ci = 0u; ci < p.ci; ci++) {
                let wv = vec4<f32>(other[wrow.x + wk], other[wrow.y + wk], other[wrow.z + wk], other[wrow.w + wk]);
                let plane = ci * hw;
                acc0 += (src[off[0] + plane] * mask.x) * wv;
                acc1 += (src[off[1] + plane] * mask.y) * wv;
                acc2 += (src[off[2] + plane] * mask.z) * wv;
                acc3 += (src[off[3] + plane] * mask.w) * wv;
                wk += khw;
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
    let khw = kh_n() * kw_n();
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
    var dh = 0;
    for (var kh = kh0; kh < kh_n(); kh += STRIDE) {
        var dw = 0;
        for (var kw = kw0; kw < kw_n(); kw += STRIDE) {
            var off: array<u32, 4>;
            var mask: vec4<f32>;
            for (var j = 0u; j < 4u; j++) {
                let oh = oh0[j] - dh;
                let ow = ow0[j] - dw;
                let inside = oh >= 0 && ow >= 0 && oh < i32(p.oh) && ow < i32(p.ow);
                off[j] = select(0u, img[j] + u32(oh) * p.ow + u32(ow), inside);
                mask[j] = select(0.0, 1.0, inside);
            }
            var wk = kh * kw_n() + kw;
            for (var co = 0u; co < p.co; co++) {
                let wv = vec4<f32>(other[wk + wcol.x], other[wk + wcol.y], other[wk + wcol.z], other[wk + wcol.w]);
                let plane = co * ohw;
                acc0 += (src[off[0] + plane] * mask.x) * wv;
                acc1 += (src[off[1] + plane] * mask.y) * wv;
                acc2 += (src[off[2] + plane] * mask.z) * wv;
                acc3 += (src[off[3] + plane] * mask.w) * wv;
                wk += wco;
            }
            dw += 1;
        }
        dh += 1;
    }
    let hw = p.h * p.w;
    store_phase(pix0, pixels, hp, wp, ph, pw, ci0, hw, acc0);
    store_phase(pix0 + 1u, pixels, hp, wp, ph, pw, ci0, hw, acc1);
    store_phase(pix0 + 2u, pixels, hp, wp, ph, pw, ci0, hw, acc2);
    store_phase(pix0 + 3u, pixels, hp, wp, ph, pw, ci0, hw, acc3);
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
    // x indexes (channel block, tap): the 4 columns of an invocation are input channels
    // ci0..ci0+3 at one tap (kh, kw), so they read the same input position and share one
    // padding test per pixel.
    let khw = p.kh * p.kw;
    let blocks = (p.ci + 3u) / 4u;
    let co0 = (wg.y * WGY + lid.y) * 4u;
    let xb = wg.x * WGX + lid.x;
    if co0 >= p.co || xb >= blocks * khw {
        return;
    }
    let tap = xb % khw;
    let ci0 = (xb / khw) * 4u;
    let dh = i32(tap / p.kw) - i32(p.pad);
    let dw = i32(tap % p.kw) - i32(p.pad);
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    let split = wg.z;
    let start = split * p.chunk;
    let end = min(start + p.chunk, total);
    let civ = vec4<u32>(ci0, min(ci0 + 1u, p.ci - 1u), min(ci0 + 2u, p.ci - 1u), min(ci0 + 3u, p.ci - 1u)) * hw;
    let cov = vec4<u32>(co0, min(co0 + 1u, p.co - 1u), min(co0 + 2u, p.co - 1u), min(co0 + 3u, p.co - 1u)) * ohw;
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
            let dy = vec4<f32>(other[ybase + cov.x], other[ybase + cov.y], other[ybase + cov.z], other[ybase + cov.w]);
            let ih = i32(oh * STRIDE) + dh;
            let iw = i32(ow * STRIDE) + dw;
            let inside = ih >= 0 && iw >= 0 && ih < i32(p.h) && iw < i32(p.w);
            let off = select(0u, n * p.ci * hw + u32(ih) * p.w + u32(iw), inside);
            let m = select(0.0, 1.0, inside);
            let xv = vec4<f32>(src[off + civ.x], src[off + civ.y], src[off + civ.z], src[off + civ.w]) * m;
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
    let base = split * p.co * p.ci * khw;
    store_wrow(base, co0, ci0, tap, acc0);
    store_wrow(base, co0 + 1u, ci0, tap, acc1);
    store_wrow(base, co0 + 2u, ci0, tap, acc2);
    store_wrow(base, co0 + 3u, ci0, tap, acc3);
}

// Writes dW[co, ci0 + j, tap] for the 4 channels of one invocation (slice `base`).
fn store_wrow(base: u32, co: u32, ci0: u32, tap: u32, v: vec4<f32>) {
    if co >= p.co {
        return;
    }
    let khw = p.kh * p.kw;
    for (var j = 0u; j < 4u; j++) {
        if ci0 + j < p.ci {
            out[base + (co * p.ci + ci0 + j) * khw + tap] = v[j];
        }
    }
}
