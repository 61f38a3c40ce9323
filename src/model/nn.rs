//! Layers on top of the graph builder, named like PyTorch's modules so checkpoints map
//! one to one (`conv1.weight` `[16, 1, 5, 5]`, `fc2.bias` `[10]`, ...); [`Model`], the
//! serialisable description of a classifier that checkpoints carry; and the built-in models
//! of the MNIST application ([`ModelKind`]).
//!
//! A model is a [`Sequential`] of named [`LayerSpec`]s. Each layer implements [`Layer`]:
//! it adds its nodes to a [`Graph`]. A layer of your own that is not one of these can still
//! build graphs (implement [`Layer`]), but only [`LayerSpec`]s can be written into a
//! checkpoint and rebuilt from it.
//!
//! ```
//! use kiln::graph::Graph;
//! use kiln::nn::{Layer, Linear, ReLU, Sequential};
//! let mut g = Graph::new(7);
//! let x = g.input("input", &[4, 784]).unwrap();
//! let mlp = Sequential::new().add("fc1", Linear::new(784, 32)).add("relu", ReLU).add("fc2", Linear::new(32, 10));
//! let logits = mlp.build(&mut g, "", x).unwrap();
//! assert_eq!(g.node(logits).shape, [4, 10]);
//! let names: Vec<&str> = g.params().iter().map(|p| p.1).collect();
//! assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
//! ```

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, Init, NodeId};
pub use crate::kernels::activation::Activation;
use crate::Result;

/// A layer adds its nodes to a graph under a name prefix.
pub trait Layer {
    /// Adds this layer's nodes (parameters named `{name}.weight`, ...) after `x`.
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId>;
}

/// 2-D convolution with bias; square kernel, PyTorch's default initialisation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    /// C: channels in.
    pub in_channels: usize,
    /// K: channels out.
    pub out_channels: usize,
    /// The square window's side.
    pub kernel: usize,
    /// The step between windows.
    pub stride: usize,
    /// Zeros added on every side.
    pub padding: usize,
}

impl Conv2d {
    /// Stride 1, no padding.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv2d {
        Conv2d { in_channels, out_channels, kernel, stride: 1, padding: 0 }
    }
    /// Zero padding on every side.
    pub fn padding(self, padding: usize) -> Conv2d {
        Conv2d { padding, ..self }
    }
    /// The step between windows.
    pub fn stride(self, stride: usize) -> Conv2d {
        Conv2d { stride, ..self }
    }
}

impl Layer for Conv2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let fan_in = self.in_channels * self.kernel * self.kernel;
        let init = Init::KaimingUniform { fan_in };
        let w = g.param(&format!("{name}.weight"), &[self.out_channels, self.in_channels, self.kernel, self.kernel], init);
        let b = g.param(&format!("{name}.bias"), &[self.out_channels], init);
        g.conv2d(name, x, w, Some(b), self.stride, self.padding)
    }
}

/// Fully connected layer: y = x W^T + b, W [out, in].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    /// Features in.
    pub inputs: usize,
    /// Features out.
    pub outputs: usize,
    /// Whose initialisation the parameters start from.
    pub init: Initialiser,
}

/// Whose default initialisation a layer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Initialiser {
    /// nn.Linear's: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    PyTorch,
    /// keras.layers.Dense's: Glorot-uniform weights, zero biases.
    Keras,
}

impl Linear {
    /// PyTorch's initialisation.
    pub fn new(inputs: usize, outputs: usize) -> Linear {
        Linear { inputs, outputs, init: Initialiser::PyTorch }
    }
    /// Another initialisation.
    pub fn init(self, init: Initialiser) -> Linear {
        Linear { init, ..self }
    }
}

impl Layer for Linear {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let (fan_in, fan_out) = (self.inputs, self.outputs);
        let (wi, bi) = match self.init {
            Initialiser::PyTorch => (Init::KaimingUniform { fan_in }, Init::KaimingUniform { fan_in }),
            Initialiser::Keras => (Init::GlorotUniform { fan_in, fan_out }, Init::Constant(0.0)),
        };
        let w = g.param(&format!("{name}.weight"), &[fan_out, fan_in], wi);
        let b = g.param(&format!("{name}.bias"), &[fan_out], bi);
        g.linear(name, x, w, Some(b))
    }
}

