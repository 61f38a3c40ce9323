//! Inverted dropout with a counter-based mask (shaders/dropout.wgsl). The mask is a hash
//! of (seed, step, element) with the step read from the executor's step buffer, so it is
//! reproducible per seed and never stored: the backward recomputes it.

use super::elementwise::check_same;
use super::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) n: u32,
    pub(crate) threshold: u32,
    pub(crate) scale: f32,
    pub(crate) seed: u32,
}

/// Keep threshold for drop probability `p`: an element is kept iff its 32-bit hash is
/// at least this.
pub fn threshold(p: f32) -> u32 {
    (p as f64 * 4294967296.0).min(u32::MAX as f64) as u32
}

/// The hash the kernel uses (PCG output permutation), for the CPU reference.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// Whether element `i` is kept at `step` for `seed` and drop probability `p`.
pub fn keep(seed: u32, step: u32, i: u32, p: f32) -> bool {
    pcg(i ^ pcg(step ^ pcg(seed))) >= threshold(p)
}

fn launch(gpu: &Gpu, op: &str, p: f32, seed: u32, step: &Tensor, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    check_same(op, &[x, y])?;
    if !(0.0..1.0).contains(&p) {
        return Err(Error::unsupported(op, format!("drop probability {p} (must be in [0, 1))")));
    }
    if step.dtype() != DType::U32 || step.is_empty() {
        return Err(Error::shape(op, "step must be a u32 step buffer"));
    }
    let params = Params { n: x.len() as u32, threshold: threshold(p), scale: 1.0 / (1.0 - p), seed };
    let kernel = Kernel::new(Shader::Dropout, "dropout_forward").with("WG", WG);
    Dispatch::new(gpu, &kernel, &params, &[(1, step), (2, x), (3, y)], gpu.grid_for(x.len(), WG))
}

/// y = x * keep / (1 - p) (training; at eval dropout is the identity and is not run).
pub fn dropout_forward(gpu: &Gpu, p: f32, seed: u32, step: &Tensor, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    launch(gpu, "dropout_forward", p, seed, step, x, y)
}

/// dx = dy * keep / (1 - p), the same mask as the forward of the same step.
pub fn dropout_backward(gpu: &Gpu, p: f32, seed: u32, step: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    launch(gpu, "dropout_backward", p, seed, step, dy, dx)
}
