// GEMM and implicit-GEMM convolution: C[M, N] (+)= op(A)[M, K] . op(B)[K, N], then an
// epilogue (bias per row or column, ReLU).
//
// MODE picks how A and B are gathered and where C goes (nothing is materialised; the
// im2col gather happens inside the loads):
//   0 GEMM            A [M,K] (or [K,M] if TRANS_A), B [K,N] (or [N,K] if TRANS_B), C [M,N]
//   1 conv forward    M = Cout, N = batch*OH*OW, K = Cin*R*S: A = weights [Cout, Cin*R*S],
//                     B = im2col(x), C -> y [batch, Cout, OH, OW]; bias per row
//   2 conv dX         M = Cin, N = batch*H*W, K = Cout*R*S: A[c, (k,r,s)] = w[k, c, r, s],
//                     B[(k,r,s), (b,iy,ix)] = dy[b, k, oy, ox] where oy*stride = iy + pad - r
//                     (zero where that has no integer solution), C -> dx [batch, Cin, H, W]
//   3 conv dW         M = Cout, N = Cin*R*S, K = batch*OH*OW: A = dy as [Cout, (b,oy,ox)],
//                     B = im2col(x) transposed, C -> dw [Cout, Cin*R*S]
// Modes 4-6 are the same three products with im2col materialised (shaders/im2col.wgsl:
// col [Cin*R*S, batch*P], P = OH*OW); gemm_vec4 only, which reads NCHW activations as
// "blocked" [channels, (b, p)] matrices (P % 4 == 0, so no vec4 straddles two images):
//   4 conv forward    NN: A = weights [Cout, Cin*R*S], B = col, C -> y (NCHW, as mode 1)
//   5 conv dcol       TN: A = weights read as A^T, B = dy blocked [Cout, (b,p)],
//                     C = dcol [Cin*R*S, batch*P] (shaders/im2col.wgsl col2im -> dx)
//   6 conv dW         NT: A = dy blocked [Cout, (b,p)], B = col ([N, K] form), C -> dw
// Layouts are NCHW activations and KCRS weights (PyTorch's order).
//
// The kernel families share the gathers and stores below; each family is a file of its own,
// joined after this one into one module (runtime/shaders.rs): gemm_tiled.wgsl,
// gemm_regblock.wgsl, gemm_vec4.wgsl (and one more for `Shader::GemmSubgroup`).
//   gemm_tiled     BM x BN tile per workgroup staged through workgroup memory, TM x TN
//                  outputs per invocation: what real GPUs want.
//   gemm_tiled4    the same staging, tiles read back as vec4s, TM x 8 per invocation.
//   gemm_regblock  no workgroup memory, TM x TN outputs per invocation straight from
//                  global memory: what llvmpipe runs fastest (barriers are slow there).
// f32 accumulation; each output is one sequential sum over K (no atomics: deterministic).

struct Params {
    m: u32, n: u32, k: u32,
    // bit 0: accumulate into C; bit 1: ReLU; bits 2-3: bias 0 none, 1 per row, 2 per column;
    // bit 4: accumulate into dbias (BIAS_GRAD); bit 5: the host's BIAS_GRAD_FLAG; bit 7:
    // ROUTE with the routed max-pool's ReLU mask
    flags: u32,
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, r: u32, s: u32, stride: u32,
    oh: u32, ow: u32, pad: u32,
    // with SPLIT_K: the K range of each z slice (a multiple of BK)
    k_chunk: u32,
    // a routed max-pool (ROUTE): its input ph x pw, window (= stride), padding
    ph: u32, pw: u32, pk: u32, ppad: u32,
}

override MODE: u32 = 0u;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
// Tile shape. TM, TN <= TMAX (registers are sized by TMAX; the unused part folds away
// because overrides are constants by the time the driver compiles).
override BM: u32 = 64u;
override BN: u32 = 64u;
override BK: u32 = 16u;
override TM: u32 = 4u;
override TN: u32 = 4u;
const TMAX: u32 = 8u;
// Invocations per workgroup, x along N, y along M.
override WGX: u32 = 16u;
// Split-K (tiled and register-blocked families): workgroup z takes the K range
// [z * k_chunk, (z + 1) * k_chunk) and writes its raw partial sums to slice z of c
// ([split][M][N], no epilogue); reduce.wgsl's splitk_sum adds the slices in a fixed order.
// For long reductions with few output tiles (a convolution's weight gradient).
override SPLIT_K: bool = false;
// The tiled kernels' 16-byte staging of plain NN products (a_stage4, b_stage4)
override VEC_STAGE: bool = false;
override WGY: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

// The bias gradient of a weight-gradient product (gemm_vec4's TN and NT forms, the tiled
// kernels' TN form and mode 3, whose A is the layer's dy): dbias[m] (+)= sum over k of
// A[m, k], summed from the A values the kernel loads anyway and written by the invocations
// of the first column block (flags bit 4: accumulate). With SPLIT_K each slice z writes its
// sum to c's tail instead (store_bias_grad), and reduce.wgsl's splitk_sum adds the slices.
override BIAS_GRAD: bool = false;
@group(0) @binding(7) var<storage, read_write> dbias: array<f32>;

