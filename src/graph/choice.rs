//! Kernel choice as data: which algorithm runs each GEMM/convolution step, resolved once
//! per step from the step, its tuned GEMM variant and the `KILN_DIRECT_CONV` switches by the
//! op families' choosers (`ConvChoice::choose`, `LinearChoice::choose`). The executor keeps
//! one [`StepChoice`] beside each step; its dispatch, its scratch sizing and the kept columns
//! read it, and autotune asks it whether a step's kernel depends on the GEMM tile.

use super::lower::{Plan, Step};
use crate::kernels::conv::{ConvChoice, ConvKernel, ConvSwitches, Pass};
use crate::kernels::gemm::GemmConfig;
use crate::kernels::linear::{Linear, LinearChoice};
use crate::runtime::gpu::Gpu;

/// How one plan step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepChoice {
    /// A convolution pass.
    Conv(ConvChoice),
    /// A linear layer's forward, dX or dW.
    Linear(LinearChoice),
    /// A step with one kernel (pools, activations, the loss, `LinearBackwardSmall`, ...).
    Fixed,
}

impl StepChoice {
    /// The choice for `step` of `plan` run with `cfg` under `switches`.
    pub fn for_step(gpu: &Gpu, plan: &Plan, step: &Step, cfg: &GemmConfig, switches: ConvSwitches) -> StepChoice {
        let shape = |v: &super::ValueId| &plan.values[v.0].shape;
        let conv = |conv, pass, pool| StepChoice::Conv(ConvChoice::choose(gpu, cfg, conv, pass, pool, switches));
        let linear = |l: Linear, pass, routed| StepChoice::Linear(LinearChoice::choose(gpu, cfg, &l, pass, routed, switches));
        match step {
            Step::Conv2dForward { conv: c, pool, .. } => conv(c, Pass::Forward, pool.as_ref().map(|p| &p.pool)),
            Step::Conv2dBackwardInput { conv: c, .. } => conv(c, Pass::BackwardInput, None),
            Step::Conv2dBackwardWeight { conv: c, .. } => conv(c, Pass::BackwardWeight, None),
            Step::LinearForward { x, w, .. } => linear(Linear { rows: shape(x)[0], inp: shape(w)[1], out: shape(w)[0] }, Pass::Forward, false),
            Step::LinearBackwardInput { dy, w, pool, .. } => {
                linear(Linear { rows: shape(dy)[0], inp: shape(w)[1], out: shape(dy)[1] }, Pass::BackwardInput, pool.is_some())
            }
            Step::LinearBackwardWeight { dy, x, .. } => linear(Linear { rows: shape(dy)[0], inp: shape(x)[1], out: shape(dy)[1] }, Pass::BackwardWeight, false),
            _ => StepChoice::Fixed,
        }
    }

    /// Whether the step's kernel does not depend on the GEMM tile: a direct convolution from
    /// workgroup memory (conv_shared) or `linear_forward_small`. Autotune does not time such
    /// a step.
    pub fn tile_free(&self) -> bool {
        matches!(self, StepChoice::Conv(ConvChoice { kernel: ConvKernel::Shared, .. }) | StepChoice::Linear(LinearChoice::SmallForward))
    }
}
