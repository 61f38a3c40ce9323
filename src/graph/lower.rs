//! Lowering: a [`Graph`] becomes a [`Plan`] (plan.rs), the list of kernel [`Step`]s of one
//! training (or evaluation) step over [`Value`]s; the fusions it applies are decided in
//! fuse.rs. Autodiff is reverse mode over the graph: each
//! node's backward steps are emitted once every consumer has contributed its gradient;
//! gradients of a value used twice are summed; nothing is computed for values that need
//! no gradient (inputs, labels, and everything upstream only of them).

use std::collections::HashMap;

use super::{Graph, NodeId, Op};
use crate::kernels::batchnorm::BatchNorm;
use crate::kernels::conv::Conv2d;
use crate::kernels::linear::SMALL_OUT;
use crate::kernels::pool::{GlobalPool2d, Pool2d};
use crate::runtime::tensor::DType;
use crate::{Error, Result};

// The plan's types, where they were before plan.rs.
pub use super::plan::{Mode, ParamInfo, Plan, PoolForward, PoolRoute, StateInfo, Step, Value, ValueId, ValueKind};

pub(super) struct Lowering<'g> {
    pub(super) graph: &'g Graph,
    pub(super) plan: Plan,
    /// The saved argmax of each max-pool node, for its backward.
    pub(super) argmax: HashMap<NodeId, ValueId>,
    /// The saved (mean, invstd) of each train-mode batch-norm node, for its backward.
    pub(super) bn_saved: HashMap<NodeId, (ValueId, ValueId)>,
    /// requires_grad per node: set by the backward.
    pub(super) needs: Vec<bool>,
}

