//! Max and average pooling over NCHW (shaders/pool.wgsl). Max pooling saves the argmax of
//! each window for its backward, which gathers (no write races, overlapping windows fine).

use super::{check_tensor, Dispatch};
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

const WG: u32 = 256;

/// Pooling geometry. Dimensions: N batch, C channels, H x W input, square window `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// N: images per batch.
    pub batch: usize,
    /// C: channels (pooled independently).
    pub channels: usize,
    /// H: input height.
    pub h: usize,
    /// W: input width.
    pub w: usize,
    /// Window side (k×k).
    pub k: usize,
    /// Step of the window along both axes.
    pub stride: usize,
    /// Padding on each side (never the maximum; zeros in an average), at most k/2.
    pub pad: usize,
}

impl Pool2d {
    /// `Error::Shape` naming `op` for a zero size, padding above k/2 (PyTorch's rule) or a
    /// window larger than the padded input.
    pub fn validate(&self, op: &str) -> Result<()> {
        if [self.batch, self.channels, self.h, self.w, self.k, self.stride].contains(&0) {
            return Err(Error::shape(op, format!("zero-sized dimension in {self:?}")));
        }
        let fields = [("batch", self.batch), ("channels", self.channels), ("height", self.h), ("width", self.w), ("window", self.k), ("stride", self.stride), ("padding", self.pad)];
        super::check_geometry(op, &fields, &[("input", &[self.batch, self.channels, self.h, self.w])])?;
        // PyTorch's rule: padding at most half the window, so no window is all padding.
        if 2 * self.pad > self.k {
            return Err(Error::shape(op, format!("padding {} exceeds half the window {}", self.pad, self.k)));
        }
        if self.h + 2 * self.pad < self.k || self.w + 2 * self.pad < self.k {
            return Err(Error::shape(op, format!("{0}x{0} window does not fit {1}x{2} input", self.k, self.h, self.w)));
        }
        super::check_geometry(op, &[], &[("output", &[self.batch, self.channels, self.oh(), self.ow()])])
    }
    /// OH = (H + 2·pad − k)/stride + 1, rounded down (PyTorch's ceil_mode=False).
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    /// OW = (W + 2·pad − k)/stride + 1, rounded down.
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Whether the windows tile the input exactly: stride = window and every input element
    /// in one window (no overlap, nothing left over). Then a backward can write each window
    /// whole (what the fused `MaxPoolRoute` kernels need).
    pub fn tiles_exactly(&self) -> bool {
        self.stride == self.k && self.h + 2 * self.pad == self.oh() * self.k && self.w + 2 * self.pad == self.ow() * self.k
    }
    /// Elements of x: N·C·H·W.
    pub fn x_len(&self) -> usize {
        self.batch * self.channels * self.h * self.w
    }
    /// Elements of y: N·C·OH·OW.
    pub fn y_len(&self) -> usize {
        self.batch * self.channels * self.oh() * self.ow()
    }
    fn params(&self) -> Params {
        Params {
            planes: (self.batch * self.channels) as u32,
            h: self.h as u32,
            w: self.w as u32,
            oh: self.oh() as u32,
            ow: self.ow() as u32,
            kh: self.k as u32,
            kw: self.k as u32,
            stride: self.stride as u32,
            pad: self.pad as u32,
            _pad: [0; 3],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) planes: u32,
    pub(crate) h: u32,
    pub(crate) w: u32,
    pub(crate) oh: u32,
    pub(crate) ow: u32,
    pub(crate) kh: u32,
    pub(crate) kw: u32,
    pub(crate) stride: u32,
    pub(crate) pad: u32,
    pub(crate) _pad: [u32; 3],
}

fn launch(gpu: &Gpu, entry: &'static str, pool: &Pool2d, n: usize, tensors: &[(u32, &Tensor)]) -> Result<Dispatch> {
    let kernel = Kernel::new(Shader::Pool, entry).with("WG", WG);
    Dispatch::new(gpu, &kernel, &pool.params(), tensors, gpu.grid_for(n, WG))
}

/// y = window max; argmax (u32, index within the input plane) for the backward.
pub fn max_pool2d_forward(gpu: &Gpu, pool: &Pool2d, x: &Tensor, y: &Tensor, argmax: &Tensor) -> Result<Dispatch> {
    let op = "max_pool2d_forward";
    pool.validate(op)?;
    check_tensor(op, "x", x, pool.x_len(), DType::F32)?;
    check_tensor(op, "y", y, pool.y_len(), DType::F32)?;
    check_tensor(op, "argmax", argmax, pool.y_len(), DType::U32)?;
    launch(gpu, op, pool, pool.y_len(), &[(1, x), (2, y), (3, argmax)])
}

/// `dx[i]` = sum of dy over the windows whose saved argmax is i.
pub fn max_pool2d_backward(gpu: &Gpu, pool: &Pool2d, argmax: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "max_pool2d_backward";
    pool.validate(op)?;
    check_tensor(op, "argmax", argmax, pool.y_len(), DType::U32)?;
    check_tensor(op, "dy", dy, pool.y_len(), DType::F32)?;
    check_tensor(op, "dx", dx, pool.x_len(), DType::F32)?;
    launch(gpu, op, pool, pool.x_len(), &[(5, argmax), (4, dy), (6, dx)])
}

/// The max-pool backward fused with the backward of the ReLU whose output `x` the pool
/// read: dx = routed dy where x > 0, else 0 (the same bits as max_pool2d_backward followed
/// by relu_backward, one dispatch and one pass over dx less).
pub fn max_pool2d_backward_relu(gpu: &Gpu, pool: &Pool2d, argmax: &Tensor, x: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "max_pool2d_backward_relu";
    pool.validate(op)?;
    check_tensor(op, "argmax", argmax, pool.y_len(), DType::U32)?;
    check_tensor(op, "x", x, pool.x_len(), DType::F32)?;
    check_tensor(op, "dy", dy, pool.y_len(), DType::F32)?;
    check_tensor(op, "dx", dx, pool.x_len(), DType::F32)?;
    launch(gpu, op, pool, pool.x_len(), &[(1, x), (5, argmax), (4, dy), (6, dx)])
}

/// A max-pool run by the op that makes its input (a convolution's forward, in the same
/// dispatch where the kernel can): the pool, its output and its argmax.
#[derive(Clone, Copy, Debug)]
pub struct MaxPoolOut<'a> {
    /// Window geometry.
    pub pool: &'a Pool2d,
    /// The output [N, C, OH, OW].
    pub y: &'a Tensor,
    /// Each output's maximum as an index within its input plane [N, C, OH, OW] (u32).
    pub argmax: &'a Tensor,
}

