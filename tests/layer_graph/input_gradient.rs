//! Gradients with respect to the input (Mode::InputGradient: saliency, Grad-CAM): the CPU
//! interpreter's against central finite differences of its own eval forward, the GPU
//! executor's against the CPU interpreter's, and intermediates kept for the host.

use kiln::graph::cpu::CpuExecutor;
use kiln::graph::planner::plan_memory;
use kiln::graph::{Executor, Graph, Mode, NodeId, Op};
use kiln::nn::{BatchNorm, Conv2d, Layer};
use kiln::ops::gemm::GemmConfig;
use kiln::testing::{assert_close, gpu, Rng, FINITE_DIFF, REDUCTION};

use crate::common;
use crate::common::{new_layers_graph, shared_graph, small_cnn, small_mlp};

/// The logits: the first input of the loss node.
fn logits(graph: &Graph) -> NodeId {
    let loss = graph.nodes.iter().find(|n| matches!(n.op, Op::SoftmaxCrossEntropy { .. })).expect("a loss node");
    loss.inputs[0]
}

fn input(graph: &Graph) -> NodeId {
    NodeId(graph.nodes.iter().position(|n| n.op == Op::Input).expect("an input node"))
}

/// An input batch over [-1, 1] and a random output gradient r for `graph`.
fn data(graph: &Graph, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(graph.node(input(graph)).shape.iter().product());
    let r = rng.vec(graph.node(logits(graph)).shape.iter().product());
    (x, r)
}

/// dL/dx of L = sum(logits * r), by the CPU interpreter's backward.
fn cpu_input_grad(graph: &Graph, x: &[f32], r: &[f32]) -> Vec<f32> {
    let mut cpu = CpuExecutor::new(graph, Mode::InputGradient, None).unwrap();
    cpu.write_output_grad(r.to_vec());
    let labels = vec![0; graph.node(input(graph)).shape[0]];
    cpu.run_step(x, &labels).unwrap();
    cpu.grad(input(graph)).expect("the input's gradient").to_vec()
}

#[test]
fn cpu_input_gradients_match_finite_differences() {
    // f32 logits: central differences carry ~1e-7 * |L| / H of rounding, so H is not tiny
    const H: f32 = 2e-3;
    for (name, graph) in [("cnn", small_cnn()), ("mlp with dropout", small_mlp()), ("shared", shared_graph()), ("new layers", new_layers_graph())] {
        let (x, r) = data(&graph, 40);
        let grad = cpu_input_grad(&graph, &x, &r);
        let mut eval = CpuExecutor::new(&graph, Mode::Eval, None).unwrap();
        let out = eval.plan.outputs[&logits(&graph)];
        let labels = vec![0; graph.node(input(&graph)).shape[0]];
        let mut loss = |x: &[f32]| {
            eval.run_step(x, &labels).unwrap();
            eval.value(out).unwrap().iter().zip(&r).map(|(&y, &r)| y as f64 * r as f64).sum::<f64>()
        };
        let center = loss(&x);
        let mut xs = x.clone();
        let (mut got, mut numeric, mut kinks) = (Vec::new(), Vec::new(), 0);
        for i in 0..x.len() {
            xs[i] = x[i] + H;
            let up = loss(&xs);
            xs[i] = x[i] - H;
            let down = loss(&xs);
            xs[i] = x[i];
            // A ReLU or max-pool switch inside [x - H, x + H] makes the two one-sided
            // slopes disagree: central differences mean nothing there, skip the element.
            let (right, left) = ((up - center) / H as f64, (center - down) / H as f64);
            if (right - left).abs() > 2e-4 + 1e-3 * right.abs().max(left.abs()) {
                kinks += 1;
                continue;
            }
            got.push(grad[i]);
            numeric.push(((up - down) / (2.0 * H as f64)) as f32);
        }
        assert!(kinks * 20 <= x.len(), "{name}: {kinks} of {} inputs sit at a kink", x.len());
        assert_close(&format!("{name}: input gradient ({kinks} kinks skipped)"), &got, &numeric, FINITE_DIFF);
    }
}

