//! Measuring a checkpoint on labelled digits: the scores ([`Metrics`], kiln's one score
//! type; its per-class scores, JSON and table are here), labelled image folders
//! ([`read_labels`], [`resolve`]), seeded [`Noise`], and the evaluation itself in batches through an [`Ensemble`] of classifiers
//! ([`evaluate_split`] for a dataset's test split, [`evaluate_folder`] for PNG/JPEG files).
//!
//! Data flow: a folder image goes through the same preparation as `predict`
//! ([`predict::load_gray`], then the noise, then [`predict::denoise`] if asked, then
//! [`predict::to_mnist_with`] and its [`predict::Preparation`]); a dataset image is already
//! MNIST's 28x28 and goes to the model as it is (noise, then the median filter if asked).
//! The model is an [`Ensemble`]: one checkpoint, or the mean of several.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::GrayImage;
use serde::Serialize;

use crate::model::checkpoint::Checkpoint;
use crate::digits::classify::{family, Ensemble, CLASSES};
use crate::digits::data::Split;
pub use crate::kernels::softmax::Metrics;
use crate::base::files;
use crate::base::rng::Rng;
use crate::digits::morphology::round_u8_f64;
use crate::digits::predict;
use crate::{Error, Gpu, Result};

/// One class's scores, as [`Metrics::per_class`] lists them (and `--json` prints them).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// The class.
    pub class: usize,
    /// Of the answers `class`, the fraction that were right (0 when never answered).
    pub precision: f64,
    /// The answers `class`, right or wrong: precision's denominator (0: it is undefined).
    pub answered: u64,
    /// Of the examples of `class`, the fraction answered `class` (0 when there were none:
    /// `count` is its denominator).
    pub recall: f64,
    /// Examples of `class`.
    pub count: u64,
}

/// The evaluation's reports of kiln's score type (`kernels::softmax::Metrics`: the GPU's
/// metrics buffer, or counts from (label, prediction) pairs). Scores here are in f64, as
/// `evaluate --json` has always printed them.
impl Metrics {
    /// `correct / rows` in f64 (0 when nothing was counted); [`Metrics::accuracy`] is the f32.
    pub fn accuracy_f64(&self) -> f64 {
        self.correct as f64 / self.rows.max(1) as f64
    }

    /// Every class's precision, recall and count.
    pub fn per_class(&self) -> Vec<ClassScore> {
        (0..self.classes())
            .map(|c| {
                let answered: u64 = self.confusion.iter().map(|row| row[c] as u64).sum();
                let hit = self.confusion[c][c] as f64;
                let count = self.count(c) as u64;
                ClassScore { class: c, precision: hit / answered.max(1) as f64, answered, recall: hit / count.max(1) as f64, count }
            })
            .collect()
    }

    /// `{"accuracy", "total", "correct", "per_class": [{class, precision, answered, recall, count}], "confusion": [[..]]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "accuracy": self.accuracy_f64(),
            "total": self.rows,
            "correct": self.correct,
            "per_class": self.per_class(),
            "confusion": self.confusion,
        })
    }
}

impl fmt::Display for Metrics {
    /// The confusion matrix as a table: one row per label, one column per prediction.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.confusion.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(3);
        write!(f, "{:>10}", "label\\pred")?;
        for c in 0..self.classes() {
            write!(f, " {c:>width$}")?;
        }
        for (l, row) in self.confusion.iter().enumerate() {
            write!(f, "\n{l:>10}")?;
            for v in row {
                write!(f, " {v:>width$}")?;
            }
        }
        Ok(())
    }
}

/// One line of a labels file: an image name (relative to the images folder) and its digit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labelled {
    /// The image's name as written.
    pub name: String,
    /// The digit, 0-9.
    pub label: u8,
    /// The line it came from (1-based), for messages.
    pub line: usize,
}

/// Parses a labels file's text: `NAME LABEL` per line (the label is the last word, so a
/// name may hold spaces), `#` comments and blank lines ignored. `path` names the file in
/// errors, which give the line number. An image named twice, a label outside 0-9 and a
/// file with no entry are errors; a leading UTF-8 byte-order mark is skipped.
pub fn parse_labels(text: &str, path: &Path) -> Result<Vec<Labelled>> {
    let entries = parse_named(text, path, "LABEL", |name, label, content| match label.parse::<i64>() {
        Ok(v) if (0..CLASSES as i64).contains(&v) => Ok(v as u8),
        Ok(v) => Err(format!("label {v} for '{name}' is outside 0-9")),
        Err(_) => Err(format!("expected 'NAME LABEL' with a label 0-9, found {content:?}")),
    })?;
    Ok(entries.into_iter().map(|(name, label, line)| Labelled { name, label, line }).collect())
}

