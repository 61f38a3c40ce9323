//! Frozen labelled sets of handwritten digit strings (fields), drawn deterministically from
//! MNIST test digits (the last 2,000 of the test set, as for [`crate::digits::digit_sets`]):
//! the same seed gives the same pixels on every machine, and [`FROZEN`] records each set's
//! checksum (tests/layer_digits/read.rs).
//!
//! Each digit is the MNIST digit cropped to its ink, scaled by a size jitter and placed on a
//! common baseline with a vertical jitter; fields are white ink on black, 8 px of margin.
//! - `zip`: 5 digits, size 0.85-1.15, baseline jitter up to 3 px, gaps of 2-10 px: a postal code.
//! - `touching`: 2-6 digits whose neighbours touch or overlap by 1-4 px (the ink combined by max).
//! - `amount`: 1-10 digits, gaps from -2 (overlap) to 12 px; a digit in four is broken: a
//!   1-2 px gap cut through it along a random line.
//! - `photo`: a `zip` or `amount` field (one each in turn), scaled 1-1.6x, photographed
//!   somewhere on a page 1.3-2x its size ([`crate::digits::digit_sets::photograph`]: paper
//!   tone, lighting ramp, blur, sensor noise).
//!
//! Each set is written as PNGs `NNNN.png` and `labels.txt` (`NNNN.png DIGITS` per line).

use image::{imageops, GrayImage, Luma};

use crate::base::rng::Rng;
use crate::digits::data::Split;
use crate::digits::digit_sets::{checksum, photograph, Look};
use crate::digits::morphology;

/// A string set's kind, as `make_string_sets` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StringKind {
    /// 5 separate digits.
    Zip,
    /// 2-6 digits touching or overlapping.
    Touching,
    /// 1-10 digits, mixed spacing, broken strokes.
    Amount,
    /// `zip` and `amount` fields photographed on a page.
    Photo,
}

/// Every set, in the order they are made.
pub const ALL: [StringKind; 4] = [StringKind::Zip, StringKind::Touching, StringKind::Amount, StringKind::Photo];

/// Fields per set.
pub const FIELDS: usize = 1000;

/// The seed every set is made with.
pub const SEED: u64 = 2030;

/// Each set's SHA-256 ([`Strings::checksum`] over the labels file and the pixels) when
/// made from mnist10k's evaluation part with [`SEED`]: the frozen sets.
pub const FROZEN: [(StringKind, &str); 4] = [
    (StringKind::Zip, "22118a96202c26efb25d8d166984e92aa42ffae10d1325723f9e9f7ac7774e48"),
    (StringKind::Touching, "3de7c768c28cce475481abd7d274e4ef18c32aeb69673f2e192e3b0ab8134b78"),
    (StringKind::Amount, "7e4b36650fa6a601c99fcb05aa28905a9010c187db49c3c5f115ce8c2fe91e28"),
    (StringKind::Photo, "10f712dc443fd7dd7be5a5fd0b9ea49133e5be16575635ec5218f7a92232a72d"),
];

impl StringKind {
    /// The set's name: its folder's name.
    pub fn name(self) -> &'static str {
        match self {
            StringKind::Zip => "zip",
            StringKind::Touching => "touching",
            StringKind::Amount => "amount",
            StringKind::Photo => "photo",
        }
    }

    /// The checksum recorded in [`FROZEN`].
    pub fn frozen(self) -> &'static str {
        FROZEN.iter().find(|(k, _)| *k == self).map(|(_, c)| *c).expect("every kind is in FROZEN")
    }
}

/// A set of fields: `(name, digits, image)` in order.
pub struct Strings {
    /// `(name, digit string, image)`.
    pub fields: Vec<(String, String, GrayImage)>,
}

impl Strings {
    /// The labels file: `NAME DIGITS` per line.
    pub fn labels_file(&self) -> String {
        self.fields.iter().map(|(n, l, _)| format!("{n} {l}\n")).collect()
    }

