//! Model graphs. A [`Graph`] is built forward (the `nn` layers call the builder methods
//! here); shapes are inferred and checked as each node is added, so a mismatch is an error
//! naming the node at build time. [`lower()`] turns a graph into a [`Plan`]: the forward
//! steps, the backward steps autodiff derives from them, and the optimizer step; the
//! [`planner`] assigns buffers; the [`exec`] executor records a training step into one
//! submit. [`cpu`] interprets the same plan with the CPU references (the spec).

pub mod autotune;
pub mod choice;
pub mod cpu;
pub mod exec;
pub mod fold;
pub mod fuse;
pub mod init;
pub mod lower;
pub mod plan;
pub mod planner;
pub mod profile;

pub use exec::{Arena, ExecStats, Executor};

/// Tensors on the host as (name, shape, values), in model order: the parameters, then the
/// state (BatchNorm's running statistics and step count). What the executor reads back and
/// writes, and what a checkpoint holds.
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;
pub use lower::{lower, lower_keeping, Mode, Plan, PoolForward, PoolRoute, Step, ValueId, ValueKind};

use crate::kernels::activation::Activation;
use crate::kernels::check_geometry;
use crate::kernels::conv::Conv2d;
use crate::kernels::pool::Pool2d;
use crate::{Error, Result};

/// Index of a [`Node`] in [`Graph::nodes`], returned by the builder methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// How a parameter starts. `KaimingUniform { fan_in }` is PyTorch's default for Linear
/// and Conv2d weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). `GlorotUniform` is
/// Keras's default for Dense weights: U(-sqrt(6/(fan_in+fan_out)), +sqrt(6/(fan_in+fan_out))).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// U(-1/√fan_in, 1/√fan_in).
    KaimingUniform {
        /// Inputs per output: `in` for Linear, C·R·S for Conv2d.
        fan_in: usize,
    },
    /// U(-√(6/(fan_in + fan_out)), √(6/(fan_in + fan_out))).
    GlorotUniform {
        /// Inputs per output.
        fan_in: usize,
        /// Outputs per input.
        fan_out: usize,
    },
    /// Every element the same value (BatchNorm's weight 1 and bias 0, Keras's zero biases).
    Constant(f32),
}

/// What a node computes. Shapes use N (batch), C (channels or classes), H, W; the inputs
/// are the node's [`Node::inputs`] in the order listed.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The batch of images [B, C, H, W] (or [B, F]), f32.
    Input,
    /// Class labels `[B]`, u32.
    Labels,
    /// A trainable parameter, updated by the optimizer.
    Param {
        /// How it starts.
        init: Init,
    },
    /// Non-trainable state that persists across steps (BatchNorm's running statistics):
    /// starts at `init`, never touched by the optimizer, updated by its op in training.
    State {
        /// The value every element starts at.
        init: f32,
    },
    /// inputs: x [B, C, H, W], weight [K, C, R, S], bias `[K]`
    Conv2d {
        /// Step of the window in both directions.
        stride: usize,
        /// Zero padding on each side, in both directions.
        pad: usize,
    },
    /// Window maximum (padding never wins); the backward routes dy to the saved argmax.
    MaxPool2d {
        /// Window side.
        k: usize,
        /// Step of the window.
        stride: usize,
        /// Padding on each side; at most k/2.
        pad: usize,
    },
    /// Window mean; padding counts as zeros (PyTorch's count_include_pad=True default).
    AvgPool2d {
        /// Window side.
        k: usize,
        /// Step of the window.
        stride: usize,
        /// Zero padding on each side; at most k/2.
        pad: usize,
    },
    /// [B, C, H, W] -> [B, C, 1, 1], each plane's mean (PyTorch's AdaptiveAvgPool2d(1)).
    GlobalAvgPool,
    /// inputs: x [B, in], weight [out, in], bias `[out]`: y = x W^T + b (PyTorch's layout)
    Linear,
    /// inputs: x [B, C, ...], bias `[C]`: y = x + b on axis 1
    Bias,
    /// max(x, 0), elementwise (its own EXACT kernel).
    Relu,
    /// LeakyReLU, Tanh, Sigmoid, GELU (erf): elementwise, same shape.
    Activation(Activation),
    /// Inverted dropout in training (zero with probability p, else x/(1 − p)); the identity
    /// (an alias) in eval mode.
    Dropout {
        /// Drop probability in [0, 1).
        p: f32,
    },
    /// [B, ...] -> [B, prod(...)]: a view, no kernel
    Flatten,
    /// y = a + b, same shapes
    Add,
    /// inputs: x [B, C] or [B, C, H, W], weight `[C]`, bias `[C]`, running_mean `[C]` (state),
    /// running_var `[C]` (state), num_batches_tracked [] (state): PyTorch's BatchNorm1d/2d.
    BatchNorm {
        /// Weight of the new batch statistic in the running ones (PyTorch's 0.1).
        momentum: f32,
        /// Added to the variance before the square root (PyTorch's 1e-5).
        eps: f32,
    },
    /// Row-wise softmax over [B, C] of logits / temperature (inference).
    Softmax {
        /// 1: the plain softmax; a fitted temperature calibrates the probabilities.
        temperature: f32,
    },
    /// inputs: logits [B, C], labels `[B]` -> per-row loss `[B]`; the training loss is its mean.
    /// `smoothing`: label smoothing e in [0, 1) (PyTorch's `label_smoothing`).
    SoftmaxCrossEntropy {
        /// Label smoothing e in [0, 1).
        smoothing: f32,
    },
}

