//! ONNX export of kiln graphs (opset 13), for running a trained model elsewhere
//! (onnxruntime, browsers, phones). The exporter walks the graph IR from the requested
//! output back to the input, so any model built from kiln's layers exports; parameters
//! become initializers under their checkpoint names. Inference only: dropout is the
//! identity, and nodes past the output (softmax, loss) are not visited.
//!
//! The protobuf is written by hand ([`Message`]): the ten messages involved need a few
//! varint and length-delimited fields, listed in `field` with their numbers from
//! `onnx.proto` (see ARCHITECTURE.md, "ONNX export").
//!
//! | kiln op | ONNX |
//! |---|---|
//! | `Conv2d { stride, pad }` | `Conv` (kernel_shape, strides, pads) |
//! | `MaxPool2d { k, stride, pad }` | `MaxPool` (kernel_shape, strides, pads) |
//! | `AvgPool2d { k, stride, pad }` | `AveragePool` (kernel_shape, strides, pads, count_include_pad = 1) |
//! | `GlobalAvgPool` | `GlobalAveragePool` |
//! | `Linear` | `Gemm` (transB = 1) |
//! | `Bias` | `Add` with the bias reshaped to `[C, 1, ..]` |
//! | `BatchNorm { eps, .. }` | `BatchNormalization` (epsilon) with the running mean and variance as initializers |
//! | `Activation`: LeakyReLU, Tanh, Sigmoid | `LeakyRelu` (alpha = slope), `Tanh`, `Sigmoid` |
//! | `Activation`: GELU | `Div` by √2, `Erf`, `Add` 1, `Mul` by x, `Mul` by 0.5 (ONNX's `Gelu` is opset 20) |
//! | `Relu`, `Add`, `Flatten`, `Softmax` | `Relu`, `Add`, `Flatten` (axis 1), `Softmax` (axis 1) |
//! | `Dropout` | nothing (inference) |
//!
//! Every layer of `nn` exports; only the training-only nodes (labels, loss) do not.

use std::collections::{HashMap, HashSet};

use crate::graph::NamedTensors;
use crate::model::checkpoint::Checkpoint;
use crate::graph::{Graph, NodeId, Op};
use crate::kernels::activation::Activation;
use crate::{Error, Result};

/// The ONNX operator set the export targets.
pub const OPSET: i64 = 13;
/// IR version 7 is the one that introduced opset 13 (onnx.proto: `IR_VERSION_2020_5_8`).
pub const IR_VERSION: i64 = 7;
/// Name of the graph input: images `[N, 1, 28, 28]` (for the MNIST models), normalised.
pub const INPUT: &str = "input";
/// Name of the graph output.
pub const OUTPUT: &str = "logits";
/// The symbolic batch dimension of input and output.
pub const BATCH_DIM: &str = "N";

/// Field numbers from onnx.proto (ONNX 1.x; these never change once published).
mod field {
    pub const MODEL_IR_VERSION: u32 = 1;
    pub const MODEL_PRODUCER_NAME: u32 = 2;
    pub const MODEL_PRODUCER_VERSION: u32 = 3;
    pub const MODEL_GRAPH: u32 = 7;
    pub const MODEL_OPSET_IMPORT: u32 = 8;
    pub const MODEL_METADATA_PROPS: u32 = 14;
    pub const OPSET_DOMAIN: u32 = 1;
    pub const OPSET_VERSION: u32 = 2;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_NAME: u32 = 2;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_INPUT: u32 = 11;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_NAME: u32 = 3;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTRIBUTE_NAME: u32 = 1;
    pub const ATTRIBUTE_F: u32 = 2;
    pub const ATTRIBUTE_I: u32 = 3;
    pub const ATTRIBUTE_INTS: u32 = 8;
    pub const ATTRIBUTE_TYPE: u32 = 20;
    /// AttributeProto.AttributeType values.
    pub const ATTRIBUTE_TYPE_FLOAT: u64 = 1;
    pub const ATTRIBUTE_TYPE_INT: u64 = 2;
    pub const ATTRIBUTE_TYPE_INTS: u64 = 7;
    pub const TENSOR_DIMS: u32 = 1;
    pub const TENSOR_DATA_TYPE: u32 = 2;
    pub const TENSOR_NAME: u32 = 8;
    pub const TENSOR_RAW_DATA: u32 = 9;
    /// TensorProto.DataType.FLOAT
    pub const DATA_TYPE_FLOAT: u64 = 1;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const VALUE_INFO_TYPE: u32 = 2;
    pub const TYPE_TENSOR_TYPE: u32 = 1;
    pub const TENSOR_TYPE_ELEM_TYPE: u32 = 1;
    pub const TENSOR_TYPE_SHAPE: u32 = 2;
    pub const SHAPE_DIM: u32 = 1;
    pub const DIM_VALUE: u32 = 1;
    pub const DIM_PARAM: u32 = 2;
    pub const ENTRY_KEY: u32 = 1;
    pub const ENTRY_VALUE: u32 = 2;
}
use field::*;

