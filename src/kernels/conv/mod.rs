//! 2-D convolution (NCHW activations, KCRS weights) as implicit GEMM: the three passes
//! are modes 1-3 of shaders/gemm.wgsl, where the im2col gather happens inside the loads.
//! Each pass returns the dispatches to record, in order (a variant may need several):
//! family `Im2colVec4` stages an explicit im2col buffer instead (ops/im2col.rs) where
//! the vec4 forms fit the shape, and falls back to the implicit modes where they do not.
//! Its subgroup variant runs the forward and dX as direct convolutions (ops/conv_direct.rs)
//! where the window fits, the forward storing the columns the weight gradient reads.
//! On the GPU families the forward, the stride-1 dX and a weight gradient with few weights
//! per output channel (conv1's 25) run direct from workgroup memory (ops/conv_shared.rs)
//! where they fit, not as GEMMs whose tiles are mostly unused rows or columns.
//!
//! Dimensions: batch N, input channels C, H x W input, K output channels, R x S kernel,
//! OH x OW output, one stride and one zero padding for both axes (dilation 1, groups 1).

pub mod direct;
pub mod geometry;
pub mod im2col;
pub mod shared;

pub use geometry::Conv2d;
use direct as conv_direct;
use shared as conv_shared;
use crate::kernels::gemm::{flags, launch, launch_routed, launch_weight_grad, routed_pool, Bias, Family, GemmConfig, GemmMode, GradOut, Params, SplitK, Transpose};
use crate::kernels::pool::{max_pool2d_forward, MaxPoolOut, MaxPoolRoute, Pool2d, PoolAt};
use crate::kernels::{check_len, Dispatch};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::{Error, Result};

/// The switches `KILN_DIRECT_CONV` sets, to compare kernels. Read from the environment by
/// [`ConvSwitches::from_env`] where an executor resolves its kernel choices (never by the
/// device); the kernel functions that take a `GemmConfig` use the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSwitches {
    /// The GPU families' direct convolutions (conv_shared); `KILN_DIRECT_CONV=0` (`off`) runs
    /// their passes as implicit GEMMs.
    pub direct: bool,
    /// Max-pools inside other kernels: a forward's pool in conv_shared's dispatch (the GPU
    /// families) or conv_direct's (lavapipe), a routed backward in the store of
    /// conv_shared's or `linear_backward_input_routed`'s dX; `KILN_DIRECT_CONV=unfused` runs
    /// them apart (the pool kernels after a product in the scratch region).
    pub fused_pools: bool,
}

impl Default for ConvSwitches {
    fn default() -> ConvSwitches {
        ConvSwitches { direct: true, fused_pools: true }
    }
}

impl ConvSwitches {
    /// `KILN_DIRECT_CONV`: unset, empty, `1` or `on` the default; `unfused`; `0` or `off`.
    /// Anything else is an `Error::Env`.
    pub fn from_env() -> Result<ConvSwitches> {
        let (direct, fused_pools) = match std::env::var("KILN_DIRECT_CONV").as_deref() {
            Err(_) | Ok("" | "1" | "on") => (true, true),
            Ok("unfused") => (true, false),
            Ok("0" | "off") => (false, false),
            Ok(other) => {
                return Err(Error::Env { var: "KILN_DIRECT_CONV", value: other.to_string(), expected: "one of on (the default), unfused, off (or 1, 0)" });
            }
        };
        Ok(ConvSwitches { direct, fused_pools })
    }
}

/// The kernel that runs a convolution pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKernel {
    /// `conv_direct` (ops/conv_direct.rs: the im2col family with subgroups): the forward
    /// (which can keep its columns) and the stride-1 dX.
    Direct,
    /// `conv_shared` (ops/conv_shared.rs: the GPU families): forward, stride-1 dX, dW.
    Shared,
    /// im2col/col2im staging and a vec4 GEMM (the im2col family, modes 4-6).
    Staged,
    /// The implicit GEMM (modes 1-3), split over K where that pays.
    Implicit,
}

