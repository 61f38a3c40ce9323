//! Direct convolution for CPU adapters with subgroups (family `Im2colVec4` with
//! `subgroups`, lavapipe's default), one dispatch per pass and no im2col buffer between
//! the input and the product (shaders/conv_direct.wgsl says why that pays on llvmpipe):
//!   forward  y = conv(x, w) (+ bias) (ReLU); with `columns` it also stores the im2col
//!            columns it loaded, for the weight gradient's GEMM
//!            (`conv2d_backward_weight_from_columns`): one im2col's worth of gathers per
//!            step, not two
//!            with a 2x2 max-pool after it (`PoolAt::Inside`: `fits_pooled_forward`), the
//!            pool runs in its store too (its output and argmax): no pass of its own over y
//!   dX       at stride 1, the convolution of dy with the flipped, transposed weight; with a
//!            `MaxPoolRoute` the pool's backward runs in its store
//! The weight gradient stays a GEMM over the kept columns (a direct one loads more per
//! product: each lane would own a few weights and reduce over all outputs).
//!
//! An invocation computes CW = 8 or 4 neighbouring outputs of one output row for TM = 32,
//! 16, 8 or 4 output channels; it keeps the (CW - 1) * stride + S input values of one kernel
//! row in registers, at most 16 of them: wider windows or strides, and passes into fewer
//! than 4 channels, take the staged path. Each
//! output is one sequential sum over (c, r, s) in a fixed order: the results are the same
//! run to run.

use super::geometry::Conv2d;
use crate::kernels::gemm::{Family, GemmConfig};
use crate::kernels::pool::{MaxPoolOut, MaxPoolRoute, Pool2d};
use crate::kernels::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::Tensor;
use crate::{Error, Result};

/// The uniform of shaders/conv_direct.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct DirectParams {
    pub(crate) batch: u32,
    pub(crate) cin: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) cout: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    // 1: bias, 2: ReLU, 4: the route's ReLU mask
    pub(crate) flags: u32,
    pub(crate) pad_y: u32,
    pub(crate) pad_x: u32,
    pub(crate) ph: u32,
    pub(crate) pw: u32,
    pub(crate) pk: u32,
    pub(crate) ppad: u32,
    pub(crate) _pad: [u32; 2],
}

const WG: u32 = 64;
/// The most input values of one kernel row an invocation keeps (the shader's SEG_MAX).
const SEG_MAX: usize = 16;
/// The fewest output channels a pass runs here with: an invocation computes at least 4
/// (one lane's vec4 of weights), so fewer waste most of its products. conv1's dX (1
/// channel) took 12.4 ms direct against ~6.5 staged; dX into 4 channels (28 x 28, from 16)
/// 12.5 ms direct against 25.7 for `im2col_vec4`'s staging, into 8 (14 x 14) 4.3 against 12.0.
const MIN_CHANNELS: usize = 4;

/// The accumulators an invocation holds, in vec4s (the shader's ACC).
const ACC: usize = 64;

/// (TM, CW): output channels and outputs of one row per invocation for a pass into `cout`
/// channels: 4, 8, 16 or 32 (no more rows than channels need), and 8 outputs where their window row fits
/// the registers and the accumulators of `rows` rows (2 with a pool in the store) fit
/// [`ACC`], else 4; `None` where not even 4 fit. On lavapipe (conv2's forward, 32
/// channels) 32 x 8 ran 19.4-19.9 ms against 24.0-24.8 for 32 x 4; conv2's dX (16
/// channels) 16 x 8 ran 16.3 against 19.7 for 16 x 4 and 24-28 for 32 x 4 or 8.
fn tile(c: &Conv2d, cout: usize, rows: usize) -> Option<(usize, usize)> {
    let tm = [4, 8, 16, 32].into_iter().find(|&tm| tm >= cout).unwrap_or(32);
    [8, 4].into_iter().find(|cw| (cw - 1) * c.stride + c.s <= SEG_MAX && rows * cw / 4 * tm <= ACC).map(|cw| (tm, cw))
}

/// The pass as the kernel sees it (`Conv2d::direct_pass`).
fn params(c: &Conv2d, transposed: bool) -> DirectParams {
    let d = c.direct_pass(transposed);
    let u = |v: usize| v as u32;
    DirectParams {
        batch: u(c.batch),
        cin: u(d.cin),
        h: u(d.h),
        w: u(d.w),
        cout: u(d.cout),
        oh: u(d.oh),
        ow: u(d.ow),
        pad_y: u(d.pad_y),
        pad_x: u(d.pad_x),
        ..Default::default()
    }
}

