//! kiln: a small GPU training engine on wgpu.
//!
//! Layers, bottom up (see ARCHITECTURE.md): [`gpu`] owns the device; [`shaders`] embeds the
//! WGSL; [`pipelines`] caches compiled kernels; [`tensor`] is a GPU buffer with a shape;
//! [`ops`] turns an op's parameters into recorded dispatches; [`cpu`] holds the f64
//! references every kernel is tested against; [`graph`] plans and runs whole training steps.

#![warn(missing_docs)]

pub mod autotune;
pub mod checkpoint;
pub mod classify;
pub mod cli;
pub mod cpu;
pub mod data;
pub mod digit_sets;
pub mod explain;
pub mod error;
pub mod evaluate;
pub mod files;
pub mod gpu;
pub mod graph;
pub mod morphology;
pub mod nn;
pub mod onnx;
pub mod ops;
pub mod pipelines;
pub mod plot;
pub mod predict;
pub mod rng;
pub mod shaders;
pub mod tensor;
pub mod testing;
pub mod train;

pub use classify::Classifier;
pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
