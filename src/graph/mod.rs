//! Model graphs. A [`Graph`] is built forward (the `nn` layers call the builder methods
//! here); shapes are inferred and checked as each node is added, so a mismatch is an error
//! naming the node at build time. [`lower`] turns a graph into a [`Plan`]: the forward
//! steps, the backward steps autodiff derives from them, and the optimizer step; the
//! [`planner`] assigns buffers; the [`exec`] executor records a training step into one
//! submit. [`cpu`] interprets the same plan with the CPU references (the spec).

pub mod cpu;
pub mod exec;
pub mod fold;
pub mod lower;
pub mod planner;

pub use exec::{ExecStats, Executor};
pub use lower::{lower, Mode, Plan, Step, ValueId, ValueKind};

use crate::ops::activation::Activation;
use crate::ops::conv2d::Conv2d;
use crate::ops::pool::Pool2d;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// How a parameter starts. `KaimingUniform { fan_in }` is PyTorch's default for Linear
/// and Conv2d weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). `GlorotUniform` is
/// Keras's default for Dense weights: U(-sqrt(6/(fan_in+fan_out)), +sqrt(6/(fan_in+fan_out))).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    KaimingUniform { fan_in: usize },
    GlorotUniform { fan_in: usize, fan_out: usize },
    Constant(f32),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The batch of images [B, C, H, W] (or [B, F]), f32.
    Input,
    /// Class labels [B], u32.
    Labels,
    Param { init: Init },
    /// Non-trainable state that persists across steps (BatchNorm's running statistics):
    /// starts at `init`, never touched by the optimizer, updated by its op in training.
    State { init: f32 },
    /// inputs: x [B, C, H, W], weight [K, C, R, S], bias [K]
    Conv2d { stride: usize, pad: usize },
    MaxPool2d { k: usize, stride: usize, pad: usize },
    /// Window mean; padding counts as zeros (PyTorch's count_include_pad=True default).
    AvgPool2d { k: usize, stride: usize, pad: usize },
    /// [B, C, H, W] -> [B, C, 1, 1], each plane's mean (PyTorch's AdaptiveAvgPool2d(1)).
    GlobalAvgPool,
    /// inputs: x [B, in], weight [out, in], bias [out]: y = x W^T + b (PyTorch's layout)
    Linear,
    /// inputs: x [B, C, ...], bias [C]: y = x + b on axis 1
    Bias,
    Relu,
    /// LeakyReLU, Tanh, Sigmoid, GELU (erf): elementwise, same shape.
    Activation(Activation),
    Dropout { p: f32 },
    /// [B, ...] -> [B, prod(...)]: a view, no kernel
    Flatten,
    /// y = a + b, same shapes
    Add,
    /// inputs: x [B, C] or [B, C, H, W], weight [C], bias [C], running_mean [C] (state),
    /// running_var [C] (state), num_batches_tracked [] (state): PyTorch's BatchNorm1d/2d.
    BatchNorm { momentum: f32, eps: f32 },
    /// Row-wise softmax over [B, C] (inference).
    Softmax,
    /// inputs: logits [B, C], labels [B] -> per-row loss [B]; the training loss is its mean.
    /// `smoothing`: label smoothing e in [0, 1) (PyTorch's `label_smoothing`).
    SoftmaxCrossEntropy { smoothing: f32 },
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Seed for parameter initialisation and dropout masks.
    pub seed: u64,
}

