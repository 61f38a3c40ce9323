//! The model API (issue 14): checkpoints that describe their model, resume that is
//! bit-identical to the run that never stopped, saves that survive a kill.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kiln::checkpoint::Checkpoint;
use kiln::nn::{Conv2d, Flatten, Linear, MaxPool2d, Model, ModelKind, ReLU, Residual, Sequential};

use crate::common;
use crate::common::example;

fn scratch(name: &str) -> PathBuf {
    common::scratch("model_api", name)
}

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");



/// train_mnist with fixed (heuristic) kernels: bit-identical results need them.
fn train(args: &[&str]) -> Output {
    let out = Command::new(example("train_mnist")).args(["--data-dir", DATA, "--quiet"]).args(args).env("KILN_AUTOTUNE", "off").output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

fn ok(out: &Output) {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn resume_is_bit_identical_for_the_cnn_and_the_mlp_with_dropout() {
    let dir = scratch("resume");
    for model in ["mlp", "cnn"] {
        let p = |n: &str| dir.join(format!("{model}-{n}.safetensors")).display().to_string();
        let run = ["--dataset", "mnist10k", "--model", model, "--epochs", "2"];
        ok(&train(&[&run[..], &["--save", &p("a")]].concat()));
        ok(&train(&[&run[..], &["--stop-after", "1", "--save", &p("b")]].concat()));
        assert!(Path::new(&p("b.train-state")).exists(), "--stop-after leaves the training state");
        ok(&train(&["--resume", &p("b"), "--save", &p("c")]));
        let (a, c) = (Checkpoint::load(p("a").as_ref()).unwrap(), Checkpoint::load(p("c").as_ref()).unwrap());
        for ((name, _, x), (_, _, y)) in a.params.iter().zip(&c.params) {
            let same = x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits());
            assert!(same, "{model}: {name} differs between the straight run and the resumed one");
        }
        assert_eq!(fs::read(p("a")).unwrap(), fs::read(p("c")).unwrap(), "{model}: the files differ");
        // the finished run has nothing left to resume
        let out = train(&["--resume", &p("c")]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--resume") && err.contains("2 of its 2 epochs"), "{err}");
    }
}

#[test]
fn resume_refuses_run_flags_and_a_missing_state() {
    let dir = scratch("resume-bad");
    let ck = dir.join("m.safetensors");
    let model = ModelKind::Mlp.build(1, 3).unwrap();
    let params = model.graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.01; s.iter().product()])).collect();
    Checkpoint { model: ModelKind::Mlp.spec(), mean: 0.13, std: 0.31, dataset: "mnist10k".into(), temperature: 1.0, deskew: false, params }.save(&ck).unwrap();
    let out = train(&["--resume", ck.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no training state"), "{}", String::from_utf8_lossy(&out.stderr));
    // a run flag is compared with the recorded setting, so the missing state is what is said
    // (conflicting and equal flags: layer_digits' hardening_state::resume_takes_matching_flags_and_the_recorded_data)
    let out = train(&["--resume", ck.to_str().unwrap(), "--lr", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no training state"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = train(&["--dataset", "mnist10k", "--model", "mlp", "--epochs", "2", "--stop-after", "2", "--save", ck.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stop-after"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_checkpoint_describes_its_model_and_must_match_it() {
    let dir = scratch("describe");
    // a user-defined model with a residual block, not one of the built-in kinds
    let model = Model::new(
        "tiny-res",
        Sequential::new()
            .add("conv1", Conv2d::new(1, 4, 3).padding(1))
            .add("relu1", ReLU)
            .add("block1", Residual { body: Sequential::new().add("conv", Conv2d::new(4, 4, 3).padding(1)).add("relu", ReLU) })
            .add("pool", MaxPool2d { kernel: 2, stride: 2 })
            .add("flatten", Flatten)
            .add("fc", Linear::new(4 * 14 * 14, 10)),
    );
    let graph = model.build(1, 5).unwrap();
    let names: Vec<&str> = graph.graph.params().iter().map(|p| p.1).collect();
    assert_eq!(names, ["conv1.weight", "conv1.bias", "block1.conv.weight", "block1.conv.bias", "fc.weight", "fc.bias"]);
    let params: kiln::graph::NamedTensors =
        graph.graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.5; s.iter().product()])).collect();
    let path = dir.join("m.safetensors");
    let ck = Checkpoint { model: model.clone(), mean: 0.1, std: 0.3, dataset: "mnist10k".into(), temperature: 1.0, deskew: false, params };
    ck.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), ck, "the description round-trips");

    // tensors that do not fit the description are refused, naming the tensor
    let mut wrong = ck.clone();
    wrong.params[2].1 = vec![4, 4, 5, 5];
    wrong.params[2].2 = vec![0.5; 400];
    wrong.save(&path).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("block1.conv.weight") && err.contains("tiny-res"), "{err}");
    // a description that does not build is refused too
    let mut broken = ck.clone();
    broken.model.layers.layers[5].1 = Linear::new(17, 10).into();
    broken.save(&path).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("description"), "{err}");
}

