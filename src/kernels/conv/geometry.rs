//! The geometry of a 2-D convolution, shared by the convolution passes (ops/conv2d.rs)
//! and the im2col staging (ops/im2col.rs), so neither imports the other's internals.

use crate::kernels::gemm::Params;
use crate::{Error, Result};

/// Convolution geometry: x [N, C, H, W], weight [K, C, R, S], y [N, K, OH, OW] with
/// OH = (H + 2·pad − R)/stride + 1 (floor), OW likewise. Cross-correlation, as PyTorch's
/// `nn.Conv2d` (dilation 1, groups 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
        let fields = [
            ("batch", self.batch),
            ("input channels", self.cin),
            ("height", self.h),
            ("width", self.w),
            ("output channels", self.cout),
            ("kernel height", self.r),
            ("kernel width", self.s),
            ("stride", self.stride),
            ("padding", self.pad),
        ];
        let (x, w) = ([self.batch, self.cin, self.h, self.w], [self.cout, self.cin, self.r, self.s]);
        crate::kernels::check_geometry(op, &fields, &[("input", &x), ("weight", &w)])?;
        if self.h + 2 * self.pad < self.r || self.w + 2 * self.pad < self.s {
            return Err(Error::shape(
                op,
                format!("{}x{} kernel does not fit a {}x{} input with padding {}", self.r, self.s, self.h, self.w, self.pad),
            ));
        }
        crate::kernels::check_geometry(op, &[], &[("output", &[self.batch, self.cout, self.oh(), self.ow()])])
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

    pub(crate) fn params(&self, m: usize, n: usize, k: usize, flags: u32) -> Params {
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
            ..Default::default()
        }
    }

    /// A pass as the direct kernels see it (`conv_direct`, `conv_shared`): the forward, or
    /// with `transposed` the stride-1 dX, which is the convolution of dy (the forward's
    /// output) with the flipped, transposed weight into the forward's input, padded by
    /// R - 1 - pad (S - 1 - pad across).
    pub(crate) fn direct_pass(&self, transposed: bool) -> DirectPass {
        if transposed {
            DirectPass { cin: self.cout, h: self.oh(), w: self.ow(), cout: self.cin, oh: self.h, ow: self.w, pad_y: self.r - 1 - self.pad, pad_x: self.s - 1 - self.pad, stride: 1 }
        } else {
            DirectPass { cin: self.cin, h: self.h, w: self.w, cout: self.cout, oh: self.oh(), ow: self.ow(), pad_y: self.pad, pad_x: self.pad, stride: self.stride }
        }
    }
}

/// [`Conv2d::direct_pass`]: `cin` channels of h x w in, `cout` of oh x ow out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DirectPass {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub oh: usize,
    pub ow: usize,
    pub pad_y: usize,
    pub pad_x: usize,
    pub stride: usize,
}
