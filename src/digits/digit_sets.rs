//! Frozen labelled test sets of digits that do not look like MNIST's, made from MNIST
//! test digits (the last 2,000 of the test set: mnist10k's evaluation part, which no
//! kiln model trains on), deterministically: the same generator and seed give the same
//! pixels on every machine, and [`FROZEN`] records each set's checksum so that a changed
//! generator is noticed (tests/layer_digits/evaluate.rs).
//!
//! - `plain`: the digits as they are (28x28, white on black): the control.
//! - `thick`: strokes dilated as if written with a marker (at 3x, disc radius 3-4, back to 28x28).
//! - `thin`: strokes thinned to a hairline (at 3x: skeleton, dilated by 1, back to 28x28).
//! - `lowres`: scaled down to 9-12 px and back up to 28x28 without smoothing (blocky).
//! - `photo`: a photo of paper: dark ink on light paper, a canvas of 120-200 px, the digit
//!   30-70% of it and off centre, an uneven lighting gradient, blur and sensor noise.
//!
//! Each set is written as PNGs `NNNN.png` and `labels.txt` (`NNNN.png LABEL` per line).

use image::{imageops, GrayImage, Luma};
use sha2::{Digest, Sha256};

use crate::digits::data::Split;
use crate::digits::morphology::{self, dilate, mask_image, skeleton};
use crate::base::rng::Rng;

/// A test set's kind, as `make_digit_sets` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// The MNIST digits unchanged: the control.
    Plain,
    /// Strokes dilated: a marker.
    Thick,
    /// Strokes thinned to about one pixel: a fine pen.
    Thin,
    /// Down to 9-12 px and blocky back up.
    LowRes,
    /// Dark ink on lit paper, off centre, blurred and noisy.
    Photo,
}

/// Every set, in the order they are made.
pub const ALL: [SetKind; 5] = [SetKind::Plain, SetKind::Thick, SetKind::Thin, SetKind::LowRes, SetKind::Photo];

/// The seed every set is made with.
pub const SEED: u64 = 2026;

/// Each set's SHA-256 ([`Generated::checksum`]) when made from mnist10k's evaluation part
/// with [`SEED`]: the frozen sets.
pub const FROZEN: [(SetKind, &str); 5] = [
    (SetKind::Plain, "0bfbc164a4d2fd637f8f1d0298de03ef810e577100da38f61320539aaaacbd84"),
    (SetKind::Thick, "4fdc1a0496c17ad26888fa1be2d66924c00aaed3453514febadc7e66b48156ef"),
    (SetKind::Thin, "9aef35c0a2f08d90900b239c279d663f5b6f75ee84771dabd64198b785e23dc8"),
    (SetKind::LowRes, "acd88431f230f9271f8187f147d3ab11ec88e8a34eb644806c220e9910f18994"),
    (SetKind::Photo, "b248e614f4b3c0419c18884834eecb8aa473aff6a52e42f5b02724309c042a63"),
];

impl SetKind {
    /// The set's name: its folder's name.
    pub fn name(self) -> &'static str {
        match self {
            SetKind::Plain => "plain",
            SetKind::Thick => "thick",
            SetKind::Thin => "thin",
            SetKind::LowRes => "lowres",
            SetKind::Photo => "photo",
        }
    }

    /// The checksum recorded in [`FROZEN`].
    pub fn frozen(self) -> &'static str {
        FROZEN.iter().find(|(k, _)| *k == self).map(|(_, c)| *c).expect("every kind is in FROZEN")
    }

    /// Draws one digit of this set from an MNIST digit (28x28, white on black).
    pub fn render(self, digit: &GrayImage, rng: &mut Rng) -> GrayImage {
        match self {
            SetKind::Plain => digit.clone(),
            SetKind::Thick => {
                let big = morphology::resize(digit, 84, 84);
                let r = rng.range(3, 4) as u32;
                stretch(&morphology::resize(&dilate(&big, r), 28, 28))
            }
            SetKind::Thin => {
                let big = morphology::resize(digit, 84, 84);
                let line = dilate(&mask_image(&skeleton(&big, 127)), 1);
                stretch(&morphology::resize(&line, 28, 28))
            }
            SetKind::LowRes => {
                let s = rng.range(9, 12) as u32;
                let small = morphology::resize(digit, s, s);
                imageops::resize(&small, 28, 28, imageops::FilterType::Nearest)
            }
            SetKind::Photo => photo(digit, rng),
        }
    }
}