#[test]
fn save_every_epoch_survives_a_kill_mid_save() {
    let dir = scratch("kill");
    let ck = dir.join("m.safetensors");
    let part = dir.join(".m.safetensors.part");
    let mut child = Command::new(example("train_mnist"))
        .args(["--data-dir", DATA, "--quiet", "--dataset", "mnist10k", "--model", "mlp", "--epochs", "30", "--save-every-epoch"])
        .args(["--save", ck.to_str().unwrap()])
        .env("KILN_AUTOTUNE", "off")
        .spawn()
        .unwrap();
    // Kill the moment a save is under way (its part file exists), or at the deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_part = false;
    while Instant::now() < deadline {
        if part.exists() {
            saw_part = true;
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("training ended before a save could be interrupted: {status}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("killed {} a save", if saw_part { "during" } else { "outside" });
    // whatever the moment, the checkpoint there is whole (or absent if the first save was hit)
    if ck.exists() {
        Checkpoint::load(&ck).expect("a killed save left a broken checkpoint");
    }
    // and the next save of the same target replaces the stale part file
    let out = Command::new(example("train_mnist"))
        .args(["--data-dir", DATA, "--quiet", "--dataset", "mnist10k", "--model", "mlp", "--epochs", "1", "--save", ck.to_str().unwrap()])
        .env("KILN_AUTOTUNE", "off")
        .output()
        .unwrap();
    ok(&out);
    assert!(!part.exists(), "a stale part file outlived the next save");
    Checkpoint::load(&ck).unwrap();
}

#[test]
fn the_classifier_folds_batchnorm_and_keeps_the_probabilities() {
    use kiln::graph::{Executor, Mode};
    use kiln::nn::BatchNorm;
    use kiln::ops::gemm::GemmConfig;
    use kiln::testing::{assert_close, gpu, Rng, BATCH_NORM};
    let gpu = gpu();
    let mut rng = Rng::new(31);
    // conv -> BN (folded), then a BN right after the pooling (nothing to fold into: kept)
    let model = Model {
        name: "bn-fold".into(),
        input: [1, 8, 8],
        layers: Sequential::new()
            .add("conv1", Conv2d::new(1, 3, 3).padding(1))
            .add("bn1", BatchNorm { channels: 3 })
            .add("relu1", ReLU)
            .add("pool", MaxPool2d { kernel: 2, stride: 2 })
            .add("bn2", BatchNorm { channels: 3 })
            .add("flatten", Flatten)
            .add("fc", Linear::new(48, 10)),
    };
    let graph = model.build(1, 2).unwrap().graph;
    let mut tensors: kiln::graph::NamedTensors = Vec::new();
    for (_, name, shape) in graph.params().into_iter().chain(graph.state()) {
        let n: usize = shape.iter().product();
        let values = if name.ends_with("running_var") {
            rng.vec(n).iter().map(|v| 0.5 + v.abs()).collect()
        } else if name.ends_with("num_batches_tracked") {
            vec![100.0]
        } else {
            rng.vec(n)
        };
        tensors.push((name.to_string(), shape.to_vec(), values));
    }
    let ck = Checkpoint { model: model.clone(), mean: 0.1, std: 0.3, dataset: "mnist10k".into(), temperature: 1.0, deskew: false, params: tensors };
    let images = rng.vec(5 * 64);
    let folded = kiln::Classifier::new(gpu, ck.clone(), 4).unwrap().classify_tensor(&images).unwrap();
    let inference = model.build_inference(5).unwrap();
    let exec = Executor::new(gpu, &inference.graph, Mode::Eval, None, &GemmConfig::default_for(gpu.info()), None).unwrap();
    let mut exec = exec;
    exec.write_model(&ck.params).unwrap();
    exec.write_input(&images).unwrap();
    exec.run_step(0).unwrap();
    let want = exec.read_node(inference.probs).unwrap();
    assert_close("folded vs unfolded probabilities", &folded.concat(), &want, BATCH_NORM);
}

/// Hardening III §7: sizes read from a model description are checked, not wrapped. A
/// padding of 2^63 + 2 made (H + 2·pad) wrap to H + 4, so the model built as padding 2.
#[test]
fn a_huge_size_in_a_model_description_is_an_error_naming_the_layer_and_field() {
    let spec = kiln::nn::ModelKind::Cnn.spec().to_json();
    assert!(spec.contains("\"padding\":2"), "{spec}");
    for (field, huge) in [("padding", "\"padding\":9223372036854775810"), ("stride", "\"stride\":18446744073709551615")] {
        let from = if field == "padding" { "\"padding\":2" } else { "\"stride\":1" };
        let model = kiln::nn::Model::from_json(&spec.replacen(from, huge, 1)).expect("still a description");
        let e = model.build(8, 1).err().unwrap_or_else(|| panic!("a {field} of {huge} built")).to_string();
        assert!(e.contains("conv1") && e.contains(field), "{e}");
        assert!(model.build_inference(8).is_err(), "{field}");
    }
}

#[test]
fn a_huge_linear_layer_or_input_in_a_model_description_is_an_error_naming_the_field() {
    let wide = Model::new("wide", Sequential::new().add("flatten", Flatten).add("fc1", Linear::new(784, 1 << 40)));
    let e = wide.build(8, 1).err().expect("a linear layer of 2^40 outputs built").to_string();
    assert!(e.contains("fc1") && e.contains("outputs"), "{e}");
    // 2^62 * 784 wraps a u64: the product is checked, not computed.
    let wrapping = Model::new("wrapping", Sequential::new().add("flatten", Flatten).add("fc1", Linear::new(784, 1 << 62)));
    assert!(wrapping.build_inference(8).is_err());
    let mut tall = Model::new("tall", Sequential::new().add("flatten", Flatten).add("fc1", Linear::new(784, 10)));
    tall.input = [1, 1 << 40, 28];
    let e = tall.build(8, 1).err().expect("an input of 2^40 rows built").to_string();
    assert!(e.contains("input") && e.contains("dimension"), "{e}");
}

#[test]
fn a_checkpoint_describing_100000_layers_is_refused_before_the_gpu_sees_it() {
    let mut layers = Sequential::new().add("flatten", Flatten).add("fc1", Linear::new(784, 10));
    for i in 0..100_000 {
        layers = layers.add(&format!("relu{i}"), ReLU);
    }
    let model = Model::new("deep", layers);
    let e = model.build(1, 3).err().expect("a 100,000-layer model built").to_string();
    assert!(e.contains("1000") && e.contains(" nodes") && e.contains(&kiln::graph::MAX_NODES.to_string()), "{e}");
    // As a checkpoint: its description is what `predict`, `evaluate` and `export` read.
    let spec = Model::new("shallow", Sequential::new().add("flatten", Flatten).add("fc1", Linear::new(784, 10)).add("relu0", ReLU));
    let params: kiln::graph::NamedTensors = spec.build(1, 3).unwrap().graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.1; s.iter().product()])).collect();
    let ck = scratch("deep").join("deep.safetensors");
    Checkpoint { model, mean: 0.13, std: 0.31, dataset: "mnist10k".into(), temperature: 1.0, deskew: false, params }.save(&ck).unwrap();
    let out = common::output_within(
        Command::new(example("predict")).args(["--model", ck.to_str().unwrap(), "no-such-image.png"]),
        Duration::from_secs(60),
        "predict with a 100,000-layer checkpoint",
    );
    let (code, _, err) = common::text(&out);
    assert!(code > 0 && err.contains("deep.safetensors") && err.contains(&kiln::graph::MAX_NODES.to_string()), "exit {code}: {err}");
}