    /// SHA-256 (hex) as [`checksum`] computes it: the labels file, then each
    /// image's name, size and pixels.
    pub fn checksum(&self) -> String {
        checksum(&self.labels_file(), self.fields.iter().map(|(n, _, img)| (n.as_str(), img)))
    }
}

/// Makes set `kind` ([`FIELDS`] fields) from the digits of `split` (28x28, white on black),
/// field `i` drawn with a generator seeded by (`seed`, kind, `i`).
pub fn generate(kind: StringKind, split: &Split, seed: u64) -> Strings {
    let fields = (0..FIELDS)
        .map(|i| {
            let mut rng = Rng::new(seed ^ ((kind as u64 + 1) << 40) ^ i as u64);
            let (text, img) = field(kind, split, i, &mut rng);
            (format!("{i:04}.png"), text, img)
        })
        .collect();
    Strings { fields }
}

/// How a field's digits are spaced and damaged.
pub(crate) struct Layout {
    /// Number of digits, inclusive.
    pub(crate) count: (usize, usize),
    /// Gap to the previous digit in pixels, inclusive (negative: overlap).
    pub(crate) gap: (i64, i64),
    /// One digit in this many is broken (0: none).
    pub(crate) broken_one_in: usize,
}

/// A digit as it was put in a field (the generator's own record).
pub struct Placed {
    /// Its left column in the field (it may lie partly outside).
    pub x: i64,
    /// Its top row in the field.
    pub y: i64,
    /// Its pixels, white on black, as drawn (the field's pixel is the max over the digits).
    pub digit: GrayImage,
    /// Its label.
    pub label: u8,
}

fn field(kind: StringKind, split: &Split, i: usize, rng: &mut Rng) -> (String, GrayImage) {
    const ZIP: Layout = Layout { count: (5, 5), gap: (2, 10), broken_one_in: 0 };
    const TOUCHING: Layout = Layout { count: (2, 6), gap: (-4, -1), broken_one_in: 0 };
    const AMOUNT: Layout = Layout { count: (1, 10), gap: (-2, 12), broken_one_in: 4 };
    match kind {
        StringKind::Zip => compose(&ZIP, split, rng),
        StringKind::Touching => compose(&TOUCHING, split, rng),
        StringKind::Amount => compose(&AMOUNT, split, rng),
        StringKind::Photo => {
            let (text, ink) = compose(if i.is_multiple_of(2) { &ZIP } else { &AMOUNT }, split, rng);
            let scale = 1.0 + 0.6 * rng.unit();
            let (w, h) = (((ink.width() as f64 * scale).round() as u32).max(1), ((ink.height() as f64 * scale).round() as u32).max(1));
            let alpha = imageops::resize(&ink, w, h, imageops::FilterType::CatmullRom);
            let page = (1.3 + 0.7 * rng.unit(), 1.3 + 0.7 * rng.unit());
            let (pw, ph) = ((w as f64 * page.0).round() as u32, (h as f64 * page.1).round() as u32);
            let at = (rng.range(0, (pw - w) as usize) as u32, rng.range(0, (ph - h) as usize) as u32);
            let look = Look::draw(rng);
            (text, photograph(&alpha, (pw, ph), at, look, rng))
        }
    }
}

