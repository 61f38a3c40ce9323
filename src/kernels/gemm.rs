//! GEMM: C[M, N] (+)= op(A) . op(B) with a fused bias/ReLU epilogue, in three kernel
//! families (shaders/gemm.wgsl; a fourth, Im2colVec4, differs only for convolutions).
//! Convolutions reuse the same kernels through their gather modes (ops/conv2d.rs) or
//! through explicit im2col buffers (ops/im2col.rs).
//!
//! Dimensions: M rows of C, N columns, K the reduction length.

use super::pool::{MaxPoolRoute, PoolAt};
use super::{check_len, Dispatch};
use crate::runtime::gpu::{Gpu, GpuInfo};
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

/// Which kernel family and tile shape. Both families cover a BM x BN block of C per
/// workgroup with BM = wgy * tm and BN = wgx * tn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmConfig {
    /// The kernel family (entry point).
    pub family: Family,
    /// Invocations per workgroup along N (columns of C).
    pub wgx: u32,
    /// Invocations per workgroup along M (rows of C).
    pub wgy: u32,
    /// Rows of C per invocation (1..=8).
    pub tm: u32,
    /// Columns of C per invocation (1..=8; 4 for the vec4 families).
    pub tn: u32,
    /// Depth of the staged K slice (tiled family only).
    pub bk: u32,
    /// The vec4 families only: share A's loads across subgroups (`gemm_vec4_sg`, 16 rows per
    /// invocation, one row block per workgroup) where the device has subgroups of at least 8
    /// lanes ([`GpuInfo::shares_subgroups`]); elsewhere the config runs with VEC4's shape.
    pub subgroups: bool,
}

/// A GEMM kernel family of shaders/gemm.wgsl; see ARCHITECTURE.md for where each wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Workgroup-memory tiles + register blocking: real GPUs.
    Tiled,
    /// Tiled's staging with the tiles read back as vec4s: TM x 8 per invocation (TM 4 or
    /// 8), 16-byte workgroup-memory reads, accumulators in named registers.
    Tiled4,
    /// Register blocking straight from global memory, no barriers: llvmpipe.
    RegBlock,
    /// 4x4 register blocks with 16-byte loads along the contiguous dimension (plain GEMM
    /// with 4-aligned rows only; other shapes and convolutions fall back to RegBlock).
    Vec4,
    /// Convolution through an explicit im2col buffer (shaders/im2col.wgsl) so the products
    /// run as vec4 GEMMs (modes 4-6): llvmpipe, where per-element gathers are slow. Plain
    /// GEMM treats it as Vec4; conv shapes the vec4 forms cannot take use the implicit
    /// modes in RegBlock (ops/conv2d.rs says which).
    Im2colVec4,
}

impl GemmConfig {
    /// 64x64 tiles, 4x4 per invocation, K slices of 16.
    pub const TILED_64: GemmConfig = GemmConfig { family: Family::Tiled, wgx: 16, wgy: 16, tm: 4, tn: 4, bk: 16, subgroups: false };
    /// 4x4 per invocation, 8x8 invocations, no workgroup memory.
    pub const REGBLOCK_4X4: GemmConfig = GemmConfig { family: Family::RegBlock, wgx: 8, wgy: 8, tm: 4, tn: 4, bk: 1, subgroups: false };
    /// 4x8 per invocation (more reuse of each A value), 16x4 invocations.
    pub const REGBLOCK_4X8: GemmConfig = GemmConfig { family: Family::RegBlock, wgx: 4, wgy: 16, tm: 4, tn: 8, bk: 1, subgroups: false };

    /// Tiled4, 128x128 tiles (16x16 invocations, 8x8 each), K slices of 16: the fastest
    /// shape at 4096^3 on an H200 since the tiles are staged with 16-byte loads (31.3
    /// TFLOP/s, 25.4 with K slices of 8; BENCHMARKS.md).
    pub const TILED4_128: GemmConfig = GemmConfig { family: Family::Tiled4, wgx: 16, wgy: 16, tm: 8, tn: 8, bk: 16, subgroups: false };
    /// Tiled4, 64x128 tiles (16x16 invocations, 4x8 each), K slices of 16 (29.1 TFLOP/s at
    /// 4096^3 on an H200; with K slices of 8 28.4 on an H100 before the 16-byte staging).
    pub const TILED4_64X128: GemmConfig = GemmConfig { family: Family::Tiled4, wgx: 16, wgy: 16, tm: 4, tn: 8, bk: 16, subgroups: false };

