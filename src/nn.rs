//! Layers on top of the graph builder, named like PyTorch's modules so checkpoints map
//! one to one (`conv1.weight` [16, 1, 5, 5], `fc2.bias` [10], ...), and the two models
//! of the MNIST application.

use crate::graph::{Graph, Init, NodeId};
use crate::Result;

/// A layer adds its nodes to a graph under a name prefix.
pub trait Layer {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId>;
}

/// 2-D convolution with bias; square kernel, PyTorch's default initialisation.
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2d {
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv2d {
        Conv2d { in_channels, out_channels, kernel, stride: 1, padding: 0 }
    }
    pub fn padding(self, padding: usize) -> Conv2d {
        Conv2d { padding, ..self }
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
pub struct Linear {
    pub inputs: usize,
    pub outputs: usize,
    pub init: Initialiser,
}

/// Whose default initialisation a layer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initialiser {
    /// nn.Linear's: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    PyTorch,
    /// keras.layers.Dense's: Glorot-uniform weights, zero biases.
    Keras,
}

impl Linear {
    pub fn new(inputs: usize, outputs: usize) -> Linear {
        Linear { inputs, outputs, init: Initialiser::PyTorch }
    }
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

pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
}

impl Layer for MaxPool2d {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.max_pool2d(name, x, self.kernel, self.stride, 0)
    }
}

pub struct ReLU;

impl Layer for ReLU {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        Ok(g.relu(name, x))
    }
}

pub struct Dropout(pub f32);

impl Layer for Dropout {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        g.dropout(name, x, self.0)
    }
}

pub struct Flatten;

impl Layer for Flatten {
    fn build(&self, g: &mut Graph, name: &str, x: NodeId) -> Result<NodeId> {
        Ok(g.flatten(name, x))
    }
}

/// Layers applied in order; each is named (the parameter names' prefix).
#[derive(Default)]
pub struct Sequential {
    layers: Vec<(String, Box<dyn Layer>)>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }
    pub fn add(mut self, name: &str, layer: impl Layer + 'static) -> Sequential {
        self.layers.push((name.to_string(), Box::new(layer)));
        self
    }
}

impl Layer for Sequential {
    fn build(&self, g: &mut Graph, _name: &str, mut x: NodeId) -> Result<NodeId> {
        for (name, layer) in &self.layers {
            x = layer.build(g, name, x)?;
        }
        Ok(x)
    }
}

/// A classifier graph: input [B, 1, 28, 28] -> logits, plus labels and the loss.
pub struct ClassifierGraph {
    pub graph: Graph,
    pub input: NodeId,
    pub labels: NodeId,
    pub logits: NodeId,
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
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Cnn => "cnn",
            ModelKind::Mlp => "mlp",
        }
    }

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
        }
    }

    /// The model for batches of `batch` 28x28 images, initialised from `seed`.
    pub fn build(self, batch: usize, seed: u64) -> Result<ClassifierGraph> {
        let mut graph = Graph::new(seed);
        let input = graph.input("input", &[batch, 1, 28, 28])?;
        let labels = graph.labels("labels", batch);
        let logits = self.layers().build(&mut graph, "", input)?;
        let loss = graph.softmax_cross_entropy("loss", logits, labels)?;
        Ok(ClassifierGraph { graph, input, labels, logits, loss })
    }
}

/// An inference graph: input [B, 1, 28, 28] -> logits [B, 10] -> class probabilities [B, 10].
pub struct Inference {
    pub graph: Graph,
    pub input: NodeId,
    pub logits: NodeId,
    pub probs: NodeId,
}

impl ModelKind {
    pub fn build_inference(self, batch: usize) -> Result<Inference> {
        let mut graph = Graph::new(0);
        let input = graph.input("input", &[batch, 1, 28, 28])?;
        let logits = self.layers().build(&mut graph, "", input)?;
        let probs = graph.softmax("probs", logits)?;
        Ok(Inference { graph, input, logits, probs })
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cnn" => Ok(ModelKind::Cnn),
            "mlp" => Ok(ModelKind::Mlp),
            _ => Err(format!("unknown model '{s}': expected cnn or mlp")),
        }
    }
}
