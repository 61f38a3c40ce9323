//! The per-kernel profile (`Executor::profile`): a row per plan step plus the optimizer,
//! the real FLOP counts, every dispatch of the step accounted for.

use kiln::graph::profile::step_flops;
use kiln::graph::{Executor, Mode, Step};
use kiln::nn::ModelKind;
use kiln::ops::gemm::GemmConfig;
use kiln::ops::optim::Optimizer;
use kiln::testing::{gpu, Rng};

use crate::common;

#[test]
fn the_profile_covers_every_dispatch_with_real_flop_counts() {
    let gpu = gpu();
    let batch = 16;
    let graph = ModelKind::Cnn.build(batch, 1).unwrap().graph;
    let mut exec = Executor::new(gpu, &graph, Mode::Train, Some(Optimizer::adam(1e-3)), &GemmConfig::default_for(gpu.info()), None).unwrap();
    let mut rng = Rng::new(3);
    exec.write_input(&rng.vec(batch * 784)).unwrap();
    exec.write_labels(&(0..batch as u32).map(|i| i % 10).collect::<Vec<_>>()).unwrap();
    let profile = exec.profile(3).unwrap();
    println!("{}", profile.table());
    assert_eq!(profile.rows.len(), exec.plan.steps.len() + 1, "a row per plan step and the optimizer");
    assert_eq!(profile.dispatches(), exec.stats().dispatches_per_step);
    assert!(profile.rows.iter().all(|r| r.gpu_us.is_finite() && r.gpu_us >= 0.0 && !r.kernels.is_empty()));
    assert!(profile.gpu_step_us() > 0.0 && profile.wall_step_us > 0.0 && profile.record_us > 0.0);
    // conv1 forward: 2 FLOP x N x K x OH x OW x C x R x S
    let conv1 = profile.rows.iter().find(|r| r.step == "Conv2dForward conv1+relu1").expect("a conv1 row");
    assert_eq!(conv1.flops, 2.0 * (batch * 16 * 28 * 28 * 25) as f64);
    // fc1 forward and both of its gradients: 2 x N x 1568 x 128 each
    let fc1 = 2.0 * (batch * 1568 * 128) as f64;
    let linear: Vec<f64> = exec.plan.steps.iter().filter(|s| matches!(s, Step::LinearForward { .. })).map(|s| step_flops(&exec.plan, s)).collect();
    assert_eq!(linear, [fc1, 2.0 * (batch * 128 * 10) as f64]);
    let table = profile.table();
    assert!(table.contains("GFLOP/s") && table.contains("wall time per step"), "{table}");
}

#[test]
fn train_mnist_profile_prints_the_table_or_json_and_checks_its_flag() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(common::example("train_mnist"))
            .args(["--dataset", "mnist10k", "--data-dir", data, "--model", "mlp", "--quiet"])
            .args(extra)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, out, err) = run(&["--profile", "2", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("--profile --json prints JSON");
    let rows = json["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["step"] == "LinearForward fc1+relu1") && rows.last().unwrap()["step"] == "optimizer", "{json}");
    let (code, out, err) = run(&["--profile", "2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("GPU time per step") && out.contains("adam_step"), "{out}");
    let (code, _, err) = run(&["--profile", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--profile"), "{err}");
}

/// Issue 15's goal: the MNIST CNN's training step at batch 64, gather of a resident batch
/// and optimizer included, in at most 18 dispatches on the CPU adapters' family and on the
/// GPU families (their variants run here too: the count is the plan's, not the device's).
/// The GPU families run no pooling kernel: the pools' forwards run in the convolutions'
/// dispatches (ops/conv_shared.rs), their backwards in the stores of the dX kernels that
/// make their gradients (conv_shared, linear_backward_input_routed).
#[test]
fn the_mnist_cnn_step_takes_at_most_18_dispatches_on_every_family() {
    use kiln::kernels::data::ResidentDataset;
    let gpu = gpu();
    let batch = 64;
    let graph = ModelKind::Cnn.build(batch, 1).unwrap().graph;
    let mut rng = Rng::new(4);
    let pixels: Vec<u8> = (0..batch * 784).map(|_| rng.range(0, 255) as u8).collect();
    let labels: Vec<u8> = (0..batch as u8).map(|i| i % 10).collect();
    let data = ResidentDataset::upload(gpu, &pixels, &labels, 28, 28, 0.13, 0.31).unwrap();
    for (cfg, gpu_family) in [(GemmConfig::default_for(gpu.info()), false), (GemmConfig::TILED_32X64, true), (GemmConfig::TILED4_64X128, true)] {
        let mut exec = Executor::new(gpu, &graph, Mode::Train, Some(Optimizer::adam(1e-3)), &cfg, None).unwrap();
        exec.attach_dataset(&data, kiln::kernels::data::Augment::Off, 1).unwrap();
        let kernels: Vec<String> = exec.profile(1).unwrap().rows.iter().flat_map(|r| r.kernels.clone()).collect();
        let n = exec.stats().dispatches_per_step;
        assert_eq!(kernels.len(), n);
        assert!(n <= 18, "{}: {n} dispatches: {kernels:?}", cfg.name());
        if gpu_family {
            assert!(!kernels.iter().any(|k| k.starts_with("max_pool2d")), "{}: {kernels:?}", cfg.name());
        }
    }
}
