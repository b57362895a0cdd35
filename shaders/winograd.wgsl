// Winograd minimal filtering F(2x2, 3x3) for 3x3 stride-1 convolutions: each 2x2 output tile
// is A^T [ (G g G^T) . (B^T d B) ] A, where d is the 4x4 input patch under the tile and g the
// 3x3 filter. The element-wise products, summed over input channels, are 16 independent
// matrix products [K, C] x [C, P] (P = tiles), which the matmul kernel runs as one batch; the
// three entry points here are the transforms around them.
//
// Layouts: V[16][C][P] (input transform), U[16][K][C] (filter transform), M[16][K][P]
// (products), y[N][K][OH][OW]. F(4x4)'s input transform also serves the weight gradient,
// which adds two transforms, the adjoints of the output and filter transforms (dM = A dy A^T
// and dg = G^T dU G), around products dU = dM V^T summed over tiles (weight_grad_products4). Tile p = (n * tiles_h + ty) * tiles_w + tx covers output rows
// 2ty, 2ty+1 and columns 2tx, 2tx+1, and reads input rows 2ty - pad .. 2ty - pad + 3 (zeros
// outside the image). One invocation per (tile, channel) pair; no workgroup memory.
//
// FLIP makes the filter transform read w [C][K][3][3] rotated by 180 degrees with its two
// channel axes swapped: the input gradient of a 3x3 stride-1 convolution is the convolution
// of dy with that filter (and padding 2 - pad).

