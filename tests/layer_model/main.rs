//! The model layer: the public model API, checkpoints, ONNX export.
//!
//! One test binary per layer (each file below was a binary of its own): the suite links
//! 4 binaries instead of 26.

#[path = "../common/mod.rs"]
mod common;

mod model_api;
mod onnx;
