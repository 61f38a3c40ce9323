//! kiln: a small GPU training engine on wgpu.
//!
//! Layers, bottom up (see ARCHITECTURE.md): [`gpu`] owns the device; [`shaders`] embeds the
//! WGSL; [`pipelines`] caches compiled kernels; [`tensor`] is a GPU buffer with a shape;
//! [`ops`] turns an op's parameters into recorded dispatches; [`cpu`] holds the f64
//! references every kernel is tested against; [`graph`] plans and runs whole training steps.

pub mod data;
pub mod error;

pub use error::{Error, Result};
