// Explicit im2col staging for the im2col GEMM convolution (ops/conv2d.rs, family
// Im2colVec4): the gathers run once here, so the heavy part is a plain vec4 GEMM
// (shaders/gemm.wgsl, modes 4-6).
//
// Dimensions: batch N, input channels C, H x W input, R x S kernel, OH x OW output,
// P = OH*OW. The column matrix has K = C*R*S rows and N*P columns:
//   col[k = (c, r, s)][n = (b, oy, ox)] = x[b, c, oy*stride + r - pad, ox*stride + s - pad]
// (zero in the padding). Row-major [K, N*P], so its rows are contiguous along (b, oy, ox):
// the B operand of the forward GEMM and the transposed operand of the dW GEMM.
//
//   im2col   x -> col, four consecutive columns per invocation (the host requires
//            N*P % 4 == 0 and writes 16-byte stores)
//   col2im   dcol [K, N*P] -> dx [N, C, H, W]: the adjoint of im2col, a gather (each dx
//            element sums its own R*S terms in a fixed order: no atomics, deterministic)
//   pad_weight  w [Cout, K] -> wp [Cout, KP] with KP = K rounded up to a multiple of 4
//            and zeros in the new columns, so the vec4 GEMMs take any K (conv1's K = 25).
//   im2col_pad_weight  both in one launch (the forward's staging).
//   col2im_max_pool_backward  col2im and, in the same pass, the backward of the max-pool
//            whose output x is (and of the ReLU before that pool), for pools whose windows
//            tile their input exactly: each col2im sum goes straight to its window's argmax
//            (the same values as col2im then max_pool2d_backward(_relu)), so the gradient
//            of the pool's output is never stored.
// With padding, col and dcol have KP rows: im2col writes zero rows past K (so 0 * pad
// can never meet an uninitialised NaN), col2im never reads them.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    r: u32, s: u32, stride: u32, pad: u32,
    oh: u32, ow: u32,
    // rows = K = C*R*S, cols = N*OH*OW of the column matrix; rows_out = the rows col/dcol
    // and wp hold (K or KP); cout for pad_weight
    rows: u32, cols: u32, rows_out: u32, cout: u32,
    // col2im_max_pool_backward: the pool's input ph x pw (its output is the convolution's
    // h x w), window (= stride) and padding; relu 1 when the ReLU's backward is fused too
    ph: u32, pw: u32, pk: u32, ppad: u32, relu: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> col: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dcol: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read> wt: array<f32>;
@group(0) @binding(6) var<storage, read_write> wp: array<f32>;
@group(0) @binding(7) var<storage, read> argmax: array<u32>;
// the pool's input: the ReLU's output whose mask the fused backward applies
@group(0) @binding(8) var<storage, read> relu_out: array<f32>;

// Invocation index of a 1-D launch the host may have split into a 2-D grid (Gpu::grid).
fn linear(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// col's vec4 i (of rows_out * cols / 4).
fn im2col_at(i: u32) {
    let cols4 = p.cols / 4u;
    let k = i / cols4;
    if k >= p.rows {
        col[i] = vec4<f32>(0.0);
        return;
    }
    let n0 = (i - k * cols4) * 4u;
    let rs = p.r * p.s;
    let c = k / rs;
    let t = k - c * rs;
    let r = t / p.s;
    let s = t - r * p.s;
    let plane = p.oh * p.ow;
    var bi = n0 / plane;
    let o = n0 - bi * plane;
    var oy = o / p.ow;
    var ox = o - oy * p.ow;
    // The four columns may wrap to the next output row or image: step (b, oy, ox) by hand
    // instead of dividing again.
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        let iy = i32(oy * p.stride + r) - i32(p.pad);
        let ix = i32(ox * p.stride + s) - i32(p.pad);
        // selects, not branches: llvmpipe runs a branch its lanes disagree on as masked
        // code on both sides (this form: conv2's 400 x 12,544 columns 19 -> 16.5 ms)
        let inside = iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w);
        let e = x[select(0u, ((bi * p.cin + c) * p.h + u32(iy)) * p.w + u32(ix), inside)];
        v[j] = select(0.0, e, inside);
        ox += 1u;
        let next_row = ox == p.ow;
        ox = select(ox, 0u, next_row);
        oy += u32(next_row);
        let next_image = oy == p.oh;
        oy = select(oy, 0u, next_image);
        bi += u32(next_image);
    }
    col[i] = v;
}

