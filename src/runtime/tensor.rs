//! `Tensor`: a GPU buffer range plus a shape. Readback (`to_*`) is explicit and counted;
//! it is for tests and metrics, never the training hot path.

use std::sync::Arc;

use crate::runtime::gpu::{Gpu, GpuBuffer};
use crate::{Error, Result};

/// Element type. `U8` is stored packed, four to a 32-bit word (WGSL has no u8), which
/// is how the resident dataset fits the 128 MiB binding limit of many adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 32-bit unsigned integer (labels, argmax indices, metrics, the step buffer).
    U32,
    /// Byte, packed four to a little-endian 32-bit word (the resident dataset's pixels).
    U8,
}

impl DType {
    /// Bytes for `len` elements, rounded up to whole 32-bit words.
    pub fn bytes(self, len: usize) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4 * len as u64,
            DType::U8 => (len as u64).next_multiple_of(4),
        }
    }
}

/// A GPU-resident tensor: a range of a storage buffer, a shape (row-major, outermost first)
/// and a [`DType`]. Cloning shares the buffer. Uploads are queued writes; readbacks
/// (`to_f32`, `to_u32`, `to_u8`) wait for the GPU and count in [`crate::runtime::gpu::Counters`].
///
/// ```
/// let gpu = kiln::testing::gpu();
/// let t = kiln::Tensor::from_f32(gpu, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// assert_eq!(t.shape(), &[2, 3]);
/// let flat = t.reshape(&[6])?; // same memory, no copy
/// assert_eq!(flat.to_f32(gpu)?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Tensor {
    buffer: Arc<GpuBuffer>,
    /// Byte offset of element 0 in `buffer` (a multiple of the storage offset alignment).
    offset: u64,
    shape: Vec<usize>,
    dtype: DType,
}

