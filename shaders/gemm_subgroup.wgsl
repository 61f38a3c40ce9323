
// ---- shaders/gemm_subgroup.wgsl: appended to gemm.wgsl as its own module (Shader::
// GemmSubgroup), so gemm.wgsl itself never needs the SUBGROUP feature.
//
// gemm_vec4_sg: gemm_vec4's three forms with A's loads shared across the subgroup. On
// llvmpipe every load whose address differs between lanes is a loop over the 8 lanes, and
// inside a loop even a load whose address is the same in every lane is one (its exec mask
// is set), so in gemm_vec4 each lane loading the same rows of A costs 8 times what it
// needs. Here the workgroup is one row block (m0 is uniform), lane s of each group of 8
// loads one vec4 of A, and subgroupBroadcast hands it to the others (an extract and a
// broadcast, no memory). The host uses it where subgroups have at least 8 lanes.
// SG_TM = 16 rows per invocation: one load of A per 4 (TN) or 8 (NN, NT) rows. Every lane
// of a subgroup with work runs to the end, lanes past N on clamped loads, because a
// broadcast needs all of them.
// Every loop over the accumulators has a constant trip count and no break, and the NT form
// adds its products through add_dots8 (written out), so that llvmpipe unrolls them all and
// indexes acc, rsum and the shared arrays only with constants. A loop it leaves rolled
// indexes them at run time, which it lowers to compare ladders that LLVM took 5-6 s to
// compile per variant (0.2-0.3 s now; BENCHMARKS.md, "lavapipe: first run").
const SG_TM: u32 = 16u;

// lanes 0..7's v, in every lane
fn share8(v: vec4<f32>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u), subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u),
        subgroupBroadcast(v, 7u));
}

// acc[j] + dot4(av[j], bv) for j = 0..7
fn add_dots8(acc: array<vec4<f32>, 8>, av: array<vec4<f32>, 8>, bv: array<vec4<f32>, 4>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(acc[0] + dot4(av[0], bv), acc[1] + dot4(av[1], bv), acc[2] + dot4(av[2], bv),
        acc[3] + dot4(av[3], bv), acc[4] + dot4(av[4], bv), acc[5] + dot4(av[5], bv), acc[6] + dot4(av[6], bv),
        acc[7] + dot4(av[7], bv));
}

// a[j] + b[j] for j = 0..7
fn add8(a: array<vec4<f32>, 8>, b: array<vec4<f32>, 8>) -> array<vec4<f32>, 8> {
    return array<vec4<f32>, 8>(a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5],
        a[6] + b[6], a[7] + b[7]);
}

// lanes 0..3's v, in every lane
fn share4(v: vec4<f32>) -> array<vec4<f32>, 4> {
    return array<vec4<f32>, 4>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u),
        subgroupBroadcast(v, 3u));
}

@compute @workgroup_size(WGX)
fn gemm_vec4_sg(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u, @builtin(subgroup_invocation_id) sid: u32) {
    let m0 = wid.y * SG_TM;
    let n0 = ((wid.x + wid.z * nwg.x) * WGX + lid.x) * 4u;
    // a subgroup wholly past N has nothing to share or store (on llvmpipe the last column
    // block of a narrow C is mostly such subgroups)
    if subgroupAll(n0 >= p.n) { return; }
    let s8 = sid % 8u;
    let k4 = p.k / 4u;
    var acc: array<vec4<f32>, SG_TM>;
    // BIAS_GRAD: TN sums four rows per vec4 (row i in rsum[i / 4]), NT one row per vec4 (rsum[i])
    var rsum: array<vec4<f32>, SG_TM>;
    if TRANS_A {
        // TN: acc[i] += A^T[k, m0 + i] * B[k, n0..n0+4]; the 16 rows at k are 4 vec4s of A^T,
        // loaded by lanes 0-3 (M % 4 == 0, N % 4 == 0)
        let m4 = p.m / 4u;
        let bs = tn_b(min(n0, p.n - 4u));
        let q = m0 / 4u + s8 % 4u;
        let q_ok = q < m4;
        let qc = min(q, m4 - 1u);
        for (var k = 0u; k < p.k; k++) {
            let bv = b4[bs.x + k * bs.y];
            let av = share4(select(vec4<f32>(0.0), a4[k * m4 + qc], q_ok));
            for (var r = 0u; r < 4u; r++) {
                if BIAS_GRAD { rsum[r] += av[r]; }
                acc[4u * r] = fma(vec4<f32>(av[r].x), bv, acc[4u * r]);
                acc[4u * r + 1u] = fma(vec4<f32>(av[r].y), bv, acc[4u * r + 1u]);
                acc[4u * r + 2u] = fma(vec4<f32>(av[r].z), bv, acc[4u * r + 2u]);
                acc[4u * r + 3u] = fma(vec4<f32>(av[r].w), bv, acc[4u * r + 3u]);
            }
        }
    } else if TRANS_B {
        // NT: acc[i][j] += dot(A[m0 + i, k..k+4], B[n0 + j, k..k+4]); mode 6 as gemm_vec4
        let blocks = select(1u, p.batch, MODE == 6u);
        let q4 = k4 / blocks;
        // rows m0.. m0 + 7 (lo) and m0 + 8.. (hi)
        var lo: array<vec4<f32>, 8>;
        var hi: array<vec4<f32>, 8>;
        var rs_lo: array<vec4<f32>, 8>;
        var rs_hi: array<vec4<f32>, 8>;
        for (var bi = 0u; bi < blocks; bi++) {
            for (var q = 0u; q < q4; q++) {
                let k = bi * q4 + q;
                let bv = nt_b(n0, k, k4);
                let av_lo = share8(nt_a(m0 + s8, bi, q, q4, k4));
                let av_hi = share8(nt_a(m0 + 8u + s8, bi, q, q4, k4));
                lo = add_dots8(lo, av_lo, bv);
                hi = add_dots8(hi, av_hi, bv);
                if BIAS_GRAD { rs_lo = add8(rs_lo, av_lo); rs_hi = add8(rs_hi, av_hi); }
            }
        }
        for (var j = 0u; j < 8u; j++) {
            acc[j] = lo[j];
            acc[8u + j] = hi[j];
            rsum[j] = rs_lo[j];
            rsum[8u + j] = rs_hi[j];
        }
    } else {
        // NN: acc[i] += sum_t A[m0 + i, k + t] * B[k + t, n0..n0+4] (K % 4 == 0, N % 4 == 0)
        let n4 = p.n / 4u;
        let nb = min(n0, p.n - 4u) / 4u;
        for (var k = 0u; k < k4; k++) {
            let bv = nn_b(k, nb, n4);
            for (var h = 0u; h < SG_TM / 8u; h++) {
                let av = share8(a_row(m0 + 8u * h + s8, k, k4));
                for (var j = 0u; j < 8u; j++) {
                    acc[8u * h + j] = fma4(av[j], bv, acc[8u * h + j]);
                }
            }
        }
    }
    if n0 >= p.n { return; }
    for (var i = 0u; i < SG_TM; i++) {
        if m0 + i < p.m { store_c_row4(m0 + i, n0, acc[i]); }
    }
    if BIAS_GRAD && n0 == 0u {
        for (var i = 0u; i < SG_TM; i++) {
            if m0 + i < p.m { store_bias_grad(0u, 1u, m0 + i, row_sum(rsum[select(i, i / 4u, TRANS_A)], i)); }
        }
    }
}
