//! ONNX export: the protobuf writer's bytes, the structure of exported models and of each
//! op's ONNX form read
//! back with a small decoder written from onnx.proto's field numbers (independently of the
//! exporter's constants), and the export example's handling of bad input. The numeric
//! comparison with onnxruntime is `scripts/check-onnx.sh`.

use std::process::Command;

use kiln::checkpoint::Checkpoint;
use kiln::graph::{Graph, Init, NodeId};
use kiln::nn::{Activation, AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear, MaxPool2d, Model, ModelKind, ReLU, Residual, Sequential};
use kiln::onnx::{export, export_checkpoint, Message};
use kiln::rng::Rng;
use kiln::Error;

use crate::common::example;

/// A decoded field: a varint, a length-delimited payload or a 32-bit value.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    Int(u64),
    Bytes(Vec<u8>),
    Fixed32([u8; 4]),
}

fn varint(b: &mut &[u8]) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[0];
        *b = &b[1..];
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Decodes one message level: (field number, value) in order. Only wire types 0, 2 and 5.
fn decode(mut b: &[u8]) -> Vec<(u32, Field)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let value = match key & 7 {
            0 => Field::Int(varint(&mut b)),
            2 => {
                let n = varint(&mut b) as usize;
                let (payload, rest) = b.split_at(n);
                b = rest;
                Field::Bytes(payload.to_vec())
            }
            5 => {
                let (v, rest) = b.split_at(4);
                b = rest;
                Field::Fixed32(v.try_into().unwrap())
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push(((key >> 3) as u32, value));
    }
    out
}

fn ints(m: &[(u32, Field)], field: u32) -> Vec<i64> {
    m.iter().filter(|f| f.0 == field).map(|f| match &f.1 { Field::Int(v) => *v as i64, x => panic!("field {field}: {x:?}") }).collect()
}

fn bytes(m: &[(u32, Field)], field: u32) -> Vec<Vec<u8>> {
    m.iter().filter(|f| f.0 == field).map(|f| match &f.1 { Field::Bytes(v) => v.clone(), x => panic!("field {field}: {x:?}") }).collect()
}

fn strings(m: &[(u32, Field)], field: u32) -> Vec<String> {
    bytes(m, field).into_iter().map(|b| String::from_utf8(b).unwrap()).collect()
}

fn string(m: &[(u32, Field)], field: u32) -> String {
    strings(m, field).pop().unwrap_or_default()
}

fn messages(m: &[(u32, Field)], field: u32) -> Vec<Vec<(u32, Field)>> {
    bytes(m, field).iter().map(|b| decode(b)).collect()
}

fn message(m: &[(u32, Field)], field: u32) -> Vec<(u32, Field)> {
    messages(m, field).pop().unwrap_or_else(|| panic!("no field {field}"))
}