impl Graph {
    pub fn new(seed: u64) -> Graph {
        Graph { nodes: Vec::new(), seed }
    }

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

    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<NodeId> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(self.err(name, format!("input shape {shape:?} has an empty dimension")));
        }
        Ok(self.push(name.into(), Op::Input, vec![], shape.to_vec()))
    }

    pub fn labels(&mut self, name: &str, batch: usize) -> NodeId {
        self.push(name.into(), Op::Labels, vec![], vec![batch])
    }

    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> NodeId {
        self.push(name.into(), Op::Param { init }, vec![], shape.to_vec())
    }

    /// Non-trainable state (see [`Op::State`]), a value kept across steps.
    pub fn add_state(&mut self, name: &str, shape: &[usize], init: f32) -> NodeId {
        self.push(name.into(), Op::State { init }, vec![], shape.to_vec())
    }

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

    pub fn linear(&mut self, name: &str, x: NodeId, w: NodeId, b: Option<NodeId>) -> Result<NodeId> {
        let (xs, ws) = (self.shape(x).to_vec(), self.shape(w).to_vec());
        let (&[n, inp], &[out, win]) = (&xs[..], &ws[..]) else {
            return Err(self.err(name, format!("linear needs x [N,in] and weight [out,in], got {xs:?} and {ws:?}")));
        };
        if win != inp {
            return Err(self.err(name, format!("input has {inp} features, weight {ws:?} expects {win}")));
        }
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
    /// [`crate::ops::activation::LEAKY_RELU_DEFAULT_SLOPE`], 0.01).
    pub fn leaky_relu(&mut self, name: &str, x: NodeId, slope: f32) -> Result<NodeId> {
        self.activation(name, x, Activation::LeakyRelu { slope })
    }

    pub fn tanh(&mut self, name: &str, x: NodeId) -> NodeId {
        self.activation(name, x, Activation::Tanh).expect("tanh has no parameter to reject")
    }

    pub fn sigmoid(&mut self, name: &str, x: NodeId) -> NodeId {
        self.activation(name, x, Activation::Sigmoid).expect("sigmoid has no parameter to reject")
    }

    /// GELU, exact (erf) form: PyTorch's `nn.GELU()` default (approximate='none').
    pub fn gelu(&mut self, name: &str, x: NodeId) -> NodeId {
        self.activation(name, x, Activation::Gelu).expect("gelu has no parameter to reject")
    }

    pub fn dropout(&mut self, name: &str, x: NodeId, p: f32) -> Result<NodeId> {
        if !(0.0..1.0).contains(&p) {
            return Err(self.err(name, format!("dropout probability {p} must be in [0, 1)")));
        }
        let s = self.shape(x).to_vec();
        Ok(self.push(name.into(), Op::Dropout { p }, vec![x], s))
    }

    pub fn flatten(&mut self, name: &str, x: NodeId) -> NodeId {
        let s = self.shape(x);
        let shape = vec![s[0], s[1..].iter().product()];
        self.push(name.into(), Op::Flatten, vec![x], shape)
    }

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
        crate::ops::batchnorm::BatchNorm::for_shape(&format!("node '{name}'"), &xs, momentum, eps)?;
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

    pub fn softmax(&mut self, name: &str, logits: NodeId) -> Result<NodeId> {
        let s = self.shape(logits).to_vec();
        if s.len() != 2 {
            return Err(self.err(name, format!("softmax needs [N, classes], got {s:?}")));
        }
        Ok(self.push(name.into(), Op::Softmax, vec![logits], s))
    }

    pub fn softmax_cross_entropy(&mut self, name: &str, logits: NodeId, labels: NodeId) -> Result<NodeId> {
        self.softmax_cross_entropy_smoothed(name, logits, labels, 0.0)
    }

    /// Cross-entropy against the smoothed target (1 - e) onehot + e / C.
    pub fn softmax_cross_entropy_smoothed(&mut self, name: &str, logits: NodeId, labels: NodeId, smoothing: f32) -> Result<NodeId> {
        let (ls, ys) = (self.shape(logits).to_vec(), self.shape(labels).to_vec());
        if ls.len() != 2 || ys != [ls[0]] || self.node(labels).op != Op::Labels {
            return Err(self.err(name, format!("cross-entropy needs logits [N, C] and labels [N], got {ls:?} and {ys:?}")));
        }
        crate::ops::softmax::check_smoothing(smoothing)?;
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