/// The entries of a labels file's text, `NAME VALUE` per line, as (name, value, line): the
/// value is the last word (a name may hold spaces) and `value(name, word, line's content)`
/// reads it or says what is wrong; `#` comments and blank lines are ignored and a leading
/// UTF-8 byte-order mark skipped. A name given twice and a file with no entry are errors;
/// each error names `path` and the line. `form` names the value in messages (`LABEL`).
pub fn parse_named<T>(
    text: &str,
    path: &Path,
    form: &str,
    value: impl Fn(&str, &str, &str) -> std::result::Result<T, String>,
) -> Result<Vec<(String, T, usize)>> {
    // Notepad and PowerShell begin UTF-8 files with a byte-order mark
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let bad = |m: String| Error::file(path, format!("line {line}: {m}"));
        let (name, word) = content
            .rsplit_once(char::is_whitespace)
            .map(|(n, w)| (n.trim(), w))
            .ok_or_else(|| bad(format!("expected 'NAME {form}', found {content:?}")))?;
        let v = value(name, word, content).map_err(bad)?;
        if let Some(first) = seen.insert(name, line) {
            return Err(bad(format!("'{name}' is labelled again (first on line {first})")));
        }
        out.push((name.to_string(), v, line));
    }
    if out.is_empty() {
        return Err(Error::file(path, format!("no labelled image in it (expected lines 'NAME {form}')")));
    }
    Ok(out)
}

/// A labels file larger than this is refused before it is read (64 MiB: a million lines).
pub const MAX_LABELS_BYTES: u64 = 64 << 20;

/// Reads and parses a labels file (see [`parse_labels`]) of at most [`MAX_LABELS_BYTES`].
pub fn read_labels(path: &Path) -> Result<Vec<Labelled>> {
    parse_labels(&read_labels_text(path)?, path)
}

/// A labels file's text: at most [`MAX_LABELS_BYTES`], UTF-8.
pub fn read_labels_text(path: &Path) -> Result<String> {
    let bytes = crate::base::files::read_input(path, "labels file", MAX_LABELS_BYTES)?;
    String::from_utf8(bytes).map_err(|e| Error::file(path, format!("the labels file is not UTF-8 text: {e}")))
}

/// The image files of `entries` in folder `dir`, with their labels, checked to be regular files:
/// a folder that is missing or empty, or entries that are not there or are not files (a
/// directory, a FIFO, a symbolic link loop), are errors naming them and what they are (the
/// first few, with their lines in `labels`).
pub fn resolve(dir: &Path, labels: &Path, entries: &[Labelled]) -> Result<Vec<(PathBuf, u8)>> {
    let listing = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot read the images folder: {e}")))?;
    if listing.count() == 0 {
        return Err(Error::file(dir, "the images folder is empty"));
    }
    let files: Vec<(PathBuf, u8)> = entries.iter().map(|e| (dir.join(&e.name), e.label)).collect();
    let missing: Vec<String> = entries
        .iter()
        .zip(&files)
        .filter_map(|(e, (p, _))| files::not_a_regular_file(p).map(|what| format!("line {}: '{}' {what}", e.line, e.name)))
        .collect();
    if !missing.is_empty() {
        let more = if missing.len() > 5 { format!(", and {} more", missing.len() - 5) } else { String::new() };
        return Err(Error::file(
            labels,
            format!("{} of {} images it names are not image files in {}: {}{more}", missing.len(), entries.len(), dir.display(), missing[..missing.len().min(5)].join(", ")),
        ));
    }
    Ok(files)
}

/// Corruption of 8-bit images, for measuring robustness: `--noise salt-pepper:P` or
/// `--noise gaussian:SIGMA`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Noise {
    /// Each pixel, with probability P (0-1), becomes black or white (half each).
    SaltPepper(f64),
    /// Each pixel gets a normal deviate of standard deviation SIGMA, in pixel units
    /// (0-255: `gaussian:50` is about a fifth of the range), rounded and clamped.
    Gaussian(f64),
}

