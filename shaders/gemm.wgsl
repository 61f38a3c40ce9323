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
// The kernel families share the gathers:
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

var<workgroup> tile_a: array<f32, BM * BK>;   // [BK][BM]
var<workgroup> tile_b: array<f32, BK * BN>;   // [BK][BN]

// The (m, k) of the A tile's e-th staged element: consecutive invocations walk A's
// contiguous dimension (k, unless A is stored transposed), so their reads are adjacent.
fn a_stage_index(e: u32) -> vec2u {
    if MODE == 0u && TRANS_A { return vec2u(e % BM, e / BM); }
    return vec2u(e / BK, e % BK);
}

// The (k, n) of the B tile's e-th staged element, walking B's contiguous dimension.
fn b_stage_index(e: u32) -> vec2u {
    if MODE == 0u && TRANS_B { return vec2u(e % BK, e / BK); }
    return vec2u(e / BN, e % BN);
}

// Whether every B element an invocation stages lies in its column tid % BN (then `bcol`, its
// col_of worked out before the K loop, serves them all), else col_of(n) per element.
fn stage_col(bcol: Col, n: u32) -> Col {
    if !(MODE == 0u && TRANS_B) && (WGX * WGY) % BN == 0u { return bcol; }
    return col_of(n);
}

@compute @workgroup_size(WGX, WGY)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_id) lid: vec3u) {
    // Column blocks beyond 65535 continue in z (the host splits the grid).
    let row0 = wid.y * BM;
    let col0 = col_block(wid, nwg) * BN;
    let kr = k_range(wid.z);
    let tid = lid.y * WGX + lid.x;
    let threads = WGX * WGY;
    let bcol = col_of(col0 + tid % BN);
    var acc: array<array<f32, TMAX>, TMAX>;
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { acc[i][j] = 0.0; }
    }
    var a_reg: array<f32, TMAX>;
    var b_reg: array<f32, TMAX>;
    var rsum: array<f32, TMAX>;   // BIAS_GRAD: this K range's sum of each owned row of A
    for (var i = 0u; i < TM; i++) { rsum[i] = 0.0; }
    for (var k0 = kr.x; k0 < kr.y; k0 += BK) {
        // Stage the A and B tiles; consecutive invocations read consecutive addresses.
        if VEC_STAGE {
            for (var e = tid; e < BM * BK / 4u; e += threads) {
                let v = a_stage4(row0, k0, e);
                let i = 4u * (e % (BK / 4u)) * BM + e / (BK / 4u);
                tile_a[i] = v.x;
                tile_a[i + BM] = v.y;
                tile_a[i + 2u * BM] = v.z;
                tile_a[i + 3u * BM] = v.w;
            }
            for (var e = tid; e < BK * BN / 4u; e += threads) {
                let v = b_stage4(col0, k0, e);
                tile_b[4u * e] = v.x;
                tile_b[4u * e + 1u] = v.y;
                tile_b[4u * e + 2u] = v.z;
                tile_b[4u * e + 3u] = v.w;
            }
        } else {
            for (var e = tid; e < BM * BK; e += threads) {
                let mk = a_stage_index(e);
                tile_a[mk.y * BM + mk.x] = load_a(row0 + mk.x, k0 + mk.y);
            }
            for (var e = tid; e < BK * BN; e += threads) {
                let kn = b_stage_index(e);
                tile_b[kn.x * BN + kn.y] = load_b_at(k0 + kn.x, col0 + kn.y, stage_col(bcol, col0 + kn.y));
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            for (var i = 0u; i < TM; i++) { a_reg[i] = tile_a[kk * BM + lid.y + i * WGY]; }
            if BIAS_GRAD {
                for (var i = 0u; i < TM; i++) { rsum[i] += a_reg[i]; }
            }
            for (var j = 0u; j < TN; j++) { b_reg[j] = tile_b[kk * BN + lid.x + j * WGX]; }
            for (var i = 0u; i < TM; i++) {
                for (var j = 0u; j < TN; j++) { acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]); }
            }
        }
        workgroupBarrier();
    }
    // Invocation (x, y) owns rows y + i*WGY and columns x + j*WGX of the tile: strided, so
    // the stores of neighbouring invocations are adjacent.
    for (var i = 0u; i < TM; i++) {
        let m = row0 + lid.y + i * WGY;
        for (var j = 0u; j < TN; j++) {
            let n = col0 + lid.x + j * WGX;
            if m < p.m && n < p.n { store_out(wid.z, m, n, acc[i][j]); }
        }
        if BIAS_GRAD && lid.x == 0u && col_block(wid, nwg) == 0u { store_bias_grad(wid.z, nwg.z, m, rsum[i]); }
    }
}

