// Batch normalisation (PyTorch's BatchNorm1d/2d) over x seen as [N, C, INNER]:
// INNER = H*W for [N, C, H, W], 1 for [N, C]. Per channel c the statistics run over the
// M = N * INNER values x[n, c, i].
//
//   train:    mean = sum x / M,  var = sum (x - mean)^2 / M  (biased),  invstd = 1/sqrt(var + eps)
//             y = (x - mean) * invstd * weight + bias
//             running_mean = (1 - m) running_mean + m mean
//             running_var  = (1 - m) running_var  + m var * M / (M - 1)   (unbiased, as PyTorch)
//             num_batches_tracked += 1
//   eval:     y = (x - running_mean) / sqrt(running_var + eps) * weight + bias
//   backward: see batchnorm_backward.
//
// Train and backward: one workgroup per channel (deterministic fixed-order reductions, no
// atomics). Each invocation sums a strided slice of the channel sequentially, then the
// workgroup adds the WG partial sums in a fixed tree. One workgroup per channel leaves
// most of a GPU idle for C = 16..128 channels, but the M values of a channel (at most
// 64*28*28 = 50,176 for MNIST) take microseconds; split the reduction over workgroups
// (then a second small pass) if it ever shows in a profile.
//
// Numerics: two passes (mean, then the sum of squared deviations), never E[x^2] - E[x]^2,
// which cancels catastrophically when |mean| >> std (pre-activations with a large offset).
// The squared deviations are non-negative, so their f32 sum has only rounding error
// (about (M/WG + log2 WG) * 2^-24 relative, ~1e-5 at M = 50,176) and an error d in the
// mean enters the variance only as d^2. f32 is enough: the statistics feed a normalisation
// whose own output is rounded to f32. A single Welford pass would save one read of x, at
// the price of a division per element and a less obvious merge; memory traffic is not
// what limits these sizes.

struct Params {
    outer: u32,        // N
    c: u32,            // C
    inner: u32,        // H*W (1 for BatchNorm1d)
    // backward: bit 0 = add to dweight, bit 1 = add to dbias (a parameter used twice)
    accumulate: u32,
    momentum: f32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// train outputs; the running statistics are read-modify-write state
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> save_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> save_invstd: array<f32>;
@group(0) @binding(7) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(8) var<storage, read_write> running_var: array<f32>;
// num_batches_tracked as an f32 count: exact up to 2^24 steps
@group(0) @binding(9) var<storage, read_write> num_batches: array<f32>;
// eval inputs
@group(0) @binding(10) var<storage, read> eval_mean: array<f32>;
@group(0) @binding(11) var<storage, read> eval_var: array<f32>;
// backward
@group(0) @binding(12) var<storage, read> dy: array<f32>;
@group(0) @binding(13) var<storage, read> saved_mean: array<f32>;
@group(0) @binding(14) var<storage, read> saved_invstd: array<f32>;
@group(0) @binding(15) var<storage, read_write> dx: array<f32>;
@group(0) @binding(16) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(17) var<storage, read_write> dbias: array<f32>;

var<workgroup> partial: array<f32, WG>;
var<workgroup> partial2: array<f32, WG>;

// Index of the e-th value (0 <= e < M) of channel ch.
fn at(ch: u32, e: u32) -> u32 {
    let n = e / p.inner;
    let i = e - n * p.inner;
    return (n * p.c + ch) * p.inner + i;
}

// Fixed-order tree sum of partial[] across the workgroup; every invocation gets the total.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half { partial[lid] += partial[lid + half]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();   // partial[] is reused by the next sum
    return total;
}

