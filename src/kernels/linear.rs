//! Linear layers beyond plain GEMMs:
//! - `linear_forward_small`: the forward of a layer with few outputs and inputs, one
//!   invocation per output (shaders/linear.wgsl): a GEMM's tile would be mostly empty
//!   columns (`LinearChoice::SmallForward`).
//! - `linear_backward_small`: the backward of a layer with few outputs in one dispatch
//!   (shaders/linear.wgsl): dx (optionally gated by a fused ReLU's mask), dW and db, one
//!   invocation per output element. What the lowering uses for a classifier's last layer
//!   instead of two GEMMs, a bias reduction and a ReLU backward (`SMALL_OUT`).
//! - `linear_backward_weight`: dW = dy^T x as a GEMM with db summed inside it where the
//!   kernel can (ops::gemm::launch_weight_grad).

pub use super::gemm::GradOut;
use super::conv::{ConvSwitches, Pass};
use super::gemm::{flags, gemm_routed_at, gemm_split_k, launch_weight_grad, routed_pool, Bias, Gemm, GemmConfig, GemmMode, Params, SplitK, Transpose};
use super::pool::{MaxPoolRoute, PoolAt};
use super::{check_len, Dispatch};
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::Tensor;
use crate::{Error, Result};

/// Output features up to which a linear layer's forward runs as `linear_forward_small` and
/// its backward as `linear_backward_small`: dx's sums are then at most this long, and dW
/// has this many rows.
pub const SMALL_OUT: usize = 16;

/// Shape of y[rows, out] = x[rows, inp] . W[out, inp]^T + b.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Rows of the batch.
    pub rows: usize,
    /// Input features.
    pub inp: usize,
    /// Output features.
    pub out: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct SmallParams {
    pub(crate) rows: u32,
    pub(crate) inp: u32,
    pub(crate) out: u32,
    pub(crate) flags: u32,
    /// linear_backward_input_routed: the pool's output planes, window and padding.
    pub(crate) ph: u32,
    pub(crate) pw: u32,
    pub(crate) pk: u32,
    pub(crate) ppad: u32,
}

/// The most input features a forward runs `linear_forward_small` with: each invocation's
/// sum is that long. On an H200 (BENCHMARKS.md) fc2 of the CNN (128 inputs) took 13.0 µs
/// against the GEMM's 18.6, but the MLP's 10-output layer (512 inputs) made its step 17 µs
/// slower than the GEMM.
pub const SMALL_FORWARD_INP: usize = 128;

/// How a linear layer's pass runs: resolved once by [`LinearChoice::choose`]; the executor's
/// dispatch, its scratch sizing and autotune read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearChoice {
    /// The forward as `linear_forward_small`, one invocation per output.
    SmallForward,
    /// A GEMM with variant `cfg`, its reduction split as `split`; a routed dX runs the
    /// pool's backward in the GEMM's store (`pool` `Inside`) or after its product (`Apart`,
    /// the product in the scratch region; a routed GEMM never splits K).
    Gemm {
        /// The variant.
        cfg: GemmConfig,
        /// Where a routed dX's pool backward runs.
        pool: PoolAt,
        /// How the reduction is split (`SplitK::choose`).
        split: Option<SplitK>,
    },
    /// A dX routed through a max-pool as `linear_backward_input_routed`'s own kernel, the
    /// route in its store.
    RoutedKernel,
}

impl LinearChoice {
    /// The one place that decides how `pass` of `l` runs with `cfg` under `switches`;
    /// `routed`: a dX routed through a max-pool's backward. The forward runs
    /// `linear_forward_small` with at most [`SMALL_OUT`] outputs and [`SMALL_FORWARD_INP`]
    /// inputs; a routed dX runs its own kernel where `cfg`'s routed GEMM would store its
    /// product and run the pool's backward after it (the GPU families, `gemm::routed_pool`)
    /// and the pools are fused (`KILN_DIRECT_CONV` is not
    /// `unfused`), else the routed GEMM.
    pub fn choose(gpu: &Gpu, cfg: &GemmConfig, l: &Linear, pass: Pass, routed: bool, switches: ConvSwitches) -> LinearChoice {
        let gemm = |m, n, k| LinearChoice::Gemm { cfg: *cfg, pool: PoolAt::Apart, split: gemm_split_k(gpu, cfg, &Gemm::new(m, n, k)) };
        match pass {
            Pass::Forward if l.out <= SMALL_OUT && l.inp <= SMALL_FORWARD_INP => LinearChoice::SmallForward,
            Pass::Forward => gemm(l.rows, l.out, l.inp),
            Pass::BackwardInput if routed => match routed_pool(cfg) {
                PoolAt::Apart if switches.fused_pools => LinearChoice::RoutedKernel,
                pool => LinearChoice::Gemm { cfg: *cfg, pool, split: None },
            },
            Pass::BackwardInput => gemm(l.rows, l.inp, l.out),
            // dW = dy^T x: [out, inp] over the rows
            Pass::BackwardWeight => gemm(l.out, l.inp, l.rows),
        }
    }