// gemm_tiled4: gemm_tiled's staging with the tiles held as vec4s, so each invocation reads
// its operands from workgroup memory 16 bytes at a time: 4 rows of A and 4 columns of B per
// load, TM x 8 outputs (TM 4 or 8) in 2 or 4 vec4 registers per row group, written out so
// that no accumulator is indexed at run time (an indexed array can land in local memory:
// BENCHMARKS.md's 1.8 TFLOP/s 8x8 attempt). Invocation (x, y) owns rows 4y..4y+3 (and
// 4(WGY+y).. when TM = 8) and columns 4x..4x+3 and 4(WGX+x)..: neighbours read neighbouring
// vec4s (no bank conflicts) and their stores are adjacent. BN = 8 * WGX, BM = TM * WGY.
var<workgroup> tile_a4: array<vec4<f32>, (BM * BK + 3u) / 4u>;   // [BK][BM/4]
var<workgroup> tile_b4: array<vec4<f32>, (BK * BN + 3u) / 4u>;   // [BK][BN/4]

// VEC_STAGE (mode 0, A [M,K] and B [K,N] not transposed, K and N multiples of 4, BK and
// BN of 4): the tiled kernels stage a K slice with 16-byte global loads through the vec4
// views a4 and b4 (bindings 5, 6), one load where the scalar staging makes four; the same
// values land in the same places (zeros outside M, N and K), so the same bits.
// Item e of BM * BK/4: A[row0 + m, k0 + 4q .. + 3] for (m, q) = (e / (BK/4), e % (BK/4)).
fn a_stage4(row0: u32, k0: u32, e: u32) -> vec4<f32> {
    let k4 = p.k / 4u;
    let m = row0 + e / (BK / 4u);
    let kq = k0 / 4u + e % (BK / 4u);
    return select(vec4<f32>(0.0), a4[min(m, p.m - 1u) * k4 + min(kq, k4 - 1u)], m < p.m && kq < k4);
}

// Item e of BK * BN/4: B[k0 + k, col0 + 4j .. + 3] for (k, j) = (e / (BN/4), e % (BN/4))
// (N % 4 == 0: wholly in range or out).
fn b_stage4(col0: u32, k0: u32, e: u32) -> vec4<f32> {
    let n4 = p.n / 4u;
    let k = k0 + e / (BN / 4u);
    let j = col0 / 4u + e % (BN / 4u);
    return select(vec4<f32>(0.0), b4[min(k, p.k - 1u) * n4 + min(j, n4 - 1u)], k < p.k && j < n4);
}

fn store_row4(z: u32, m: u32, n: u32, v: vec4<f32>) {
    if m >= p.m { return; }
    for (var j = 0u; j < 4u; j++) {
        if n + j < p.n { store_out(z, m, n + j, v[j]); }
    }
}

