// Optimizers: one invocation per parameter over a flat buffer, so one dispatch updates
// every parameter of a model (padding between tensors has zero gradient and stays put).
//
//   sgd_step:  v = momentum * v + (g + wd * w);  w -= lr * v       (momentum 0: plain SGD)
//   adam_step: m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2,  g' = g + wd * w
//              w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// t (1-based) is read from the step buffer, which the executor advances each step, so
// nothing is re-uploaded per parameter.

struct Params {
    n: u32,
    _pad: u32,
    lr: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// step[0]: number of optimizer steps taken before this one
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> m1: array<f32>;
@group(0) @binding(5) var<storage, read_write> m2: array<f32>;

fn element(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn sgd_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    let g = grad[i] + p.weight_decay * w[i];
    let v = p.momentum * m1[i] + g;
    m1[i] = v;
    w[i] = w[i] - p.lr * v;
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    let t = f32(step[0] + 1u);
    let g = grad[i] + p.weight_decay * w[i];
    let m = p.beta1 * m1[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * m2[i] + (1.0 - p.beta2) * g * g;
    m1[i] = m;
    m2[i] = v;
    let m_hat = m / (1.0 - pow(p.beta1, t));
    let v_hat = v / (1.0 - pow(p.beta2, t));
    w[i] = w[i] - p.lr * m_hat / (sqrt(v_hat) + p.eps);
}
