//! ONNX export: the protobuf writer's bytes, the structure of exported CNN/MLP models read
//! back with a small decoder written from onnx.proto's field numbers (independently of the
//! exporter's constants), and the export example's handling of bad input. The numeric
//! comparison with onnxruntime is `scripts/check-onnx.sh`.

use std::process::Command;

use kiln::checkpoint::Checkpoint;
use kiln::graph::{Graph, Init};
use kiln::nn::ModelKind;
use kiln::onnx::{export, export_checkpoint, Message};
use kiln::rng::Rng;
use kiln::Error;

use crate::common::example;

/// A decoded field: a varint or a length-delimited payload.
#[derive(Clone, Debug, PartialEq)]
enum Field {
    Int(u64),
    Bytes(Vec<u8>),
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

/// Decodes one message level: (field number, value) in order. Only wire types 0 and 2.
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
}

fn random_checkpoint(model: ModelKind, seed: u64) -> Checkpoint {
    let mut rng = Rng::new(seed);
    let graph = model.build(1, 0).unwrap().graph;
    let params = graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), rng.vec(s.iter().product()))).collect();
    Checkpoint { model: model.spec(), mean: 0.1307, std: 0.3081, dataset: "mnist10k".into(), temperature: 1.0, params }
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
