//! Convolution through an explicit im2col buffer, for CPU adapters (family
//! `Im2colVec4`): the gathers run once in shaders/im2col.wgsl and the products run
//! through `gemm_vec4` (modes 4-6 of shaders/gemm.wgsl), where llvmpipe turns each
//! 16-byte load into one vector load instead of four gathers.
//!
//! Dimensions as in ops/conv2d.rs; P = OH*OW, KC = C*R*S. The column matrix is
//! col [KC, N*P] (row k = (c, r, s), column n = (b, oy, ox)):
//!   forward  y = W [K, KC] . col               (NN; stored straight into NCHW y)
//!   dW       dW (+)= dy [K, (b, p)] . col^T    (NT; dy read per image, reduction over b, p)
//!   dX       dcol = W^T . dy [K, (b, p)]       (TN), then dx = col2im(dcol) (a gather),
//!            or, with the max-pool whose output x is routed through (`MaxPoolRoute`),
//!            the pool input's gradient straight from dcol (col2im_max_pool_backward)
//! A K x C*R*S weight whose row length KC is not a multiple of 4 is first copied into a
//! zero-padded [K, KP] scratch (KP = KC rounded up), and col/dcol get KP rows, so the
//! forward and dX GEMMs take any KC; dW reads only the first KC rows of col.
//! Every output element is one sequential f32 sum in a fixed order: no atomics, the
//! results are the same run to run. col and dcol live in the device's shared scratch
//! region (`Gpu::scratch`), or the forward's col in a buffer the caller keeps for the dW
//! pass (`backward_weight_from_columns`: no second im2col); the padded weight copy is
//! op-owned (`Tensor::empty`).

use super::geometry::Conv2d;
use crate::kernels::gemm::{launch, launch_weight_grad, vec4_fits, GemmConfig, GemmMode, GradOut, Params, SplitK, Transpose};
use crate::kernels::pool::MaxPoolRoute;
use crate::kernels::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::Result;

/// The uniform of shaders/im2col.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ColParams {
    pub(crate) batch: u32,
    pub(crate) cin: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) r: u32,
    pub(crate) s: u32,
    pub(crate) stride: u32,
    pub(crate) pad: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) rows_out: u32,
    pub(crate) cout: u32,
    // col2im_max_pool_backward: the pool's input, window (= stride), padding; 1 = ReLU mask
    pub(crate) ph: u32,
    pub(crate) pw: u32,
    pub(crate) pk: u32,
    pub(crate) ppad: u32,
    pub(crate) relu: u32,
    pub(crate) _pad: [u32; 3],
}

const WG: u32 = 64;

/// KC = C*R*S rounded up to a multiple of 4: the rows of col/dcol in forward and dX.
pub(crate) fn kc_padded(c: &Conv2d) -> usize {
    (c.cin * c.r * c.s).next_multiple_of(4)
}

fn col_params(c: &Conv2d, rows_out: usize) -> ColParams {
    ColParams {
        batch: c.batch as u32,
        cin: c.cin as u32,
        h: c.h as u32,
        w: c.w as u32,
        r: c.r as u32,
        s: c.s as u32,
        stride: c.stride as u32,
        pad: c.pad as u32,
        oh: c.oh() as u32,
        ow: c.ow() as u32,
        rows: (c.cin * c.r * c.s) as u32,
        cols: (c.batch * c.oh() * c.ow()) as u32,
        rows_out: rows_out as u32,
        cout: c.cout as u32,
        ..Default::default()
    }
}

/// Elements of the (padded) column matrix, and of dcol.
fn col_len(c: &Conv2d) -> usize {
    kc_padded(c) * c.batch * c.oh() * c.ow()
}

