//! Channel sums (shaders/reduce.wgsl): the bias gradient of linear and conv layers.

use super::elementwise::channel_view;
use super::gemm::{bias_grad_flags, EPILOGUE_FLAGS};
use super::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) outer: u32,
    pub(crate) c: u32,
    pub(crate) inner: u32,
    pub(crate) accumulate: u32,
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
/// With `db`, `part` also holds the bias gradient's row sums per slice after the C slices
/// (`[splits][n / cols]` at `splits * n`), added in slice order into db (+)=.
#[allow(clippy::too_many_arguments)]
pub fn splitk_sum(
    gpu: &Gpu,
    part: &Tensor,
    splits: usize,
    out: &Tensor,
    flags: u32,
    cols: usize,
    bias: Option<&Tensor>,
    db: Option<(&Tensor, bool)>,
) -> Result<Dispatch> {
    let n = out.len();
    let rows = n.checked_div(cols).unwrap_or(0);
    let tail = if db.is_some() { rows } else { 0 };
    let db_ok = db.is_none_or(|(t, _)| t.len() == rows && t.dtype() == DType::F32);
    if part.len() < splits * (n + tail) || part.dtype() != DType::F32 || out.dtype() != DType::F32 || cols == 0 || !n.is_multiple_of(cols) || !db_ok {
        return Err(Error::shape(
            "splitk_sum",
            format!("{} partial values for {splits} slices of {n} ({cols} columns{})", part.len(), if tail > 0 { " and the bias gradient's row sums" } else { "" }),
        ));
    }
    let flags = (flags & EPILOGUE_FLAGS) | bias_grad_flags(db.map(|(_, acc)| acc));
    let params = Params { outer: splits as u32, c: n as u32, inner: cols as u32, accumulate: flags };
    let tensors = [(3, Some(part)), (4, Some(out)), (5, bias), (6, db.map(|(t, _)| t))];
    Dispatch::with_dummies(gpu, &Kernel::new(Shader::Reduce, "splitk_sum"), &params, &tensors, gpu.grid_for(n + tail, 256))
}
