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
/// `gather_batch_warp`'s workgroup: one image, its pixels in turn.
const WARP_WG: u32 = 64;
/// The most pixels per image `gather_batch_warp` holds in workgroup memory (`MAX_PLANE`).
pub const MAX_WARP_PLANE: usize = 1024;

/// How the gather varies each training image (`shaders/data.wgsl`), per image and step from
/// the seeded hash of (seed, step, row), so a resumed run draws the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", try_from = "AugmentRepr")]
pub enum Augment {
    /// The images as they are.
    #[default]
    Off,
    /// A random affine warp (rotation ±15°, scale 0.9–1.1, shear ±0.2, shift ±2.5 px) of
    /// the image after a random stroke-width change (`gather_batch`).
    Affine,
    /// `Affine` plus an elastic distortion (Simard et al. 2003: α 34, σ 4 px; its field
    /// computed on a grid of half the resolution), in `gather_batch_warp`.
    Elastic,
    /// `Elastic` plus what scanners do: random down-up sampling to 8–16 px, blur and
    /// binarisation.
    Robust,
}

/// Training states from before the levels recorded `augment` as a bool.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum AugmentRepr {
    Flag(bool),
    Level(String),
}

impl TryFrom<AugmentRepr> for Augment {
    type Error = String;
    fn try_from(r: AugmentRepr) -> std::result::Result<Augment, String> {
        match r {
            AugmentRepr::Flag(on) => Ok(if on { Augment::Affine } else { Augment::Off }),
            AugmentRepr::Level(name) => name.parse(),
        }
    }
}

impl Augment {
    /// Every level, weakest first.
    pub const ALL: [Augment; 4] = [Augment::Off, Augment::Affine, Augment::Elastic, Augment::Robust];

    /// The name `--augment` takes.
    pub fn name(self) -> &'static str {
        match self {
            Augment::Off => "off",
            Augment::Affine => "affine",
            Augment::Elastic => "elastic",
            Augment::Robust => "robust",
        }
    }

    /// The gather's `Params::augment` code.
    fn code(self) -> u32 {
        self as u32
    }
}

impl std::fmt::Display for Augment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Augment {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Augment, String> {
        Augment::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| format!("{s}: expected off, affine, elastic or robust"))
    }
}

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
    /// `augment` chooses the kernel: `gather_batch` (one invocation per pixel) for `Off` and
    /// `Affine`, `gather_batch_warp` (one workgroup per image) for `Elastic` and `Robust`.
    pub fn gather(&self, gpu: &Gpu, step: &Tensor, x: &Tensor, y: &Tensor, augment: Augment, seed: u32) -> Result<Dispatch> {
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
            augment: augment.code(),
            seed,
        };
        let tensors = [(1, step), (2, &self.images), (3, &self.labels), (4, &self.perm), (5, x), (6, y)];
        if matches!(augment, Augment::Off | Augment::Affine) {
            let kernel = Kernel::new(Shader::Data, "gather_batch").with("WG", WG);
            return Dispatch::new(gpu, &kernel, &params, &tensors, gpu.grid_for(x.len(), WG));
        }
        if self.rows * self.cols > MAX_WARP_PLANE {
            return Err(Error::unsupported(
                "gather_batch_warp",
                format!("{augment} augmentation holds an image in workgroup memory: {}x{} exceeds {MAX_WARP_PLANE} pixels", self.rows, self.cols),
            ));
        }
        let kernel = Kernel::new(Shader::Data, "gather_batch_warp").with("WG", WARP_WG);
        Dispatch::new(gpu, &kernel, &params, &tensors, gpu.grid(batch as u64))
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
    if images.len() != out.len() || rows * cols == 0 || !images.len().is_multiple_of(rows * cols) {
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
