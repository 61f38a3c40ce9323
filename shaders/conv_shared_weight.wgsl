// conv_shared_weight, conv_shared_weight4 and conv_shared_weight_sum: the weight gradients
// of conv_shared.wgsl (described there), joined after it into one module.

@compute @workgroup_size(WG)
fn conv_shared_weight(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
    let slice = wid.x;
    let taps = p.cin * p.r * p.s;
    let weights = p.cout * taps;
    let items = weights + select(0u, p.cout, (p.flags & 1u) != 0u);
    let bands = (p.oh + p.band - 1u) / p.band;
    let in_rows = (p.band - 1u) * p.stride + p.r;
    let plane = p.band * p.ow;
    let dy_len = p.cout * plane;
    let x_len = p.cin * in_rows * p.pitch;
    let first = slice * p.count;
    let last = min(first + p.count, p.batch * bands);
    let rounds = (items + WG - 1u) / WG;
    for (var round = 0u; round < rounds; round++) {
        let j = round * WG + lid;
        // the item's place in the staged tile (unused past `items`)
        var dy_at = 0u;
        var x_at = 0u;
        if j < weights {
            let co = j / taps;
            let t = j % taps;
            dy_at = co * plane;
            x_at = dy_len + ((t / (p.r * p.s)) * in_rows + (t / p.s) % p.r) * p.pitch + t % p.s;
        } else {
            dy_at = (j - weights) * plane;
        }
        var acc = 0.0;
        for (var tile_id = first; tile_id < last; tile_id++) {
            let n = tile_id / bands;
            let oy0 = (tile_id % bands) * p.band;
            let rows = min(p.band, p.oh - oy0);
            workgroupBarrier();
            for (var i = lid; i < dy_len; i += WG) {
                let co = i / plane;
                let oy = oy0 + (i % plane) / p.ow;
                var v = 0.0;
                if oy < p.oh {
                    v = dy[((n * p.cout + co) * p.oh + oy) * p.ow + i % p.ow];
                }
                tile[i] = v;
            }
            for (var i = lid; i < x_len; i += WG) {
                let ci = i / (in_rows * p.pitch);
                let iy = i32(oy0 * p.stride + (i / p.pitch) % in_rows) - i32(p.pad_y);
                let ix = i32(i % p.pitch) - i32(p.pad_x);
                var v = 0.0;
                if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
                    v = x[((n * p.cin + ci) * p.h + u32(iy)) * p.w + u32(ix)];
                }
                tile[dy_len + i] = v;
            }
            workgroupBarrier();
            if j < weights {
                for (var oy = 0u; oy < rows; oy++) {
                    let d = dy_at + oy * p.ow;
                    let xr = x_at + oy * p.stride * p.pitch;
                    for (var ox = 0u; ox < p.ow; ox++) {
                        acc += tile[d + ox] * tile[xr + ox * p.stride];
                    }
                }
            } else if j < items {
                for (var q = 0u; q < rows * p.ow; q++) {
                    acc += tile[dy_at + q];
                }
            }
        }
        if j < weights {
            part[slice * weights + j] = acc;
        } else if j < items {
            part[p.slices * weights + slice * p.cout + j - weights] = acc;
        }
    }
}

