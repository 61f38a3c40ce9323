//! What a trained model looks at. For each image, on the GPU, by kiln's own autodiff
//! ([`Mode::InputGradient`]):
//!
//! - the **saliency map**: the gradient of the predicted class's logit with respect to
//!   the input pixels (Simonyan et al. 2014);
//! - **Grad-CAM** on the last convolutional feature map A [K, h, w] (Selvaraju et al.
//!   2017): weights a_k = mean over (h, w) of d logit / dA_k, map = ReLU(sum_k a_k A_k),
//!   upsampled bilinearly to the input and scaled to [0, 1];
//! - the **feature maps** of the first two convolutions (after their activation).
//!
//! [`deletion_test`] measures whether the saliency is faithful: deleting (zeroing) the k
//! most salient pixels must lower the class probability more than deleting k random
//! pixels. [`report`] draws all of it, with the misclassified gallery and the confusion
//! matrix, as one HTML page. [`strings`] does the same for misread digit strings: the
//! segmentation [`crate::digits::read::Reader`] chose and each digit's saliency.

pub mod report;
pub mod strings;

use crate::model::checkpoint::Checkpoint;
use crate::digits::classify::{node_named, CLASSES};
use crate::graph::fold::fold_checkpoint;
use crate::graph::{Executor, Graph, Mode, NodeId, Op};
use crate::kernels::gemm::GemmConfig;
use crate::base::rng::Rng;
use crate::{Classifier, Error, Gpu, Result};

/// The feature maps of one layer for one image: [channels, height, width].
#[derive(Clone, Debug)]
pub struct FeatureMap {
    /// The graph node's name (`relu1`, ...).
    pub layer: String,
    /// [channels, height, width].
    pub shape: [usize; 3],
    /// Row-major values.
    pub values: Vec<f32>,
}

/// What the model saw in one image.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The class explained: the prediction unless the caller chose another.
    pub class: usize,
    /// The class probabilities.
    pub probs: [f32; CLASSES],
    /// d logit[class] / d input, one value per input element (C x H x W).
    pub saliency: Vec<f32>,
    /// Grad-CAM at the input's resolution (H x W), in [0, 1]; `None` for a model without
    /// convolutions (the MLP).
    pub grad_cam: Option<Vec<f32>>,
    /// The first two convolutions' feature maps (none for the MLP).
    pub features: Vec<FeatureMap>,
}

/// A checkpoint loaded for explanations: an [`Mode::InputGradient`] executor of the
/// model (BatchNorm folded into the layer before it, dropout off) that keeps the logits,
/// the Grad-CAM layer and the feature maps readable.
pub struct Explainer<'g> {
    checkpoint: Checkpoint,
    graph: Graph,
    exec: Executor<'g>,
    input: NodeId,
    logits: NodeId,
    cam: Option<NodeId>,
    features: Vec<NodeId>,
}

