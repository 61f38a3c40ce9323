//! Lowering: a [`Graph`] becomes a [`Plan`], the list of kernel [`Step`]s of one training
//! (or evaluation) step over [`Value`]s. Autodiff is reverse mode over the graph: each
//! node's backward steps are emitted once every consumer has contributed its gradient;
//! gradients of a value used twice are summed; nothing is computed for values that need
//! no gradient (inputs, labels, and everything upstream only of them).

use std::collections::HashMap;

use super::autotune::TuneKey;
use super::{Graph, Init, NodeId, Op};
use crate::kernels::activation::Activation;
use crate::kernels::batchnorm::BatchNorm;
use crate::kernels::conv::{Conv2d, Pass};
use crate::kernels::linear::SMALL_OUT;
use crate::kernels::pool::{GlobalPool2d, Pool2d};
use crate::runtime::tensor::DType;
use crate::{Error, Result};

/// Index of a [`Value`] in [`Plan::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// Where a value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// An intermediate: the memory planner gives it a buffer for its lifetime.
    Activation,
    /// The batch of inputs, written by the data gather (or the host).
    Input,
    /// The batch of labels, written by the data gather (or the host).
    Labels,
    /// Parameter `i`, a range of the flat parameter buffer.
    Param(usize),
    /// The gradient of parameter `i`, the same range of the flat gradient buffer.
    Grad(usize),
    /// The same memory as another value, seen with another shape (flatten, eval dropout).
    Alias(ValueId),
    /// State tensor `i` (running statistics), a range of the flat state buffer that
    /// persists across steps and is shared by the executors of one model.
    State(usize),
    /// The gradient the backward starts from in [`Mode::InputGradient`] (of the output
    /// node, the logits), written by the host.
    OutputGrad,
}

/// A tensor of the plan: an activation, gradient, parameter, state, input or labels.
#[derive(Clone, Debug)]
pub struct Value {
    /// The graph node's name, or a derived one (`d{node}` for gradients, `{node}.argmax`, ...).
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// F32 for everything but labels, argmax indices and predictions (U32).
    pub dtype: DType,
    /// Where the memory comes from.
    pub kind: ValueKind,
}

impl Value {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when some dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a plan computes per step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward, backward and optimizer step; dropout active.
    Train,
    /// Forward only; dropout is the identity.
    Eval,
    /// The eval forward, then the backward from a gradient of the output (the logits: the
    /// input of the softmax or loss node, else the last node) that the host writes, down
    /// to the input: saliency maps, Grad-CAM. No parameter gradients, no update; the
    /// gradient of every node on the way is in [`Plan::grads`].
    InputGradient,
}

/// A max-pool lowered into the step of the convolution whose output it reads (one dispatch
/// where the kernel can: ops/conv_shared.rs).
#[derive(Clone, Copy, Debug)]
pub struct PoolForward {
    /// Window geometry.
    pub pool: Pool2d,
    /// The pool's output.
    pub y: ValueId,
    /// Each output's maximum as an index within its input plane (u32), saved for the backward.
    pub argmax: ValueId,
}

/// A max-pool backward fused into the step that makes the pool's output gradient.
#[derive(Clone, Copy, Debug)]
pub struct PoolRoute {
    /// Window geometry.
    pub pool: Pool2d,
    /// The forward's saved argmax.
    pub argmax: ValueId,
    /// The ReLU output whose mask applies (its backward fused too), as `MaxPoolBackward`'s.
    pub relu: Option<ValueId>,
}

