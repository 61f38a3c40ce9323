//! CPU references: the spec every kernel is tested against. Same names as the kernels,
//! f64 accumulation, numerically stable formulations. Each backward here is itself checked
//! against central finite differences (tests/layer_kernels/cpu_gradients.rs).

pub mod activation;
pub mod batchnorm;
pub mod conv2d;
pub mod data;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod optim;
pub mod pool;
pub mod softmax;