impl MaxPoolOut<'_> {
    /// `Error::Shape` naming `op` unless the geometry is valid and the output and argmax
    /// have the pool's sizes and types.
    pub(crate) fn check(&self, op: &str) -> Result<()> {
        self.pool.validate(op)?;
        check_tensor(op, "pooled y", self.y, self.pool.y_len(), DType::F32)?;
        check_tensor(op, "argmax", self.argmax, self.pool.y_len(), DType::U32)
    }
}

/// Where a max-pool fused with a neighbouring product runs: inside that product's kernel (a
/// forward's pool in the convolution's dispatch, a routed backward in the store of the dX
/// that makes its gradient), or apart, as a pool kernel of its own after the product (which
/// then goes through the scratch region when it is a routed dX). Part of a kernel choice
/// (`ConvChoice`, `LinearChoice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolAt {
    /// In the product's own dispatch.
    Inside,
    /// A dispatch of its own after the product.
    Apart,
}

/// A max-pool's backward run by the op that makes its dy (which then never stores dy), for a
/// pool whose windows tile its input exactly ([`Pool2d::tiles_exactly`]): the pool, its
/// saved argmax and, when the ReLU before the pool has its backward fused too, that
/// ReLU's output (the pool's input).
#[derive(Clone, Copy, Debug)]
pub struct MaxPoolRoute<'a> {
    /// Window geometry.
    pub pool: &'a Pool2d,
    /// The forward's saved argmax [N, C, OH, OW] (u32).
    pub argmax: &'a Tensor,
    /// The fused ReLU's output [N, C, H, W], if any.
    pub relu: Option<&'a Tensor>,
}

impl MaxPoolRoute<'_> {
    /// `Error::Shape` naming `op` unless the geometry is valid and argmax, the ReLU output
    /// and `dx` (the pool input's gradient) have the pool's sizes and types.
    pub(crate) fn check(&self, op: &str, dx: &Tensor) -> Result<()> {
        self.pool.validate(op)?;
        if !self.pool.tiles_exactly() {
            return Err(Error::shape(op, format!("a routed max-pool's windows must tile its input exactly (stride = window, nothing left over): {:?}", self.pool)));
        }
        check_tensor(op, "argmax", self.argmax, self.pool.y_len(), DType::U32)?;
        if let Some(x) = self.relu {
            check_tensor(op, "relu output", x, self.pool.x_len(), DType::F32)?;
        }
        check_tensor(op, "dx (the pool's input)", dx, self.pool.x_len(), DType::F32)
    }

    /// The pool's backward of `dy` (its output's gradient, stored apart: the route did not
    /// run in the producer's store) into `dx`, through the ReLU's mask when it has one.
    pub(crate) fn backward(&self, gpu: &Gpu, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
        match self.relu {
            Some(x) => max_pool2d_backward_relu(gpu, self.pool, self.argmax, x, dy, dx),
            None => max_pool2d_backward(gpu, self.pool, self.argmax, dy, dx),
        }
    }
}

