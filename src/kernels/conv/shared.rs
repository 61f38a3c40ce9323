//! Direct convolutions from workgroup memory for the GPU families (`Tiled`, `Tiled4`):
//! shaders/conv_shared.wgsl. The MNIST CNN's passes are small products the implicit GEMM
//! (shaders/gemm.wgsl) fills badly: on an H200 (`train_mnist --profile`, BENCHMARKS.md)
//! conv2's forward ran at 4.9 TFLOP/s (32 rows of its 64-row tiles used), conv2's dX with
//! pool1's backward took 119 of the step's 453 µs (16 rows), and conv1's weight gradient
//! (16 x 25 outputs over K = 50,176, a 64-column tile for 25 columns, 264 K slices) 63 µs
//! at 633 GFLOP/s.
//!   forward  one dispatch: a workgroup computes a band of output rows for 16 output
//!            channels, staging the input rows and weights it needs per round of channels;
//!            a max-pool after it whose windows tile the output runs in the same dispatch
//!            (bands a whole number of windows tall), from workgroup memory
//!   dX       at stride 1, the convolution of dy with the flipped, transposed weight; a
//!            routed max-pool's backward (and its ReLU's) runs in the store
//!   dW       each invocation reduces one weight (or bias) over staged tiles of dy and x,
//!            of one output channel where there are at most 32 weights per channel
//!            (conv_shared_weight), of 16 above (conv_shared_weight4); then
//!            conv_shared_weight_sum adds the workgroups' slices, 64 invocations per output
//! `KILN_DIRECT_CONV=0` turns them off (the implicit GEMM then runs every pass), to compare;
//! `KILN_DIRECT_CONV=unfused` runs the pools apart (`max_pool2d_forward`, and the dX into the
//! scratch region, then `max_pool2d_backward(_relu)`): both read by `ConvSwitches`, and
//! decided per pass by `ConvChoice::choose` (conv/mod.rs), not here.

use super::geometry::{Conv2d, DirectPass};
use crate::kernels::gemm::GradOut;
use crate::kernels::pool::{MaxPoolOut, MaxPoolRoute, Pool2d, PoolAt};
use crate::kernels::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

/// The uniform of shaders/conv_shared.wgsl (every entry point).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ConvSharedParams {
    pub(crate) batch: u32,
    pub(crate) cin: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) cout: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    pub(crate) r: u32,
    pub(crate) s: u32,
    pub(crate) stride: u32,
    pub(crate) pad_y: u32,
    pub(crate) pad_x: u32,
    pub(crate) band: u32,
    pub(crate) pitch: u32,
    pub(crate) count: u32,
    pub(crate) flags: u32,
    pub(crate) slices: u32,
    pub(crate) pool: u32,
    pub(crate) pool_pad: u32,
    pub(crate) _pad: u32,
}

/// conv_shared's staged input in floats and weights in vec4s (the shader's XS, WS).
const XS: usize = 2048;
const WS: usize = 512;
/// Output channels per workgroup of conv_shared (four vec4 accumulators).
const CO_BLOCK: usize = 16;
/// The fewest output channels conv_shared runs a pass with: fewer leave most of its 16
/// accumulators idle (conv1's dX into 1 channel stays a GEMM).
const MIN_CHANNELS: usize = 8;
/// Invocations of a conv_shared workgroup, at most: one per output position of its band.
const MAX_WG: usize = 256;
/// Workgroups conv_shared aims for at least (narrower bands until there are that many, or
/// one row each): about one per SM of a large GPU.
const TARGET_GROUPS: usize = 128;
/// Invocation groups splitting conv_shared's reduction where a pass has fewer than
/// `FEW_INVOCATIONS` outputs of 16 channels (128 per SM of a 132-SM GPU).
const GROUPS: usize = 4;
const FEW_INVOCATIONS: usize = 16_384;
/// The most weights per output channel (C*R*S) conv_shared_weight takes (one invocation
/// per output channel and weight); above, conv_shared_weight4 (one per weight, for 16
/// output channels), whose invocations would mostly idle on conv1's 25 weights.
const MAX_TAPS: usize = 32;
/// conv_shared_weight's staged tile in floats (the shader's TILE).
const TILE: usize = 4096;
/// Workgroups conv_shared_weight spreads the tiles over, at most (one tile each for conv1
/// at batch 64): conv_shared_weight_sum adds each output's slices with 64 invocations.
const TARGET_SLICES: usize = 256;

