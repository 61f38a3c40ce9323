//! Inference with a trained checkpoint: class probabilities for any number of images, in
//! batches of bounded size, on executors built once and reused across calls. See
//! [`Classifier`] for an example, from a checkpoint file and a photo to probabilities.

use std::collections::HashMap;
use std::path::Path;

use image::GrayImage;

use crate::model::checkpoint::Checkpoint;
use crate::graph::fold::fold_checkpoint;
use crate::graph::exec::SharedParams;
use crate::graph::{Arena, Executor, Graph, Mode, NamedTensors, NodeId};
use crate::kernels::gemm::GemmConfig;
use crate::digits::predict::normalise;
use crate::{Error, Gpu, Result};

/// Classes out, pixels in (28x28) per image.
pub const CLASSES: usize = 10;
/// Images per batch unless [`Classifier::new`] is told otherwise: memory stays bounded
/// (a few MiB of activations for the CNN) whatever the number of images.
pub const DEFAULT_BATCH: usize = 256;

/// One executor for a fixed batch size and the node holding its probabilities.
struct Runner<'g> {
    exec: Executor<'g>,
    logits: NodeId,
    probs: NodeId,
}

/// What a call reads back.
#[derive(Clone, Copy)]
enum Output {
    Logits,
    Probs,
}

/// A checkpoint loaded on the GPU for inference. The model is rebuilt from the
/// checkpoint's own description in eval mode (dropout off, BatchNorm on its running
/// statistics); inputs are normalised with the checkpoint's mean and std.
///
/// ```
/// use kiln::checkpoint::Checkpoint;
/// use kiln::nn::ModelKind;
/// use kiln::Classifier;
///
/// let gpu = kiln::testing::gpu();
/// // A checkpoint of the MLP with made-up weights (training would produce real ones):
/// // the tensors are the model's parameters, with their PyTorch names and shapes.
/// let model = ModelKind::Mlp.spec();
/// let graph = model.build(1, 0)?.graph;
/// let mut rng = kiln::rng::Rng::new(0);
/// let params = graph
///     .params()
///     .into_iter()
///     .map(|(_, name, shape)| {
///         let values = rng.vec(shape.iter().product()).iter().map(|v| 0.05 * v).collect();
///         (name.to_string(), shape.to_vec(), values)
///     })
///     .collect();
/// let checkpoint = Checkpoint { model, mean: 0.1307, std: 0.3081, dataset: "mnist".into(), temperature: 1.0, deskew: false, params };
/// let path = std::env::temp_dir().join(format!("kiln-doc-classify-{}.safetensors", std::process::id()));
/// checkpoint.save(&path)?;
///
/// let mut classifier = Classifier::load(gpu, &path)?;
///
/// // A photo of a "1": a dark stroke on light paper, 60x80 pixels.
/// let photo = path.with_extension("png");
/// image::GrayImage::from_fn(60, 80, |x, y| image::Luma([if (26..34).contains(&x) && (10..70).contains(&y) { 30 } else { 230 }]))
///     .save(&photo)
///     .expect("write the PNG");
/// // As MNIST was made: white ink on black, cropped, scaled to 20 px, centred in 28x28.
/// let gray = kiln::predict::load_gray(&photo)?;
/// let digit = kiln::predict::to_mnist(&gray, &photo)?;
/// assert_eq!(digit.dimensions(), (28, 28));
///
/// let probs = classifier.classify(&[digit.clone(), digit])?;
/// assert_eq!(probs.len(), 2);
/// assert_eq!(probs[0].len(), 10);
/// let sum: f32 = probs[0].iter().sum();
/// assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
/// assert!(probs[0].iter().all(|&p| (0.0..=1.0).contains(&p)));
/// assert_eq!(probs[0], probs[1]); // the same image, the same answer
/// std::fs::remove_file(&path).ok();
/// std::fs::remove_file(&photo).ok();
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Classifier<'g> {
    gpu: &'g Gpu,
    checkpoint: Checkpoint,
    batch: usize,
    /// An executor for each batch size met so far, built on first use: every size runs
    /// exactly, neither padded nor split (on lavapipe a batch of 42 costs 8.7 ms as one
    /// submit and 12.4 ms as 32 + 8 + 2). All of them run in one arena of activations and
    /// on one copy of the parameters, so a size costs its bind groups, not its memory.
    runners: HashMap<usize, Runner<'g>>,
    /// The activations, for the next power of two at or above the largest batch met so far
    /// (at most `batch`): a single image allocates for one, a server's batches grow it a
    /// few times at most.
    arena: Option<Arena>,
    /// The parameters, written once by the first executor and read by the others.
    params: Option<SharedParams>,
}