    /// Tiled, 32x64 tiles: 16x16 invocations, 2x4 each, K slices of 16. Convolutions whose
    /// GEMM has 17-32 rows (output or input channels) waste half of a 64-row tile: on an
    /// H200 at batch 64 this shape was the fastest for the MNIST CNN's conv2 forward and
    /// weight gradient (BENCHMARKS.md).
    pub const TILED_32X64: GemmConfig = GemmConfig { family: Family::Tiled, wgx: 16, wgy: 16, tm: 2, tn: 4, bk: 16, subgroups: false };
    /// Tiled, 16x64 tiles (1x4 per invocation): the same for 16-row convolution GEMMs (the
    /// CNN's conv1 passes and conv2's input gradient).
    pub const TILED_16X64: GemmConfig = GemmConfig { family: Family::Tiled, wgx: 16, wgy: 16, tm: 1, tn: 4, bk: 16, subgroups: false };

    /// vec4 loads, 8x4 per invocation (8 rows x one vec4 of columns), 16x4 invocations:
    /// 32x64 blocks of C.
    pub const VEC4: GemmConfig = GemmConfig { family: Family::Vec4, wgx: 16, wgy: 4, tm: 8, tn: 4, bk: 1, subgroups: false };

    /// VEC4's tiles; convolutions stage im2col/col2im buffers and run vec4 GEMMs.
    pub const IM2COL_VEC4: GemmConfig = GemmConfig { family: Family::Im2colVec4, ..Self::VEC4 };

    /// VEC4 with A's loads shared across subgroups: 16 rows x one vec4 of columns per
    /// invocation, 64 invocations along N (16x256 blocks of C). On llvmpipe, where a load
    /// costs a loop over the 8 lanes, the MNIST CNN's conv2 forward GEMM runs about 2x
    /// VEC4's rate (BENCHMARKS.md).
    pub const VEC4_SG: GemmConfig = GemmConfig { family: Family::Vec4, wgx: 64, wgy: 1, tm: 16, tn: 4, bk: 1, subgroups: true };

    /// IM2COL_VEC4 whose GEMMs share A's loads across subgroups (VEC4_SG).
    pub const IM2COL_VEC4_SG: GemmConfig = GemmConfig { family: Family::Im2colVec4, ..Self::VEC4_SG };

    /// Every variant, by name: what benches and tests iterate over.
    pub const ALL: [(&'static str, GemmConfig); 11] = [
        ("tiled64", Self::TILED_64),
        ("tiled32x64", Self::TILED_32X64),
        ("tiled16x64", Self::TILED_16X64),
        ("tiled4_128", Self::TILED4_128),
        ("tiled4_64x128", Self::TILED4_64X128),
        ("regblock4x4", Self::REGBLOCK_4X4),
        ("regblock4x8", Self::REGBLOCK_4X8),
        ("vec4", Self::VEC4),
        ("im2col_vec4", Self::IM2COL_VEC4),
        ("vec4_sg", Self::VEC4_SG),
        ("im2col_vec4_sg", Self::IM2COL_VEC4_SG),
    ];

    /// The heuristic choice when nothing was measured: register blocking on CPU adapters,
    /// where workgroup memory and barriers are the slow path; tiles elsewhere. On CPU
    /// adapters that is the im2col family: plain GEMM runs exactly as VEC4, and the MNIST
    /// CNN's convolutions ran 2-15x faster than VEC4 on llvmpipe (Mesa 25.0.7, 2 cores:
    /// conv2 about 10 GFLOP/s in all three passes against 1.8-2.7), and where subgroups
    /// allow, its GEMMs share A's loads (IM2COL_VEC4_SG: the CNN's step 1.2-1.3x faster).
    pub fn default_for(info: &GpuInfo) -> GemmConfig {
        if info.is_cpu() && info.shares_subgroups() {
            Self::IM2COL_VEC4_SG
        } else if info.is_cpu() {
            Self::IM2COL_VEC4
        } else {
            Self::TILED_64
        }
    }

    /// The variant's name in [`GemmConfig::ALL`] (what the autotune cache stores), else a
    /// description of its fields.
    pub fn name(&self) -> String {
        match Self::ALL.iter().find(|(_, c)| c == self) {
            Some((n, _)) => n.to_string(),
            None => format!("{:?}-{}x{}-{}x{}-bk{}{}", self.family, self.wgx, self.wgy, self.tm, self.tn, self.bk, if self.subgroups { "-sg" } else { "" }),
        }
    }

    /// The variant named `name` in [`GemmConfig::ALL`] (`--kernel`, the autotune cache).
    pub fn named(name: &str) -> Option<GemmConfig> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
    }

    /// (BM, BN): the rows and columns of C one workgroup covers.
    pub fn block(&self) -> (u32, u32) {
        (self.wgy * self.tm, self.wgx * self.tn)
    }
}

/// Epilogue bias: none, one per row of C (conv channels), one per column (linear features).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bias {
    /// No bias.
    None,
    /// One per row of C (`bias[m]`): a convolution's output channels.
    Row,
    /// One per column of C (`bias[n]`): a linear layer's output features.
    Col,
}