/// One node of a [`Graph`]: an op, its inputs and its output shape.
#[derive(Clone, Debug)]
pub struct Node {
    /// Unique within a model by convention: PyTorch's parameter names (`fc1.weight`),
    /// layer names for the rest. Errors, checkpoints and ONNX export use it.
    pub name: String,
    /// What the node computes.
    pub op: Op,
    /// Operand nodes, in the order [`Op`] lists them; always earlier nodes.
    pub inputs: Vec<NodeId>,
    /// Output shape, inferred and checked when the node was added.
    pub shape: Vec<usize>,
}

/// A model as a list of nodes in creation order (every node's inputs come before it). The
/// builder methods infer each node's shape and check it against its inputs, so a mismatch
/// is an [`Error::Shape`] naming the node when it is added, not when it runs. [`lower()`]
/// turns the graph into a [`Plan`] (forward, autodiff backward, optimizer) for
/// [`Executor`] or [`cpu::CpuExecutor`]. `nn`'s layers build graphs through these methods.
///
/// ```
/// use kiln::graph::{lower, Graph, Init, Mode, Step, ValueKind};
///
/// // x [4, 1, 8, 8] -> conv 3x3 (3 channels, pad 1) -> relu -> 2x2 max pool -> linear -> loss
/// let mut g = Graph::new(0);
/// let x = g.input("x", &[4, 1, 8, 8])?;
/// let w = g.param("conv.weight", &[3, 1, 3, 3], Init::KaimingUniform { fan_in: 9 });
/// let b = g.param("conv.bias", &[3], Init::KaimingUniform { fan_in: 9 });
/// let h = g.conv2d("conv", x, w, Some(b), 1, 1)?;
/// let h = g.relu("relu", h);
/// let h = g.max_pool2d("pool", h, 2, 2, 0)?;
/// assert_eq!(g.node(h).shape, [4, 3, 4, 4]);
/// let h = g.flatten("flatten", h); // a view: [4, 48]
/// let fc = g.param("fc.weight", &[10, 48], Init::KaimingUniform { fan_in: 48 });
/// let logits = g.linear("fc", h, fc, None)?;
/// assert_eq!(g.node(logits).shape, [4, 10]);
/// let labels = g.labels("labels", 4);
/// let loss = g.softmax_cross_entropy("loss", logits, labels)?;
/// assert_eq!(g.node(loss).shape, [4]); // one loss per row
///
/// // shapes are checked as nodes are added: the linear layer wants [N, 48]
/// assert!(g.linear("bad", x, fc, None).is_err()); // and nothing is added
///
/// // training: forward, backward and a gradient for every parameter
/// let plan = lower(&g, Mode::Train)?;
/// assert_eq!(plan.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["conv.weight", "conv.bias", "fc.weight"]);
/// let dw = plan.params[0].grad.expect("conv.weight has a gradient");
/// assert_eq!(plan.values[dw.0].kind, ValueKind::Grad(0));
/// assert_eq!(plan.values[dw.0].shape, [3, 1, 3, 3]);
/// assert_eq!(plan.values[plan.outputs[&logits].0].shape, [4, 10]);
/// // nothing needs the input's gradient, so the conv has no backward-input step
/// assert!(plan.steps.iter().any(|s| matches!(s, Step::Conv2dBackwardWeight { .. })));
/// assert!(!plan.steps.iter().any(|s| matches!(s, Step::Conv2dBackwardInput { .. })));
///
/// // evaluation: the forward only
/// let eval = lower(&g, Mode::Eval)?;
/// assert!(eval.params.iter().all(|p| p.grad.is_none()));
/// assert!(eval.steps.len() < plan.steps.len());
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The nodes in creation order; [`NodeId`] indexes it.
    pub nodes: Vec<Node>,
    /// Seed for parameter initialisation and dropout masks.
    pub seed: u64,
}

