//! 2-D convolution (NCHW activations, KCRS weights) as implicit GEMM: the three passes
//! are modes 1-3 of shaders/gemm.wgsl, where the im2col gather happens inside the loads.
//! Each pass returns the dispatches to record, in order (a variant may need several):
//! family `Im2colVec4` stages an explicit im2col buffer instead (ops/im2col.rs) where
//! the vec4 forms fit the shape, and falls back to the implicit modes where they do not.
//!
//! Dimensions: batch N, input channels C, H x W input, K output channels, R x S kernel,
//! OH x OW output, one stride and one zero padding for both axes (dilation 1, groups 1).

use super::gemm::{launch_split_k, check_len, flags, launch, Bias, Family, GemmConfig, Params};
use super::im2col;
use super::Dispatch;
use crate::gpu::Gpu;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Convolution geometry: x [N, C, H, W], weight [K, C, R, S], y [N, K, OH, OW] with
/// OH = (H + 2·pad − R)/stride + 1 (floor), OW likewise. Cross-correlation, as PyTorch's
/// `nn.Conv2d` (dilation 1, groups 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// N: images per batch.
    pub batch: usize,
    /// C: input channels.
    pub cin: usize,
    /// H: input height.
    pub h: usize,
    /// W: input width.
    pub w: usize,
    /// K: output channels.
    pub cout: usize,
    /// R: kernel height.
    pub r: usize,
    /// S: kernel width.
    pub s: usize,
    /// Step of the window along both axes (≥ 1).
    pub stride: usize,
    /// Zero padding on each side, both axes.
    pub pad: usize,
}

impl Conv2d {
    /// Checks the geometry; returns a shape error naming `op` when the window does not
    /// fit or a size is zero.
    pub fn validate(&self, op: &str) -> Result<()> {
        let dims = [self.batch, self.cin, self.h, self.w, self.cout, self.r, self.s, self.stride];
        if dims.contains(&0) {
            return Err(Error::shape(op, format!("zero-sized dimension in {self:?}")));
        }
        if self.h + 2 * self.pad < self.r || self.w + 2 * self.pad < self.s {
            return Err(Error::shape(
                op,
                format!("{}x{} kernel does not fit a {}x{} input with padding {}", self.r, self.s, self.h, self.w, self.pad),
            ));
        }
        Ok(())
    }
    /// OH = (H + 2·pad − R)/stride + 1, rounded down.
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.r) / self.stride + 1
    }
    /// OW = (W + 2·pad − S)/stride + 1, rounded down.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.s) / self.stride + 1
    }
    /// Elements of x: N·C·H·W.
    pub fn x_len(&self) -> usize {
        self.batch * self.cin * self.h * self.w
    }
    /// Elements of the weight: K·C·R·S.
    pub fn w_len(&self) -> usize {
        self.cout * self.cin * self.r * self.s
    }
    /// Elements of y: N·K·OH·OW.
    pub fn y_len(&self) -> usize {
        self.batch * self.cout * self.oh() * self.ow()
    }
    /// FLOPs of the forward pass (each backward pass does the same count).
    pub fn flops(&self) -> u64 {
        2 * (self.y_len() * self.cin * self.r * self.s) as u64
    }

    fn params(&self, m: usize, n: usize, k: usize, flags: u32) -> Params {
        Params {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            flags,
            batch: self.batch as u32,
            cin: self.cin as u32,
            h: self.h as u32,
            w: self.w as u32,
            cout: self.cout as u32,
            r: self.r as u32,
            s: self.s as u32,
            stride: self.stride as u32,
            oh: self.oh() as u32,
            ow: self.ow() as u32,
            pad: self.pad as u32,
            k_chunk: 0,
        }
    }
}

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
    let op = "conv2d_forward";
    conv.validate(op)?;
    check_len(op, "x", x, conv.x_len())?;
    check_len(op, "weight", w, conv.w_len())?;
    check_len(op, "y", y, conv.y_len())?;
    if let Some(b) = bias {
        check_len(op, "bias", b, conv.cout)?;
    }
    let bias_mode = if bias.is_some() { Bias::Row } else { Bias::None };
    let p = conv.params(conv.cout, conv.batch * conv.oh() * conv.ow(), conv.cin * conv.r * conv.s, flags(false, relu, bias_mode));
    if cfg.family == Family::Im2colVec4 {
        // the weight and col rows padded to KP (ops/im2col.rs)
        let pp = Params { k: im2col::kc_padded(conv) as u32, ..p };
        if im2col::fits(gpu, 4, (false, false), conv, &pp) {
            return im2col::forward(gpu, cfg, conv, pp, x, w, bias, y);
        }
    }
    Ok(vec![launch(gpu, op, cfg, 1, (false, false), p, w, x, bias, y)?])
}

/// dx = conv_transpose(dy, w): written, not accumulated.
pub fn conv2d_backward_input(gpu: &Gpu, cfg: &GemmConfig, conv: &Conv2d, w: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward_input";
    conv.validate(op)?;
    check_len(op, "weight", w, conv.w_len())?;
    check_len(op, "dy", dy, conv.y_len())?;
    check_len(op, "dx", dx, conv.x_len())?;
    if cfg.family == Family::Im2colVec4 {
        let p = conv.params(im2col::kc_padded(conv), conv.batch * conv.oh() * conv.ow(), conv.cout, 0);
        if im2col::fits(gpu, 5, (true, false), conv, &p) {
            return im2col::backward_input(gpu, cfg, conv, p, w, dy, dx);
        }
    }
    let p = conv.params(conv.cin, conv.batch * conv.h * conv.w, conv.cout * conv.r * conv.s, 0);
    Ok(vec![launch(gpu, op, cfg, 2, (false, false), p, w, dy, None, dx)?])
}

/// dw (+)= correlation of x with dy. The bias gradient is a channel sum of dy
/// (ops::reduce::bias_backward).
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    cfg: &GemmConfig,
    conv: &Conv2d,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    let op = "conv2d_backward_weight";
    conv.validate(op)?;
    check_len(op, "x", x, conv.x_len())?;
    check_len(op, "dy", dy, conv.y_len())?;
    check_len(op, "dw", dw, conv.w_len())?;
    let p = conv.params(conv.cout, conv.cin * conv.r * conv.s, conv.batch * conv.oh() * conv.ow(), flags(accumulate, false, Bias::None));
    if cfg.family == Family::Im2colVec4 && im2col::fits(gpu, 6, (false, true), conv, &p) {
        return im2col::backward_weight(gpu, cfg, conv, p, x, dy, dw);
    }
    launch_split_k(gpu, op, cfg, 3, p, dy, x, dw)
}
