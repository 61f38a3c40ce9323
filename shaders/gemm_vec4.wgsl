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
