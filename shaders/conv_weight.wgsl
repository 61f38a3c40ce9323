// Direct weight gradient of a convolution with few weights per output channel
// (ops/conv_weight.rs): conv1 of the MNIST CNN has 16 x 1 x 5 x 5 weights and a reduction
// over 64 x 28 x 28 positions, where the implicit GEMM computes a 64-column tile for 25
// columns and gathers its B operand through divisions.
//
// A workgroup owns one slice: TILES consecutive tiles of (image n, band of BAND output
// rows). For each tile it stages dy[n, :, band rows, :] and the input rows under them (zero
// padded, each row PITCH floats apart) in workgroup memory, then every invocation adds, for
// its item, the products over the tile's positions in a fixed order:
//   item j < COUT * TAPS:             dw[co, ci, r, s] += dy[co, oy, ox] * x[ci, oy*st + r - pad, ox*st + s - pad]
//   COUT * TAPS <= j < COUT*(TAPS+1): db[co] += dy[co, oy, ox]  (when the bias gradient is asked for)
// Items beyond one workgroup's invocations take further rounds (each re-stages the tiles),
// so an invocation holds one accumulator, never an indexed array of them. The slice's sums
// go to part in reduce.wgsl's splitk_sum layout ([slices][COUT * TAPS], then
// [slices][COUT]), and splitk_sum adds the slices in order: deterministic.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, r: u32,
    s: u32, stride: u32, pad: u32,
    // output rows per tile, tiles per workgroup, the staged input row's length in floats
    band: u32, tiles: u32, pitch: u32,
    // 1: also the bias gradient; the number of slices (workgroups)
    bias: u32, slices: u32,
}

override WG: u32 = 256u;

// the staged tile: dy [COUT][BAND][OW], then x [CIN][(BAND - 1) * stride + R][PITCH]
const TILE: u32 = 4096u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

var<workgroup> tile: array<f32, TILE>;

@compute @workgroup_size(WG)
fn conv_weight_small(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
    let slice = wid.x;
    let taps = p.cin * p.r * p.s;
    let weights = p.cout * taps;
    let items = weights + select(0u, p.cout, p.bias != 0u);
    let bands = (p.oh + p.band - 1u) / p.band;
    let in_rows = (p.band - 1u) * p.stride + p.r;
    let plane = p.band * p.ow;
    let dy_len = p.cout * plane;
    let x_len = p.cin * in_rows * p.pitch;
    let first = slice * p.tiles;
    let last = min(first + p.tiles, p.batch * bands);
    let rounds = (items + WG - 1u) / WG;
    for (var round = 0u; round < rounds; round++) {
        let j = round * WG + lid;
        // the item's place in the staged tile (unused past `items`)
        var dy_at = 0u;
        var x_at = 0u;
        if j < weights {
            let co = j / taps;
            let t = j % taps;
            dy_at = co * plane;
            x_at = dy_len + ((t / (p.r * p.s)) * in_rows + (t / p.s) % p.r) * p.pitch + t % p.s;
        } else {
            dy_at = (j - weights) * plane;
        }
        var acc = 0.0;
        for (var tile_id = first; tile_id < last; tile_id++) {
            let n = tile_id / bands;
            let oy0 = (tile_id % bands) * p.band;
            let rows = min(p.band, p.oh - oy0);
            workgroupBarrier();
            for (var i = lid; i < dy_len; i += WG) {
                let co = i / plane;
                let oy = oy0 + (i % plane) / p.ow;
                var v = 0.0;
                if oy < p.oh {
                    v = dy[((n * p.cout + co) * p.oh + oy) * p.ow + i % p.ow];
                }
                tile[i] = v;
            }
            for (var i = lid; i < x_len; i += WG) {
                let ci = i / (in_rows * p.pitch);
                let iy = i32(oy0 * p.stride + (i / p.pitch) % in_rows) - i32(p.pad);
                let ix = i32(i % p.pitch) - i32(p.pad);
                var v = 0.0;
                if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
                    v = x[((n * p.cin + ci) * p.h + u32(iy)) * p.w + u32(ix)];
                }
                tile[dy_len + i] = v;
            }
            workgroupBarrier();
            if j < weights {
                for (var oy = 0u; oy < rows; oy++) {
                    let d = dy_at + oy * p.ow;
                    let xr = x_at + oy * p.stride * p.pitch;
                    for (var ox = 0u; ox < p.ow; ox++) {
                        acc += tile[d + ox] * tile[xr + ox * p.stride];
                    }
                }
            } else if j < items {
                for (var q = 0u; q < rows * p.ow; q++) {
                    acc += tile[dy_at + q];
                }
            }
        }
        if j < weights {
            part[slice * weights + j] = acc;
        } else if j < items {
            part[p.slices * weights + slice * p.cout + j - weights] = acc;
        }
    }
}