/// The MNIST digit `index` of `split` cropped to its ink (pixels above 0).
fn cropped(split: &Split, index: usize) -> GrayImage {
    let (rows, cols) = (split.images.rows as u32, split.images.cols as u32);
    let digit = GrayImage::from_raw(cols, rows, split.images.image(index).expect("index < count").to_vec()).expect("rows * cols pixels");
    let (mut x0, mut y0, mut x1, mut y1) = (cols, rows, 0, 0);
    for (x, y, p) in digit.enumerate_pixels() {
        if p[0] > 0 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 {
        return digit; // no ink: MNIST has none such, kept whole
    }
    imageops::crop_imm(&digit, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image()
}

/// Cuts a gap of 1-2 px through the digit along a random line through its middle half.
fn break_stroke(digit: &mut GrayImage, rng: &mut Rng) {
    let (w, h) = (digit.width() as f64, digit.height() as f64);
    let (cx, cy) = (w * (0.25 + 0.5 * rng.unit()), h * (0.25 + 0.5 * rng.unit()));
    let angle = rng.unit() * std::f64::consts::PI;
    let (nx, ny) = (angle.cos(), angle.sin()); // the line's normal
    let half = 0.5 + 0.5 * rng.unit(); // half the gap: 1-2 px wide
    for (x, y, p) in digit.enumerate_pixels_mut() {
        if ((x as f64 + 0.5 - cx) * nx + (y as f64 + 0.5 - cy) * ny).abs() <= half {
            p[0] = 0;
        }
    }
}

/// Lays digits out left to right on a common baseline: the digit string and the field.
fn compose(layout: &Layout, split: &Split, rng: &mut Rng) -> (String, GrayImage) {
    let (text, field, _) = compose_placed(layout, split, rng);
    (text, field)
}

/// [`compose`], and where each digit was put (the reader's training cuts label candidates
/// by them, [`crate::digits::read::train_data`]).
pub(crate) fn compose_placed(layout: &Layout, split: &Split, rng: &mut Rng) -> (String, GrayImage, Vec<Placed>) {
    const MARGIN: i64 = 8;
    let n = rng.range(layout.count.0, layout.count.1);
    let mut placed = Vec::with_capacity(n);
    let mut text = String::with_capacity(n);
    let mut x = MARGIN;
    for k in 0..n {
        let index = rng.range(0, split.len() - 1);
        let digit = cropped(split, index);
        let scale = 0.85 + 0.3 * rng.unit();
        let (w, h) = (((digit.width() as f64 * scale).round() as u32).max(1), ((digit.height() as f64 * scale).round() as u32).max(1));
        let mut digit = morphology::resize(&digit, w, h);
        if layout.broken_one_in > 0 && rng.range(1, layout.broken_one_in) == 1 {
            break_stroke(&mut digit, rng);
        }
        let gap = (layout.gap.0 + rng.range(0, (layout.gap.1 - layout.gap.0) as usize) as i64) * i64::from(k > 0);
        let jitter = rng.range(0, 6) as i64 - 3;
        x += gap;
        // the baseline 8 px above the bottom of a 40 px high band, whatever the digit's height
        placed.push(Placed { x, y: MARGIN + 24 - h as i64 + jitter, digit, label: split.labels[index] });
        x += w as i64;
        text.push(char::from(b'0' + split.labels[index]));
    }
    let width = (x + MARGIN) as u32;
    let mut out = GrayImage::new(width, (MARGIN * 2 + 27) as u32);
    for Placed { x: x0, y: y0, digit, .. } in &placed {
        for (dx, dy, p) in digit.enumerate_pixels() {
            let (x, y) = (*x0 + dx as i64, *y0 + dy as i64);
            if x >= 0 && y >= 0 && (x as u32) < out.width() && (y as u32) < out.height() {
                let q = out.get_pixel_mut(x as u32, y as u32);
                *q = Luma([q[0].max(p[0])]);
            }
        }
    }
    (text, out, placed)
}

impl crate::digits::digit_sets::Frozen for StringKind {
    const ALL: &'static [StringKind] = &ALL;
    const SOURCE: &'static str = "src/digits/string_sets.rs";
    fn name(self) -> &'static str {
        StringKind::name(self)
    }
    fn frozen(self) -> &'static str {
        StringKind::frozen(self)
    }
    fn make(self, split: &Split) -> (String, Vec<(String, GrayImage)>) {
        let set = generate(self, split, SEED);
        (set.labels_file(), set.fields.into_iter().map(|(n, _, img)| (n, img)).collect())
    }
}