/// How a convolution pass runs: resolved once by [`ConvChoice::choose`]; the dispatch
/// builders, the scratch sizing, the kept columns and autotune read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvChoice {
    /// The GEMM variant (what the staged and implicit kernels launch with).
    pub cfg: GemmConfig,
    /// The pass.
    pub pass: Pass,
    /// The kernel.
    pub kernel: ConvKernel,
    /// Where a max-pool fused with the pass runs: the forward's pool (`Step::Conv2dForward`'s
    /// `pool`) inside conv_shared's dispatch or after it; a routed dX's pool backward in the
    /// kernel's store (conv_direct, conv_shared, col2im, the vec4 and register-blocked GEMMs)
    /// or after the product. `Apart` for a weight gradient.
    pub pool: PoolAt,
    /// How a weight gradient's GEMM splits its reduction (the implicit GEMM on the tiled and
    /// register-blocked families); `None` elsewhere.
    pub split: Option<SplitK>,
}

impl ConvChoice {
    /// The one place that decides how `pass` of `conv` runs with `cfg` under `switches`;
    /// `pool`: the max-pool after a forward, if any. A geometry that does not validate gets
    /// the implicit GEMM (whose builder then reports the error).
    pub fn choose(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, pass: Pass, pool: Option<&Pool2d>, switches: ConvSwitches) -> ConvChoice {
        let choice = |kernel, pool| ConvChoice { cfg: *cfg, pass, kernel, pool, split: None };
        if conv.validate("conv2d").is_err() {
            return choice(ConvKernel::Implicit, PoolAt::Apart);
        }
        let shared = matches!(cfg.family, Family::Tiled | Family::Tiled4) && switches.direct;
        let staged = cfg.family == Family::Im2colVec4;
        match pass {
            Pass::Forward if conv_direct::fits_forward(gpu, cfg, conv) => {
                let inside = switches.fused_pools && pool.is_some_and(|p| conv_direct::fits_pooled_forward(gpu, cfg, conv, p));
                choice(ConvKernel::Direct, if inside { PoolAt::Inside } else { PoolAt::Apart })
            }
            Pass::Forward if shared && conv_shared::fits_forward(gpu, conv) => {
                let inside = switches.fused_pools && pool.is_some_and(|p| conv_shared::fits_pooled_forward(gpu, conv, p));
                choice(ConvKernel::Shared, if inside { PoolAt::Inside } else { PoolAt::Apart })
            }
            Pass::Forward => {
                let staged = staged && im2col::fits(gpu, GemmMode::Im2colForward, Transpose::NN, conv, &im2col_forward_params(conv, 0));
                choice(if staged { ConvKernel::Staged } else { ConvKernel::Implicit }, PoolAt::Apart)
            }
            Pass::BackwardInput if conv_direct::fits_backward_input(gpu, cfg, conv) => choice(ConvKernel::Direct, PoolAt::Inside),
            Pass::BackwardInput if shared && conv_shared::fits_backward_input(gpu, conv) => {
                choice(ConvKernel::Shared, if switches.fused_pools { PoolAt::Inside } else { PoolAt::Apart })
            }
            // col2im routes the pool
            Pass::BackwardInput if staged && im2col::fits(gpu, GemmMode::Im2colBackwardInput, Transpose::TN, conv, &im2col_input_params(conv)) => {
                choice(ConvKernel::Staged, PoolAt::Inside)
            }
            Pass::BackwardInput => choice(ConvKernel::Implicit, routed_pool(cfg)),
            Pass::BackwardWeight if shared && conv_shared::fits_backward_weight(conv) => choice(ConvKernel::Shared, PoolAt::Apart),
            Pass::BackwardWeight => {
                let p = weight_params(conv, 0);
                let staged = staged && im2col::fits(gpu, GemmMode::Im2colBackwardWeight, Transpose::NT, conv, &p);
                let (kernel, mode) = if staged { (ConvKernel::Staged, GemmMode::Im2colBackwardWeight) } else { (ConvKernel::Implicit, GemmMode::ConvBackwardWeight) };
                ConvChoice { split: SplitK::choose(gpu, cfg, mode, &p), ..choice(kernel, PoolAt::Apart) }
            }
        }
    }

    /// Elements of the columns a forward run as `self` can keep for its weight gradient run as
    /// `dw`: the forward direct or staged and the weight gradient staged (the im2col family);
    /// else `None`.
    pub fn kept_columns_len(&self, dw: &ConvChoice, conv: &Conv2d) -> Option<usize> {
        let forward = matches!(self.kernel, ConvKernel::Direct | ConvKernel::Staged);
        (forward && dw.kernel == ConvKernel::Staged).then(|| im2col::scratch_bytes(conv, GemmMode::Im2colForward) as usize / 4)
    }

