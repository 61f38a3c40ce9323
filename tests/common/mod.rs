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
        .add("fc1", Linear::new(4 * 2 * 2, 20))
        .add("relu3", ReLU)
        .add("fc2", Linear::new(20, 5));
    classifier(layers, &[BATCH, 1, 8, 8], 12)
}

/// `small_cnn` with 8 and 16 channels: wide enough for the GPU families' direct
/// convolutions (ops/conv_shared.rs), each pool in its convolution's dispatch there.
pub fn wide_cnn() -> Graph {
    let layers = Sequential::new()
        .add("conv1", Conv2d::new(1, 8, 5).padding(2))
        .add("relu1", ReLU)
        .add("pool1", MaxPool2d { kernel: 2, stride: 2 })
        .add("conv2", Conv2d::new(8, 16, 3).padding(1))
        .add("relu2", ReLU)
        .add("pool2", MaxPool2d { kernel: 2, stride: 2 })
        .add("flatten", Flatten)
        .add("fc1", Linear::new(16 * 3 * 3, 5));
    classifier(layers, &[BATCH, 1, 12, 12], 13)
}

/// A value used twice (relu(h) + h) and a weight used twice (fc2, fc3).
pub fn shared_graph() -> Graph {
    let mut g = Graph::new(3);
    let x = g.input("input", &[4, 5]).unwrap();
    let labels = g.labels("labels", 4);
    let h = Linear::new(5, 6).build(&mut g, "fc1", x).unwrap();
    let r = g.relu("relu", h);
    let s = g.add("sum", r, h).unwrap();
    let w = g.param("shared.weight", &[6, 6], kiln::graph::Init::KaimingUniform { fan_in: 6 });
    let a = g.linear("fc2", s, w, None).unwrap();
    let b = g.linear("fc3", a, w, None).unwrap();
    let logits = Linear::new(6, 3).build(&mut g, "head", b).unwrap();
    g.softmax_cross_entropy("loss", logits, labels).unwrap();
    g
}

/// Every layer of issue 14's first batch in one model, and a stride-2 convolution whose
/// input needs a gradient (conv2: its forward, dX and dW all run):
/// conv1 (s1 p1) -> leaky_relu(0.1) -> conv2 (3x3, s2 p1: 9x9 -> 5x5) -> gelu ->
/// avg_pool2d(3, s2, p1: 5x5 -> 3x3, padded windows) -> tanh -> global_avg_pool [N,6,1,1] ->
/// flatten -> fc1 -> sigmoid -> fc2.
pub fn new_layers_graph() -> Graph {
    let mut g = Graph::new(21);
    let x = g.input("input", &[BATCH, 2, 9, 9]).unwrap();
    let labels = g.labels("labels", BATCH);
    let h = Conv2d::new(2, 4, 3).padding(1).build(&mut g, "conv1", x).unwrap();
    let h = g.leaky_relu("leaky", h, 0.1).unwrap();
    let h = Conv2d { stride: 2, ..Conv2d::new(4, 6, 3).padding(1) }.build(&mut g, "conv2", h).unwrap();
    assert_eq!(g.node(h).shape, [BATCH, 6, 5, 5]);
    let h = g.gelu("gelu", h);
    let h = g.avg_pool2d("avg", h, 3, 2, 1).unwrap();
    assert_eq!(g.node(h).shape, [BATCH, 6, 3, 3]);
    let h = g.tanh("tanh", h);
    let h = g.global_avg_pool("gap", h).unwrap();
    assert_eq!(g.node(h).shape, [BATCH, 6, 1, 1], "AdaptiveAvgPool2d(1)'s shape");
    let h = g.flatten("flatten", h);
    let h = Linear::new(6, 8).build(&mut g, "fc1", h).unwrap();
    let h = g.sigmoid("sigmoid", h);
    let logits = Linear::new(8, 5).build(&mut g, "fc2", h).unwrap();
    g.softmax_cross_entropy("loss", logits, labels).unwrap();
    g
}

/// The path of an example binary built beside this test (`cargo test` builds examples).
pub fn example(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} not built (cargo test builds examples)", path.display());
    path
}

/// A checkpoint of `model` trained for one epoch on mnist10k (`KILN_AUTOTUNE=off`, the
/// default seed), once per build of `train_mnist` for every test binary and script of a run:
/// `<CARGO_TARGET_TMPDIR>/fixtures/<model>-mnist10k-1epoch-<build>.safetensors`, the build
/// named by the example's size and modification time. A lock file lets one process train it
/// while the others wait. The MLP reaches about 93%, the CNN about 96% of the 2,000 test images.
pub fn trained(model: &str) -> std::path::PathBuf {
    use std::time::UNIX_EPOCH;
    let exe = example("train_mnist");
    let meta = std::fs::metadata(&exe).unwrap();
    let built = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{model}-mnist10k-1epoch-{:x}-{built:x}.safetensors", meta.len()));
    let lock = std::fs::File::create(dir.join(format!("{model}.lock"))).unwrap();
    lock.lock().unwrap();
    if !path.exists() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
        let out = std::process::Command::new(&exe)
            .args(["--dataset", "mnist10k", "--data-dir", data, "--model", model, "--epochs", "1", "--quiet", "--save"])
            .arg(&path)
            .env("KILN_AUTOTUNE", "off")
            .output()
            .unwrap();
        assert!(out.status.success(), "training the {model} fixture: {}", String::from_utf8_lossy(&out.stderr));
    }
    path
}

/// A device of the test's own, for tests that read the device-wide memory counters (live and
/// peak bytes): on the shared device (`kiln::testing::gpu`) every other test of the binary
/// running beside them moves those.
pub fn own_gpu() -> kiln::Gpu {
    kiln::Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"))
}

/// A finished program's exit code (-1 when a signal ended it), standard output and error.
pub fn text(o: &std::process::Output) -> (i32, String, String) {
    (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// Runs `cmd` with its output piped, killed if it runs past `limit` (the test then fails,
/// naming `what`): for a program that could block on an input or run away with one.
pub fn output_within(cmd: &mut std::process::Command, limit: std::time::Duration, what: &str) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still ran after {:?}", start.elapsed());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// A fresh, empty directory `<CARGO_TARGET_TMPDIR>/<group>/<name>`.
pub fn scratch(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(group).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Centre of mass and ink box of a 28x28 digit.
pub fn centre_and_box(img: &image::GrayImage) -> ((f64, f64), u32) {
    let (mut sx, mut sy, mut sm, mut x0, mut x1, mut y0, mut y1) = (0.0, 0.0, 0.0, 28, 0, 28, 0);
    for (x, y, p) in img.enumerate_pixels() {
        let m = p[0] as f64;
        sx += m * x as f64;
        sy += m * y as f64;
        sm += m;
        if p[0] > 64 {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
    }
    ((sx / sm, sy / sm), (x1 - x0 + 1).max(y1 - y0 + 1))
}