/// The uniform's geometry for pass `d` of `c` (`Conv2d::direct_pass`); the launch fields
/// (band, pitch, count, flags, slices) are left 0.
fn geometry(c: &Conv2d, d: DirectPass) -> ConvSharedParams {
    let u = |v: usize| v as u32;
    ConvSharedParams {
        batch: u(c.batch),
        cin: u(d.cin),
        h: u(d.h),
        w: u(d.w),
        cout: u(d.cout),
        oh: u(d.oh),
        ow: u(d.ow),
        r: u(c.r),
        s: u(c.s),
        stride: u(d.stride),
        pad_y: u(d.pad_y),
        pad_x: u(d.pad_x),
        ..Default::default()
    }
}

/// conv_shared's launch geometry.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Output rows per workgroup.
    band: usize,
    /// The staged input row's length in floats.
    pitch: usize,
    /// Input channels staged per round.
    count: usize,
    /// Invocation groups splitting the reduction, and invocations per group (a multiple of
    /// 32 covering the band's outputs).
    groups: usize,
    lanes: usize,
}

/// conv_shared's launch, or `None` where even one output row and one input channel do not
/// fit. An invocation holds 16 output channels of one output position, so a pass into few
/// channels has few invocations: conv2's dX (16 channels of 64 x 14 x 14) has 12,544, three
/// warps per SM of an H200. Below `FEW_INVOCATIONS` the reduction over (input channel,
/// kernel row) pairs is split across `GROUPS` groups of invocations. Measured on an H200
/// (BENCHMARKS.md, lease calls 2 and 3): conv2's dX with pool1's backward 58.6 µs in one
/// group, 41.9 in four; but conv2's forward (25,088 invocations) 30.0 in one, 42.5 in four,
/// and conv1's (50,176) 9.8 against 17.2: four groups need bands a quarter as tall, so each
/// workgroup stages more halo rows and all the weights for fewer outputs. Bands are a
/// multiple of `rows` tall (a pooled forward's window).
fn forward_plan(gpu: &Gpu, c: &Conv2d, transposed: bool, rows: usize) -> Option<Plan> {
    let DirectPass { cin, cout, oh, ow, stride, .. } = c.direct_pass(transposed);
    let pitch = (ow - 1) * stride + c.s;
    let taps = c.r * c.s;
    let limits = gpu.limits();
    let max_wg = MAX_WG.min(limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x) as usize);
    let invocations = c.batch * oh * ow * cout.div_ceil(CO_BLOCK);
    let groups = if invocations < FEW_INVOCATIONS { GROUPS.min(cin * c.r) } else { 1 };
    let staged = |band: usize| ((band - 1) * stride + c.r) * pitch;
    let lanes = |band: usize| (band * ow).next_multiple_of(32);
    let workgroups = |band: usize| c.batch * oh.div_ceil(band) * cout.div_ceil(CO_BLOCK);
    let fits = |band: usize| band.is_multiple_of(rows) && staged(band) <= XS && groups * lanes(band) <= max_wg;
    // the widest band that fits and still gives TARGET_GROUPS workgroups, else the narrowest
    let band = (1..=oh).rev().filter(|&b| fits(b)).find(|&b| workgroups(b) >= TARGET_GROUPS).or_else(|| (1..=oh).find(|&b| fits(b)))?;
    let count = (XS / staged(band)).min(WS / (4 * taps)).min(cin);
    let grid_x = c.batch * oh.div_ceil(band);
    (count >= 1 && grid_x <= limits.max_compute_workgroups_per_dimension as usize).then_some(Plan { band, pitch, count, groups, lanes: lanes(band) })
}

fn fits(gpu: &Gpu, c: &Conv2d, transposed: bool) -> bool {
    let out_channels = if transposed { c.cin } else { c.cout };
    out_channels >= MIN_CHANNELS
        && (!transposed || (c.stride == 1 && c.pad < c.r && c.pad < c.s))
        && forward_plan(gpu, c, transposed, 1).is_some()
}

/// Whether the forward of `c` fits here (what `ConvChoice::choose` asks, on the GPU families).
pub(super) fn fits_forward(gpu: &Gpu, c: &Conv2d) -> bool {
    fits(gpu, c, false)
}

/// Whether the forward of `c` and the max-pool `pool` after it fit here in one dispatch:
/// the pool's windows tile the output exactly, unpadded (`Pool2d::tiles_exactly`).
pub(super) fn fits_pooled_forward(gpu: &Gpu, c: &Conv2d, pool: &Pool2d) -> bool {
    fits_forward(gpu, c) && pool.tiles_exactly() && pool.pad == 0 && forward_plan(gpu, c, false, pool.k).is_some()
}

/// Whether the dX of `c` fits here.
pub(super) fn fits_backward_input(gpu: &Gpu, c: &Conv2d) -> bool {
    fits(gpu, c, true)
}

