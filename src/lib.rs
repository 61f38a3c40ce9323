//! kiln: a small GPU training engine on wgpu.
//!
//! Layers, bottom up (see ARCHITECTURE.md): [`gpu`] owns the device; [`shaders`] embeds the
//! WGSL; [`pipelines`] caches compiled kernels; [`tensor`] is a GPU buffer with a shape;
//! [`ops`] turns an op's parameters into recorded dispatches; [`cpu`] holds the f64
//! references every kernel is tested against; [`graph`] plans and runs whole training steps.
//!
//! The same crate builds for `wasm32-unknown-unknown` (WebGPU; the page in `web/`): there
//! nothing may block, so readbacks are awaited (`Tensor::to_f32_async`,
//! `Executor::read_metrics_async`, [`gpu::block_on`] for why the sync reads fail there).

#![warn(missing_docs)]
// In the browser wgpu's types are neither Send nor Sync; the page runs on one thread.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

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
// Native only: plotters' fonts, and a device shared across test threads (wgpu's web
// types are neither Send nor Sync).
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
pub mod predict;
pub mod rng;
pub mod shaders;
pub mod tensor;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod train;

pub use classify::Classifier;
pub use error::{Error, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
