//! Reference dropout with the kernel's mask (ops::dropout::keep).

use crate::kernels::dropout::keep;

/// y = x/(1 − p) where the kernel's mask ([`crate::kernels::dropout::keep`]) keeps element i
/// at (seed, step), else 0.
pub fn dropout_forward(x: &[f32], p: f32, seed: u32, step: u32) -> Vec<f32> {
    let scale = 1.0 / (1.0 - p as f64);
    x.iter()
        .enumerate()
        .map(|(i, &v)| if keep(seed, step, i as u32, p) { (v as f64 * scale) as f32 } else { 0.0 })
        .collect()
}

/// The backward is the forward map applied to dy (the mask is fixed for the step).
pub fn dropout_backward(dy: &[f32], p: f32, seed: u32, step: u32) -> Vec<f32> {
    dropout_forward(dy, p, seed, step)
}