/// A GEMM's shape and epilogue.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    /// Rows of C (and of op(A)).
    pub m: usize,
    /// Columns of C (and of op(B)).
    pub n: usize,
    /// The reduction length: columns of op(A), rows of op(B).
    pub k: usize,
    /// A is stored [K, M] (row-major) and used transposed.
    pub trans_a: bool,
    /// B is stored [N, K] (row-major) and used transposed: a linear layer's weight.
    pub trans_b: bool,
    /// Add the product to C's contents (`+=`) instead of overwriting them.
    pub accumulate: bool,
    /// Apply max(·, 0) after the bias.
    pub relu: bool,
    /// Which bias the epilogue adds.
    pub bias: Bias,
}

impl Gemm {
    /// C[M, N] = A[M, K]·B[K, N]: no transposes, no epilogue; set the other fields with
    /// struct update syntax.
    pub fn new(m: usize, n: usize, k: usize) -> Gemm {
        Gemm { m, n, k, trans_a: false, trans_b: false, accumulate: false, relu: false, bias: Bias::None }
    }
    /// Real floating-point operations (a multiply and an add per term).
    pub fn flops(&self) -> u64 {
        2 * (self.m * self.n * self.k) as u64
    }
}

/// The uniform shared by every mode of shaders/gemm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) m: u32,
    pub(crate) n: u32,
    pub(crate) k: u32,
    pub(crate) flags: u32,
    pub(crate) batch: u32,
    pub(crate) cin: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) cout: u32,
    pub(crate) r: u32,
    pub(crate) s: u32,
    pub(crate) stride: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    pub(crate) pad: u32,
    /// K range per z slice with split-K (0 otherwise)
    pub(crate) k_chunk: u32,
    /// A routed max-pool (`launch_routed`): its input height and width, window (= stride),
    /// padding.
    pub(crate) ph: u32,
    pub(crate) pw: u32,
    pub(crate) pk: u32,
    pub(crate) ppad: u32,
}

/// What a GEMM dispatch computes: shaders/gemm.wgsl's MODE override, whose number
/// [`GemmMode::code`] gives (the only place it is written). The implicit modes gather the
/// convolution's im2col inside the tile loads; the im2col modes read staged columns and run
/// in `gemm_vec4` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmMode {
    /// 0: C = op(A) . op(B), plain row-major matrices.
    Plain,
    /// 1: a convolution's forward, y = W . im2col(x), gathered.
    ConvForward,
    /// 2: a convolution's dX, dx = col2im(W^T . dy), gathered.
    ConvBackwardInput,
    /// 3: a convolution's dW, dW = dy . im2col(x)^T, gathered.
    ConvBackwardWeight,
    /// 4: the forward over staged columns (C is the NCHW y).
    Im2colForward,
    /// 5: dcol = W^T . dy, into staged columns for col2im.
    Im2colBackwardInput,
    /// 6: dW = dy . col^T over staged columns.
    Im2colBackwardWeight,
}

impl GemmMode {
    /// The shader's MODE number.
    pub(crate) fn code(self) -> u32 {
        match self {
            GemmMode::Plain => 0,
            GemmMode::ConvForward => 1,
            GemmMode::ConvBackwardInput => 2,
            GemmMode::ConvBackwardWeight => 3,
            GemmMode::Im2colForward => 4,
            GemmMode::Im2colBackwardInput => 5,
            GemmMode::Im2colBackwardWeight => 6,
        }
    }

    /// The modes over staged im2col columns (4-6), which exist only in `gemm_vec4`.
    fn staged(self) -> bool {
        matches!(self, GemmMode::Im2colForward | GemmMode::Im2colBackwardInput | GemmMode::Im2colBackwardWeight)
    }
}

/// Which GEMM operands are stored transposed: op(A) = A^T where `a`, op(B) = B^T where `b`
/// (the TRANS_A, TRANS_B overrides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transpose {
    /// A is stored [K, M].
    pub a: bool,
    /// B is stored [N, K].
    pub b: bool,
}

impl Transpose {
    /// Neither transposed.
    pub const NN: Transpose = Transpose { a: false, b: false };
    /// B transposed: a linear layer's forward (x . W^T), im2col's dW (dy . col^T).
    pub const NT: Transpose = Transpose { a: false, b: true };
    /// A transposed: a linear layer's dW (dy^T . x), im2col's dcol (W^T . dy).
    pub const TN: Transpose = Transpose { a: true, b: false };
}

/// The epilogue's bits of the flag word: bit 0 accumulate, bit 1 ReLU, bits 2-3 the bias
/// mode (`flags`). `splitk_sum` applies the same epilogue after its sum.
pub(crate) const EPILOGUE_FLAGS: u32 = 0xf;
/// flags bit 4, with [`BIAS_GRAD_FLAG`]: the bias gradient accumulates into db (+=).
pub(crate) const BIAS_GRAD_ACCUMULATE_FLAG: u32 = 16;

/// The bias-gradient bits of the flag word: none without a bias gradient, else
/// [`BIAS_GRAD_FLAG`] and, when it adds into db, [`BIAS_GRAD_ACCUMULATE_FLAG`].
pub(crate) fn bias_grad_flags(accumulate: Option<bool>) -> u32 {
    accumulate.map_or(0, |acc| BIAS_GRAD_FLAG | if acc { BIAS_GRAD_ACCUMULATE_FLAG } else { 0 })
}

