// linear_forward_small: the forward of the same layers, y[r, c] = sum_f x[r, f] w[c, f]
// (+ b[c]) (ReLU), one invocation per output, one sequential sum in f order (flags bit 0:
// bias, 1: ReLU): with OUT small a GEMM's tile is mostly empty columns (fc2: 10 of 64).
//
// The whole backward of a linear layer with few outputs (a classifier's last layer) in one
// dispatch: y[R, OUT] = x[R, IN] . w[OUT, IN]^T + b has
//   dx[r, f]  = gate(r, f) * sum_c dy[r, c] w[c, f]     (a sum of OUT terms)
//   dw[c, f] (+)= sum_r dy[r, c] x[r, f]                 (a sum of R terms)
//   db[c]    (+)= sum_r dy[r, c]
// where gate(r, f) = (x[r, f] > 0) when x is a ReLU's output whose backward is fused here
// (the same mask as the ReLU's: its output is positive exactly where its input is), else 1.
// One invocation per output element over the concatenation [dx | dw | db] of the wanted
// outputs; each is one sequential sum in a fixed order (deterministic, no atomics). With OUT
// small every sum is short or reads the batch once; the three products stop being three
// GEMM launches, a bias reduction and a ReLU pass.

// linear_backward_input_routed: dx = dy . w for a layer whose input is a max-pool's
// flattened output [R, IN = C * PH * PW], through the pool's backward (and its ReLU's) in the
// store, as the routed GEMMs' route_store does (shaders/gemm.wgsl): each value goes to its
// window's saved argmax in the pool's input, masked by the ReLU's output there (flags bit 1),
// the window's other elements 0. An invocation owns one input feature f of RB rows: RB sums of
// OUT terms in c order, reading w's column f once for the RB rows. For the GPU families,
// whose tiled GEMM stores its product and runs max_pool2d_backward_relu after it
// (gemm::routes_in_store).

struct Params {
    rows: u32,
    inp: u32,
    out: u32,
    // bit 0: write dx; 1: gate dx by x > 0 (routed: by the pool's ReLU output); 2: write dw;
    // 3: accumulate into dw; 4: write db; 5: accumulate into db
    flags: u32,
    // linear_backward_input_routed: the pool's output planes (ph x pw), window (= stride) and
    // padding
    ph: u32, pw: u32, pk: u32, ppad: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dw: array<f32>;
@group(0) @binding(6) var<storage, read_write> db: array<f32>;
@group(0) @binding(7) var<storage, read> bias: array<f32>;
@group(0) @binding(8) var<storage, read_write> y: array<f32>;
// linear_backward_input_routed: the pool's saved argmax [R, IN] and its ReLU's output
@group(0) @binding(9) var<storage, read> argmax: array<u32>;
@group(0) @binding(10) var<storage, read> relu_out: array<f32>;

const RB: u32 = 4u;

fn has(bit: u32) -> bool {
    return (p.flags & (1u << bit)) != 0u;
}

@compute @workgroup_size(WG)
fn linear_backward_small(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                         @builtin(local_invocation_id) lid: vec3u) {
    var i = (wid.x + wid.y * nwg.x) * WG + lid.x;
    let n_dx = select(0u, p.rows * p.inp, has(0u));
    let n_dw = select(0u, p.out * p.inp, has(2u));
    let n_db = select(0u, p.out, has(4u));
    if i < n_dx {
        let r = i / p.inp;
        let f = i - r * p.inp;
        var s = 0.0;
        for (var c = 0u; c < p.out; c++) { s = fma(dy[r * p.out + c], w[c * p.inp + f], s); }
        if has(1u) && x[i] <= 0.0 { s = 0.0; }
        dx[i] = s;
        return;
    }
    i -= n_dx;
    if i < n_dw {
        let c = i / p.inp;
        let f = i - c * p.inp;
        var s = 0.0;
        for (var r = 0u; r < p.rows; r++) { s = fma(dy[r * p.out + c], x[r * p.inp + f], s); }
        if has(3u) { s += dw[i]; }
        dw[i] = s;
        return;
    }
    i -= n_dw;
    if i < n_db {
        var s = 0.0;
        for (var r = 0u; r < p.rows; r++) { s += dy[r * p.out + i]; }
        if has(5u) { s += db[i]; }
        db[i] = s;
    }
}

@compute @workgroup_size(WG)
fn linear_forward_small(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_id) lid: vec3u) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if i >= p.rows * p.out { return; }
    let r = i / p.out;
    let c = i - r * p.out;
    var s = 0.0;
    for (var f = 0u; f < p.inp; f++) { s = fma(x[r * p.inp + f], w[c * p.inp + f], s); }
    if has(0u) { s += bias[c]; }
    if has(1u) { s = max(s, 0.0); }
    y[i] = s;
}

@compute @workgroup_size(WG)
fn linear_backward_input_routed(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
    let f = wid.x * WG + lid.x;
    let r0 = wid.y * RB;
    if f >= p.inp { return; }
    var s = vec4f();
    for (var c = 0u; c < p.out; c++) {
        var d = vec4f();
        for (var i = 0u; i < RB; i++) { d[i] = dy[min(r0 + i, p.rows - 1u) * p.out + c]; }
        s = fma(d, vec4f(w[c * p.inp + f]), s);
    }
    let plane = p.ph * p.pw;
    let ch = f / plane;
    let oy = (f % plane) / p.pw;
    let ox = f % p.pw;
    let h = p.ph * p.pk - 2u * p.ppad;
    let wd = p.pw * p.pk - 2u * p.ppad;
    let channels = p.inp / plane;
    let y0 = i32(oy * p.pk) - i32(p.ppad);
    let x0 = i32(ox * p.pk) - i32(p.ppad);
    for (var i = 0u; i < RB; i++) {
        let r = r0 + i;
        if r >= p.rows { break; }
        let arg = argmax[r * p.inp + f];
        let base = (r * channels + ch) * h * wd;
        // pool.wgsl's routed sum: 0 + v
        var g = 0.0;
        g += s[i];
        if has(1u) { g = select(0.0, g, relu_out[base + arg] > 0.0); }
        for (var yy = max(y0, 0); yy < min(y0 + i32(p.pk), i32(h)); yy++) {
            for (var xx = max(x0, 0); xx < min(x0 + i32(p.pk), i32(wd)); xx++) {
                let e = u32(yy) * wd + u32(xx);
                dx[base + e] = select(0.0, g, e == arg);
            }
        }
    }
}