impl FromStr for Noise {
    type Err = String;
    /// `salt-pepper:P` (P in 0-1) or `gaussian:SIGMA` (SIGMA in 0-255, pixel units).
    fn from_str(s: &str) -> std::result::Result<Noise, String> {
        let expected = "expected salt-pepper:P (P in 0-1) or gaussian:SIGMA (SIGMA in 0-255, pixel units)";
        let (kind, value) = s.split_once(':').ok_or_else(|| format!("'{s}': {expected}"))?;
        let v: f64 = value.trim().parse().map_err(|_| format!("'{s}': '{value}' is not a number; {expected}"))?;
        match kind {
            "salt-pepper" if (0.0..=1.0).contains(&v) => Ok(Noise::SaltPepper(v)),
            "gaussian" if (0.0..=255.0).contains(&v) => Ok(Noise::Gaussian(v)),
            "salt-pepper" | "gaussian" => Err(format!("'{s}': {v} is out of range; {expected}")),
            _ => Err(format!("'{s}': unknown noise '{kind}'; {expected}")),
        }
    }
}

impl fmt::Display for Noise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Noise::SaltPepper(p) => write!(f, "salt-pepper:{p}"),
            Noise::Gaussian(s) => write!(f, "gaussian:{s}"),
        }
    }
}

impl Noise {
    /// Corrupts `pixels` in place, drawing from `rng`.
    pub fn apply(&self, pixels: &mut [u8], rng: &mut Rng) {
        match *self {
            Noise::SaltPepper(p) => {
                for v in pixels {
                    if rng.unit() < p {
                        *v = if rng.unit() < 0.5 { 0 } else { 255 };
                    }
                }
            }
            Noise::Gaussian(sigma) => {
                for v in pixels {
                    // Box-Muller; 1 - unit() is in (0, 1], so the log is finite
                    let (u1, u2) = (1.0 - rng.unit(), rng.unit());
                    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    *v = round_u8_f64(*v as f64 + sigma * z);
                }
            }
        }
    }

    /// Corrupts image number `index` of a run with `seed`: the same image gets the same
    /// noise whatever the batch size or the order the images are read in.
    pub fn apply_seeded(&self, pixels: &mut [u8], seed: u64, index: usize) {
        let mut rng = Rng::new(seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        self.apply(pixels, &mut rng);
    }
}

/// How images are corrupted and cleaned before the model sees them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Noise added to each image (at its own resolution), seeded with `seed`.
    pub noise: Option<Noise>,
    /// The noise's seed.
    pub seed: u64,
    /// A GPU 3x3 median filter ([`predict::denoise`]) after the noise.
    pub denoise: Option<predict::Denoise>,
    /// The optional steps of [`predict::to_mnist_with`]: folder images are prepared with
    /// them, a dataset's images (prepared as MNIST's are) only when they differ from the
    /// default ([`predict::prepare_mnist`], as `train_mnist --deskew` trains).
    pub preparation: predict::Preparation,
}


/// Refuses a checkpoint that cannot be evaluated on `dataset`'s images (`mnist`,
/// `mnist10k` and a digit folder are digits; `fashion` is clothes): a model that does not
/// take 1x28x28 inputs, or one trained on the other family. A checkpoint that does not say
/// what it was trained on passes; the caller may warn.
pub fn check_model(checkpoint: &Checkpoint, dataset: &str) -> Result<()> {
    let [c, h, w] = checkpoint.model.input;
    if [c, h, w] != [1, 28, 28] {
        return Err(Error::shape("evaluate", format!("the model '{}' takes {c}x{h}x{w} inputs; evaluation feeds 1x28x28 images", checkpoint.model.name())));
    }
    match (family(&checkpoint.dataset), family(dataset)) {
        (Some(a), Some(b)) if a != b => Err(Error::unsupported(
            "evaluate",
            format!("the checkpoint was trained on '{}' ({a}), the images are {b}: its answers would mean nothing", checkpoint.dataset),
        )),
        _ => Ok(()),
    }
}

/// The index of the largest probability (the first, on ties).
pub fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().fold(0, |best, (i, &v)| if v > p[best] { i } else { best })
}

