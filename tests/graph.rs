//! The graph scheduler end to end: GPU training steps against the CPU interpreter of the
//! same plan, summed gradients against finite differences through a whole graph, the
//! memory planner under poisoning, and the one-submit / no-readback contract.

use kiln::graph::cpu::CpuExecutor;
use kiln::graph::{Executor, Graph, Mode};
use kiln::nn::{Conv2d, Layer, Linear};
use kiln::ops::gemm::GemmConfig;
use kiln::ops::optim::{Optimizer, Schedule};
use kiln::testing::{assert_close, gpu, Rng, FINITE_DIFF, TRAINING};

mod common;
use common::{small_cnn, small_mlp, BATCH};

fn batches(steps: usize, pixels: usize, classes: u32, seed: u64) -> Vec<(Vec<f32>, Vec<u32>)> {
    let mut rng = Rng::new(seed);
    (0..steps).map(|_| (rng.vec(BATCH * pixels), (0..BATCH).map(|_| rng.range(0, classes as usize - 1) as u32).collect())).collect()
}

/// Trains `graph` for the given batches on the GPU and on the CPU; compares each step's
/// loss and the final weights.
fn gpu_matches_cpu(graph: &Graph, opt: Optimizer, data: &[(Vec<f32>, Vec<u32>)]) {
    let gpu = gpu();
    for (name, cfg) in GemmConfig::ALL {
        let mut exec = Executor::new(gpu, graph, Mode::Train, Some(opt), &cfg, None).unwrap();
        let mut cpu = CpuExecutor::new(graph, Mode::Train, Some(opt)).unwrap();
        for (step, (x, y)) in data.iter().enumerate() {
            exec.write_input(x).unwrap();
            exec.write_labels(y).unwrap();
            exec.reset_metrics().unwrap();
            exec.run_step(0).unwrap();
            let gpu_loss = exec.read_metrics().unwrap().loss_sum;
            let cpu_loss = cpu.run_step(x, y).unwrap().unwrap();
            assert_close(&format!("{name} loss at step {step}"), &[gpu_loss], &[cpu_loss as f32], TRAINING);
        }
        for ((n, _, w), (_, want)) in exec.read_params().unwrap().iter().zip(cpu.params()) {
            assert_close(&format!("{name} {n} after {} steps", data.len()), w, &want, TRAINING);
        }
    }
}

#[test]
fn mlp_with_dropout_trains_like_the_cpu_reference() {
    // held for 4 steps, decaying over 4, then 0: the executor's step words reach the kernel
    let opt = Optimizer::adam(1e-2).with_schedule(Schedule::Cosine { hold: 4, total: 8 });
    gpu_matches_cpu(&small_mlp(), opt, &batches(10, 36, 4, 1));
}

#[test]
fn cnn_trains_like_the_cpu_reference() {
    gpu_matches_cpu(&small_cnn(), Optimizer::sgd(0.05, 0.9), &batches(10, 64, 5, 2));
}

/// x -> fc1 -> h; h is used twice (relu(h) + h), and fc2's weight twice (fc2 and fc3 share it).
/// Layers with their bias as a separate node: linear/conv without bias, then `bias`.
fn separate_bias_graph() -> Graph {
    use kiln::graph::Init;
    let mut g = Graph::new(5);
    let x = g.input("input", &[BATCH, 2, 5, 5]).unwrap();
    let labels = g.labels("labels", BATCH);
    let w = g.param("conv.weight", &[3, 2, 3, 3], Init::KaimingUniform { fan_in: 18 });
    let c = g.conv2d("conv", x, w, None, 1, 1).unwrap();
    let cb = g.param("conv.bias", &[3], Init::KaimingUniform { fan_in: 18 });
    let c = g.bias("conv_bias", c, cb).unwrap();
    let f = g.flatten("flatten", c);
    let w2 = g.param("fc.weight", &[4, 75], Init::KaimingUniform { fan_in: 75 });
    let l = g.linear("fc", f, w2, None).unwrap();
    let b2 = g.param("fc.bias", &[4], Init::KaimingUniform { fan_in: 75 });
    let logits = g.bias("fc_bias", l, b2).unwrap();
    g.softmax_cross_entropy("loss", logits, labels).unwrap();
    g
}

#[test]
fn bias_nodes_train_like_the_cpu_reference() {
    gpu_matches_cpu(&separate_bias_graph(), Optimizer::adam(1e-2), &batches(6, 50, 4, 7));
}

