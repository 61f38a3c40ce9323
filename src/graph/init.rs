//! Initial parameter values: what each parameter's [`Init`] (declared with the graph) gives,
//! seeded per parameter, the same on every adapter and for the CPU interpreter.

use super::plan::Plan;
use super::Init;
use crate::base::rng::Rng;

/// Initial parameter values (see [`Init`]), seeded per parameter.
pub fn init_params(plan: &Plan, seed: u64) -> Vec<Vec<f32>> {
    plan.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let n = p.shape.iter().product();
            let bound = match p.init {
                Init::Constant(c) => return vec![c; n],
                Init::KaimingUniform { fan_in } => 1.0 / (fan_in.max(1) as f64).sqrt(),
                Init::GlorotUniform { fan_in, fan_out } => (6.0 / (fan_in + fan_out).max(1) as f64).sqrt(),
            };
            let mut rng = Rng::new(seed.wrapping_mul(0x1000_0000_01B3).wrapping_add(i as u64));
            (0..n).map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32).collect()
        })
        .collect()
}