/// Scales so that the brightest pixel is 255 (a thinned digit resized down is faint).
fn stretch(img: &GrayImage) -> GrayImage {
    let max = img.pixels().map(|p| p[0]).max().unwrap_or(0).max(1) as u32;
    GrayImage::from_fn(img.width(), img.height(), |x, y| Luma([(img.get_pixel(x, y)[0] as u32 * 255 / max) as u8]))
}

/// A photo of the digit written on paper (see the module docs).
fn photo(digit: &GrayImage, rng: &mut Rng) -> GrayImage {
    let size = rng.range(120, 200) as u32;
    let look = Look::draw(rng);
    let side = rng.range(size as usize * 3 / 10, size as usize * 7 / 10) as u32;
    let (x0, y0) = (rng.range(0, (size - side) as usize) as u32, rng.range(0, (size - side) as usize) as u32);
    let alpha = imageops::resize(digit, side, side, imageops::FilterType::CatmullRom);
    photograph(&alpha, (size, size), (x0, y0), look, rng)
}

/// How a photo of paper looks: paper and ink levels (0-255).
#[derive(Clone, Copy, Debug)]
pub struct Look {
    paper: f64,
    ink: f64,
}

impl Look {
    /// Paper 185-235, ink 20-70.
    pub fn draw(rng: &mut Rng) -> Look {
        let paper = rng.range(185, 235) as f64;
        let ink = rng.range(20, 70) as f64;
        Look { paper, ink }
    }
}

/// Photographs `alpha` (white ink on black: how much ink covers each pixel) placed at `at`
/// on a page of `size`: dark ink on paper of `look`, a linear lighting ramp of 30-70 levels
/// in a random direction, a Gaussian blur (sigma 0.6-1.5) and sensor noise (sigma 4-12).
/// The digit sets' `photo` and the string sets' `photo` fields are drawn by it.
pub fn photograph(alpha: &GrayImage, size: (u32, u32), at: (u32, u32), look: Look, rng: &mut Rng) -> GrayImage {
    let ((w, h), (x0, y0)) = (size, at);
    let amp = rng.range(30, 70) as f64;
    let angle = rng.unit() * std::f64::consts::TAU;
    let (dx, dy) = (angle.cos(), angle.sin());
    let page = GrayImage::from_fn(w, h, |x, y| {
        let light = look.paper + amp * ((x as f64 / w as f64 - 0.5) * dx + (y as f64 / h as f64 - 0.5) * dy);
        let inside = x >= x0 && y >= y0 && x < x0 + alpha.width() && y < y0 + alpha.height();
        let a = if inside { alpha.get_pixel(x - x0, y - y0)[0] as f64 / 255.0 } else { 0.0 };
        Luma([morphology::round_u8_f64(light * (1.0 - a) + look.ink * a)])
    });
    let sigma = 0.6 + rng.unit() as f32 * 0.9;
    let mut out = imageops::blur(&page, sigma);
    let noise = 4.0 + rng.unit() * 8.0;
    crate::digits::evaluate::Noise::Gaussian(noise).apply(&mut out, rng);
    out
}

/// A generated set: image names, labels and pixels, and its checksum.
pub struct Generated {
    /// `(name, label, image)` in order.
    pub images: Vec<(String, u8, GrayImage)>,
}

impl Generated {
    /// The labels file: `NAME LABEL` per line.
    pub fn labels_file(&self) -> String {
        self.images.iter().map(|(n, l, _)| format!("{n} {l}\n")).collect()
    }

    /// SHA-256 (hex) of the labels file, then of each image's name, width, height (u32
    /// little-endian) and pixels: the pixels, not the PNG bytes, so a new PNG encoder does
    /// not change it.
    pub fn checksum(&self) -> String {
        checksum(&self.labels_file(), self.images.iter().map(|(n, _, img)| (n.as_str(), img)))
    }
}