pub(crate) fn flags(accumulate: bool, relu: bool, bias: Bias) -> u32 {
    let b = match bias {
        Bias::None => 0,
        Bias::Row => 1,
        Bias::Col => 2,
    };
    accumulate as u32 | (relu as u32) << 1 | b << 2
}

/// Whether `gemm_vec4` takes mode `mode` with transposes `trans` on `params` (see the
/// table above gemm_vec4 in shaders/gemm.wgsl). Modes 1-3 never: their gathers live in
/// load_a/load_b.
pub(crate) fn vec4_fits(mode: GemmMode, trans: Transpose, params: &Params) -> bool {
    let plane_ok = (params.oh * params.ow).is_multiple_of(4);
    match (mode, trans) {
        (GemmMode::Plain | GemmMode::Im2colForward, Transpose::NN) => params.k.is_multiple_of(4) && params.n.is_multiple_of(4),
        (GemmMode::Plain, Transpose::NT) => params.k.is_multiple_of(4),
        (GemmMode::Im2colBackwardWeight, Transpose::NT) => plane_ok,
        (GemmMode::Plain, Transpose::TN) => params.m.is_multiple_of(4) && params.n.is_multiple_of(4),
        (GemmMode::Im2colBackwardInput, Transpose::TN) => params.m.is_multiple_of(4) && plane_ok,
        _ => false,
    }
}

/// Builds the dispatch of mode `mode` (plain GEMM, implicit conv, im2col conv) for `params`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch(
    gpu: &Gpu,
    op: &str,
    cfg: &GemmConfig,
    mode: GemmMode,
    trans: Transpose,
    params: Params,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
) -> Result<Dispatch> {
    launch_impl(gpu, op, cfg, mode, trans, params, a, b, bias, c, 1, None, None)
}

/// flags bit 7: a routed max-pool's backward (the ROUTE override) masked by its ReLU.
const ROUTE_RELU_FLAG: u32 = 128;

/// Whether `cfg`'s GEMMs run a routed max-pool's backward in their store (`route_store`),
/// else store C in the scratch region for a separate `max_pool2d_backward(_relu)`: the
/// GEMM's part of a routed dX's choice (`ConvChoice::choose`, `LinearChoice::choose`,
/// `gemm_routed`). The tiled
/// families (real GPUs) store C: the route in their unrolled stores cost more than the
/// dispatch it saves (H200, batch 64: conv2's dX with pool1's backward 751 us routed, 119 us
/// as two dispatches; the CNN trained at 55,000 images/s routed, at 118,000 with the
/// build before the route, in the same call; BENCHMARKS.md). On llvmpipe the route saves a pass over the pool's gradient.
pub fn routes_in_store(cfg: &GemmConfig) -> bool {
    !matches!(cfg.family, Family::Tiled | Family::Tiled4)
}

/// C = op(A) . op(B) in mode 0 (plain) or 2 (conv dX), routed through the backward of the
/// max-pool whose output C is (`route`): `dx` is the gradient of the pool's input, each C
/// element written to its window's argmax (masked by the pool's ReLU), the rest of the
/// window 0. No epilogue, no split-K: one dispatch where the route runs in the store
/// (`pool` inside: `route_store` in shaders/gemm.wgsl), else two, the product through the
/// scratch region (`c_len` floats), same bits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_routed(
    gpu: &Gpu,
    op: &str,
    cfg: &GemmConfig,
    mode: GemmMode,
    trans: Transpose,
    params: Params,
    a: &Tensor,
    b: &Tensor,
    dx: &Tensor,
    route: &MaxPoolRoute,
    pool: PoolAt,
) -> Result<Vec<Dispatch>> {
    route.check(op, dx)?;
    let c_len = params.m as usize * params.n as usize;
    if !matches!(mode, GemmMode::Plain | GemmMode::ConvBackwardInput) || params.flags != 0 || c_len != route.pool.y_len() {
        return Err(Error::unsupported(op, format!("a max-pool routed through mode {}, flags {}, {c_len} outputs for the pool's {}", mode.code(), params.flags, route.pool.y_len())));
    }
    if pool == PoolAt::Apart {
        let c = Tensor::from_buffer(gpu.scratch(4 * c_len as u64)?, 0, &[c_len], DType::F32);
        let product = launch_impl(gpu, op, cfg, mode, trans, params, a, b, None, &c, 1, None, None)?;
        return Ok(vec![product, route.backward(gpu, &c, dx)?]);
    }
    let pool = route.pool;
    let flags = if route.relu.is_some() { ROUTE_RELU_FLAG } else { 0 };
    let params = Params { flags, ph: pool.h as u32, pw: pool.w as u32, pk: pool.k as u32, ppad: pool.pad as u32, ..params };
    Ok(vec![launch_impl(gpu, op, cfg, mode, trans, params, a, b, None, dx, 1, None, Some(route))?])
}