    /// Scratch bytes of the pass (`c_len`: the elements of a routed dX's product): split-K's
    /// partial slices, a routed product stored before the pool's backward, else 0.
    pub fn scratch_bytes(&self, routed: Option<usize>) -> u64 {
        match (self, routed) {
            (LinearChoice::Gemm { pool: PoolAt::Apart, .. }, Some(c_len)) => 4 * c_len as u64,
            (LinearChoice::Gemm { split: Some(s), .. }, _) => s.scratch_bytes(),
            _ => 0,
        }
    }

}

/// y = x . W^T (+ b) (ReLU) for a layer with at most [`SMALL_OUT`] outputs: one dispatch,
/// one invocation per output (what the executor runs where [`LinearChoice::SmallForward`]).
pub fn linear_forward_small(gpu: &Gpu, l: &Linear, x: &Tensor, w: &Tensor, b: Option<&Tensor>, relu: bool, y: &Tensor) -> Result<Dispatch> {
    let op = "linear_forward_small";
    if l.rows == 0 || l.inp == 0 || l.out == 0 || l.out > SMALL_OUT {
        return Err(Error::shape(op, format!("{l:?}: expected non-empty dimensions and at most {SMALL_OUT} outputs")));
    }
    check_len(op, "x", x, l.rows * l.inp)?;
    check_len(op, "weight", w, l.out * l.inp)?;
    check_len(op, "y", y, l.rows * l.out)?;
    if let Some(b) = b {
        check_len(op, "bias", b, l.out)?;
    }
    let params = SmallParams { rows: l.rows as u32, inp: l.inp as u32, out: l.out as u32, flags: b.is_some() as u32 | (relu as u32) << 1, ..Default::default() };
    let tensors = [(2, Some(w)), (3, Some(x)), (7, b), (8, Some(y))];
    Dispatch::with_dummies(gpu, &Kernel::new(Shader::Linear, "linear_forward_small"), &params, &tensors, gpu.grid_for(l.rows * l.out, 256))
}

/// dx = (dy . W) masked where `x <= 0` if `relu_gate`; dW (+)= dy^T . x; db (+)= column sums
/// of dy: each only where given. `x` is the layer's input (also the gate's mask), needed for
/// dW or the gate only.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_small(
    gpu: &Gpu,
    l: &Linear,
    dy: &Tensor,
    w: &Tensor,
    x: Option<&Tensor>,
    dx: Option<&Tensor>,
    relu_gate: bool,
    dw: GradOut,
    db: GradOut,
) -> Result<Dispatch> {
    let op = "linear_backward_small";
    if l.rows == 0 || l.inp == 0 || l.out == 0 {
        return Err(Error::shape(op, format!("an empty dimension in {l:?}")));
    }
    check_len(op, "dy", dy, l.rows * l.out)?;
    check_len(op, "weight", w, l.out * l.inp)?;
    if let Some(x) = x {
        check_len(op, "x", x, l.rows * l.inp)?;
    } else if relu_gate || dw.is_some() {
        return Err(Error::shape(op, "dW and the ReLU gate read x, and none was given"));
    }
    if let Some(t) = dx {
        check_len(op, "dx", t, l.rows * l.inp)?;
    }
    if let Some((t, _)) = dw {
        check_len(op, "dw", t, l.out * l.inp)?;
    }
    if let Some((t, _)) = db {
        check_len(op, "db", t, l.out)?;
    }
    if relu_gate && dx.is_none() {
        return Err(Error::shape(op, "a ReLU gate without dx"));
    }
    let bit = |on: bool, b: u32| (on as u32) << b;
    let flags = bit(dx.is_some(), 0)
        | bit(relu_gate, 1)
        | bit(dw.is_some(), 2)
        | bit(dw.is_some_and(|(_, acc)| acc), 3)
        | bit(db.is_some(), 4)
        | bit(db.is_some_and(|(_, acc)| acc), 5);
    let outputs = dx.map_or(0, |_| l.rows * l.inp) + dw.map_or(0, |_| l.out * l.inp) + db.map_or(0, |_| l.out);
    if outputs == 0 {
        return Err(Error::shape(op, "no gradient wanted"));
    }
    let params = SmallParams { rows: l.rows as u32, inp: l.inp as u32, out: l.out as u32, flags, ..Default::default() };
    // an output not wanted, and x when nothing reads it, get dummies
    let tensors = [(1, Some(dy)), (2, Some(w)), (3, x), (4, dx), (5, dw.map(|g| g.0)), (6, db.map(|g| g.0))];
    Dispatch::with_dummies(gpu, &Kernel::new(Shader::Linear, "linear_backward_small"), &params, &tensors, gpu.grid_for(outputs, 256))
}