/// One kernel launch (or a short fixed sequence) of the lowered program. `accumulate`
/// marks parameter-gradient steps that add to a gradient an earlier step wrote (a
/// parameter used twice).
#[derive(Clone, Debug)]
pub enum Step {
    /// y [N, K, OH, OW] = x [N, C, H, W] ⋆ w [K, C, R, S] + b `[K]` (cross-correlation, as
    /// PyTorch), then max(·, 0) when `relu`.
    Conv2dForward {
        /// Geometry: N, C, H, W, K, R, S, stride, pad.
        conv: Conv2d,
        /// The forward input.
        x: ValueId,
        /// Weight [K, C, R, S].
        w: ValueId,
        /// Bias `[K]`, if any, added in the GEMM epilogue.
        b: Option<ValueId>,
        /// The ReLU that follows, fused into the epilogue (see [`lower`]).
        relu: bool,
        /// The output.
        y: ValueId,
        /// Training: the max-pool that reads y, if it comes right after, run in this step.
        pool: Option<PoolForward>,
    },
    /// dx [N, C, H, W] = the transposed convolution of dy with w.
    Conv2dBackwardInput {
        /// Geometry: N, C, H, W, K, R, S, stride, pad.
        conv: Conv2d,
        /// Weight [K, C, R, S].
        w: ValueId,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input (or, with `pool`, of the pool's or its fused
        /// ReLU's input), written (`=`).
        dx: ValueId,
        /// Training, when the input is the output of a max-pool whose windows tile its input
        /// exactly, read by this convolution alone: that pool's backward (and its ReLU's, as
        /// in `MaxPoolBackward`) runs in this step, and the pool's output gradient is never
        /// stored.
        pool: Option<PoolRoute>,
    },
    /// dw [K, C, R, S] (+)= the correlation of x with dy over the batch (split-K on GPUs).
    Conv2dBackwardWeight {
        /// Geometry: N, C, H, W, K, R, S, stride, pad.
        conv: Conv2d,
        /// The forward input.
        x: ValueId,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Weight gradient, written or accumulated per `accumulate`.
        dw: ValueId,
        /// Add to the gradient (`+=`) instead of writing it: a parameter used again.
        accumulate: bool,
        /// The bias gradient `[K]` (channel sums of dy) and whether it accumulates: summed
        /// in the same GEMM where the kernel can.
        db: Option<(ValueId, bool)>,
    },
    /// y = x W^T + b
    LinearForward {
        /// Input [N, in].
        x: ValueId,
        /// Weight [out, in].
        w: ValueId,
        /// Bias `[out]`, if any, added in the GEMM epilogue.
        b: Option<ValueId>,
        /// The ReLU that follows, fused into the epilogue (see [`lower`]).
        relu: bool,
        /// Output [N, out].
        y: ValueId,
    },
    /// dx = dy W
    LinearBackwardInput {
        /// Gradient of the output [N, out].
        dy: ValueId,
        /// Weight [out, in].
        w: ValueId,
        /// Gradient of the input [N, in] (or, with `pool`, of the pool's or its fused
        /// ReLU's input), written (`=`).
        dx: ValueId,
        /// As `Conv2dBackwardInput`'s: the max-pool whose flattened output the layer reads.
        pool: Option<PoolRoute>,
    },
    /// dW (+)= dy^T x
    LinearBackwardWeight {
        /// Gradient of the output [N, out].
        dy: ValueId,
        /// The forward input [N, in].
        x: ValueId,
        /// Weight gradient [out, in], written or accumulated per `accumulate`.
        dw: ValueId,
        /// Add to the gradient (`+=`) instead of writing it: a parameter used again.
        accumulate: bool,
        /// The bias gradient `[out]` (column sums of dy) and whether it accumulates: summed
        /// in the same GEMM where the kernel can.
        db: Option<(ValueId, bool)>,
    },
    /// The backward of a linear layer with at most [`SMALL_OUT`] outputs in one dispatch:
    /// dx = dy W, dW (+)= dy^T x, db (+)= column sums of dy, each where wanted; in training,
    /// when x is a ReLU's output read by this layer alone, dx is masked where x is 0 (the
    /// ReLU's backward, fused: dx is then the gradient of the ReLU's input).
    LinearBackwardSmall {
        /// Gradient of the output [N, out].
        dy: ValueId,
        /// Weight [out, in].
        w: ValueId,
        /// The forward input [N, in] (also the fused ReLU's output): read for dW and the
        /// mask only.
        x: ValueId,
        /// Gradient of the input (or of the fused ReLU's input), written (`=`).
        dx: Option<ValueId>,
        /// Whether dx carries the ReLU's mask.
        relu: bool,
        /// Weight gradient [out, in] and whether it accumulates.
        dw: Option<(ValueId, bool)>,
        /// Bias gradient `[out]` and whether it accumulates.
        db: Option<(ValueId, bool)>,
    },
    /// db (+)= channel sums of dy
    BiasBackward {
        /// Gradient of the biased output [N, C, ...].
        dy: ValueId,
        /// Bias gradient `[C]`, written or accumulated per `accumulate`.
        db: ValueId,
        /// Add to the gradient (`+=`) instead of writing it: a parameter used again.
        accumulate: bool,
    },
    /// y = each window's maximum (ties: the first in window order).
    MaxPoolForward {
        /// Window geometry.
        pool: Pool2d,
        /// The forward input.
        x: ValueId,
        /// The output.
        y: ValueId,
        /// Each output's maximum as an index within its input plane (u32), saved for the backward.
        argmax: ValueId,
    },
    /// dx = dy added at each window's saved argmax, zero elsewhere.
    MaxPoolBackward {
        /// Window geometry.
        pool: Pool2d,
        /// Each output's maximum as an index within its input plane (u32), saved for the backward.
        argmax: ValueId,
        /// Training, when the pool reads a ReLU's output and nothing else does: that output,
        /// and the step is also the ReLU's backward (dx is then the gradient of the ReLU's
        /// input, masked where the output is 0).
        relu: Option<ValueId>,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input (or of the fused ReLU's input), written (`=`).
        dx: ValueId,
    },
    /// y = each window's sum / k² (padding counts as zeros).
    AvgPoolForward {
        /// Window geometry.
        pool: Pool2d,
        /// The forward input.
        x: ValueId,
        /// The output.
        y: ValueId,
    },
    /// dx = dy / k² spread over each window.
    AvgPoolBackward {
        /// Window geometry.
        pool: Pool2d,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input, written (`=`).
        dx: ValueId,
    },
    /// y [N, C, 1, 1] = plane means of x
    GlobalAvgPoolForward {
        /// Plane geometry: N, C, H, W.
        pool: GlobalPool2d,
        /// The forward input.
        x: ValueId,
        /// Output [N, C, 1, 1].
        y: ValueId,
    },
    /// dx = dy / (H·W) on every element of the plane.
    GlobalAvgPoolBackward {
        /// Plane geometry: N, C, H, W.
        pool: GlobalPool2d,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input, written (`=`).
        dx: ValueId,
    },
    /// y = x + `b[channel]`
    BiasForward {
        /// Input [N, C, ...].
        x: ValueId,
        /// Bias `[C]`.
        b: ValueId,
        /// The output.
        y: ValueId,
    },
    /// y = max(x, 0).
    ReluForward {
        /// The forward input.
        x: ValueId,
        /// The output.
        y: ValueId,
    },
    /// x is the forward input
    ReluBackward {
        /// The forward input, or its output when the ReLU is fused into the layer before
        /// (the same mask: y > 0 exactly when x > 0).
        x: ValueId,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input, written (`=`).
        dx: ValueId,
    },
    /// y = act(x), elementwise.
    ActivationForward {
        /// Which activation.
        act: Activation,
        /// The forward input.
        x: ValueId,
        /// The output.
        y: ValueId,
    },
    /// `saved` is the forward's output y for tanh and sigmoid, its input x for leaky_relu
    /// and gelu ([`Activation::backward_reads_output`])
    ActivationBackward {
        /// Which activation.
        act: Activation,
        /// The forward value the derivative is computed from (see the variant).
        saved: ValueId,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input, written (`=`).
        dx: ValueId,
    },
    /// Inverted dropout: y = x·mask/(1 − p), the mask a hash of (seed, step, index).
    DropoutForward {
        /// Drop probability in [0, 1).
        p: f32,
        /// The node's mask seed; the mask also depends on the step counter (step buffer word 0).
        seed: u32,
        /// The forward input.
        x: ValueId,
        /// The output.
        y: ValueId,
    },
    /// dx = dy·mask/(1 − p) with the forward's mask, recomputed.
    DropoutBackward {
        /// Drop probability in [0, 1).
        p: f32,
        /// The node's mask seed; the mask also depends on the step counter (step buffer word 0).
        seed: u32,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input, written (`=`).
        dx: ValueId,
    },
    /// y = a + b, same shapes (also sums two gradient contributions).
    Add {
        /// First summand.
        a: ValueId,
        /// Second summand.
        b: ValueId,
        /// The output.
        y: ValueId,
    },
    /// Train mode: batch statistics; saves mean, invstd `[C]`; updates the running state.
    BatchNormForwardTrain {
        /// Geometry, momentum and eps.
        bn: BatchNorm,
        /// The forward input.
        x: ValueId,
        /// Scale γ `[C]`.
        weight: ValueId,
        /// Shift β `[C]`.
        bias: ValueId,
        /// Output, x's shape.
        y: ValueId,
        /// Batch mean `[C]`, saved by the train forward.
        mean: ValueId,
        /// 1/√(var + eps) `[C]` of the batch, saved by the train forward.
        invstd: ValueId,
        /// Running mean `[C]` (state).
        running_mean: ValueId,
        /// Running unbiased variance `[C]` (state).
        running_var: ValueId,
        /// `num_batches_tracked` [] (state, an f32 count).
        count: ValueId,
    },
    /// Eval mode: the running statistics.
    BatchNormForwardEval {
        /// Geometry, momentum and eps.
        bn: BatchNorm,
        /// The forward input.
        x: ValueId,
        /// Scale γ `[C]`.
        weight: ValueId,
        /// Shift β `[C]`.
        bias: ValueId,
        /// Running mean `[C]` (state).
        running_mean: ValueId,
        /// Running unbiased variance `[C]` (state).
        running_var: ValueId,
        /// Output, x's shape.
        y: ValueId,
    },
    /// dx (=); dweight, dbias (+)= per `accumulate`.
    BatchNormBackward {
        /// Geometry, momentum and eps.
        bn: BatchNorm,
        /// The forward input.
        x: ValueId,
        /// Scale γ `[C]`.
        weight: ValueId,
        /// Batch mean `[C]`, saved by the train forward.
        mean: ValueId,
        /// 1/√(var + eps) `[C]` of the batch, saved by the train forward.
        invstd: ValueId,
        /// Gradient of the forward output.
        dy: ValueId,
        /// Gradient of the forward input, written (`=`).
        dx: ValueId,
        /// Gradient of γ `[C]`.
        dweight: ValueId,
        /// Gradient of β `[C]`.
        dbias: ValueId,
        /// (dweight, dbias): add (`+=`) instead of writing.
        accumulate: (bool, bool),
    },
    /// probs = row-wise softmax of logits (max subtracted first); inference.
    Softmax {
        /// Logits [N, C].
        logits: ValueId,
        /// Probabilities [N, C].
        probs: ValueId,
    },
    /// The loss head in one dispatch: softmax cross-entropy against the smoothed one-hot
    /// target per row, the row losses and predictions folded into the metrics buffer, and
    /// in training dlogits = scale·(softmax(logits) − target).
    XentForward {
        /// Logits [N, C].
        logits: ValueId,
        /// Class labels `[N]` (u32).
        labels: ValueId,
        /// Label smoothing e in [0, 1).
        smoothing: f32,
        /// Per-row loss `[N]`.
        loss: ValueId,
        /// Per-row predicted class `[N]` (u32, first maximum).
        pred: ValueId,
        /// Training: the gradient of the logits [N, C], written, and its multiplier (1/N, so
        /// the loss is the batch mean). Set by the backward.
        grad: Option<(ValueId, f32)>,
    },
}

impl Step {
    /// (values read, values written)
    pub fn io(&self) -> (Vec<ValueId>, Vec<ValueId>) {
        use Step::*;
        match self {
            Conv2dForward { x, w, b, y, pool, .. } => {
                (vec![*x, *w].into_iter().chain(*b).collect(), std::iter::once(*y).chain(pool.iter().flat_map(|p| [p.y, p.argmax])).collect())
            }
            Conv2dBackwardInput { w, dy, dx, pool, .. } => (route_reads(vec![*w, *dy], pool), vec![*dx]),
            Conv2dBackwardWeight { x, dy, dw, accumulate, db, .. } | LinearBackwardWeight { dy, x, dw, accumulate, db } => {
                let reads = acc_reads(vec![*x, *dy], *dw, *accumulate);
                let reads = match db {
                    Some((b, acc)) => acc_reads(reads, *b, *acc),
                    None => reads,
                };
                (reads, std::iter::once(*dw).chain(db.map(|g| g.0)).collect())
            }
            LinearForward { x, w, b, y, .. } => (vec![*x, *w].into_iter().chain(*b).collect(), vec![*y]),
            LinearBackwardInput { dy, w, dx, pool } => (route_reads(vec![*dy, *w], pool), vec![*dx]),
            LinearBackwardSmall { dy, w, x, dx, relu, dw, db } => {
                let mut reads = vec![*dy, *w];
                if *relu || dw.is_some() {
                    reads.push(*x);
                }
                reads.extend([dw, db].into_iter().flatten().filter(|g| g.1).map(|g| g.0));
                (reads, dx.iter().copied().chain([dw, db].into_iter().flatten().map(|g| g.0)).collect())
            }
            BiasBackward { dy, db, accumulate } => (acc_reads(vec![*dy], *db, *accumulate), vec![*db]),
            MaxPoolForward { x, y, argmax, .. } => (vec![*x], vec![*y, *argmax]),
            MaxPoolBackward { argmax, relu, dy, dx, .. } => ([*argmax, *dy].into_iter().chain(*relu).collect(), vec![*dx]),
            AvgPoolForward { x, y, .. } | GlobalAvgPoolForward { x, y, .. } => (vec![*x], vec![*y]),
            AvgPoolBackward { dy, dx, .. } | GlobalAvgPoolBackward { dy, dx, .. } => (vec![*dy], vec![*dx]),
            BiasForward { x, b, y } => (vec![*x, *b], vec![*y]),
            ReluForward { x, y } => (vec![*x], vec![*y]),
            ReluBackward { x, dy, dx } => (vec![*x, *dy], vec![*dx]),
            ActivationForward { x, y, .. } => (vec![*x], vec![*y]),
            ActivationBackward { saved, dy, dx, .. } => (vec![*saved, *dy], vec![*dx]),
            DropoutForward { x, y, .. } => (vec![*x], vec![*y]),
            DropoutBackward { dy, dx, .. } => (vec![*dy], vec![*dx]),
            Add { a, b, y } => (vec![*a, *b], vec![*y]),
            BatchNormForwardTrain { x, weight, bias, y, mean, invstd, running_mean: rm, running_var: rv, count, .. } => {
                (vec![*x, *weight, *bias, *rm, *rv, *count], vec![*y, *mean, *invstd, *rm, *rv, *count])
            }
            BatchNormForwardEval { x, weight, bias, running_mean, running_var, y, .. } => (vec![*x, *weight, *bias, *running_mean, *running_var], vec![*y]),
            BatchNormBackward { x, weight, mean, invstd, dy, dx, dweight, dbias, accumulate, .. } => {
                let reads = acc_reads(acc_reads(vec![*x, *weight, *mean, *invstd, *dy], *dweight, accumulate.0), *dbias, accumulate.1);
                (reads, vec![*dx, *dweight, *dbias])
            }
            Softmax { logits, probs } => (vec![*logits], vec![*probs]),
            XentForward { logits, labels, loss, pred, grad, .. } => (vec![*logits, *labels], [*loss, *pred].into_iter().chain(grad.map(|g| g.0)).collect()),
        }
    }
}

/// `reads` and what a routed max-pool's backward reads: its argmax and its ReLU's output.
fn route_reads(mut reads: Vec<ValueId>, pool: &Option<PoolRoute>) -> Vec<ValueId> {
    if let Some(r) = pool {
        reads.push(r.argmax);
        reads.extend(r.relu);
    }
    reads
}

fn acc_reads(mut reads: Vec<ValueId>, out: ValueId, accumulate: bool) -> Vec<ValueId> {
    if accumulate {
        reads.push(out);
    }
    reads
}

/// A trainable parameter of the plan, in graph creation order.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// The graph node's name (`{layer}.weight`, `{layer}.bias`: PyTorch's names).
    pub name: String,
    /// Dimensions: Linear weight [out, in], Conv2d weight [K, C, R, S], biases `[K]`.
    pub shape: Vec<usize>,
    /// How it is initialised (from the graph's seed).
    pub init: Init,
    /// Its value, [`ValueKind::Param`].
    pub value: ValueId,
    /// Its gradient, [`ValueKind::Grad`]: `None` in eval mode and for a parameter no loss
    /// depends on.
    pub grad: Option<ValueId>,
}

/// A state tensor of the plan (see [`ValueKind::State`]).
#[derive(Clone, Debug)]
pub struct StateInfo {
    /// The graph node's name (`{layer}.running_mean`, ...: PyTorch's names).
    pub name: String,
    /// Dimensions (`[]` for `num_batches_tracked`).
    pub shape: Vec<usize>,
    /// The value every element starts at.
    pub init: f32,
    /// Its value, [`ValueKind::State`].
    pub value: ValueId,
}

/// The lowered program of one step.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Train or eval.
    pub mode: Mode,
    /// Every tensor the steps touch, indexed by [`ValueId`].
    pub values: Vec<Value>,
    /// The kernel steps of one training (or evaluation) step, in submission order.
    pub steps: Vec<Step>,
    /// The parameters, in graph creation order: the layout of the flat parameter buffer.
    pub params: Vec<ParamInfo>,
    /// The state tensors, in graph creation order: the layout of the flat state buffer.
    pub state: Vec<StateInfo>,
    /// The graph's input batch.
    pub input: ValueId,
    /// The labels batch, if the graph has a labels node.
    pub labels: Option<ValueId>,
    /// The value computed for each graph node (after aliasing). A conv or linear node
    /// whose ReLU is fused into it maps to the ReLU's output, as the ReLU does.
    pub outputs: HashMap<NodeId, ValueId>,
    /// Classes of the cross-entropy head, if any (metrics layout).
    pub classes: Option<usize>,
    /// Rows per step: the input's first dimension.
    pub batch: usize,
    /// The gradient each node received in the backward (training: those that need one;
    /// [`Mode::InputGradient`]: every node between the input and the output, the input
    /// included).
    pub grads: HashMap<NodeId, ValueId>,
    /// [`Mode::InputGradient`]: the host-written gradient of the output node, and that node.
    pub output_grad: Option<(NodeId, ValueId)>,
    /// Values the host reads after a step (see [`lower_keeping`]): the memory planner keeps
    /// them live to the end of the step.
    pub keep: Vec<ValueId>,
}

