// Direct convolutions from workgroup memory for the GPU families (ops/conv_shared.rs). The
// MNIST CNN's passes are too small for the implicit GEMM (shaders/gemm.wgsl) to use its
// tiles: conv2's forward is a 32-row product, its dX a 16-row one, conv1's weight gradient
// 25 columns wide, and every B element is gathered through divisions. Here a workgroup
// stages a band of the input and the weights it needs once, and each invocation reads them
// from workgroup memory in the order of a plain loop nest: one fixed summation order, so the
// results are the same run to run.
//
// conv_shared: forward y = conv(x, w) (+ bias) (ReLU), or with TRANSPOSED a stride-1 dX, the
// convolution of dy with the weight flipped in r and s and its channel axes swapped, padded
// by R - 1 - pad (then "input" is dy and "output" dx). A workgroup owns image n, a band of
// BAND output rows and 16 output channels. Per round of COUNT input channels it stages their
// input rows under the band (zero padded, rows PITCH floats apart) and their weights as
// vec4s of 4 output channels, [channel][r][s][4 x vec4]: each product then costs one scalar
// and one broadcast vec4 read of workgroup memory per 4 FMAs. The invocations form GROUPS
// groups of LANES (GROUPS = 4 for passes with few outputs, else 1); invocation (oy, ox) of
// group g accumulates the 16 channels of its output in four vec4 registers over the
// (channel, kernel row) pairs g, g + GROUPS, ..., and group 0 adds the others' sums in group
// order at the end. With a max-pool after it (`pool`: the window, which tiles the output
// exactly and each band, as `stride` = window, no padding), the workgroup also pools its
// band: per vec4 of channels the invocations put their (bias, ReLU) outputs in workgroup
// memory, and the invocation at each window's corner takes the window's maximum in
// max_pool2d_forward's order (row by row, a later value only when greater), writing it
// and its index within the plane (shaders/pool.wgsl's argmax). A dX whose output is a
// max-pool's output gradient routes it through the pool's (and its ReLU's) backward in the
// store instead (route4): the pool's input gradient, never the output's.
//
// conv_shared_weight: the weight gradient of a convolution with few weights per output
// channel (conv1: 1 x 5 x 5). A workgroup owns one slice: COUNT consecutive tiles of (image
// n, band of BAND output rows). For each tile it stages dy[n, :, band rows, :] and the input
// rows under them (rows PITCH floats apart, PITCH = S mod 32 so that the R x S items of one
// output channel read different banks) and every invocation adds, for its item, the
// products over the tile's positions:
//   item j < COUT * TAPS:             dw[co, ci, r, s] += dy[co, oy, ox] * x[ci, oy*st + r - pad, ox*st + s - pad]
//   COUT * TAPS <= j < COUT*(TAPS+1): db[co] += dy[co, oy, ox]  (when the bias gradient is asked for)
// Items beyond one workgroup's invocations take further rounds (each re-stages the tiles),
// so an invocation holds one accumulator, never an indexed array of them. The slice's sums
// go to part ([slices][COUT * TAPS], then [slices][COUT]), and conv_shared_weight_sum adds
// them (below).

// Every entry point: the pass's input, cin channels of h x w; its output, cout channels of
// oh x ow; the kernel r x s at `stride`, zero padding pad_y, pad_x.
struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, oh: u32, ow: u32, r: u32,
    s: u32, stride: u32, pad_y: u32, pad_x: u32,
    // output rows per band, staged input row length, input channels per round
    // (conv_shared) or tiles per slice (the weight gradients)
    band: u32, pitch: u32, count: u32,
    // conv_shared: 1 bias, 2 ReLU, 4 route dX through a max-pool's backward, 8 and its
    // ReLU's, 16 max-pool the output; the weight gradients: 1 the bias gradient too, and for conv_shared_weight_sum
    // 2 dw accumulates, 4 db accumulates
    flags: u32,
    // the weight gradients: their workgroups along x (slices); conv_shared: the max-pool
    // window (= stride) run on its output or routed through, and its padding
    slices: u32, pool: u32, pool_pad: u32, _pad2: u32,
}

// the overrides first, together (naga 30.0.2 panics on one declared after arrays sized by
// overrides)
override WG: u32 = 256u;
// conv_shared: GROUPS groups of LANES invocations (WG = GROUPS * LANES); group g sums the
// (input channel, kernel row) pairs g, g + GROUPS, ... of each round
override GROUPS: u32 = 1u;
override LANES: u32 = 256u;
override R: u32 = 5u;
override S: u32 = 5u;
override STRIDE: u32 = 1u;
override TRANSPOSED: bool = false;