/// Whether a pass runs here with `cfg`: the subgroup im2col family on an adapter whose
/// subgroups have at least 8 lanes, at least `MIN_CHANNELS` output channels, a window row
/// that fits the registers, the row blocks one grid dimension, and x, y, w and the columns
/// one storage binding each; dX only at stride 1 with pad < R and pad < S.
fn fits(gpu: &Gpu, cfg: &GemmConfig, c: &Conv2d, transposed: bool) -> bool {
    let limits = gpu.limits();
    let binding = |n: usize| 4 * n as u64 <= limits.max_storage_buffer_binding_size;
    let out_channels = if transposed { c.cin } else { c.cout };
    let Some((tm, _)) = tile(c, out_channels, 1) else { return false };
    out_channels >= MIN_CHANNELS
        && cfg.family == Family::Im2colVec4
        && cfg.subgroups
        && gpu.info().shares_subgroups()
        && (!transposed || (c.stride == 1 && c.pad < c.r && c.pad < c.s))
        && out_channels.div_ceil(tm) <= limits.max_compute_workgroups_per_dimension as usize
        && [c.x_len(), c.y_len(), c.w_len(), c.cin * c.r * c.s * c.batch * c.oh() * c.ow()].into_iter().all(binding)
}

/// Whether the forward of `c` runs here with `cfg`.
pub(super) fn fits_forward(gpu: &Gpu, cfg: &GemmConfig, c: &Conv2d) -> bool {
    fits(gpu, cfg, c, false)
}

/// Whether the forward of `c` runs here with `cfg` with `pool` (which reads its output) in
/// its store: a 2x2 window at stride 2 without padding over an even output.
pub(super) fn fits_pooled_forward(gpu: &Gpu, cfg: &GemmConfig, c: &Conv2d, pool: &Pool2d) -> bool {
    fits_forward(gpu, cfg, c)
        && c.stride == 1
        && (pool.k, pool.stride, pool.pad) == (2, 2, 0)
        && (pool.batch, pool.channels, pool.h, pool.w) == (c.batch, c.cout, c.oh(), c.ow())
        && c.oh().is_multiple_of(2)
        && c.ow().is_multiple_of(2)
        && tile(c, c.cout, 2).is_some()
}

/// Whether the dX of `c` runs here with `cfg`.
pub(super) fn fits_backward_input(gpu: &Gpu, cfg: &GemmConfig, c: &Conv2d) -> bool {
    fits(gpu, cfg, c, true)
}

/// The dispatch of one pass; `tensors` at their bindings (None: a dummy): all nine, since
/// the entry point's derived layout holds every binding it names.
#[allow(clippy::too_many_arguments)]
fn dispatch(gpu: &Gpu, c: &Conv2d, p: DirectParams, transposed: bool, columns: bool, route: bool, pool: bool, tensors: &[(u32, Option<&Tensor>)]) -> Result<Dispatch> {
    let rows = if pool { 2 } else { 1 };
    let Some((tm, cw)) = tile(c, p.cout as usize, rows) else {
        return Err(Error::unsupported("conv_direct", format!("a window row of {} at stride {}: over {SEG_MAX} input values per invocation", c.s, c.stride)));
    };
    let kernel = Kernel::new(Shader::ConvDirect, "conv_direct")
        .with("WG", WG)
        .with("TM", tm as u32)
        .with("CW", cw as u32)
        .with("R", c.r as u32)
        .with("S", c.s as u32)
        .with("STRIDE", c.stride as u32)
        .with("COLUMNS", columns)
        .with("TRANSPOSED", transposed)
        .with("ROUTE", route)
        .with("POOL", pool);
    let [gx, gy, _] = gpu.grid_for((p.batch * p.oh / rows as u32 * p.ow.div_ceil(cw as u32)) as usize, WG);
    Dispatch::with_dummies(gpu, &kernel, &p, tensors, [gx, gy, p.cout.div_ceil(tm as u32)])
}

/// The forward's one dispatch; `columns` (at least C*R*S rows of N*OH*OW) gets the im2col
/// columns; `pool` (which [`fits_pooled_forward`]) gets the max-pool of y. The caller has
/// checked the lengths and chosen this kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(gpu: &Gpu, c: &Conv2d, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, relu: bool, y: &Tensor, columns: Option<&Tensor>, pool: Option<&MaxPoolOut>) -> Result<Dispatch> {
    let p = DirectParams { flags: bias.is_some() as u32 | (relu as u32) << 1, ..params(c, false) };
    let tensors = [(1, Some(x)), (2, Some(w)), (3, bias), (4, Some(y)), (5, columns), (6, pool.map(|m| m.argmax)), (7, None), (8, pool.map(|m| m.y))];
    dispatch(gpu, c, p, false, columns.is_some(), false, pool.is_some(), &tensors)
}

/// dX's one dispatch: dx = the gradient of x, or with `route` that of the pool's input.
/// The caller has checked the lengths, the route and chosen this kernel.
pub(crate) fn backward_input(gpu: &Gpu, c: &Conv2d, w: &Tensor, dy: &Tensor, dx: &Tensor, route: Option<&MaxPoolRoute>) -> Result<Dispatch> {
    let mut p = params(c, true);
    if let Some(r) = route {
        p = DirectParams { flags: (r.relu.is_some() as u32) << 2, ph: r.pool.h as u32, pw: r.pool.w as u32, pk: r.pool.k as u32, ppad: r.pool.pad as u32, ..p };
    }
    let tensors = [(1, Some(dy)), (2, Some(w)), (3, None), (4, Some(dx)), (5, None), (6, route.map(|r| r.argmax)), (7, route.and_then(|r| r.relu)), (8, None)];
    dispatch(gpu, c, p, true, false, route.is_some(), false, &tensors)
}
