// Counts the non-finite values (NaN, +inf, -inf) of an f32 tensor, read as raw bits: a value
// is non-finite when its exponent bits are all ones. Testing bits rather than `x != x` keeps
// the check valid on compilers that assume floats are finite and fold such tests away.
//
// Dispatch geometry: one workgroup of 256 invocations per tensor; each invocation counts a
// strided slice, a shared-memory tree adds the 256 counts, and invocation 0 writes the total
// into out[p.slot], so many tensors can be checked into one buffer and read back at once.

struct Params {
    len: u32,
    slot: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> bits: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

var<workgroup> partial: array<u32, 256>;

const EXPONENT: u32 = 0x7f800000u;

@compute @workgroup_size(256)
fn count_nonfinite(@builtin(local_invocation_id) lid: vec3<u32>) {
    var n = 0u;
    for (var i = lid.x; i < p.len; i += 256u) {
        n += select(0u, 1u, (bits[i] & EXPONENT) == EXPONENT);
    }
    partial[lid.x] = n;
    workgroupBarrier();
    for (var width = 128u; width > 0u; width >>= 1u) {
        if lid.x < width {
            partial[lid.x] += partial[lid.x + width];
        }
        workgroupBarrier();
    }
    if lid.x == 0u {
        out[p.slot] = partial[0];
    }
}