/// A gradient output and whether it accumulates (`+=`) or is written.
pub type GradOut<'a> = Option<(&'a Tensor, bool)>;

/// The product of a weight gradient whose A operand is the layer's `dy` (TN mode 0: a linear
/// layer's dy [N, out] read as A^T; mode 3: a convolution's dy gathered; NT mode 6: dy
/// blocked), split over K as `split` says (`launch_split_k`), plus its bias gradient `db`
/// (+)= channel sums of dy when given: summed from the A values the GEMM kernel loads anyway
/// (`gemm_vec4` in TN and NT, the tiled kernels in TN and mode 3), else by a separate
/// `bias_backward`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_weight_grad(
    gpu: &Gpu,
    op: &str,
    cfg: &GemmConfig,
    mode: GemmMode,
    trans: Transpose,
    params: Params,
    split: Option<SplitK>,
    dy: &Tensor,
    b: &Tensor,
    dw: &Tensor,
    db: GradOut,
) -> Result<Vec<Dispatch>> {
    let Some((db_t, db_acc)) = db else {
        return launch_split_k(gpu, op, cfg, mode, trans, params, split, dy, b, None, dw, None);
    };
    let channels = dy_channels(op, mode, trans, &params, dy)?;
    let tiled = matches!(cfg.family, Family::Tiled | Family::Tiled4) && matches!((mode, trans), (GemmMode::Plain, Transpose::TN) | (GemmMode::ConvBackwardWeight, Transpose::NN));
    if tiled || (runs_vec4(cfg, mode, trans, &params) && trans.a != trans.b) {
        check_len(op, "db", db_t, params.m as usize)?;
        return launch_split_k(gpu, op, cfg, mode, trans, params, split, dy, b, None, dw, Some((db_t, db_acc)));
    }
    let mut out = launch_split_k(gpu, op, cfg, mode, trans, params, split, dy, b, None, dw, None)?;
    out.push(crate::kernels::reduce::bias_backward(gpu, &channels, db_t, db_acc)?);
    Ok(out)
}

/// The A operand `dy` of a weight-gradient product of mode `mode` seen as [images,
/// channels, plane] for a separate `bias_backward`: 0 TN, a linear layer's dy [N, out];
/// 3 and 6, a convolution's dy [N, K, OH*OW].
pub(crate) fn dy_channels(op: &str, mode: GemmMode, trans: Transpose, params: &Params, dy: &Tensor) -> Result<Tensor> {
    match (mode, trans) {
        (GemmMode::Plain, Transpose::TN) => dy.reshape(&[params.k as usize, params.m as usize]),
        (GemmMode::ConvBackwardWeight, Transpose::NN) | (GemmMode::Im2colBackwardWeight, Transpose::NT) => dy.reshape(&[params.batch as usize, params.m as usize, (params.oh * params.ow) as usize]),
        _ => Err(Error::unsupported(op, format!("a bias gradient with mode {}, transposes {:?}", mode.code(), (trans.a, trans.b)))),
    }
}

/// Whether `cfg` runs mode `mode` with transposes `trans` on `params` as `gemm_vec4` (else
/// `gemm_regblock` or `gemm_tiled`).
fn runs_vec4(cfg: &GemmConfig, mode: GemmMode, trans: Transpose, params: &Params) -> bool {
    matches!(cfg.family, Family::Vec4 | Family::Im2colVec4) && vec4_fits(mode, trans, params)
}

/// `launch` for a long reduction into few output tiles (a convolution's weight gradient,
/// a linear layer's forward at a small batch): with `split` ([`SplitK::choose`], on the tiled
/// and register-blocked families) the K range is split across workgroup z into raw partial slices, then summed in slice
/// order (deterministic) into `c` by `splitk_sum`, which also applies `params`' epilogue
/// (accumulate; bias and ReLU in mode 0 only, where C is the plain [M, N] matrix). A fused
/// bias gradient `dbias` (see `launch_weight_grad`) leaves its per-slice row sums after the
/// C slices, and the same `splitk_sum` adds them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_split_k(
    gpu: &Gpu,
    op: &str,
    cfg: &GemmConfig,
    mode: GemmMode,
    trans: Transpose,
    params: Params,
    split: Option<SplitK>,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    dbias: GradOut,
) -> Result<Vec<Dispatch>> {
    let db_flags = bias_grad_flags(dbias.map(|(_, acc)| acc));
    let Some(SplitK { chunk, slices, bytes }) = split else {
        let params = Params { flags: params.flags | db_flags, ..params };
        return Ok(vec![launch_impl(gpu, op, cfg, mode, trans, params, a, b, bias, c, 1, dbias.map(|(t, _)| t), None)?]);
    };
    // the partial slices live in the device's scratch region (Gpu::scratch)
    let len = (bytes / 4) as usize;
    let part = Tensor::from_buffer(gpu.scratch(4 * len as u64)?, 0, &[len], DType::F32);
    let partial = Params { k_chunk: chunk, flags: db_flags & BIAS_GRAD_FLAG, ..params };
    let first = launch_impl(gpu, op, cfg, mode, trans, partial, a, b, None, &part, slices, None, None)?;
    let sum = crate::kernels::reduce::splitk_sum(gpu, &part, slices as usize, c, params.flags, params.n as usize, bias, dbias)?;
    Ok(vec![first, sum])
}

