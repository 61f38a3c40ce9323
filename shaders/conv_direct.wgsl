// Direct convolution for CPU adapters with subgroups (ops/conv_direct.rs), forward and dX:
// no im2col buffer between the input and the product. On llvmpipe every load whose address
// differs between lanes is a loop over the lanes, so what costs is the number of values
// each lane loads, not the arithmetic. An invocation computes CW = 8 (or 4) neighbouring
// outputs of one output row for TM output channels. For each input channel and kernel row it
// loads the (CW - 1) * STRIDE + S input values under its CW windows once (`seg`) and uses
// them for all S kernel columns: 12 loads for 8 x 5 products at 5 x 5, stride 1, where the
// im2col GEMM loads 40 (after im2col itself has loaded and stored them). The weights are the
// same in every lane: lane s of each group of 8 loads rows m0 + 4s .. m0 + 4s + 3 and
// subgroupBroadcast hands them to the others (as gemm_vec4_sg shares A).
//
// With COLUMNS, the invocations of the first row block also store the im2col columns they
// loaded (col [K, N*OH*OW], the layout of shaders/im2col.wgsl), which the weight gradient
// reads: the values are copies, so they are im2col's bits.
//
// TRANSPOSED: the same loop computes a stride-1 convolution's dX, which is the convolution
// of dy with the weight flipped in r and s and its channel axes swapped, padded by R - 1 -
// pad (S - 1 - pad across). Then "input" below is dy and "output" dx. With ROUTE, dx is a
// max-pool's output and the pool's backward runs in the store (as col2im_max_pool_backward
// in shaders/im2col.wgsl does): each value goes to its window's saved argmax, masked by the
// ReLU before the pool when relu_out is given, and the window's other elements get 0.
//
// POOL: the 2x2, stride-2 max-pool after a stride-1 forward runs in its store. An invocation
// then computes its CW outputs in two neighbouring rows (2 py and 2 py + 1) from the same
// weights (the second row's inputs at kernel row r are the first's at r + 1: loaded once),
// stores both rows as without the pool, and stores the CW / 2 maxima of their windows and
// each one's index within its plane (as max_pool2d_forward in shaders/pool.wgsl: window
// order, a later value only when greater): one dispatch, and no pass of its own over y.
//
// Dimensions of the pass: batch N, C input channels, H x W input, R x S kernel, OH x OW
// output, K = C*R*S.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32,
    // 1: add bias[co]; 2: ReLU after the bias; 4 (ROUTE): mask by relu_out
    flags: u32,
    pad_y: u32, pad_x: u32,
    // ROUTE: the pool's input ph x pw, its window (= stride) and padding
    ph: u32, pw: u32, pk: u32, ppad: u32, _pad0: u32, _pad1: u32,
}

// the overrides first, together (naga 30.0.2 panics on one declared after arrays sized by
// overrides)
override WG: u32 = 64u;
// output channels per invocation (TM: 4, 8, 16 or 32) and outputs of one row per
// invocation (CW, 4 or 8): TM * CW / 4 <= ACC
override TM: u32 = 32u;
override CW: u32 = 4u;
override R: u32 = 5u;
override S: u32 = 5u;
override STRIDE: u32 = 1u;
override COLUMNS: bool = false;
override TRANSPOSED: bool = false;
override ROUTE: bool = false;
override POOL: bool = false;
// the input values an invocation's CW windows cover in one row (at most SEG_MAX)
override SEG: u32 = (CW - 1u) * STRIDE + S;

const SEG_MAX: u32 = 16u;
const ACC: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> col: array<f32>;
// ROUTE reads the pool's argmax, POOL writes it
@group(0) @binding(6) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(7) var<storage, read> relu_out: array<f32>;
// POOL: the pool's output [N, COUT, OH / 2, OW / 2]
@group(0) @binding(8) var<storage, read_write> pooled: array<f32>;

// lanes 0..7's v, in every lane
fn share8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u),
        subgroupBroadcast(v, 7u));
}

// The weight that takes input channel c at kernel position (r, s) to output channel o is
// w[o * ws + u]: w[o, c, r, s] forward (ws = C*R*S), w[c, o, R-1-r, S-1-s] transposed (ws =
// R*S; w is [C_out, C_in, R, S] of the convolution whose dX this is: p.cout is its C_in).
// ws multiplies the lane's o, u is the same in every lane.
fn weight_stride() -> u32 {
    return select(p.cin * R * S, R * S, TRANSPOSED);
}

fn weight_offset(c: u32, r: u32, s: u32) -> u32 {
    if TRANSPOSED { return (c * p.cout * R + R - 1u - r) * S + S - 1u - s; }
    return (c * R + r) * S + s;
}