// conv_shared's staged input (floats) and weights (vec4s): 16 KiB together, WebGPU's
// default workgroup memory
const XS: u32 = 2048u;
const WS: u32 = 512u;
// conv_shared_weight's staged tile: dy [COUT][BAND][OW], then x [CIN][(BAND - 1) * stride + R][PITCH]
const TILE: u32 = 4096u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;
// conv_shared with a max-pool: its output and argmax [N, COUT, OH / pool, OW / pool]; a
// routed dX reads the argmax [N, COUT, OH, OW] and the ReLU's output (the pool's input)
@group(0) @binding(9) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(10) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(11) var<storage, read> relu_out: array<f32>;

var<workgroup> xs: array<f32, XS>;
var<workgroup> ws: array<vec4<f32>, WS>;
var<workgroup> tile: array<f32, TILE>;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(WG)
fn conv_shared(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
    let taps = R * S;
    let bands = (p.oh + p.band - 1u) / p.band;
    let n = wid.x / bands;
    let oy0 = (wid.x % bands) * p.band;
    let co0 = wid.y * 16u;
    let in_rows = (p.band - 1u) * STRIDE + R;
    let group = lid / LANES;
    let pos = lid % LANES;
    let oy = pos / p.ow;
    let ox = pos % p.ow;
    let live = oy < p.band && oy0 + oy < p.oh;
    var a0 = vec4f();
    var a1 = vec4f();
    var a2 = vec4f();
    var a3 = vec4f();
    for (var c0 = 0u; c0 < p.cin; c0 += p.count) {
        let cb = min(p.count, p.cin - c0);
        workgroupBarrier();
        for (var i = lid; i < cb * in_rows * p.pitch; i += WG) {
            let plane = in_rows * p.pitch;
            let iy = i32(oy0 * STRIDE + (i % plane) / p.pitch) - i32(p.pad_y);
            let ix = i32(i % p.pitch) - i32(p.pad_x);
            var v = 0.0;
            if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
                v = x[((n * p.cin + c0 + i / plane) * p.h + u32(iy)) * p.w + u32(ix)];
            }
            xs[i] = v;
        }
        for (var i = lid; i < cb * taps * 16u; i += WG) {
            let co = co0 + i % 16u;
            let c = c0 + i / (16u * taps);
            let tap = (i / 16u) % taps;
            var v = 0.0;
            if co < p.cout {
                if TRANSPOSED {
                    // the weight [pass input channels][pass output channels][R][S], flipped
                    v = wt[(c * p.cout + co) * taps + taps - 1u - tap];
                } else {
                    v = wt[(co * p.cin + c) * taps + tap];
                }
            }
            ws[i / 4u][i % 4u] = v;
        }
        workgroupBarrier();
        if live {
            for (var pair = group; pair < cb * R; pair += GROUPS) {
                let cl = pair / R;
                let r = pair % R;
                let row = (cl * in_rows + oy * STRIDE + r) * p.pitch + ox * STRIDE;
                let wrow = pair * S * 4u;
                for (var s = 0u; s < S; s++) {
                    let v = vec4f(xs[row + s]);
                    let wi = wrow + s * 4u;
                    a0 = fma(v, ws[wi], a0);
                    a1 = fma(v, ws[wi + 1u], a1);
                    a2 = fma(v, ws[wi + 2u], a2);
                    a3 = fma(v, ws[wi + 3u], a3);
                }
            }
        }
    }
    // group 0 adds the other groups' sums, in group order, through workgroup memory
    for (var g = 1u; g < GROUPS; g++) {
        workgroupBarrier();
        if group == g {
            ws[pos * 4u] = a0;
            ws[pos * 4u + 1u] = a1;
            ws[pos * 4u + 2u] = a2;
            ws[pos * 4u + 3u] = a3;
        }
        workgroupBarrier();
        if group == 0u {
            a0 += ws[pos * 4u];
            a1 += ws[pos * 4u + 1u];
            a2 += ws[pos * 4u + 2u];
            a3 += ws[pos * 4u + 3u];
        }
    }
    let mine = live && group == 0u;
    let v0 = epilogue(co0, a0);
    let v1 = epilogue(co0 + 4u, a1);
    let v2 = epilogue(co0 + 8u, a2);
    let v3 = epilogue(co0 + 12u, a3);
    if mine && (p.flags & 4u) != 0u {
        let at = (n * p.cout * p.oh + oy0 + oy) * p.ow + ox;
        route4(at, n, co0, v0);
        route4(at, n, co0 + 4u, v1);
        route4(at, n, co0 + 8u, v2);
        route4(at, n, co0 + 12u, v3);
    } else if mine {
        let at = (n * p.cout * p.oh + oy0 + oy) * p.ow + ox;
        store4(at, co0, v0);
        store4(at, co0 + 4u, v1);
        store4(at, co0 + 8u, v2);
        store4(at, co0 + 12u, v3);
    }
    if (p.flags & 16u) != 0u {
        pool4(mine, n, oy0, pos, co0, v0);
        pool4(mine, n, oy0, pos, co0 + 4u, v1);
        pool4(mine, n, oy0, pos, co0 + 8u, v2);
        pool4(mine, n, oy0, pos, co0 + 12u, v3);
    }
}