/// A protobuf message being written: fields are appended in call order.
/// Wire types: 0 (varint), 2 (length-delimited) and 5 (32-bit, for float attributes) are
/// all ONNX export needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message(Vec<u8>);

impl Message {
    /// An empty message.
    pub fn new() -> Message {
        Message::default()
    }

    /// A varint field (int32, int64, enum, bool). Negative int64s take ten bytes, as
    /// protobuf encodes them (two's complement).
    pub fn varint(mut self, field: u32, value: u64) -> Message {
        put_varint(&mut self.0, u64::from(field) << 3);
        put_varint(&mut self.0, value);
        self
    }

    /// A signed int64 field.
    pub fn int(self, field: u32, value: i64) -> Message {
        self.varint(field, value as u64)
    }

    /// A length-delimited field: bytes, a string or an embedded message.
    pub fn bytes(mut self, field: u32, bytes: &[u8]) -> Message {
        put_varint(&mut self.0, (u64::from(field) << 3) | 2);
        put_varint(&mut self.0, bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }

    /// A float field: wire type 5, the four bytes of the f32 in little-endian order.
    pub fn float(mut self, field: u32, value: f32) -> Message {
        put_varint(&mut self.0, (u64::from(field) << 3) | 5);
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A string field (UTF-8, length-delimited).
    pub fn string(self, field: u32, s: &str) -> Message {
        self.bytes(field, s.as_bytes())
    }

    /// An embedded message field.
    pub fn message(self, field: u32, m: &Message) -> Message {
        self.bytes(field, &m.0)
    }

    /// The encoded message.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn attr_int(name: &str, v: i64) -> Message {
    Message::new().string(ATTRIBUTE_NAME, name).int(ATTRIBUTE_I, v).varint(ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_INT)
}

fn attr_float(name: &str, v: f32) -> Message {
    Message::new().string(ATTRIBUTE_NAME, name).float(ATTRIBUTE_F, v).varint(ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_FLOAT)
}

fn attr_ints(name: &str, vs: &[usize]) -> Message {
    let m = Message::new().string(ATTRIBUTE_NAME, name);
    vs.iter().fold(m, |m, &v| m.int(ATTRIBUTE_INTS, v as i64)).varint(ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_INTS)
}

fn tensor(name: &str, dims: &[usize], data: &[f32]) -> Message {
    let m = dims.iter().fold(Message::new(), |m, &d| m.int(TENSOR_DIMS, d as i64));
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect(); // raw_data is little-endian
    m.varint(TENSOR_DATA_TYPE, DATA_TYPE_FLOAT).string(TENSOR_NAME, name).bytes(TENSOR_RAW_DATA, &raw)
}

/// A float tensor value `[N, dims[1..]]` with a symbolic batch dimension.
fn value_info(name: &str, dims: &[usize]) -> Message {
    let batch = Message::new().string(DIM_PARAM, BATCH_DIM);
    let shape = dims[1..].iter().fold(Message::new().message(SHAPE_DIM, &batch), |m, &d| {
        m.message(SHAPE_DIM, &Message::new().int(DIM_VALUE, d as i64))
    });
    let tensor_type = Message::new().varint(TENSOR_TYPE_ELEM_TYPE, DATA_TYPE_FLOAT).message(TENSOR_TYPE_SHAPE, &shape);
    let ty = Message::new().message(TYPE_TENSOR_TYPE, &tensor_type);
    Message::new().string(VALUE_INFO_NAME, name).message(VALUE_INFO_TYPE, &ty)
}

/// Builds the ONNX graph node by node.
struct Builder<'a> {
    graph: &'a Graph,
    output: NodeId,
    params: HashMap<&'a str, &'a [f32]>,
    /// ONNX value name of each visited kiln node (dropout shares its input's name).
    names: HashMap<NodeId, String>,
    /// Initializer name of each (parameter, dims) written so far.
    initializer_names: HashMap<(NodeId, Vec<usize>), String>,
    used: HashSet<String>,
    nodes: Vec<Message>,
    initializers: Vec<Message>,
    op_types: Vec<&'static str>,
}

impl<'a> Builder<'a> {
    fn fresh(&mut self, want: &str) -> String {
        let mut name = want.to_string();
        let mut i = 1;
        while !self.used.insert(name.clone()) {
            name = format!("{want}_{i}");
            i += 1;
        }
        name
    }

