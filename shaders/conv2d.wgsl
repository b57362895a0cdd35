// 2-D convolution (NCHW activations, [Co, Ci, KH, KW] weights) as implicit GEMM: the im2col
// matrix is never built; each load computes its input coordinate and zero-pads on the fly.
//
// Dispatch geometry. On CPU drivers each invocation is one SIMD lane and every load whose
// address differs per lane is a gather, so each invocation owns a large register block of its
// GEMM output (more multiply-adds per gathered value). Lanes past the edge clamp their indices
// and skip their stores.
// - forward:      Y[n,co,oh,ow] = sum_{ci,kh,kw} W[co,ci,kh,kw] * X[n,ci,oh*s-p+kh,ow*s-p+kw]
//                 workgroups of 256 invocations along the N*OH*OW output pixels, each owning
//                 PIX consecutive pixels x 4*CH_BLOCKS output channels; the channel block is
//                 the workgroup's y, so all lanes read the same weights;
//                 grid = (ceil(N*OH*OW/(256 PIX)), ceil(Co/(4 CH_BLOCKS)), 1).
// - input_grad:   dX[n,ci,ih,iw] = sum_{co,kh,kw} W[co,ci,kh,kw] * dY[n,co,oh,ow]
//                 where ih = oh*s - p + kh (and likewise w). The input pixels are split into
//                 s*s phases (ih % s, iw % s), one per z slice, so that only taps that can
//                 contribute are visited; otherwise as forward with Ci in place of Co:
//                 grid = (ceil(N*ceil(H/s)*ceil(W/s)/(256 PIX)), ceil(Ci/(4 CH_BLOCKS)), s*s).
// - weight_grad:  dW[co,ci,kh,kw] = sum_{n,oh,ow} dY[n,co,oh,ow] * X[n,ci,oh*s-p+kh,ow*s-p+kw]
//                 workgroups of WGX x WGY: x indexes (channel block of 4*CH_BLOCKS input
//                 channels, tap), y blocks of CO_PER output channels, so an invocation's input
//                 channels share one position and one padding test per pixel. The long
//                 reduction over N*OH*OW is split into chunks along z (grid z = splits), each
//                 writing its own partial slice out[split, co, col]; the host sums the slices
//                 in a fixed order, so the result is deterministic.

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
// Channel blocks of 4 per invocation (1 or 2; 1 when the channel count is below 8, where a
// second block would be mostly padding). Register arrays below are sized for the maximum.
override CH_BLOCKS: u32 = 2u;
// weight_grad: output channels per invocation (at most 16), and consecutive kernel columns
// per invocation (KW_RUN; CO_PER * KW_RUN * CH_BLOCKS <= 32, KW_RUN * CH_BLOCKS <= 8).
override CO_PER: u32 = 16u;
override KW_RUN: u32 = 1u;
// forward / input_grad: consecutive output pixels per invocation. 8 pixels x 8 channels was
// the fastest block measured on lavapipe (1.4-1.8x over 4 x 4; 2 pixels or 16 channels slower).
const PIX: u32 = 8u;

fn kh_n() -> u32 {
    return select(p.kh, KSIZE, KSIZE != 0u);
}

fn kw_n() -> u32 {
    return select(p.kw, KSIZE, KSIZE != 0u);
}