    /// Bytes of the device's scratch region (`Gpu::scratch`) the pass takes: im2col columns
    /// and a padded weight copy (staged), conv_shared's or split-K's partial sums (weight
    /// gradients), a routed dX's product where the pool's backward runs apart (`routed`: the
    /// pool's output elements), else 0. What an executor reserves up front.
    pub fn scratch_bytes(&self, conv: &Conv2d, routed: Option<usize>) -> u64 {
        let route = match (routed, self.pool) {
            (Some(c_len), PoolAt::Apart) => 4 * c_len as u64,
            _ => 0,
        };
        let pass = match (self.pass, self.kernel) {
            (_, ConvKernel::Direct) => 0,
            (Pass::Forward, ConvKernel::Staged) => im2col::scratch_bytes(conv, GemmMode::Im2colForward),
            (Pass::BackwardInput, ConvKernel::Staged) => im2col::scratch_bytes(conv, GemmMode::Im2colBackwardInput),
            (Pass::BackwardWeight, ConvKernel::Staged) => im2col::scratch_bytes(conv, GemmMode::Im2colBackwardWeight),
            (Pass::BackwardWeight, ConvKernel::Shared) => conv_shared::scratch_bytes_backward_weight(conv),
            (Pass::BackwardWeight, ConvKernel::Implicit) => self.split.map_or(0, |s| s.scratch_bytes()),
            _ => 0,
        };
        pass.max(route)
    }
}

/// y = conv(x, w) (+ bias per output channel) (ReLU), with the kernel [`ConvChoice::choose`]
/// picks for `cfg` (default switches).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    gpu: &Gpu,
    cfg: &GemmConfig,
    conv: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    conv2d_forward_keeping_columns(gpu, cfg, conv, x, w, bias, relu, y, None, None)
}

/// `conv2d_forward` whose im2col columns, with `columns`, go there (`kept_columns_len`
/// elements), where `conv2d_backward_weight_from_columns` reads them: the weight gradient
/// then needs no im2col of its own. Only where `kept_columns_len` says so. With `pool`, that
/// max-pool of y runs too: in the convolution's dispatch where the kernel can
/// (ops/conv_shared.rs), else as one more.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_keeping_columns(
    gpu: &Gpu,
    cfg: &GemmConfig,
    conv: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    relu: bool,
    y: &Tensor,
    columns: Option<&Tensor>,
    pool: Option<&MaxPoolOut>,
) -> Result<Vec<Dispatch>> {
    let choice = ConvChoice::choose(gpu, cfg, conv, Pass::Forward, pool.map(|m| m.pool), ConvSwitches::default());
    forward(gpu, &choice, conv, x, w, bias, relu, y, columns, pool)
}

/// The forward as `choice` says (see `conv2d_forward_keeping_columns`).
#[allow(clippy::too_many_arguments)]
pub fn forward(gpu: &Gpu, choice: &ConvChoice, conv: &Conv2d, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, relu: bool, y: &Tensor, columns: Option<&Tensor>, pool: Option<&MaxPoolOut>) -> Result<Vec<Dispatch>> {
    let op = "conv2d_forward";
    conv.validate(op)?;
    check_len(op, "x", x, conv.x_len())?;
    check_len(op, "weight", w, conv.w_len())?;
    check_len(op, "y", y, conv.y_len())?;
    if let Some(b) = bias {
        check_len(op, "bias", b, conv.cout)?;
    }
    if let Some(col) = columns {
        check_len(op, "columns", col, im2col::scratch_bytes(conv, GemmMode::Im2colForward) as usize / 4)?;
    }
    if let Some(m) = pool {
        m.check(op)?;
        let pl = m.pool;
        if (pl.batch, pl.channels, pl.h, pl.w) != (conv.batch, conv.cout, conv.oh(), conv.ow()) {
            return Err(Error::shape(op, format!("the pool's input {pl:?} is not the convolution's output {conv:?}")));
        }
    }
    let cfg = &choice.cfg;
    if columns.is_some() && !matches!(choice.kernel, ConvKernel::Direct | ConvKernel::Staged) {
        return Err(Error::unsupported(op, format!("keeping im2col columns with {:?}, which does not stage them for {conv:?}", cfg.family)));
    }
    // the pool inside conv_shared's or conv_direct's dispatch where its windows tile the output
    let inside = pool.filter(|_| choice.pool == PoolAt::Inside);
    let bias_mode = if bias.is_some() { Bias::Row } else { Bias::None };
    let mut dispatches = match choice.kernel {
        ConvKernel::Direct => vec![conv_direct::forward(gpu, conv, x, w, bias, relu, y, columns, inside)?],
        ConvKernel::Shared => vec![conv_shared::forward(gpu, conv, x, w, bias, relu, y, inside)?],
        ConvKernel::Staged => im2col::forward(gpu, cfg, conv, im2col_forward_params(conv, flags(false, relu, bias_mode)), x, w, bias, y, columns)?,
        ConvKernel::Implicit => vec![launch(gpu, op, cfg, GemmMode::ConvForward, Transpose::NN, forward_params(conv, flags(false, relu, bias_mode)), w, x, bias, y)?],
    };
    if let (Some(m), None) = (pool, inside) {
        dispatches.push(max_pool2d_forward(gpu, m.pool, y, m.y, m.argmax)?);
    }
    Ok(dispatches)
}