/// flags bit 5: the GEMM sums the bias gradient (the kernels through their BIAS_GRAD
/// override, `splitk_sum` at run time; bit 4 says whether it accumulates into db).
pub(crate) const BIAS_GRAD_FLAG: u32 = 32;

/// How `launch_split_k` splits a reduction over workgroup z: part of a step's choice
/// (`ConvChoice`, `LinearChoice`), which the launch and the scratch sizing read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitK {
    /// K per slice.
    chunk: u32,
    /// Slices (workgroups along z).
    slices: u32,
    /// Scratch bytes of the partial slices: the C slices, then room for the bias gradient's
    /// row sums per slice.
    bytes: u64,
}

impl SplitK {
    /// Bytes of the device's scratch region the partial slices take.
    pub fn scratch_bytes(&self) -> u64 {
        self.bytes
    }

    /// The one place that decides how `params`' reduction in mode `mode` is split with
    /// `cfg`, or `None` for one plain GEMM.
    pub(crate) fn choose(gpu: &Gpu, cfg: &GemmConfig, mode: GemmMode, params: &Params) -> Option<SplitK> {
        split_k_parts(gpu, cfg, mode, params).map(|(chunk, slices)| {
            let bytes = 4 * slices as u64 * (params.m as u64 * params.n as u64 + params.m as u64);
            SplitK { chunk, slices, bytes }
        })
    }
}

/// (K per slice, slices) of a split reduction, or `None` (`SplitK::choose`).
fn split_k_parts(gpu: &Gpu, cfg: &GemmConfig, mode: GemmMode, params: &Params) -> Option<(u32, u32)> {
    let (bm, bn) = cfg.block();
    let tiles = params.m.div_ceil(bm) * params.n.div_ceil(bn);
    let bk = cfg.bk.max(1);
    let split = match cfg.family {
        Family::Tiled | Family::Tiled4 | Family::RegBlock => (SPLIT_TARGET_GROUPS / tiles.max(1)).min(params.k / (8 * bk)),
        _ => 1,
    };
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    // Fewer than MIN_SPLIT slices save less than the extra dispatch costs; an epilogue other
    // than accumulate needs C as the plain [M, N] matrix (mode 0).
    if split < MIN_SPLIT || (mode != GemmMode::Plain && params.flags & !1 != 0) || params.n.div_ceil(bn) > max {
        return None;
    }
    let chunk = params.k.div_ceil(split).next_multiple_of(bk);
    Some((chunk, params.k.div_ceil(chunk)))
}

/// The fewest K slices worth a split (and its summing dispatch).
const MIN_SPLIT: u32 = 4;

/// Workgroups a split-K launch aims for: enough to fill a large GPU (132 SMs on an H100)
/// twice over.
const SPLIT_TARGET_GROUPS: u32 = 264;

