//! The plan: the lowered program of one step. [`Value`]s (activations, gradients,
//! parameters, state, inputs) and the kernel [`Step`]s that read and write them, in
//! submission order; what each step reads and writes ([`Step::io`]), which the memory
//! planner, the executor, the CPU interpreter and the profile all use.

use std::collections::HashMap;

use super::autotune::TuneKey;
use super::{Init, NodeId};
use crate::kernels::activation::Activation;
use crate::kernels::batchnorm::BatchNorm;
use crate::kernels::conv::{Conv2d, Pass};
use crate::kernels::pool::{GlobalPool2d, Pool2d};
use crate::runtime::tensor::DType;

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
        /// softmax(logits / temperature).
        temperature: f32,
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
            Softmax { logits, probs, .. } => (vec![*logits], vec![*probs]),
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