/// What conv_shared does with its outputs besides storing them.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// Stores y only.
    Store,
    /// Stores y and max-pools it (bands a whole number of windows tall).
    Pool(&'a MaxPoolOut<'a>),
    /// A dX routed through a max-pool's backward (and its ReLU's): stores the pool input's
    /// gradient instead of y.
    Route(&'a MaxPoolRoute<'a>),
}

fn conv_dispatch(gpu: &Gpu, c: &Conv2d, transposed: bool, flags: u32, epilogue: Epilogue, tensors: &[(u32, Option<&Tensor>)]) -> Result<Dispatch> {
    let rows = if let Epilogue::Pool(m) = epilogue { m.pool.k } else { 1 };
    let Some(Plan { band, pitch, count, groups, lanes }) = forward_plan(gpu, c, transposed, rows) else {
        return Err(Error::unsupported("conv_shared", format!("{c:?}: one output row's input is over {XS} floats")));
    };
    let d = c.direct_pass(transposed);
    let u = |v: usize| v as u32;
    let kernel = Kernel::new(Shader::ConvShared, "conv_shared")
        .with("WG", u(groups * lanes))
        .with("GROUPS", u(groups))
        .with("LANES", u(lanes))
        .with("R", u(c.r))
        .with("S", u(c.s))
        .with("STRIDE", u(d.stride))
        .with("TRANSPOSED", transposed);
    let p = ConvSharedParams { band: u(band), pitch: u(pitch), count: u(count), flags, ..geometry(c, d) };
    let (p, fused) = match epilogue {
        Epilogue::Store => (p, [(9, None), (10, None), (11, None)]),
        Epilogue::Pool(m) => (ConvSharedParams { flags: p.flags | 16, pool: u(m.pool.k), ..p }, [(9, Some(m.y)), (10, Some(m.argmax)), (11, None)]),
        Epilogue::Route(r) => {
            let flags = p.flags | 4 | (r.relu.is_some() as u32) << 3;
            (ConvSharedParams { flags, pool: u(r.pool.k), pool_pad: u(r.pool.pad), ..p }, [(9, None), (10, Some(r.argmax)), (11, r.relu)])
        }
    };
    Dispatch::with_dummies(gpu, &kernel, &p, &[tensors, &fused].concat(), [u(c.batch * d.oh.div_ceil(band)), u(d.cout.div_ceil(CO_BLOCK)), 1])
}

/// The forward's one dispatch, with `pool` that max-pool too. The caller has checked the
/// lengths and chosen this kernel (with `pool`, the pool inside it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(gpu: &Gpu, c: &Conv2d, x: &Tensor, w: &Tensor, bias: Option<&Tensor>, relu: bool, y: &Tensor, pool: Option<&MaxPoolOut>) -> Result<Dispatch> {
    let flags = bias.is_some() as u32 | (relu as u32) << 1;
    let epilogue = pool.map_or(Epilogue::Store, Epilogue::Pool);
    conv_dispatch(gpu, c, false, flags, epilogue, &[(1, Some(x)), (2, Some(w)), (3, bias), (4, Some(y))])
}

/// dX: one dispatch (with `route` through that max-pool's backward in the store), or where
/// the pool runs apart (`pool`) the product into the scratch region, then the pool's backward
/// into `dx`. The caller has checked the lengths, the route and chosen this kernel.
pub(crate) fn backward_input(gpu: &Gpu, c: &Conv2d, w: &Tensor, dy: &Tensor, dx: &Tensor, route: Option<&MaxPoolRoute>, pool: PoolAt) -> Result<Vec<Dispatch>> {
    let tensors = |out| [(1, Some(dy)), (2, Some(w)), (3, None), (4, Some(out))];
    match route {
        None => Ok(vec![conv_dispatch(gpu, c, true, 0, Epilogue::Store, &tensors(dx))?]),
        Some(r) if pool == PoolAt::Inside => Ok(vec![conv_dispatch(gpu, c, true, 0, Epilogue::Route(r), &tensors(dx))?]),
        Some(r) => {
            // the product in the scratch region (the executor plans it: ConvChoice::scratch_bytes)
            let product = Tensor::from_buffer(gpu.scratch(4 * c.x_len() as u64)?, 0, &[c.x_len()], DType::F32);
            let conv = conv_dispatch(gpu, c, true, 0, Epilogue::Store, &tensors(&product))?;
            Ok(vec![conv, r.backward(gpu, &product, dx)?])
        }
    }
}

/// A weight-gradient launch: its entry point, output rows per tile, the staged input row's
/// pitch, tiles per slice, slices (workgroups along x), items (invocations wanted per
/// workgroup) and blocks of 16 output channels (workgroups along y).
struct WeightLaunch {
    entry: &'static str,
    band: usize,
    pitch: usize,
    tiles: usize,
    slices: usize,
    items: usize,
    blocks: usize,
}