// Four channel indices c0..c0+3 clamped to the last valid channel, times `stride`.
fn clamped4(c0: u32, count: u32, stride: u32) -> vec4<u32> {
    return vec4<u32>(min(c0, count - 1u), min(c0 + 1u, count - 1u), min(c0 + 2u, count - 1u), min(c0 + 3u, count - 1u)) * stride;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let pixels = p.n * p.oh * p.ow;
    if (wg.x * 256u + lid.x) * PIX >= pixels {
        return; // no pixel of this invocation exists (small planes leave most lanes idle)
    }
    let co0 = wg.y * 4u * CH_BLOCKS;
    let hw = p.h * p.w;
    let khw = kh_n() * kw_n();
    // Per output pixel: where its image starts and the top-left input coordinate it reads.
    var pix: array<u32, PIX>;
    var img: array<u32, PIX>;
    var ih0: array<i32, PIX>;
    var iw0: array<i32, PIX>;
    for (var j = 0u; j < PIX; j++) {
        pix[j] = (wg.x * 256u + lid.x) * PIX + j;
        let q = min(pix[j], pixels - 1u);
        let ow = q % p.ow;
        let t = q / p.ow;
        let oh = t % p.oh;
        let n = t / p.oh;
        img[j] = n * p.ci * hw;
        ih0[j] = i32(oh * STRIDE) - i32(p.pad);
        iw0[j] = i32(ow * STRIDE) - i32(p.pad);
    }
    var wrow: array<vec4<u32>, 2>;
    for (var b = 0u; b < CH_BLOCKS; b++) {
        wrow[b] = clamped4(co0 + 4u * b, p.co, p.ci * khw);
    }
    var acc: array<vec4<f32>, 16>; // [pixel j][channel block b] at j * CH_BLOCKS + b
    // Taps outside, channels inside: each pixel's input offset and padding mask are worked
    // out once per tap, so the channel loop is pure loads and FMAs.
    for (var kh = 0u; kh < kh_n(); kh++) {
        for (var kw = 0u; kw < kw_n(); kw++) {
            var off: array<u32, PIX>;
            var mask: array<f32, PIX>;
            for (var j = 0u; j < PIX; j++) {
                let ih = ih0[j] + i32(kh);
                let iw = iw0[j] + i32(kw);
                let inside = ih >= 0 && iw >= 0 && ih < i32(p.h) && iw < i32(p.w);
                off[j] = select(0u, img[j] + u32(ih) * p.w + u32(iw), inside);
                mask[j] = select(0.0, 1.0, inside);
            }
            var wk = kh * kw_n() + kw;
            for (var ci = 0u; ci < p.ci; ci++) {
                let plane = ci * hw;
                var xv: array<f32, PIX>;
                for (var j = 0u; j < PIX; j++) {
                    xv[j] = src[off[j] + plane] * mask[j];
                }
                for (var b = 0u; b < CH_BLOCKS; b++) {
                    let r = wrow[b] + wk;
                    let wv = vec4<f32>(other[r.x], other[r.y], other[r.z], other[r.w]);
                    for (var j = 0u; j < PIX; j++) {
                        acc[j * CH_BLOCKS + b] += xv[j] * wv;
                    }
                }
                wk += khw;
            }
        }
    }
    let ohw = p.oh * p.ow;
    for (var b = 0u; b < CH_BLOCKS; b++) {
        for (var j = 0u; j < PIX; j++) {
            store_pixel(pix[j], pixels, co0 + 4u * b, p.co, ohw, acc[j * CH_BLOCKS + b]);
        }
    }
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

@compute @workgroup_size(256)
fn input_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Phase (ph, pw) = (ih % s, iw % s) is fixed per z slice, so every pixel of this
    // invocation is reached by the same taps kh = kh0, kh0 + s, ... (and likewise kw); no tap
    // is visited that cannot contribute, and oh = (ih + p - kh) / s is exact.
    let ph = wg.z / STRIDE;
    let pw = wg.z % STRIDE;
    if ph >= p.h || pw >= p.w {
        return; // uniform over the workgroup
    }
    let hp = (p.h - ph + STRIDE - 1u) / STRIDE;
    let wp = (p.w - pw + STRIDE - 1u) / STRIDE;
    let pixels = p.n * hp * wp;
    if (wg.x * 256u + lid.x) * PIX >= pixels {
        return; // as in forward
    }
    let ci0 = wg.y * 4u * CH_BLOCKS;
    let ohw = p.oh * p.ow;
    let khw = kh_n() * kw_n();
    let kh0 = (ph + p.pad) % STRIDE;
    let kw0 = (pw + p.pad) % STRIDE;
    var pix: array<u32, PIX>;
    var img: array<u32, PIX>;
    var oh0: array<i32, PIX>; // (ih + pad - kh0) / s: output row reached by the first tap
    var ow0: array<i32, PIX>;
    for (var j = 0u; j < PIX; j++) {
        pix[j] = (wg.x * 256u + lid.x) * PIX + j;
        let q = min(pix[j], pixels - 1u);
        let jw = q % wp;
        let t = q / wp;
        let jh = t % hp;
        let n = t / hp;
        img[j] = n * p.co * ohw;
        oh0[j] = (i32(ph + jh * STRIDE + p.pad) - i32(kh0)) / i32(STRIDE);
        ow0[j] = (i32(pw + jw * STRIDE + p.pad) - i32(kw0)) / i32(STRIDE);
    }
    var wcol: array<vec4<u32>, 2>;
    for (var b = 0u; b < CH_BLOCKS; b++) {
        wcol[b] = clamped4(ci0 + 4u * b, p.ci, khw);
    }
    let wco = p.ci * khw;
    var acc: array<vec4<f32>, 16>; // [pixel j][channel block b] at j * CH_BLOCKS + b
    var dh = 0;
    for (var kh = kh0; kh < kh_n(); kh += STRIDE) {
        var dw = 0;
        for (var kw = kw0; kw < kw_n(); kw += STRIDE) {
            var off: array<u32, PIX>;
            var mask: array<f32, PIX>;
            for (var j = 0u; j < PIX; j++) {
                let oh = oh0[j] - dh;
                let ow = ow0[j] - dw;
                let inside = oh >= 0 && ow >= 0 && oh < i32(p.oh) && ow < i32(p.ow);
                off[j] = select(0u, img[j] + u32(oh) * p.ow + u32(ow), inside);
                mask[j] = select(0.0, 1.0, inside);
            }
            var wk = kh * kw_n() + kw;
            for (var co = 0u; co < p.co; co++) {
                let plane = co * ohw;
                var yv: array<f32, PIX>;
                for (var j = 0u; j < PIX; j++) {
                    yv[j] = src[off[j] + plane] * mask[j];
                }
                for (var b = 0u; b < CH_BLOCKS; b++) {
                    let r = wcol[b] + wk;
                    let wv = vec4<f32>(other[r.x], other[r.y], other[r.z], other[r.w]);
                    for (var j = 0u; j < PIX; j++) {
                        acc[j * CH_BLOCKS + b] += yv[j] * wv;
                    }
                }
                wk += wco;
            }
            dw += 1;
        }
        dh += 1;
    }
    let hw = p.h * p.w;
    for (var b = 0u; b < CH_BLOCKS; b++) {
        for (var j = 0u; j < PIX; j++) {
            store_phase(pix[j], pixels, hp, wp, ph, pw, ci0 + 4u * b, hw, acc[j * CH_BLOCKS + b]);
        }
    }
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
    let blocks = (p.ci + 4u * CH_BLOCKS - 1u) / (4u * CH_BLOCKS);
    let runs = p.kw / KW_RUN; // the host makes KW_RUN divide KW
    let cols = blocks * p.kh * runs;
    let co0 = (wg.y * WGY + lid.y) * CO_PER;
    let xb = wg.x * WGX + lid.x;
    if co0 >= p.co || xb >= cols {
        return;
    }
    let row_run = xb % (p.kh * runs);
    let ci0 = (xb / (p.kh * runs)) * 4u * CH_BLOCKS;
    let kh = row_run / runs;
    let kw0 = (row_run % runs) * KW_RUN;
    let dh = i32(kh) - i32(p.pad);
    let dw = i32(kw0) - i32(p.pad);
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let total = p.n * ohw;
    let split = wg.z;
    let start = split * p.chunk;
    let end = min(start + p.chunk, total);
    var xoff: array<vec4<u32>, 2>;
    for (var b = 0u; b < CH_BLOCKS; b++) {
        xoff[b] = clamped4(ci0 + 4u * b, p.ci, hw);
    }
    var yoff: array<u32, 16>;
    for (var c = 0u; c < CO_PER; c++) {
        yoff[c] = min(co0 + c, p.co - 1u) * ohw;
    }
    // [output channel c][tap t of the run][channel block b] at (c * KW_RUN + t) * CH_BLOCKS + b
    var acc: array<vec4<f32>, 32>;
    if start < end {
        // Walk output pixels in order, stepping (n, oh, ow) without divisions.
        var ow = start % p.ow;
        var oh = (start / p.ow) % p.oh;
        var n = start / ohw;
        for (var q = start; q < end; q++) {
            let ybase = n * p.co * ohw + oh * p.ow + ow;
            let ih = i32(oh * STRIDE) + dh;
            let iw0 = i32(ow * STRIDE) + dw;
            let row_inside = ih >= 0 && ih < i32(p.h);
            let row = n * p.ci * hw + u32(ih) * p.w;
            var xv: array<vec4<f32>, 8>; // [tap t][channel block b] at t * CH_BLOCKS + b
            for (var t = 0u; t < KW_RUN; t++) {
                let iw = iw0 + i32(t);
                let inside = row_inside && iw >= 0 && iw < i32(p.w);
                let off = select(0u, row + u32(iw), inside);
                let m = select(0.0, 1.0, inside);
                for (var b = 0u; b < CH_BLOCKS; b++) {
                    let r = xoff[b] + off;
                    xv[t * CH_BLOCKS + b] = vec4<f32>(src[r.x], src[r.y], src[r.z], src[r.w]) * m;
                }
            }
            for (var c = 0u; c < CO_PER; c++) {
                let dy = other[ybase + yoff[c]];
                for (var i = 0u; i < KW_RUN * CH_BLOCKS; i++) {
                    acc[c * KW_RUN * CH_BLOCKS + i] += dy * xv[i];
                }
            }
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
    for (var c = 0u; c < CO_PER; c++) {
        for (var t = 0u; t < KW_RUN; t++) {
            for (var b = 0u; b < CH_BLOCKS; b++) {
                let v = acc[(c * KW_RUN + t) * CH_BLOCKS + b];
                store_wrow(base, co0 + c, ci0 + 4u * b, kh * p.kw + kw0 + t, v);
            }
        }
    }
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

// ---- Workgroup-tiled variant, for GPUs ----
// The same three products as one implicit GEMM C[M,N] = A[M,K] B[K,N] each, computed as the
// tiled matmul in matmul.wgsl does (64x64 tiles of C, steps of 16 along K through workgroup
// memory, an invocation owning rows ly + 16 i and columns lx + 16 j), with A and B gathered
// from the tensors on the fly. DIRECTION picks the product:
// - 0 forward:     M = Co, N = N*OH*OW pixels, K = Ci*KH*KW; A = W, B = the im2col of X.
// - 1 input_grad:  M = Ci, N = N*H*W pixels, K = Co*KH*KW; A = W with its channel axes swapped,
//                  B = dY at oh = (ih + pad - kh) / stride where that divides exactly.
// - 2 weight_grad: M = Co, N = Ci*KH*KW, K = the output pixels of split z (chunk of them);
//                  A = dY, B = the im2col of X transposed; each split writes its own slice.
// Each invocation copies the same four B columns (forward, input_grad) or rows (weight_grad)
// at every step, so it decodes their coordinates once, before the loop; in the loop only the
// K index is decoded. Stride and kernel size are read from the parameters.
// grid = (ceil(N/64), ceil(M/(16 ROWS)), splits for weight_grad else 1).

override DIRECTION: u32 = 0u;
// Rows of C per invocation (1, 2 or 4): the tile is 16 * ROWS rows by 64 columns, so that a
// layer with 16 or 32 channels along M does not fill three quarters of a 64-row tile with
// rows it never stores.
override ROWS: u32 = 4u;

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
const TILE_ROW: u32 = 65u; // padded so the transposed copy-in does not hit one bank

var<workgroup> tile_a: array<f32, 1040>; // [kk][row]
var<workgroup> tile_b: array<f32, 1040>; // [kk][col]

// The GEMM sizes (M, N) of this direction.
fn gemm_mn() -> vec2<u32> {
    switch DIRECTION {
        case 0u: { return vec2<u32>(p.co, p.n * p.oh * p.ow); }
        case 1u: { return vec2<u32>(p.ci, p.n * p.h * p.w); }
        default: { return vec2<u32>(p.co, p.ci * p.kh * p.kw); }
    }
}

// X at plane offset `plane`, row ih, column iw; zero outside the plane.
fn x_at(plane: u32, ih: i32, iw: i32) -> f32 {
    if ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w) {
        return 0.0;
    }
    return src[plane + u32(ih) * p.w + u32(iw)];
}

// A[row, k] (k < k_end; row may be past M: clamped, and never stored).
fn gemm_a(row: u32, k: u32) -> f32 {
    let khw = p.kh * p.kw;
    let r = min(row, gemm_mn().x - 1u);
    switch DIRECTION {
        case 0u: { return other[r * p.ci * khw + k]; }
        case 1u: { return other[((k / khw) * p.ci + r) * khw + k % khw]; }
        default: {
            let ohw = p.oh * p.ow;
            return other[((k / ohw) * p.co + r) * ohw + k % ohw];
        }
    }
}

// What an invocation decodes once about one B column (forward, input_grad) or B row
// (weight_grad) it copies: a base offset and a (row, column) origin in its plane.
struct Gather {
    base: u32,
    y: i32,
    x: i32,
}

// The fixed coordinate `i` of B: an output pixel (forward), an input pixel (input_grad) or a
// (channel, tap) pair (weight_grad).
fn gather_of(i: u32) -> Gather {
    let khw = p.kh * p.kw;
    switch DIRECTION {
        case 0u: {
            let q = min(i, p.n * p.oh * p.ow - 1u);
            let ow = q % p.ow;
            let oh = (q / p.ow) % p.oh;
            return Gather((q / (p.ow * p.oh)) * p.ci * p.h * p.w, i32(oh * p.stride) - i32(p.pad), i32(ow * p.stride) - i32(p.pad));
        }
        case 1u: {
            let q = min(i, p.n * p.h * p.w - 1u);
            let iw = q % p.w;
            let ih = (q / p.w) % p.h;
            return Gather((q / (p.w * p.h)) * p.co * p.oh * p.ow, i32(ih + p.pad), i32(iw + p.pad));
        }
        default: {
            let c = min(i, p.ci * khw - 1u);
            let t = c % khw;
            return Gather((c / khw) * p.h * p.w, i32(t / p.kw) - i32(p.pad), i32(t % p.kw) - i32(p.pad));
        }
    }
}

// B at K index k for the decoded coordinate g, zero in the padding (k < k_end).
fn gemm_b(g: Gather, k: u32) -> f32 {
    let khw = p.kh * p.kw;
    switch DIRECTION {
        case 0u: {
            let t = k % khw;
            return x_at(g.base + (k / khw) * p.h * p.w, g.y + i32(t / p.kw), g.x + i32(t % p.kw));
        }
        case 1u: {
            let t = k % khw;
            let sh = g.y - i32(t / p.kw);
            let sw = g.x - i32(t % p.kw);
            let s = i32(p.stride);
            if sh < 0 || sw < 0 || sh % s != 0 || sw % s != 0 || sh / s >= i32(p.oh) || sw / s >= i32(p.ow) {
                return 0.0;
            }
            return src[g.base + ((k / khw) * p.oh + u32(sh / s)) * p.ow + u32(sw / s)];
        }
        default: {
            let ow = k % p.ow;
            let oh = (k / p.ow) % p.oh;
            let plane = (k / (p.ow * p.oh)) * p.ci * p.h * p.w + g.base;
            return x_at(plane, i32(oh * p.stride) + g.y, i32(ow * p.stride) + g.x);
        }
    }
}

@compute @workgroup_size(16, 16)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row0 = wg.y * 16u * ROWS;
    let col0 = wg.x * TILE;
    var k_begin = 0u;
    var k_end = p.co * p.kh * p.kw;
    if DIRECTION == 0u {
        k_end = p.ci * p.kh * p.kw;
    } else if DIRECTION == 2u {
        k_begin = wg.z * p.chunk;
        k_end = min(k_begin + p.chunk, p.n * p.oh * p.ow);
    }
    // Copy-in element e = li + 256 j of each tile. Consecutive invocations copy consecutive
    // addresses: along K for A (and for weight_grad's B, whose K runs along output pixels),
    // along the pixels of N for the other B. Either way an invocation's (row or column, k
    // offset) pairs are the same at every step.
    let b_along_k = DIRECTION == 2u;
    let ka = li % TILE_K;
    var kb = li / TILE;
    if b_along_k {
        kb = li % TILE_K;
    }
    var gathers: array<Gather, 4>;
    var b_in: array<bool, 4>;
    for (var j = 0u; j < 4u; j++) {
        var cb = (li + 256u * j) % TILE;
        if b_along_k {
            cb = (li + 256u * j) / TILE_K;
        }
        gathers[j] = gather_of(col0 + cb);
        b_in[j] = col0 + cb < gemm_mn().y;
    }
    var acc: array<vec4<f32>, 4>; // [row i < ROWS] over columns j
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (var j = 0u; j < 4u; j++) {
            let e = li + 256u * j;
            if j < ROWS {
                let r = e / TILE_K;
                let ak = k0 + ka;
                tile_a[ka * TILE_ROW + r] = select(0.0, gemm_a(row0 + r, min(ak, k_end - 1u)), ak < k_end);
            }
            var cb = e % TILE;
            var bk = kb + 4u * j; // e / TILE
            if b_along_k {
                cb = e / TILE_K;
                bk = kb;
            }
            let k = k0 + bk;
            let v = gemm_b(gathers[j], min(k, k_end - 1u));
            tile_b[bk * TILE_ROW + cb] = select(0.0, v, k < k_end && b_in[j]);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let t = kk * TILE_ROW;
            let bv = vec4<f32>(tile_b[t + lid.x], tile_b[t + lid.x + 16u], tile_b[t + lid.x + 32u], tile_b[t + lid.x + 48u]);
            for (var i = 0u; i < ROWS; i++) {
                acc[i] += tile_a[t + lid.y + 16u * i] * bv;
            }
        }
        workgroupBarrier();
    }
    let mn = gemm_mn();
    for (var i = 0u; i < ROWS; i++) {
        let row = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if row < mn.x && col < mn.y {
                out[tiled_index(row, col, wg.z)] = acc[i][j];
            }
        }
    }
}

// Where C[row, col] goes: an NCHW pixel for forward and input_grad, split z's slice of dW.
fn tiled_index(row: u32, col: u32, split: u32) -> u32 {
    switch DIRECTION {
        case 0u: {
            let ohw = p.oh * p.ow;
            return ((col / ohw) * p.co + row) * ohw + col % ohw;
        }
        case 1u: {
            let hw = p.h * p.w;
            return ((col / hw) * p.ci + row) * hw + col % hw;
        }
        default: { return (split * p.co + row) * p.ci * p.kh * p.kw + col; }
    }
}