/// Max pooling over square windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxPool2d {
    /// The square window's side.
    pub kernel: usize,
    /// The step between windows.
    pub stride: usize,
}

impl Layer for MaxPool2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.max_pool2d(name, x, self.kernel, self.stride, 0)
    }
}

/// max(x, 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReLU;

impl Layer for ReLU {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        Ok(g.relu(name, x))
    }
}

/// Zeroes each activation with probability `p` in training (scaling the rest by 1/(1-p));
/// the identity in evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dropout(pub f32);

impl Layer for Dropout {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.dropout(name, x, self.0)
    }
}

/// [B, ...] -> [B, prod(...)].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flatten;

impl Layer for Flatten {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        Ok(g.flatten(name, x))
    }
}

/// Average pooling over square windows (PyTorch's nn.AvgPool2d: padding counts as zeros).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvgPool2d {
    /// The square window's side.
    pub kernel: usize,
    /// The step between windows.
    pub stride: usize,
    /// Zeros added on every side (counted in each window's mean).
    pub padding: usize,
}

impl Layer for AvgPool2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.avg_pool2d(name, x, self.kernel, self.stride, self.padding)
    }
}

/// [N, C, H, W] -> [N, C, 1, 1], each plane's mean (nn.AdaptiveAvgPool2d(1)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalAvgPool;

impl Layer for GlobalAvgPool {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.global_avg_pool(name, x)
    }
}

/// An elementwise activation other than ReLU: LeakyReLU, Tanh, Sigmoid, GELU (erf form).
impl Layer for Activation {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.activation(name, x, *self)
    }
}

/// Batch normalisation over the channels of [N, C, H, W] (BatchNorm2d) or the features of
/// [N, C] (BatchNorm1d), with PyTorch's momentum 0.1 and eps 1e-5: `{name}.weight`,
/// `.bias`, `.running_mean`, `.running_var`, `.num_batches_tracked`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    /// C: the channels (or features) normalised.
    pub channels: usize,
}

impl Layer for BatchNorm {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.batch_norm(name, x, self.channels, crate::kernels::batchnorm::MOMENTUM, crate::kernels::batchnorm::EPS)
    }
}

/// y = x + body(x): a residual block; `body` must keep the shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Residual {
    /// The layers whose output is added to the block's input.
    pub body: Sequential,
}

impl Layer for Residual {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        let y = self.body.build(g, name, x)?;
        g.add(&format!("{name}.add"), x, y)
    }
}

/// Every layer kiln can describe in a checkpoint: what [`Sequential`] holds, so a model
/// built from these layers can be written down and built again from its description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerSpec {
    /// See [`Conv2d`].
    Conv2d(Conv2d),
    /// See [`Linear`].
    Linear(Linear),
    /// See [`MaxPool2d`].
    MaxPool2d(MaxPool2d),
    /// See [`ReLU`].
    Relu,
    /// See [`Dropout`]: the drop probability.
    Dropout(f32),
    /// See [`Flatten`].
    Flatten,
    /// See [`Residual`].
    Residual(Residual),
    /// See [`AvgPool2d`].
    AvgPool2d(AvgPool2d),
    /// See [`GlobalAvgPool`].
    GlobalAvgPool,
    /// LeakyReLU, Tanh, Sigmoid or GELU.
    Activation(Activation),
    /// See [`BatchNorm`].
    BatchNorm(BatchNorm),
}