/// The weight-gradient launch of `c`, or `None` where one output row's tile does not fit
/// the workgroup memory (it then stays a GEMM).
/// - Up to `MAX_TAPS` weights per output channel, conv_shared_weight: a tile holds dy's
///   channels and the input rows under the band, rows PITCH floats apart with PITCH = S
///   (mod 32), so that the R x S items of one output channel read R*S different banks.
/// - Above, conv_shared_weight4: the input rows of every channel fit the staged input's XS
///   floats and the band's positions WS / 4 vec4 slots.
fn weight_launch(c: &Conv2d) -> Option<WeightLaunch> {
    let (oh, ow) = (c.oh(), c.ow());
    let in_cols = (ow - 1) * c.stride + c.s;
    let rows = |band: usize| (band - 1) * c.stride + c.r;
    let items = c.cin * c.r * c.s <= MAX_TAPS;
    let (pitch, target) = if items { (in_cols + (c.s % 32 + 32 - in_cols % 32) % 32, TARGET_SLICES) } else { (in_cols, TARGET_SLICES / 2) };
    let fits = |band: usize| {
        if items {
            c.cout * band * ow + c.cin * rows(band) * pitch <= TILE
        } else {
            c.cin * rows(band) * pitch <= XS && 4 * band * ow <= WS
        }
    };
    let band = (1..=oh).take_while(|&b| fits(b)).last()?;
    let all = c.batch * oh.div_ceil(band);
    let tiles = all.div_ceil(target);
    let (entry, n, blocks) = if items {
        ("conv_shared_weight", c.w_len() + c.cout, 1)
    } else {
        ("conv_shared_weight4", c.cin * c.r * c.s + 1, c.cout.div_ceil(CO_BLOCK))
    };
    Some(WeightLaunch { entry, band, pitch, tiles, slices: all.div_ceil(tiles), items: n, blocks })
}

/// Whether the weight gradient of `c` fits here.
pub(super) fn fits_backward_weight(c: &Conv2d) -> bool {
    weight_launch(c).is_some()
}

/// The scratch bytes of the weight gradient's partial sums (`Gpu::scratch`).
pub(crate) fn scratch_bytes_backward_weight(c: &Conv2d) -> u64 {
    weight_launch(c).map_or(0, |l| 4 * (l.slices * (c.w_len() + c.cout)) as u64)
}

/// dw (+)= the weight gradient, db (+)= the bias gradient. The caller has checked the
/// lengths and chosen this kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_weight(gpu: &Gpu, c: &Conv2d, x: &Tensor, dy: &Tensor, dw: &Tensor, accumulate: bool, db: GradOut) -> Result<Vec<Dispatch>> {
    let Some(WeightLaunch { entry, band, pitch, tiles, slices, items, blocks }) = weight_launch(c) else {
        return Err(Error::unsupported("conv2d_backward_weight", format!("{c:?}: one output row's tile does not fit the workgroup memory")));
    };
    let u = |v: usize| v as u32;
    let p = ConvSharedParams {
        band: u(band),
        pitch: u(pitch),
        count: u(tiles),
        flags: db.is_some() as u32,
        slices: u(slices),
        ..geometry(c, c.direct_pass(false))
    };
    // one item per invocation where the device allows it (416 for conv1 with its bias, 401
    // for conv2's 16-channel blocks)
    let limits = gpu.limits();
    let wg = items.next_multiple_of(32).min(limits.max_compute_invocations_per_workgroup.min(limits.max_compute_workgroup_size_x) as usize);
    let len = slices * (c.w_len() + c.cout);
    let part = Tensor::from_buffer(gpu.scratch(4 * len as u64)?, 0, &[len], DType::F32);
    let kernel = Kernel::new(Shader::ConvShared, entry).with("WG", u(wg));
    let tensors = [(1, Some(x)), (5, Some(dy)), (6, Some(&part))];
    let partial = Dispatch::with_dummies(gpu, &kernel, &p, &tensors, [u(slices), u(blocks), 1])?;
    let outputs = c.w_len() + if db.is_some() { c.cout } else { 0 };
    let flags = p.flags | (accumulate as u32) << 1 | (db.is_some_and(|(_, acc)| acc) as u32) << 2;
    let sum_kernel = Kernel::new(Shader::ConvShared, "conv_shared_weight_sum");
    let tensors = [(6, Some(&part)), (7, Some(dw)), (8, db.map(|(t, _)| t))];
    let sum = Dispatch::with_dummies(gpu, &sum_kernel, &ConvSharedParams { flags, ..p }, &tensors, gpu.grid_for(outputs * 64, 64))?;
    Ok(vec![partial, sum])
}