/// An evaluation's answers: the scores, and each image's probabilities (at the checkpoint's
/// temperature) and label, for the calibration measures (`calibrate::Calibration`).
pub struct Answers {
    /// Accuracy, per-class scores, confusion.
    pub metrics: Metrics,
    /// Each image's class probabilities, in order.
    pub probs: Vec<[f32; CLASSES]>,
    /// Each image's label, in order.
    pub labels: Vec<u8>,
}

impl Answers {
    fn new() -> Answers {
        Answers { metrics: Metrics::new(CLASSES), probs: Vec::new(), labels: Vec::new() }
    }

    fn add(&mut self, probs: Vec<[f32; CLASSES]>, labels: impl IntoIterator<Item = u8>) {
        for (p, label) in probs.into_iter().zip(labels) {
            self.metrics.add(label as usize, argmax(&p));
            self.probs.push(p);
            self.labels.push(label);
        }
    }
}

/// Evaluates a dataset split (28x28 images, already prepared as MNIST's are) in batches
/// of the classifier's size (one checkpoint, or the mean of several: [`Ensemble`]). Image `i` gets noise seeded by (`options.seed`, `i`).
pub fn evaluate_split(classifier: &mut Ensemble, gpu: &Gpu, split: &Split, options: &Options) -> Result<Answers> {
    let (rows, cols) = (split.images.rows as u32, split.images.cols as u32);
    let mut answers = Answers::new();
    let batch = classifier.batch();
    for start in (0..split.len()).step_by(batch) {
        let end = (start + batch).min(split.len());
        let mut images = Vec::with_capacity(end - start);
        for i in start..end {
            let mut pixels = split.images.image(i).expect("i < count").to_vec();
            if let Some(noise) = options.noise {
                noise.apply_seeded(&mut pixels, options.seed, i);
            }
            images.push(GrayImage::from_raw(cols, rows, pixels).expect("rows * cols pixels"));
        }
        if let Some(kind) = options.denoise {
            images = predict::denoise_many(gpu, &images, kind)?;
        }
        if options.preparation != predict::Preparation::default() {
            // a deskewing model was trained on digits put through the preparation
            images = images.into_iter().map(|img| predict::prepare_mnist(img, &options.preparation)).collect::<Result<_>>()?;
        }
        answers.add(classifier.classify(&images)?, split.labels[start..end].iter().copied());
    }
    Ok(answers)
}

/// Loads image `index` of a folder evaluation as `predict` would (noise and the median
/// filter as `options` say): the 28x28 the model sees.
pub fn prepare(gpu: &Gpu, path: &Path, index: usize, options: &Options) -> Result<GrayImage> {
    let mut gray = predict::load_gray(path)?;
    if let Some(noise) = options.noise {
        noise.apply_seeded(&mut gray, options.seed, index);
    }
    if let Some(kind) = options.denoise {
        gray = predict::denoise(gpu, &gray, kind)?;
    }
    predict::to_mnist_with(&gray, path, &options.preparation)
}

/// Evaluates labelled image files (see [`resolve`]) in batches of the classifier's size,
/// prepared as `predict` prepares them ([`prepare`]). Every image must be usable: one
/// that cannot be read, or holds no ink, fails the evaluation, after the others are read
/// so that the error counts them all.
pub fn evaluate_folder(classifier: &mut Ensemble, gpu: &Gpu, files: &[(PathBuf, u8)], options: &Options) -> Result<Answers> {
    let mut answers = Answers::new();
    let mut failures: Vec<String> = Vec::new();
    let mut count = 0;
    for (b, chunk) in files.chunks(classifier.batch()).enumerate() {
        let mut images = Vec::with_capacity(chunk.len());
        for (j, (path, _)) in chunk.iter().enumerate() {
            match prepare(gpu, path, b * classifier.batch() + j, options) {
                Ok(img) => images.push(img),
                Err(e) => {
                    count += 1;
                    if failures.len() < 5 {
                        failures.push(e.to_string());
                    }
                }
            }
        }
        if count > 0 {
            continue; // the evaluation has failed: only count the other unusable images
        }
        answers.add(classifier.classify(&images)?, chunk.iter().map(|(_, label)| *label));
    }
    if count > 0 {
        let more = if count > failures.len() { format!("\n  ... and {} more", count - failures.len()) } else { String::new() };
        return Err(Error::unsupported("evaluate", format!("{count} of {} images could not be used:\n  {}{more}", files.len(), failures.join("\n  "))));
    }
    Ok(answers)
}