struct Params {
    n: u32,
    ci: u32,        // input channels C of this convolution
    h: u32,
    w: u32,
    co: u32,        // output channels K
    oh: u32,
    ow: u32,
    pad: u32,
    tiles_h: u32,
    tiles_w: u32,
    // log2 of Q, the lanes that share one 8x8 block of the weight gradient's products
    // (weight_grad_products4); unused by the other entry points.
    lanes_log2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

override FLIP: bool = false;

fn tiles() -> u32 {
    return p.n * p.tiles_h * p.tiles_w;
}

// a / d for a < 2^24 (the host keeps P below it) without an integer division, which
// lavapipe executes one lane at a time: the float quotient is off by at most one.
fn div_small(a: u32, d: u32) -> u32 {
    var q = u32(f32(a) / f32(d));
    if q * d > a {
        q -= 1u;
    } else if (q + 1u) * d <= a {
        q += 1u;
    }
    return q;
}

// Tile t's column, row and image.
fn tile_at(t: u32) -> vec3<u32> {
    let row = div_small(t, p.tiles_w); // n * tiles_h + ty
    let n = div_small(row, p.tiles_h);
    return vec3<u32>(t - row * p.tiles_w, row - n * p.tiles_h, n);
}

fn input_at(base: u32, row: i32, col: i32) -> f32 {
    if row < 0 || col < 0 || row >= i32(p.h) || col >= i32(p.w) {
        return 0.0;
    }
    return src[base + u32(row) * p.w + u32(col)];
}

// Filter tap (a, b) from input channel c to output channel k, as both filter transforms read
// it: w [K][C][3][3], or under FLIP w [C][K][3][3] rotated by 180 degrees.
fn filter_tap(c: u32, k: u32, a: u32, b: u32) -> f32 {
    if FLIP {
        return src[((c * p.co + k) * 3u + (2u - a)) * 3u + (2u - b)];
    }
    return src[((k * p.ci + c) * 3u + a) * 3u + b];
}

// x [N][C][H][W] -> V[16][C][P]: V = B^T d B with
// B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
@compute @workgroup_size(64)
fn input_transform(@builtin(global_invocation_id) gid: vec3<u32>) {
    let np = tiles();
    let t = gid.x;
    let c = gid.y;
    if t >= np || c >= p.ci {
        return;
    }
    let at = tile_at(t);
    let base = (at.z * p.ci + c) * p.h * p.w;
    let r0 = i32(2u * at.y) - i32(p.pad);
    let c0 = i32(2u * at.x) - i32(p.pad);
    // Rows of B^T d, one column j at a time.
    var bd: array<vec4<f32>, 4>; // bd[i] = row i of B^T d
    var d: array<vec4<f32>, 4>;
    for (var i = 0; i < 4; i++) {
        d[i] = vec4<f32>(
            input_at(base, r0 + i, c0),
            input_at(base, r0 + i, c0 + 1),
            input_at(base, r0 + i, c0 + 2),
            input_at(base, r0 + i, c0 + 3),
        );
    }
    bd[0] = d[0] - d[2];
    bd[1] = d[1] + d[2];
    bd[2] = d[2] - d[1];
    bd[3] = d[1] - d[3];
    let stride = p.ci * np;
    let o = c * np + t;
    for (var i = 0u; i < 4u; i++) {
        let r = bd[i];
        // (row of B^T d) B: columns combine as the rows did.
        let v = vec4<f32>(r.x - r.z, r.y + r.z, r.z - r.y, r.y - r.w);
        dst[(i * 4u + 0u) * stride + o] = v.x;
        dst[(i * 4u + 1u) * stride + o] = v.y;
        dst[(i * 4u + 2u) * stride + o] = v.z;
        dst[(i * 4u + 3u) * stride + o] = v.w;
    }
}

// w [K][C][3][3] (FLIP: [C][K][3][3], rotated) -> U[16][K][C]: U = G g G^T with
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1].
@compute @workgroup_size(64)
fn filter_transform(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let k = gid.y;
    if c >= p.ci || k >= p.co {
        return;
    }
    var g: array<vec3<f32>, 3>;
    for (var a = 0u; a < 3u; a++) {
        var row = vec3<f32>(0.0);
        for (var b = 0u; b < 3u; b++) {
            row[b] = filter_tap(c, k, a, b);
        }
        g[a] = row;
    }
    // G g: 4 rows of 3.
    var gg: array<vec3<f32>, 4>;
    gg[0] = g[0];
    gg[1] = 0.5 * (g[0] + g[1] + g[2]);
    gg[2] = 0.5 * (g[0] - g[1] + g[2]);
    gg[3] = g[2];
    let stride = p.co * p.ci;
    let o = k * p.ci + c;
    for (var i = 0u; i < 4u; i++) {
        let r = gg[i];
        let u = vec4<f32>(r.x, 0.5 * (r.x + r.y + r.z), 0.5 * (r.x - r.y + r.z), r.z);
        dst[(i * 4u + 0u) * stride + o] = u.x;
        dst[(i * 4u + 1u) * stride + o] = u.y;
        dst[(i * 4u + 2u) * stride + o] = u.z;
        dst[(i * 4u + 3u) * stride + o] = u.w;
    }
}

// M[16][K][P] -> y [N][K][OH][OW]: Y = A^T m A with A^T = [1 1 1 0; 0 1 -1 -1].
@compute @workgroup_size(64)
fn output_transform(@builtin(global_invocation_id) gid: vec3<u32>) {
    let np = tiles();
    let t = gid.x;
    let k = gid.y;
    if t >= np || k >= p.co {
        return;
    }
    let stride = p.co * np;
    let o = k * np + t;
    var m: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        m[i] = vec4<f32>(
            src[(i * 4u + 0u) * stride + o],
            src[(i * 4u + 1u) * stride + o],
            src[(i * 4u + 2u) * stride + o],
            src[(i * 4u + 3u) * stride + o],
        );
    }
    // A^T m: 2 rows of 4.
    let r0 = m[0] + m[1] + m[2];
    let r1 = m[1] - m[2] - m[3];
    let y00 = r0.x + r0.y + r0.z;
    let y01 = r0.y - r0.z - r0.w;
    let y10 = r1.x + r1.y + r1.z;
    let y11 = r1.y - r1.z - r1.w;
    let at = tile_at(t);
    let row = 2u * at.y;
    let col = 2u * at.x;
    let base = (at.z * p.co + k) * p.oh * p.ow;
    dst[base + row * p.ow + col] = y00;
    if col + 1u < p.ow {
        dst[base + row * p.ow + col + 1u] = y01;
    }
    if row + 1u < p.oh {
        dst[base + (row + 1u) * p.ow + col] = y10;
        if col + 1u < p.ow {
            dst[base + (row + 1u) * p.ow + col + 1u] = y11;
        }
    }
}