impl Lowering<'_> {
    fn value(&mut self, name: String, shape: &[usize], dtype: DType, kind: ValueKind) -> ValueId {
        self.plan.values.push(Value { name, shape: shape.to_vec(), dtype, kind });
        ValueId(self.plan.values.len() - 1)
    }

    fn act(&mut self, name: String, shape: &[usize]) -> ValueId {
        self.value(name, shape, DType::F32, ValueKind::Activation)
    }

    pub(super) fn out(&self, n: NodeId) -> ValueId {
        self.plan.outputs[&n]
    }

    fn conv_geometry(&self, node: NodeId) -> Conv2d {
        let n = self.graph.node(node);
        let (xs, ws) = (&self.graph.node(n.inputs[0]).shape, &self.graph.node(n.inputs[1]).shape);
        let Op::Conv2d { stride, pad } = n.op else { unreachable!("conv geometry of a non-conv node") };
        Conv2d { batch: xs[0], cin: xs[1], h: xs[2], w: xs[3], cout: ws[0], r: ws[2], s: ws[3], stride, pad }
    }

    pub(super) fn pool_geometry(&self, node: NodeId) -> Pool2d {
        let n = self.graph.node(node);
        let xs = &self.graph.node(n.inputs[0]).shape;
        let (Op::MaxPool2d { k, stride, pad } | Op::AvgPool2d { k, stride, pad }) = n.op else {
            unreachable!("pool geometry of a non-pool node")
        };
        Pool2d { batch: xs[0], channels: xs[1], h: xs[2], w: xs[3], k, stride, pad }
    }

    fn global_pool_geometry(&self, node: NodeId) -> GlobalPool2d {
        let xs = &self.graph.node(self.graph.node(node).inputs[0]).shape;
        GlobalPool2d { batch: xs[0], channels: xs[1], h: xs[2], w: xs[3] }
    }

    fn bn_geometry(&self, node: NodeId) -> Result<BatchNorm> {
        let n = self.graph.node(node);
        let Op::BatchNorm { momentum, eps } = n.op else { unreachable!("batch-norm geometry of another node") };
        BatchNorm::for_shape(&format!("node '{}'", n.name), &self.graph.node(n.inputs[0]).shape, momentum, eps)
    }

    /// The gradient of parameter `p` ([`Lowering::param_grad`]) if `p` is given and needs one.
    fn wanted_param_grad(
        &mut self,
        p: Option<NodeId>,
        uses: &HashMap<NodeId, usize>,
        written: &mut HashMap<NodeId, bool>,
        consumer: &str,
    ) -> Result<Option<(ValueId, bool)>> {
        match p.filter(|p| self.needs[p.0]) {
            Some(p) => self.param_grad(p, uses, written, consumer).map(Some),
            None => Ok(None),
        }
    }

    fn dropout_seed(&self, node: NodeId) -> u32 {
        (self.graph.seed as u32) ^ (node.0 as u32).wrapping_mul(0x9E37_79B9)
    }

    fn forward(&mut self, mode: Mode) -> Result<()> {
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let id = NodeId(i);
            let name = node.name.clone();
            let inp = |k: usize| self.plan.outputs[&node.inputs[k]];
            let v = match &node.op {
                Op::Input => {
                    let v = self.value(name, &node.shape, DType::F32, ValueKind::Input);
                    self.plan.input = v;
                    v
                }
                Op::Labels => {
                    let v = self.value(name, &node.shape, DType::U32, ValueKind::Labels);
                    self.plan.labels = Some(v);
                    v
                }
                Op::Param { init } => {
                    let index = self.plan.params.len();
                    let v = self.value(name.clone(), &node.shape, DType::F32, ValueKind::Param(index));
                    self.plan.params.push(ParamInfo { name, shape: node.shape.clone(), init: *init, value: v, grad: None });
                    v
                }
                Op::State { init } => {
                    let index = self.plan.state.len();
                    let v = self.value(name.clone(), &node.shape, DType::F32, ValueKind::State(index));
                    self.plan.state.push(StateInfo { name, shape: node.shape.clone(), init: *init, value: v });
                    v
                }
                Op::BatchNorm { .. } => {
                    let (x, weight, bias, running_mean, running_var, count) = (inp(0), inp(1), inp(2), inp(3), inp(4), inp(5));
                    let bn = self.bn_geometry(id)?;
                    let y = self.act(name.clone(), &node.shape);
                    if mode == Mode::Train {
                        bn.check_train(&format!("node '{name}'"))?;
                        let mean = self.act(format!("{name}.mean"), &[bn.channels]);
                        let invstd = self.act(format!("{name}.invstd"), &[bn.channels]);
                        self.plan.steps.push(Step::BatchNormForwardTrain { bn, x, weight, bias, y, mean, invstd, running_mean, running_var, count });
                        self.bn_saved.insert(id, (mean, invstd));
                    } else {
                        self.plan.steps.push(Step::BatchNormForwardEval { bn, x, weight, bias, running_mean, running_var, y });
                    }
                    y
                }
                Op::Conv2d { .. } => {
                    let (x, w, b) = (inp(0), inp(1), node.inputs.get(2).map(|_| inp(2)));
                    let relu = self.fused_relu(id);
                    let y = self.act(relu.map_or(name.clone(), |r| format!("{name}+{}", self.graph.node(r).name)), &node.shape);
                    let conv = self.conv_geometry(id);
                    self.plan.steps.push(Step::Conv2dForward { conv, x, w, b, relu: relu.is_some(), y, pool: None });
                    y
                }
                Op::MaxPool2d { .. } => {
                    let x = inp(0);
                    let y = self.act(name.clone(), &node.shape);
                    let argmax = self.value(format!("{name}.argmax"), &node.shape, DType::U32, ValueKind::Activation);
                    let pool = self.pool_geometry(id);
                    // joined into the convolution's step by fuse::join_pools
                    self.plan.steps.push(Step::MaxPoolForward { pool, x, y, argmax });
                    self.argmax.insert(id, argmax);
                    y
                }
                Op::AvgPool2d { .. } => {
                    let x = inp(0);
                    let y = self.act(name, &node.shape);
                    let pool = self.pool_geometry(id);
                    self.plan.steps.push(Step::AvgPoolForward { pool, x, y });
                    y
                }
                Op::GlobalAvgPool => {
                    let x = inp(0);
                    let y = self.act(name, &node.shape);
                    let pool = self.global_pool_geometry(id);
                    self.plan.steps.push(Step::GlobalAvgPoolForward { pool, x, y });
                    y
                }
                Op::Linear => {
                    let (x, w, b) = (inp(0), inp(1), node.inputs.get(2).map(|_| inp(2)));
                    let relu = self.fused_relu(id);
                    let y = self.act(relu.map_or(name.clone(), |r| format!("{name}+{}", self.graph.node(r).name)), &node.shape);
                    self.plan.steps.push(Step::LinearForward { x, w, b, relu: relu.is_some(), y });
                    y
                }
                Op::Bias => {
                    let (x, b) = (inp(0), inp(1));
                    let y = self.act(name, &node.shape);
                    self.plan.steps.push(Step::BiasForward { x, b, y });
                    y
                }
                Op::Relu => {
                    let x = inp(0);
                    if self.fused_relu(node.inputs[0]) == Some(id) {
                        x // computed by the layer's epilogue
                    } else {
                        let y = self.act(name, &node.shape);
                        self.plan.steps.push(Step::ReluForward { x, y });
                        y
                    }
                }
                Op::Activation(act) => {
                    let x = inp(0);
                    let y = self.act(name, &node.shape);
                    self.plan.steps.push(Step::ActivationForward { act: *act, x, y });
                    y
                }
                Op::Dropout { p } => {
                    let x = inp(0);
                    if mode != Mode::Train || *p == 0.0 {
                        self.value(name, &node.shape, DType::F32, ValueKind::Alias(x))
                    } else {
                        let y = self.act(name, &node.shape);
                        let seed = self.dropout_seed(id);
                        self.plan.steps.push(Step::DropoutForward { p: *p, seed, x, y });
                        y
                    }
                }
                Op::Flatten => {
                    let x = inp(0);
                    self.value(name, &node.shape, DType::F32, ValueKind::Alias(x))
                }
                Op::Add => {
                    let (a, b) = (inp(0), inp(1));
                    let y = self.act(name, &node.shape);
                    self.plan.steps.push(Step::Add { a, b, y });
                    y
                }
                &Op::Softmax { temperature } => {
                    let logits = inp(0);
                    let probs = self.act(name, &node.shape);
                    self.plan.steps.push(Step::Softmax { logits, probs, temperature });
                    probs
                }
                &Op::SoftmaxCrossEntropy { smoothing } => {
                    let (logits, labels) = (inp(0), inp(1));
                    let loss = self.act(name.clone(), &node.shape);
                    let pred = self.value(format!("{name}.pred"), &node.shape, DType::U32, ValueKind::Activation);
                    self.plan.steps.push(Step::XentForward { logits, labels, smoothing, loss, pred, grad: None });
                    self.plan.classes = Some(self.graph.node(node.inputs[0]).shape[1]);
                    loss
                }
            };
            self.plan.outputs.insert(id, v);
        }
        Ok(())
    }

    /// The backward of training (from the loss, for the parameters) or of
    /// [`Mode::InputGradient`] (from a host-written gradient of the output, for the input).
    fn backward(&mut self, mode: Mode) -> Result<()> {
        let g = self.graph;
        let top = match mode {
            Mode::Train => {
                let losses: Vec<NodeId> =
                    (0..g.nodes.len()).map(NodeId).filter(|&n| matches!(g.node(n).op, Op::SoftmaxCrossEntropy { .. })).collect();
                let [loss] = losses[..] else {
                    return Err(Error::unsupported("graph", format!("training needs exactly one softmax_cross_entropy node, found {}", losses.len())));
                };
                loss
            }
            Mode::InputGradient => {
                let head = g.nodes.iter().position(|n| matches!(n.op, Op::Softmax { .. } | Op::SoftmaxCrossEntropy { .. }));
                let output = head.map_or(NodeId(g.nodes.len() - 1), |h| g.nodes[h].inputs[0]);
                let node = g.node(output);
                let seed = self.value(format!("d{}", node.name), &node.shape.clone(), DType::F32, ValueKind::OutputGrad);
                self.plan.output_grad = Some((output, seed));
                output
            }
            Mode::Eval => unreachable!("no backward in eval mode"),
        };
        // requires_grad: in training, parameters and whatever depends on one; for input
        // gradients, the input and whatever depends on it.
        let wanted = |op: &Op| match mode {
            Mode::Train => matches!(op, Op::Param { .. }),
            _ => matches!(op, Op::Input),
        };
        let mut needs = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            needs[i] = wanted(&n.op) || n.inputs.iter().any(|p| needs[p.0]);
        }
        self.needs = needs.clone();
        let loss_node = top;
        // How many gradient contributions each parameter receives (for = then +=).
        let mut param_uses = HashMap::new();
        for n in &g.nodes[..=loss_node.0] {
            for &i in &n.inputs {
                if matches!(g.node(i).op, Op::Param { .. }) {
                    *param_uses.entry(i).or_insert(0) += 1;
                }
            }
        }
        let mut grads: HashMap<NodeId, ValueId> = HashMap::new();
        let mut param_written: HashMap<NodeId, bool> = HashMap::new();
        for i in (0..=loss_node.0).rev() {
            let id = NodeId(i);
            let node = g.node(id).clone();
            if !needs[i] {
                continue;
            }
            let dy = if id == loss_node {
                self.plan.output_grad.map(|(_, seed)| seed)
            } else {
                match grads.get(&id) {
                    Some(&d) => Some(d),
                    None => continue, // does not reach the loss
                }
            };
            let inp = |k: usize| node.inputs[k];
            match &node.op {
                Op::Param { .. } | Op::State { .. } | Op::Input | Op::Labels => {}
                Op::SoftmaxCrossEntropy { .. } => {
                    // the forward's loss head also writes the gradient
                    let dlogits = self.act(format!("d{}", g.node(inp(0)).name), &g.node(inp(0)).shape);
                    let loss = self.out(id);
                    let head = self.plan.steps.iter_mut().find_map(|s| match s {
                        Step::XentForward { loss: l, grad, .. } if *l == loss => Some(grad),
                        _ => None,
                    });
                    *head.expect("the loss node's forward step") = Some((dlogits, 1.0 / node.shape[0] as f32));
                    self.add_grad(&mut grads, inp(0), dlogits);
                }
                Op::Linear if g.node(inp(1)).shape[0] <= SMALL_OUT => {
                    let dy = dy.expect("non-loss node has a gradient");
                    let (x, w) = (inp(0), inp(1));
                    let fused = self.relu_backward_fused_into_reader(x, mode);
                    let (target, gate) = (fused.unwrap_or(x), fused.is_some());
                    let dx = needs[x.0].then(|| self.act(format!("d{}", g.node(target).name), &g.node(target).shape));
                    let dw = self.wanted_param_grad(Some(w), &param_uses, &mut param_written, &node.name)?;
                    let db = self.wanted_param_grad(node.inputs.get(2).copied(), &param_uses, &mut param_written, &node.name)?;
                    let (wv, xv) = (self.out(w), self.out(x));
                    self.plan.steps.push(Step::LinearBackwardSmall { dy, w: wv, x: xv, dx, relu: gate, dw, db });
                    if let Some(dx) = dx {
                        self.add_grad(&mut grads, target, dx);
                    }
                }
                Op::Linear | Op::Conv2d { .. } => {
                    let dy = dy.expect("non-loss node has a gradient");
                    let (x, w) = (inp(0), inp(1));
                    let is_conv = matches!(node.op, Op::Conv2d { .. });
                    // the weight gradient first: a staged convolution's forward columns may
                    // still sit in the scratch region, which its input gradient overwrites
                    let db = self.wanted_param_grad(node.inputs.get(2).copied(), &param_uses, &mut param_written, &node.name)?;
                    if needs[w.0] {
                        // the bias gradient rides with the weight gradient (one GEMM on the
                        // vec4 family)
                        let (dw, accumulate) = self.param_grad(w, &param_uses, &mut param_written, &node.name)?;
                        let xv = self.out(x);
                        self.plan.steps.push(if is_conv {
                            Step::Conv2dBackwardWeight { conv: self.conv_geometry(id), x: xv, dy, dw, accumulate, db }
                        } else {
                            Step::LinearBackwardWeight { dy, x: xv, dw, accumulate, db }
                        });
                    } else if let Some((db, accumulate)) = db {
                        self.plan.steps.push(Step::BiasBackward { dy, db, accumulate });
                    }
                    if needs[x.0] {
                        let wv = self.out(w);
                        // a max-pool's (and its ReLU's) backward may run in this step
                        let routed = self.routed_pool(x, mode).map(|pool| self.pool_route(pool, mode));
                        let (target, pool) = routed.map_or((x, None), |(t, r)| (t, Some(r)));
                        let dx = self.act(format!("d{}", g.node(target).name), &g.node(target).shape);
                        self.plan.steps.push(if is_conv {
                            Step::Conv2dBackwardInput { conv: self.conv_geometry(id), w: wv, dy, dx, pool }
                        } else {
                            Step::LinearBackwardInput { dy, w: wv, dx, pool }
                        });
                        self.add_grad(&mut grads, target, dx);
                    }
                }
                Op::MaxPool2d { .. } => {
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    let argmax = self.argmax[&id];
                    // In training, a ReLU read by this pool alone has its backward fused here
                    // (explanations keep the ReLU's own gradient for Grad-CAM).
                    let (target, saved) = match self.relu_backward_fused_into_reader(x, mode) {
                        Some(input) => (input, Some(self.out(x))),
                        None => (x, None),
                    };
                    let dx = self.act(format!("d{}", g.node(target).name), &g.node(target).shape);
                    self.plan.steps.push(Step::MaxPoolBackward { pool: self.pool_geometry(id), argmax, relu: saved, dy, dx });
                    self.add_grad(&mut grads, target, dx);
                }
                Op::AvgPool2d { .. } => {
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    let dx = self.act(format!("d{}", g.node(x).name), &g.node(x).shape);
                    self.plan.steps.push(Step::AvgPoolBackward { pool: self.pool_geometry(id), dy, dx });
                    self.add_grad(&mut grads, x, dx);
                }
                Op::GlobalAvgPool => {
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    let dx = self.act(format!("d{}", g.node(x).name), &g.node(x).shape);
                    self.plan.steps.push(Step::GlobalAvgPoolBackward { pool: self.global_pool_geometry(id), dy, dx });
                    self.add_grad(&mut grads, x, dx);
                }
                Op::Bias => {
                    // dx = dy (the same values); db = channel sums of dy
                    let dy = dy.expect("gradient");
                    self.add_grad(&mut grads, inp(0), dy);
                    if needs[inp(1).0] {
                        let (db, accumulate) = self.param_grad(inp(1), &param_uses, &mut param_written, &node.name)?;
                        self.plan.steps.push(Step::BiasBackward { dy, db, accumulate });
                    }
                }
                Op::BatchNorm { .. } => {
                    // dx is computed even when x needs no gradient (BN right after the input):
                    // the kernel writes it with the parameter gradients.
                    if mode != Mode::Train {
                        return Err(Error::unsupported(
                            format!("node '{}'", node.name),
                            "input gradients through an eval-mode BatchNorm: fold it into its conv or linear layer first (graph::fold::fold_batch_norm)",
                        ));
                    }
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    let dx = self.act(format!("d{}", g.node(x).name), &g.node(x).shape);
                    let (dweight, acc_w) = self.param_grad(inp(1), &param_uses, &mut param_written, &node.name)?;
                    let (dbias, acc_b) = self.param_grad(inp(2), &param_uses, &mut param_written, &node.name)?;
                    let (mean, invstd) = self.bn_saved[&id];
                    let (bn, xv, weight) = (self.bn_geometry(id)?, self.out(x), self.out(inp(1)));
                    let accumulate = (acc_w, acc_b);
                    self.plan.steps.push(Step::BatchNormBackward { bn, x: xv, weight, mean, invstd, dy, dx, dweight, dbias, accumulate });
                    if needs[x.0] {
                        self.add_grad(&mut grads, x, dx);
                    }
                }
                Op::Relu => {
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    let dx = self.act(format!("d{}", g.node(x).name), &g.node(x).shape);
                    self.plan.steps.push(Step::ReluBackward { x: self.out(x), dy, dx });
                    self.add_grad(&mut grads, x, dx);
                }
                Op::Activation(act) => {
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    let dx = self.act(format!("d{}", g.node(x).name), &g.node(x).shape);
                    // tanh/sigmoid differentiate from their output, the others from their input
                    let saved = if act.backward_reads_output() { self.out(id) } else { self.out(x) };
                    self.plan.steps.push(Step::ActivationBackward { act: *act, saved, dy, dx });
                    self.add_grad(&mut grads, x, dx);
                }
                Op::Dropout { p } => {
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    if *p == 0.0 || mode != Mode::Train {
                        self.add_grad(&mut grads, x, dy);
                    } else {
                        let dx = self.act(format!("d{}", g.node(x).name), &g.node(x).shape);
                        self.plan.steps.push(Step::DropoutBackward { p: *p, seed: self.dropout_seed(id), dy, dx });
                        self.add_grad(&mut grads, x, dx);
                    }
                }
                Op::Flatten => {
                    let dy = dy.expect("gradient");
                    let x = inp(0);
                    let dx = self.value(format!("d{}", g.node(x).name), &g.node(x).shape, DType::F32, ValueKind::Alias(dy));
                    self.add_grad(&mut grads, x, dx);
                }
                Op::Add => {
                    let dy = dy.expect("gradient");
                    for k in 0..2 {
                        if needs[inp(k).0] {
                            self.add_grad(&mut grads, inp(k), dy);
                        }
                    }
                }
                Op::Softmax { .. } => {
                    return Err(Error::unsupported(
                        format!("node '{}'", node.name),
                        "training through softmax: use softmax_cross_entropy on the logits",
                    ))
                }
            }
        }
        if let Some((output, seed)) = self.plan.output_grad {
            grads.insert(output, seed);
        }
        self.plan.grads = grads;
        Ok(())
    }

    /// The gradient value of parameter node `p` and whether this contribution accumulates.
    fn param_grad(
        &mut self,
        p: NodeId,
        uses: &HashMap<NodeId, usize>,
        written: &mut HashMap<NodeId, bool>,
        consumer: &str,
    ) -> Result<(ValueId, bool)> {
        let Op::Param { .. } = self.graph.node(p).op else {
            return Err(Error::unsupported(
                format!("node '{consumer}'"),
                format!("weights and biases must be parameters, '{}' is computed", self.graph.node(p).name),
            ));
        };
        let ValueKind::Param(index) = self.plan.values[self.out(p).0].kind else { unreachable!("param value") };
        let grad = match self.plan.params[index].grad {
            Some(g) => g,
            None => {
                let info = &self.plan.params[index];
                let (name, shape) = (format!("d{}", info.name), info.shape.clone());
                let g = self.value(name, &shape, DType::F32, ValueKind::Grad(index));
                self.plan.params[index].grad = Some(g);
                g
            }
        };
        debug_assert!(uses.contains_key(&p));
        let accumulate = written.insert(p, true).is_some();
        Ok((grad, accumulate))
    }

    /// Records `g` as (part of) the gradient of node `n`, summing with an earlier part.
    fn add_grad(&mut self, grads: &mut HashMap<NodeId, ValueId>, n: NodeId, g: ValueId) {
        if !self.needs[n.0] {
            return;
        }
        match grads.get(&n) {
            None => {
                grads.insert(n, g);
            }
            Some(&prev) => {
                let sum = self.act(format!("d{}+", self.graph.node(n).name), &self.graph.node(n).shape);
                self.plan.steps.push(Step::Add { a: prev, b: g, y: sum });
                grads.insert(n, sum);
            }
        }
    }
}