fn store_bias_grad(z: u32, slices: u32, m: u32, s: f32) {
    if m >= p.m { return; }
    if SPLIT_K {
        c[slices * p.m * p.n + z * p.m + m] = s;
        return;
    }
    var v = s;
    if (p.flags & 16u) != 0u { v += dbias[m]; }
    dbias[m] = v;
}

// A[m, k] of the logical product, 0 outside.
fn load_a(m: u32, k: u32) -> f32 {
    if m >= p.m || k >= p.k { return 0.0; }
    switch MODE {
        case 0u: {
            if TRANS_A { return a[k * p.m + m]; }
            return a[m * p.k + k];
        }
        case 2u: {
            // k = (co, r, s); weights [Cout, Cin, R, S], m = input channel
            let rs = p.r * p.s;
            let co = k / rs;
            let t = k - co * rs;
            return a[(co * p.cin + m) * rs + t];
        }
        case 3u: {
            // k = (b, oy, ox) over dy [batch, Cout, OH, OW], m = output channel
            let hw = p.oh * p.ow;
            let bi = k / hw;
            let t = k - bi * hw;
            return a[(bi * p.cout + m) * hw + t];
        }
        default: {
            return a[m * p.k + k];
        }
    }
}

// What the gather of B's column n needs, worked out once per column: the base offset of its
// image (modes 1, 2) or input channel (mode 3) and its position before the row's offset.
// The tiled kernels' staging keeps one column per invocation for the whole K loop, so it
// pays these divisions once instead of once per element.
struct Col { base: u32, y: i32, x: i32, ok: bool }

// i as (i0, i1, i2) over dimensions [.., d1, d2], row-major.
fn unflatten(i: u32, d1: u32, d2: u32) -> vec3u {
    let i0 = i / (d1 * d2);
    let t = i - i0 * d1 * d2;
    let i1 = t / d2;
    return vec3u(i0, i1, t - i1 * d2);
}

fn col_of(n: u32) -> Col {
    switch MODE {
        case 1u: {
            // n = (bi, oy, ox): rows oy*stride - pad + r of image bi of x
            let o = unflatten(n, p.oh, p.ow);
            return Col(o.x * p.cin * p.h * p.w, i32(o.y * p.stride) - i32(p.pad), i32(o.z * p.stride) - i32(p.pad), n < p.n);
        }
        case 2u: {
            // n = (bi, iy, ix): dy[bi] at ((iy + pad - r) / stride, ...)
            let i = unflatten(n, p.h, p.w);
            return Col(i.x * p.cout * p.oh * p.ow, i32(i.y + p.pad), i32(i.z + p.pad), n < p.n);
        }
        case 3u: {
            // n = (ci, r, s): plane ci of each image, shifted by (r - pad, s - pad)
            let q = unflatten(n, p.r, p.s);
            return Col(q.x * p.h * p.w, i32(q.y) - i32(p.pad), i32(q.z) - i32(p.pad), n < p.n);
        }
        default: {
            return Col(0u, 0, 0, n < p.n);
        }
    }
}

// x[base + y * W + x] with zero padding outside the H x W plane.
fn load_x(base: u32, y: i32, x: i32) -> f32 {
    if y < 0 || x < 0 || y >= i32(p.h) || x >= i32(p.w) { return 0.0; }
    return b[base + u32(y) * p.w + u32(x)];
}

// B[k, n] of the logical product, 0 outside; `col` is col_of(n).
fn load_b_at(k: u32, n: u32, col: Col) -> f32 {
    if k >= p.k || !col.ok { return 0.0; }
    switch MODE {
        case 0u: {
            if TRANS_B { return b[n * p.k + k]; }
            return b[k * p.n + n];
        }
        case 1u: {
            // k = (ci, r, s)
            let q = unflatten(k, p.r, p.s);
            return load_x(col.base + q.x * p.h * p.w, col.y + i32(q.y), col.x + i32(q.z));
        }
        case 2u: {
            // k = (co, r, s); gather dy[bi, co, oy, ox] where oy * stride = iy + pad - r
            let q = unflatten(k, p.r, p.s);
            let ty = col.y - i32(q.y);
            let tx = col.x - i32(q.z);
            if ty < 0 || tx < 0 { return 0.0; }
            var oy = u32(ty);
            var ox = u32(tx);
            if p.stride != 1u {
                oy = oy / p.stride;
                ox = ox / p.stride;
                if oy * p.stride != u32(ty) || ox * p.stride != u32(tx) { return 0.0; }
            }
            if oy >= p.oh || ox >= p.ow { return 0.0; }
            return b[col.base + (q.x * p.oh + oy) * p.ow + ox];
        }
        default: {
            // MODE 3: k = (bi, oy, ox)
            let o = unflatten(k, p.oh, p.ow);
            return load_x(o.x * p.cin * p.h * p.w + col.base, i32(o.y * p.stride) + col.y, i32(o.z * p.stride) + col.x);
        }
    }
}