#[test]
fn gpu_input_gradients_match_the_cpu_interpreter() {
    let gpu = gpu();
    for (name, graph) in [("cnn", small_cnn()), ("mlp with dropout", small_mlp()), ("shared", shared_graph()), ("new layers", new_layers_graph())] {
        let (x, r) = data(&graph, 41);
        let exec = Executor::new(gpu, &graph, Mode::InputGradient, None, &GemmConfig::default_for(gpu.info()), None).unwrap();
        let mut exec = exec;
        exec.write_input(&x).unwrap();
        exec.write_output_grad(&r).unwrap();
        exec.run_step(0).unwrap();
        let got = exec.read_grad(input(&graph)).unwrap();
        assert_close(&format!("{name}: GPU input gradient"), &got, &cpu_input_grad(&graph, &x, &r), REDUCTION);
        // no parameter gradients, no update: the parameters are where they started
        let mut fresh = CpuExecutor::new(&graph, Mode::Eval, None).unwrap();
        fresh.run_step(&x, &vec![0; graph.node(input(&graph)).shape[0]]).unwrap();
        for ((n, _, got), (_, want)) in exec.read_params().unwrap().iter().zip(fresh.params()) {
            assert_eq!(got, &want, "{name}: parameter {n} changed");
        }
    }
}

#[test]
fn kept_feature_maps_and_their_gradients_are_readable() {
    // Grad-CAM reads a late conv layer's output and its gradient after the step; without
    // keeping them, their buffers are reused and reading them is an error, not stale data.
    let gpu = gpu();
    let graph = small_cnn();
    let relu1 = NodeId(graph.nodes.iter().position(|n| n.name == "relu1").unwrap());
    let (x, r) = data(&graph, 42);
    let kernels = GemmConfig::default_for(gpu.info());
    let mut kept = Executor::new_keeping(gpu, &graph, Mode::InputGradient, &kernels, &[relu1]).unwrap();
    kept.write_input(&x).unwrap();
    kept.write_output_grad(&r).unwrap();
    kept.run_step(0).unwrap();

    let mut cpu = CpuExecutor::new(&graph, Mode::InputGradient, None).unwrap();
    cpu.write_output_grad(r.clone());
    cpu.run_step(&x, &[0; common::BATCH]).unwrap();
    let want = cpu.value(cpu.plan.outputs[&relu1]).unwrap();
    assert_close("kept relu1", &kept.read_node(relu1).unwrap(), want, REDUCTION);
    assert_close("kept drelu1", &kept.read_grad(relu1).unwrap(), cpu.grad(relu1).unwrap(), REDUCTION);

    let mut plain = Executor::new(gpu, &graph, Mode::InputGradient, None, &kernels, None).unwrap();
    plain.write_input(&x).unwrap();
    plain.write_output_grad(&r).unwrap();
    plain.run_step(0).unwrap();
    // every gradient whose buffer a later value takes is refused; the others read fine
    let memory = plan_memory(&plain.plan);
    let overwritten = |v: kiln::graph::ValueId| {
        // the output gradient is the host's, not a planned activation
        let (Some(slot), Some((_, end))) = (memory.slot_of[v.0], memory.interval[v.0]) else { return false };
        memory.slots[slot].values.iter().any(|o| memory.interval[o.0].unwrap().0 > end)
    };
    let mut refused = 0;
    for (&node, &v) in &plain.plan.grads {
        match plain.read_grad(node) {
            Ok(_) => assert!(!overwritten(plain.plan.root(v)), "read a reused gradient of {node:?}"),
            Err(e) => {
                assert!(overwritten(plain.plan.root(v)) && e.to_string().contains("new_keeping"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the small CNN's plan reuses some gradient buffer");
    let err = plain.read_grad(NodeId(graph.nodes.len() - 1)).unwrap_err().to_string();
    assert!(err.contains("no gradient"), "{err}");
}

#[test]
fn input_gradients_through_batchnorm_ask_for_folding() {
    let mut g = Graph::new(5);
    let x = g.input("input", &[2, 1, 4, 4]).unwrap();
    let labels = g.labels("labels", 2);
    let h = Conv2d::new(1, 2, 3).padding(1).build(&mut g, "conv", x).unwrap();
    let h = BatchNorm { channels: 2 }.build(&mut g, "bn", h).unwrap();
    let h = g.flatten("flatten", h);
    let logits = kiln::nn::Linear::new(32, 3).build(&mut g, "fc", h).unwrap();
    g.softmax_cross_entropy("loss", logits, labels).unwrap();
    let err = CpuExecutor::new(&g, Mode::InputGradient, None).err().expect("an error").to_string();
    assert!(err.contains("'bn'") && err.contains("fold_batch_norm"), "{err}");
}
