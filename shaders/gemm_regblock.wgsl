// gemm_regblock: register blocking straight from global memory, no workgroup memory (joined
// after gemm.wgsl, whose gathers, stores and Params it uses).

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