impl Layer for LayerSpec {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        match self {
            LayerSpec::Conv2d(l) => l.build(g, name, x),
            LayerSpec::Linear(l) => l.build(g, name, x),
            LayerSpec::MaxPool2d(l) => l.build(g, name, x),
            LayerSpec::Relu => ReLU.build(g, name, x),
            LayerSpec::Dropout(p) => Dropout(*p).build(g, name, x),
            LayerSpec::Flatten => Flatten.build(g, name, x),
            LayerSpec::Residual(l) => l.build(g, name, x),
            LayerSpec::AvgPool2d(l) => l.build(g, name, x),
            LayerSpec::GlobalAvgPool => GlobalAvgPool.build(g, name, x),
            LayerSpec::Activation(l) => l.build(g, name, x),
            LayerSpec::BatchNorm(l) => l.build(g, name, x),
        }
    }
}

macro_rules! into_spec {
    ($($t:ident => $e:expr),* $(,)?) => {
        $(impl From<$t> for LayerSpec {
            fn from(l: $t) -> LayerSpec {
                let f: fn($t) -> LayerSpec = $e;
                f(l)
            }
        })*
    };
}

into_spec! {
    Conv2d => LayerSpec::Conv2d,
    Linear => LayerSpec::Linear,
    MaxPool2d => LayerSpec::MaxPool2d,
    ReLU => |_| LayerSpec::Relu,
    Dropout => |d| LayerSpec::Dropout(d.0),
    Flatten => |_| LayerSpec::Flatten,
    Residual => LayerSpec::Residual,
    AvgPool2d => LayerSpec::AvgPool2d,
    GlobalAvgPool => |_| LayerSpec::GlobalAvgPool,
    Activation => LayerSpec::Activation,
    BatchNorm => LayerSpec::BatchNorm,
}

/// Layers applied in order; each is named (the parameter names' prefix: `conv1` gives
/// `conv1.weight`). Inside a [`Residual`], names are joined with a dot (`block1.conv1`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sequential {
    /// (name, layer) in order.
    pub layers: Vec<(String, LayerSpec)>,
}

impl Sequential {
    /// No layers yet.
    pub fn new() -> Sequential {
        Sequential::default()
    }
    /// Appends `layer` under `name`.
    pub fn add(mut self, name: &str, layer: impl Into<LayerSpec>) -> Sequential {
        self.layers.push((name.to_string(), layer.into()));
        self
    }
}

impl Layer for Sequential {
    fn build(&self, g: &mut Graph, prefix: &str, mut x: NodeId) -> Result<NodeId> {
        for (name, layer) in &self.layers {
            let full = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            x = layer.build(g, &full, x)?;
        }
        Ok(x)
    }
}

/// A classifier's full description: what a checkpoint records (as JSON in its metadata)
/// so that any program can rebuild the model from the file alone.
///
/// ```
/// use kiln::nn::{Conv2d, Flatten, Linear, MaxPool2d, Model, ReLU, Sequential};
/// let model = Model::new(
///     "tiny",
///     Sequential::new()
///         .add("conv1", Conv2d::new(1, 4, 3).padding(1))
///         .add("relu1", ReLU)
///         .add("pool1", MaxPool2d { kernel: 2, stride: 2 })
///         .add("flatten", Flatten)
///         .add("fc", Linear::new(4 * 14 * 14, 10)),
/// );
/// let text = model.to_json();
/// assert_eq!(Model::from_json(&text).unwrap(), model);
/// let graph = model.build(8, 1).unwrap(); // batch 8, seed 1
/// assert_eq!(graph.graph.node(graph.logits).shape, [8, 10]);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// A short name (`cnn`, `mlp`, or the user's).
    pub name: String,
    /// One input image: [channels, height, width].
    pub input: [usize; 3],
    /// The layers, input to logits.
    pub layers: Sequential,
}

impl Model {
    /// A model of 28x28 single-channel images (MNIST's).
    pub fn new(name: &str, layers: Sequential) -> Model {
        Model { name: name.to_string(), input: [1, 28, 28], layers }
    }

