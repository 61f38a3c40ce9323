//! Training images that teach the reader's classifier to say "this is not one digit"
//! (outlier exposure): fields are drawn from MNIST *training* digits as the string sets
//! draw theirs ([`crate::digits::string_sets`]: touching, overlapping, spaced and broken
//! digits), cut by the reader's own segmenter ([`segment::segment`], at
//! [`segment::Grain::TRAINING`]), and each candidate is
//! labelled by the ink it takes from the known digits:
//! - one digit: at least [`WHOLE`] of that digit's ink and at least [`WHOLE`] of the
//!   candidate's ink from it: the digit's label;
//! - not one digit: a second digit gives at least [`PAIR`] of its ink (parts of two digits),
//!   or it holds at most [`FRAGMENT`] of its main digit's ink (a fragment): [`NO_CLASS`],
//!   which the cross-entropy trains towards the uniform distribution
//!   ([`crate::kernels::softmax`]), so that the reader's `ln(top probability)` rejects it;
//! - anything between (a digit with a sliver of its neighbour, most of a digit) is left out.
//!
//! Each candidate is prepared exactly as the reader prepares it ([`super::prepare`]).

use image::GrayImage;

use super::segment::{self, Bbox, Grain, Segmented};
use crate::base::rng::Rng;
use crate::digits::classify::CLASSES;
use crate::digits::data::idx::Images;
use crate::digits::data::mnist::Split;
use crate::digits::string_sets::{compose_placed, Layout, Placed};
use crate::digits::predict::Preparation;

/// The label of a training image that is no digit: the class count (see
/// [`crate::kernels::softmax`]).
pub const NO_CLASS: u8 = CLASSES as u8;
/// The share of a digit's ink, and of the candidate's, that makes a candidate that digit.
pub const WHOLE: f64 = 0.9;
/// [`WHOLE`] when [`offered`] asks whether a candidate can be read as its digit: the trained
/// reader read the frozen `touching` set about as often as its candidates held each digit
/// this whole (65.6% read; of 1,000 fields drawn alike and cut as it cut them, every 0.4
/// line heights, 67.4% offered at 0.8, 53.7% at 0.85).
pub const OFFERED: f64 = 0.8;
/// The share of a candidate's ink from a second digit that makes it a pair.
pub const PAIR: f64 = 0.25;
/// The most of its digit's ink a fragment holds.
pub const FRAGMENT: f64 = 0.6;

/// The most fields drawn per cut asked for (a field gives several of both kinds).
pub const MAX_FIELDS_PER_CUT: usize = 20;

/// The fields the cuts come from, in turn: touching and overlapping (1-4 px, as the
/// `touching` set), mixed spacing with one digit in four broken (as `amount`), and tighter
/// overlaps still (up to 6 px), 2 to 6 digits each.
const LAYOUTS: [Layout; 3] = [
    Layout { count: (2, 6), gap: (-4, -1), broken_one_in: 0 },
    Layout { count: (2, 6), gap: (-2, 12), broken_one_in: 4 },
    Layout { count: (2, 6), gap: (-6, 2), broken_one_in: 6 },
];

/// A candidate of a field whose digits are known, labelled.
pub struct Cut {
    /// Its box in the field.
    pub bbox: Bbox,
    /// Prepared as the reader prepares it: 28x28, white on black.
    pub image: GrayImage,
    /// `Some(digit)`, `Some(NO_CLASS)`, or `None` for one left out (see the module's rules).
    pub label: Option<u8>,
}

/// The candidates of one field whose digits are known (`placed`: where each was drawn), in
/// the segmenter's order, labelled; those with no ink to prepare are left out.
pub fn label_candidates(img: &GrayImage, placed: &[Placed], preparation: &Preparation) -> Vec<Cut> {
    let Some(seg) = segment::segment(img, super::MAX_ATOMS_PER_FIELD, Grain::TRAINING) else { return Vec::new() };
    let Some(labels) = labels(&seg, placed, WHOLE) else { return Vec::new() };
    let Segmented { field, atoms, candidates, .. } = &seg;
    candidates.iter().zip(labels).filter_map(|(c, label)| Some(Cut { bbox: c.bbox, image: super::prepare(field, atoms, c, preparation)?, label })).collect()
}