impl<'g> Classifier<'g> {
    /// Loads a checkpoint (validated by [`Checkpoint::load`]) for batches of [`DEFAULT_BATCH`].
    pub fn load(gpu: &'g Gpu, path: &Path) -> Result<Classifier<'g>> {
        Classifier::new(gpu, Checkpoint::load(path)?, DEFAULT_BATCH)
    }

    /// A classifier for `checkpoint` that runs at most `batch` images per GPU step.
    pub fn new(gpu: &'g Gpu, checkpoint: Checkpoint, batch: usize) -> Result<Classifier<'g>> {
        if batch == 0 {
            return Err(Error::unsupported("Classifier", "the batch size must be at least 1"));
        }
        Ok(Classifier { gpu, checkpoint, batch, runners: HashMap::new(), arena: None, params: None })
    }

    /// The checkpoint: model, normalisation, dataset.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The most images one GPU step takes.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Class probabilities for digits already prepared as MNIST's are (28x28, white ink on
    /// black: see [`crate::digits::predict::to_mnist`]).
    pub fn classify(&mut self, images: &[GrayImage]) -> Result<Vec<[f32; CLASSES]>> {
        crate::runtime::gpu::block_on(self.classify_async(images))
    }

    /// [`Classifier::classify`] without blocking: what the web page awaits.
    pub async fn classify_async(&mut self, images: &[GrayImage]) -> Result<Vec<[f32; CLASSES]>> {
        let [c, h, w] = self.checkpoint.model.input;
        let mut inputs = Vec::with_capacity(images.len() * c * h * w);
        for (i, img) in images.iter().enumerate() {
            if c != 1 || img.dimensions() != (w as u32, h as u32) {
                return Err(Error::shape("classify", format!("image {i} is {}x{}, the model takes {w}x{h} (see predict::to_mnist)", img.width(), img.height())));
            }
            inputs.extend(normalise(img, self.checkpoint.mean, self.checkpoint.std));
        }
        self.run(&inputs, Output::Probs).await
    }

    /// Class probabilities for normalised inputs, one model input per image (784 values,
    /// `[N, 1, 28, 28]`, for MNIST's models).
    pub fn classify_tensor(&mut self, inputs: &[f32]) -> Result<Vec<[f32; CLASSES]>> {
        crate::runtime::gpu::block_on(self.run(inputs, Output::Probs))
    }

    /// [`Classifier::classify_tensor`] without blocking.
    pub async fn classify_tensor_async(&mut self, inputs: &[f32]) -> Result<Vec<[f32; CLASSES]>> {
        self.run(inputs, Output::Probs).await
    }

    /// The logits (before the softmax) for normalised inputs, as [`Classifier::classify_tensor`]: what an
    /// exported model is compared against.
    pub fn logits_tensor(&mut self, inputs: &[f32]) -> Result<Vec<[f32; CLASSES]>> {
        crate::runtime::gpu::block_on(self.run(inputs, Output::Logits))
    }

    async fn run(&mut self, inputs: &[f32], output: Output) -> Result<Vec<[f32; CLASSES]>> {
        let [c, h, w] = self.checkpoint.model.input;
        let pixels = c * h * w;
        if !inputs.len().is_multiple_of(pixels) {
            return Err(Error::shape("classify", format!("{} values: expected a multiple of {pixels} ({c}x{h}x{w} per image)", inputs.len())));
        }
        let mut out = Vec::with_capacity(inputs.len() / pixels);
        for chunk in inputs.chunks(self.batch * pixels) {
            let n = chunk.len() / pixels;
            let runner = self.runner(n)?;
            runner.exec.write_input(chunk)?;
            runner.exec.run_step(0)?;
            let node = match output {
                Output::Logits => runner.logits,
                Output::Probs => runner.probs,
            };
            let values = runner.exec.read_node_async(node).await?;
            out.extend(values.chunks_exact(CLASSES).map(|p| <[f32; CLASSES]>::try_from(p).expect("chunks of CLASSES")));
        }
        Ok(out)
    }

    /// The executor for batches of `n` (at most `batch`), built on first use.
    fn runner(&mut self, n: usize) -> Result<&mut Runner<'g>> {
        if !self.runners.contains_key(&n) {
            let tuning = GemmConfig::default_for(self.gpu.info());
            let folded = |rows: usize| -> Result<(Graph, NamedTensors)> {
                let model = self.checkpoint.model.build_calibrated(rows, self.checkpoint.temperature)?;
                fold_checkpoint(&model.graph, &self.checkpoint.params)
            };
            if self.arena.as_ref().is_none_or(|a| a.batch() < n) {
                // the executors built in a smaller arena go with it
                self.runners.clear();
                let rows = n.next_power_of_two().min(self.batch).max(n);
                self.arena = Some(Executor::arena(self.gpu, &folded(rows)?.0, Mode::Eval)?);
            }
            let (graph, tensors) = folded(n)?;
            let arena = self.arena.as_ref().expect("set above");
            let exec = Executor::new_in(self.gpu, &graph, Mode::Eval, &tuning, arena, self.params.as_ref())?;
            if self.params.is_none() {
                exec.write_model(&tensors)?;
                self.params = Some(exec.shared_params());
            }
            // folding renumbers the nodes: find the outputs by name
            let probs = node_named(&graph, "probs")?;
            let logits = graph.node(probs).inputs[0];
            self.runners.insert(n, Runner { exec, logits, probs });
        }
        Ok(self.runners.get_mut(&n).expect("built above"))
    }
}

/// Several checkpoints read as one model: an image's probabilities are the mean of the
/// members' (each normalises the image with its own mean and std). All must read the same
/// classes: the same input shape and, where they say it, datasets of one family (digits or
/// Fashion-MNIST's clothes). An ensemble of one is that checkpoint.
pub struct Ensemble<'g> {
    members: Vec<Classifier<'g>>,
    /// Views per image and their seed ([`Ensemble::with_views`]).
    views: (usize, u64),
}