/// Elements of the columns a convolution's forward (run with `fwd`) can keep for its weight
/// gradient (run with `dw`): both passes staged (or the forward direct) on the im2col
/// family; else `None` ([`ConvChoice::kept_columns_len`], default switches).
pub fn kept_columns_len(gpu: &Gpu, fwd: &GemmConfig, dw: &GemmConfig, conv: &Conv2d) -> Option<usize> {
    let choose = |cfg, pass| ConvChoice::choose(gpu, cfg, conv, pass, None, ConvSwitches::default());
    conv.validate("kept_columns_len").ok()?;
    choose(fwd, Pass::Forward).kept_columns_len(&choose(dw, Pass::BackwardWeight), conv)
}

/// dx = conv_transpose(dy, w): written, not accumulated. With `route`, x is the output of
/// that max-pool and its backward runs here too: dx is then the gradient of the pool's input
/// (and x's own gradient is never stored): inside col2im on the staged path, in the direct
/// kernels' store (conv_direct, conv_shared), else in the GEMM's store or after it
/// (`ConvChoice::pool`). The kernel [`ConvChoice::choose`] picks for `cfg` (default switches).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input(
    gpu: &Gpu,
    cfg: &GemmConfig,
    conv: &Conv2d,
    w: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    route: Option<&MaxPoolRoute>,
) -> Result<Vec<Dispatch>> {
    let choice = ConvChoice::choose(gpu, cfg, conv, Pass::BackwardInput, None, ConvSwitches::default());
    backward_input(gpu, &choice, conv, w, dy, dx, route)
}

/// dX as `choice` says (see `conv2d_backward_input`).
#[allow(clippy::too_many_arguments)]
pub fn backward_input(gpu: &Gpu, choice: &ConvChoice, conv: &Conv2d, w: &Tensor, dy: &Tensor, dx: &Tensor, route: Option<&MaxPoolRoute>) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward_input";
    conv.validate(op)?;
    check_len(op, "weight", w, conv.w_len())?;
    check_len(op, "dy", dy, conv.y_len())?;
    match route {
        None => check_len(op, "dx", dx, conv.x_len())?,
        Some(r) => {
            r.check(op, dx)?;
            let pl = r.pool;
            if (pl.batch, pl.channels, pl.oh(), pl.ow()) != (conv.batch, conv.cin, conv.h, conv.w) {
                return Err(Error::shape(op, format!("the routed pool's output {pl:?} is not the convolution's input {conv:?}")));
            }
        }
    }
    let cfg = &choice.cfg;
    match choice.kernel {
        ConvKernel::Direct => Ok(vec![conv_direct::backward_input(gpu, conv, w, dy, dx, route)?]),
        ConvKernel::Shared => conv_shared::backward_input(gpu, conv, w, dy, dx, route, choice.pool),
        ConvKernel::Staged => im2col::backward_input(gpu, cfg, conv, im2col_input_params(conv), w, dy, dx, route),
        ConvKernel::Implicit => {
            let p = conv.params(conv.cin, conv.batch * conv.h * conv.w, conv.cout * conv.r * conv.s, 0);
            match route {
                None => Ok(vec![launch(gpu, op, cfg, GemmMode::ConvBackwardInput, Transpose::NN, p, w, dy, None, dx)?]),
                Some(r) => launch_routed(gpu, op, cfg, GemmMode::ConvBackwardInput, Transpose::NN, p, w, dy, dx, r, choice.pool),
            }
        }
    }
}