// the weights of output channels o .. o + 3 at offset u (0 past cout)
fn weight4(o: u32, ws: u32, u: u32) -> vec4<f32> {
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let ok = o + j < p.cout;
        v[j] = select(0.0, wt[select(0u, (o + j) * ws + u, ok)], ok);
    }
    return v;
}

// POOL: the two 2x2 windows of rows oy, oy + 1 (v0, v1) at columns ox .. ox + 3 (a window
// whole or absent: OW is even): each one's maximum and its index within the plane.
fn pool4(plane: u32, oy: u32, ox: u32, v0: vec4<f32>, v1: vec4<f32>) {
    for (var k = 0u; k < 2u; k++) {
        let x0 = ox + 2u * k;
        if x0 >= p.ow { break; }
        let win = array<f32, 4>(v0[2u * k], v0[2u * k + 1u], v1[2u * k], v1[2u * k + 1u]);
        var best = win[0];
        var best_e = 0u;
        for (var e = 1u; e < 4u; e++) {
            if win[e] > best { best = win[e]; best_e = e; }
        }
        let o = (plane * (p.oh / 2u) + oy / 2u) * (p.ow / 2u) + x0 / 2u;
        pooled[o] = best;
        argmax[o] = (oy + best_e / 2u) * p.ow + x0 + best_e % 2u;
    }
}

// ROUTE: dx value g of the pool's output element o = (plane, oy, ox) to the pool's input
fn route(o: u32, plane: u32, oy: u32, ox: u32, g_in: f32) {
    let arg = argmax[o];
    let base = plane * p.ph * p.pw;
    // pool.wgsl's routed sum: 0 + v
    var g = 0.0;
    g += g_in;
    if (p.flags & 4u) != 0u { g = select(0.0, g, relu_out[base + arg] > 0.0); }
    let y0 = i32(oy * p.pk) - i32(p.ppad);
    let x0 = i32(ox * p.pk) - i32(p.ppad);
    for (var yy = max(y0, 0); yy < min(y0 + i32(p.pk), i32(p.ph)); yy++) {
        for (var xx = max(x0, 0); xx < min(x0 + i32(p.pk), i32(p.pw)); xx++) {
            let i = u32(yy) * p.pw + u32(xx);
            y[base + i] = select(0.0, g, i == arg);
        }
    }
}