@compute @workgroup_size(WGX, WGY)
fn gemm_tiled4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_id) lid: vec3u) {
    let row0 = wid.y * BM;
    let col0 = col_block(wid, nwg) * BN;
    let kr = k_range(wid.z);
    let tid = lid.y * WGX + lid.x;
    let threads = WGX * WGY;
    let bcol = col_of(col0 + tid % BN);
    let bm4 = BM / 4u;
    let bn4 = BN / 4u;
    // c<row group><row><column group>: rows 4y + i (group 0) and 4(WGY + y) + i (group 1)
    var c000 = vec4<f32>(0.0); var c001 = vec4<f32>(0.0);
    var c010 = vec4<f32>(0.0); var c011 = vec4<f32>(0.0);
    var c020 = vec4<f32>(0.0); var c021 = vec4<f32>(0.0);
    var c030 = vec4<f32>(0.0); var c031 = vec4<f32>(0.0);
    var c100 = vec4<f32>(0.0); var c101 = vec4<f32>(0.0);
    var c110 = vec4<f32>(0.0); var c111 = vec4<f32>(0.0);
    var c120 = vec4<f32>(0.0); var c121 = vec4<f32>(0.0);
    var c130 = vec4<f32>(0.0); var c131 = vec4<f32>(0.0);
    var rsum0 = vec4<f32>(0.0); var rsum1 = vec4<f32>(0.0);   // BIAS_GRAD: row sums of A
    for (var k0 = kr.x; k0 < kr.y; k0 += BK) {
        if VEC_STAGE {
            // A's four K values go down the tile's K rows; B's vec4 is one tile vec4
            for (var e = tid; e < BM * BK / 4u; e += threads) {
                let v = a_stage4(row0, k0, e);
                let m = e / (BK / 4u);
                let i = 4u * (e % (BK / 4u)) * bm4 + m / 4u;
                tile_a4[i][m % 4u] = v.x;
                tile_a4[i + bm4][m % 4u] = v.y;
                tile_a4[i + 2u * bm4][m % 4u] = v.z;
                tile_a4[i + 3u * bm4][m % 4u] = v.w;
            }
            for (var e = tid; e < BK * bn4; e += threads) { tile_b4[e] = b_stage4(col0, k0, e); }
        } else {
            for (var e = tid; e < BM * BK; e += threads) {
                let mk = a_stage_index(e);
                tile_a4[mk.y * bm4 + mk.x / 4u][mk.x % 4u] = load_a(row0 + mk.x, k0 + mk.y);
            }
            for (var e = tid; e < BK * BN; e += threads) {
                let kn = b_stage_index(e);
                tile_b4[kn.x * bn4 + kn.y / 4u][kn.y % 4u] = load_b_at(k0 + kn.x, col0 + kn.y, stage_col(bcol, col0 + kn.y));
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let b0 = tile_b4[kk * bn4 + lid.x];
            let b1 = tile_b4[kk * bn4 + WGX + lid.x];
            let a0 = tile_a4[kk * bm4 + lid.y];
            if BIAS_GRAD { rsum0 += a0; }
            c000 = fma(vec4<f32>(a0.x), b0, c000); c001 = fma(vec4<f32>(a0.x), b1, c001);
            c010 = fma(vec4<f32>(a0.y), b0, c010); c011 = fma(vec4<f32>(a0.y), b1, c011);
            c020 = fma(vec4<f32>(a0.z), b0, c020); c021 = fma(vec4<f32>(a0.z), b1, c021);
            c030 = fma(vec4<f32>(a0.w), b0, c030); c031 = fma(vec4<f32>(a0.w), b1, c031);
            if TM == 8u {
                let a1 = tile_a4[kk * bm4 + WGY + lid.y];
                if BIAS_GRAD { rsum1 += a1; }
                c100 = fma(vec4<f32>(a1.x), b0, c100); c101 = fma(vec4<f32>(a1.x), b1, c101);
                c110 = fma(vec4<f32>(a1.y), b0, c110); c111 = fma(vec4<f32>(a1.y), b1, c111);
                c120 = fma(vec4<f32>(a1.z), b0, c120); c121 = fma(vec4<f32>(a1.z), b1, c121);
                c130 = fma(vec4<f32>(a1.w), b0, c130); c131 = fma(vec4<f32>(a1.w), b1, c131);
            }
        }
        workgroupBarrier();
    }
    let z = wid.z;
    let r0 = row0 + 4u * lid.y;
    let n0 = col0 + 4u * lid.x;
    let n1 = n0 + 4u * WGX;
    store_row4(z, r0, n0, c000); store_row4(z, r0, n1, c001);
    store_row4(z, r0 + 1u, n0, c010); store_row4(z, r0 + 1u, n1, c011);
    store_row4(z, r0 + 2u, n0, c020); store_row4(z, r0 + 2u, n1, c021);
    store_row4(z, r0 + 3u, n0, c030); store_row4(z, r0 + 3u, n1, c031);
    if TM == 8u {
        let r1 = r0 + 4u * WGY;
        store_row4(z, r1, n0, c100); store_row4(z, r1, n1, c101);
        store_row4(z, r1 + 1u, n0, c110); store_row4(z, r1 + 1u, n1, c111);
        store_row4(z, r1 + 2u, n0, c120); store_row4(z, r1 + 2u, n1, c121);
        store_row4(z, r1 + 3u, n0, c130); store_row4(z, r1 + 3u, n1, c131);
    }
    if BIAS_GRAD && lid.x == 0u && col_block(wid, nwg) == 0u {
        for (var j = 0u; j < 4u; j++) {
            store_bias_grad(z, nwg.z, r0 + j, rsum0[j]);
            if TM == 8u { store_bias_grad(z, nwg.z, r0 + 4u * WGY + j, rsum1[j]); }
        }
    }
}

@compute @workgroup_size(WGX, WGY)
fn gemm_regblock(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) lid: vec3u) {
    // Invocation (x, y) owns the TM x TN block at rows y*TM.., columns x*TN..; column
    // blocks beyond 65535 workgroups continue in z.
    let row0 = (wid.y * WGY + lid.y) * TM;
    let col0 = (col_block(wid, nwg) * WGX + lid.x) * TN;
    let kr = k_range(wid.z);
    if row0 >= p.m || col0 >= p.n { return; }
    var acc: array<array<f32, TMAX>, TMAX>;
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { acc[i][j] = 0.0; }
    }
    var a_reg: array<f32, TMAX>;
    var b_reg: array<f32, TMAX>;
    for (var k = kr.x; k < kr.y; k++) {
        for (var i = 0u; i < TM; i++) { a_reg[i] = load_a(row0 + i, k); }
        for (var j = 0u; j < TN; j++) { b_reg[j] = load_b(k, col0 + j); }
        for (var i = 0u; i < TM; i++) {
            for (var j = 0u; j < TN; j++) { acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]); }
        }
    }
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            if row0 + i < p.m && col0 + j < p.n { store_out(wid.z, row0 + i, col0 + j, acc[i][j]); }
        }
    }
}