/// Each candidate's label by the module's rules: the ink it takes from each known digit.
/// `None` when the field was scaled down (`placed` is in the image's pixels).
fn labels(seg: &Segmented, placed: &[Placed], whole: f64) -> Option<Vec<Option<u8>>> {
    let Segmented { field, atoms, candidates, .. } = seg;
    if field.scale != 1.0 {
        return None;
    }
    let w = field.flat.width() as i64;
    // each ink pixel's owner: the digit drawing the most ink there
    let owner: Vec<Option<usize>> = (0..field.ink.len() as i64)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let at = |p: &Placed| {
                let (dx, dy) = (x - p.x, y - p.y);
                let inside = dx >= 0 && dy >= 0 && dx < p.digit.width() as i64 && dy < p.digit.height() as i64;
                if inside { p.digit.get_pixel(dx as u32, dy as u32)[0] } else { 0 }
            };
            let best = (0..placed.len()).max_by_key(|&d| (at(&placed[d]), std::cmp::Reverse(d)))?;
            (field.ink[i as usize] && at(&placed[best]) > 0).then_some(best)
        })
        .collect();
    let mut ink = vec![0usize; placed.len()];
    for d in owner.iter().flatten() {
        ink[*d] += 1;
    }
    let label = |c: &segment::Candidate| {
        let mut from = vec![0usize; placed.len()];
        let mut total = 0;
        for atom in &atoms[c.first..=c.last] {
            for &i in &atom.pixels {
                total += 1;
                if let Some(d) = owner[i as usize] {
                    from[d] += 1;
                }
            }
        }
        let mut order: Vec<usize> = (0..placed.len()).collect();
        order.sort_by_key(|&d| std::cmp::Reverse(from[d]));
        let (first, second) = (order[0], order.get(1).copied());
        let share = |d: usize| from[d] as f64 / total.max(1) as f64;
        let of_digit = from[first] as f64 / ink[first].max(1) as f64;
        if second.is_some_and(|s| share(s) >= PAIR) || of_digit <= FRAGMENT {
            Some(NO_CLASS)
        } else if share(first) >= whole && of_digit >= whole {
            Some(placed[first].label)
        } else {
            None
        }
    };
    Some(candidates.iter().map(label).collect())
}

/// Whether the reader's segmenter ([`Grain::READING`]) offers a field's true reading: a
/// path through its candidates (as [`segment::best_path`] walks them, [`segment::specks`]
/// skippable) whose every candidate is one digit by the module's rules with [`OFFERED`] for
/// [`WHOLE`], spelling the field's digits. What no classifier reads past: a field not
/// offered is misread whatever the scores.
pub fn offered(img: &GrayImage, placed: &[Placed]) -> bool {
    let Some(seg) = segment::segment(img, super::MAX_ATOMS_PER_FIELD, Grain::READING) else { return false };
    let Some(labels) = labels(&seg, placed, OFFERED) else { return false };
    let n = seg.atoms.len();
    let specks = segment::specks(&seg.atoms);
    // reach[j][m]: atoms 0..j can be read as the first m digits
    let mut reach = vec![vec![false; placed.len() + 1]; n + 1];
    reach[0][0] = true;
    for j in 1..=n {
        for m in 0..=placed.len() {
            reach[j][m] = specks[j - 1] && reach[j - 1][m];
        }
        for (c, label) in seg.candidates.iter().zip(&labels).filter(|(c, _)| c.last + 1 == j) {
            for m in 0..placed.len() {
                if reach[c.first][m] && *label == Some(placed[m].label) {
                    reach[j][m + 1] = true;
                }
            }
        }
    }
    reach[n][placed.len()]
}

