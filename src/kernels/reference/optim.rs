//! Reference optimizer steps in f64 (state kept in f32 like the kernels).

use crate::kernels::optim::{Optimizer, Rule};

/// One step: updates `w`, `m1`, `m2` in place. `t` is the number of steps already taken.
pub fn optimizer_step(opt: &Optimizer, t: u32, grad: &[f32], w: &mut [f32], m1: &mut [f32], m2: &mut [f32]) {
    let factor = opt.schedule.factor(t);
    for i in 0..w.len() {
        let wi = w[i] as f64;
        match opt.rule {
            Rule::Sgd { lr, momentum, weight_decay } => {
                let g = grad[i] as f64 + weight_decay as f64 * wi;
                let v = momentum as f64 * m1[i] as f64 + g;
                m1[i] = v as f32;
                w[i] = (wi - lr as f64 * factor * v) as f32;
            }
            Rule::Adam { lr, beta1, beta2, eps, weight_decay } | Rule::AdamW { lr, beta1, beta2, eps, weight_decay } => {
                let (b1, b2) = (beta1 as f64, beta2 as f64);
                // Adam: L2 in the gradient; AdamW: decoupled, w *= 1 - lr f wd first
                let decoupled = matches!(opt.rule, Rule::AdamW { .. });
                let l2 = if decoupled { 0.0 } else { weight_decay as f64 };
                let wi = if decoupled { wi * (1.0 - lr as f64 * factor * weight_decay as f64) } else { wi };
                let g = grad[i] as f64 + l2 * wi;
                let m = b1 * m1[i] as f64 + (1.0 - b1) * g;
                let v = b2 * m2[i] as f64 + (1.0 - b2) * g * g;
                m1[i] = m as f32;
                m2[i] = v as f32;
                let t = (t + 1) as i32;
                let m_hat = m / (1.0 - b1.powi(t));
                let v_hat = v / (1.0 - b2.powi(t));
                w[i] = (wi - lr as f64 * factor * m_hat / (v_hat.sqrt() + eps as f64)) as f32;
            }
        }
    }
}
