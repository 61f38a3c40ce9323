//! The device layer: [`gpu::Gpu`] (adapter, device, limits, errors, traffic counters),
//! [`shaders`] (the WGSL sources, embedded), [`pipelines`] (compiled kernels cached by
//! entry point and override constants) and [`tensor::Tensor`] (a buffer with a shape).
//! [`testing`] holds the tolerances and the shared test device.

pub mod gpu;
pub mod pipelines;
pub mod shaders;
pub mod tensor;
// Native only: a device shared across test threads (wgpu's web types are neither Send nor Sync).
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
