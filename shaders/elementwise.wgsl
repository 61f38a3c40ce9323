// Elementwise ops, forward next to backward.
//
// Dimensions: for the bias ops a tensor is seen as [OUTER, C, INNER] (linear: [N, features, 1];
// conv: [N, channels, H*W]); `n` is the element count. One invocation per element; the
// host splits launches beyond 65535 workgroups into a 2-D grid, linearised below.

struct Params {
    n: u32,
    c: u32,
    inner: u32,
    _pad: u32,
    alpha: f32,
    beta: f32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;

fn element(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

// ---- relu: y = max(x, 0); dx = dy where x > 0 (the subgradient at 0 is 0, as in PyTorch)
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(WG)
fn relu_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    y[i] = max(x[i], 0.0);
}

@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    dx[i] = select(0.0, dy[i], x[i] > 0.0);
}

// ---- bias: y = x + b[channel]   (the gradient db is a channel sum: reduce.wgsl)
@group(0) @binding(5) var<storage, read> b: array<f32>;

@compute @workgroup_size(WG)
fn bias_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    y[i] = x[i] + b[(i / p.inner) % p.c];
}

// ---- scale_add: y = alpha * x + beta * dy  (gradient sums, axpy). Its backward is two
// scale_adds: dx = alpha * dy, d(second input) = beta * dy.
@compute @workgroup_size(WG)
fn scale_add_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    y[i] = p.alpha * x[i] + p.beta * dy[i];
}

// ---- fill: y = alpha (zeroing accumulators)
@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    y[i] = p.alpha;
}