impl Tensor {
    /// An uninitialised tensor (contents unspecified until a kernel writes it).
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let len = shape.iter().product::<usize>();
        let buffer = gpu.storage_buffer("kiln tensor", dtype.bytes(len))?;
        Ok(Tensor { buffer: Arc::new(buffer), offset: 0, shape: shape.to_vec(), dtype })
    }

    fn upload(gpu: &Gpu, shape: &[usize], dtype: DType, len: usize, bytes: &[u8]) -> Result<Tensor> {
        let expected = shape.iter().product::<usize>();
        if len != expected {
            return Err(Error::shape(
                "Tensor::from_slice",
                format!("{len} elements given for shape {shape:?} ({expected} elements)"),
            ));
        }
        let t = Tensor::empty(gpu, shape, dtype)?;
        t.write_bytes(gpu, bytes)?;
        Ok(t)
    }

    /// Uploads `data` into a new f32 tensor. `Error::Shape` unless `data.len()` is the
    /// product of `shape`.
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Self::upload(gpu, shape, DType::F32, data.len(), bytemuck::cast_slice(data))
    }

    /// Uploads `data` into a new u32 tensor. `Error::Shape` unless `data.len()` is the
    /// product of `shape`.
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Self::upload(gpu, shape, DType::U32, data.len(), bytemuck::cast_slice(data))
    }

    /// Uploads `data` into a new packed u8 tensor. `Error::Shape` unless `data.len()` is the
    /// product of `shape`.
    pub fn from_u8(gpu: &Gpu, shape: &[usize], data: &[u8]) -> Result<Tensor> {
        Self::upload(gpu, shape, DType::U8, data.len(), data)
    }

    /// Overwrites the whole tensor from host bytes (queued before the next submit).
    pub fn write_bytes(&self, gpu: &Gpu, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.bytes() {
            return Err(Error::shape("Tensor::write", format!("{} bytes into {} bytes", bytes.len(), self.bytes())));
        }
        let mut padded;
        let data = if bytes.len().is_multiple_of(4) {
            bytes
        } else {
            padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            &padded
        };
        gpu.catch("Tensor::write", || gpu.queue.write_buffer(&self.buffer, self.offset, data))
    }

    /// Writes `data` from element 0 (queued before the next submit); a shorter slice leaves
    /// the rest unchanged, a longer one is `Error::Shape`. The dtype is not checked.
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        self.write_bytes(gpu, bytemuck::cast_slice(data))
    }

    /// Writes `data` from element 0 (queued before the next submit); a shorter slice leaves
    /// the rest unchanged, a longer one is `Error::Shape`. The dtype is not checked.
    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) -> Result<()> {
        self.write_bytes(gpu, bytemuck::cast_slice(data))
    }

    /// Fills with NaN (f32) or 0xFFFFFFFF (u32/u8): what tests do to outputs before a run,
    /// so an element a kernel forgot to write fails the comparison.
    pub fn poison(&self, gpu: &Gpu) -> Result<()> {
        let words = (self.bytes() / 4) as usize;
        let word = match self.dtype {
            DType::F32 => f32::NAN.to_bits(),
            DType::U32 | DType::U8 => u32::MAX,
        };
        self.write_u32_words(gpu, &vec![word; words])
    }

    fn write_u32_words(&self, gpu: &Gpu, words: &[u32]) -> Result<()> {
        gpu.catch("Tensor::fill", || gpu.queue.write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(words)))
    }

    /// Reads the tensor back (waits for the GPU; one counted readback). `Error::Unsupported`
    /// unless the dtype is `F32`.
    pub fn to_f32(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        crate::runtime::gpu::block_on(self.to_f32_async(gpu))
    }

    /// [`Tensor::to_f32`] without blocking: what the browser awaits (see [`Gpu::read_bytes_async`]).
    pub async fn to_f32_async(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        self.expect_dtype(DType::F32, "to_f32")?;
        let bytes = gpu.read_bytes_async(&self.buffer, self.offset, self.bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads the tensor back (waits for the GPU; one counted readback). `Error::Unsupported`
    /// unless the dtype is `U32`.
    pub fn to_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        crate::runtime::gpu::block_on(self.to_u32_async(gpu))
    }

    /// [`Tensor::to_u32`] without blocking: what the browser awaits (see [`Gpu::read_bytes_async`]).
    pub async fn to_u32_async(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        self.expect_dtype(DType::U32, "to_u32")?;
        let bytes = gpu.read_bytes_async(&self.buffer, self.offset, self.bytes()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Reads the tensor back, unpacked to `len()` bytes (waits for the GPU; one counted
    /// readback). `Error::Unsupported` unless the dtype is `U8`.
    pub fn to_u8(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        self.expect_dtype(DType::U8, "to_u8")?;
        let mut bytes = gpu.read_bytes(&self.buffer, self.offset, self.bytes())?;
        bytes.truncate(self.len());
        Ok(bytes)
    }

    fn expect_dtype(&self, dtype: DType, what: &str) -> Result<()> {
        if self.dtype != dtype {
            return Err(Error::unsupported(what, format!("tensor is {:?}, not {dtype:?}", self.dtype)));
        }
        Ok(())
    }

    /// The same memory seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::shape("reshape", format!("{:?} -> {shape:?} changes the element count", self.shape)));
        }
        Ok(Tensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// A tensor over `buffer` at byte `offset` (planner-owned memory).
    pub fn from_buffer(buffer: Arc<GpuBuffer>, offset: u64, shape: &[usize], dtype: DType) -> Tensor {
        Tensor { buffer, offset, shape: shape.to_vec(), dtype }
    }

    /// Dimensions, outermost first; `[]` is a scalar.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of elements: the product of the shape (1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when some dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes this tensor spans in its buffer (rounded up to 32-bit words).
    pub fn bytes(&self) -> u64 {
        self.dtype.bytes(self.len()).max(4)
    }
    /// The storage buffer this tensor is a range of (shared with other tensors in planned
    /// memory).
    pub fn buffer(&self) -> &Arc<GpuBuffer> {
        &self.buffer
    }
    /// Byte offset of element 0 in [`Tensor::buffer`]; a multiple of the adapter's storage
    /// offset alignment.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// This tensor's range as a bind group entry ([`Tensor::bytes`] from [`Tensor::offset`]).
    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new(self.bytes()),
        })
    }
}
