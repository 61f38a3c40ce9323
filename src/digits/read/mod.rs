//! Reading numbers: a field of handwritten digits in, the digit string out, with each
//! digit's box and probabilities and a confidence for the whole string (see [`Reader`]).
//!
//! The digits are found by *segmentation by recognition* ([`segment`]): the field is
//! binarised as [`crate::digits::predict::to_mnist`] binarises a digit, cut into atoms
//! (connected pieces of ink, wide pieces cut again at the minima of their vertical
//! projection, or every few columns where digits overlap, each cut leaning where that
//! crosses less ink), every run of up to
//! [`segment::Grain::READING`]'s `max_atoms` neighbouring atoms is a candidate digit, each
//! candidate is prepared as a single digit is and scored by the classifier (the log of its
//! top probability plus a prior on its shape), and the best partition of the atoms into
//! digits is chosen by dynamic programming. [`score`] measures readings against labels.

pub mod score;
pub mod segment;
pub mod train_data;

use std::path::Path;

use image::GrayImage;
use serde::Serialize;

use crate::digits::classify::{Classifier, CLASSES};
use crate::digits::predict::{to_mnist_with, Preparation};
use crate::{Gpu, Result};
use segment::{Atom, Bbox};

/// The most atoms a field is cut into: a field with more pieces of ink (a page of text, a
/// photo of noise) keeps its largest ones, which bounds the candidates per field.
pub const MAX_ATOMS_PER_FIELD: usize = 256;

/// How a [`Reader`] decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// A reading whose confidence is below this is returned as unsure (not accepted), and a
    /// digit whose top probability is below it is marked unsure. 0 accepts everything.
    pub reject: f32,
}

impl Default for Options {
    fn default() -> Options {
        Options { reject: 0.0 }
    }
}

/// One digit of a reading.
#[derive(Clone, Debug, Serialize)]
pub struct ReadDigit {
    /// Where its ink is in the image, in the image's pixels.
    pub bbox: Bbox,
    /// The digit read, 0-9.
    pub label: u8,
    /// The three most probable digits and their probabilities, most probable first.
    pub top3: [(u8, f32); 3],
    /// Its top probability is below the reader's `reject`.
    pub unsure: bool,
    /// The 28x28 image the classifier saw (white ink on black).
    #[serde(skip)]
    pub input: GrayImage,
}

/// What a [`Reader`] read in one field.
#[derive(Clone, Debug, Serialize)]
pub struct Reading {
    /// The digits read, left to right: the best guess even when not accepted. Empty when
    /// the image holds no ink.
    pub text: String,
    /// Each digit, in the order of `text`.
    pub digits: Vec<ReadDigit>,
    /// The string's confidence: the product of its digits' top probabilities (the
    /// classifier's, so a temperature it applies flows through); 0 for no digits.
    pub confidence: f32,
    /// `confidence >= reject` and at least one digit.
    pub accepted: bool,
}

impl Reading {
    /// The text with each unsure digit shown as `?`: `9?210`.
    pub fn marked(&self) -> String {
        self.digits.iter().map(|d| if d.unsure { '?' } else { char::from(b'0' + d.label) }).collect()
    }
}

/// A classifier that reads digit strings. All candidate digits of all the images of one
/// [`Reader::read`] call go through the classifier together, in its bounded batches: never
/// a GPU step per digit.
///
/// ```
/// use kiln::checkpoint::Checkpoint;
/// use kiln::nn::ModelKind;
/// use kiln::read::{Options, Reader};
/// use kiln::Classifier;
///
/// let gpu = kiln::testing::gpu();
/// // A checkpoint of the MLP with made-up weights (train_mnist makes real ones).
/// let model = ModelKind::Mlp.spec();
/// let graph = model.build(1, 0)?.graph;
/// let mut rng = kiln::rng::Rng::new(0);
/// let params = graph
///     .params()
///     .into_iter()
///     .map(|(_, name, shape)| (name.to_string(), shape.to_vec(), rng.vec(shape.iter().product()).iter().map(|v| 0.05 * v).collect()))
///     .collect();
/// let checkpoint = Checkpoint { model, mean: 0.1307, std: 0.3081, dataset: "mnist".into(), temperature: 1.0, deskew: false, params };
/// let mut reader = Reader::new(Classifier::new(gpu, checkpoint, 64)?, Options { reject: 0.5 });
///
/// // A field of three bars, white ink on black (as predict::load_gray gives any photo).
/// let field = image::GrayImage::from_fn(90, 40, |x, y| {
///     image::Luma([if (10..30).contains(&y) && [20, 45, 70].iter().any(|&c| (c..c + 3).contains(&x)) { 255 } else { 0 }])
/// });
/// let blank = image::GrayImage::new(50, 30);
/// let readings = reader.read(&[field, blank])?;
/// assert_eq!(readings.len(), 2);
/// let r = &readings[0];
/// assert_eq!(r.digits.len(), 3, "three separate bars are three digits");
/// assert_eq!(r.text.len(), 3);
/// assert!(r.digits.iter().zip([20, 45, 70]).all(|(d, x)| d.bbox.x0 == x && d.bbox.width() == 3));
/// let product: f32 = r.digits.iter().map(|d| d.top3[0].1).product();
/// assert!((r.confidence - product).abs() < 1e-6);
/// assert_eq!(r.accepted, r.confidence >= 0.5);
/// // no ink: no digits, never accepted
/// assert_eq!((readings[1].text.as_str(), readings[1].accepted), ("", false));
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Reader<'g> {
    classifier: Classifier<'g>,
    options: Options,
}