// conv_shared_weight4: the weight gradient of a convolution with more weights per output
// channel (conv2: 16 x 5 x 5), where conv_shared_weight's one item per invocation would
// leave each invocation a long reduction alone. A workgroup owns slice wid.x (COUNT tiles of
// (image n, band of BAND output rows), as above) and the 16 output channels of block wid.y;
// invocation j < C*R*S owns weight (c, r, s) of those 16 channels in four vec4 registers,
// invocation C*R*S their bias gradient. Per tile the workgroup stages dy's 16 channels as
// vec4s per position ([position][4 x vec4], broadcast to every invocation) in ws and the
// input rows of every channel under the band in xs; each position then costs one scalar and
// four vec4 reads of workgroup memory per 16 FMAs. The slices go to part as above.
@compute @workgroup_size(WG)
fn conv_shared_weight4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
    let slice = wid.x;
    let co0 = wid.y * 16u;
    let taps = p.cin * p.r * p.s;
    let weights = p.cout * taps;
    let bands = (p.oh + p.band - 1u) / p.band;
    let in_rows = (p.band - 1u) * p.stride + p.r;
    let plane = in_rows * p.pitch;
    let positions = p.band * p.ow;
    let first = slice * p.count;
    let last = min(first + p.count, p.batch * bands);
    let items = taps + select(0u, 1u, (p.flags & 1u) != 0u);
    let rounds = (items + WG - 1u) / WG;
    for (var round = 0u; round < rounds; round++) {
        let j = round * WG + lid;
        var x_at = 0u;
        if j < taps {
            let t = j % (p.r * p.s);
            x_at = ((j / (p.r * p.s)) * in_rows + t / p.s) * p.pitch + t % p.s;
        }
        var a0 = vec4f();
        var a1 = vec4f();
        var a2 = vec4f();
        var a3 = vec4f();
        for (var tile_id = first; tile_id < last; tile_id++) {
            let n = tile_id / bands;
            let oy0 = (tile_id % bands) * p.band;
            let rows = min(p.band, p.oh - oy0);
            workgroupBarrier();
            // dy, read along the rows (i = channel * positions + position), stored per position
            for (var i = lid; i < 16u * positions; i += WG) {
                let k = i / positions;
                let q = i % positions;
                let oy = oy0 + q / p.ow;
                var v = 0.0;
                if co0 + k < p.cout && oy < p.oh {
                    v = dy[((n * p.cout + co0 + k) * p.oh + oy) * p.ow + q % p.ow];
                }
                ws[q * 4u + k / 4u][k % 4u] = v;
            }
            for (var i = lid; i < p.cin * plane; i += WG) {
                let iy = i32(oy0 * p.stride + (i % plane) / p.pitch) - i32(p.pad_y);
                let ix = i32(i % p.pitch) - i32(p.pad_x);
                var v = 0.0;
                if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
                    v = x[((n * p.cin + i / plane) * p.h + u32(iy)) * p.w + u32(ix)];
                }
                xs[i] = v;
            }
            workgroupBarrier();
            if j < taps {
                for (var oy = 0u; oy < rows; oy++) {
                    let xr = x_at + oy * p.stride * p.pitch;
                    for (var ox = 0u; ox < p.ow; ox++) {
                        let v = vec4f(xs[xr + ox * p.stride]);
                        let q = (oy * p.ow + ox) * 4u;
                        a0 = fma(v, ws[q], a0);
                        a1 = fma(v, ws[q + 1u], a1);
                        a2 = fma(v, ws[q + 2u], a2);
                        a3 = fma(v, ws[q + 3u], a3);
                    }
                }
            } else if j == taps {
                for (var q = 0u; q < rows * p.ow; q++) {
                    a0 += ws[q * 4u];
                    a1 += ws[q * 4u + 1u];
                    a2 += ws[q * 4u + 2u];
                    a3 += ws[q * 4u + 3u];
                }
            }
        }
        if j < taps {
            // weight (co, j) of each channel co of the block
            let at = slice * weights + co0 * taps + j;
            store_part4(at, taps, co0, a0);
            store_part4(at + 4u * taps, taps, co0 + 4u, a1);
            store_part4(at + 8u * taps, taps, co0 + 8u, a2);
            store_part4(at + 12u * taps, taps, co0 + 12u, a3);
        } else if j == taps {
            let at = p.slices * weights + slice * p.cout + co0;
            store_part4(at, 1u, co0, a0);
            store_part4(at + 4u, 1u, co0 + 4u, a1);
            store_part4(at + 8u, 1u, co0 + 8u, a2);
            store_part4(at + 12u, 1u, co0 + 12u, a3);
        }
    }
}

// part[at + k * step] = a[k] for the channels co + k that exist
fn store_part4(at: u32, step: u32, co: u32, a: vec4f) {
    for (var k = 0u; k < 4u; k++) {
        if co + k < p.cout {
            part[at + k * step] = a[k];
        }
    }
}

// conv_shared_weight_sum: one workgroup of 64 per output (the weights, then the biases):
// invocation t adds slices t, t + 64, ... in order, then a fixed tree adds the 64 sums.
// flags bit 1: dw accumulates, bit 2: db accumulates.
@compute @workgroup_size(64)
fn conv_shared_weight_sum(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                          @builtin(local_invocation_index) lid: u32) {
    let i = wid.x + wid.y * nwg.x;
    let weights = p.cout * p.cin * p.r * p.s;
    let outputs = weights + select(0u, p.cout, (p.flags & 1u) != 0u);
    if i >= outputs { return; }
    // slice 0's value and the distance between slices in part
    let base = select(p.slices * weights + i - weights, i, i < weights);
    let step = select(p.cout, weights, i < weights);
    var sum = 0.0;
    for (var z = lid; z < p.slices; z += 64u) {
        sum += part[base + z * step];
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k >>= 1u) {
        if lid < k {
            red[lid] += red[lid + k];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        if i < weights {
            dw[i] = red[0] + select(0.0, dw[i], (p.flags & 2u) != 0u);
        } else {
            db[i - weights] = red[0] + select(0.0, db[i - weights], (p.flags & 4u) != 0u);
        }
    }
}
