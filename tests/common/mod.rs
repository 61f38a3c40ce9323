//! What the integration tests share: small models for the graph tests, the example
//! binaries and scratch directories for the CLI tests.
#![allow(dead_code)]

use kiln::graph::Graph;
use kiln::nn::{Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sequential};

pub const BATCH: usize = 8;

pub fn classifier(layers: Sequential, input: &[usize], seed: u64) -> Graph {
    let mut g = Graph::new(seed);
    let x = g.input("input", input).unwrap();
    let labels = g.labels("labels", input[0]);
    let logits = layers.build(&mut g, "", x).unwrap();
    g.softmax_cross_entropy("loss", logits, labels).unwrap();
    g
}

pub fn small_mlp() -> Graph {
    let layers = Sequential::new()
        .add("flatten", Flatten)
        .add("fc1", Linear::new(36, 16))
        .add("relu", ReLU)
        .add("dropout", Dropout(0.25))
        .add("fc2", Linear::new(16, 4));
    classifier(layers, &[BATCH, 1, 6, 6], 11)
}

pub fn small_cnn() -> Graph {
    let layers = Sequential::new()
        .add("conv1", Conv2d::new(1, 3, 3).padding(1))
        .add("relu1", ReLU)
        .add("pool1", MaxPool2d { kernel: 2, stride: 2 })
        .add("conv2", Conv2d::new(3, 4, 3).padding(1))
        .add("relu2", ReLU)
        .add("pool2", MaxPool2d { kernel: 2, stride: 2 })
        .add("flatten", Flatten)
        .add("fc1", Linear::new(4 * 2 * 2, 8))
        .add("relu3", ReLU)
        .add("fc2", Linear::new(8, 5));
    classifier(layers, &[BATCH, 1, 8, 8], 12)
}

/// The path of an example binary built beside this test (`cargo test` builds examples).
pub fn example(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} not built (cargo test builds examples)", path.display());
    path
}

/// A fresh, empty directory `<CARGO_TARGET_TMPDIR>/<group>/<name>`.
pub fn scratch(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(group).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
