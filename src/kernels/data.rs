//! The GPU-resident dataset: a whole split uploaded once (images as packed u8, labels as
//! u32), a permutation uploaded once per epoch, and the gather kernel that builds each
//! batch on the GPU (shaders/data.wgsl): u8 -> f32, normalised with the training set's
//! mean and std, optionally augmented.

use crate::runtime::gpu::Gpu;
use crate::kernels::Dispatch;
use crate::runtime::pipelines::Kernel;
use crate::base::rng::Rng;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) batch: u32,
    pub(crate) rows: u32,
    pub(crate) cols: u32,
    pub(crate) count: u32,
    pub(crate) mean: f32,
    pub(crate) inv_std: f32,
    pub(crate) augment: u32,
    pub(crate) seed: u32,
}

/// A whole split resident on the GPU, uploaded once, with the permutation that orders
/// the current epoch; [`ResidentDataset::gather`] builds each batch from it on the GPU.
pub struct ResidentDataset {
    /// The pixels, packed u8 [count, rows, cols].
    pub images: Tensor,
    /// The labels, u32 `[count]`.
    pub labels: Tensor,
    /// The current epoch's order, u32 `[count]`: the identity until [`ResidentDataset::shuffle`].
    pub perm: Tensor,
    /// Images in the split.
    pub count: usize,
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
    /// Normalisation: (pixel / 255 - mean) / std, the training split's statistics.
    pub mean: f32,
    /// See `mean`; positive.
    pub std: f32,
}

impl ResidentDataset {
    /// Uploads `count` images of rows x cols u8 pixels and their labels.
    pub fn upload(gpu: &Gpu, pixels: &[u8], labels: &[u8], rows: usize, cols: usize, mean: f32, std: f32) -> Result<ResidentDataset> {
        let count = labels.len();
        if pixels.len() != count * rows * cols || count == 0 {
            return Err(Error::shape("ResidentDataset", format!("{} pixels for {count} images of {rows}x{cols}", pixels.len())));
        }
        let bytes = DType::U8.bytes(pixels.len());
        let limit = gpu.limits().max_storage_buffer_binding_size;
        if bytes > limit {
            return Err(Error::unsupported(
                "ResidentDataset",
                format!("{bytes} bytes of images exceed the adapter's storage binding limit of {limit} bytes"),
            ));
        }
        if std.is_nan() || std <= 0.0 {
            return Err(Error::shape("ResidentDataset", format!("normalisation std {std} must be positive")));
        }
        let labels32: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        let perm: Vec<u32> = (0..count as u32).collect();
        Ok(ResidentDataset {
            images: Tensor::from_u8(gpu, &[count, rows, cols], pixels)?,
            labels: Tensor::from_u32(gpu, &[count], &labels32)?,
            perm: Tensor::from_u32(gpu, &[count], &perm)?,
            count,
            rows,
            cols,
            mean,
            std,
        })
    }

    /// A seeded Fisher-Yates permutation, uploaded once (call once per epoch).
    pub fn shuffle(&self, gpu: &Gpu, seed: u64) -> Result<Vec<u32>> {
        let perm = permutation(self.count, seed);
        self.perm.write_u32(gpu, &perm)?;
        Ok(perm)
    }

    /// The gather dispatch writing batch `x` [B, 1, rows, cols] (f32) and labels `y` `[B]`
    /// from rows `step[1]`.. of the permutation.
    pub fn gather(&self, gpu: &Gpu, step: &Tensor, x: &Tensor, y: &Tensor, augment: bool, seed: u32) -> Result<Dispatch> {
        let batch = y.len();
        if x.len() != batch * self.rows * self.cols || x.dtype() != DType::F32 || y.dtype() != DType::U32 {
            return Err(Error::shape(
                "gather_batch",
                format!("input {:?} and labels {:?} do not fit {}x{} images", x.shape(), y.shape(), self.rows, self.cols),
            ));
        }
        let params = Params {
            batch: batch as u32,
            rows: self.rows as u32,
            cols: self.cols as u32,
            count: self.count as u32,
            mean: self.mean,
            inv_std: 1.0 / self.std,
            augment: augment as u32,
            seed,
        };
        let kernel = Kernel::new(Shader::Data, "gather_batch").with("WG", WG);
        let tensors = [(1, step), (2, &self.images), (3, &self.labels), (4, &self.perm), (5, x), (6, y)];
        Dispatch::new(gpu, &kernel, &params, &tensors, gpu.grid_for(x.len(), WG))
    }
}

/// A seeded Fisher-Yates shuffle of 0..n.
pub fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.range(0, i);
        p.swap(i, j);
    }
    p
}

/// 3x3 median filter on the GPU over `images` [B, rows, cols] (f32): the optional
/// denoising step for user images at prediction time.
pub fn median3x3(gpu: &Gpu, images: &Tensor, out: &Tensor, rows: usize, cols: usize) -> Result<Dispatch> {
    filter3x3(gpu, "median3x3", images, out, rows, cols)
}

/// [`median3x3`] applied only to the pixels taken for impulse noise (salt or pepper: an
/// extreme value with at most 1 of its 8 neighbours near it; see shaders/data.wgsl), every
/// other pixel copied: denoising that leaves a clean image (almost) as it is. Pixels are
/// 8-bit levels (0-255) held as f32.
pub fn impulse_median3x3(gpu: &Gpu, images: &Tensor, out: &Tensor, rows: usize, cols: usize) -> Result<Dispatch> {
    filter3x3(gpu, "impulse_median3x3", images, out, rows, cols)
}

/// The dispatch of a 3x3 filter entry point over `images` [B, rows, cols] into `out`.
fn filter3x3(gpu: &Gpu, entry: &'static str, images: &Tensor, out: &Tensor, rows: usize, cols: usize) -> Result<Dispatch> {
    if images.len() != out.len() || rows * cols == 0 || images.len() % (rows * cols) != 0 {
        return Err(Error::shape(entry, format!("{:?} -> {:?} for {rows}x{cols} images", images.shape(), out.shape())));
    }
    let params = Params {
        batch: (images.len() / (rows * cols)) as u32,
        rows: rows as u32,
        cols: cols as u32,
        count: 0,
        mean: 0.0,
        inv_std: 1.0,
        augment: 0,
        seed: 0,
    };
    let kernel = Kernel::new(Shader::Data, entry).with("WG", WG);
    Dispatch::new(gpu, &kernel, &params, &[(7, images), (8, out)], gpu.grid_for(images.len(), WG))
}