impl Plan {
    /// The shape key of a GEMM or convolution step (what autotuning chooses a variant for).
    pub fn tune_key(&self, step: &Step) -> Option<TuneKey> {
        let s = |v: &ValueId| self.values[v.0].shape.clone();
        match step {
            Step::Conv2dForward { conv, .. } => Some(TuneKey::Conv2d(Pass::Forward, *conv)),
            Step::Conv2dBackwardInput { conv, .. } => Some(TuneKey::Conv2d(Pass::BackwardInput, *conv)),
            Step::Conv2dBackwardWeight { conv, .. } => Some(TuneKey::Conv2d(Pass::BackwardWeight, *conv)),
            Step::LinearForward { x, w, .. } => Some(TuneKey::Linear(Pass::Forward, s(x), s(w))),
            Step::LinearBackwardInput { dy, w, .. } => Some(TuneKey::Linear(Pass::BackwardInput, s(dy), s(w))),
            Step::LinearBackwardWeight { dy, x, .. } => Some(TuneKey::Linear(Pass::BackwardWeight, s(dy), s(x))),
            _ => None,
        }
    }

    /// `tune_key` of every plan step, in order.
    pub fn tune_keys(&self) -> Vec<Option<TuneKey>> {
        self.steps.iter().map(|s| self.tune_key(s)).collect()
    }

