// Channel sums: db[c] (+)= sum over outer and inner of dy seen as [OUTER, C, INNER]
// (the bias gradient of linear layers, INNER = 1, and of convolutions, INNER = H*W).
// One workgroup per channel; each invocation sums a strided slice sequentially, then a
// fixed-order tree: deterministic run to run, no atomics.

struct Params {
    outer: u32,
    c: u32,
    inner: u32,
    accumulate: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> db: array<f32>;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn bias_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) lid: vec3u) {
    let ch = wid.x + wid.y * nwg.x;   // uniform across the workgroup
    let count = p.outer * p.inner;
    var s = 0.0;
    if ch < p.c {
        for (var e = lid.x; e < count; e += WG) {
            let o = e / p.inner;
            let i = e - o * p.inner;
            s += dy[(o * p.c + ch) * p.inner + i];
        }
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid.x < half { partial[lid.x] += partial[lid.x + half]; }
        workgroupBarrier();
    }
    if lid.x == 0u && ch < p.c {
        db[ch] = select(0.0, db[ch], p.accumulate != 0u) + partial[0];
    }
}

// ---- splitk_sum: out[i] (+)= sum over s of part[s * n + i], the slices of a split-K GEMM
// (shaders/gemm.wgsl, SPLIT_K), added in slice order: deterministic. Params reuse:
// outer = number of slices, c = n (elements per slice), inner = columns of the [rows,
// columns] output, accumulate = gemm.wgsl's flags (bit 0 accumulate, bit 1 ReLU, bits 2-3
// bias per row 1 or per column 2): the epilogue the split GEMM left out. Bit 5: the GEMM
// also summed its A rows (a bias gradient) per slice into part's tail, [slices][rows] at
// slices * n; invocations n .. n + rows add them into db (bit 4: accumulate).
@group(0) @binding(3) var<storage, read> part: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> sbias: array<f32>;
@group(0) @binding(6) var<storage, read_write> sdb: array<f32>;

@compute @workgroup_size(WG)
fn splitk_sum(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_id) lid: vec3u) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
    let rows = p.c / p.inner;
    if i >= p.c {
        let j = i - p.c;
        if (p.accumulate & 32u) == 0u || j >= rows { return; }
        var g = 0.0;
        for (var z = 0u; z < p.outer; z++) { g += part[p.outer * p.c + z * rows + j]; }
        if (p.accumulate & 16u) != 0u { g += sdb[j]; }
        sdb[j] = g;
        return;
    }
    var s = 0.0;
    for (var z = 0u; z < p.outer; z++) { s += part[z * p.c + i]; }
    if (p.accumulate & 1u) != 0u { s += out[i]; }
    let bias_mode = (p.accumulate >> 2u) & 3u;
    if bias_mode == 1u { s += sbias[i / p.inner]; }
    if bias_mode == 2u { s += sbias[i % p.inner]; }
    if (p.accumulate & 2u) != 0u { s = max(s, 0.0); }
    out[i] = s;
}
