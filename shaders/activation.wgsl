// Elementwise activations, forward next to backward. One kernel for all of them: the
// activation is the override constant ACT (set at pipeline creation, one cached pipeline
// per activation), so there is no per-element branch on a runtime value and no copy of
// the kernel per activation.
//
//   ACT 0  leaky_relu  y = x > 0 ? x : slope * x      dx = dy * (x > 0 ? 1 : slope)   saved = x
//   ACT 1  tanh        y = tanh(x)                    dx = dy * (1 - y^2)             saved = y
//   ACT 2  sigmoid     y = 1 / (1 + e^-x)             dx = dy * y * (1 - y)           saved = y
//   ACT 3  gelu (erf)  y = x * Phi(x)                 dx = dy * (Phi(x) + x phi(x))   saved = x
//
// The backward reads `saved`: the forward OUTPUT for tanh and sigmoid (their derivatives are
// cheapest from y: one multiply-add, no transcendental), the forward INPUT for leaky_relu
// (the sign of y is the sign of x only for slope > 0; PyTorch allows any slope) and for gelu
// (Phi(x) cannot be recovered from y). At x = 0 leaky_relu's gradient is slope * dy, as in
// PyTorch's leaky_relu_backward (`x > 0 ? dy : dy * slope`).
//
// Dimensions: n elements, one invocation each; launches beyond 65535 workgroups are split
// into a 2-D grid, linearised below.
//
// Accuracy (f32, measured against the f64 references on lavapipe; see tests/activation.rs):
// - tanh avoids the builtin (Vulkan only bounds it through sinh/cosh, and naive
//   (e^x - e^-x) / (e^x + e^-x) overflows to NaN beyond |x| ~ 44): t = e^(-2|x|),
//   tanh = sign(x) (1 - t) / (1 + t) never overflows; below |x| = 0.125, where 1 - t loses
//   digits to cancellation, an odd Taylor polynomial to x^9 (truncation < 1e-9 relative).
// - sigmoid: 1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) for x < 0, so exp never overflows
//   and the small tail keeps its relative accuracy.
// - gelu is PyTorch's default nn.GELU() (approximate='none'): x * Phi(x), Phi the standard
//   normal CDF = erfc(-x / sqrt(2)) / 2. WGSL has no erf; erfc(z), z >= 0, is the Chebyshev
//   fit of Numerical Recipes (erfcc, W. H. Press et al., 2nd ed., 6.2), fractional error
//   < 1.2e-7 for every z >= 0, so the negative tail x * Phi(x) -> 0 keeps its relative
//   accuracy too (1 - erf would cancel). The result is then limited by f32 exp of an
//   argument up to ~z^2: measured max errors are in tests/activation.rs and ARCHITECTURE.md.

struct Params {
    n: u32,
    slope: f32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256;
override ACT: u32 = 0;

const LEAKY_RELU: u32 = 0u;
const TANH: u32 = 1u;
const SIGMOID: u32 = 2u;
const GELU: u32 = 3u;

const FRAC_1_SQRT_2: f32 = 0.70710678118654752;
const FRAC_1_SQRT_2PI: f32 = 0.39894228040143268;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// x or y of the forward, whichever the derivative needs (table above)
@group(0) @binding(3) var<storage, read> saved: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;

fn element(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

fn tanh_stable(v: f32) -> f32 {
    let a = abs(v);
    if a < 0.125 {
        // tanh x = x - x^3/3 + 2x^5/15 - 17x^7/315 + 62x^9/2835 - ...
        let s = v * v;
        return v * (1.0 + s * (-1.0 / 3.0 + s * (2.0 / 15.0 + s * (-17.0 / 315.0 + s * (62.0 / 2835.0)))));
    }
    let t = exp(-2.0 * a);
    return sign(v) * (1.0 - t) / (1.0 + t);
}

fn sigmoid_stable(v: f32) -> f32 {
    let e = exp(-abs(v)); // in (0, 1]: never overflows
    return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
}

// erfc(z) for z >= 0 (Numerical Recipes erfcc), fractional error < 1.2e-7.
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + poly);
}

// Phi(v), the standard normal CDF; the tail on the side of v's sign is computed directly.
fn normal_cdf(v: f32) -> f32 {
    let tail = 0.5 * erfc_nonneg(abs(v) * FRAC_1_SQRT_2); // Phi(-|v|)
    return select(tail, 1.0 - tail, v >= 0.0);
}

fn forward(v: f32) -> f32 {
    switch ACT {
        case LEAKY_RELU: { return select(p.slope * v, v, v > 0.0); }
        case TANH: { return tanh_stable(v); }
        case SIGMOID: { return sigmoid_stable(v); }
        default: { return v * normal_cdf(v); } // GELU
    }
}

// dy/dx from the saved value s (x or y, see the table).
fn derivative(s: f32) -> f32 {
    switch ACT {
        case LEAKY_RELU: { return select(p.slope, 1.0, s > 0.0); }
        case TANH: { return 1.0 - s * s; }
        case SIGMOID: { return s * (1.0 - s); }
        default: { return normal_cdf(s) + s * FRAC_1_SQRT_2PI * exp(-0.5 * s * s); } // GELU
    }
}

@compute @workgroup_size(WG)
fn activation_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    y[i] = forward(x[i]);
}

@compute @workgroup_size(WG)
fn activation_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_id) lid: vec3u) {
    let i = element(wid, nwg, lid);
    if i >= p.n { return; }
    dx[i] = dy[i] * derivative(saved[i]);
}