/// SHA-256 (hex) of a labels file, then of each image's name, width, height (u32
/// little-endian) and pixels: what a frozen set's checksum is.
pub fn checksum<'a>(labels: &str, images: impl Iterator<Item = (&'a str, &'a GrayImage)>) -> String {
    let mut h = Sha256::new();
    h.update(labels.as_bytes());
    for (name, img) in images {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(img.width().to_le_bytes());
        h.update(img.height().to_le_bytes());
        h.update(img.as_raw());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes set `kind` from the digits of `split` (28x28), image `i` drawn with a generator
/// seeded by (`seed`, kind, `i`).
pub fn generate(kind: SetKind, split: &Split, seed: u64) -> Generated {
    let (rows, cols) = (split.images.rows as u32, split.images.cols as u32);
    let images = (0..split.len())
        .map(|i| {
            let digit = GrayImage::from_raw(cols, rows, split.images.image(i).expect("i < count").to_vec()).expect("rows * cols pixels");
            let mut rng = Rng::new(seed ^ ((kind as u64 + 1) << 32) ^ i as u64);
            (format!("{i:04}.png"), split.labels[i], kind.render(&digit, &mut rng))
        })
        .collect();
    Generated { images }
}

/// A family of frozen, checksummed sets: these digit sets ([`SetKind`]) and the digit
/// strings of `string_sets` (`StringKind`). What `make_digit_sets` and `make_string_sets`
/// write, through [`write_sets`].
pub trait Frozen: Copy + 'static {
    /// Every set of the family, in the order they are made.
    const ALL: &'static [Self];
    /// Where the frozen checksums are written down (named when one differs).
    const SOURCE: &'static str;
    /// The set's name: its folder's name.
    fn name(self) -> &'static str;
    /// The set's frozen checksum.
    fn frozen(self) -> &'static str;
    /// The set made from `split` with the family's seed: its labels file and its images by
    /// file name.
    fn make(self, split: &Split) -> (String, Vec<(String, GrayImage)>);
}

impl Frozen for SetKind {
    const ALL: &'static [SetKind] = &ALL;
    const SOURCE: &'static str = "src/digits/digit_sets.rs";
    fn name(self) -> &'static str {
        SetKind::name(self)
    }
    fn frozen(self) -> &'static str {
        SetKind::frozen(self)
    }
    fn make(self, split: &Split) -> (String, Vec<(String, GrayImage)>) {
        let set = generate(self, split, SEED);
        (set.labels_file(), set.images.into_iter().map(|(n, _, img)| (n, img)).collect())
    }
}

/// One set as [`write_sets`] wrote it.
pub struct Written {
    /// The set's name.
    pub name: &'static str,
    /// Its images.
    pub count: usize,
    /// The folder they are in.
    pub dir: std::path::PathBuf,
    /// Its checksum ([`checksum`]).
    pub sha256: String,
    /// It equals the frozen one.
    pub frozen: bool,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.frozen { "frozen" } else { "CHANGED" };
        write!(f, "{:<8} {} images in {}  sha256 {} ({verdict})", self.name, self.count, self.dir.display(), self.sha256)
    }
}

/// The sets named (`--sets`; every set of the family when none), or an error naming the
/// unknown one and the known ones.
pub fn choose<K: Frozen>(names: &[String]) -> crate::Result<Vec<K>> {
    if names.is_empty() {
        return Ok(K::ALL.to_vec());
    }
    let known = || K::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
    names
        .iter()
        .map(|name| K::ALL.iter().copied().find(|k| k.name() == name).ok_or_else(|| crate::Error::unsupported("--sets", format!("unknown set '{name}' (expected {})", known()))))
        .collect()
}

/// Makes each of `kinds` from `split` and writes it under `out/<name>/`: its images as PNGs
/// and `labels.txt`, each file atomically.
pub fn write_sets<K: Frozen>(kinds: &[K], split: &Split, out: &std::path::Path) -> crate::Result<Vec<Written>> {
    kinds
        .iter()
        .map(|&kind| {
            let (labels, images) = kind.make(split);
            let dir = out.join(kind.name());
            std::fs::create_dir_all(&dir).map_err(|e| crate::Error::file(&dir, format!("--out: cannot create the folder: {e}")))?;
            for (name, img) in &images {
                crate::base::files::write_png(&dir.join(name), img.as_raw(), img.dimensions(), image::ExtendedColorType::L8)?;
            }
            crate::base::files::write_atomic(&dir.join("labels.txt"), labels.as_bytes())?;
            let sha256 = checksum(&labels, images.iter().map(|(n, img)| (n.as_str(), img)));
            Ok(Written { name: kind.name(), count: images.len(), dir, frozen: sha256 == kind.frozen(), sha256 })
        })
        .collect()
}