    /// The short name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The description as one line of JSON (what a checkpoint's metadata holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a model description always serialises")
    }

    /// Reads a description written by [`Model::to_json`].
    pub fn from_json(text: &str) -> std::result::Result<Model, String> {
        serde_json::from_str(text).map_err(|e| format!("not a kiln model description: {e}"))
    }

    /// The training graph for batches of `batch` images, parameters initialised from
    /// `seed`: input -> layers -> logits -> cross-entropy with `labels`.
    pub fn build(&self, batch: usize, seed: u64) -> Result<ClassifierGraph> {
        self.build_smoothed(batch, seed, 0.0)
    }

    /// [`Model::build`] with label smoothing in the loss.
    pub fn build_smoothed(&self, batch: usize, seed: u64, smoothing: f32) -> Result<ClassifierGraph> {
        let mut graph = Graph::new(seed);
        let [c, h, w] = self.input;
        let input = graph.input("input", &[batch, c, h, w])?;
        let labels = graph.labels("labels", batch);
        let logits = self.layers.build(&mut graph, "", input)?;
        graph.check_size()?;
        let loss = graph.softmax_cross_entropy_smoothed("loss", logits, labels, smoothing)?;
        Ok(ClassifierGraph { graph, input, labels, logits, loss })
    }

    /// The inference graph: input -> logits -> softmax.
    pub fn build_inference(&self, batch: usize) -> Result<Inference> {
        self.build_calibrated(batch, 1.0)
    }

    /// The inference graph with its probabilities read at `temperature`:
    /// softmax(logits / temperature), a checkpoint's calibration.
    pub fn build_calibrated(&self, batch: usize, temperature: f32) -> Result<Inference> {
        let mut graph = Graph::new(0);
        let [c, h, w] = self.input;
        let input = graph.input("input", &[batch, c, h, w])?;
        let logits = self.layers.build(&mut graph, "", input)?;
        graph.check_size()?;
        let probs = graph.softmax_tempered("probs", logits, temperature)?;
        Ok(Inference { graph, input, logits, probs })
    }
}

/// A classifier graph: input [B, 1, 28, 28] -> logits, plus labels and the loss.
pub struct ClassifierGraph {
    /// The graph, parameters initialised from its seed.
    pub graph: Graph,
    /// The batch of images [B, C, H, W].
    pub input: NodeId,
    /// The batch's labels [B].
    pub labels: NodeId,
    /// The model's output [B, classes].
    pub logits: NodeId,
    /// Per-row cross-entropy [B]; training minimises its mean.
    pub loss: NodeId,
}

/// The model kinds of the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// conv(1->16, 5x5, pad 2)-ReLU-maxpool 2 -> conv(16->32, 5x5, pad 2)-ReLU-maxpool 2
    /// -> flatten -> linear(1568->128)-ReLU -> linear(128->10)
    Cnn,
    /// The original tutorial's Keras model: flatten -> linear(784->512)-ReLU -> dropout 0.2
    /// -> linear(512->10), with Keras's initialisation
    Mlp,
    /// LeNet-5 as LeCun et al. (1998) built it, on 28x28 inputs padded by 2 (their 32x32):
    /// conv(1->6, 5x5, pad 2)-tanh-avgpool 2 -> conv(6->16, 5x5)-tanh-avgpool 2 -> flatten
    /// -> linear(400->120)-tanh -> linear(120->84)-tanh -> linear(84->10)
    Lenet5,
    /// A stronger CNN with batch normalisation: [conv 3x3 -> BN -> ReLU] x2 (32) -> maxpool 2
    /// -> [conv 3x3 -> BN -> ReLU] x2 (64) -> maxpool 2 -> flatten -> linear(3136->256) -> BN
    /// -> ReLU -> dropout 0.2 -> linear(256->10)
    CnnBn,
}

