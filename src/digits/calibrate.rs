//! Confidence that means what it says: temperature scaling, its measure (the expected
//! calibration error over 15 bins, the reliability diagram) and the error–rejection curve.
//!
//! A network trained with cross-entropy is over-confident: of the digits it reads at 99%,
//! fewer than 99% are right. Temperature scaling (Guo et al. 2017) divides the logits by one
//! scalar T fitted on held-out data (the T minimising the negative log-likelihood there); the
//! predictions do not change, the probabilities do. The checkpoint carries T
//! (`Checkpoint::temperature`) and every `Classifier` reads with it (the softmax kernel's
//! inverse temperature).

use serde::Serialize;

use crate::digits::classify::{Classifier, CLASSES};
use crate::digits::data::mnist::Split;
use crate::digits::evaluate::argmax;
use crate::kernels::reference::softmax::softmax_forward;
use crate::{Error, Result};

/// The bins of the expected calibration error and the reliability diagram (Guo et al.'s 15).
pub const BINS: usize = 15;

/// The rejected fractions the error–rejection curve reports: 0, 1, 2, 5 and 10%.
pub const REJECTED: [f64; 5] = [0.0, 0.01, 0.02, 0.05, 0.10];

/// The temperatures [`fit_temperature`] searches: far beyond any a trained model needs.
const T_RANGE: (f64, f64) = (0.05, 20.0);

/// Mean negative log-likelihood of `labels` under softmax(logits / temperature), in f64.
pub fn nll(logits: &[[f32; CLASSES]], labels: &[u8], temperature: f64) -> f64 {
    let s = 1.0 / temperature;
    let total: f64 = logits
        .iter()
        .zip(labels)
        .map(|(z, &y)| {
            let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = z.iter().map(|&v| (s * (v as f64 - m)).exp()).sum::<f64>().ln();
            lse - s * (z[y as usize] as f64 - m)
        })
        .sum();
    total / logits.len().max(1) as f64
}

/// The temperature minimising [`nll`] on held-out `logits` and `labels`. The NLL is convex
/// in 1/T, so a golden-section search over log T in [0.05, 20] finds it (to 1e-6 relative).
/// `Error::Unsupported` for no data, labels out of range or non-finite logits.
pub fn fit_temperature(logits: &[[f32; CLASSES]], labels: &[u8]) -> Result<f32> {
    if logits.is_empty() || logits.len() != labels.len() {
        return Err(Error::unsupported("fit_temperature", format!("{} logits for {} labels: expected as many, at least one", logits.len(), labels.len())));
    }
    if labels.iter().any(|&y| y as usize >= CLASSES) || logits.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::unsupported("fit_temperature", "labels must be below 10 and logits finite"));
    }
    let f = |log_t: f64| nll(logits, labels, log_t.exp());
    let (mut a, mut b) = (T_RANGE.0.ln(), T_RANGE.1.ln());
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - r * (b - a), a + r * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-6 {
        if fc < fd {
            (b, d, fd) = (d, c, fc);
            c = b - r * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + r * (b - a);
            fd = f(d);
        }
    }
    Ok(((a + b) / 2.0).exp() as f32)
}

/// The logits of a `split` (MNIST-format images, normalised with the checkpoint's
/// statistics), in the classifier's batches.
pub fn split_logits(classifier: &mut Classifier, split: &Split) -> Result<Vec<[f32; CLASSES]>> {
    let (mean, std) = (classifier.checkpoint().mean, classifier.checkpoint().std);
    let per = split.images.rows * split.images.cols;
    let mut out = Vec::with_capacity(split.len());
    for start in (0..split.len()).step_by(classifier.batch()) {
        let end = (start + classifier.batch()).min(split.len());
        let pixels = &split.images.pixels[start * per..end * per];
        out.extend(classifier.logits_tensor(&crate::digits::predict::normalise(pixels, mean, std))?);
    }
    Ok(out)
}

/// What [`fit_on`] found on a held-out split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeldOut {
    /// The fitted temperature.
    pub temperature: f32,
    /// The fraction of the split the model reads right: a validation accuracy, for choosing
    /// recipes without looking at the test split.
    pub accuracy: f64,
}

/// Fits the temperature of `classifier`'s checkpoint on the held-out `split` (what
/// `train_mnist --calibrate` stores in the checkpoint) and measures its accuracy there.
pub fn fit_on(classifier: &mut Classifier, split: &Split) -> Result<HeldOut> {
    let logits = split_logits(classifier, split)?;
    let right = logits.iter().zip(&split.labels).filter(|(z, &y)| argmax(&z[..]) == y as usize).count();
    Ok(HeldOut { temperature: fit_temperature(&logits, &split.labels)?, accuracy: right as f64 / split.len().max(1) as f64 })
}

