//! The graph scheduler end to end: GPU training steps against the CPU interpreter of the
//! same plan, summed gradients against finite differences through a whole graph, the
//! memory planner under poisoning, and the one-submit / no-readback contract.

use kiln::graph::cpu::CpuExecutor;
use kiln::graph::{Executor, Graph, Mode, NodeId, PoolRoute, Step};
use kiln::nn::{Conv2d, Layer, Linear};
use kiln::ops::gemm::GemmConfig;
use kiln::ops::optim::{Optimizer, Schedule};
use kiln::testing::{assert_close, gpu, Rng, BATCH_NORM, FINITE_DIFF, TRAINING};

use crate::common::{new_layers_graph, shared_graph, small_cnn, small_mlp, wide_cnn, BATCH};

fn batches(steps: usize, pixels: usize, classes: u32, seed: u64) -> Vec<(Vec<f32>, Vec<u32>)> {
    let mut rng = Rng::new(seed);
    (0..steps).map(|_| (rng.vec(BATCH * pixels), (0..BATCH).map(|_| rng.range(0, classes as usize - 1) as u32).collect())).collect()
}

/// Trains `graph` for the given batches on the GPU and on the CPU; compares each step's
/// loss and the final weights and state (BatchNorm's running statistics).
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
        for ((n, _, v), (_, want)) in exec.read_state().unwrap().iter().zip(cpu.state()) {
            assert_close(&format!("{name} {n} after {} steps", data.len()), v, &want, TRAINING);
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

#[test]
fn a_cnn_wide_enough_for_the_direct_convolutions_trains_like_the_cpu_reference() {
    // in every mode each max-pool runs in its convolution's step (and, where the kernel can,
    // dispatch: conv_shared on the GPU families, conv_direct on lavapipe)
    let count = |mode, f: fn(&Step) -> bool| kiln::graph::lower(&wide_cnn(), mode).unwrap().steps.iter().filter(|s| f(s)).count();
    for mode in [Mode::Train, Mode::Eval] {
        assert_eq!(count(mode, |s| matches!(s, Step::Conv2dForward { pool: Some(_), .. })), 2, "{mode:?}");
        assert_eq!(count(mode, |s| matches!(s, Step::MaxPoolForward { .. })), 0, "{mode:?}");
    }
    gpu_matches_cpu(&wide_cnn(), Optimizer::sgd(0.05, 0.9), &batches(6, 144, 5, 3));
}

/// With `KILN_DIRECT_CONV=unfused` (read when an executor chooses its kernels) the pools run
/// apart again: the two CNN tests above, in a child process of this test binary with it set.
#[test]
fn the_pools_apart_train_like_the_cpu_reference_too() {
    // the tests' names in this binary: this module's path without the crate's name
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let tests = ["cnn_trains_like_the_cpu_reference", "a_cnn_wide_enough_for_the_direct_convolutions_trains_like_the_cpu_reference"];
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(tests.map(|t| format!("{module}::{t}")))
        .args(["--exact", "--test-threads=1"])
        .env("KILN_DIRECT_CONV", "unfused")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("2 passed"), "{text}{}", String::from_utf8_lossy(&out.stderr));
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

#[test]
fn gradients_of_reused_tensors_are_summed() {
    let mut rng = Rng::new(4);
    let x = rng.vec(20);
    gpu_gradients_match_finite_differences(&shared_graph(), &x, &[0, 2, 1, 2], Mode::Eval, 1e-2);
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
    gpu_gradients_match_finite_differences(&graph, &x, &y, Mode::Eval, 1e-2);
}

#[test]
fn fused_steps_give_the_unfused_gradients_bit_for_bit() {
    // The training plan fuses each ReLU into its conv/linear epilogue, and each max-pool's
    // backward with its ReLU's into the input gradient of the layer that reads the pool
    // (pool1's into conv2's, pool2's through the flatten into fc1's, which has more than
    // SMALL_OUT outputs); a second reader of those nodes (a flatten view no loss depends
    // on) turns the fusions off (the pools' backward then runs alone). One SGD step of each
    // must give the same bits.
    let fused = small_cnn();
    let mut unfused = small_cnn();
    for name in ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1"] {
        let n = NodeId(unfused.nodes.iter().position(|n| n.name == name).unwrap());
        unfused.flatten(&format!("{name}.view"), n);
    }
    let step = |g: &Graph| kiln::graph::lower(g, Mode::Train).unwrap().steps;
    let count = |g: &Graph, f: fn(&Step) -> bool| step(g).iter().filter(|s| f(s)).count();
    assert_eq!(count(&fused, |s| matches!(s, Step::ReluForward { .. })), 0);
    assert_eq!(count(&fused, |s| matches!(s, Step::MaxPoolBackward { .. })), 0);
    assert_eq!(count(&fused, |s| matches!(s, Step::Conv2dBackwardInput { pool: Some(PoolRoute { relu: Some(_), .. }), .. })), 1);
    assert_eq!(count(&fused, |s| matches!(s, Step::LinearBackwardInput { pool: Some(PoolRoute { relu: Some(_), .. }), .. })), 1);
    assert_eq!(count(&unfused, |s| matches!(s, Step::Conv2dBackwardInput { pool: Some(_), .. } | Step::LinearBackwardInput { pool: Some(_), .. })), 0);
    assert_eq!(count(&unfused, |s| matches!(s, Step::ReluForward { .. })), 3);
    assert_eq!(count(&unfused, |s| matches!(s, Step::MaxPoolBackward { relu: Some(_), .. })), 0);
    // In both: fc2's whole backward with relu3's (ops::linear::SMALL_OUT), every bias
    // gradient inside its weight-gradient step.
    for g in [&fused, &unfused] {
        assert_eq!(count(g, |s| matches!(s, Step::LinearBackwardSmall { relu: true, dx: Some(_), dw: Some(_), db: Some(_), .. })), 1);
        assert_eq!(count(g, |s| matches!(s, Step::BiasBackward { .. })), 0);
    }
    assert_eq!(count(&fused, |s| matches!(s, Step::ReluBackward { .. })), 0);
    let gpu = gpu();
    let (x, y) = batches(1, 64, 5, 12).remove(0);
    let grads = |g: &Graph| {
        let mut exec = Executor::new(gpu, g, Mode::Train, Some(Optimizer::sgd(1.0, 0.0)), &GemmConfig::default_for(gpu.info()), None).unwrap();
        exec.write_input(&x).unwrap();
        exec.write_labels(&y).unwrap();
        exec.run_step(0).unwrap();
        (exec.read_params().unwrap(), exec.read_metrics().unwrap())
    };
    assert_eq!(grads(&fused), grads(&unfused));
}

