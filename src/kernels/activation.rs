//! Elementwise activations: LeakyReLU, Tanh, Sigmoid, GELU (shaders/activation.wgsl). One
//! kernel, the activation chosen by the override constant `ACT`; LeakyReLU's slope travels
//! in the uniform, so every slope shares one pipeline. ReLU stays in `elementwise` (EXACT,
//! and the two MNIST models use it).
//!
//! The backward reads the forward's output for Tanh and Sigmoid and its input for LeakyReLU
//! and GELU: [`Activation::backward_reads_output`]. Dimension: n elements.

use super::elementwise::check_same;
use super::Dispatch;
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::Tensor;
use crate::{Error, Result};

const WG: u32 = 256;

/// PyTorch's `nn.LeakyReLU()` default negative slope.
pub const LEAKY_RELU_DEFAULT_SLOPE: f32 = 0.01;

/// An elementwise activation. GELU is the exact (erf) form, PyTorch's `nn.GELU()` default.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// y = x for x > 0, slope * x otherwise.
    LeakyRelu {
        /// Multiplier of negative inputs; finite (PyTorch's default is 0.01).
        slope: f32,
    },
    /// y = tanh(x), computed without overflow for large |x|.
    Tanh,
    /// y = 1 / (1 + e^-x)
    Sigmoid,
    /// y = x * Phi(x), Phi the standard normal CDF (approximate='none').
    Gelu,
}

impl Activation {
    /// Every activation, LeakyReLU with PyTorch's default slope: what tests iterate over.
    pub const ALL_DEFAULT: [Activation; 4] =
        [Activation::LeakyRelu { slope: LEAKY_RELU_DEFAULT_SLOPE }, Activation::Tanh, Activation::Sigmoid, Activation::Gelu];

    /// The shader's `ACT` override constant.
    fn code(self) -> u32 {
        match self {
            Activation::LeakyRelu { .. } => 0,
            Activation::Tanh => 1,
            Activation::Sigmoid => 2,
            Activation::Gelu => 3,
        }
    }

    /// The activation's name as in benchmarks and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Gelu => "gelu",
        }
    }

    /// True when the backward takes the forward's output y (tanh: 1 - y^2, sigmoid:
    /// y (1 - y)); false when it takes the input x (leaky_relu, gelu).
    pub fn backward_reads_output(self) -> bool {
        matches!(self, Activation::Tanh | Activation::Sigmoid)
    }

    /// A finite slope; anything else is an error naming `op`.
    pub fn validate(self, op: &str) -> Result<()> {
        match self {
            Activation::LeakyRelu { slope } if !slope.is_finite() => {
                Err(Error::shape(op, format!("leaky_relu slope {slope} is not finite")))
            }
            _ => Ok(()),
        }
    }

    fn slope(self) -> f32 {
        match self {
            Activation::LeakyRelu { slope } => slope,
            _ => 0.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) n: u32,
    pub(crate) slope: f32,
    pub(crate) _pad: [u32; 2],
}

fn launch(gpu: &Gpu, entry: &'static str, act: Activation, n: usize, tensors: &[(u32, &Tensor)]) -> Result<Dispatch> {
    act.validate(entry)?;
    let kernel = Kernel::new(Shader::Activation, entry).with("WG", WG).with("ACT", act.code());
    let params = Params { n: n as u32, slope: act.slope(), _pad: [0; 2] };
    Dispatch::new(gpu, &kernel, &params, tensors, gpu.grid_for(n, WG))
}

/// y = act(x)
pub fn activation_forward(gpu: &Gpu, act: Activation, x: &Tensor, y: &Tensor) -> Result<Dispatch> {
    check_same("activation_forward", &[x, y])?;
    launch(gpu, "activation_forward", act, x.len(), &[(1, x), (2, y)])
}

/// dx = dy * act'(.), from `saved` = the forward's output y when
/// `act.backward_reads_output()`, else its input x.
pub fn activation_backward(gpu: &Gpu, act: Activation, saved: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    check_same("activation_backward", &[saved, dy, dx])?;
    launch(gpu, "activation_backward", act, saved.len(), &[(3, saved), (4, dy), (5, dx)])
}