// ---- gemm_vec4: modes 0 and 4-6, register blocked (TM x 4 per invocation, TM <= 8) with
// 16-byte loads along the contiguous dimension, no workgroup memory. The fastest form on
// llvmpipe, where each vec4 load is one vector load instead of four gathers. Forms and what
// they need (the host falls back to gemm_regblock or the implicit modes otherwise):
//   NN (A [M,K], B [K,N]): K % 4 == 0, N % 4 == 0                          modes 0, 4
//   NT (A [M,K], B [N,K]): K % 4 == 0            (dot products along K)    modes 0, 6
//   TN (A [K,M], B [K,N]): M % 4 == 0, N % 4 == 0 (outer products per k;   modes 0, 5
//                          TM 4 or 8)
// plus P = OH*OW % 4 == 0 for the blocked operands of modes 5 and 6.
@group(0) @binding(5) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> b4: array<vec4<f32>>;

@compute @workgroup_size(WGX, WGY)
fn gemm_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_id) lid: vec3u) {
    let m0 = (wid.y * WGY + lid.y) * TM;
    let n0 = ((wid.x + wid.z * nwg.x) * WGX + lid.x) * 4u;
    if m0 >= p.m || n0 >= p.n { return; }
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, TMAX>;
    for (var i = 0u; i < TM; i++) { acc[i] = vec4<f32>(0.0); }
    // BIAS_GRAD: TN sums four rows per vec4 (rsum[r / 4]), NT one row per vec4 (rsum[i])
    var rsum: array<vec4<f32>, TMAX>;
    for (var i = 0u; i < TM; i++) { rsum[i] = vec4<f32>(0.0); }
    if TRANS_A {
        // TN: acc[i] += A^T[k, m0 + i] * B[k, n0..n0+4]
        let m4 = p.m / 4u;
        let bs = tn_b(n0);
        // TM is 4 or 8 here (the host rounds it): rows come in vec4s of A^T
        for (var k = 0u; k < p.k; k++) {
            let bv = b4[bs.x + k * bs.y];
            // M % 4 == 0: a group of four rows is wholly in range or wholly out
            for (var r = 0u; r < TM && m0 + r < p.m; r += 4u) {
                let av = a4[k * m4 + (m0 + r) / 4u];
                if BIAS_GRAD { rsum[r / 4u] += av; }
                acc[r] = fma(vec4<f32>(av.x), bv, acc[r]);
                acc[r + 1u] = fma(vec4<f32>(av.y), bv, acc[r + 1u]);
                acc[r + 2u] = fma(vec4<f32>(av.z), bv, acc[r + 2u]);
                acc[r + 3u] = fma(vec4<f32>(av.w), bv, acc[r + 3u]);
            }
        }
    } else if TRANS_B {
        // NT: acc[i][j] += dot(A[m0 + i, k..k+4], B[n0 + j, k..k+4]). Mode 6: A = dy blocked,
        // so the reduction runs as (image bi, vec4 q of its plane): A row m of image bi
        // starts at (bi*M + m) * P/4, and the reduction index is k = bi * P/4 + q.
        let blocks = select(1u, p.batch, MODE == 6u);
        let q4 = k4 / blocks;
        for (var bi = 0u; bi < blocks; bi++) {
            for (var q = 0u; q < q4; q++) {
                let k = bi * q4 + q;
                let bv = nt_b(n0, k, k4);
                for (var i = 0u; i < TM; i++) {
                    let av = nt_a(m0 + i, bi, q, q4, k4);
                    if BIAS_GRAD { rsum[i] += av; }
                    acc[i] += dot4(av, bv);
                }
            }
        }
    } else {
        // NN: acc[i] += sum_t A[m0 + i, k + t] * B[k + t, n0..n0+4]
        let n4 = p.n / 4u;
        for (var k = 0u; k < k4; k++) {
            let bv = nn_b(k, n0 / 4u, n4);
            for (var i = 0u; i < TM; i++) {
                acc[i] = fma4(a_row(m0 + i, k, k4), bv, acc[i]);
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        if m0 + i < p.m { store_c_row4(m0 + i, n0, acc[i]); }
    }
    if BIAS_GRAD && n0 == 0u {
        for (var i = 0u; i < TM; i++) {
            if m0 + i < p.m { store_bias_grad(0u, 1u, m0 + i, row_sum(rsum[select(i, i / 4u, TRANS_A)], i)); }
        }
    }
}

// The TN form's B[k, n0..n0+4] sits at vec4 x + k * y. Mode 5: B = dy blocked, the columns
// n0.. lie in image bi at plane offset n0 - bi*P, row k = channel k.
fn tn_b(n0: u32) -> vec2u {
    if MODE == 5u {
        let plane4 = (p.oh * p.ow) / 4u;
        let bi = n0 / (4u * plane4);
        return vec2u(bi * p.k * plane4 + (n0 / 4u - bi * plane4), plane4);
    }
    return vec2u(n0 / 4u, p.n / 4u);
}

// A[row, 4k..4k+4] of a row-major A [M, K] (0 past M).
fn a_row(row: u32, k: u32, k4: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), a4[min(row, p.m - 1u) * k4 + k], row < p.m);
}