// dx[bi, c, iy, ix] of the convolution's input: the sum of the col entries with
// oy*stride + r - pad == iy (and the same for x). r runs over the residue class of iy + pad
// modulo stride, oy steps down by one as r steps up by stride: no division inside the loops.
fn col2im_at(bi: u32, c: u32, iy: u32, ix: u32) -> f32 {
    let ty = iy + p.pad;
    let tx = ix + p.pad;
    let r0 = ty % p.stride;
    let s0 = tx % p.stride;
    let base = bi * p.oh * p.ow;
    var acc = 0.0;
    var r = r0;
    var oy = i32(ty / p.stride);
    for (; r < p.r; r += p.stride) {
        if oy < 0 { break; }
        if u32(oy) < p.oh {
            var s = s0;
            var ox = i32(tx / p.stride);
            for (; s < p.s; s += p.stride) {
                if ox < 0 { break; }
                if u32(ox) < p.ow {
                    let k = (c * p.r + r) * p.s + s;
                    acc += dcol[k * p.cols + base + u32(oy) * p.ow + u32(ox)];
                }
                ox -= 1;
            }
        }
        oy -= 1;
    }
    return acc;
}

// Element i of the convolution's input [batch, cin, h, w] as (bi, c, iy, ix).
fn conv_input_at(i: u32) -> vec4u {
    let plane = i / (p.w * p.h);
    let t = i - plane * p.w * p.h;
    let bi = plane / p.cin;
    return vec4u(bi, plane - bi * p.cin, t / p.w, t % p.w);
}

@compute @workgroup_size(WG)
fn col2im(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_id) lid: vec3u) {
    let i = linear(wid, nwg, lid);
    if i >= p.batch * p.cin * p.h * p.w { return; }
    let e = conv_input_at(i);
    dx[i] = col2im_at(e.x, e.y, e.z, e.w);
}

// One invocation per element (bi, c, oy, ox) of the convolution's input, which is a
// max-pool's output whose windows tile the pool's input exactly (stride = window, no
// input element left over: each is in one window). col2im's value there goes to the
// window's saved argmax, masked by the fused ReLU's output; the window's other elements get
// 0. The same values as col2im then max_pool2d_backward(_relu), without storing col2im's.
@compute @workgroup_size(WG)
fn col2im_max_pool_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                            @builtin(local_invocation_id) lid: vec3u) {
    let o = linear(wid, nwg, lid);
    if o >= p.batch * p.cin * p.h * p.w { return; }
    let e = conv_input_at(o);
    let arg = argmax[o];
    var g = 0.0;
    g += col2im_at(e.x, e.y, e.z, e.w);
    let base = (e.x * p.cin + e.y) * p.ph * p.pw;
    if p.relu != 0u { g = select(0.0, g, relu_out[base + arg] > 0.0); }
    let y0 = i32(e.z * p.pk) - i32(p.ppad);
    let x0 = i32(e.w * p.pk) - i32(p.ppad);
    for (var y = max(y0, 0); y < min(y0 + i32(p.pk), i32(p.ph)); y++) {
        for (var x = max(x0, 0); x < min(x0 + i32(p.pk), i32(p.pw)); x++) {
            let i = u32(y) * p.pw + u32(x);
            dx[base + i] = select(0.0, g, i == arg);
        }
    }
}

// wp's element i (of cout * rows_out).
fn pad_weight_at(i: u32) {
    let m = i / p.rows_out;
    let k = i - m * p.rows_out;
    wp[i] = select(0.0, wt[min(m * p.rows + k, p.cout * p.rows - 1u)], k < p.rows);
}

@compute @workgroup_size(WG)
fn im2col(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_id) lid: vec3u) {
    let i = linear(wid, nwg, lid);
    if i < p.rows_out * (p.cols / 4u) { im2col_at(i); }
}

@compute @workgroup_size(WG)
fn pad_weight(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_id) lid: vec3u) {
    let i = linear(wid, nwg, lid);
    if i < p.cout * p.rows_out { pad_weight_at(i); }
}

// The forward's staging in one launch: im2col, then (the invocations past col's end)
// pad_weight.
@compute @workgroup_size(WG)
fn im2col_pad_weight(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_id) lid: vec3u) {
    let i = linear(wid, nwg, lid);
    let n = p.rows_out * (p.cols / 4u);
    if i < n {
        im2col_at(i);
    } else if i - n < p.cout * p.rows_out {
        pad_weight_at(i - n);
    }
}
