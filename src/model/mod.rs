//! The model layer: PyTorch-named layers and the model zoo ([`nn`]), self-describing
//! safetensors checkpoints ([`checkpoint`]) and ONNX export ([`onnx`]). Built on the graph.

pub mod checkpoint;
pub mod nn;
pub mod onnx;