    /// Follows aliases to the value that owns the memory.
    pub fn root(&self, mut v: ValueId) -> ValueId {
        while let ValueKind::Alias(t) = self.values[v.0].kind {
            v = t;
        }
        v
    }
}

struct Lowering<'g> {
    graph: &'g Graph,
    plan: Plan,
    /// The saved argmax of each max-pool node, for its backward.
    argmax: HashMap<NodeId, ValueId>,
    /// The saved (mean, invstd) of each train-mode batch-norm node, for its backward.
    bn_saved: HashMap<NodeId, (ValueId, ValueId)>,
    /// requires_grad per node: set by the backward.
    needs: Vec<bool>,
}

impl Lowering<'_> {
    fn value(&mut self, name: String, shape: &[usize], dtype: DType, kind: ValueKind) -> ValueId {
        self.plan.values.push(Value { name, shape: shape.to_vec(), dtype, kind });
        ValueId(self.plan.values.len() - 1)
    }

    fn act(&mut self, name: String, shape: &[usize]) -> ValueId {
        self.value(name, shape, DType::F32, ValueKind::Activation)
    }

    fn out(&self, n: NodeId) -> ValueId {
        self.plan.outputs[&n]
    }

    fn conv_geometry(&self, node: NodeId) -> Conv2d {
        let n = self.graph.node(node);
        let (xs, ws) = (&self.graph.node(n.inputs[0]).shape, &self.graph.node(n.inputs[1]).shape);
        let Op::Conv2d { stride, pad } = n.op else { unreachable!("conv geometry of a non-conv node") };
        Conv2d { batch: xs[0], cin: xs[1], h: xs[2], w: xs[3], cout: ws[0], r: ws[2], s: ws[3], stride, pad }
    }

    fn pool_geometry(&self, node: NodeId) -> Pool2d {
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

    /// The ReLU node fused into conv/linear node `n`'s epilogue: the only reader of `n`.
    /// `n`'s value is then the ReLU's output (the pre-activation is never stored), and the
    /// ReLU's backward masks by its output, the same mask: y > 0 exactly when x > 0.
    fn fused_relu(&self, n: NodeId) -> Option<NodeId> {
        if !matches!(self.graph.node(n).op, Op::Conv2d { .. } | Op::Linear) {
            return None;
        }
        let mut readers = self.graph.nodes.iter().enumerate().filter(|(_, m)| m.inputs.contains(&n));
        match (readers.next(), readers.next()) {
            (Some((r, m)), None) if m.op == Op::Relu => Some(NodeId(r)),
            _ => None,
        }
    }

    /// In training, when node `x` is a ReLU whose only reader is the node being
    /// differentiated (a max-pool, a small linear layer), that reader applies the ReLU's
    /// mask itself: returns the ReLU's input, the node that then receives the gradient.
    /// Explanations keep the ReLU's own gradient (Grad-CAM reads it).
    fn relu_backward_fused_into_reader(&self, x: NodeId, mode: Mode) -> Option<NodeId> {
        let relu = self.graph.node(x);
        let fused = mode == Mode::Train && relu.op == Op::Relu && self.needs[relu.inputs[0].0] && self.sole_reader(x);
        fused.then(|| relu.inputs[0])
    }

    /// Whether exactly one node reads node `n`.
    fn sole_reader(&self, n: NodeId) -> bool {
        self.graph.nodes.iter().filter(|m| m.inputs.contains(&n)).count() == 1
    }

    /// In training, the max-pool whose backward the input-gradient step of the conv or linear
    /// layer reading `x` runs too (`PoolRoute`): `x` is that pool, or a flatten view of it,
    /// read by the layer alone (the view by the layer, the pool by the view), and the pool's
    /// windows tile its input exactly. Explanations keep the pool's output gradient
    /// (Grad-CAM reads feature maps' gradients).
    fn routed_pool(&self, x: NodeId, mode: Mode) -> Option<NodeId> {
        let pool = match self.graph.node(x).op {
            Op::Flatten => self.graph.node(x).inputs[0],
            _ => x,
        };
        let node = self.graph.node(pool);
        let routed = mode == Mode::Train
            && self.sole_reader(x)
            && self.sole_reader(pool)
            && matches!(node.op, Op::MaxPool2d { .. })
            && self.needs[node.inputs[0].0]
            && self.pool_geometry(pool).tiles_exactly();
        routed.then_some(pool)
    }

    /// The route of max-pool `pool` ([`Self::routed_pool`]) and the node that receives the
    /// gradient: the pool's input, or that ReLU's input when the ReLU's backward is fused too.
    fn pool_route(&self, pool: NodeId, mode: Mode) -> (NodeId, PoolRoute) {
        let px = self.graph.node(pool).inputs[0];
        let (target, relu) = match self.relu_backward_fused_into_reader(px, mode) {
            Some(input) => (input, Some(self.out(px))),
            None => (px, None),
        };
        (target, PoolRoute { pool: self.pool_geometry(pool), argmax: self.argmax[&pool], relu })
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
                    match self.plan.steps.last_mut() {
                        // In training, where the convolution just lowered makes x, the pool
                        // runs in its step. Not in the forward-only modes: there nothing keeps
                        // the activations for a backward, and with separate steps the pool's
                        // outputs reuse the memory of the previous pool's output, which the
                        // convolution read (the MNIST CNN's evaluator at batch 64: 5.2 MB
                        // planned, 7.2 with the pools in the convolutions' steps).
                        Some(Step::Conv2dForward { y: conv_y, pool: fused @ None, .. }) if *conv_y == x && mode == Mode::Train => {
                            *fused = Some(PoolForward { pool, y, argmax });
                        }
                        _ => self.plan.steps.push(Step::MaxPoolForward { pool, x, y, argmax }),
                    }
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
                Op::Softmax => {
                    let logits = inp(0);
                    let probs = self.act(name, &node.shape);
                    self.plan.steps.push(Step::Softmax { logits, probs });
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
                let head = g.nodes.iter().position(|n| matches!(n.op, Op::Softmax | Op::SoftmaxCrossEntropy { .. }));
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
                Op::Softmax => {
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
    for n in keep {
        let value = plan.outputs.get(n).ok_or_else(|| Error::shape("lower_keeping", format!("no node {n:?} in the graph")))?;
        plan.keep.extend(std::iter::once(*value).chain(plan.grads.get(n).copied()));
    }
    Ok(plan)
}