impl<'g> Explainer<'g> {
    /// Builds the executor for batches of `batch` images.
    pub fn new(gpu: &'g Gpu, checkpoint: Checkpoint, batch: usize) -> Result<Explainer<'g>> {
        if batch == 0 {
            return Err(Error::unsupported("Explainer", "the batch size must be at least 1"));
        }
        let model = checkpoint.model.build_inference(batch)?;
        let (graph, tensors) = fold_checkpoint(&model.graph, &checkpoint.params)?;
        let input = NodeId(graph.nodes.iter().position(|n| n.op == Op::Input).expect("an inference graph has an input"));
        let logits = graph.node(node_named(&graph, "probs")?).inputs[0];
        let features = feature_layers(&graph);
        let cam = cam_layer(&graph);
        let keep: Vec<NodeId> = std::iter::once(logits).chain(cam).chain(features.iter().copied()).collect();
        let exec = Executor::new_keeping(gpu, &graph, Mode::InputGradient, &GemmConfig::default_for(gpu.info()), &keep)?;
        exec.write_model(&tensors)?;
        Ok(Explainer { checkpoint, graph, exec, input, logits, cam, features })
    }

    /// The checkpoint explained.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The node Grad-CAM reads (the last convolutional feature map), if the model has one.
    pub fn cam_layer(&self) -> Option<&str> {
        self.cam.map(|n| self.graph.node(n).name.as_str())
    }

    /// Explains each image of `inputs` (normalised, one model input per image): for the
    /// predicted class, or for `classes[i]` when given.
    pub fn explain(&mut self, inputs: &[f32], classes: Option<&[usize]>) -> Result<Vec<Explanation>> {
        crate::runtime::gpu::block_on(self.explain_async(inputs, classes))
    }

    /// [`Explainer::explain`] without blocking: what the web page awaits.
    pub async fn explain_async(&mut self, inputs: &[f32], classes: Option<&[usize]>) -> Result<Vec<Explanation>> {
        let per = self.graph.node(self.input).shape[1..].iter().product::<usize>();
        let batch = self.exec.batch();
        if !inputs.len().is_multiple_of(per) {
            return Err(Error::shape("explain", format!("{} values: expected a multiple of {per} per image", inputs.len())));
        }
        let n = inputs.len() / per;
        if let Some(c) = classes {
            if c.len() != n || c.iter().any(|&k| k >= CLASSES) {
                return Err(Error::shape("explain", format!("{} classes for {n} images, each below {CLASSES}", c.len())));
            }
        }
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(batch) {
            let rows = batch.min(n - start);
            // A short last batch is padded with zeros; its rows get a zero output gradient.
            let mut x = inputs[start * per..(start + rows) * per].to_vec();
            x.resize(batch * per, 0.0);
            self.exec.write_input(&x)?;
            let mut seed = vec![0.0; batch * CLASSES];
            // Without given classes, a first step (zero output gradient) finds the predictions.
            let chosen: Vec<usize> = match classes {
                Some(c) => c[start..start + rows].to_vec(),
                None => {
                    self.exec.write_output_grad(&seed)?;
                    self.exec.run_step(0)?;
                    let logits = self.exec.read_node_async(self.logits).await?;
                    (0..rows).map(|r| argmax(&logits[r * CLASSES..(r + 1) * CLASSES])).collect()
                }
            };
            for (r, &c) in chosen.iter().enumerate() {
                seed[r * CLASSES + c] = 1.0;
            }
            self.exec.write_output_grad(&seed)?;
            self.exec.run_step(0)?;
            // the logits of this step: the forward does not depend on the output gradient
            let logits = self.exec.read_node_async(self.logits).await?;
            let saliency = self.exec.read_grad_async(self.input).await?;
            let cam = match self.cam {
                Some(node) => Some((self.exec.read_node_async(node).await?, self.exec.read_grad_async(node).await?, &self.graph.node(node).shape)),
                None => None,
            };
            let mut features: Vec<(String, &[usize], Vec<f32>)> = Vec::with_capacity(self.features.len());
            for &f in &self.features {
                features.push((self.graph.node(f).name.clone(), &self.graph.node(f).shape[..], self.exec.read_node_async(f).await?));
            }
            let [_, h, w] = self.checkpoint.model.input;
            for (r, &class) in chosen.iter().enumerate() {
                let row = &logits[r * CLASSES..(r + 1) * CLASSES];
                let grad_cam = cam.as_ref().map(|(a, da, shape)| {
                    let len = shape[1..].iter().product::<usize>();
                    grad_cam(&a[r * len..(r + 1) * len], &da[r * len..(r + 1) * len], [shape[1], shape[2], shape[3]], (h, w))
                });
                let features = features
                    .iter()
                    .map(|(name, shape, v)| {
                        let len = shape[1..].iter().product::<usize>();
                        FeatureMap { layer: name.clone(), shape: [shape[1], shape[2], shape[3]], values: v[r * len..(r + 1) * len].to_vec() }
                    })
                    .collect();
                out.push(Explanation { class, probs: probabilities(row, self.checkpoint.temperature), saliency: saliency[r * per..(r + 1) * per].to_vec(), grad_cam, features });
            }
        }
        Ok(out)
    }

    /// The first convolution's weights [K, C, R, S] (its filters), if the model has one.
    pub fn first_filters(&self) -> Option<(Vec<usize>, &[f32])> {
        let conv = self.graph.nodes.iter().find(|n| matches!(n.op, Op::Conv2d { .. }))?;
        let weight = &self.graph.node(conv.inputs[1]).name;
        // the checkpoint's own tensor (folding rescales a conv followed by BatchNorm)
        self.checkpoint.params.iter().find(|t| &t.0 == weight).map(|t| (t.1.clone(), t.2.as_slice()))
    }
}

/// The first two convolutions' outputs, after the activation that follows each (the
/// feature maps people look at), in graph order.
fn feature_layers(graph: &Graph) -> Vec<NodeId> {
    let mut out = Vec::new();
    for (i, n) in graph.nodes.iter().enumerate() {
        if matches!(n.op, Op::Conv2d { .. }) && out.len() < 2 {
            let next = graph.nodes.iter().position(|m| m.inputs.first() == Some(&NodeId(i)) && matches!(m.op, Op::Relu | Op::Activation(_)));
            out.push(NodeId(next.unwrap_or(i)));
        }
    }
    out
}

/// Grad-CAM's layer: the last 4-D feature map with more than one position that a
/// convolution or an activation computes.
fn cam_layer(graph: &Graph) -> Option<NodeId> {
    graph.nodes.iter().rposition(|n| {
        n.shape.len() == 4 && n.shape[2] * n.shape[3] > 1 && matches!(n.op, Op::Conv2d { .. } | Op::Relu | Op::Activation(_) | Op::BatchNorm { .. })
    })
    .map(NodeId)
}

/// Grad-CAM of one image from the feature map `a` [K, h, w] and its gradient `da`, at
/// `out` = (H, W): ReLU(sum_k mean(da_k) a_k), bilinear (align_corners=False, as
/// PyTorch's interpolate), scaled so the maximum is 1 (all zeros stay zeros).
pub fn grad_cam(a: &[f32], da: &[f32], [k, h, w]: [usize; 3], out: (usize, usize)) -> Vec<f32> {
    let plane = h * w;
    let mut cam = vec![0.0f64; plane];
    for c in 0..k {
        let weight = da[c * plane..(c + 1) * plane].iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
        for (m, &v) in cam.iter_mut().zip(&a[c * plane..(c + 1) * plane]) {
            *m += weight * v as f64;
        }
    }
    let cam: Vec<f32> = cam.iter().map(|&v| v.max(0.0) as f32).collect();
    let mut up = resize_bilinear(&cam, (h, w), out);
    let max = up.iter().cloned().fold(0.0f32, f32::max);
    if max > 0.0 {
        up.iter_mut().for_each(|v| *v /= max);
    }
    up
}

/// Bilinear resize of an `(h, w)` plane to `(oh, ow)`, sampling at pixel centres.
pub fn resize_bilinear(src: &[f32], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let coord = |o: usize, n: usize, on: usize| {
        let c = ((o as f32 + 0.5) * n as f32 / on as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = c.floor() as usize;
        (i, (i + 1).min(n - 1), c - i as f32)
    };
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let (y0, y1, fy) = coord(y, h, oh);
        for x in 0..ow {
            let (x0, x1, fx) = coord(x, w, ow);
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The first index of the largest value (evaluation's, which the answers are counted by).
pub use crate::digits::evaluate::argmax;

/// One row's class probabilities at the checkpoint's temperature (the reference softmax:
/// f64, max subtracted), as `Classifier` reads them.
fn probabilities(logits: &[f32], temperature: f32) -> [f32; CLASSES] {
    let p = crate::kernels::reference::softmax::softmax_forward(logits, CLASSES, temperature);
    std::array::from_fn(|i| p[i])
}

/// One row of the deletion test.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Deletion {
    /// Fraction of the pixels deleted.
    pub fraction: f64,
    /// Mean drop of the explained class's probability when the most salient pixels are
    /// deleted.
    pub salient_drop: f64,
    /// The same for as many pixels drawn at random (seeded).
    pub random_drop: f64,
}

/// The deletion test (faithfulness of saliency maps, after Samek et al. 2017): for each
/// fraction f, delete the round(f x pixels) pixels of largest |saliency| of each image
/// (set them to `blank`, the normalised value of a black pixel), and as many random
/// pixels, and average the drop of the explained class's probability over the images.
/// `inputs` are the normalised images the explanations were made for.
pub fn deletion_test(classifier: &mut Classifier, inputs: &[f32], explained: &[Explanation], fractions: &[f64], blank: f32, seed: u64) -> Result<Vec<Deletion>> {
    let n = explained.len();
    if n == 0 || !inputs.len().is_multiple_of(n) {
        return Err(Error::shape("deletion_test", format!("{} input values for {n} explanations", inputs.len())));
    }
    let per = inputs.len() / n;
    let mut rng = Rng::new(seed);
    let mut rows = Vec::new();
    for &fraction in fractions {
        let k = ((fraction * per as f64).round() as usize).min(per);
        let (mut salient, mut random) = (inputs.to_vec(), inputs.to_vec());
        for (i, e) in explained.iter().enumerate() {
            let mut order: Vec<usize> = (0..per).collect();
            order.sort_by(|&a, &b| e.saliency[b].abs().total_cmp(&e.saliency[a].abs()));
            for &p in &order[..k] {
                salient[i * per + p] = blank;
            }
            // k distinct random pixels: a partial Fisher-Yates shuffle
            let mut pick: Vec<usize> = (0..per).collect();
            for j in 0..k {
                let r = rng.range(j, per - 1);
                pick.swap(j, r);
                random[i * per + pick[j]] = blank;
            }
        }
        let drop = |probs: Vec<[f32; CLASSES]>| explained.iter().zip(probs).map(|(e, p)| (e.probs[e.class] - p[e.class]) as f64).sum::<f64>() / n as f64;
        rows.push(Deletion { fraction, salient_drop: drop(classifier.classify_tensor(&salient)?), random_drop: drop(classifier.classify_tensor(&random)?) });
    }
    Ok(rows)
}

/// What [`explain_split`] measured and wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// Test accuracy of the checkpoint on the split.
    pub accuracy: f64,
    /// Misclassified images in the split.
    pub misclassified: usize,
    /// The deletion test's rows (k = 5%, 10%, 20% of the pixels).
    pub deletion: Vec<Deletion>,
    /// Images the deletion test averaged over.
    pub deletion_images: usize,
    /// Files written, `index.html` last.
    pub files: Vec<std::path::PathBuf>,
}

/// The deletion test's fractions of the pixels.
pub const DELETION_FRACTIONS: [f64; 3] = [0.05, 0.10, 0.20];

/// The explain report of `checkpoint` on `split` (the application behind the `explain`
/// example): classifies every image, explains the first `count`, runs the deletion test
/// on the first `deletion_images`, and writes the page into `dir`.
pub fn explain_split(gpu: &Gpu, checkpoint: Checkpoint, split: &crate::digits::data::mnist::Split, count: usize, deletion_images: usize, dir: &std::path::Path, title: &str) -> Result<Summary> {
    let n = split.len();
    for (name, v) in [("explain_split(count)", count), ("explain_split(deletion_images)", deletion_images)] {
        if v == 0 || v > n {
            return Err(Error::unsupported(name, format!("expected 1 to {n} (the images of the split), got {v}")));
        }
    }
    let [c, h, w] = checkpoint.model.input;
    if (c, h, w) != (1, split.images.rows, split.images.cols) {
        return Err(Error::shape(
            "explain_split(checkpoint)",
            format!("the checkpoint's model '{}' takes {c}x{h}x{w} images, the dataset has 1x{}x{}", checkpoint.model.name, split.images.rows, split.images.cols),
        ));
    }
    let (mean, std) = (checkpoint.mean, checkpoint.std);
    // a model trained on deskewed digits reads the split prepared as it was trained
    let prepared;
    let split = if checkpoint.deskew {
        prepared = crate::digits::predict::prepare_split(split, &crate::digits::predict::Preparation::of(&checkpoint))?;
        &prepared
    } else {
        split
    };
    let inputs = crate::digits::predict::normalise(&split.images.pixels, mean, std);
    let per = h * w;
    let mut classifier = Classifier::new(gpu, checkpoint.clone(), crate::digits::classify::DEFAULT_BATCH)?;
    let probs = classifier.classify_tensor(&inputs)?;
    let predicted: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
    let mut explainer = Explainer::new(gpu, checkpoint, 64)?;
    let shown = count.max(deletion_images);
    // the classifier's predictions: one step per batch instead of two
    let explained = explainer.explain(&inputs[..shown * per], Some(&predicted[..shown]))?;
    let deletion = deletion_test(&mut classifier, &inputs[..deletion_images * per], &explained[..deletion_images], &DELETION_FRACTIONS, -mean / std, 1)?;
    let correct = split.labels.iter().zip(&predicted).filter(|(&l, &p)| l as usize == p).count();
    let pages: Vec<(usize, Explanation)> = explained.into_iter().take(count).enumerate().collect();
    let report = report::Report {
        title: title.to_string(),
        pixels: &split.images.pixels,
        size: (h, w),
        labels: &split.labels,
        probs: &probs,
        explained: &pages,
        deletion: &deletion,
        deletion_images,
        filters: explainer.first_filters(),
        cam_layer: explainer.cam_layer().map(str::to_string),
    };
    let files = report::write(dir, &report)?;
    Ok(Summary { accuracy: correct as f64 / n as f64, misclassified: n - correct, deletion, deletion_images, files })
}