/// The most nodes a graph may have: every step of a plan is recorded into one submit, and
/// drivers fail in ways kiln cannot catch long before memory runs out (lavapipe crashed
/// creating the bind groups of a 100,000-layer model; 20,000 worked). Deep networks people
/// train have a few thousand nodes (a ResNet-152 about 500 layers).
pub const MAX_NODES: usize = 10_000;

impl Graph {
    /// `Error::Unsupported` when the graph has more than [`MAX_NODES`] nodes: checked by
    /// [`lower()`] before any plan is made or memory allocated.
    pub fn check_size(&self) -> Result<()> {
        if self.nodes.len() > MAX_NODES {
            return Err(Error::unsupported("graph", format!("{} nodes (layers, parameters and their operations) are more than kiln builds, {MAX_NODES}", self.nodes.len())));
        }
        Ok(())
    }

    /// An empty graph; `seed` drives parameter initialisation and dropout masks.
    pub fn new(seed: u64) -> Graph {
        Graph { nodes: Vec::new(), seed }
    }

    /// The node `id` names. Panics if `id` is not from this graph.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    fn push(&mut self, name: String, op: Op, inputs: Vec<NodeId>, shape: Vec<usize>) -> NodeId {
        self.nodes.push(Node { name, op, inputs, shape });
        NodeId(self.nodes.len() - 1)
    }

    fn shape(&self, id: NodeId) -> &[usize] {
        &self.nodes[id.0].shape
    }

    fn err(&self, name: &str, message: String) -> Error {
        Error::shape(format!("node '{name}'"), message)
    }

    /// The batch input, f32 (`[N, C, H, W]` or `[N, F]`; N is the batch size of every plan
    /// lowered from the graph). Exactly one per graph. `Error::Shape` for an empty dimension.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<NodeId> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(self.err(name, format!("input shape {shape:?} has an empty dimension")));
        }
        let dims: Vec<_> = shape.iter().map(|&d| ("dimension", d)).collect();
        check_geometry(&format!("node '{name}'"), &dims, &[("input", shape)])?;
        Ok(self.push(name.into(), Op::Input, vec![], shape.to_vec()))
    }

    /// Class labels `[batch]`, u32, for [`Graph::softmax_cross_entropy`].
    pub fn labels(&mut self, name: &str, batch: usize) -> NodeId {
        self.push(name.into(), Op::Labels, vec![], vec![batch])
    }

    /// A trainable parameter of `shape`, started by `init`. Its `name` is the checkpoint's
    /// (PyTorch's) name.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> NodeId {
        self.push(name.into(), Op::Param { init }, vec![], shape.to_vec())
    }

    /// Non-trainable state (see [`Op::State`]), a value kept across steps.
    pub fn add_state(&mut self, name: &str, shape: &[usize], init: f32) -> NodeId {
        self.push(name.into(), Op::State { init }, vec![], shape.to_vec())
    }

    /// `Op::Conv2d`: x [N, C, H, W], weight [K, C, R, S], optional bias `[K]` ->
    /// [N, K, (H + 2·pad − R)/stride + 1, (W + 2·pad − S)/stride + 1]. `Error::Shape` when the
    /// channels or bias disagree, a size is 0 or the window does not fit the padded input.
    pub fn conv2d(&mut self, name: &str, x: NodeId, w: NodeId, b: Option<NodeId>, stride: usize, pad: usize) -> Result<NodeId> {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        let (&[n, c, h, wd], &[k, wc, r, s]) = (&xs[..], &ws[..]) else {
            return Err(self.err(name, format!("conv2d needs x [N,C,H,W] and weight [K,C,R,S], got {xs:?} and {ws:?}")));
        };
        if wc != c {
            return Err(self.err(name, format!("input has {c} channels, weight {ws:?} expects {wc}")));
        }
        if let Some(b) = b {
            if self.shape(b) != [k] {
                return Err(self.err(name, format!("bias {:?} should be [{k}]", self.shape(b))));
            }
        }
        let geom = Conv2d { batch: n, cin: c, h, w: wd, cout: k, r, s, stride, pad };
        geom.validate(name)?;
        let mut inputs = vec![x, w];
        inputs.extend(b);
        Ok(self.push(name.into(), Op::Conv2d { stride, pad }, inputs, vec![n, k, geom.oh(), geom.ow()]))
    }

    /// `Op::MaxPool2d`: a k×k window every `stride`, `pad` on each side (at most k/2), over
    /// [N, C, H, W] -> [N, C, OH, OW] (floor division, PyTorch's ceil_mode=False).
    pub fn max_pool2d(&mut self, name: &str, x: NodeId, k: usize, stride: usize, pad: usize) -> Result<NodeId> {
        let xs = self.shape(x).to_vec();
        let [n, c, h, w] = xs[..] else {
            return Err(self.err(name, format!("max_pool2d needs [N,C,H,W], got {xs:?}")));
        };
        let p = Pool2d { batch: n, channels: c, h, w, k, stride, pad };
        p.validate(name)?;
        Ok(self.push(name.into(), Op::MaxPool2d { k, stride, pad }, vec![x], vec![n, c, p.oh(), p.ow()]))
    }

    /// Average pooling, PyTorch's `nn.AvgPool2d(k, stride, pad)` with its defaults
    /// count_include_pad=True (padding counts as zeros in every window's k*k divisor) and
    /// ceil_mode=False.
    pub fn avg_pool2d(&mut self, name: &str, x: NodeId, k: usize, stride: usize, pad: usize) -> Result<NodeId> {
        let xs = self.shape(x).to_vec();
        let [n, c, h, w] = xs[..] else {
            return Err(self.err(name, format!("avg_pool2d needs [N,C,H,W], got {xs:?}")));
        };
        let p = Pool2d { batch: n, channels: c, h, w, k, stride, pad };
        p.validate(name)?;
        Ok(self.push(name.into(), Op::AvgPool2d { k, stride, pad }, vec![x], vec![n, c, p.oh(), p.ow()]))
    }

    /// Global average pooling: [N, C, H, W] -> [N, C, 1, 1], as PyTorch's
    /// `nn.AdaptiveAvgPool2d(1)` (and ONNX GlobalAveragePool); `flatten` (a free view) makes
    /// it [N, C] for a Linear layer.
    pub fn global_avg_pool(&mut self, name: &str, x: NodeId) -> Result<NodeId> {
        let xs = self.shape(x).to_vec();
        let [n, c, _, _] = xs[..] else {
            return Err(self.err(name, format!("global_avg_pool needs [N,C,H,W], got {xs:?}")));
        };
        Ok(self.push(name.into(), Op::GlobalAvgPool, vec![x], vec![n, c, 1, 1]))
    }

    /// `Op::Linear`: x [N, in], weight [out, in], optional bias `[out]` -> [N, out]
    /// (PyTorch's `nn.Linear` layout). Flatten a 4-D input first.
    pub fn linear(&mut self, name: &str, x: NodeId, w: NodeId, b: Option<NodeId>) -> Result<NodeId> {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        let (&[n, inp], &[out, win]) = (&xs[..], &ws[..]) else {
            return Err(self.err(name, format!("linear needs x [N,in] and weight [out,in], got {xs:?} and {ws:?}")));
        };
        if win != inp {
            return Err(self.err(name, format!("input has {inp} features, weight {ws:?} expects {win}")));
        }
        // The model description's names: `inputs` and `outputs` of a Linear layer.
        check_geometry(&format!("node '{name}'"), &[("inputs", inp), ("outputs", out)], &[("weight", &ws), ("output", &[n, out])])?;
        if let Some(b) = b {
            if self.shape(b) != [out] {
                return Err(self.err(name, format!("bias {:?} should be [{out}]", self.shape(b))));
            }
        }
        let mut inputs = vec![x, w];
        inputs.extend(b);
        Ok(self.push(name.into(), Op::Linear, inputs, vec![n, out]))
    }

    /// y = x + b, b broadcast over every axis but 1 (features or channels).
    pub fn bias(&mut self, name: &str, x: NodeId, b: NodeId) -> Result<NodeId> {
        let (xs, bs) = (self.shape(x).to_vec(), self.shape(b).to_vec());
        if xs.len() < 2 || bs != [xs[1]] {
            return Err(self.err(name, format!("bias {bs:?} for input {xs:?}: expected [{}]", xs.get(1).copied().unwrap_or(0))));
        }
        Ok(self.push(name.into(), Op::Bias, vec![x, b], xs))
    }

    /// `Op::Relu`: max(x, 0), same shape.
    pub fn relu(&mut self, name: &str, x: NodeId) -> NodeId {
        let s = self.shape(x).to_vec();
        self.push(name.into(), Op::Relu, vec![x], s)
    }

    /// An elementwise activation (see [`Activation`]); a non-finite LeakyReLU slope is an error.
    pub fn activation(&mut self, name: &str, x: NodeId, act: Activation) -> Result<NodeId> {
        act.validate(&format!("node '{name}'"))?;
        let s = self.shape(x).to_vec();
        Ok(self.push(name.into(), Op::Activation(act), vec![x], s))
    }

    /// y = x for x > 0, slope * x otherwise (PyTorch's default slope is
    /// [`crate::kernels::activation::LEAKY_RELU_DEFAULT_SLOPE`], 0.01).
    pub fn leaky_relu(&mut self, name: &str, x: NodeId, slope: f32) -> Result<NodeId> {
        self.activation(name, x, Activation::LeakyRelu { slope })
    }

    /// Tanh, same shape.
    pub fn tanh(&mut self, name: &str, x: NodeId) -> NodeId {
        self.activation(name, x, Activation::Tanh).expect("tanh has no parameter to reject")
    }

    /// The logistic sigmoid 1/(1 + e^(−x)), same shape.
    pub fn sigmoid(&mut self, name: &str, x: NodeId) -> NodeId {
        self.activation(name, x, Activation::Sigmoid).expect("sigmoid has no parameter to reject")
    }

    /// GELU, exact (erf) form: PyTorch's `nn.GELU()` default (approximate='none').
    pub fn gelu(&mut self, name: &str, x: NodeId) -> NodeId {
        self.activation(name, x, Activation::Gelu).expect("gelu has no parameter to reject")
    }

    /// `Op::Dropout`: zeroes each element with probability `p` and scales the rest by
    /// 1/(1 − p) in training; the identity in evaluation. `Error::Shape` unless p is in [0, 1).
    pub fn dropout(&mut self, name: &str, x: NodeId, p: f32) -> Result<NodeId> {
        if !(0.0..1.0).contains(&p) {
            return Err(self.err(name, format!("dropout probability {p} must be in [0, 1)")));
        }
        let s = self.shape(x).to_vec();
        Ok(self.push(name.into(), Op::Dropout { p }, vec![x], s))
    }

    /// `Op::Flatten`: [N, ...] -> [N, product of the rest]; a view, no kernel.
    pub fn flatten(&mut self, name: &str, x: NodeId) -> NodeId {
        let s = self.shape(x);
        let shape = vec![s[0], s[1..].iter().product()];
        self.push(name.into(), Op::Flatten, vec![x], shape)
    }

    /// `Op::Add`: a + b elementwise (residual connections). `Error::Shape` unless the shapes
    /// are equal.
    pub fn add(&mut self, name: &str, a: NodeId, b: NodeId) -> Result<NodeId> {
        if self.shape(a) != self.shape(b) {
            return Err(self.err(name, format!("add of {:?} and {:?}", self.shape(a), self.shape(b))));
        }
        let s = self.shape(a).to_vec();
        Ok(self.push(name.into(), Op::Add, vec![a, b], s))
    }

    /// PyTorch's BatchNorm1d (x [N, C]) or BatchNorm2d (x [N, C, H, W]) over `channels`
    /// channels, with its own `{name}.weight` (1) and `{name}.bias` (0) parameters and
    /// `{name}.running_mean` (0), `{name}.running_var` (1), `{name}.num_batches_tracked`
    /// (0, shape []) state. PyTorch's defaults: momentum 0.1, eps 1e-5
    /// (`ops::batchnorm::{MOMENTUM, EPS}`).
    pub fn batch_norm(&mut self, name: &str, x: NodeId, channels: usize, momentum: f32, eps: f32) -> Result<NodeId> {
        let xs = self.shape(x).to_vec();
        crate::kernels::batchnorm::BatchNorm::for_shape(&format!("node '{name}'"), &xs, momentum, eps)?;
        if xs[1] != channels {
            return Err(self.err(name, format!("input {xs:?} has {} channels, the layer expects {channels}", xs[1])));
        }
        let weight = self.param(&format!("{name}.weight"), &[channels], Init::Constant(1.0));
        let bias = self.param(&format!("{name}.bias"), &[channels], Init::Constant(0.0));
        let mean = self.add_state(&format!("{name}.running_mean"), &[channels], 0.0);
        let var = self.add_state(&format!("{name}.running_var"), &[channels], 1.0);
        let count = self.add_state(&format!("{name}.num_batches_tracked"), &[], 0.0);
        Ok(self.push(name.into(), Op::BatchNorm { momentum, eps }, vec![x, weight, bias, mean, var, count], xs))
    }

    /// `Op::Softmax`: row-wise probabilities of logits [N, C], for inference graphs.
    pub fn softmax(&mut self, name: &str, logits: NodeId) -> Result<NodeId> {
        self.softmax_tempered(name, logits, 1.0)
    }

    /// [`Graph::softmax`] of logits / `temperature` (finite, above 0): temperature scaling.
    pub fn softmax_tempered(&mut self, name: &str, logits: NodeId, temperature: f32) -> Result<NodeId> {
        let s = self.shape(logits).to_vec();
        if s.len() != 2 {
            return Err(self.err(name, format!("softmax needs [N, classes], got {s:?}")));
        }
        crate::kernels::softmax::check_temperature(temperature).map_err(|e| self.err(name, e.to_string()))?;
        Ok(self.push(name.into(), Op::Softmax { temperature }, vec![logits], s))
    }

    /// `Op::SoftmaxCrossEntropy` without label smoothing: logits [N, C] and a labels node
    /// `[N]` -> per-row loss `[N]`. Training minimises its mean; the metrics (loss sum, correct,
    /// confusion) come from it too.
    pub fn softmax_cross_entropy(&mut self, name: &str, logits: NodeId, labels: NodeId) -> Result<NodeId> {
        self.softmax_cross_entropy_smoothed(name, logits, labels, 0.0)
    }

    /// Cross-entropy against the smoothed target (1 - e) onehot + e / C.
    pub fn softmax_cross_entropy_smoothed(&mut self, name: &str, logits: NodeId, labels: NodeId, smoothing: f32) -> Result<NodeId> {
        let (ls, ys) = (self.shape(logits).to_vec(), self.shape(labels).to_vec());
        if ls.len() != 2 || ys != [ls[0]] || self.node(labels).op != Op::Labels {
            return Err(self.err(name, format!("cross-entropy needs logits [N, C] and labels [N], got {ls:?} and {ys:?}")));
        }
        crate::kernels::softmax::check_smoothing(smoothing)?;
        Ok(self.push(name.into(), Op::SoftmaxCrossEntropy { smoothing }, vec![logits, labels], vec![ls[0]]))
    }

    /// Parameters in creation order: (node, name, shape).
    pub fn params(&self) -> Vec<(NodeId, &str, &[usize])> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Param { .. }))
            .map(|(i, n)| (NodeId(i), n.name.as_str(), n.shape.as_slice()))
            .collect()
    }

    /// Non-trainable state in creation order: (node, name, shape).
    pub fn state(&self) -> Vec<(NodeId, &str, &[usize])> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::State { .. }))
            .map(|(i, n)| (NodeId(i), n.name.as_str(), n.shape.as_slice()))
            .collect()
    }
}