/// One GPU SGD step (lr 1, no momentum: w_before - w_after is the gradient) against central
/// differences, step `h`, of the CPU interpreter's loss (the batch mean) in `cpu_mode`, for
/// every parameter.
fn gpu_gradients_match_finite_differences(graph: &Graph, x: &[f32], y: &[u32], cpu_mode: Mode, h: f32) {
    let gpu = gpu();
    let mut exec = Executor::new(gpu, graph, Mode::Train, Some(Optimizer::sgd(1.0, 0.0)), &GemmConfig::default_for(gpu.info()), None).unwrap();
    let before = exec.read_params().unwrap();
    exec.write_input(x).unwrap();
    exec.write_labels(y).unwrap();
    exec.run_step(0).unwrap();
    let after = exec.read_params().unwrap();
    let mut cpu = CpuExecutor::new(graph, cpu_mode, None).unwrap();
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

/// conv (no bias, as before a BN) -> BatchNorm2d -> ReLU -> max-pool -> flatten -> linear ->
/// BatchNorm1d -> ReLU -> linear -> loss, for a batch of `batch`.
fn batchnorm_graph(batch: usize) -> Graph {
    use kiln::graph::Init;
    use kiln::ops::batchnorm::{EPS, MOMENTUM};
    let mut g = Graph::new(21);
    let x = g.input("input", &[batch, 1, 6, 6]).unwrap();
    let labels = g.labels("labels", batch);
    let w = g.param("conv1.weight", &[3, 1, 3, 3], Init::KaimingUniform { fan_in: 9 });
    let c = g.conv2d("conv1", x, w, None, 1, 1).unwrap();
    let c = g.batch_norm("bn1", c, 3, MOMENTUM, EPS).unwrap();
    let c = g.relu("relu1", c);
    let c = g.max_pool2d("pool1", c, 2, 2, 0).unwrap();
    let f = g.flatten("flatten", c);
    let w1 = g.param("fc1.weight", &[6, 27], Init::KaimingUniform { fan_in: 27 });
    let h = g.linear("fc1", f, w1, None).unwrap();
    let h = g.batch_norm("bn2", h, 6, MOMENTUM, EPS).unwrap();
    let h = g.relu("relu2", h);
    let logits = Linear::new(6, 4).build(&mut g, "fc2", h).unwrap();
    g.softmax_cross_entropy("loss", logits, labels).unwrap();
    g
}

#[test]
fn batchnorm_trains_and_evaluates_like_the_cpu_reference() {
    use kiln::graph::planner::plan_memory;
    use kiln::graph::ValueKind;
    let gpu = gpu();
    let (graph, eval_graph) = (batchnorm_graph(BATCH), batchnorm_graph(5));
    let names: Vec<&str> = graph.state().iter().map(|s| s.1).collect();
    assert_eq!(names, ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked", "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked"]);
    let opt = Optimizer::sgd(0.05, 0.9);
    let data = batches(6, 36, 4, 8);
    for (cfg_name, cfg) in GemmConfig::ALL {
        let mut exec = Executor::new(gpu, &graph, Mode::Train, Some(opt), &cfg, None).unwrap();
        // the evaluator shares the trainer's parameters and running statistics
        let mut eval = Executor::new(gpu, &eval_graph, Mode::Eval, None, &cfg, Some(&exec)).unwrap();
        let mut cpu = CpuExecutor::new(&graph, Mode::Train, Some(opt)).unwrap();
        for (step, (x, y)) in data.iter().enumerate() {
            exec.write_input(x).unwrap();
            exec.write_labels(y).unwrap();
            exec.reset_metrics().unwrap();
            exec.run_step(0).unwrap();
            let gpu_loss = exec.read_metrics().unwrap().loss_sum;
            let cpu_loss = cpu.run_step(x, y).unwrap().unwrap();
            assert_close(&format!("{cfg_name} loss at step {step}"), &[gpu_loss], &[cpu_loss as f32], TRAINING);
        }
        let steps = data.len();
        for ((n, _, w), (_, want)) in exec.read_params().unwrap().iter().zip(cpu.params()) {
            assert_close(&format!("{cfg_name} {n} after {steps} steps"), w, &want, TRAINING);
        }
        let state = exec.read_state().unwrap();
        assert_eq!(state.len(), 6);
        for ((n, shape, v), (_, want)) in state.iter().zip(cpu.state()) {
            assert_close(&format!("{cfg_name} {n} after {steps} steps"), v, &want, TRAINING);
            if n.ends_with("num_batches_tracked") {
                assert_eq!((shape.as_slice(), v.as_slice()), (&[][..], &[steps as f32][..]), "{n}");
            }
        }
        assert_ne!(state[0].2, vec![0.0; 3], "running_mean moved from its init");

        // eval: running statistics, through the shared state; the CPU evaluator gets the
        // CPU trainer's parameters and state
        let (x, y) = (&data[0].0[..5 * 36], &data[0].1[..5]);
        eval.write_input(x).unwrap();
        eval.write_labels(y).unwrap();
        eval.run_step(0).unwrap();
        let mut cpu_eval = CpuExecutor::new(&eval_graph, Mode::Eval, None).unwrap();
        for (n, v) in cpu.params() {
            cpu_eval.set_param(&n, v);
        }
        for (n, v) in cpu.state() {
            cpu_eval.set_state(&n, v);
        }
        cpu_eval.run_step(x, y).unwrap();
        let logits = eval_graph.nodes.iter().position(|n| n.name == "fc2").map(kiln::graph::NodeId).unwrap();
        let want = cpu_eval.value(cpu_eval.plan.outputs[&logits]).unwrap().to_vec();
        assert_close(&format!("{cfg_name} eval logits"), &eval.read_node(logits).unwrap(), &want, TRAINING);
        assert_eq!(eval.read_state().unwrap(), state, "eval must not change the running statistics");
        // the planner never places state in an activation buffer
        let memory = plan_memory(&exec.plan);
        for s in &exec.plan.state {
            assert_eq!(exec.plan.values[s.value.0].kind, ValueKind::State(exec.plan.state.iter().position(|t| t.name == s.name).unwrap()));
            assert_eq!(memory.slot_of[s.value.0], None, "{} planned as an activation", s.name);
        }
    }
}

#[test]
fn batchnorm_state_survives_poisoning_and_round_trips() {
    let gpu = gpu();
    let graph = batchnorm_graph(BATCH);
    let cfg = GemmConfig::default_for(gpu.info());
    let opt = Optimizer::adam(1e-2);
    let mut plain = Executor::new(gpu, &graph, Mode::Train, Some(opt), &cfg, None).unwrap();
    let mut poisoned = Executor::new_poisoning_freed(gpu, &graph, Mode::Train, Some(opt), &cfg).unwrap();
    for (x, y) in batches(4, 36, 4, 9) {
        for e in [&mut plain, &mut poisoned] {
            e.write_input(&x).unwrap();
            e.write_labels(&y).unwrap();
            e.run_step(0).unwrap();
        }
    }
    assert_eq!(plain.read_params().unwrap(), poisoned.read_params().unwrap(), "parameters differ under poisoning");
    let state = plain.read_state().unwrap();
    assert_eq!(state, poisoned.read_state().unwrap(), "state differs under poisoning");
    // write_state / read_state round trip (checkpoint loading), and name checks
    let mut changed = state.clone();
    changed[1].2 = vec![2.5; 3];
    plain.write_state(&changed).unwrap();
    assert_eq!(plain.read_state().unwrap(), changed);
    changed[0].0 = "bn9.running_mean".into();
    assert!(plain.write_state(&changed).unwrap_err().to_string().contains("bn9.running_mean"));
    // a model without batch norm has no state
    let mlp = Executor::new(gpu, &small_mlp(), Mode::Eval, None, &cfg, None).unwrap();
    assert!(mlp.read_state().unwrap().is_empty());
}

#[test]
fn batchnorm_gradients_match_finite_differences_through_the_graph() {
    // the CPU loss in train mode: train-mode BN uses batch statistics (the running update
    // does not feed back). h = 1e-3, not 1e-2: a weight step of 1e-2 moves the batch
    // statistics and crosses enough ReLU and max-pool kinks in this 8-row batch to put the
    // quotient off by ~10% (measured); at 1e-3 the f32 rounding of the loss
    // (~1e-7 / 2h = 5e-5) still fits FINITE_DIFF
    let (x, y) = batches(1, 36, 4, 10).remove(0);
    gpu_gradients_match_finite_differences(&batchnorm_graph(BATCH), &x, &y, Mode::Train, 1e-3);
}

#[test]
fn batchnorm_shape_errors_name_the_node() {
    let mut g = Graph::new(0);
    let x = g.input("input", &[4, 3, 5, 5]).unwrap();
    let err = g.batch_norm("bn_bad", x, 4, 0.1, 1e-5).expect_err("3 channels into a 4-channel batch norm");
    assert!(err.to_string().contains("bn_bad"), "{err}");
    let v = g.input("v", &[4, 3, 5]).unwrap();
    assert!(g.batch_norm("bn3d", v, 3, 0.1, 1e-5).is_err());
    // training needs more than one value per channel; eval with a batch of one is fine
    let mut g = Graph::new(0);
    let x = g.input("input", &[1, 5]).unwrap();
    let labels = g.labels("labels", 1);
    let h = g.batch_norm("bn", x, 5, 0.1, 1e-5).unwrap();
    g.softmax_cross_entropy("loss", h, labels).unwrap();
    let err = kiln::graph::lower(&g, Mode::Train).expect_err("M = 1");
    assert!(err.to_string().contains("node 'bn'"), "{err}");
    kiln::graph::lower(&g, Mode::Eval).unwrap();
}

#[test]
fn folding_batchnorm_into_the_layer_before_keeps_the_logits() {
    use kiln::graph::fold::fold_batch_norm;
    let gpu = gpu();
    let cfg = GemmConfig::default_for(gpu.info());
    let graph = batchnorm_graph(BATCH);
    let mut exec = Executor::new(gpu, &graph, Mode::Train, Some(Optimizer::adam(1e-2)), &cfg, None).unwrap();
    let data = batches(5, 36, 4, 11);
    for (x, y) in &data {
        exec.write_input(x).unwrap();
        exec.write_labels(y).unwrap();
        exec.run_step(0).unwrap();
    }
    let (params, state) = (exec.read_params().unwrap(), exec.read_state().unwrap());
    let mut eval = Executor::new(gpu, &graph, Mode::Eval, None, &cfg, Some(&exec)).unwrap();
    let (folded, folded_params) = fold_batch_norm(&graph, &params, &state).unwrap();
    assert!(folded.state().is_empty(), "both batch norms fold (after conv1 and fc1)");
    assert!(!folded.nodes.iter().any(|n| matches!(n.op, kiln::graph::Op::BatchNorm { .. })));
    let names: Vec<&str> = folded.params().iter().map(|p| p.1).collect();
    assert_eq!(names, ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
    let mut plain = Executor::new(gpu, &folded, Mode::Eval, None, &cfg, None).unwrap();
    plain.write_params(&folded_params).unwrap();
    let logits = |g: &Graph| g.nodes.iter().position(|n| n.name == "fc2").map(kiln::graph::NodeId).unwrap();
    for (x, y) in &data {
        for e in [&mut eval, &mut plain] {
            e.write_input(x).unwrap();
            e.write_labels(y).unwrap();
            e.run_step(0).unwrap();
        }
        let (want, got) = (eval.read_node(logits(&graph)).unwrap(), plain.read_node(logits(&folded)).unwrap());
        // the folded weights round once more than the unfolded chain
        assert_close("folded logits", &got, &want, BATCH_NORM);
    }
}

/// A residual block with BatchNorm and global average pooling, described with `nn::Model`
/// (the way `examples/custom_model.rs` builds its network), trained with SGD and label
/// smoothing: GPU steps == the CPU interpreter, parameters and running statistics. (Not
/// Adam: a conv bias right before a BatchNorm has a gradient that is exactly 0 in exact
/// arithmetic, and Adam's m/sqrt(v) turns its rounding noise into full-size steps whose
/// signs differ between the GPU and the f64 reference.)
#[test]
fn a_residual_batchnorm_model_trains_like_the_cpu_reference() {
    use kiln::nn::{BatchNorm, GlobalAvgPool, Model, ReLU, Residual, Sequential};
    let body = Sequential::new()
        .add("conv", Conv2d::new(4, 4, 3).padding(1))
        .add("bn", BatchNorm { channels: 4 })
        .add("relu", ReLU);
    let layers = Sequential::new()
        .add("stem", Conv2d::new(1, 4, 3).padding(1).stride(2))
        .add("bn", BatchNorm { channels: 4 })
        .add("relu", ReLU)
        .add("block", Residual { body })
        .add("pool", GlobalAvgPool)
        .add("flatten", kiln::nn::Flatten)
        .add("fc", Linear::new(4, 5));
    let model = Model { name: "res".into(), input: [1, 7, 7], layers };
    let graph = model.build_smoothed(BATCH, 4, 0.1).unwrap().graph;
    gpu_matches_cpu(&graph, Optimizer::sgd(0.05, 0.9), &batches(5, 49, 5, 12));
}