#[test]
fn encoder_writes_protobuf_wire_format() {
    // protobuf's encoding guide: field 1 = 150 is 08 96 01; field 2 = "testing" is 12 07 ...
    assert_eq!(Message::new().varint(1, 150).into_bytes(), [0x08, 0x96, 0x01]);
    assert_eq!(Message::new().string(2, "testing").into_bytes(), b"\x12\x07testing");
    // an embedded message: field 3 holding the first one
    assert_eq!(Message::new().message(3, &Message::new().varint(1, 150)).into_bytes(), [0x1a, 0x03, 0x08, 0x96, 0x01]);
    // field 20 needs a two-byte key (20 << 3 = 160); -1 as int64 is ten bytes
    assert_eq!(Message::new().varint(20, 7).into_bytes(), [0xa0, 0x01, 0x07]);
    let minus_one = Message::new().int(3, -1).into_bytes();
    assert_eq!(minus_one, [0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(decode(&minus_one), [(3, Field::Int(u64::MAX))]);
    // u64::MAX round-trips through the test decoder too
    assert_eq!(decode(&Message::new().varint(1, u64::MAX).into_bytes()), [(1, Field::Int(u64::MAX))]);
    // a float is wire type 5: key (2 << 3) | 5, then the f32's little-endian bytes (1.0 = 0x3f800000)
    assert_eq!(Message::new().float(2, 1.0).into_bytes(), [0x15, 0x00, 0x00, 0x80, 0x3f]);
    assert_eq!(decode(&Message::new().float(2, -0.5).into_bytes()), [(2, Field::Fixed32((-0.5f32).to_le_bytes()))]);
}

fn random_checkpoint(model: ModelKind, seed: u64) -> Checkpoint {
    random_checkpoint_of(model.spec(), seed)
}

/// Random values for the parameters and the state of `graph`, in a checkpoint's order.
fn random_tensors(graph: &Graph, seed: u64) -> kiln::graph::NamedTensors {
    let mut rng = Rng::new(seed);
    graph.params().into_iter().chain(graph.state()).map(|(_, n, s)| (n.to_string(), s.to_vec(), rng.vec(s.iter().product()))).collect()
}

fn random_checkpoint_of(model: kiln::nn::Model, seed: u64) -> Checkpoint {
    let params = random_tensors(&model.build(1, 0).unwrap().graph, seed);
    Checkpoint { model, mean: 0.1307, std: 0.3081, dataset: "mnist10k".into(), temperature: 1.0, deskew: false, params }
}

/// Dims of a ValueInfoProto: a symbolic dimension as its name, others as numbers.
fn value_dims(vi: &[(u32, Field)]) -> Vec<String> {
    let tensor_type = message(&message(vi, 2), 1);
    assert_eq!(ints(&tensor_type, 1), [1], "elem_type FLOAT");
    let shape = message(&tensor_type, 2);
    messages(&shape, 1).iter().map(|d| if ints(d, 1).is_empty() { string(d, 2) } else { ints(d, 1)[0].to_string() }).collect()
}

/// Attribute `name` of a NodeProto as its ints (INT or INTS), checking the type tag.
fn attr(node: &[(u32, Field)], name: &str) -> Vec<i64> {
    let a = messages(node, 5).into_iter().find(|a| string(a, 1) == name).unwrap_or_else(|| panic!("no attribute {name}"));
    match ints(&a, 20)[..] {
        [2] => ints(&a, 3),
        [7] => ints(&a, 8),
        ref t => panic!("attribute {name} has type {t:?}"),
    }
}

/// Float attribute `name` of a NodeProto, checking the type tag (FLOAT = 1, field f = 2).
fn attr_f(node: &[(u32, Field)], name: &str) -> f32 {
    let a = messages(node, 5).into_iter().find(|a| string(a, 1) == name).unwrap_or_else(|| panic!("no attribute {name}"));
    assert_eq!(ints(&a, 20), [1], "attribute {name} has type FLOAT");
    match a.iter().find(|f| f.0 == 2) {
        Some((_, Field::Fixed32(b))) => f32::from_le_bytes(*b),
        x => panic!("attribute {name}: f is {x:?}"),
    }
}

#[test]
fn cnn_and_mlp_export_parse_back_with_the_checkpoint_parameters() {
    let cases = [
        (ModelKind::Cnn, &["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Relu", "Gemm"][..]),
        // dropout is the identity at inference: no node
        (ModelKind::Mlp, &["Flatten", "Gemm", "Relu", "Gemm"][..]),
    ];
    for (kind, ops) in cases {
        let ck = random_checkpoint(kind, 7);
        let exported = export_checkpoint(&ck).unwrap();
        assert_eq!(exported.op_types, ops);
        let model = decode(&exported.bytes);
        assert_eq!(ints(&model, 1), [7], "ir_version");
        let opset = message(&model, 8);
        assert_eq!((string(&opset, 1), ints(&opset, 2)), (String::new(), vec![13]));
        let meta: Vec<(String, String)> = messages(&model, 14).iter().map(|e| (string(e, 1), string(e, 2))).collect();
        assert!(meta.contains(&("mean".into(), "0.1307".into())) && meta.contains(&("std".into(), "0.3081".into())), "{meta:?}");
        assert!(meta.contains(&("model".into(), kind.name().into())), "{meta:?}");

        let graph = message(&model, 7);
        let nodes = messages(&graph, 1);
        assert_eq!(nodes.iter().map(|n| string(n, 4)).collect::<Vec<_>>(), ops);
        // initializers: the checkpoint's tensors, in order, with dims, FLOAT and LE raw data
        let inits = messages(&graph, 5);
        assert_eq!(inits.len(), ck.params.len());
        for (t, (name, shape, values)) in inits.iter().zip(&ck.params) {
            assert_eq!(string(t, 8), *name);
            assert_eq!(ints(t, 1), shape.iter().map(|&d| d as i64).collect::<Vec<_>>(), "{name}");
            assert_eq!(ints(t, 2), [1], "{name}: data_type FLOAT");
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(bytes(t, 9), [raw], "{name}");
        }
        // wiring: every node reads the input, an initializer or an earlier node's output
        let mut known: Vec<String> = ck.params.iter().map(|p| p.0.clone()).chain(["input".to_string()]).collect();
        for n in &nodes {
            for i in strings(n, 1) {
                assert!(known.contains(&i), "node {} reads unknown value {i}", string(n, 3));
            }
            known.extend(strings(n, 2));
        }
        assert_eq!(strings(nodes.last().unwrap(), 2), ["logits"]);
        let (input, output) = (message(&graph, 11), message(&graph, 12));
        assert_eq!((string(&input, 1), value_dims(&input)), ("input".into(), vec!["N".to_string(), "1".into(), "28".into(), "28".into()]));
        assert_eq!((string(&output, 1), value_dims(&output)), ("logits".into(), vec!["N".to_string(), "10".into()]));
        for n in &nodes {
            match string(n, 4).as_str() {
                "Conv" => {
                    assert_eq!((attr(n, "kernel_shape"), attr(n, "strides"), attr(n, "pads")), (vec![5, 5], vec![1, 1], vec![2; 4]));
                    assert_eq!(strings(n, 1).len(), 3, "x, W, B");
                }
                "MaxPool" => assert_eq!((attr(n, "kernel_shape"), attr(n, "strides"), attr(n, "pads")), (vec![2, 2], vec![2, 2], vec![0; 4])),
                "Gemm" => assert_eq!(attr(n, "transB"), [1]),
                "Flatten" => assert_eq!(attr(n, "axis"), [1]),
                _ => {}
            }
        }
    }
}

/// Conv and linear with their biases as separate `Bias` nodes, a parameter used twice,
/// and a loss after the logits.
fn separate_bias_graph() -> (Graph, kiln::graph::NodeId, kiln::graph::NodeId) {
    let mut g = Graph::new(5);
    let x = g.input("input", &[2, 2, 5, 5]).unwrap();
    let labels = g.labels("labels", 2);
    let w = g.param("conv.weight", &[3, 2, 3, 3], Init::Constant(0.5));
    let c = g.conv2d("conv", x, w, None, 1, 1).unwrap();
    let cb = g.param("conv.bias", &[3], Init::Constant(0.5));
    let c = g.bias("conv_bias", c, cb).unwrap();
    let f = g.flatten("flatten", c);
    let w2 = g.param("fc.weight", &[75, 75], Init::Constant(0.5));
    let h = g.linear("fc", f, w2, None).unwrap();
    let h = g.linear("fc_again", h, w2, None).unwrap();
    let b2 = g.param("fc.bias", &[75], Init::Constant(0.5));
    let logits = g.bias("fc_bias", h, b2).unwrap();
    let loss = g.softmax_cross_entropy("loss", logits, labels).unwrap();
    (g, logits, loss)
}

#[test]
fn separate_biases_are_reshaped_shared_parameters_written_once_and_losses_refused() {
    let (g, logits, loss) = separate_bias_graph();
    let params: kiln::graph::NamedTensors = g.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.25; s.iter().product()])).collect();
    let exported = export(&g, logits, &params, &[]).unwrap();
    assert_eq!(exported.op_types, ["Conv", "Add", "Flatten", "Gemm", "Gemm", "Add"]);
    let graph = message(&decode(&exported.bytes), 7);
    let inits: Vec<(String, Vec<i64>)> = messages(&graph, 5).iter().map(|t| (string(t, 8), ints(t, 1))).collect();
    // the conv bias broadcasts over [N, C, H, W] as [C, 1, 1]; the linear one as [C]
    let expect = [("conv.weight", vec![3, 2, 3, 3]), ("conv.bias_reshaped", vec![3, 1, 1]), ("fc.weight", vec![75, 75]), ("fc.bias", vec![75])];
    assert_eq!(inits, expect.map(|(n, d)| (n.to_string(), d)));
    let gemms: Vec<Vec<String>> = messages(&graph, 1).iter().filter(|n| string(n, 4) == "Gemm").map(|n| strings(n, 1)).collect();
    assert_eq!(gemms[0][1], "fc.weight");
    assert_eq!(gemms[1], [strings(&messages(&graph, 1)[3], 2)[0].clone(), "fc.weight".into()]);

    // past the logits: the labels are not exportable, and the error names the node
    match export(&g, loss, &params, &[]) {
        Err(e @ Error::Unsupported { .. }) => assert!(e.to_string().contains("node 'labels'"), "{e}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // a parameter missing from the values is named
    let err = export(&g, logits, &params[..3].to_vec(), &[]).unwrap_err().to_string();
    assert!(err.contains("fc.bias"), "{err}");
    let mut wrong = params.clone();
    wrong[0].1 = vec![3, 2, 9];
    let err = export(&g, logits, &wrong, &[]).unwrap_err().to_string();
    assert!(err.contains("conv.weight") && err.contains("[3, 2, 9]"), "{err}");
}


/// x [2, 3, 6, 6] through what `op` builds, exported up to its result with random
/// parameters and state: the decoded GraphProto, its op types and the tensors given.
fn export_one(op: impl FnOnce(&mut Graph, NodeId) -> NodeId) -> (Vec<(u32, Field)>, Vec<&'static str>, kiln::graph::NamedTensors) {
    let mut g = Graph::new(3);
    let x = g.input("input", &[2, 3, 6, 6]).unwrap();
    let y = op(&mut g, x);
    let tensors = random_tensors(&g, 11);
    let exported = export(&g, y, &tensors, &[]).unwrap();
    (message(&decode(&exported.bytes), 7), exported.op_types, tensors)
}

/// The initializers of a GraphProto by name: (dims, values).
fn initializers(graph: &[(u32, Field)]) -> Vec<(String, (Vec<i64>, Vec<f32>))> {
    messages(graph, 5)
        .iter()
        .map(|t| {
            assert_eq!(ints(t, 2), [1], "{}: data_type FLOAT", string(t, 8));
            let raw = bytes(t, 9).pop().unwrap();
            (string(t, 8), (ints(t, 1), raw.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
        })
        .collect()
}

fn inputs_outputs(node: &[(u32, Field)]) -> (Vec<String>, Vec<String>) {
    (strings(node, 1), strings(node, 2))
}

#[test]
fn leaky_relu_tanh_sigmoid_export_as_their_onnx_ops_and_gelu_through_erf() {
    for (act, op) in [(Activation::LeakyRelu { slope: 0.2 }, "LeakyRelu"), (Activation::Tanh, "Tanh"), (Activation::Sigmoid, "Sigmoid")] {
        let (graph, op_types, _) = export_one(|g, x| g.activation("act", x, act).unwrap());
        assert_eq!(op_types, [op]);
        let node = &messages(&graph, 1)[0];
        assert_eq!((string(node, 4), inputs_outputs(node)), (op.to_string(), (vec!["input".into()], vec!["logits".into()])));
        match act {
            Activation::LeakyRelu { slope } => assert_eq!(attr_f(node, "alpha"), slope),
            _ => assert!(messages(node, 5).is_empty(), "{op} has no attributes"),
        }
        assert!(messages(&graph, 5).is_empty(), "{op}: no initializers");
    }

    // GELU (erf form): x * (1 + erf(x / sqrt 2)) * 0.5, the constants scalar initializers
    let (graph, op_types, _) = export_one(|g, x| g.gelu("gelu", x));
    assert_eq!(op_types, ["Div", "Erf", "Add", "Mul", "Mul"]);
    let consts: Vec<(String, (Vec<i64>, Vec<f32>))> = initializers(&graph);
    let value = |name: &str| consts.iter().find(|c| c.0 == name).map(|c| c.1.clone()).unwrap_or_else(|| panic!("no initializer {name}"));
    let nodes = messages(&graph, 1);
    let io: Vec<(Vec<String>, Vec<String>)> = nodes.iter().map(|n| inputs_outputs(n)).collect();
    let out = |i: usize| io[i].1[0].clone();
    assert_eq!(io[0].0[0], "input");
    assert_eq!(value(&io[0].0[1]), (vec![], vec![std::f32::consts::SQRT_2]), "Div by sqrt 2");
    assert_eq!(io[1].0, [out(0)], "Erf of the quotient");
    assert_eq!((io[2].0[0].clone(), value(&io[2].0[1])), (out(1), (vec![], vec![1.0])), "1 + erf");
    assert_eq!(io[3].0, ["input".to_string(), out(2)], "x * (1 + erf)");
    assert_eq!((io[4].0[0].clone(), value(&io[4].0[1])), (out(3), (vec![], vec![0.5])), "* 0.5");
    assert_eq!(io[4].1, ["logits"]);
    assert_eq!(consts.len(), 3);
}

#[test]
fn average_and_global_pooling_export_with_padding_counted() {
    let (graph, op_types, _) = export_one(|g, x| g.avg_pool2d("pool", x, 3, 2, 1).unwrap());
    assert_eq!(op_types, ["AveragePool"]);
    let node = &messages(&graph, 1)[0];
    assert_eq!((attr(node, "kernel_shape"), attr(node, "strides"), attr(node, "pads")), (vec![3, 3], vec![2, 2], vec![1; 4]));
    // kiln's mean divides by k*k, padding included (ONNX's default leaves it out)
    assert_eq!(attr(node, "count_include_pad"), [1]);
    assert_eq!(value_dims(&message(&graph, 12)), ["N", "3", "3", "3"]);

    let (graph, op_types, _) = export_one(|g, x| g.global_avg_pool("gap", x).unwrap());
    assert_eq!(op_types, ["GlobalAveragePool"]);
    assert_eq!(inputs_outputs(&messages(&graph, 1)[0]), (vec!["input".into()], vec!["logits".into()]));
    assert_eq!(value_dims(&message(&graph, 12)), ["N", "3", "1", "1"]);
}

#[test]
fn batch_norm_exports_as_batch_normalization_with_its_running_statistics() {
    // BatchNorm2d on the input, and BatchNorm1d after a linear layer
    let (graph, op_types, tensors) = export_one(|g, x| {
        let h = g.batch_norm("bn", x, 3, 0.1, 1e-3).unwrap();
        let f = g.flatten("flatten", h);
        let w = g.param("fc.weight", &[4, 108], Init::Constant(0.5));
        let y = g.linear("fc", f, w, None).unwrap();
        g.batch_norm("bn1d", y, 4, 0.1, 1e-5).unwrap()
    });
    assert_eq!(op_types, ["BatchNormalization", "Flatten", "Gemm", "BatchNormalization"]);
    let nodes = messages(&graph, 1);
    let stats = |bn: &str| ["weight", "bias", "running_mean", "running_var"].map(|t| format!("{bn}.{t}"));
    let mut want = vec!["input".to_string()];
    want.extend(stats("bn"));
    assert_eq!(strings(&nodes[0], 1), want, "X, scale, B, input_mean, input_var");
    assert_eq!(attr_f(&nodes[0], "epsilon"), 1e-3);
    let mut want = strings(&nodes[2], 2);
    want.extend(stats("bn1d"));
    assert_eq!(strings(&nodes[3], 1), want);
    assert_eq!(attr_f(&nodes[3], "epsilon"), 1e-5);
    assert_eq!(strings(&nodes[3], 2), ["logits"]);
    // the running statistics are initializers holding the given values; the step count,
    // which only training reads, is not exported
    let inits = initializers(&graph);
    let expect: Vec<(String, (Vec<i64>, Vec<f32>))> = tensors
        .iter()
        .filter(|t| !t.0.ends_with("num_batches_tracked"))
        .map(|(n, s, v)| (n.clone(), (s.iter().map(|&d| d as i64).collect(), v.clone())))
        .collect();
    let mut sorted = inits.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expect_sorted = expect.clone();
    expect_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(sorted, expect_sorted);
    assert_eq!(tensors.len(), inits.len() + 2, "two num_batches_tracked left out");
}

#[test]
fn a_residual_add_reads_the_block_input_and_the_body_output() {
    let (graph, op_types, _) = export_one(|g, x| {
        let w = g.param("block.conv.weight", &[3, 3, 3, 3], Init::Constant(0.5));
        let h = g.conv2d("block.conv", x, w, None, 1, 1).unwrap();
        let h = g.relu("block.relu", h);
        g.add("block.add", x, h).unwrap()
    });
    assert_eq!(op_types, ["Conv", "Relu", "Add"]);
    let nodes = messages(&graph, 1);
    assert_eq!(inputs_outputs(&nodes[2]), (vec!["input".to_string(), strings(&nodes[1], 2)[0].clone()], vec!["logits".to_string()]));
}

/// A residual CNN as examples/custom_model.rs builds it (BatchNorm, residual add, global
/// average pooling).
fn tiny_resnet() -> Model {
    let block = Sequential::new()
        .add("conv1", Conv2d::new(16, 16, 3).padding(1))
        .add("bn1", BatchNorm { channels: 16 })
        .add("relu", ReLU)
        .add("conv2", Conv2d::new(16, 16, 3).padding(1))
        .add("bn2", BatchNorm { channels: 16 });
    let layers = Sequential::new()
        .add("stem", Conv2d::new(1, 16, 3).padding(1).stride(2))
        .add("bn", BatchNorm { channels: 16 })
        .add("relu1", ReLU)
        .add("block1", Residual { body: block })
        .add("relu2", ReLU)
        .add("pool", GlobalAvgPool)
        .add("flatten", Flatten)
        .add("fc", Linear::new(16, 10));
    Model::new("tiny-resnet", layers)
}

/// Every layer `nn` describes, in one model.
fn every_layer() -> Model {
    let block = Sequential::new().add("conv", Conv2d::new(4, 4, 3).padding(1)).add("bn", BatchNorm { channels: 4 }).add("gelu", Activation::Gelu);
    let layers = Sequential::new()
        .add("conv", Conv2d::new(1, 4, 3).padding(1))
        .add("bn", BatchNorm { channels: 4 })
        .add("leaky", Activation::LeakyRelu { slope: 0.1 })
        .add("block", Residual { body: block })
        .add("avg", AvgPool2d { kernel: 2, stride: 2, padding: 0 })
        .add("sigmoid", Activation::Sigmoid)
        .add("max", MaxPool2d { kernel: 2, stride: 2 })
        .add("relu", ReLU)
        .add("gap", GlobalAvgPool)
        .add("flatten", Flatten)
        .add("fc1", Linear::new(4, 8))
        .add("bn1d", BatchNorm { channels: 8 })
        .add("tanh", Activation::Tanh)
        .add("dropout", Dropout(0.2))
        .add("fc2", Linear::new(8, 10));
    Model::new("every-layer", layers)
}

#[test]
fn lenet5_cnn_bn_the_residual_net_and_every_layer_export_with_their_tensors() {
    let (conv_bn_relu, bn) = (["Conv", "BatchNormalization", "Relu"], "BatchNormalization");
    let cnn_bn: Vec<&str> = [&conv_bn_relu[..], &conv_bn_relu, &["MaxPool"], &conv_bn_relu, &conv_bn_relu, &["MaxPool", "Flatten", "Gemm", bn, "Relu", "Gemm"]].concat();
    let cases: [(Model, Vec<&str>); 4] = [
        (ModelKind::Lenet5.spec(), vec!["Conv", "Tanh", "AveragePool", "Conv", "Tanh", "AveragePool", "Flatten", "Gemm", "Tanh", "Gemm", "Tanh", "Gemm"]),
        (ModelKind::CnnBn.spec(), cnn_bn),
        (tiny_resnet(), vec!["Conv", bn, "Relu", "Conv", bn, "Relu", "Conv", bn, "Add", "Relu", "GlobalAveragePool", "Flatten", "Gemm"]),
        (every_layer(), vec!["Conv", bn, "LeakyRelu", "Conv", bn, "Div", "Erf", "Add", "Mul", "Mul", "Add", "AveragePool", "Sigmoid",
            "MaxPool", "Relu", "GlobalAveragePool", "Flatten", "Gemm", bn, "Tanh", "Gemm"]),
    ];
    for (model, ops) in cases {
        let name = model.name().to_string();
        let ck = random_checkpoint_of(model, 5);
        let exported = export_checkpoint(&ck).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(exported.op_types, ops, "{name}");
        let graph = message(&decode(&exported.bytes), 7);
        let nodes = messages(&graph, 1);
        assert_eq!(nodes.iter().map(|n| string(n, 4)).collect::<Vec<_>>(), ops, "{name}");
        // every checkpoint tensor but the step counts is an initializer holding its values
        let inits = initializers(&graph);
        for (t, shape, values) in ck.params.iter().filter(|t| !t.0.ends_with("num_batches_tracked")) {
            let dims = shape.iter().map(|&d| d as i64).collect();
            assert!(inits.contains(&(t.clone(), (dims, values.clone()))), "{name}: {t} is not an initializer with its values");
        }
        // wiring: every node reads the input, an initializer or an earlier node's output
        let mut known: Vec<String> = inits.iter().map(|i| i.0.clone()).chain(["input".to_string()]).collect();
        for n in &nodes {
            for i in strings(n, 1) {
                assert!(known.contains(&i), "{name}: node {} reads unknown value {i}", string(n, 3));
            }
            known.extend(strings(n, 2));
        }
        assert_eq!(strings(nodes.last().unwrap(), 2), ["logits"], "{name}");
        assert_eq!(value_dims(&message(&graph, 12)), ["N", "10"], "{name}");
    }
}

#[test]
fn a_node_with_no_export_is_refused_by_name_the_loss_as_the_output() {
    // the layers all export: what cannot is a training-only node, asked for as the output
    let built = ModelKind::CnnBn.build(2, 0).unwrap();
    let tensors = random_tensors(&built.graph, 1);
    assert!(export(&built.graph, built.logits, &tensors, &[]).is_ok());
    let err = export(&built.graph, built.loss, &tensors, &[]).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("node 'labels'"), "{err}");
    // the running statistics are needed as much as the parameters
    let without_state: kiln::graph::NamedTensors = tensors.iter().filter(|t| !t.0.contains("running_var")).cloned().collect();
    let err = export(&built.graph, built.logits, &without_state, &[]).unwrap_err().to_string();
    assert!(err.contains("bn1.running_var"), "{err}");
}

fn run_export(args: &[&str]) -> (i32, String) {
    let out = Command::new(example("export")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn export_example_writes_the_model_and_rejects_bad_input_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("kiln-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck_path = dir.join("m.safetensors");
    let ck = random_checkpoint(ModelKind::Mlp, 3);
    ck.save(&ck_path).unwrap();
    let (ck_s, onnx) = (ck_path.to_str().unwrap(), dir.join("m.onnx"));
    let onnx_s = onnx.to_str().unwrap();

    let (code, stderr) = run_export(&["--model", ck_s, "--onnx", onnx_s]);
    assert_eq!(code, 0, "{stderr}");
    assert!(std::fs::read(&onnx).unwrap() == export_checkpoint(&ck).unwrap().bytes, "the file holds the library's export");
    assert!(!dir.join(".m.onnx.part").exists(), "the temporary file is renamed away");

    let missing = dir.join("missing.safetensors");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let (missing, garbage) = (missing.to_str().unwrap(), garbage.to_str().unwrap());
    let unwritable = "/nonexistent-kiln-dir/m.onnx";
    for (args, expect) in [
        (vec!["--model", missing, "--onnx", onnx_s], "--model"),
        (vec!["--model", garbage, "--onnx", onnx_s], "not a kiln checkpoint"),
        (vec!["--model", ck_s, "--onnx", unwritable], "--onnx"),
        (vec!["--model", ck_s, "--onnx", ck_s], "--onnx"),
        (vec!["--model", ck_s, "--onnx", onnx_s, "--logits", onnx_s], "--logits"),
    ] {
        let (code, stderr) = run_export(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expect) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    assert_eq!(Checkpoint::load(&ck_path).unwrap(), ck, "the checkpoint is untouched");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_calibrated_softmax_exports_as_a_division_by_its_temperature() {
    let flat = |g: &mut Graph, x: NodeId| g.flatten("flat", x);
    let (_, plain, _) = export_one(|g, x| {
        let f = flat(g, x);
        g.softmax("probs", f).unwrap()
    });
    assert_eq!(plain, ["Flatten", "Softmax"]);
    let (graph, op_types, _) = export_one(|g, x| {
        let f = flat(g, x);
        g.softmax_tempered("probs", f, 1.75).unwrap()
    });
    assert_eq!(op_types, ["Flatten", "Div", "Softmax"]);
    let nodes = messages(&graph, 1);
    let (div_in, div_out) = inputs_outputs(&nodes[1]);
    assert_eq!(initializers(&graph), [(div_in[1].clone(), (vec![], vec![1.75]))], "the temperature, a scalar");
    assert_eq!(inputs_outputs(&nodes[2]).0, div_out, "softmax of the quotient");
}