/// Rows of the batch per invocation of `linear_backward_input_routed` (the shader's RB).
const ROUTED_ROWS: usize = 4;

/// dx = dy . W routed through `route`'s backward: the layer's input is that max-pool's
/// output, flattened ([rows, inp] = [N, C * PH * PW]), and dx is the gradient of the pool's
/// input (of its ReLU's, with `route.relu`). One dispatch of `linear_backward_input_routed`,
/// or the routed GEMM, as [`LinearChoice::choose`] picks for `cfg` (default switches).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_input_routed(gpu: &Gpu, cfg: &GemmConfig, l: &Linear, dy: &Tensor, w: &Tensor, dx: &Tensor, route: &MaxPoolRoute) -> Result<Vec<Dispatch>> {
    backward_input_routed(gpu, &LinearChoice::choose(gpu, cfg, l, Pass::BackwardInput, true, ConvSwitches::default()), l, dy, w, dx, route)
}

/// `linear_backward_input_routed` as `choice` says.
#[allow(clippy::too_many_arguments)]
pub fn backward_input_routed(gpu: &Gpu, choice: &LinearChoice, l: &Linear, dy: &Tensor, w: &Tensor, dx: &Tensor, route: &MaxPoolRoute) -> Result<Vec<Dispatch>> {
    let op = "linear_backward_input_routed";
    check_len(op, "dy", dy, l.rows * l.out)?;
    check_len(op, "weight", w, l.out * l.inp)?;
    route.check(op, dx)?;
    let pool = route.pool;
    if (pool.batch, pool.channels * pool.oh() * pool.ow()) != (l.rows, l.inp) {
        return Err(Error::shape(op, format!("the routed pool's output {pool:?} is not the layer's input {l:?}")));
    }
    match *choice {
        LinearChoice::Gemm { cfg, pool, .. } => return gemm_routed_at(gpu, &cfg, &Gemm::new(l.rows, l.inp, l.out), dy, w, dx, route, pool),
        LinearChoice::SmallForward => return Err(Error::unsupported(op, "a dX chosen to run as a forward")),
        LinearChoice::RoutedKernel => {}
    }
    let u = |v: usize| v as u32;
    let params = SmallParams {
        rows: u(l.rows),
        inp: u(l.inp),
        out: u(l.out),
        flags: (route.relu.is_some() as u32) << 1,
        ph: u(pool.oh()),
        pw: u(pool.ow()),
        pk: u(pool.k),
        ppad: u(pool.pad),
    };
    let tensors = [(1, Some(dy)), (2, Some(w)), (4, Some(dx)), (9, Some(route.argmax)), (10, route.relu)];
    let groups = [u(l.inp.div_ceil(256)), u(l.rows.div_ceil(ROUTED_ROWS)), 1];
    Ok(vec![Dispatch::with_dummies(gpu, &Kernel::new(Shader::Linear, op), &params, &tensors, groups)?])
}

/// dW (+)= dy^T . x (`accumulate`), and with `db` the bias gradient, db (+)= column sums of
/// dy: inside the GEMM where `cfg` runs gemm_vec4's TN form, else a separate bias_backward.
/// Split over K as [`LinearChoice::choose`] says.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_weight(gpu: &Gpu, cfg: &GemmConfig, l: &Linear, dy: &Tensor, x: &Tensor, dw: &Tensor, accumulate: bool, db: GradOut) -> Result<Vec<Dispatch>> {
    let choice = LinearChoice::choose(gpu, cfg, l, Pass::BackwardWeight, false, ConvSwitches::default());
    backward_weight(gpu, &choice, l, dy, x, dw, accumulate, db)
}

/// `linear_backward_weight` as `choice` says.
#[allow(clippy::too_many_arguments)]
pub fn backward_weight(gpu: &Gpu, choice: &LinearChoice, l: &Linear, dy: &Tensor, x: &Tensor, dw: &Tensor, accumulate: bool, db: GradOut) -> Result<Vec<Dispatch>> {
    let op = "linear_backward_weight";
    let LinearChoice::Gemm { cfg, split, .. } = choice else {
        return Err(Error::unsupported(op, format!("{choice:?} for a weight gradient")));
    };
    check_len(op, "dy", dy, l.rows * l.out)?;
    check_len(op, "x", x, l.rows * l.inp)?;
    check_len(op, "dw", dw, l.out * l.inp)?;
    if let Some((t, _)) = db {
        check_len(op, "db", t, l.out)?;
    }
    if l.rows == 0 || l.inp == 0 || l.out == 0 {
        return Err(Error::shape(op, format!("an empty dimension in {l:?}")));
    }
    let params = Params { m: l.out as u32, n: l.inp as u32, k: l.rows as u32, flags: flags(accumulate, false, Bias::None), ..Default::default() };
    launch_weight_grad(gpu, op, cfg, GemmMode::Plain, Transpose::TN, params, *split, dy, x, dw, db)
}
