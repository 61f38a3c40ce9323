//! Softmax, fused softmax + cross-entropy, and the metrics fold (shaders/softmax.wgsl).
//!
//! Dimensions: R rows (batch), C classes. Labels are u32; the label C means *no class* (a
//! training image that is none of the classes, outlier exposure): its target is uniform, 1/C
//! each, so training pushes its top probability down; a label > C marks a padding row (a
//! partial last batch), which gets no loss, no gradient and is not counted.

use super::{check_tensor, Dispatch};
use crate::runtime::gpu::Gpu;
use crate::runtime::pipelines::Kernel;
use crate::runtime::shaders::Shader;
use crate::runtime::tensor::{DType, Tensor};
use crate::{Error, Result};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub(crate) rows: u32,
    pub(crate) classes: u32,
    pub(crate) scale: f32,
    pub(crate) smoothing: f32,
}

/// Words in a metrics buffer for `classes` classes: loss sum, correct, rows, no-class rows,
/// then the confusion matrix `[label][prediction]`.
pub fn metrics_words(classes: usize) -> usize {
    4 + classes * classes
}

fn rows_classes(op: &str, logits: &Tensor) -> Result<(usize, usize)> {
    match logits.shape() {
        [r, c] if logits.dtype() == DType::F32 && *c > 0 => Ok((*r, *c)),
        s => Err(Error::shape(op, format!("logits must be f32 [rows, classes], got {s:?} {:?}", logits.dtype()))),
    }
}

fn launch(gpu: &Gpu, entry: &'static str, params: Params, tensors: &[(u32, &Tensor)]) -> Result<Dispatch> {
    let kernel = Kernel::new(Shader::Softmax, entry).with("WG", WG);
    Dispatch::new(gpu, &kernel, &params, tensors, gpu.grid_for(params.rows as usize, WG))
}

/// probs = softmax(logits / temperature) row-wise (temperature 1: the plain softmax; a
/// fitted temperature calibrates the probabilities, see `digits::calibrate`).
pub fn softmax_forward(gpu: &Gpu, logits: &Tensor, probs: &Tensor, temperature: f32) -> Result<Dispatch> {
    let op = "softmax_forward";
    let (r, c) = rows_classes(op, logits)?;
    check_tensor(op, "probs", probs, r * c, DType::F32)?;
    check_temperature(temperature)?;
    launch(gpu, op, Params { rows: r as u32, classes: c as u32, scale: 1.0 / temperature, ..Default::default() }, &[(1, logits), (3, probs)])
}

/// A softmax temperature must be finite and above 0 (and 1/T finite).
pub fn check_temperature(temperature: f32) -> Result<()> {
    if temperature.is_finite() && temperature > 0.0 && (1.0 / temperature).is_finite() {
        Ok(())
    } else {
        Err(Error::unsupported("temperature", format!("{temperature}: expected a finite value above 0")))
    }
}

/// Label smoothing must lie in [0, 1): 0 is the plain cross-entropy.
pub fn check_smoothing(smoothing: f32) -> Result<()> {
    if (0.0..1.0).contains(&smoothing) {
        Ok(())
    } else {
        Err(Error::unsupported("label smoothing", format!("{smoothing}: expected a value in [0, 1)")))
    }
}

/// `row_loss[r]` = logsumexp(`logits[r]`) - (1 - e) `logits[r][label]` - e mean(`logits[r]`) with
/// label smoothing e (0: the plain cross-entropy), logsumexp - mean for the no-class label C;
/// `row_pred[r]` = argmax.
pub fn softmax_xent_forward(gpu: &Gpu, logits: &Tensor, labels: &Tensor, smoothing: f32, row_loss: &Tensor, row_pred: &Tensor) -> Result<Dispatch> {
    let op = "softmax_xent_forward";
    let (r, c) = rows_classes(op, logits)?;
    check_tensor(op, "labels", labels, r, DType::U32)?;
    check_tensor(op, "row_loss", row_loss, r, DType::F32)?;
    check_tensor(op, "row_pred", row_pred, r, DType::U32)?;
    check_smoothing(smoothing)?;
    let params = Params { rows: r as u32, classes: c as u32, smoothing, ..Default::default() };
    launch(gpu, op, params, &[(1, logits), (2, labels), (4, row_loss), (5, row_pred)])
}