#[allow(clippy::too_many_arguments)]
fn launch_impl(
    gpu: &Gpu,
    op: &str,
    cfg: &GemmConfig,
    mode: GemmMode,
    trans: Transpose,
    params: Params,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    split: u32,
    dbias: Option<&Tensor>,
    route: Option<&MaxPoolRoute>,
) -> Result<Dispatch> {
    let vec4_family = matches!(cfg.family, Family::Vec4 | Family::Im2colVec4);
    if cfg.subgroups && !(vec4_family && cfg.wgy == 1 && cfg.tm == 16 && cfg.tn == 4) {
        return Err(Error::unsupported(op, format!("subgroup sharing with {cfg:?} (a vec4 family, 1 x 16 rows x 4 columns)")));
    }
    // gemm_vec4_sg where the device and the shape allow it, else VEC4's shape
    let vec4_ok = runs_vec4(cfg, mode, trans, &params);
    let sg = cfg.subgroups && vec4_ok && gpu.info().shares_subgroups();
    let cfg = &if cfg.subgroups && !sg { GemmConfig { family: cfg.family, ..GemmConfig::VEC4 } } else { *cfg };
    if (cfg.tm > 8 && !sg)
        || cfg.tn > 8
        || cfg.tm == 0
        || cfg.tn == 0
        || (vec4_family && cfg.tn != 4)
        || (cfg.family == Family::Tiled4 && (cfg.tn != 8 || !matches!(cfg.tm, 4 | 8)))
    {
        return Err(Error::unsupported(
            op,
            format!("tile {}x{} per invocation in {:?} (1..=8 each; 4 columns in Vec4, 4x8 or 8x8 in Tiled4)", cfg.tm, cfg.tn, cfg.family),
        ));
    }
    for v in [params.m, params.n, params.k] {
        if v == 0 {
            return Err(Error::shape(op, "an empty dimension (M, N or K is 0)"));
        }
    }
    if mode.staged() && !vec4_ok {
        // modes 4-6 exist only in gemm_vec4; ops/conv2d.rs checks before choosing them
        return Err(Error::unsupported(op, format!("mode {} with {:?} on {params:?}", mode.code(), cfg.family)));
    }
    let (entry, a_binding, b_binding) = match cfg.family {
        _ if sg => ("gemm_vec4_sg", 5, 6),
        Family::Tiled => ("gemm_tiled", 1, 2),
        Family::Tiled4 => ("gemm_tiled4", 1, 2),
        Family::Vec4 | Family::Im2colVec4 if vec4_ok => ("gemm_vec4", 5, 6),
        Family::RegBlock | Family::Vec4 | Family::Im2colVec4 => ("gemm_regblock", 1, 2),
    };
    // The vec4 TN form reads rows of A^T four at a time: it blocks 4 or 8 rows.
    let tm = match (entry, trans.a) {
        ("gemm_vec4", true) => if cfg.tm >= 8 { 8 } else { 4 },
        _ => cfg.tm,
    };
    let cfg = &GemmConfig { tm, ..*cfg };
    let shader = if sg { Shader::GemmSubgroup } else { Shader::Gemm };
    let kernel = Kernel::new(shader, entry)
        .with("MODE", mode.code())
        .with("TRANS_A", trans.a)
        .with("TRANS_B", trans.b)
        .with("BM", cfg.wgy * cfg.tm)
        .with("BN", cfg.wgx * cfg.tn)
        .with("BK", cfg.bk)
        .with("TM", cfg.tm)
        .with("TN", cfg.tn)
        .with("WGX", cfg.wgx)
        .with("WGY", cfg.wgy)
        .with("SPLIT_K", split > 1)
        .with("ROUTE", route.is_some());
    // the kernels that sum a bias gradient from their A loads (into binding 7, or with
    // split-K into the partial slices' tail, which BIAS_GRAD_FLAG asks for)
    let vec4_entry = matches!(entry, "gemm_vec4" | "gemm_vec4_sg");
    let sums_bias_grad = vec4_entry || matches!(entry, "gemm_tiled" | "gemm_tiled4");
    let bias_grad = dbias.is_some() || params.flags & BIAS_GRAD_FLAG != 0;
    if bias_grad && !sums_bias_grad {
        return Err(Error::unsupported(op, format!("a fused bias gradient in {entry}")));
    }
    let kernel = if sums_bias_grad { kernel.with("BIAS_GRAD", bias_grad) } else { kernel };
    let (bm, bn) = cfg.block();
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    let rows = params.m.div_ceil(bm);
    let cols = params.n.div_ceil(bn);
    if rows > max {
        return Err(Error::unsupported(op, format!("M = {} needs {rows} row blocks, over the limit {max}", params.m)));
    }
    // Column blocks beyond the per-dimension limit continue in z (split-K uses z itself;
    // launch_split_k checks the columns fit).
    let groups = if split > 1 {
        [cols, rows, split]
    } else {
        let z = cols.div_ceil(max);
        [cols.div_ceil(z), rows, z]
    };
    // gemm_vec4 stores whole vec4s through binding 10 (c at 4 is then a dummy: one dispatch
    // may not bind a buffer writable twice) for mode 5's dcol, a large row-major C: on
    // lavapipe conv2's dX GEMM and col2im went from 53 to 40 ms. In gemm_vec4, modes 4 and 6
    // (small C) ran slower with it (conv2's forward 48 -> 58 ms, its dW 28 -> 33 ms), so they
    // keep store_c; gemm_vec4_sg's mode 4 gains (conv2's forward with its im2col 37-40 -> 34
    // ms). Mode 4's C is the NCHW y: four columns are four neighbours there when P % 4 == 0.
    let y_in_vec4s = mode == GemmMode::Im2colForward && sg && (params.oh * params.ow).is_multiple_of(4);
    let vec4_store = vec4_entry && route.is_none() && (mode == GemmMode::Im2colBackwardInput || y_in_vec4s) && params.n.is_multiple_of(4);
    let kernel = if vec4_entry { kernel.with("VEC4_STORE", vec4_store) } else { kernel };
    // the tiled kernels stage plain NN products with 16-byte loads (a, b also bound as vec4s)
    let tiled_entry = matches!(entry, "gemm_tiled" | "gemm_tiled4");
    let vec_stage = tiled_entry && mode == GemmMode::Plain && trans == Transpose::NN && params.k.is_multiple_of(4) && params.n.is_multiple_of(4) && cfg.bk.is_multiple_of(4) && bn % 4 == 0;
    let kernel = if tiled_entry { kernel.with("VEC_STAGE", vec_stage) } else { kernel };
    let mut bound = vec![(a_binding, Some(a)), (b_binding, Some(b)), (3, bias), (4, (!vec4_store).then_some(c))];
    if vec4_entry {
        bound.push((10, vec4_store.then_some(c)));
    }
    if sums_bias_grad {
        bound.push((7, dbias));
    }
    if tiled_entry {
        bound.extend([(5, vec_stage.then_some(a)), (6, vec_stage.then_some(b))]);
    }
    // every entry point stores through store_c, which may route through a max-pool
    bound.extend([(8, route.map(|r| r.argmax)), (9, route.and_then(|r| r.relu))]);
    Dispatch::with_dummies(gpu, &kernel, &params, &bound, groups)
}