// Output channels co .. co + 3 of one position after the bias and ReLU (the channels past
// cout are never stored).
fn epilogue(co: u32, a: vec4f) -> vec4f {
    var v = a;
    for (var k = 0u; k < 4u; k++) {
        let c = co + k;
        if c < p.cout {
            if (p.flags & 1u) != 0u { v[k] += bias[c]; }
            if (p.flags & 2u) != 0u { v[k] = max(v[k], 0.0); }
        }
    }
    return v;
}

// y[n, co .. co + 3, oy, ox] (at = y's index of [n, 0, oy, ox])
fn store4(at: u32, co: u32, v: vec4f) {
    for (var k = 0u; k < 4u; k++) {
        if co + k < p.cout {
            y[at + (co + k) * p.oh * p.ow] = v[k];
        }
    }
}

// A routed dX: output (n, co .. co + 3, oy, ox) (at: the index of channel 0) is the
// gradient of a max-pool's output; it goes to the pool's input at the window's saved argmax,
// masked by the ReLU before the pool (flags 8), and the window's other elements get 0: what
// max_pool2d_backward(_relu) writes (the windows tile the input, each written by one
// invocation).
fn route4(at: u32, n: u32, co: u32, v: vec4f) {
    let k = p.pool;
    let ph = p.oh * k - 2u * p.pool_pad;
    let pw = p.ow * k - 2u * p.pool_pad;
    let oy = (at / p.ow) % p.oh;
    let ox = at % p.ow;
    let y0 = i32(oy * k) - i32(p.pool_pad);
    let x0 = i32(ox * k) - i32(p.pool_pad);
    for (var j = 0u; j < 4u; j++) {
        let c = co + j;
        if c < p.cout {
            let o = at + c * p.oh * p.ow;
            let base = (n * p.cout + c) * ph * pw;
            let arg = argmax[o];
            // pool.wgsl's routed sum: 0 + v
            var g = 0.0;
            g += v[j];
            if (p.flags & 8u) != 0u { g = select(0.0, g, relu_out[base + arg] > 0.0); }
            for (var yy = max(y0, 0); yy < min(y0 + i32(k), i32(ph)); yy++) {
                for (var xx = max(x0, 0); xx < min(x0 + i32(k), i32(pw)); xx++) {
                    let i = u32(yy) * pw + u32(xx);
                    y[base + i] = select(0.0, g, i == arg);
                }
            }
        }
    }
}

// The max-pool of channels co .. co + 3 over the band: every invocation holding an output
// (`mine`) shares it through workgroup memory, and the one at each window's top-left
// corner reduces the window.
fn pool4(mine: bool, n: u32, oy0: u32, pos: u32, co: u32, v: vec4f) {
    workgroupBarrier();
    if mine { ws[pos] = v; }
    workgroupBarrier();
    let k = p.pool;
    let oy = pos / p.ow;
    let ox = pos % p.ow;
    if mine && oy % k == 0u && ox % k == 0u {
        var best = v;
        var at = vec4u((oy0 + oy) * p.ow + ox);
        for (var wy = 0u; wy < k; wy++) {
            for (var wx = 0u; wx < k; wx++) {
                let u = ws[pos + wy * p.ow + wx];
                let later = u > best;
                best = select(best, u, later);
                at = select(at, vec4u((oy0 + oy + wy) * p.ow + ox + wx), later);
            }
        }
        let ph = p.oh / k;
        let pw = p.ow / k;
        for (var c = 0u; c < 4u; c++) {
            if co + c < p.cout {
                let o = ((n * p.cout + co + c) * ph + (oy0 + oy) / k) * pw + ox / k;
                pooled[o] = best[c];
                argmax[o] = at[c];
            }
        }
    }
}