/// dlogits = (softmax(logits) - t) * scale with the target t = (1 - e) onehot(label) + e / C
/// (t = 1/C for the no-class label C); scale = 1/R for the mean loss.
pub fn softmax_xent_backward(gpu: &Gpu, logits: &Tensor, labels: &Tensor, smoothing: f32, scale: f32, dlogits: &Tensor) -> Result<Dispatch> {
    let op = "softmax_xent_backward";
    let (r, c) = rows_classes(op, logits)?;
    check_tensor(op, "labels", labels, r, DType::U32)?;
    check_tensor(op, "dlogits", dlogits, r * c, DType::F32)?;
    check_smoothing(smoothing)?;
    let params = Params { rows: r as u32, classes: c as u32, scale, smoothing };
    launch(gpu, op, params, &[(1, logits), (2, labels), (6, dlogits)])
}

/// Folds a batch's row losses, predictions and labels into `metrics` (u32 words, see
/// [`metrics_words`]). One workgroup; deterministic loss sum.
pub fn metrics_accumulate(gpu: &Gpu, classes: usize, row_loss: &Tensor, row_pred: &Tensor, labels: &Tensor, metrics: &Tensor) -> Result<Dispatch> {
    let op = "metrics_accumulate";
    let r = row_loss.len();
    check_tensor(op, "row_loss", row_loss, r, DType::F32)?;
    check_tensor(op, "row_pred", row_pred, r, DType::U32)?;
    check_tensor(op, "labels", labels, r, DType::U32)?;
    check_tensor(op, "metrics", metrics, metrics_words(classes), DType::U32)?;
    let kernel = Kernel::new(Shader::Softmax, op);
    let params = Params { rows: r as u32, classes: classes as u32, ..Default::default() };
    Dispatch::new(gpu, &kernel, &params, &[(7, row_loss), (8, row_pred), (9, labels), (10, metrics)], [1, 1, 1])
}

/// The loss head in one dispatch: [`softmax_xent_forward`] and [`metrics_accumulate`], and
/// with `dlogits` (training) [`softmax_xent_backward`] too, by one workgroup: the same
/// values, bit for bit, as the three kernels, two dispatches fewer per step.
#[allow(clippy::too_many_arguments)]
pub fn softmax_xent_metrics(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
    row_loss: &Tensor,
    row_pred: &Tensor,
    dlogits: Option<(&Tensor, f32)>,
    metrics: &Tensor,
) -> Result<Dispatch> {
    let op = "softmax_xent_metrics";
    let (r, c) = rows_classes(op, logits)?;
    check_tensor(op, "labels", labels, r, DType::U32)?;
    check_tensor(op, "row_loss", row_loss, r, DType::F32)?;
    check_tensor(op, "row_pred", row_pred, r, DType::U32)?;
    check_tensor(op, "metrics", metrics, metrics_words(c), DType::U32)?;
    check_smoothing(smoothing)?;
    let mut tensors = vec![(1, logits), (2, labels), (4, row_loss), (5, row_pred), (10, metrics)];
    let (entry, scale) = match dlogits {
        Some((d, scale)) => {
            check_tensor(op, "dlogits", d, r * c, DType::F32)?;
            tensors.push((6, d));
            ("softmax_xent_metrics_backward", scale)
        }
        None => ("softmax_xent_metrics", 0.0),
    };
    let kernel = Kernel::new(Shader::Softmax, entry);
    let params = Params { rows: r as u32, classes: c as u32, scale, smoothing };
    Dispatch::new(gpu, &kernel, &params, &tensors, [1, 1, 1])
}