/// C (+)= op(A) . op(B) (+ bias) (ReLU). A is [M, K] ([K, M] if `trans_a`), B is [K, N]
/// ([N, K] if `trans_b`), C is [M, N]; bias has M (Row) or N (Col) entries. One dispatch,
/// or two where the tiled families split a long K over few output tiles (`launch_split_k`).
pub fn gemm(gpu: &Gpu, cfg: &GemmConfig, g: &Gemm, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, c: &Tensor) -> Result<Vec<Dispatch>> {
    gemm_split(gpu, cfg, g, gemm_split_k(gpu, cfg, g), a, b, bias, c)
}

/// `gemm` split over K as a choice says (`split`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_split(gpu: &Gpu, cfg: &GemmConfig, g: &Gemm, split: Option<SplitK>, a: &Tensor, b: &Tensor, bias: Option<&Tensor>, c: &Tensor) -> Result<Vec<Dispatch>> {
    check_len("gemm", "A", a, g.m * g.k)?;
    check_len("gemm", "B", b, g.k * g.n)?;
    check_len("gemm", "C", c, g.m * g.n)?;
    match (g.bias, bias) {
        (Bias::None, None) => {}
        (Bias::Row, Some(t)) => check_len("gemm", "bias", t, g.m)?,
        (Bias::Col, Some(t)) => check_len("gemm", "bias", t, g.n)?,
        (mode, t) => {
            return Err(Error::shape("gemm", format!("bias mode {mode:?} with bias tensor present: {}", t.is_some())))
        }
    }
    launch_split_k(gpu, "gemm", cfg, GemmMode::Plain, Transpose { a: g.trans_a, b: g.trans_b }, gemm_params(g), split, a, b, bias, c, None)
}

/// `gemm` (no transposes of A, no epilogue) whose C is the gradient of a max-pool's output,
/// routed through that pool's backward (`ops::pool::MaxPoolRoute`): `dx` is the gradient of
/// the pool's input. One dispatch in every family (no split-K).
pub fn gemm_routed(gpu: &Gpu, cfg: &GemmConfig, g: &Gemm, a: &Tensor, b: &Tensor, dx: &Tensor, route: &MaxPoolRoute) -> Result<Vec<Dispatch>> {
    gemm_routed_at(gpu, cfg, g, a, b, dx, route, routed_pool(cfg))
}

/// `gemm_routed` with the pool's backward where a choice put it (`pool`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_routed_at(gpu: &Gpu, cfg: &GemmConfig, g: &Gemm, a: &Tensor, b: &Tensor, dx: &Tensor, route: &MaxPoolRoute, pool: PoolAt) -> Result<Vec<Dispatch>> {
    check_len("gemm_routed", "A", a, g.m * g.k)?;
    check_len("gemm_routed", "B", b, g.k * g.n)?;
    launch_routed(gpu, "gemm_routed", cfg, GemmMode::Plain, Transpose { a: g.trans_a, b: g.trans_b }, gemm_params(g), a, b, dx, route, pool)
}

/// Where `cfg`'s routed GEMM runs the pool's backward ([`routes_in_store`]).
pub(crate) fn routed_pool(cfg: &GemmConfig) -> PoolAt {
    if routes_in_store(cfg) { PoolAt::Inside } else { PoolAt::Apart }
}

fn gemm_params(g: &Gemm) -> Params {
    Params { m: g.m as u32, n: g.n as u32, k: g.k as u32, flags: flags(g.accumulate, g.relu, g.bias), ..Default::default() }
}

/// Bytes of the device's scratch region `gemm` takes with `cfg` (split-K partials), else 0.
pub fn gemm_scratch_bytes(gpu: &Gpu, cfg: &GemmConfig, g: &Gemm) -> u64 {
    gemm_split_k(gpu, cfg, g).map_or(0, |s| s.scratch_bytes())
}

/// How `gemm` splits `g` with `cfg` ([`SplitK::choose`]).
pub(crate) fn gemm_split_k(gpu: &Gpu, cfg: &GemmConfig, g: &Gemm) -> Option<SplitK> {
    SplitK::choose(gpu, cfg, GemmMode::Plain, &gemm_params(g))
}