#[test]
fn parameters_beyond_the_adapters_buffer_limit_are_refused_before_they_are_drawn() {
    let gpu = kiln::testing::gpu();
    let most = gpu.limits().max_buffer_size;
    // Layers of 4096 x 4096 (64 MiB each, each under the binding limit) until the sum is over.
    let layers = (most / (4 * 4096 * 4096) + 1) as usize;
    let mut seq = Sequential::new().add("flatten", Flatten).add("fc0", Linear::new(784, 4096));
    for i in 1..=layers {
        seq = seq.add(&format!("fc{i}"), Linear::new(4096, 4096));
    }
    let model = Model::new("heavy", seq.add("out", Linear::new(4096, 10)));
    let inference = model.build_inference(1).unwrap();
    let start = Instant::now();
    let e = kiln::graph::Executor::new(gpu, &inference.graph, kiln::graph::Mode::Eval, None, &kiln::ops::gemm::GemmConfig::default_for(gpu.info()), None)
        .err()
        .expect("parameters over max_buffer_size allocated")
        .to_string();
    assert!(e.contains("parameters") && e.contains(&most.to_string()), "{e}");
    assert!(start.elapsed() < Duration::from_secs(10), "refused only after {:?}", start.elapsed());
}

/// A classifier runs every batch size exactly, each size's executor built once in one arena
/// that grows with the largest batch met: calls of 1, 3, 40, 64 and 100 images (the arena
/// grown from 1 to 4 to 64 rows, 100 run as 64 + 36) read what one call of all of them reads.
#[test]
fn the_classifier_reads_the_same_whatever_the_batches_it_is_given() {
    use kiln::testing::{assert_close, gpu, Rng, REDUCTION};
    let gpu = gpu();
    let mut rng = Rng::new(33);
    let model = kiln::nn::ModelKind::Cnn.spec();
    let params = model.build(1, 3).unwrap().graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), rng.vec(s.iter().product()))).collect();
    let ck = Checkpoint { model, mean: 0.13, std: 0.31, dataset: "mnist".into(), temperature: 1.0, deskew: false, params };
    let sizes = [1, 3, 40, 64, 100, 3];
    let images = rng.vec(sizes.iter().sum::<usize>() * 784);
    let mut one = kiln::Classifier::new(gpu, ck.clone(), 64).unwrap();
    let mut calls = Vec::new();
    let mut rest = &images[..];
    for n in sizes {
        let (these, tail) = rest.split_at(n * 784);
        calls.extend(one.classify_tensor(these).unwrap());
        rest = tail;
    }
    let all = kiln::Classifier::new(gpu, ck, 64).unwrap().classify_tensor(&images).unwrap();
    assert_eq!(calls.len(), all.len());
    assert_close("one call against calls of 1 to 100", &calls.concat(), &all.concat(), REDUCTION);
}
