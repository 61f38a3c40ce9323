// 2-D pooling over NCHW, forward next to backward.
//
// Dimensions: x [N, C, H, W] -> y [N, C, OH, OW], window KH x KW, stride, padding;
// padding positions never win a max and count as zeros in an average (PyTorch's
// count_include_pad=True default). One invocation per output (forward) or per input
// element (backward): the backward gathers from every window that covers its element,
// so overlapping windows need no atomics and the result is deterministic.

struct Params {
    planes: u32,   // N * C
    h: u32, w: u32,
    oh: u32, ow: u32,
    kh: u32, kw: u32,
    stride: u32,
    pad: u32,
    _pad0: u32, _pad1: u32, _pad2: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// argmax of each output window, as iy * W + ix within its plane
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read> saved_argmax: array<u32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;

fn element(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// The output rows/cols whose windows cover input coordinate i (in [lo, hi)).
fn covering(i: u32, k: u32, out: u32) -> vec2u {
    let t = i + p.pad;
    var lo = 0u;
    if t + 1u > k { lo = (t + 1u - k + p.stride - 1u) / p.stride; }
    let hi = min(t / p.stride + 1u, out);
    return vec2u(lo, hi);
}

// Output o's window clipped to the input: rows [x, y), columns [z, w) of plane o / (OH*OW).
fn window(o: u32) -> vec4u {
    let oy = (o / p.ow) % p.oh;
    let ox = o % p.ow;
    let y0 = i32(oy * p.stride) - i32(p.pad);
    let x0 = i32(ox * p.stride) - i32(p.pad);
    return vec4u(u32(max(y0, 0)), u32(clamp(y0 + i32(p.kh), 0, i32(p.h))),
                 u32(max(x0, 0)), u32(clamp(x0 + i32(p.kw), 0, i32(p.w))));
}

@compute @workgroup_size(WG)
fn max_pool2d_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_id) lid: vec3u) {
    let o = element(wid, nwg, lid);
    if o >= p.planes * p.oh * p.ow { return; }
    let base = (o / (p.oh * p.ow)) * p.h * p.w;
    let win = window(o);
    // -f32::MAX by its bits: the decimal literal rounds past f32 in Tint (Chrome rejects it)
    var best = bitcast<f32>(0xff7fffffu);
    var best_i = 0xffffffffu;
    for (var iy = win.x; iy < win.y; iy++) {
        for (var ix = win.z; ix < win.w; ix++) {
            let i = iy * p.w + ix;
            let v = x[base + i];
            // strict '>' keeps the first maximum in window order, as PyTorch does
            if best_i == 0xffffffffu || v > best { best = v; best_i = i; }
        }
    }
    y[o] = best;
    argmax[o] = best_i;
}

// Input element e's gradient: the sum of dy over the windows whose saved maximum is e.
fn routed(e: u32) -> f32 {
    let plane = e / (p.h * p.w);
    let i = e % (p.h * p.w);
    let iy = i / p.w;
    let ix = i % p.w;
    let ry = covering(iy, p.kh, p.oh);
    let rx = covering(ix, p.kw, p.ow);
    var g = 0.0;
    for (var oy = ry.x; oy < ry.y; oy++) {
        for (var ox = rx.x; ox < rx.y; ox++) {
            let o = (plane * p.oh + oy) * p.ow + ox;
            if saved_argmax[o] == i { g += dy[o]; }
        }
    }
    return g;
}

@compute @workgroup_size(WG)
fn max_pool2d_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_id) lid: vec3u) {
    let e = element(wid, nwg, lid);
    if e >= p.planes * p.h * p.w { return; }
    dx[e] = routed(e);
}

// The max-pool backward and the backward of the ReLU before it in one pass: x is the
// pool's input (the ReLU's output), and the ReLU passes the gradient where x > 0
// (relu_backward's select, so the same bits as the two kernels).
@compute @workgroup_size(WG)
fn max_pool2d_backward_relu(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                            @builtin(local_invocation_id) lid: vec3u) {
    let e = element(wid, nwg, lid);
    if e >= p.planes * p.h * p.w { return; }
    dx[e] = select(0.0, routed(e), x[e] > 0.0);
}

@compute @workgroup_size(WG)
fn avg_pool2d_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_id) lid: vec3u) {
    let o = element(wid, nwg, lid);
    if o >= p.planes * p.oh * p.ow { return; }
    let base = (o / (p.oh * p.ow)) * p.h * p.w;
    let win = window(o);
    var s = 0.0;
    for (var iy = win.x; iy < win.y; iy++) {
        for (var ix = win.z; ix < win.w; ix++) { s += x[base + iy * p.w + ix]; }
    }
    y[o] = s / f32(p.kh * p.kw);
}

@compute @workgroup_size(WG)
fn avg_pool2d_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_id) lid: vec3u) {
    let e = element(wid, nwg, lid);
    if e >= p.planes * p.h * p.w { return; }
    let plane = e / (p.h * p.w);
    let i = e % (p.h * p.w);
    let ry = covering(i / p.w, p.kh, p.oh);
    let rx = covering(i % p.w, p.kw, p.ow);
    var g = 0.0;
    for (var oy = ry.x; oy < ry.y; oy++) {
        for (var ox = rx.x; ox < rx.y; ox++) { g += dy[(plane * p.oh + oy) * p.ow + ox]; }
    }
    dx[e] = g / f32(p.kh * p.kw);
}

// ---- global average pooling: x [N, C, H, W] -> y [N, C, 1, 1], the mean of each plane
// (PyTorch's nn.AdaptiveAvgPool2d(1)). Forward: one invocation per plane sums its H*W values
// in f32, in order (a plane is short at the end of a CNN: 7x7, 14x14); backward: one
// invocation per input element, dx = dy[plane] / (H*W) (written, not accumulated).

@compute @workgroup_size(WG)
fn global_avg_pool_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                           @builtin(local_invocation_id) lid: vec3u) {
    let plane = element(wid, nwg, lid);
    if plane >= p.planes { return; }
    let hw = p.h * p.w;
    let base = plane * hw;
    var s = 0.0;
    for (var i = 0u; i < hw; i++) { s += x[base + i]; }
    y[plane] = s / f32(hw);
}

@compute @workgroup_size(WG)
fn global_avg_pool_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                            @builtin(local_invocation_id) lid: vec3u) {
    let e = element(wid, nwg, lid);
    let hw = p.h * p.w;
    if e >= p.planes * hw { return; }
    dx[e] = dy[e / hw] / f32(hw);
}
