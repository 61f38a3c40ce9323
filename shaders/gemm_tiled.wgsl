// gemm_tiled and gemm_tiled4, the GPU families: a BM x BN tile per workgroup staged through
// workgroup memory (joined after gemm.wgsl, whose gathers, stores and Params they use).

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