/// Whether a pass of mode `mode` (`Im2colForward`, `Im2colBackwardInput` (dcol), `Im2colBackwardWeight`) can run this way: the vec4
/// forms fit the shape (else the caller uses the implicit modes) and col fits one
/// storage binding.
pub(crate) fn fits(gpu: &Gpu, mode: GemmMode, trans: Transpose, c: &Conv2d, params: &Params) -> bool {
    let limits = gpu.limits();
    let bytes = 4 * col_len(c) as u64;
    vec4_fits(mode, trans, params) && bytes <= limits.max_storage_buffer_binding_size && bytes <= limits.max_buffer_size
}

/// Scratch bytes of a pass: KP rows of columns for the forward and dcol, KC rows for dW.
pub(crate) fn scratch_bytes(c: &Conv2d, mode: GemmMode) -> u64 {
    let rows = if mode == GemmMode::Im2colBackwardWeight { c.cin * c.r * c.s } else { kc_padded(c) };
    4 * (rows * c.batch * c.oh() * c.ow()) as u64
}

/// The columns [rows, N*P] at the start of the device's scratch region.
fn columns(gpu: &Gpu, c: &Conv2d, rows: usize, mode: GemmMode) -> Result<Tensor> {
    Ok(Tensor::from_buffer(gpu.scratch(scratch_bytes(c, mode))?, 0, &[rows, c.batch * c.oh() * c.ow()], DType::F32))
}

/// col = im2col(x) with `rows` rows (KC, or KP with zero rows past KC), and the dispatch
/// that fills it.
fn im2col(gpu: &Gpu, c: &Conv2d, x: &Tensor, rows: usize, mode: GemmMode) -> Result<(Tensor, Dispatch)> {
    let col = columns(gpu, c, rows, mode)?;
    let d = im2col_dispatch(gpu, &col_params(c, rows), x, &col)?;
    Ok((col, d))
}

fn im2col_dispatch(gpu: &Gpu, cols: &ColParams, x: &Tensor, col: &Tensor) -> Result<Dispatch> {
    let kernel = Kernel::new(Shader::Im2col, "im2col").with("WG", WG);
    Dispatch::new(gpu, &kernel, cols, &[(1, x), (2, col)], gpu.grid_for(col.len() / 4, WG))
}

/// The weight as [K, KP]: `None` when KC % 4 == 0 (`w` itself serves), else a buffer for
/// the zero-padded copy (its own small buffer: the dX GEMM reads it while it writes dcol
/// into the scratch region, and one dispatch may not bind a buffer both read-only and
/// writable).
fn padded_weight(gpu: &Gpu, c: &Conv2d) -> Result<Option<Tensor>> {
    let kp = kc_padded(c);
    if kp == c.cin * c.r * c.s {
        return Ok(None);
    }
    Ok(Some(Tensor::empty(gpu, &[c.cout, kp], DType::F32)?))
}

/// Forward: [im2col (+ pad_weight in the same launch), NN GEMM], the columns in the scratch
/// region or in `kept` (KP rows, kept for the weight gradient). `params` is mode 4's
/// (M = K, N = N*P, K = KP).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    gpu: &Gpu,
    cfg: &GemmConfig,
    c: &Conv2d,
    p: Params,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    kept: Option<&Tensor>,
) -> Result<Vec<Dispatch>> {
    let kp = kc_padded(c);
    let col = match kept {
        Some(t) => Tensor::from_buffer(t.buffer().clone(), t.offset(), &[kp, c.batch * c.oh() * c.ow()], DType::F32),
        None => columns(gpu, c, kp, GemmMode::Im2colForward)?,
    };
    let cols = &col_params(c, kp);
    let (fill, wp) = match padded_weight(gpu, c)? {
        None => (im2col_dispatch(gpu, cols, x, &col)?, w.clone()),
        Some(wp) => {
            let kernel = Kernel::new(Shader::Im2col, "im2col_pad_weight").with("WG", WG);
            let groups = gpu.grid_for(col.len() / 4 + c.cout * kp, WG);
            (Dispatch::new(gpu, &kernel, cols, &[(1, x), (2, &col), (5, w), (6, &wp)], groups)?, wp)
        }
    };
    Ok(vec![fill, launch(gpu, "conv2d_forward", cfg, GemmMode::Im2colForward, Transpose::NN, p, &wp, &col, bias, y)?])
}

