//! SGD (with momentum) and Adam over flat parameter buffers (shaders/optim.wgsl): one
//! dispatch updates every parameter of a model laid out in one buffer.

use super::elementwise::check_same;
use super::Dispatch;
use crate::gpu::Gpu;
use crate::pipelines::Kernel;
use crate::shaders::Shader;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

const WG: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// v = momentum v + g + wd w; w -= lr v (momentum 0: plain SGD)
    Sgd { lr: f32, momentum: f32, weight_decay: f32 },
    /// Bias-corrected Adam; weight decay added to the gradient (L2, as torch.optim.Adam).
    Adam { lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32 },
}

impl Optimizer {
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
    pub fn sgd(lr: f32, momentum: f32) -> Optimizer {
        Optimizer::Sgd { lr, momentum, weight_decay: 0.0 }
    }
    /// State buffers per parameter: SGD keeps a velocity, Adam two moments.
    pub fn state_slots(&self) -> usize {
        match self {
            Optimizer::Sgd { .. } => 1,
            Optimizer::Adam { .. } => 2,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
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

/// One optimizer step over `w` given `grad`. `m1` (and `m2` for Adam) hold the state and
/// must start at zero; `step[0]` is the number of steps already taken (Adam's t - 1).
pub fn optimizer_step(gpu: &Gpu, opt: &Optimizer, step: &Tensor, grad: &Tensor, w: &Tensor, m1: &Tensor, m2: Option<&Tensor>) -> Result<Dispatch> {
    let op = "optimizer_step";
    check_same(op, &[w, grad, m1])?;
    if step.dtype() != DType::U32 || step.is_empty() {
        return Err(Error::shape(op, "step must be a u32 step buffer"));
    }
    let n = w.len() as u32;
    let (entry, params, m2) = match *opt {
        Optimizer::Sgd { lr, momentum, weight_decay } => {
            ("sgd_step", Params { n, lr, momentum, weight_decay, ..Default::default() }, None)
        }
        Optimizer::Adam { lr, beta1, beta2, eps, weight_decay } => {
            let Some(m2) = m2 else { return Err(Error::shape(op, "Adam needs a second moment buffer")) };
            check_same(op, &[w, m2])?;
            ("adam_step", Params { n, lr, beta1, beta2, eps, weight_decay, ..Default::default() }, Some(m2))
        }
    };
    let kernel = Kernel::new(Shader::Optim, entry).with("WG", WG);
    // SGD does not read the step counter; Adam does (bias correction).
    let mut tensors = vec![(2, grad), (3, w), (4, m1)];
    if let Some(m2) = m2 {
        tensors.extend([(1, step), (5, m2)]);
    }
    Dispatch::new(gpu, &kernel, &params, &tensors, gpu.grid_for(w.len(), WG))
}