/// Probabilities read at temperature `from` re-read at `to`: softmax(from/to · log p), since
/// log p = z/from − c for each row. `to = 1` gives the uncalibrated model's.
pub fn retemper(probs: &[[f32; CLASSES]], from: f32, to: f32) -> Vec<[f32; CLASSES]> {
    let scaled: Vec<f32> = probs.iter().flatten().map(|&p| p.max(f32::MIN_POSITIVE).ln() * from).collect();
    softmax_forward(&scaled, CLASSES, to).chunks_exact(CLASSES).map(|r| r.try_into().expect("rows of CLASSES")).collect()
}

/// One bin of a reliability diagram: the answers whose confidence (top probability) falls
/// in (lower, upper].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bin {
    /// The bin's lower edge (exclusive; the first bin takes 0).
    pub lower: f64,
    /// The bin's upper edge.
    pub upper: f64,
    /// Answers in the bin.
    pub count: usize,
    /// Their mean confidence (0 for an empty bin).
    pub confidence: f64,
    /// The fraction of them that are right (0 for an empty bin).
    pub accuracy: f64,
}

/// A reliability diagram and its expected calibration error: Σ (n_b / N) |accuracy_b −
/// confidence_b| over the bins.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reliability {
    /// The bins, equal widths over [0, 1].
    pub bins: Vec<Bin>,
    /// The expected calibration error, a fraction (0.01 = 1%).
    pub ece: f64,
}

/// The reliability of answering argmax(p) with confidence max(p), over `bins` equal bins.
pub fn reliability(probs: &[[f32; CLASSES]], labels: &[u8], bins: usize) -> Reliability {
    let mut sums = vec![(0usize, 0f64, 0usize); bins];
    for (p, &y) in probs.iter().zip(labels) {
        let k = argmax(p);
        let conf = p[k] as f64;
        // (i/B, (i+1)/B]: a confidence of exactly i/B belongs to bin i - 1
        let b = ((conf * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        sums[b].0 += 1;
        sums[b].1 += conf;
        sums[b].2 += usize::from(k == y as usize);
    }
    let n = probs.len().max(1) as f64;
    let bins: Vec<Bin> = sums
        .iter()
        .enumerate()
        .map(|(i, &(count, conf, right))| {
            let of = count.max(1) as f64;
            Bin { lower: i as f64 / bins as f64, upper: (i + 1) as f64 / bins as f64, count, confidence: conf / of, accuracy: right as f64 / of }
        })
        .collect();
    let ece = bins.iter().map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs()).sum();
    Reliability { bins, ece }
}

/// One point of the error–rejection curve.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rejection {
    /// The fraction asked to be rejected (0.05 = the 5% least confident answers).
    pub rejected: f64,
    /// Answers kept.
    pub accepted: usize,
    /// Wrong answers among those kept.
    pub errors: usize,
    /// errors / accepted (0 when nothing is accepted).
    pub error_rate: f64,
    /// The lowest confidence accepted (1 when nothing is).
    pub threshold: f64,
}

/// The error rate among the answers kept when the `fraction` least confident of them are
/// rejected (round(fraction · N) answers, ties in confidence broken by order), for each
/// fraction. `confidence` and `correct` are per answer.
pub fn rejection_curve(confidence: &[f32], correct: &[bool], fractions: &[f64]) -> Vec<Rejection> {
    let mut order: Vec<usize> = (0..confidence.len()).collect();
    order.sort_by(|&a, &b| confidence[a].total_cmp(&confidence[b]).then(a.cmp(&b)));
    fractions
        .iter()
        .map(|&f| {
            let drop = ((f * confidence.len() as f64).round() as usize).min(confidence.len());
            let kept = &order[drop..];
            let errors = kept.iter().filter(|&&i| !correct[i]).count();
            Rejection {
                rejected: f,
                accepted: kept.len(),
                errors,
                error_rate: if kept.is_empty() { 0.0 } else { errors as f64 / kept.len() as f64 },
                threshold: kept.first().map_or(1.0, |&i| confidence[i] as f64),
            }
        })
        .collect()
}

/// What `evaluate` says of a model's confidences on a labelled set: the temperature it reads
/// with, the calibration before (T = 1) and after, and the error–rejection curve.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Calibration {
    /// The checkpoint's temperature (1: never calibrated).
    pub temperature: f32,
    /// The plain softmax's reliability.
    pub before: Reliability,
    /// At the checkpoint's temperature.
    pub after: Reliability,
    /// The error among accepted answers at [`REJECTED`] rejected.
    pub rejection: Vec<Rejection>,
}

impl Calibration {
    /// The measures of `probs` (read at `temperature`) against `labels`.
    pub fn measure(probs: &[[f32; CLASSES]], labels: &[u8], temperature: f32) -> Calibration {
        let confidence: Vec<f32> = probs.iter().map(|p| p[argmax(p)]).collect();
        let correct: Vec<bool> = probs.iter().zip(labels).map(|(p, &y)| argmax(p) == y as usize).collect();
        Calibration {
            temperature,
            before: reliability(&retemper(probs, temperature, 1.0), labels, BINS),
            after: reliability(probs, labels, BINS),
            rejection: rejection_curve(&confidence, &correct, &REJECTED),
        }
    }
}