impl ModelKind {
    /// The name `--model` takes and checkpoints record.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Cnn => "cnn",
            ModelKind::Lenet5 => "lenet5",
            ModelKind::CnnBn => "cnn-bn",
            ModelKind::Mlp => "mlp",
        }
    }

    /// The model's layers.
    pub fn layers(self) -> Sequential {
        match self {
            ModelKind::Cnn => Sequential::new()
                .add("conv1", Conv2d::new(1, 16, 5).padding(2))
                .add("relu1", ReLU)
                .add("pool1", MaxPool2d { kernel: 2, stride: 2 })
                .add("conv2", Conv2d::new(16, 32, 5).padding(2))
                .add("relu2", ReLU)
                .add("pool2", MaxPool2d { kernel: 2, stride: 2 })
                .add("flatten", Flatten)
                .add("fc1", Linear::new(32 * 7 * 7, 128))
                .add("relu3", ReLU)
                .add("fc2", Linear::new(128, 10)),
            // Keras's initialisation, as the tutorial's model had
            ModelKind::Mlp => Sequential::new()
                .add("flatten", Flatten)
                .add("fc1", Linear::new(28 * 28, 512).init(Initialiser::Keras))
                .add("relu1", ReLU)
                .add("dropout", Dropout(0.2))
                .add("fc2", Linear::new(512, 10).init(Initialiser::Keras)),
            ModelKind::Lenet5 => Sequential::new()
                .add("conv1", Conv2d::new(1, 6, 5).padding(2))
                .add("tanh1", Activation::Tanh)
                .add("pool1", AvgPool2d { kernel: 2, stride: 2, padding: 0 })
                .add("conv2", Conv2d::new(6, 16, 5))
                .add("tanh2", Activation::Tanh)
                .add("pool2", AvgPool2d { kernel: 2, stride: 2, padding: 0 })
                .add("flatten", Flatten)
                .add("fc1", Linear::new(16 * 5 * 5, 120))
                .add("tanh3", Activation::Tanh)
                .add("fc2", Linear::new(120, 84))
                .add("tanh4", Activation::Tanh)
                .add("fc3", Linear::new(84, 10)),
            ModelKind::CnnBn => {
                let block = |s: Sequential, i: usize, cin: usize, cout: usize| {
                    s.add(&format!("conv{i}"), Conv2d::new(cin, cout, 3).padding(1))
                        .add(&format!("bn{i}"), BatchNorm { channels: cout })
                        .add(&format!("relu{i}"), ReLU)
                };
                let s = block(Sequential::new(), 1, 1, 32);
                let s = block(s, 2, 32, 32).add("pool1", MaxPool2d { kernel: 2, stride: 2 });
                let s = block(s, 3, 32, 64);
                block(s, 4, 64, 64)
                    .add("pool2", MaxPool2d { kernel: 2, stride: 2 })
                    .add("flatten", Flatten)
                    .add("fc1", Linear::new(64 * 7 * 7, 256))
                    .add("bn5", BatchNorm { channels: 256 })
                    .add("relu5", ReLU)
                    .add("dropout", Dropout(0.2))
                    .add("fc2", Linear::new(256, 10))
            }
        }
    }

    /// The model's description.
    pub fn spec(self) -> Model {
        Model::new(self.name(), self.layers())
    }

    /// The model for batches of `batch` 28x28 images, initialised from `seed`.
    pub fn build(self, batch: usize, seed: u64) -> Result<ClassifierGraph> {
        self.spec().build(batch, seed)
    }

    /// The inference graph for batches of `batch`.
    pub fn build_inference(self, batch: usize) -> Result<Inference> {
        self.spec().build_inference(batch)
    }
}

/// An inference graph: input [B, 1, 28, 28] -> logits [B, 10] -> class probabilities [B, 10].
pub struct Inference {
    /// The graph (parameters come from a checkpoint).
    pub graph: Graph,
    /// The batch of images [B, C, H, W].
    pub input: NodeId,
    /// The model's output [B, classes].
    pub logits: NodeId,
    /// softmax(logits) [B, classes].
    pub probs: NodeId,
}

impl ModelKind {
    /// Every built-in model.
    pub const ALL: [ModelKind; 4] = [ModelKind::Cnn, ModelKind::Mlp, ModelKind::Lenet5, ModelKind::CnnBn];
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        ModelKind::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = ModelKind::ALL.iter().map(|m| m.name()).collect();
            format!("unknown model '{s}': expected one of {}", names.join(", "))
        })
    }
}
