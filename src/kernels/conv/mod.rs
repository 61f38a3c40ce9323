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
use crate::kernels::gemm;
use crate::kernels::gemm::{check_len, flags, launch, launch_routed, launch_weight_grad, split_k_parts, split_k_scratch_bytes, Bias, Family, GemmConfig, GemmMode, GradOut, Params, Transpose};
use crate::kernels::pool::{max_pool2d_forward, MaxPoolOut, MaxPoolRoute};
use crate::kernels::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::{Error, Result};

/// y = conv(x, w) (+ bias per output channel) (ReLU).
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
    // the pool inside conv_shared's dispatch where its windows tile the output
    let inside = pool.filter(|m| columns.is_none() && conv_shared::fits_pooled_forward(gpu, cfg, conv, m.pool));
    let mut dispatches = if conv_direct::fits_forward(gpu, cfg, conv) {
        vec![conv_direct::forward(gpu, conv, x, w, bias, relu, y, columns)?]
    } else if columns.is_none() && conv_shared::fits_forward(gpu, cfg, conv) {
        vec![conv_shared::forward(gpu, conv, x, w, bias, relu, y, inside)?]
    } else {
        let bias_mode = if bias.is_some() { Bias::Row } else { Bias::None };
        let p = forward_params(conv, flags(false, relu, bias_mode));
        if let Some(pp) = staged_forward(gpu, cfg, conv, p) {
            im2col::forward(gpu, cfg, conv, pp, x, w, bias, y, columns)?
        } else if columns.is_some() {
            return Err(Error::unsupported(op, format!("keeping im2col columns with {:?}, which does not stage them for {conv:?}", cfg.family)));
        } else {
            vec![launch(gpu, op, cfg, GemmMode::ConvForward, Transpose::NN, p, w, x, bias, y)?]
        }
    };
    if let (Some(m), None) = (pool, inside) {
        dispatches.push(max_pool2d_forward(gpu, m.pool, y, m.y, m.argmax)?);
    }
    Ok(dispatches)
}

/// Elements of the columns a convolution's forward (run with `fwd`) can keep for its weight
/// gradient (run with `dw`): both passes staged (or the forward direct) on the im2col
/// family; else `None`.
pub fn kept_columns_len(gpu: &Gpu, fwd: &GemmConfig, dw: &GemmConfig, conv: &Conv2d) -> Option<usize> {
    conv.validate("kept_columns_len").ok()?;
    let forward = conv_direct::fits_forward(gpu, fwd, conv) || staged_forward(gpu, fwd, conv, forward_params(conv, 0)).is_some();
    let staged = forward && staged_backward_weight(gpu, dw, conv, &weight_params(conv, 0));
    staged.then(|| im2col::scratch_bytes(conv, GemmMode::Im2colForward) as usize / 4)
}

/// dx = conv_transpose(dy, w): written, not accumulated. With `route`, x is the output of
/// that max-pool and its backward runs here too: dx is then the gradient of the pool's input
/// (and x's own gradient is never stored): inside col2im on the staged path, in the direct
/// kernels' store (conv_direct, conv_shared), else in the GEMM's store or after it
/// (`gemm::routes_in_store`).
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
    if conv_direct::fits_backward_input(gpu, cfg, conv) {
        return Ok(vec![conv_direct::backward_input(gpu, conv, w, dy, dx, route)?]);
    }
    if conv_shared::fits_backward_input(gpu, cfg, conv) {
        return conv_shared::backward_input(gpu, conv, w, dy, dx, route);
    }
    if let Some(p) = staged_backward_input(gpu, cfg, conv) {
        return im2col::backward_input(gpu, cfg, conv, p, w, dy, dx, route);
    }
    let p = conv.params(conv.cin, conv.batch * conv.h * conv.w, conv.cout * conv.r * conv.s, 0);
    match route {
        None => Ok(vec![launch(gpu, op, cfg, GemmMode::ConvBackwardInput, Transpose::NN, p, w, dy, None, dx)?]),
        Some(r) => launch_routed(gpu, op, cfg, GemmMode::ConvBackwardInput, Transpose::NN, p, w, dy, dx, r),
    }
}

/// dw (+)= correlation of x with dy, and with `db` the bias gradient, db (+)= channel sums
/// of dy: inside the dW GEMM on the staged vec4 path, else a separate
/// ops::reduce::bias_backward.
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
    check_len("conv2d_backward_weight", "x", x, conv.x_len())?;
    backward_weight(gpu, cfg, conv, Input::X(x), dy, dw, accumulate, db)
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
    check_len("conv2d_backward_weight", "columns", columns, im2col::scratch_bytes(conv, GemmMode::Im2colForward) as usize / 4)?;
    backward_weight(gpu, cfg, conv, Input::Columns(columns), dy, dw, accumulate, db)
}