/// y = window mean, padding counted as zeros (count_include_pad).
pub fn avg_pool2d_forward(gpu: &Gpu, pool: &Pool2d, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "avg_pool2d_forward";
    pool.validate(op)?;
    check_tensor(op, "x", x, pool.x_len(), DType::F32)?;
    check_tensor(op, "y", y, pool.y_len(), DType::F32)?;
    launch(gpu, op, pool, pool.y_len(), &[(1, x), (2, y)])
}

/// dx = dy/k² added over each window that covers the element (count_include_pad);
/// written (`=`), one invocation per input element (a gather, no races).
pub fn avg_pool2d_backward(gpu: &Gpu, pool: &Pool2d, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "avg_pool2d_backward";
    pool.validate(op)?;
    check_tensor(op, "dy", dy, pool.y_len(), DType::F32)?;
    check_tensor(op, "dx", dx, pool.x_len(), DType::F32)?;
    launch(gpu, op, pool, pool.x_len(), &[(4, dy), (6, dx)])
}

/// Global average pooling geometry: x [N, C, H, W] -> y [N, C, 1, 1], each plane's mean.
/// The output keeps PyTorch's `nn.AdaptiveAvgPool2d(1)` shape (and ONNX
/// GlobalAveragePool's); a Linear layer after it needs a flatten, which is a free view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalPool2d {
    /// N: images per batch.
    pub batch: usize,
    /// C: channels.
    pub channels: usize,
    /// H: plane height.
    pub h: usize,
    /// W: plane width.
    pub w: usize,
}

impl GlobalPool2d {
    /// `Error::Shape` naming `op` for a zero size.
    pub fn validate(&self, op: &str) -> Result<()> {
        if [self.batch, self.channels, self.h, self.w].contains(&0) {
            return Err(Error::shape(op, format!("zero-sized dimension in {self:?}")));
        }
        Ok(())
    }
    /// Elements of x: N·C·H·W.
    pub fn x_len(&self) -> usize {
        self.batch * self.channels * self.h * self.w
    }
    /// Elements of y: N·C.
    pub fn y_len(&self) -> usize {
        self.batch * self.channels
    }
    fn params(&self) -> Params {
        // the whole plane is the window: kh = H, kw = W, one output per plane
        let pool = Pool2d { batch: self.batch, channels: self.channels, h: self.h, w: self.w, k: 1, stride: 1, pad: 0 };
        Params { oh: 1, ow: 1, kh: self.h as u32, kw: self.w as u32, ..pool.params() }
    }
}

fn launch_global(gpu: &Gpu, entry: &'static str, pool: &GlobalPool2d, n: usize, tensors: &[(u32, &Tensor)]) -> Result<Dispatch> {
    let kernel = Kernel::new(Shader::Pool, entry).with("WG", WG);
    Dispatch::new(gpu, &kernel, &pool.params(), tensors, gpu.grid_for(n, WG))
}

/// `y[plane]` = mean of x over the plane's H x W values.
pub fn global_avg_pool_forward(gpu: &Gpu, pool: &GlobalPool2d, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    let op = "global_avg_pool_forward";
    pool.validate(op)?;
    check_tensor(op, "x", x, pool.x_len(), DType::F32)?;
    check_tensor(op, "y", y, pool.y_len(), DType::F32)?;
    launch_global(gpu, op, pool, pool.y_len(), &[(1, x), (2, y)])
}

/// dx = `dy[plane]` / (H W) for every element of the plane.
pub fn global_avg_pool_backward(gpu: &Gpu, pool: &GlobalPool2d, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "global_avg_pool_backward";
    pool.validate(op)?;
    check_tensor(op, "dy", dy, pool.y_len(), DType::F32)?;
    check_tensor(op, "dx", dx, pool.x_len(), DType::F32)?;
    launch_global(gpu, op, pool, pool.x_len(), &[(4, dy), (6, dx)])
}
