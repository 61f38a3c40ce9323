//! Batch normalisation, PyTorch's BatchNorm1d ([N, C]) and BatchNorm2d ([N, C, H, W])
//! (shaders/batchnorm.wgsl): train-mode forward with batch statistics and the running
//! update, eval-mode forward with the running statistics, and the train-mode backward.
//!
//! Dimensions: N batch, C channels (features), INNER = H*W (1 for 1d); each channel's
//! statistics run over M = N * INNER values. Train and backward run one workgroup per
//! channel (enough for MNIST sizes, see the shader); eval one invocation per element.

use super::{check_len, Dispatch};
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::Tensor;
use crate::{Error, Result};

const WG: u32 = 256;

/// PyTorch's default momentum: the new batch statistic's weight in the running ones.
pub const MOMENTUM: f32 = 0.1;
/// PyTorch's default eps, added to the variance before the square root.
pub const EPS: f32 = 1e-5;

/// Geometry and constants of one batch-norm layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    /// N: rows (images) per batch.
    pub batch: usize,
    /// C: channels (BatchNorm2d) or features (BatchNorm1d).
    pub channels: usize,
    /// H*W for BatchNorm2d, 1 for BatchNorm1d.
    pub inner: usize,
    /// running = (1 − momentum)·running + momentum·batch statistic, in [0, 1].
    pub momentum: f32,
    /// Added to the variance before the square root; > 0.
    pub eps: f32,
}

impl BatchNorm {
    /// The layer for input `shape` ([N, C] or [N, C, H, W]).
    pub fn for_shape(op: &str, shape: &[usize], momentum: f32, eps: f32) -> Result<BatchNorm> {
        let (batch, channels, inner) = match shape {
            [n, c] => (*n, *c, 1),
            [n, c, h, w] => (*n, *c, h * w),
            s => return Err(Error::shape(op, format!("batch norm needs [N, C] or [N, C, H, W], got {s:?}"))),
        };
        let bn = BatchNorm { batch, channels, inner, momentum, eps };
        bn.validate(op)?;
        Ok(bn)
    }

    /// `Error::Shape` naming `op` for a zero size, eps not finite and positive, or momentum
    /// outside [0, 1].
    pub fn validate(&self, op: &str) -> Result<()> {
        if [self.batch, self.channels, self.inner].contains(&0) {
            return Err(Error::shape(op, format!("zero-sized dimension in {self:?}")));
        }
        if self.eps <= 0.0 || !self.eps.is_finite() || !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::shape(op, format!("eps {} must be > 0 and momentum {} in [0, 1]", self.eps, self.momentum)));
        }
        Ok(())
    }

    /// Values per channel's statistics: N * INNER.
    pub fn per_channel(&self) -> usize {
        self.batch * self.inner
    }

    /// Elements of x (and y): N·C·INNER.
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.inner
    }

    /// True when some size is 0 (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Training normalises with batch statistics, and the unbiased variance divides by
    /// M - 1: PyTorch refuses one value per channel ("Expected more than 1 value per
    /// channel when training"), and so does kiln.
    pub fn check_train(&self, op: &str) -> Result<()> {
        if self.per_channel() < 2 {
            return Err(Error::shape(op, format!("training batch norm needs more than 1 value per channel, got {self:?}")));
        }
        Ok(())
    }

    fn params(&self, accumulate: u32) -> Params {
        Params {
            outer: self.batch as u32,
            c: self.channels as u32,
            inner: self.inner as u32,
            accumulate,
            momentum: self.momentum,
            eps: self.eps,
            _pad: [0; 2],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) outer: u32,
    pub(crate) c: u32,
    pub(crate) inner: u32,
    pub(crate) accumulate: u32,
    pub(crate) momentum: f32,
    pub(crate) eps: f32,
    pub(crate) _pad: [u32; 2],
}

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new(Shader::Batchnorm, entry).with("WG", WG)
}

/// y = (x - mean) / sqrt(var + eps) * weight + bias with the batch's mean and biased
/// variance per channel; saves mean and 1/sqrt(var + eps) `[C]` for the backward; updates
/// running_mean, running_var `[C]` (unbiased variance) with the momentum, and adds 1 to
/// num_batches_tracked `[1]` (an f32 count).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_train(
    gpu: &Gpu,
    bn: &BatchNorm,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    y: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    num_batches_tracked: &Tensor,
) -> Result<Dispatch> {
    let op = "batchnorm_forward_train";
    bn.validate(op)?;
    bn.check_train(op)?;
    let c = bn.channels;
    check_len(op, "x", x, bn.len())?;
    check_len(op, "y", y, bn.len())?;
    for (what, t) in [("weight", weight), ("bias", bias), ("save_mean", save_mean), ("save_invstd", save_invstd)] {
        check_len(op, what, t, c)?;
    }
    for (what, t) in [("running_mean", running_mean), ("running_var", running_var)] {
        check_len(op, what, t, c)?;
    }
    check_len(op, "num_batches_tracked", num_batches_tracked, 1)?;
    let tensors = [
        (1, x),
        (2, weight),
        (3, bias),
        (4, y),
        (5, save_mean),
        (6, save_invstd),
        (7, running_mean),
        (8, running_var),
        (9, num_batches_tracked),
    ];
    Dispatch::new(gpu, &kernel(op), &bn.params(0), &tensors, gpu.grid(c as u64))
}

/// y = (x - running_mean) / sqrt(running_var + eps) * weight + bias (inference).
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_forward_eval(
    gpu: &Gpu,
    bn: &BatchNorm,
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    y: &Tensor,
) -> Result<Dispatch> {
    let op = "batchnorm_forward_eval";
    bn.validate(op)?;
    check_len(op, "x", x, bn.len())?;
    check_len(op, "y", y, bn.len())?;
    for (what, t) in [("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)] {
        check_len(op, what, t, bn.channels)?;
    }
    let tensors = [(1, x), (2, weight), (3, bias), (10, running_mean), (11, running_var), (4, y)];
    Dispatch::new(gpu, &kernel(op), &bn.params(0), &tensors, gpu.grid_for(bn.len(), WG))
}

/// The train-mode backward from the saved batch statistics: dx (=), and dweight, dbias
/// written, or added to when their `accumulate` flag is set.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    gpu: &Gpu,
    bn: &BatchNorm,
    x: &Tensor,
    weight: &Tensor,
    save_mean: &Tensor,
    save_invstd: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    dweight: &Tensor,
    dbias: &Tensor,
    accumulate: (bool, bool),
) -> Result<Dispatch> {
    let op = "batchnorm_backward";
    bn.validate(op)?;
    let c = bn.channels;
    for (what, t) in [("x", x), ("dy", dy), ("dx", dx)] {
        check_len(op, what, t, bn.len())?;
    }
    for (what, t) in [("weight", weight), ("save_mean", save_mean), ("save_invstd", save_invstd), ("dweight", dweight), ("dbias", dbias)] {
        check_len(op, what, t, c)?;
    }
    let acc = accumulate.0 as u32 | (accumulate.1 as u32) << 1;
    let tensors = [(1, x), (2, weight), (12, dy), (13, save_mean), (14, save_invstd), (15, dx), (16, dweight), (17, dbias)];
    Dispatch::new(gpu, &kernel(op), &bn.params(acc), &tensors, gpu.grid(c as u64))
}