/// dw (+)= correlation of x with dy, and with `db` the bias gradient, db (+)= channel sums
/// of dy: inside the dW GEMM on the staged vec4 path, else a separate
/// ops::reduce::bias_backward. The kernel [`ConvChoice::choose`] picks for `cfg` (default
/// switches).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    cfg: &GemmConfig,
    conv: &Conv2d,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    accumulate: bool,
    db: GradOut,
) -> Result<Vec<Dispatch>> {
    let choice = ConvChoice::choose(gpu, cfg, conv, Pass::BackwardWeight, None, ConvSwitches::default());
    backward_weight(gpu, &choice, conv, WeightInput::X(x), dy, dw, accumulate, db)
}

/// `conv2d_backward_weight` from the columns `conv2d_forward_keeping_columns` left (no
/// im2col): one GEMM.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight_from_columns(
    gpu: &Gpu,
    cfg: &GemmConfig,
    conv: &Conv2d,
    columns: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    accumulate: bool,
    db: GradOut,
) -> Result<Vec<Dispatch>> {
    let choice = ConvChoice::choose(gpu, cfg, conv, Pass::BackwardWeight, None, ConvSwitches::default());
    backward_weight(gpu, &choice, conv, WeightInput::Columns(columns), dy, dw, accumulate, db)
}

/// The weight gradient's view of the forward input: x, or its kept im2col columns.
#[derive(Clone, Copy)]
pub enum WeightInput<'a> {
    /// The forward's input.
    X(&'a Tensor),
    /// The forward's kept im2col columns (`ConvChoice::kept_columns_len` elements).
    Columns(&'a Tensor),
}

/// dW (and db) as `choice` says, from x or the kept columns (see `conv2d_backward_weight`).
#[allow(clippy::too_many_arguments)]
pub fn backward_weight(gpu: &Gpu, choice: &ConvChoice, conv: &Conv2d, x: WeightInput, dy: &Tensor, dw: &Tensor, accumulate: bool, db: GradOut) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward_weight";
    match x {
        WeightInput::X(x) => check_len(op, "x", x, conv.x_len())?,
        WeightInput::Columns(col) => check_len(op, "columns", col, im2col::scratch_bytes(conv, GemmMode::Im2colForward) as usize / 4)?,
    }
    conv.validate(op)?;
    check_len(op, "dy", dy, conv.y_len())?;
    check_len(op, "dw", dw, conv.w_len())?;
    let p = weight_params(conv, flags(accumulate, false, Bias::None));
    if let Some((t, _)) = db {
        check_len(op, "db", t, conv.cout)?;
    }
    let cfg = &choice.cfg;
    match (x, choice.kernel) {
        (WeightInput::X(x), ConvKernel::Shared) => conv_shared::backward_weight(gpu, conv, x, dy, dw, accumulate, db),
        (WeightInput::X(x), ConvKernel::Staged) => im2col::backward_weight(gpu, cfg, conv, p, choice.split, x, dy, dw, db),
        (WeightInput::X(x), _) => launch_weight_grad(gpu, op, cfg, GemmMode::ConvBackwardWeight, Transpose::NN, p, choice.split, dy, x, dw, db),
        (WeightInput::Columns(col), ConvKernel::Staged) => im2col::backward_weight_from_columns(gpu, cfg, conv, p, choice.split, col, dy, dw, db),
        (WeightInput::Columns(_), _) => Err(Error::unsupported(op, format!("kept im2col columns with {:?}, which does not stage them for {conv:?}", cfg.family))),
    }
}

/// The three passes of a convolution (and of a linear layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// y from x and the weight.
    Forward,
    /// dx from dy and the weight.
    BackwardInput,
    /// dW from x and dy.
    BackwardWeight,
}

fn forward_params(conv: &Conv2d, flags: u32) -> Params {
    conv.params(conv.cout, conv.batch * conv.oh() * conv.ow(), conv.cin * conv.r * conv.s, flags)
}

fn weight_params(conv: &Conv2d, flags: u32) -> Params {
    conv.params(conv.cout, conv.cin * conv.r * conv.s, conv.batch * conv.oh() * conv.ow(), flags)
}

/// The staged forward's params (mode 4, K padded to KP: the weight and col rows, ops/im2col.rs).
fn im2col_forward_params(conv: &Conv2d, flags: u32) -> Params {
    Params { k: im2col::kc_padded(conv) as u32, ..forward_params(conv, flags) }
}

/// The staged dX's params (mode 5: dcol).
fn im2col_input_params(conv: &Conv2d) -> Params {
    conv.params(im2col::kc_padded(conv), conv.batch * conv.oh() * conv.ow(), conv.cout, 0)
}