@compute @workgroup_size(WG)
fn conv_direct(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_id) lid: vec3u, @builtin(subgroup_invocation_id) sid: u32) {
    let chunks = (p.ow + CW - 1u) / CW;
    // POOL: an invocation computes two rows
    let bands = select(p.oh, p.oh / 2u, POOL);
    let total = p.batch * bands * chunks;
    let q = (wid.x + wid.y * nwg.x) * WG + lid.x;
    // every lane of a subgroup with work runs to the end (the broadcasts need all of them),
    // lanes past the end on the last chunk's loads
    if subgroupAll(q >= total) { return; }
    let qc = min(q, total - 1u);
    let b = qc / (bands * chunks);
    let t = qc - b * bands * chunks;
    let band = t / chunks;
    let oy = select(band, band * 2u, POOL);
    let ox0 = (t - band * chunks) * CW;
    let m0 = wid.z * TM;
    let wrow = m0 + 4u * (sid % 8u);
    let ws = weight_stride();
    let iy0 = i32(oy * STRIDE) - i32(p.pad_y);
    let ix0 = i32(ox0 * STRIDE) - i32(p.pad_x);
    let cols = p.batch * p.oh * p.ow;
    let n0 = (b * p.oh + oy) * p.ow + ox0;
    let keep = COLUMNS && m0 == 0u && q < total;
    // acc[h * TM + i]: output channel m0 + i, outputs ox0 + 4h .. ox0 + 4h + 3; POOL: the
    // next row's at acc[(CW / 4 + h) * TM + i]. Written out, not through helper functions:
    // those ran slower on llvmpipe (conv2's routed dX 12% with the loads in a function).
    var acc: array<vec4<f32>, ACC>;
    for (var ci = 0u; ci < p.cin; ci++) {
        // POOL (stride 1): the next row's inputs at kernel row r are this row's at r + 1
        var next: array<f32, SEG_MAX>;
        for (var r = 0u; r < R; r++) {
            let iy = iy0 + i32(r);
            let row_ok = iy >= 0 && iy < i32(p.h);
            let base = ((b * p.cin + ci) * p.h + u32(max(iy, 0))) * p.w;
            let row1_ok = iy + 1 >= 0 && iy + 1 < i32(p.h);
            let base1 = ((b * p.cin + ci) * p.h + u32(max(iy + 1, 0))) * p.w;
            // selects, not branches (llvmpipe runs a branch its lanes disagree on as masked
            // code on both sides)
            var seg: array<f32, SEG_MAX>;
            var seg1: array<f32, SEG_MAX>;
            if POOL && r > 0u { seg = next; }
            for (var j = 0u; j < SEG; j++) {
                let ix = ix0 + i32(j);
                let col_ok = ix >= 0 && ix < i32(p.w);
                if !POOL || r == 0u {
                    let ok = row_ok && col_ok;
                    seg[j] = select(0.0, x[select(0u, base + u32(ix), ok)], ok);
                }
                if POOL {
                    let ok1 = row1_ok && col_ok;
                    seg1[j] = select(0.0, x[select(0u, base1 + u32(ix), ok1)], ok1);
                }
            }
            if POOL { next = seg1; }
            for (var s = 0u; s < S; s++) {
                let wv = share8(weight4(wrow, ws, weight_offset(ci, r, s)));
                for (var h = 0u; h < CW / 4u; h++) {
                    let e = s + 4u * h * STRIDE;
                    let xv = vec4<f32>(seg[e], seg[e + STRIDE], seg[e + 2u * STRIDE], seg[e + 3u * STRIDE]);
                    if keep {
                        let k = (ci * R + r) * S + s;
                        for (var j = 0u; j < 4u; j++) {
                            if ox0 + 4u * h + j < p.ow { col[k * cols + n0 + 4u * h + j] = xv[j]; }
                        }
                    }
                    for (var i = 0u; i < TM / 4u; i++) {
                        let a = h * TM + 4u * i;
                        acc[a] = fma(vec4<f32>(wv[i].x), xv, acc[a]);
                        acc[a + 1u] = fma(vec4<f32>(wv[i].y), xv, acc[a + 1u]);
                        acc[a + 2u] = fma(vec4<f32>(wv[i].z), xv, acc[a + 2u]);
                        acc[a + 3u] = fma(vec4<f32>(wv[i].w), xv, acc[a + 3u]);
                    }
                    if POOL {
                        // the same weights, the next row's inputs
                        let xv1 = vec4<f32>(seg1[e], seg1[e + STRIDE], seg1[e + 2u * STRIDE], seg1[e + 3u * STRIDE]);
                        if keep {
                            let k = (ci * R + r) * S + s;
                            for (var j = 0u; j < 4u; j++) {
                                if ox0 + 4u * h + j < p.ow { col[k * cols + n0 + p.ow + 4u * h + j] = xv1[j]; }
                            }
                        }
                        for (var i = 0u; i < TM / 4u; i++) {
                            let a = (CW / 4u + h) * TM + 4u * i;
                            acc[a] = fma(vec4<f32>(wv[i].x), xv1, acc[a]);
                            acc[a + 1u] = fma(vec4<f32>(wv[i].y), xv1, acc[a + 1u]);
                            acc[a + 2u] = fma(vec4<f32>(wv[i].z), xv1, acc[a + 2u]);
                            acc[a + 3u] = fma(vec4<f32>(wv[i].w), xv1, acc[a + 3u]);
                        }
                    }
                }
            }
        }
    }
    if q >= total { return; }
    for (var i = 0u; i < TM; i++) {
        let co = m0 + i;
        if co >= p.cout { break; }
        let plane = b * p.cout + co;
        for (var h = 0u; h < CW / 4u; h++) {
            var v = acc[h * TM + i];
            if (p.flags & 1u) != 0u { v += vec4<f32>(bias[co]); }
            if (p.flags & 2u) != 0u { v = max(v, vec4<f32>(0.0)); }
            let ox = ox0 + 4u * h;
            let o = (plane * p.oh + oy) * p.ow + ox;
            for (var j = 0u; j < 4u; j++) {
                if ox + j >= p.ow { break; }
                if ROUTE { route(o + j, plane, oy, ox + j, v[j]); } else { y[o + j] = v[j]; }
            }
            if POOL {
                var v1 = acc[(CW / 4u + h) * TM + i];
                if (p.flags & 1u) != 0u { v1 += vec4<f32>(bias[co]); }
                if (p.flags & 2u) != 0u { v1 = max(v1, vec4<f32>(0.0)); }
                for (var j = 0u; j < 4u; j++) {
                    if ox + j >= p.ow { break; }
                    y[o + p.ow + j] = v1[j];
                }
                pool4(plane, oy, ox, v, v1);
            }
        }
    }
}