    /// The value name of input `k` of `id`. A parameter or state (BatchNorm's running
    /// statistics) becomes an initializer the first time it is used with these `dims` (its
    /// own shape when `None`).
    fn input(&mut self, id: NodeId, k: usize, dims: Option<Vec<usize>>) -> String {
        let src = self.graph.node(id).inputs[k];
        let node = self.graph.node(src);
        if !matches!(node.op, Op::Param { .. } | Op::State { .. }) {
            return self.names[&src].clone();
        }
        let dims = dims.unwrap_or_else(|| node.shape.clone());
        if let Some(name) = self.initializer_names.get(&(src, dims.clone())) {
            return name.clone();
        }
        let name = if dims == node.shape { self.fresh(&node.name) } else { self.fresh(&format!("{}_reshaped", node.name)) };
        self.initializers.push(tensor(&name, &dims, self.params[node.name.as_str()]));
        self.initializer_names.insert((src, dims), name.clone());
        name
    }

    /// A scalar float initializer named after `name` (a constant of a decomposed op).
    fn constant(&mut self, name: &str, value: f32) -> String {
        let name = self.fresh(name);
        self.initializers.push(tensor(&name, &[], &[value]));
        name
    }

    /// Appends an ONNX node named `name` writing `output`.
    fn node(&mut self, name: &str, output: &str, op_type: &'static str, inputs: &[String], attrs: Vec<Message>) {
        let m = inputs.iter().fold(Message::new(), |m, i| m.string(NODE_INPUT, i));
        let m = m.string(NODE_OUTPUT, output).string(NODE_NAME, name).string(NODE_OP_TYPE, op_type);
        self.nodes.push(attrs.iter().fold(m, |m, a| m.message(NODE_ATTRIBUTE, a)));
        self.op_types.push(op_type);
    }

    /// Adds an intermediate ONNX node of kiln node `id` (one step of a decomposed op),
    /// named `{id's name}/{step}`; returns its output's name.
    fn step(&mut self, id: NodeId, step: &str, op_type: &'static str, inputs: &[String]) -> String {
        let name = format!("{}/{step}", self.graph.node(id).name);
        let output = self.fresh(&name);
        self.node(&name, &output, op_type, inputs, vec![]);
        output
    }

    /// Adds the ONNX node computing `id`; its output is [`OUTPUT`] for the graph's output.
    fn emit(&mut self, id: NodeId, op_type: &'static str, inputs: Vec<String>, attrs: Vec<Message>) {
        let name = &self.graph.node(id).name;
        let output = if id == self.output { OUTPUT.to_string() } else { self.fresh(name) };
        self.node(name, &output, op_type, &inputs, attrs);
        self.names.insert(id, output);
    }
}

/// An exported model: the bytes of the ONNX `ModelProto` and what it contains.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The serialised `ModelProto`, ready to write to a `.onnx` file.
    pub bytes: Vec<u8>,
    /// The ONNX node types in graph order, e.g. `["Conv", "Relu", ...]`.
    pub op_types: Vec<&'static str>,
    /// Number of initializers: parameters, running statistics, reshaped copies of separate
    /// biases and the scalar constants of decomposed ops (GELU).
    pub initializers: usize,
}

