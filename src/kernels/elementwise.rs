//! ReLU, bias, scale-add and fill: one invocation per element (shaders/elementwise.wgsl).

use super::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) n: u32,
    pub(crate) c: u32,
    pub(crate) inner: u32,
    pub(crate) _pad: u32,
    pub(crate) alpha: f32,
    pub(crate) beta: f32,
    pub(crate) _pad1: [u32; 2],
}

/// Checks that every tensor is f32 with the element count of the first.
pub(crate) fn check_same(op: &str, tensors: &[&Tensor]) -> Result<()> {
    let n = tensors[0].len();
    for t in tensors {
        if t.dtype() != DType::F32 {
            return Err(Error::shape(op, format!("expected f32 tensors, got {:?}", t.dtype())));
        }
        if t.len() != n {
            return Err(Error::shape(op, format!("shapes {:?} and {:?} differ in size", tensors[0].shape(), t.shape())));
        }
    }
    Ok(())
}

fn launch(gpu: &Gpu, entry: &'static str, params: Params, tensors: &[(u32, &Tensor)]) -> Result<Dispatch> {
    let kernel = Kernel::new(Shader::Elementwise, entry).with("WG", WG);
    Dispatch::new(gpu, &kernel, &params, tensors, gpu.grid_for(params.n as usize, WG))
}

fn n_params(t: &Tensor) -> Params {
    Params { n: t.len() as u32, c: 1, inner: 1, ..Default::default() }
}

/// y = max(x, 0)
pub fn relu_forward(gpu: &Gpu, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    check_same("relu_forward", &[x, y])?;
    launch(gpu, "relu_forward", n_params(x), &[(1, x), (2, y)])
}

/// dx = dy where x > 0, else 0, with x the forward input.
pub fn relu_backward(gpu: &Gpu, x: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    check_same("relu_backward", &[x, dy, dx])?;
    launch(gpu, "relu_backward", n_params(x), &[(1, x), (3, dy), (4, dx)])
}

/// `[outer, C, inner]` view of `shape` with the channel on axis 1.
pub(crate) fn channel_view(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [] => (1, 1, 1),
        [c] => (1, *c, 1),
        [n, c, rest @ ..] => (*n, *c, rest.iter().product()),
    }
}

/// y = x + `b[channel]`, channel on axis 1 (features of [N, F], channels of [N, C, H, W]).
pub fn bias_forward(gpu: &Gpu, x: &Tensor, b: &Tensor, y: &Tensor) -> Result<Dispatch> {
    check_same("bias_forward", &[x, y])?;
    let (_, c, inner) = channel_view(x.shape());
    if b.len() != c {
        return Err(Error::shape("bias_forward", format!("bias of {} for {} channels of {:?}", b.len(), c, x.shape())));
    }
    let params = Params { c: c as u32, inner: inner as u32, ..n_params(x) };
    launch(gpu, "bias_forward", params, &[(1, x), (5, b), (2, y)])
}

/// y = alpha * x + beta * z
pub fn scale_add_forward(gpu: &Gpu, alpha: f32, x: &Tensor, beta: f32, z: &Tensor, y: &Tensor) -> Result<Dispatch> {
    check_same("scale_add_forward", &[x, z, y])?;
    let params = Params { alpha, beta, ..n_params(x) };
    launch(gpu, "scale_add_forward", params, &[(1, x), (3, z), (2, y)])
}

/// y = value
pub fn fill(gpu: &Gpu, y: &Tensor, value: f32) -> Result<Dispatch> {
    check_same("fill", &[y])?;
    launch(gpu, "fill", Params { alpha: value, ..n_params(y) }, &[(2, y)])
}