/// How many of `fields` fields of touching and overlapping digits (the `touching` set's
/// layout), drawn from `split`'s digits with `seed`, the segmenter offers the true reading
/// of ([`offered`]).
pub fn offered_touching(split: &Split, fields: usize, seed: u64) -> usize {
    (0..fields as u64)
        .filter(|&i| {
            let mut rng = Rng::new(seed ^ i);
            let (_, img, placed) = compose_placed(&LAYOUTS[0], split, &mut rng);
            offered(&img, &placed)
        })
        .count()
}

/// `not_digits` images of candidates that are not one digit and `digits` of candidates that
/// are (their label), cut from fields of `split`'s digits (use a training split), field `i`
/// drawn with a generator seeded by (`seed`, `i`): the same arguments give the same images
/// on any number of threads. Each is prepared with `preparation`, the model's (deskewed for
/// `train_mnist --deskew`). The non-digits first, labelled [`NO_CLASS`], then the digits;
/// 28x28, white on black. Fields give a few of each until both counts are met, or fewer when
/// `split` gives none of a kind (after [`MAX_FIELDS_PER_CUT`] fields per image asked for).
pub fn cuts(split: &Split, not_digits: usize, digits: usize, seed: u64, preparation: &Preparation) -> Split {
    // fields are cut in blocks, a block's fields shared out to threads, taken in field order
    const BLOCK: u64 = 64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let field = |i: u64| {
        let mut rng = Rng::new(seed ^ 0x0c75_d161_75ee_d000 ^ i);
        let (_, img, placed) = compose_placed(&LAYOUTS[(i % LAYOUTS.len() as u64) as usize], split, &mut rng);
        label_candidates(&img, &placed, preparation)
    };
    let mut none = Vec::with_capacity(not_digits);
    let mut one = Vec::with_capacity(digits);
    let most = (MAX_FIELDS_PER_CUT * (not_digits + digits)) as u64;
    let mut start = 0u64;
    while (none.len() < not_digits || one.len() < digits) && start < most {
        let per = BLOCK.div_ceil(threads);
        let part = |t: u64| (start + t * per..(start + (t + 1) * per).min(start + BLOCK)).flat_map(field).collect::<Vec<_>>();
        // one thread (wasm32 has no others): no spawn
        let block: Vec<Vec<Cut>> = if threads == 1 {
            vec![part(0)]
        } else {
            std::thread::scope(|scope| {
                let jobs: Vec<_> = (0..threads).map(|t| scope.spawn(move || part(t))).collect();
                jobs.into_iter().map(|j| j.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
            })
        };
        for Cut { image, label, .. } in block.into_iter().flatten() {
            match label {
                Some(NO_CLASS) if none.len() < not_digits => none.push(image),
                Some(d) if d != NO_CLASS && one.len() < digits => one.push((image, d)),
                _ => {}
            }
        }
        start += BLOCK;
    }
    let labels: Vec<u8> = std::iter::repeat_n(NO_CLASS, none.len()).chain(one.iter().map(|(_, d)| *d)).collect();
    let pixels: Vec<u8> = none.iter().chain(one.iter().map(|(img, _)| img)).flat_map(|img| img.as_raw().iter().copied()).collect();
    Split { images: Images { count: labels.len(), rows: 28, cols: 28, pixels }, labels }
}

/// `split` with `extra`'s images and labels appended.
pub fn appended(split: &Split, extra: &Split) -> Split {
    let mut pixels = split.images.pixels.clone();
    pixels.extend_from_slice(&extra.images.pixels);
    let mut labels = split.labels.clone();
    labels.extend_from_slice(&extra.labels);
    Split { images: Images { count: labels.len(), rows: split.images.rows, cols: split.images.cols, pixels }, labels }
}