/// What a dataset's classes are: the digits (`mnist`, `mnist10k`) or clothes (`fashion`);
/// `None` for a checkpoint that does not say.
pub(crate) fn family(dataset: &str) -> Option<&'static str> {
    match dataset {
        "mnist" | "mnist10k" => Some("digits"),
        "fashion" => Some("fashion"),
        _ => None,
    }
}

impl<'g> Ensemble<'g> {
    /// An ensemble of `checkpoints`, each run in batches of at most `batch` images; `names`
    /// (one per checkpoint, its file, say) name them in errors. At least one is needed.
    pub fn new(gpu: &'g Gpu, checkpoints: Vec<Checkpoint>, names: &[String], batch: usize) -> Result<Ensemble<'g>> {
        let Some(first) = checkpoints.first() else { return Err(Error::unsupported("ensemble", "no checkpoint: give at least one")) };
        let (input, kind) = (first.model.input, family(&first.dataset));
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("checkpoint {i}"));
        for (i, c) in checkpoints.iter().enumerate().skip(1) {
            if c.model.input != input {
                return Err(Error::shape("ensemble", format!("{} takes {:?} inputs, {} takes {input:?}: an ensemble reads one kind of image", name(i), c.model.input, name(0))));
            }
            if let (Some(a), Some(b)) = (kind, family(&c.dataset)) {
                if a != b {
                    return Err(Error::unsupported("ensemble", format!("{} was trained on '{}' ({b}), {} on '{}' ({a}): their classes differ", name(i), c.dataset, name(0), first.dataset)));
                }
            }
        }
        let members = checkpoints.into_iter().map(|c| Classifier::new(gpu, c, batch)).collect::<Result<Vec<_>>>()?;
        Ok(Ensemble { members, views: (1, 0) })
    }

    /// Reads each image as the mean over `n` seeded views of it (`tta::view`: the image and
    /// `n - 1` small warps): test-time augmentation. 1, the default, reads the image alone.
    pub fn with_views(self, n: usize, seed: u64) -> Result<Ensemble<'g>> {
        if !(1..=crate::digits::tta::MAX_VIEWS).contains(&n) {
            return Err(Error::unsupported("--tta", format!("{n}: expected 1 to {} views per image", crate::digits::tta::MAX_VIEWS)));
        }
        Ok(Ensemble { views: (n, seed), ..self })
    }

    /// The members, in the order given.
    pub fn members(&self) -> &[Classifier<'g>] {
        &self.members
    }

    /// The most images one GPU step takes.
    pub fn batch(&self) -> usize {
        self.members[0].batch()
    }

    /// The mean of the members' class probabilities for digits prepared as MNIST's
    /// ([`Classifier::classify`]), each over the views asked for ([`Ensemble::with_views`]).
    pub fn classify(&mut self, images: &[GrayImage]) -> Result<Vec<[f32; CLASSES]>> {
        let mut sum = vec![[0f64; CLASSES]; images.len()];
        let (n, seed) = self.views;
        for m in &mut self.members {
            let probs = if n == 1 { m.classify(images)? } else { crate::digits::tta::classify(m, images, n, seed)? };
            for (s, p) in sum.iter_mut().zip(probs) {
                s.iter_mut().zip(p).for_each(|(s, p)| *s += p as f64);
            }
        }
        let n = self.members.len() as f64;
        Ok(sum.iter().map(|s| s.map(|v| (v / n) as f32)).collect())
    }
}

impl<'g> From<Classifier<'g>> for Ensemble<'g> {
    /// The ensemble of one.
    fn from(c: Classifier<'g>) -> Ensemble<'g> {
        Ensemble { members: vec![c], views: (1, 0) }
    }
}

pub(crate) fn node_named(graph: &Graph, name: &str) -> Result<NodeId> {
    graph.nodes.iter().position(|n| n.name == name).map(NodeId).ok_or_else(|| Error::shape("classify", format!("the inference graph has no '{name}' node")))
}
