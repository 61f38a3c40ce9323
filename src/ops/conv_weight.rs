//! The weight gradient of a convolution with few weights per output channel, direct, for
//! the GPU families (`Tiled`, `Tiled4`): shaders/conv_weight.wgsl, then reduce.wgsl's
//! `splitk_sum` (two dispatches, as the split-K GEMM it replaces).
//!
//! conv1 of the MNIST CNN (1 input channel, 5 x 5) has 25 weights per output channel, so
//! its weight gradient is a GEMM of 16 x 25 outputs over K = N*OH*OW = 50,176. The implicit
//! GEMM computes a 64-column tile for those 25 columns, gathers B (x's im2col columns)
//! through divisions per element and splits K in 264 slices: 63 µs on an H200, 633 GFLOP/s
//! (`train_mnist --profile`, BENCHMARKS.md). Here a workgroup stages dy and the input rows
//! of a band of output rows and each invocation reduces one (weight or bias) over them from
//! workgroup memory.

use super::conv_geometry::Conv2d;
use super::gemm::{Family, GemmConfig, GradOut};
use super::Dispatch;
use crate::gpu::Gpu;
use crate::pipelines::Kernel;
use crate::shaders::Shader;
use crate::tensor::{DType, Tensor};
use crate::Result;

/// The uniform of shaders/conv_weight.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct WeightParams {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    oh: u32,
    ow: u32,
    r: u32,
    s: u32,
    stride: u32,
    pad: u32,
    band: u32,
    tiles: u32,
    pitch: u32,
    bias: u32,
    slices: u32,
}

/// The most weights per output channel (C*R*S) taken here: fewer than half the GEMM tile's
/// 64 columns. Above that the GEMM's tile is mostly used, and each invocation here would
/// reduce over every position alone.
const MAX_TAPS: usize = 32;
/// The staged tile in floats (the shader's TILE: 16 KiB, WebGPU's default workgroup memory).
const TILE: usize = 4096;
/// Workgroups the tiles are spread over, at most: about one per SM of a large GPU. More
/// slices cost `splitk_sum` more loads per output; fewer leave SMs idle.
const TARGET_SLICES: usize = 128;

/// The geometry of a launch: (output rows per tile, input row pitch, tiles per slice,
/// slices), or `None` when not even one output row's tile fits the workgroup memory.
fn plan(c: &Conv2d) -> Option<(usize, usize, usize, usize)> {
    let (oh, ow) = (c.oh(), c.ow());
    let in_cols = (ow - 1) * c.stride + c.s;
    // rows PITCH floats apart with PITCH = S (mod 32): the R x S items of one output channel
    // read R*S different banks at once
    let pitch = in_cols + (c.s % 32 + 32 - in_cols % 32) % 32;
    let floats = |band: usize| c.cout * band * ow + c.cin * ((band - 1) * c.stride + c.r) * pitch;
    let band = (1..=oh).take_while(|&b| floats(b) <= TILE).last()?;
    let tiles = c.batch * oh.div_ceil(band);
    let per_slice = tiles.div_ceil(TARGET_SLICES);
    Some((band, pitch, per_slice, tiles.div_ceil(per_slice)))
}

/// Whether the weight gradient of `c` runs here with `cfg`: a GPU family, at most
/// `MAX_TAPS` weights per output channel, one output row's tile in the workgroup memory.
pub(crate) fn fits(cfg: &GemmConfig, c: &Conv2d) -> bool {
    matches!(cfg.family, Family::Tiled | Family::Tiled4) && c.cin * c.r * c.s <= MAX_TAPS && plan(c).is_some()
}

/// The scratch bytes of the partial sums (`Gpu::scratch`).
pub(crate) fn scratch_bytes(c: &Conv2d) -> u64 {
    plan(c).map_or(0, |(.., slices)| 4 * (slices * (c.w_len() + c.cout)) as u64)
}

/// dw (+)= the weight gradient, db (+)= the bias gradient. The caller has checked the
/// lengths and `fits`.
pub(crate) fn backward_weight(gpu: &Gpu, c: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor, accumulate: bool, db: GradOut) -> Result<Vec<Dispatch>> {
    let Some((band, pitch, tiles, slices)) = plan(c) else {
        return Err(crate::Error::unsupported("conv2d_backward_weight", format!("{c:?}: one output row's tile is over {TILE} floats")));
    };
    let p = WeightParams {
        batch: c.batch as u32,
        cin: c.cin as u32,
        h: c.h as u32,
        w: c.w as u32,
        cout: c.cout as u32,
        oh: c.oh() as u32,
        ow: c.ow() as u32,
        r: c.r as u32,
        s: c.s as u32,
        stride: c.stride as u32,
        pad: c.pad as u32,
        band: band as u32,
        tiles: tiles as u32,
        pitch: pitch as u32,
        bias: db.is_some() as u32,
        slices: slices as u32,
    };
    // one item per invocation where the device allows it (416 for conv1 with its bias)
    let items = c.w_len() + c.cout;
    let limits = gpu.limits();
    let wg = items.next_multiple_of(32).min(limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x) as usize);
    let len = (scratch_bytes(c) / 4) as usize;
    let part = Tensor::from_buffer(gpu.scratch(4 * len as u64)?, 0, &[len], DType::F32);
    let kernel = Kernel::new(Shader::ConvWeight, "conv_weight_small").with("WG", wg as u32);
    let partial = Dispatch::with_dummies(gpu, &kernel, &p, &[(1, Some(x)), (2, Some(dy)), (3, Some(&part))], [slices as u32, 1, 1])?;
    let sum = crate::ops::reduce::splitk_sum(gpu, &part, slices, dw, accumulate as u32, c.cin * c.r * c.s, None, db)?;
    Ok(vec![partial, sum])
}