// F(4x4, 3x3): 6x6 input patches (rows 4ty - pad ..), 36 transformed values per tile and
// channel, 4x4 output tiles. B^T, G and A^T are those of Lavin and Gray (2016) for the
// interpolation points 0, 1, -1, 2, -2 and infinity; one invocation per (tile, channel).

fn bt6(d: array<f32, 6>) -> array<f32, 6> {
    return array<f32, 6>(
        4.0 * d[0] - 5.0 * d[2] + d[4],
        -4.0 * d[1] - 4.0 * d[2] + d[3] + d[4],
        4.0 * d[1] - 4.0 * d[2] - d[3] + d[4],
        -2.0 * d[1] - d[2] + 2.0 * d[3] + d[4],
        2.0 * d[1] - d[2] - 2.0 * d[3] + d[4],
        4.0 * d[1] - 5.0 * d[3] + d[5],
    );
}

fn g6(g: array<f32, 3>) -> array<f32, 6> {
    return array<f32, 6>(
        0.25 * g[0],
        -(g[0] + g[1] + g[2]) / 6.0,
        -(g[0] - g[1] + g[2]) / 6.0,
        g[0] / 24.0 + g[1] / 12.0 + g[2] / 6.0,
        g[0] / 24.0 - g[1] / 12.0 + g[2] / 6.0,
        g[2],
    );
}

fn at4(m: array<f32, 6>) -> array<f32, 4> {
    return array<f32, 4>(
        m[0] + m[1] + m[2] + m[3] + m[4],
        m[1] - m[2] + 2.0 * (m[3] - m[4]),
        m[1] + m[2] + 4.0 * (m[3] + m[4]),
        m[1] - m[2] + 8.0 * (m[3] - m[4]) + m[5],
    );
}

// Where value e (of 36) of channel c (of `channels`) for tile t goes: [36][channels][P].
fn slot(e: u32, c: u32, channels: u32, t: u32) -> u32 {
    return (e * channels + c) * tiles() + t;
}

// x [N][C][H][W] -> V[36][C][P]: V = B^T d B.
@compute @workgroup_size(64)
fn input_transform4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let np = tiles();
    let t = gid.x;
    let c = gid.y;
    if t >= np || c >= p.ci {
        return;
    }
    let at = tile_at(t);
    let base = (at.z * p.ci + c) * p.h * p.w;
    let r0 = i32(4u * at.y) - i32(p.pad);
    let c0 = i32(4u * at.x) - i32(p.pad);
    // Columns of B^T d: transform each column of the patch.
    var cols: array<array<f32, 6>, 6>; // cols[j] = B^T (column j of d)
    for (var j = 0; j < 6; j++) {
        var col: array<f32, 6>;
        for (var i = 0; i < 6; i++) {
            col[i] = input_at(base, r0 + i, c0 + j);
        }
        cols[j] = bt6(col);
    }
    for (var i = 0u; i < 6u; i++) {
        var row: array<f32, 6>;
        for (var j = 0u; j < 6u; j++) {
            row[j] = cols[j][i];
        }
        let v = bt6(row);
        for (var j = 0u; j < 6u; j++) {
            dst[slot(i * 6u + j, c, p.ci, t)] = v[j];
        }
    }
}