// The NN form's B rows 4k..4k+3 at vec4 column nb.
fn nn_b(k: u32, nb: u32, n4: u32) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(b4[(4u * k) * n4 + nb], b4[(4u * k + 1u) * n4 + nb], b4[(4u * k + 2u) * n4 + nb],
        b4[(4u * k + 3u) * n4 + nb]);
}

// acc + sum_t a[t] * b[t], one sequential chain from t = 3 down to 0.
fn fma4(a: vec4<f32>, b: array<vec4<f32>, 4>, acc: vec4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(a.x), b[0], fma(vec4<f32>(a.y), b[1], fma(vec4<f32>(a.z), b[2], fma(vec4<f32>(a.w), b[3], acc))));
}

// The NT form's A row `row` (0 past M) at vec4 q of block bi, k = bi * q4 + q. Mode 6: A =
// dy blocked, row m of image bi starting at (bi*M + m) * P/4.
fn nt_a(row: u32, bi: u32, q: u32, q4: u32, k4: u32) -> vec4<f32> {
    if MODE == 6u {
        let mi = min(row, p.m - 1u);
        return select(vec4<f32>(0.0), a4[(bi * p.m + mi) * q4 + q], row < p.m);
    }
    return a_row(row, bi * q4 + q, k4);
}

// dot(a, b[j]) for j = 0..3.
fn dot4(a: vec4<f32>, b: array<vec4<f32>, 4>) -> vec4<f32> {
    return vec4<f32>(dot(a, b[0]), dot(a, b[1]), dot(a, b[2]), dot(a, b[3]));
}

// The NT form's B rows n0..n0+3 at vec4 k of K (rows past N read 0).
fn nt_b(n0: u32, k: u32, k4: u32) -> array<vec4<f32>, 4> {
    var bv: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        bv[j] = select(vec4<f32>(0.0), b4[min(n0 + j, p.n - 1u) * k4 + k], n0 + j < p.n);
    }
    return bv;
}

// gemm_vec4's (and gemm_vec4_sg's) store of C[m, n0..n0+4], row m in range.
fn store_c_row4(m: u32, n0: u32, v: vec4<f32>) {
    if VEC4_STORE {
        store_c4(m, n0, v);
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if n0 + j < p.n { store_c(m, n0 + j, v[j]); }
    }
}

// Row i's bias gradient from the vec4 v of its sums: TN sums four rows per vec4 (row i is
// component i % 4), NT and NN one row per vec4 (its four components added).
fn row_sum(v: vec4<f32>, i: u32) -> f32 {
    if TRANS_A { return v[i % 4u]; }
    return (v.x + v.y) + (v.z + v.w);
}