// B[k, n] of the logical product, 0 outside.
fn load_b(k: u32, n: u32) -> f32 {
    return load_b_at(k, n, col_of(n));
}

// Epilogue and store of C[m, n] (in range).
// A max-pool's backward routed through the store (ROUTE): C is the gradient of the
// pool's output (NCHW, element o), whose windows tile the pool's input exactly, and c is
// the gradient of the pool's input. Element o's value goes to its window's saved argmax
// (masked by the ReLU output there with bit 7), the window's other elements get 0: what
// max_pool2d_backward(_relu) would make of C, without storing C.
// An override, not a flags bit: compiled in only where it is used, the route's loop
// keeps the tiled kernels' stores small enough for the driver to unroll them (as a
// runtime branch it cost gemm_tiled 8x at 4096^3 on an H200: its accumulators spilled).
override ROUTE: bool = false;
@group(0) @binding(8) var<storage, read> route_argmax: array<u32>;
@group(0) @binding(9) var<storage, read> route_relu: array<f32>;

fn route_store(o: u32, v: f32) {
    let oh = (p.ph + 2u * p.ppad) / p.pk;
    let ow = (p.pw + 2u * p.ppad) / p.pk;
    let plane = o / (oh * ow);
    let t = o - plane * oh * ow;
    let oy = t / ow;
    let arg = route_argmax[o];
    let base = plane * p.ph * p.pw;
    // pool.wgsl's routed sum: 0 + v
    var g = 0.0;
    g += v;
    if (p.flags & 128u) != 0u { g = select(0.0, g, route_relu[base + arg] > 0.0); }
    let y0 = i32(oy * p.pk) - i32(p.ppad);
    let x0 = i32((t - oy * ow) * p.pk) - i32(p.ppad);
    for (var y = max(y0, 0); y < min(y0 + i32(p.pk), i32(p.ph)); y++) {
        for (var x = max(x0, 0); x < min(x0 + i32(p.pk), i32(p.pw)); x++) {
            let i = u32(y) * p.pw + u32(x);
            c[base + i] = select(0.0, g, i == arg);
        }
    }
}

// Where C[m, n] lives in c: row-major, or (modes 1, 2, 4) NCHW.
fn c_index(m: u32, n: u32) -> u32 {
    if MODE == 1u || MODE == 2u || MODE == 4u {
        // n = (bi, y, x) over the output plane; C row m is a channel of an NCHW tensor
        let fwd = MODE != 2u;
        let plane = select(p.h * p.w, p.oh * p.ow, fwd);
        let channels = select(p.cin, p.cout, fwd);
        let bi = n / plane;
        return (bi * channels + m) * plane + (n - bi * plane);
    }
    return m * p.n + n;
}

fn store_c(m: u32, n: u32, acc: f32) {
    let idx = c_index(m, n);
    if ROUTE {
        route_store(idx, acc);
        return;
    }
    var v = acc;
    if (p.flags & 1u) != 0u { v += c[idx]; }
    let bias_mode = (p.flags >> 2u) & 3u;
    if bias_mode == 1u { v += bias[m]; }
    if bias_mode == 2u { v += bias[n]; }
    if (p.flags & 2u) != 0u { v = max(v, 0.0); }
    c[idx] = v;
}

fn k_range(z: u32) -> vec2u {
    if SPLIT_K { return vec2u(z * p.k_chunk, min((z + 1u) * p.k_chunk, p.k)); }
    return vec2u(0u, p.k);
}

// The workgroup's column block: beyond 65535 column blocks continue in z (not with SPLIT_K).
fn col_block(wid: vec3u, nwg: vec3u) -> u32 {
    if SPLIT_K { return wid.x; }
    return wid.x + wid.z * nwg.x;
}

fn store_out(z: u32, m: u32, n: u32, acc: f32) {
    if SPLIT_K {
        c[(z * p.m + m) * p.n + n] = acc;
    } else {
        store_c(m, n, acc);
    }
}

// gemm_vec4's store of four columns n0..n0+3 at once, through the vec4 view c4 of c
// (VEC4_STORE; the scalar view c is then bound to a dummy: one dispatch may not bind a
// buffer writable twice). store_c's epilogue, component for component, for a row-major C
// whose rows are whole vec4s. llvmpipe writes storage one lane at a time, so one 16-byte
// store instead of four 4-byte ones: the host sets it for mode 5, whose C (dcol) is large.
override VEC4_STORE: bool = false;
@group(0) @binding(10) var<storage, read_write> c4: array<vec4<f32>>;

fn store_c4(m: u32, n0: u32, acc: vec4<f32>) {
    let i4 = c_index(m, n0) / 4u;
    var v = acc;
    if (p.flags & 1u) != 0u { v += c4[i4]; }
    let bias_mode = (p.flags >> 2u) & 3u;
    if bias_mode == 1u { v += vec4<f32>(bias[m]); }
    if bias_mode == 2u { v += vec4<f32>(bias[n0], bias[n0 + 1u], bias[n0 + 2u], bias[n0 + 3u]); }
    if (p.flags & 2u) != 0u { v = max(v, vec4<f32>(0.0)); }
    c4[i4] = v;
}