/// Exports `graph` from its input up to `output` (whose value is named [`OUTPUT`]), with
/// `params` (names and shapes as `graph.params()`, then `graph.state()`: a checkpoint's
/// tensors) as initializers and `metadata` as the
/// model's `metadata_props`. The graph's batch size does not matter: the batch dimension
/// is exported as the symbol [`BATCH_DIM`]. A node ONNX export does not cover (labels,
/// loss) is an `Error::Unsupported` naming it.
pub fn export(graph: &Graph, output: NodeId, params: &NamedTensors, metadata: &[(String, String)]) -> Result<Exported> {
    let given: HashMap<&str, (&[usize], &[f32])> = params.iter().map(|(n, s, d)| (n.as_str(), (s.as_slice(), d.as_slice()))).collect();
    let mut values = HashMap::new();
    for (_, name, shape) in graph.params().into_iter().chain(graph.state()) {
        match given.get(name) {
            Some((s, d)) if *s == shape && d.len() == shape.iter().product::<usize>() => values.insert(name, *d),
            Some((s, d)) => return Err(Error::shape("onnx export", format!("tensor '{name}' is {s:?} with {} values, the graph needs {shape:?}", d.len()))),
            None => return Err(Error::shape("onnx export", format!("no value for parameter or state '{name}' {shape:?}"))),
        };
    }
    // The nodes the output depends on; node ids are in topological order by construction.
    let mut needed = vec![false; graph.nodes.len()];
    let mut stack = vec![output];
    while let Some(id) = stack.pop() {
        if !std::mem::replace(&mut needed[id.0], true) {
            stack.extend(&graph.node(id).inputs);
        }
    }
    let mut b = Builder { graph, output, params: values, names: HashMap::new(), initializer_names: HashMap::new(), used: HashSet::new(), nodes: vec![], initializers: vec![], op_types: vec![] };
    b.used.extend([INPUT.to_string(), OUTPUT.to_string()]);
    let mut input = None;
    for id in (0..graph.nodes.len()).map(NodeId).filter(|id| needed[id.0]) {
        let node = graph.node(id);
        let window = |kernel: [usize; 2], stride: usize, pad: usize| {
            vec![attr_ints("kernel_shape", &kernel), attr_ints("strides", &[stride, stride]), attr_ints("pads", &[pad; 4])]
        };
        match node.op {
            Op::Input if input.is_none() => {
                input = Some(value_info(INPUT, &node.shape));
                b.names.insert(id, INPUT.to_string());
                continue;
            }
            Op::Input => return Err(Error::unsupported(format!("node '{}'", node.name), "a second graph input: ONNX export takes one")),
            Op::Param { .. } | Op::State { .. } => continue,
            Op::Dropout { .. } if id != output => {
                let x = b.input(id, 0, None);
                b.names.insert(id, x);
                continue;
            }
            Op::Dropout { .. } => {
                let x = b.input(id, 0, None);
                b.emit(id, "Identity", vec![x], vec![]);
            }
            Op::Conv2d { stride, pad } => {
                let ins = (0..node.inputs.len()).map(|k| b.input(id, k, None)).collect();
                let w = &graph.node(node.inputs[1]).shape; // [K, C, R, S]
                b.emit(id, "Conv", ins, window([w[2], w[3]], stride, pad));
            }
            Op::MaxPool2d { k, stride, pad } => {
                let x = b.input(id, 0, None);
                b.emit(id, "MaxPool", vec![x], window([k, k], stride, pad));
            }
            Op::AvgPool2d { k, stride, pad } => {
                // kiln's mean counts the padding as zeros (PyTorch's count_include_pad=True)
                let x = b.input(id, 0, None);
                let mut attrs = window([k, k], stride, pad);
                attrs.push(attr_int("count_include_pad", 1));
                b.emit(id, "AveragePool", vec![x], attrs);
            }
            Op::GlobalAvgPool => {
                let x = b.input(id, 0, None);
                b.emit(id, "GlobalAveragePool", vec![x], vec![]);
            }
            Op::Linear => {
                let ins = (0..node.inputs.len()).map(|k| b.input(id, k, None)).collect();
                b.emit(id, "Gemm", ins, vec![attr_int("transB", 1)]);
            }
            Op::Bias => {
                // [C] broadcast on axis 1 of [N, C, ...]: ONNX broadcasts trailing axes, so [C, 1, ...].
                let mut dims = vec![1; node.shape.len() - 1];
                dims[0] = node.shape[1];
                let ins = vec![b.input(id, 0, None), b.input(id, 1, Some(dims))];
                b.emit(id, "Add", ins, vec![]);
            }
            Op::Add => {
                let ins = vec![b.input(id, 0, None), b.input(id, 1, None)];
                b.emit(id, "Add", ins, vec![]);
            }
            Op::Relu => {
                let x = b.input(id, 0, None);
                b.emit(id, "Relu", vec![x], vec![]);
            }
            Op::Flatten => {
                let x = b.input(id, 0, None);
                b.emit(id, "Flatten", vec![x], vec![attr_int("axis", 1)]);
            }
            Op::Softmax { temperature } => {
                let mut x = b.input(id, 0, None);
                if temperature != 1.0 {
                    // a calibrated model's probabilities: softmax(logits / T)
                    let t = b.constant(&format!("{}.temperature", node.name), temperature);
                    x = b.step(id, "div", "Div", &[x, t]);
                }
                b.emit(id, "Softmax", vec![x], vec![attr_int("axis", 1)]);
            }
            Op::BatchNorm { eps, .. } => {
                // inference: y = (x - running_mean) / sqrt(running_var + eps) * weight + bias;
                // inputs x, weight, bias, running_mean, running_var are ONNX's X, scale, B,
                // input_mean, input_var (num_batches_tracked is for training only)
                let ins = (0..5).map(|k| b.input(id, k, None)).collect();
                b.emit(id, "BatchNormalization", ins, vec![attr_float("epsilon", eps)]);
            }
            Op::Activation(act) => {
                let x = b.input(id, 0, None);
                match act {
                    Activation::LeakyRelu { slope } => b.emit(id, "LeakyRelu", vec![x], vec![attr_float("alpha", slope)]),
                    Activation::Tanh => b.emit(id, "Tanh", vec![x], vec![]),
                    Activation::Sigmoid => b.emit(id, "Sigmoid", vec![x], vec![]),
                    Activation::Gelu => {
                        // x * Phi(x) = x * (1 + erf(x / sqrt 2)) / 2: opset 13 has Erf, not Gelu
                        let name = node.name.clone();
                        let sqrt2 = b.constant(&format!("{name}.sqrt2"), std::f32::consts::SQRT_2);
                        let z = b.step(id, "div", "Div", &[x.clone(), sqrt2]);
                        let e = b.step(id, "erf", "Erf", &[z]);
                        let one = b.constant(&format!("{name}.one"), 1.0);
                        let p = b.step(id, "add", "Add", &[e, one]);
                        let xp = b.step(id, "mul", "Mul", &[x, p]);
                        let half = b.constant(&format!("{name}.half"), 0.5);
                        b.emit(id, "Mul", vec![xp, half], vec![]);
                    }
                }
            }
            Op::Labels | Op::SoftmaxCrossEntropy { .. } => {
                let what = format!("{:?} has no ONNX export: it exports inference graphs, up to the logits or probabilities", node.op);
                return Err(Error::unsupported(format!("node '{}'", node.name), what));
            }
        }
    }
    // an output that is the input itself or a parameter has no node to compute it
    let Some(input) = input.filter(|_| b.names.get(&output).is_some_and(|n| n == OUTPUT)) else {
        return Err(Error::unsupported(format!("node '{}'", graph.node(output).name), "the exported output must be computed from the graph input by an op"));
    };
    let mut g = Message::new();
    for n in &b.nodes {
        g = g.message(GRAPH_NODE, n);
    }
    g = g.string(GRAPH_NAME, "kiln");
    for t in &b.initializers {
        g = g.message(GRAPH_INITIALIZER, t);
    }
    g = g.message(GRAPH_INPUT, &input).message(GRAPH_OUTPUT, &value_info(OUTPUT, &graph.node(output).shape));
    let opset = Message::new().string(OPSET_DOMAIN, "").int(OPSET_VERSION, OPSET);
    let mut model = Message::new()
        .int(MODEL_IR_VERSION, IR_VERSION)
        .string(MODEL_PRODUCER_NAME, "kiln")
        .string(MODEL_PRODUCER_VERSION, env!("CARGO_PKG_VERSION"))
        .message(MODEL_GRAPH, &g)
        .message(MODEL_OPSET_IMPORT, &opset);
    for (k, v) in metadata {
        model = model.message(MODEL_METADATA_PROPS, &Message::new().string(ENTRY_KEY, k).string(ENTRY_VALUE, v));
    }
    Ok(Exported { bytes: model.into_bytes(), op_types: b.op_types, initializers: b.initializers.len() })
}

/// Exports a checkpoint's model up to its logits. `metadata_props` records how inputs are
/// normalised — `input = (pixel / 255 - mean) / std` under the keys `mean` and `std` — and
/// the model kind, training dataset and kiln version.
pub fn export_checkpoint(ck: &Checkpoint) -> Result<Exported> {
    let model = ck.model.build_inference(1)?;
    let metadata = [
        ("model", ck.model.name().to_string()),
        ("mean", ck.mean.to_string()),
        ("std", ck.std.to_string()),
        ("normalisation", "input = (pixel / 255 - mean) / std, pixels 0..255 of 28x28 grayscale, white digit on black".to_string()),
        ("dataset", ck.dataset.clone()),
        // the model's output is its logits: calibrated probabilities are softmax(logits / temperature)
        ("temperature", ck.temperature.to_string()),
        ("kiln_version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    let metadata: Vec<_> = metadata.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    export(&model.graph, model.logits, &ck.params, &metadata)
}