/// Lowers `graph` for `mode`. Training needs exactly one softmax_cross_entropy node.
pub fn lower(graph: &Graph, mode: Mode) -> Result<Plan> {
    lower_keeping(graph, mode, &[])
}

/// As [`lower`], and the value and gradient (where the mode computes one) of each node
/// in `keep` stay readable after the step: the memory planner gives them buffers no later
/// value reuses (feature maps and their gradients for Grad-CAM).
pub fn lower_keeping(graph: &Graph, mode: Mode, keep: &[NodeId]) -> Result<Plan> {
    graph.check_size()?;
    let inputs: Vec<_> = graph.nodes.iter().filter(|n| n.op == Op::Input).collect();
    let [input] = inputs[..] else {
        return Err(Error::unsupported("graph", format!("expected exactly one input node, found {}", inputs.len())));
    };
    let batch = input.shape[0];
    let plan = Plan {
        mode,
        values: Vec::new(),
        steps: Vec::new(),
        params: Vec::new(),
        state: Vec::new(),
        input: ValueId(0),
        labels: None,
        outputs: HashMap::new(),
        classes: None,
        batch,
        grads: HashMap::new(),
        output_grad: None,
        keep: Vec::new(),
    };
    let mut l = Lowering { graph, plan, argmax: HashMap::new(), bn_saved: HashMap::new(), needs: Vec::new() };
    l.forward(mode)?;
    if mode != Mode::Eval {
        l.backward(mode)?;
    }
    let mut plan = l.plan;
    super::fuse::join_pools(&mut plan);
    for n in keep {
        let value = plan.outputs.get(n).ok_or_else(|| Error::shape("lower_keeping", format!("no node {n:?} in the graph")))?;
        plan.keep.extend(std::iter::once(*value).chain(plan.grads.get(n).copied()));
    }
    Ok(plan)
}