/// The weight gradient's view of the forward input: x, or its kept im2col columns.
enum Input<'a> {
    X(&'a Tensor),
    Columns(&'a Tensor),
}

#[allow(clippy::too_many_arguments)]
fn backward_weight(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, x: Input, dy: &Tensor, dw: &Tensor, accumulate: bool, db: GradOut) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward_weight";
    conv.validate(op)?;
    check_len(op, "dy", dy, conv.y_len())?;
    check_len(op, "dw", dw, conv.w_len())?;
    let p = weight_params(conv, flags(accumulate, false, Bias::None));
    if let Some((t, _)) = db {
        check_len(op, "db", t, conv.cout)?;
    }
    let staged = staged_backward_weight(gpu, cfg, conv, &p);
    match x {
        Input::X(x) if conv_shared::fits_backward_weight(gpu, cfg, conv) => conv_shared::backward_weight(gpu, cfg, conv, x, dy, dw, accumulate, db),
        Input::X(x) if staged => im2col::backward_weight(gpu, cfg, conv, p, x, dy, dw, db),
        Input::X(x) => launch_weight_grad(gpu, op, cfg, GemmMode::ConvBackwardWeight, Transpose::NN, p, dy, x, dw, db),
        Input::Columns(col) if staged => im2col::backward_weight_from_columns(gpu, cfg, conv, p, col, dy, dw, db),
        Input::Columns(_) => Err(Error::unsupported(op, format!("kept im2col columns with {:?}, which does not stage them for {conv:?}", cfg.family))),
    }
}

/// Whether `pass` of `conv` runs as a direct convolution from workgroup memory with `cfg`
/// (ops/conv_shared.rs), a kernel that does not depend on `cfg`'s GEMM tile.
pub(crate) fn runs_direct(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, pass: Pass) -> bool {
    conv.validate("runs_direct").is_ok()
        && match pass {
            Pass::Forward => conv_shared::fits_forward(gpu, cfg, conv),
            Pass::BackwardInput => conv_shared::fits_backward_input(gpu, cfg, conv),
            Pass::BackwardWeight => conv_shared::fits_backward_weight(gpu, cfg, conv),
        }
}

/// The three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// y from x and the weight.
    Forward,
    /// dx from dy and the weight.
    BackwardInput,
    /// dW from x and dy.
    BackwardWeight,
}

/// Bytes of the device's scratch region (`Gpu::scratch`) a pass takes with `cfg`: im2col
/// columns and a padded weight copy (family `Im2colVec4`), split-K partials (weight
/// gradients on the tiled families), else 0. What an executor reserves up front.
pub fn scratch_bytes(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, pass: Pass) -> u64 {
    if conv.validate("scratch_bytes").is_err() {
        return 0;
    }
    match pass {
        Pass::Forward if conv_direct::fits_forward(gpu, cfg, conv) => 0,
        Pass::Forward => staged_forward(gpu, cfg, conv, forward_params(conv, 0)).map_or(0, |_| im2col::scratch_bytes(conv, GemmMode::Im2colForward)),
        Pass::BackwardInput if conv_direct::fits_backward_input(gpu, cfg, conv) => 0,
        Pass::BackwardInput => staged_backward_input(gpu, cfg, conv).map_or(0, |_| im2col::scratch_bytes(conv, GemmMode::Im2colBackwardInput)),
        Pass::BackwardWeight if conv_shared::fits_backward_weight(gpu, cfg, conv) => conv_shared::scratch_bytes_backward_weight(gpu, cfg, conv),
        Pass::BackwardWeight => {
            let p = weight_params(conv, 0);
            if staged_backward_weight(gpu, cfg, conv, &p) {
                im2col::scratch_bytes(conv, GemmMode::Im2colBackwardWeight)
            } else {
                split_k_parts(gpu, cfg, GemmMode::ConvBackwardWeight, &p).map_or(0, |(_, split)| split_k_scratch_bytes(split, &p))
            }
        }
    }
}

/// Scratch bytes of `conv`'s dX with `cfg` routed through a max-pool's backward: the product
/// (`c_len` elements) where it goes through the scratch region before the pool's backward,
/// 0 where the route runs in the kernel's store (conv_direct, conv_shared, the vec4 GEMMs).
pub fn routed_scratch_bytes(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, c_len: usize) -> u64 {
    if conv_shared::routes(gpu, cfg, conv) { 0 } else { gemm::routed_scratch_bytes(cfg, c_len) }
}

fn forward_params(conv: &Conv2d, flags: u32) -> Params {
    conv.params(conv.cout, conv.batch * conv.oh() * conv.ow(), conv.cin * conv.r * conv.s, flags)
}

fn weight_params(conv: &Conv2d, flags: u32) -> Params {
    conv.params(conv.cout, conv.cin * conv.r * conv.s, conv.batch * conv.oh() * conv.ow(), flags)
}

/// The forward goes through staged im2col columns (mode 4's params, K padded to KP).
fn staged_forward(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, p: Params) -> Option<Params> {
    // the weight and col rows padded to KP (ops/im2col.rs)
    let pp = Params { k: im2col::kc_padded(conv) as u32, ..p };
    (cfg.family == Family::Im2colVec4 && im2col::fits(gpu, GemmMode::Im2colForward, Transpose::NN, conv, &pp)).then_some(pp)
}

/// dX goes through staged dcol (mode 5's params).
fn staged_backward_input(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d) -> Option<Params> {
    let p = conv.params(im2col::kc_padded(conv), conv.batch * conv.oh() * conv.ow(), conv.cout, 0);
    (cfg.family == Family::Im2colVec4 && im2col::fits(gpu, GemmMode::Im2colBackwardInput, Transpose::TN, conv, &p)).then_some(p)
}

/// dW goes through staged columns (mode 6).
fn staged_backward_weight(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, p: &Params) -> bool {
    cfg.family == Family::Im2colVec4 && im2col::fits(gpu, GemmMode::Im2colBackwardWeight, Transpose::NT, conv, p)
}