// w [K][C][3][3] (FLIP: [C][K][3][3], rotated) -> U[36][K][C]: U = G g G^T.
@compute @workgroup_size(64)
fn filter_transform4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let k = gid.y;
    if c >= p.ci || k >= p.co {
        return;
    }
    var cols: array<array<f32, 6>, 3>; // cols[b] = G (column b of g)
    for (var b = 0u; b < 3u; b++) {
        var col: array<f32, 3>;
        for (var a = 0u; a < 3u; a++) {
            col[a] = filter_tap(c, k, a, b);
        }
        cols[b] = g6(col);
    }
    let stride = p.co * p.ci;
    let o = k * p.ci + c;
    for (var i = 0u; i < 6u; i++) {
        let u = g6(array<f32, 3>(cols[0][i], cols[1][i], cols[2][i]));
        for (var j = 0u; j < 6u; j++) {
            dst[(i * 6u + j) * stride + o] = u[j];
        }
    }
}

// M[36][K][P] -> y [N][K][OH][OW]: Y = A^T m A.
@compute @workgroup_size(64)
fn output_transform4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let np = tiles();
    let t = gid.x;
    let k = gid.y;
    if t >= np || k >= p.co {
        return;
    }
    let stride = p.co * np;
    let o = k * np + t;
    var cols: array<array<f32, 4>, 6>; // cols[j] = A^T (column j of m)
    for (var j = 0u; j < 6u; j++) {
        var col: array<f32, 6>;
        for (var i = 0u; i < 6u; i++) {
            col[i] = src[(i * 6u + j) * stride + o];
        }
        cols[j] = at4(col);
    }
    let at = tile_at(t);
    let base = (at.z * p.co + k) * p.oh * p.ow;
    for (var i = 0u; i < 4u; i++) {
        let row = 4u * at.y + i;
        if row >= p.oh {
            break;
        }
        let y = at4(array<f32, 6>(cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i], cols[5][i]));
        for (var j = 0u; j < 4u; j++) {
            let col = 4u * at.x + j;
            if col < p.ow {
                dst[base + row * p.ow + col] = y[j];
            }
        }
    }
}

// ---- F(4x4, 3x3) weight gradient ----

// A y for the 6x4 matrix A (the transpose of at4's A^T).
fn a6(y: array<f32, 4>) -> array<f32, 6> {
    return array<f32, 6>(
        y[0],
        y[0] + y[1] + y[2] + y[3],
        y[0] - y[1] + y[2] - y[3],
        y[0] + 2.0 * y[1] + 4.0 * y[2] + 8.0 * y[3],
        y[0] - 2.0 * y[1] + 4.0 * y[2] - 8.0 * y[3],
        y[3],
    );
}

// G^T u for the 6x3 matrix G of g6.
fn gt3(u: array<f32, 6>) -> array<f32, 3> {
    return array<f32, 3>(
        0.25 * u[0] - (u[1] + u[2]) / 6.0 + (u[3] + u[4]) / 24.0,
        (u[2] - u[1]) / 6.0 + (u[3] - u[4]) / 12.0,
        (u[3] + u[4] - u[1] - u[2]) / 6.0 + u[5],
    );
}

// dy [N][K][OH][OW] -> dM[36][K][P]: dM = A dy A^T over each 4x4 tile of dy (zero past the
// plane), the adjoint of output_transform4.
@compute @workgroup_size(64)
fn output_grad_transform4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let np = tiles();
    let t = gid.x;
    let k = gid.y;
    if t >= np || k >= p.co {
        return;
    }
    let at = tile_at(t);
    let base = (at.z * p.co + k) * p.oh * p.ow;
    // rows[i] = A (row i of the dy tile), i.e. dy A^T by rows.
    var rows: array<array<f32, 6>, 4>;
    for (var i = 0u; i < 4u; i++) {
        let row = 4u * at.y + i;
        var y: array<f32, 4>;
        for (var j = 0u; j < 4u; j++) {
            let col = 4u * at.x + j;
            if row < p.oh && col < p.ow {
                y[j] = src[base + row * p.ow + col];
            }
        }
        rows[i] = a6(y);
    }
    for (var j = 0u; j < 6u; j++) {
        let m = a6(array<f32, 4>(rows[0][j], rows[1][j], rows[2][j], rows[3][j]));
        for (var i = 0u; i < 6u; i++) {
            dst[slot(i * 6u + j, k, p.co, t)] = m[i];
        }
    }
}