fn shared_graph() -> Graph {
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

#[test]
fn gradients_of_reused_tensors_are_summed() {
    let gpu = gpu();
    let graph = shared_graph();
    let mut rng = Rng::new(4);
    let x = rng.vec(20);
    let y = vec![0u32, 2, 1, 2];
    // SGD with lr 1 and no momentum: w_after = w_before - grad
    let mut exec = Executor::new(gpu, &graph, Mode::Train, Some(Optimizer::sgd(1.0, 0.0)), &GemmConfig::default_for(gpu.info()), None).unwrap();
    let before = exec.read_params().unwrap();
    exec.write_input(&x).unwrap();
    exec.write_labels(&y).unwrap();
    exec.run_step(0).unwrap();
    let after = exec.read_params().unwrap();
    let mut cpu = CpuExecutor::new(&graph, Mode::Eval, None).unwrap();
    let h = 1e-2f32;
    for ((name, _, w0), (_, _, w1)) in before.iter().zip(&after) {
        let grad: Vec<f32> = w0.iter().zip(w1).map(|(a, b)| a - b).collect();
        let numeric: Vec<f32> = (0..w0.len())
            .map(|i| {
                let mut loss = |d: f32| {
                    let mut w = w0.clone();
                    w[i] += d;
                    cpu.set_param(name, w);
                    cpu.run_step(&x, &y).unwrap().unwrap() / 4.0
                };
                let g = ((loss(h) - loss(-h)) / (2.0 * h as f64)) as f32;
                cpu.set_param(name, w0.clone());
                g
            })
            .collect();
        assert_close(&format!("gradient of {name}"), &grad, &numeric, FINITE_DIFF);
    }
}

/// Every layer of issue 14's first batch in one model, and a stride-2 convolution whose
/// input needs a gradient (conv2: its forward, dX and dW all run):
/// conv1 (s1 p1) -> leaky_relu(0.1) -> conv2 (3x3, s2 p1: 9x9 -> 5x5) -> gelu ->
/// avg_pool2d(3, s2, p1: 5x5 -> 3x3, padded windows) -> tanh -> global_avg_pool [N,6,1,1] ->
/// flatten -> fc1 -> sigmoid -> fc2.
fn new_layers_graph() -> Graph {
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

#[test]
fn new_layers_and_strided_conv_train_like_the_cpu_reference() {
    // inputs over [-3, 3] so the activations see both tails
    let data: Vec<_> = batches(6, 2 * 81, 5, 9).into_iter().map(|(x, y)| (x.iter().map(|v| v * 3.0).collect(), y)).collect();
    gpu_matches_cpu(&new_layers_graph(), Optimizer::adam(1e-2), &data);
}

#[test]
fn new_layers_gpu_gradients_match_finite_differences() {
    // one SGD step with lr 1 on the GPU gives every parameter's gradient (w_before - w_after),
    // including conv1's, which flows through conv2's stride-2 input gradient
    let graph = new_layers_graph();
    let (x, y) = batches(1, 2 * 81, 5, 10).remove(0);
    gpu_gradients_match_finite_differences(&graph, &x, &y);
}

/// One GPU SGD step (lr 1, no momentum) against central differences of the CPU forward loss
/// (the batch mean) for every parameter.
fn gpu_gradients_match_finite_differences(graph: &Graph, x: &[f32], y: &[u32]) {
    let gpu = gpu();
    let mut exec = Executor::new(gpu, graph, Mode::Train, Some(Optimizer::sgd(1.0, 0.0)), &GemmConfig::default_for(gpu.info()), None).unwrap();
    let before = exec.read_params().unwrap();
    exec.write_input(x).unwrap();
    exec.write_labels(y).unwrap();
    exec.run_step(0).unwrap();
    let after = exec.read_params().unwrap();
    let mut cpu = CpuExecutor::new(graph, Mode::Eval, None).unwrap();
    let h = 1e-2f32;
    let batch = y.len() as f64;
    for ((name, _, w0), (_, _, w1)) in before.iter().zip(&after) {
        let grad: Vec<f32> = w0.iter().zip(w1).map(|(a, b)| a - b).collect();
        let numeric: Vec<f32> = (0..w0.len())
            .map(|i| {
                let mut loss = |d: f32| {
                    let mut w = w0.clone();
                    w[i] += d;
                    cpu.set_param(name, w);
                    cpu.run_step(x, y).unwrap().unwrap() / batch
                };
                let g = ((loss(h) - loss(-h)) / (2.0 * h as f64)) as f32;
                cpu.set_param(name, w0.clone());
                g
            })
            .collect();
        assert_close(&format!("gradient of {name}"), &grad, &numeric, FINITE_DIFF);
    }
}

#[test]
fn the_planner_never_aliases_live_tensors() {
    let gpu = gpu();
    let graph = small_cnn();
    let cfg = GemmConfig::default_for(gpu.info());
    let opt = Optimizer::adam(1e-2);
    let mut plain = Executor::new(gpu, &graph, Mode::Train, Some(opt), &cfg, None).unwrap();
    let mut poisoned = Executor::new_poisoning_freed(gpu, &graph, Mode::Train, Some(opt), &cfg).unwrap();
    let stats = plain.stats();
    println!(
        "small CNN: {} activation buffers, {} bytes planned vs {} naive: reuse factor {:.2}",
        stats.activation_buffers,
        stats.planned_bytes,
        stats.naive_bytes,
        stats.reuse_factor()
    );
    assert!(stats.planned_bytes < stats.naive_bytes, "the planner should reuse memory");
    for (x, y) in batches(5, 64, 5, 5) {
        for e in [&mut plain, &mut poisoned] {
            e.write_input(&x).unwrap();
            e.write_labels(&y).unwrap();
            e.run_step(0).unwrap();
        }
    }
    for ((n, _, a), (_, _, b)) in plain.read_params().unwrap().iter().zip(poisoned.read_params().unwrap()) {
        assert_eq!(a, &b, "{n} differs when freed buffers are poisoned");
    }
}

#[test]
fn shape_mismatches_name_the_node() {
    let mut g = Graph::new(0);
    let x = g.input("input", &[2, 10]).unwrap();
    let err = Linear::new(12, 3).build(&mut g, "fc_bad", x).expect_err("10 features into a 12-input layer");
    assert!(err.to_string().contains("fc_bad"), "{err}");
    let img = g.input("img", &[1, 3, 8, 8]).unwrap();
    let err = Conv2d::new(1, 4, 3).build(&mut g, "conv_bad", img).expect_err("3 channels into a 1-channel conv");
    assert!(err.to_string().contains("conv_bad"), "{err}");
    let mut g = Graph::new(0);
    let x = g.input("input", &[2, 4]).unwrap();
    let y = g.relu("r", x);
    g.softmax("p", y).unwrap();
    let err = kiln::graph::lower(&g, Mode::Train).expect_err("no loss to train");
    assert!(err.to_string().contains("softmax_cross_entropy"), "{err}");
}