/// kiln's one score type: what a metrics buffer holds (loss, correct rows, the confusion
/// matrix), read back from the GPU after training or evaluation, or counted on the host from
/// (label, prediction) pairs ([`Metrics::add`], [`Metrics::from_pairs`]). The application's
/// reports (`digits::evaluate`: per-class scores, JSON, a table) read the same type.
///
/// ```
/// use kiln::ops::softmax::Metrics;
/// let c = Metrics::from_pairs(3, [(0, 0), (0, 0), (1, 1), (1, 2), (2, 2)])?;
/// assert_eq!((c.rows, c.correct), (5, 4));
/// assert_eq!(c.accuracy(), 0.8);
/// assert_eq!(c.recall()[1], 0.5); // one of the two 1s was called 1
/// assert_eq!(c.precision()[2], 0.5); // one of the two answers 2 was a 2
/// # Ok::<(), kiln::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Sum of the row losses (f32, summed on the GPU).
    pub loss_sum: f32,
    /// Rows whose prediction (first maximum) equals the label.
    pub correct: u32,
    /// Rows counted; rows with a label > C (batch padding) are skipped by every field.
    pub rows: u32,
    /// Of the rows counted, those with the no-class label C: their loss is in `loss_sum`, they
    /// are never correct, have no row in the confusion and are left out of [`Metrics::accuracy`].
    pub no_class: u32,
    /// `confusion[label][prediction]`
    pub confusion: Vec<Vec<u32>>,
}

impl Metrics {
    /// No row counted yet, over `classes` classes.
    pub fn new(classes: usize) -> Metrics {
        Metrics { loss_sum: 0.0, correct: 0, rows: 0, no_class: 0, confusion: vec![vec![0; classes]; classes] }
    }

    /// Counts `pairs` of (label, prediction) (no loss); a class outside `0..classes` is an error.
    pub fn from_pairs(classes: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Result<Metrics> {
        let mut m = Metrics::new(classes);
        for (i, (label, prediction)) in pairs.into_iter().enumerate() {
            if label >= classes || prediction >= classes {
                return Err(Error::shape("Metrics", format!("pair {i}: ({label}, {prediction}) outside 0..{classes}")));
            }
            m.add(label, prediction);
        }
        Ok(m)
    }

    /// Counts one row. Panics if `label` or `prediction` is not below [`Metrics::classes`]:
    /// callers check labels when they read them ([`Metrics::from_pairs`] is the checked form).
    pub fn add(&mut self, label: usize, prediction: usize) {
        self.confusion[label][prediction] += 1;
        self.rows += 1;
        self.correct += u32::from(label == prediction);
    }

    /// Adds another's counts and loss (of the same number of classes) to these.
    pub fn merge(&mut self, other: &Metrics) -> Result<()> {
        if other.classes() != self.classes() {
            return Err(Error::shape("Metrics::merge", format!("{} classes into {}", other.classes(), self.classes())));
        }
        for (row, o) in self.confusion.iter_mut().zip(&other.confusion) {
            for (a, b) in row.iter_mut().zip(o) {
                *a += b;
            }
        }
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.rows += other.rows;
        self.no_class += other.no_class;
        Ok(())
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.confusion.len()
    }

    /// Rows of class `c` (its confusion row's sum).
    pub fn count(&self, c: usize) -> u32 {
        self.confusion[c].iter().sum()
    }

    /// Decodes a metrics buffer's words (see [`metrics_words`]) for `classes` classes.
    /// Panics if `words` is shorter than `metrics_words(classes)`.
    pub fn from_words(words: &[u32], classes: usize) -> Metrics {
        let confusion = (0..classes).map(|l| words[4 + l * classes..4 + (l + 1) * classes].to_vec()).collect();
        Metrics { loss_sum: f32::from_bits(words[0]), correct: words[1], rows: words[2], no_class: words[3], confusion }
    }
    /// Mean loss per counted row (0 when no row was counted).
    pub fn mean_loss(&self) -> f32 {
        self.loss_sum / self.rows.max(1) as f32
    }
    /// Fraction of the counted rows of a class (no-class rows left out) predicted right, in
    /// [0, 1] (0 when no such row was counted).
    pub fn accuracy(&self) -> f32 {
        self.correct as f32 / (self.rows - self.no_class).max(1) as f32
    }
    /// Per-class precision (of the predictions of class c, how many were c).
    pub fn precision(&self) -> Vec<f32> {
        let n = self.confusion.len();
        (0..n)
            .map(|c| {
                let predicted: u32 = (0..n).map(|l| self.confusion[l][c]).sum();
                self.confusion[c][c] as f32 / predicted.max(1) as f32
            })
            .collect()
    }
    /// Per-class recall (of the examples of class c, how many were predicted c).
    pub fn recall(&self) -> Vec<f32> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| row[c] as f32 / row.iter().sum::<u32>().max(1) as f32)
            .collect()
    }
}
