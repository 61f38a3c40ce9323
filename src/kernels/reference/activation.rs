//! References for shaders/activation.wgsl, in f64 with the textbook formulas (made
//! overflow-free) and an erf accurate to ~1e-15, so the GPU's f32 approximations are
//! measured against the function itself, not against another approximation.

use crate::kernels::activation::Activation;

/// erfc(z) for z >= 0 in f64: the positive-term series
/// erf z = 2/sqrt(pi) e^(-z^2) sum_n (2z^2)^n z / (1*3*...*(2n+1)) below z = 3 (erfc = 1 - erf
/// loses at most 5 of 16 digits there: erfc(3) = 2.2e-5), the continued fraction
/// erfc z = e^(-z^2)/sqrt(pi) / (z + (1/2)/(z + 1/(z + (3/2)/(z + ...)))) from 3 on.
fn erfc_nonneg(z: f64) -> f64 {
    const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;
    if z < 3.0 {
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        while term > 1e-17 * sum {
            n += 1.0;
            term *= 2.0 * z * z / (2.0 * n + 1.0);
            sum += term;
        }
        1.0 - FRAC_2_SQRT_PI * (-z * z).exp() * sum
    } else {
        // evaluated from the tail backwards; 60 levels are far past convergence for z >= 3
        let mut f = z;
        for k in (1..=60).rev() {
            f = z + (k as f64 / 2.0) / f;
        }
        FRAC_2_SQRT_PI / 2.0 * (-z * z).exp() / f
    }
}

/// The standard normal CDF, each tail computed directly (no 1 - erf cancellation).
pub fn normal_cdf(x: f64) -> f64 {
    let tail = 0.5 * erfc_nonneg(x.abs() * std::f64::consts::FRAC_1_SQRT_2);
    if x >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

fn sigmoid(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

fn forward(act: Activation, x: f64) -> f64 {
    match act {
        Activation::LeakyRelu { slope } => {
            if x > 0.0 {
                x
            } else {
                slope as f64 * x
            }
        }
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => sigmoid(x),
        Activation::Gelu => x * normal_cdf(x),
    }
}

/// dy/dx from `s`, the forward's output for tanh/sigmoid and its input otherwise.
fn derivative(act: Activation, s: f64) -> f64 {
    match act {
        Activation::LeakyRelu { slope } => {
            if s > 0.0 {
                1.0
            } else {
                slope as f64
            }
        }
        Activation::Tanh => 1.0 - s * s,
        Activation::Sigmoid => s * (1.0 - s),
        Activation::Gelu => {
            let pdf = (-0.5 * s * s).exp() / (2.0 * std::f64::consts::PI).sqrt();
            normal_cdf(s) + s * pdf
        }
    }
}

/// y = act(x), in f64 then rounded (erfc to ~1e-15 for GELU).
pub fn activation_forward(act: Activation, x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| forward(act, v as f64) as f32).collect()
}

/// `saved` is the forward's output when `act.backward_reads_output()`, else its input
/// (the same contract as the kernel).
pub fn activation_backward(act: Activation, saved: &[f32], dy: &[f32]) -> Vec<f32> {
    saved.iter().zip(dy).map(|(&s, &g)| (g as f64 * derivative(act, s as f64)) as f32).collect()
}
