// Optimizers: one invocation per parameter over a flat buffer, so one dispatch updates
// every parameter of a model (padding between tensors has zero gradient and stays put).
//
//   sgd_step:  v = momentum * v + (g + wd * w);  w -= a_t * v       (momentum 0: plain SGD)
//   adam_step: m = b1 m + (1-b1) g';  v = b2 v + (1-b2) g'^2,  g' = g + wd * w
//              w = d_t w - a_t * m / (sqrt(v) * c_t + eps)
// Adam (L2) has d_t = 1 and its weight decay in g'; AdamW (decoupled, torch.optim.AdamW)
// has wd 0 in g' and d_t = 1 - lr f_t wd, applied before the step as torch does.
// with, at the t-th step (1-based), for a learning rate lr and a schedule factor f_t:
//   SGD: a_t = lr f_t;   Adam: a_t = lr f_t / (1 - b1^t),  c_t = 1 / sqrt(1 - b2^t)
// (Adam's bias-corrected m_hat / (sqrt(v_hat) + eps), rearranged as torch.optim.Adam does).
// a_t, c_t and d_t come in the step buffer (f32 bits), computed by the host in f64 with the step
// number it writes anyway: in f32 on the GPU, 1 - 0.999^t loses 4 digits to cancellation
// at small t, and pow/cos may be as coarse as Vulkan allows; this way every adapter applies
// the same update.

struct Params {
    n: u32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    _pad: vec2u,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// step[2]: a_t, step[3]: c_t, step[4]: d_t (f32 bits; see above)
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
    w[i] = w[i] - bitcast<f32>(step[2]) * v;
}

@compute @workgroup_size(WG)
fn adam_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    let g = grad[i] + p.weight_decay * w[i];
    let m = p.beta1 * m1[i] + (1.0 - p.beta1) * g;
    let v = p.beta2 * m2[i] + (1.0 - p.beta2) * g * g;
    m1[i] = m;
    m2[i] = v;
    w[i] = w[i] * bitcast<f32>(step[4]) - bitcast<f32>(step[2]) * m / (sqrt(v) * bitcast<f32>(step[3]) + p.eps);
}