// The second operand of weight_grad_products4 (bound after `dst`).
@group(0) @binding(3) var<storage, read> src_v: array<f32>;

// dM[36][K][P] (src) and V[36][C][P] (src_v) -> dst[Q][36][K][C], partial sums of
// dU[e] = dM[e] V[e]^T: lane q of Q sums tiles q, q + Q, q + 2Q, ..., so neighbouring lanes
// read neighbouring words, and the host sums over Q. Each invocation owns an 8x8 block of
// (k, c); grid = (ceil(Q * ceil(C/8) / 64), ceil(K/8), 36). A plain batched matmul gives
// these products (16-64 outputs on a side, thousands of tiles deep) one workgroup each with
// 4-64 busy lanes; this shape fills every lane.
@compute @workgroup_size(64)
fn weight_grad_products4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let lanes = 1u << p.lanes_log2;
    let q = gid.x & (lanes - 1u);
    let c0 = (gid.x >> p.lanes_log2) * 8u;
    let k0 = gid.y * 8u;
    let e = gid.z;
    if c0 >= p.ci || k0 >= p.co {
        return;
    }
    let np = tiles();
    // Row starts, clamped so that every load is in bounds; clamped rows are never stored.
    var kr: array<u32, 8>;
    var cr: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        kr[i] = (e * p.co + min(k0 + i, p.co - 1u)) * np;
        cr[i] = (e * p.ci + min(c0 + i, p.ci - 1u)) * np;
    }
    var acc: array<vec4<f32>, 16>; // [k row i][c half h] at 2i + h
    for (var t = q; t < np; t += lanes) {
        let v0 = vec4<f32>(src_v[cr[0] + t], src_v[cr[1] + t], src_v[cr[2] + t], src_v[cr[3] + t]);
        let v1 = vec4<f32>(src_v[cr[4] + t], src_v[cr[5] + t], src_v[cr[6] + t], src_v[cr[7] + t]);
        for (var i = 0u; i < 8u; i++) {
            let m = src[kr[i] + t];
            acc[2u * i] += m * v0;
            acc[2u * i + 1u] += m * v1;
        }
    }
    let base = (q * 36u + e) * p.co * p.ci;
    for (var i = 0u; i < 8u; i++) {
        let k = k0 + i;
        if k >= p.co {
            break;
        }
        for (var j = 0u; j < 8u; j++) {
            if c0 + j < p.ci {
                dst[base + k * p.ci + c0 + j] = acc[2u * i + j / 4u][j % 4u];
            }
        }
    }
}

// dU[36][K][C] -> dw [K][C][3][3]: dg = G^T dU G, the adjoint of filter_transform4.
@compute @workgroup_size(64)
fn filter_grad_transform4(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let k = gid.y;
    if c >= p.ci || k >= p.co {
        return;
    }
    let stride = p.co * p.ci;
    let o = k * p.ci + c;
    var rows: array<array<f32, 3>, 6>; // rows[i] = G^T (row i of dU), i.e. dU G by rows
    for (var i = 0u; i < 6u; i++) {
        var u: array<f32, 6>;
        for (var j = 0u; j < 6u; j++) {
            u[j] = src[(i * 6u + j) * stride + o];
        }
        rows[i] = gt3(u);
    }
    for (var b = 0u; b < 3u; b++) {
        let g = gt3(array<f32, 6>(rows[0][b], rows[1][b], rows[2][b], rows[3][b], rows[4][b], rows[5][b]));
        for (var a = 0u; a < 3u; a++) {
            dst[(o * 3u + a) * 3u + b] = g[a];
        }
    }
}