@compute @workgroup_size(WG)
fn batchnorm_forward_train(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                           @builtin(local_invocation_id) lid3: vec3u) {
    let ch = wid.x + wid.y * nwg.x;   // uniform across the workgroup: the return keeps barriers uniform
    if ch >= p.c { return; }
    let lid = lid3.x;
    let m = p.outer * p.inner;
    let mf = f32(m);
    var s = 0.0;
    for (var e = lid; e < m; e += WG) { s += x[at(ch, e)]; }
    let mean = workgroup_sum(lid, s) / mf;
    var q = 0.0;
    for (var e = lid; e < m; e += WG) {
        let d = x[at(ch, e)] - mean;
        q += d * d;
    }
    let var_b = workgroup_sum(lid, q) / mf;
    let invstd = 1.0 / sqrt(var_b + p.eps);
    let scale = invstd * weight[ch];
    let shift = bias[ch];
    for (var e = lid; e < m; e += WG) {
        let k = at(ch, e);
        y[k] = (x[k] - mean) * scale + shift;
    }
    if lid == 0u {
        save_mean[ch] = mean;
        save_invstd[ch] = invstd;
        // M >= 2 is checked on the host (PyTorch refuses one value per channel in training)
        let unbiased = var_b * (mf / f32(m - 1u));
        running_mean[ch] = (1.0 - p.momentum) * running_mean[ch] + p.momentum * mean;
        running_var[ch] = (1.0 - p.momentum) * running_var[ch] + p.momentum * unbiased;
        if ch == 0u { num_batches[0] = num_batches[0] + 1.0; }
    }
}

// One invocation per element: the running statistics, no reduction.
@compute @workgroup_size(WG)
fn batchnorm_forward_eval(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                          @builtin(local_invocation_id) lid: vec3u) {
    let k = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if k >= p.outer * p.c * p.inner { return; }
    let ch = (k / p.inner) % p.c;
    let invstd = 1.0 / sqrt(eval_var[ch] + p.eps);
    y[k] = (x[k] - eval_mean[ch]) * invstd * weight[ch] + bias[ch];
}

// Backward of the train-mode forward, per channel, with xhat = (x - mean) * invstd and
// y = weight * xhat + bias. The batch statistics depend on every x of the channel:
//   dbias   = sum dy
//   dweight = sum dy * xhat
//   dxhat   = dy * weight
//   dvar    = sum dxhat * (x - mean) * (-1/2) invstd^3
//   dmean   = -invstd * sum dxhat   (+ dvar * -2/M sum (x - mean), which is 0)
//   dx      = dxhat * invstd + dvar * 2 (x - mean) / M + dmean / M
// and with sum dxhat * (x - mean) = weight / invstd * dweight this collapses to
//   dx = weight * invstd / M * (M dy - dbias - xhat * dweight).
// dx is written (=); dweight and dbias are written or accumulated per p.accumulate.
@compute @workgroup_size(WG)
fn batchnorm_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_id) lid3: vec3u) {
    let ch = wid.x + wid.y * nwg.x;
    if ch >= p.c { return; }
    let lid = lid3.x;
    let m = p.outer * p.inner;
    let mean = saved_mean[ch];
    let invstd = saved_invstd[ch];
    var sdy = 0.0;
    var sdyx = 0.0;
    for (var e = lid; e < m; e += WG) {
        let k = at(ch, e);
        let g = dy[k];
        sdy += g;
        sdyx += g * (x[k] - mean) * invstd;
    }
    // two sums in one tree
    partial[lid] = sdy;
    partial2[lid] = sdyx;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            partial[lid] += partial[lid + half];
            partial2[lid] += partial2[lid + half];
        }
        workgroupBarrier();
    }
    let db = partial[0];
    let dw = partial2[0];
    let k_scale = weight[ch] * invstd / f32(m);
    let mf = f32(m);
    for (var e = lid; e < m; e += WG) {
        let k = at(ch, e);
        let xhat = (x[k] - mean) * invstd;
        dx[k] = k_scale * (mf * dy[k] - db - xhat * dw);
    }
    if lid == 0u {
        dweight[ch] = select(0.0, dweight[ch], (p.accumulate & 1u) != 0u) + dw;
        dbias[ch] = select(0.0, dbias[ch], (p.accumulate & 2u) != 0u) + db;
    }
}
