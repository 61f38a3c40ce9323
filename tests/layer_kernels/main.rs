//! The runtime and kernel layers: every kernel against its f64 CPU reference, each CPU backward against finite differences, the shaders through naga.
//!
//! One test binary per layer (each file below was a binary of its own): the suite links
//! 4 binaries instead of 26.

mod activation;
mod batchnorm;
mod conv2d;
mod cpu_gradients;
mod data_gpu;
mod elementwise;
mod gemm;
mod linear;
mod optim;
mod pool;
mod shaders;
mod softmax;