/// One field's candidates before the classifier scores them.
struct Plan {
    atoms: Vec<Atom>,
    candidates: Vec<segment::Candidate>,
    /// For each candidate, its index among the prepared images (None: no ink to prepare).
    input: Vec<Option<usize>>,
    height: u32,
    scale: f64,
}

impl<'g> Reader<'g> {
    /// Loads a checkpoint (see [`Classifier::load`]) with the default [`Options`].
    pub fn load(gpu: &'g Gpu, checkpoint: &Path) -> Result<Reader<'g>> {
        Ok(Reader::new(Classifier::load(gpu, checkpoint)?, Options::default()))
    }

    /// A reader over `classifier`.
    pub fn new(classifier: Classifier<'g>, options: Options) -> Reader<'g> {
        Reader { classifier, options }
    }

    /// The options it reads with.
    pub fn options(&self) -> Options {
        self.options
    }

    /// The classifier it scores candidates with.
    pub fn classifier(&mut self) -> &mut Classifier<'g> {
        &mut self.classifier
    }

    /// Reads each field: white ink on black, as [`crate::digits::predict::load_gray`] gives
    /// any photo. A field with no ink gives an empty, unaccepted reading. Memory grows with
    /// the number of images (some 50 candidates of 784 bytes per 10-digit field): callers
    /// with thousands pass them in chunks.
    pub fn read(&mut self, images: &[GrayImage]) -> Result<Vec<Reading>> {
        crate::runtime::gpu::block_on(self.read_async(images))
    }

    /// [`Reader::read`] without blocking: what the web page awaits.
    pub async fn read_async(&mut self, images: &[GrayImage]) -> Result<Vec<Reading>> {
        let mut inputs = Vec::new();
        // candidates are prepared as the model's training digits were (its checkpoint's deskew)
        let preparation = Preparation::of(self.classifier.checkpoint());
        let plans: Vec<Option<Plan>> = images.iter().map(|img| plan(img, &mut inputs, &preparation)).collect();
        let probs = self.classifier.classify_async(&inputs).await?;
        Ok(plans.into_iter().map(|p| p.map_or_else(empty, |p| self.choose(&p, &probs, &inputs))).collect())
    }

    /// The best path through one field's candidates, as a reading.
    fn choose(&self, plan: &Plan, probs: &[[f32; CLASSES]], inputs: &[GrayImage]) -> Reading {
        let score: Vec<f64> = plan
            .candidates
            .iter()
            .zip(&plan.input)
            .map(|(c, i)| match i {
                Some(i) => {
                    let atoms = &plan.atoms;
                    // a cut inside a piece of ink costs CUT, half on each side of it
                    let cut_left = c.first > 0 && atoms[c.first - 1].piece == atoms[c.first].piece;
                    let cut_right = c.last + 1 < atoms.len() && atoms[c.last + 1].piece == atoms[c.last].piece;
                    let cuts = f64::from(u8::from(cut_left) + u8::from(cut_right));
                    (top(&probs[*i])[0].1 as f64).max(1e-30).ln() + segment::shape_prior(&c.bbox, plan.height) - segment::CUT * cuts / 2.0 - segment::DIGIT
                }
                None => f64::NEG_INFINITY,
            })
            .collect();
        let specks = segment::specks(&plan.atoms);
        let Some(path) = segment::best_path(plan.atoms.len(), &plan.candidates, &score, |a| specks[a]) else { return empty() };
        let digits: Vec<ReadDigit> = path
            .iter()
            .map(|&k| {
                let i = plan.input[k].expect("chosen candidates have a finite score");
                let top3 = top(&probs[i]);
                ReadDigit { bbox: plan.candidates[k].bbox.unscaled(plan.scale), label: top3[0].0, top3, unsure: top3[0].1 < self.options.reject, input: inputs[i].clone() }
            })
            .collect();
        let confidence = if digits.is_empty() { 0.0 } else { digits.iter().map(|d| d.top3[0].1).product() };
        let text = digits.iter().map(|d| char::from(b'0' + d.label)).collect();
        Reading { text, accepted: !digits.is_empty() && confidence >= self.options.reject, digits, confidence }
    }
}

fn empty() -> Reading {
    Reading { text: String::new(), digits: Vec::new(), confidence: 0.0, accepted: false }
}

/// The three most probable classes, most probable first.
fn top(p: &[f32; CLASSES]) -> [(u8, f32); 3] {
    let mut order: Vec<usize> = (0..CLASSES).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    [0, 1, 2].map(|k| (order[k] as u8, p[order[k]]))
}

/// Segments one field and prepares its candidates as single digits (appended to `inputs`).
fn plan(img: &GrayImage, inputs: &mut Vec<GrayImage>, preparation: &Preparation) -> Option<Plan> {
    let segment::Segmented { field, atoms, candidates, height } = segment::segment(img, MAX_ATOMS_PER_FIELD, segment::Grain::READING)?;
    let input = candidates
        .iter()
        .map(|c| {
            let prepared = prepare(&field, &atoms, c, preparation)?;
            inputs.push(prepared);
            Some(inputs.len() - 1)
        })
        .collect();
    Some(Plan { atoms, candidates, input, height, scale: field.scale })
}

/// A candidate prepared as the classifier sees it: its ink cropped ([`segment::crop`]) and
/// prepared as a single digit is ([`to_mnist_with`], with the model's `preparation`:
/// [`Preparation::of`] its checkpoint); `None` when that finds no ink.
pub fn prepare(field: &segment::Field, atoms: &[Atom], c: &segment::Candidate, preparation: &Preparation) -> Option<GrayImage> {
    to_mnist_with(&segment::crop(field, atoms, c), Path::new("candidate digit"), preparation).ok()
}
