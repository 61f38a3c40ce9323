//! Channel sums (shaders/reduce.wgsl): the bias gradient of linear and conv layers.

use super::elementwise::channel_view;
use super::Dispatch;
use crate::gpu::Gpu;
use crate::pipelines::Kernel;
use crate::shaders::Shader;
use crate::tensor::{DType, Tensor};
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    outer: u32,
    c: u32,
    inner: u32,
    accumulate: u32,
}

/// `db[c]` (+)= sum of dy over every axis but 1 (features of [N, F], channels of [N, C, H, W]).
pub fn bias_backward(gpu: &Gpu, dy: &Tensor, db: &Tensor, accumulate: bool) -> Result<Dispatch> {
    let (outer, c, inner) = channel_view(dy.shape());
    if db.len() != c || dy.dtype() != DType::F32 || db.dtype() != DType::F32 {
        return Err(Error::shape("bias_backward", format!("db {:?} for dy {:?}: expected {c} f32 values", db.shape(), dy.shape())));
    }
    let params = Params { outer: outer as u32, c: c as u32, inner: inner as u32, accumulate: accumulate as u32 };
    Dispatch::new(gpu, &Kernel::new(Shader::Reduce, "bias_backward"), &params, &[(1, dy), (2, db)], gpu.grid(c as u64))
}

/// `out[i]` (+)= sum over the `splits` slices of `part` (`[splits][n]`), in slice order,
/// then the GEMM epilogue of `flags` (ops::gemm::flags: accumulate, ReLU, bias per row or
/// column of `out` seen as [n / cols, cols]; `bias` given exactly when flags ask for one).
pub fn splitk_sum(gpu: &Gpu, part: &Tensor, splits: usize, out: &Tensor, flags: u32, cols: usize, bias: Option<&Tensor>) -> Result<Dispatch> {
    let n = out.len();
    if part.len() != splits * n || part.dtype() != DType::F32 || out.dtype() != DType::F32 || cols == 0 || n % cols != 0 {
        return Err(Error::shape("splitk_sum", format!("{} partial values for {splits} slices of {n} ({cols} columns)", part.len())));
    }
    let params = Params { outer: splits as u32, c: n as u32, inner: cols as u32, accumulate: flags };
    let dummy;
    let bias = match bias {
        Some(b) => b,
        None => {
            dummy = Tensor::empty(gpu, &[1], DType::F32)?;
            &dummy
        }
    };
    Dispatch::new(gpu, &Kernel::new(Shader::Reduce, "splitk_sum"), &params, &[(3, part), (4, out), (5, bias)], gpu.grid_for(n, 256))
}