/// dW (and db, summed in the same GEMM): [im2col, NT GEMM]. `params` is mode 6's (M = K,
/// N = KC, K = N*P).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_weight(gpu: &Gpu, cfg: &GemmConfig, c: &Conv2d, p: Params, split: Option<SplitK>, x: &Tensor, dy: &Tensor, dw: &Tensor, db: GradOut) -> Result<Vec<Dispatch>> {
    let (col, fill) = im2col(gpu, c, x, c.cin * c.r * c.s, GemmMode::Im2colBackwardWeight)?;
    let mut out = vec![fill];
    out.extend(launch_weight_grad(gpu, "conv2d_backward_weight", cfg, GemmMode::Im2colBackwardWeight, Transpose::NT, p, split, dy, &col, dw, db)?);
    Ok(out)
}

/// dW from the forward's kept columns (KP rows; the GEMM reads the first KC): the NT GEMM
/// alone.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_weight_from_columns(gpu: &Gpu, cfg: &GemmConfig, c: &Conv2d, p: Params, split: Option<SplitK>, kept: &Tensor, dy: &Tensor, dw: &Tensor, db: GradOut) -> Result<Vec<Dispatch>> {
    let col = Tensor::from_buffer(kept.buffer().clone(), kept.offset(), &[c.cin * c.r * c.s, c.batch * c.oh() * c.ow()], DType::F32);
    launch_weight_grad(gpu, "conv2d_backward_weight", cfg, GemmMode::Im2colBackwardWeight, Transpose::NT, p, split, dy, &col, dw, db)
}

/// dX: [pad_weight if KC % 4 != 0, TN GEMM into dcol, col2im], the last
/// col2im_max_pool_backward with `route` (dx is then the pool input's gradient). `params` is
/// mode 5's (M = KP, N = N*P, K = K).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_input(
    gpu: &Gpu,
    cfg: &GemmConfig,
    c: &Conv2d,
    p: Params,
    w: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    route: Option<&MaxPoolRoute>,
) -> Result<Vec<Dispatch>> {
    let mut out = Vec::new();
    let kp = kc_padded(c);
    let wp = match padded_weight(gpu, c)? {
        None => w.clone(),
        Some(wp) => {
            let kernel = Kernel::new(Shader::Im2col, "pad_weight").with("WG", WG);
            let groups = gpu.grid_for(c.cout * kp, WG);
            out.push(Dispatch::new(gpu, &kernel, &col_params(c, kp), &[(5, w), (6, &wp)], groups)?);
            wp
        }
    };
    let dcol = columns(gpu, c, kp, GemmMode::Im2colBackwardInput)?;
    out.push(launch(gpu, "conv2d_backward_input", cfg, GemmMode::Im2colBackwardInput, Transpose::TN, p, &wp, dy, None, &dcol)?);
    out.push(match route {
        None => {
            let kernel = Kernel::new(Shader::Im2col, "col2im").with("WG", WG);
            Dispatch::new(gpu, &kernel, &col_params(c, kp), &[(3, &dcol), (4, dx)], gpu.grid_for(c.x_len(), WG))?
        }
        Some(r) => {
            let params = ColParams {
                ph: r.pool.h as u32,
                pw: r.pool.w as u32,
                pk: r.pool.k as u32,
                ppad: r.pool.pad as u32,
                relu: r.relu.is_some() as u32,
                ..col_params(c, kp)
            };
            let kernel = Kernel::new(Shader::Im2col, "col2im_max_pool_backward").with("WG", WG);
            let bound = [(3, Some(&dcol)), (4, Some(dx)), (7, Some(r.argmax)), (8, r.relu)];
            Dispatch::with_dummies(gpu, &kernel, &params, &bound, gpu.grid_for(c.x_len(), WG))?
        }
    });
    Ok(out)
}
