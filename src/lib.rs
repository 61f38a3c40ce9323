//! kiln: a small GPU training engine on wgpu, and a digit recogniser built on it.
//!
//! Each folder is one layer and imports only the layers below it (ARCHITECTURE.md;
//! `scripts/check-layers.sh` checks it in CI). Bottom up:
//! - [`base`]: errors, the seeded RNG, atomic file writes;
//! - [`runtime`]: the device, embedded shaders, the pipeline cache, tensors;
//! - [`kernels`]: one module per op family, recording dispatches, with its f64 CPU
//!   reference in [`kernels::reference`];
//! - [`graph`]: the graph builder, lowering with autodiff, the memory planner, the executor,
//!   the CPU interpreter, profiling and autotuning;
//! - [`model`]: layers and the model zoo, checkpoints, ONNX export;
//! - [`digits`]: the digit application (datasets, training, preparation, classification,
//!   evaluation, explain, plots, reading digit strings: [`read`]);
//! - [`cli`]: what only programs need (safe printing, exit codes);
//! - `serve` (not in the web build): the recognition service, an HTTP API over one GPU worker
//!   that batches requests.
//!
//! The same crate builds for `wasm32-unknown-unknown` (WebGPU; the page in `web/`): there
//! nothing may block, so readbacks are awaited (`Tensor::to_f32_async`,
//! `Executor::read_metrics_async`, [`runtime::gpu::block_on`] for why the sync reads fail there).

#![warn(missing_docs)]
// In the browser wgpu's types are neither Send nor Sync; the page runs on one thread.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

pub mod base;
pub mod runtime;
pub mod kernels;
pub mod graph;
pub mod model;
pub mod digits;
pub mod cli;
#[cfg(not(target_arch = "wasm32"))]
pub mod serve;

pub use base::error::{Error, Result};
pub use digits::classify::Classifier;
pub use runtime::gpu::Gpu;
pub use runtime::tensor::{DType, Tensor};

// The paths from before the layer folders, so that programs written against them still
// compile. New code names the layer (`kiln::runtime::gpu`, `kiln::kernels::gemm`, ...).
#[doc(hidden)]
pub use base::{error, files, rng};
#[doc(hidden)]
pub use digits::{calibrate, classify, data, digit_sets, evaluate, explain, fine_tune, morphology, predict, read, string_sets, train, tta};
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub use digits::plot;
#[doc(hidden)]
pub use graph::autotune;
#[doc(hidden)]
pub use kernels::reference as cpu;
#[doc(hidden)]
pub use model::{checkpoint, nn, onnx};
#[doc(hidden)]
pub use runtime::{gpu, pipelines, shaders, tensor};
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub use runtime::testing;
/// The kernels under their earlier name, `ops` (the convolution family was `conv2d`).
#[doc(hidden)]
pub mod ops {
    pub use crate::kernels::*;
    pub use crate::kernels::conv as conv2d;
    pub use crate::kernels::conv::{geometry as conv_geometry, im2col};
}
