//! Turning a user's picture of a digit into what an MNIST model expects, the way the
//! dataset was made: grayscale, white ink on black (inverted if the background is light),
//! the lighting evened and specks dropped, background to 0 and ink to 255, cropped to the
//! ink, strokes much thicker or thinner than MNIST's brought toward its width, the longer
//! side scaled to 20 px keeping the aspect ratio, and placed in a 28x28 canvas with the
//! ink's centre of mass at the centre (see [`to_mnist`]).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use image::{imageops, GrayImage, Luma};

use crate::base::files;
use crate::kernels::data::{impulse_median3x3, median3x3};
use crate::digits::data::idx::Images;
use crate::digits::data::mnist::Split;
use crate::digits::morphology;
use crate::model::checkpoint::Checkpoint;
use crate::{DType, Error, Gpu, Result, Tensor};

/// Loads an image file as 8-bit grayscale, white ink on a dark background. Transparency
/// is flattened first (see [`flatten_alpha`]), and the EXIF orientation applied. Anything
/// but a regular file (a FIFO, whose opening would block; a directory) is refused before
/// it is opened.
pub fn load_gray(path: &Path) -> Result<GrayImage> {
    if let Some(what) = files::not_a_regular_file(path) {
        return Err(Error::file(path, format!("{what}: cannot read it as an image (PNG or JPEG expected)")));
    }
    let reader = image::ImageReader::open(path).map_err(|e| Error::file(path, format!("cannot read the image (PNG or JPEG expected): {e}")))?;
    gray_of(reader, path)
}

/// [`load_gray`] for an image file already in memory (what a server received), its format
/// found from its first bytes; `name` names it in errors. The same decoding and
/// preparation as [`load_gray`], so both give the same pixels for the same file.
pub fn load_gray_bytes(bytes: &[u8], name: &Path) -> Result<GrayImage> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::file(name, format!("cannot read the image (PNG or JPEG expected): {e}")))?;
    gray_of(reader, name)
}

/// The width and height an encoded image declares in its header, read without decoding
/// its pixels (a server refuses a decompression bomb by it); `None` when the bytes are not
/// a PNG or JPEG with a readable header.
pub fn declared_size(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()
}

/// Decodes (EXIF orientation applied) and flattens to grayscale, white ink on dark.
fn gray_of<R: std::io::BufRead + std::io::Seek>(reader: image::ImageReader<R>, path: &Path) -> Result<GrayImage> {
    let img = decode_oriented(reader).map_err(|e| Error::file(path, format!("cannot read the image (PNG or JPEG expected): {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::file(path, "the image is empty"));
    }
    let gray = if img.color().has_alpha() { flatten_alpha(&img.to_rgba8()) } else { img.to_luma8() };
    Ok(load_gray_from(gray))
}

/// Decodes an image as a viewer shows it: the EXIF orientation a phone records (JPEG,
/// or PNG's eXIf chunk) is applied, so a photo taken sideways is upright.
fn decode_oriented<R: std::io::BufRead + std::io::Seek>(reader: image::ImageReader<R>) -> image::ImageResult<image::DynamicImage> {
    use image::ImageDecoder;
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut img = image::DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Composites a picture with transparency over a background opposite to its ink, then
/// takes its luminance. A canvas export draws ink as opaque pixels on fully transparent
/// ones whose colour is meaningless (often black, like the ink): the ink is what is
/// opaque, and its mean colour says whether the background should be white or black.
pub fn flatten_alpha(rgba: &image::RgbaImage) -> GrayImage {
    let luma = |p: &image::Rgba<u8>| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64;
    let (sum, weight) = rgba.pixels().fold((0.0, 0.0), |(s, w), p| {
        let a = p[3] as f64 / 255.0;
        (s + a * luma(p), w + a)
    });
    let ink = if weight > 0.0 { sum / weight } else { 0.0 };
    let background = if ink < 128.0 { 255.0 } else { 0.0 };
    GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y);
        let a = p[3] as f64 / 255.0;
        Luma([morphology::round_u8_f64(a * luma(p) + (1.0 - a) * background)])
    })
}

/// The pixels a band of the GPU median filter may hold: bounds the memory of denoising a
/// huge photo (a 10000x10000 image runs as 25 bands of 400 rows).
const DENOISE_BAND_PIXELS: usize = 4 << 20;

/// Which 3x3 median filter `--denoise` runs on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Denoise {
    /// Every pixel replaced by its 3x3 median ([`crate::kernels::data::median3x3`]): it also
    /// rounds off clean strokes (0.4 points lost on clean MNIST).
    Median,
    /// Only the pixels taken for salt or pepper replaced by their median
    /// ([`crate::kernels::data::impulse_median3x3`]): a clean digit stays as it is.
    #[default]
    Impulse,
}

impl FromStr for Denoise {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Denoise, String> {
        match s {
            "impulse" => Ok(Denoise::Impulse),
            "median" => Ok(Denoise::Median),
            _ => Err(format!("'{s}': expected impulse (the median where a pixel is salt or pepper) or median (everywhere)")),
        }
    }
}

impl fmt::Display for Denoise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Denoise::Median => "median",
            Denoise::Impulse => "impulse",
        })
    }
}

impl Denoise {
    /// The filter's dispatch over `input` [B, rows, cols] into `out`.
    fn dispatch(self, gpu: &Gpu, input: &Tensor, out: &Tensor, rows: usize, cols: usize) -> Result<crate::kernels::Dispatch> {
        match self {
            Denoise::Median => median3x3(gpu, input, out, rows, cols),
            Denoise::Impulse => impulse_median3x3(gpu, input, out, rows, cols),
        }
    }
}

/// A 3x3 median filter on the GPU (`kind`; edges replicated), in bands of rows that each
/// fit a storage binding; each band carries one row of its neighbours above and below, so
/// the result equals one pass over the whole image.
pub fn denoise(gpu: &Gpu, img: &GrayImage, kind: Denoise) -> Result<GrayImage> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let limits = gpu.limits();
    let limit = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) as usize / 4;
    let band_pixels = DENOISE_BAND_PIXELS.min(limit);
    if 3 * w > band_pixels {
        return Err(Error::unsupported("denoise", format!("an image {w} pixels wide: at most {} fit the median filter", band_pixels / 3)));
    }
    let rows = (band_pixels / w - 2).max(1);
    let mut out = GrayImage::new(w as u32, h as u32);
    for y0 in (0..h).step_by(rows) {
        let y1 = (y0 + rows).min(h);
        let (top, bottom) = (y0.saturating_sub(1), (y1 + 1).min(h));
        let band: Vec<f32> = img.as_raw()[top * w..bottom * w].iter().map(|&v| v as f32).collect();
        let shape = [1, bottom - top, w];
        let input = Tensor::from_f32(gpu, &shape, &band)?;
        let filtered = Tensor::empty(gpu, &shape, DType::F32)?;
        gpu.run(&[&kind.dispatch(gpu, &input, &filtered, bottom - top, w)?])?;
        let v = filtered.to_f32(gpu)?;
        let keep = &v[(y0 - top) * w..(y1 - top) * w];
        for (o, &x) in out.as_mut()[y0 * w..y1 * w].iter_mut().zip(keep) {
            *o = x as u8;
        }
    }
    Ok(out)
}

/// [`denoise`] for many images of one size (a batch of MNIST's 28x28, say): one GPU pass
/// over all of them. An error if their sizes differ.
pub fn denoise_many(gpu: &Gpu, images: &[GrayImage], kind: Denoise) -> Result<Vec<GrayImage>> {
    let Some(first) = images.first() else { return Ok(Vec::new()) };
    let (w, h) = first.dimensions();
    if let Some(i) = images.iter().position(|img| img.dimensions() != (w, h)) {
        return Err(Error::shape("denoise_many", format!("image {i} is {}x{}, image 0 is {w}x{h}", images[i].width(), images[i].height())));
    }
    let values: Vec<f32> = images.iter().flat_map(|img| img.as_raw().iter().map(|&v| v as f32)).collect();
    let shape = [images.len(), h as usize, w as usize];
    let input = Tensor::from_f32(gpu, &shape, &values)?;
    let filtered = Tensor::empty(gpu, &shape, DType::F32)?;
    gpu.run(&[&kind.dispatch(gpu, &input, &filtered, h as usize, w as usize)?])?;
    let v = filtered.to_f32(gpu)?;
    Ok(v.chunks_exact((w * h) as usize).map(|c| GrayImage::from_raw(w, h, c.iter().map(|&x| x as u8).collect()).expect("w * h pixels")).collect())
}

/// `load_gray` for an image already in memory: inverts light backgrounds. The background
/// is what most of the border is: each border pixel is called light or dark by Otsu's
/// threshold over the whole image, so an uneven light (paper lit from one side) or a digit
/// that touches the edge does not flip the decision as a mean would.
pub fn load_gray_from(mut gray: GrayImage) -> GrayImage {
    let (w, h) = gray.dimensions();
    let t = otsu(&histogram(gray.as_raw()));
    let (mut light, mut border) = (0u64, 0u64);
    for (x, y, p) in gray.enumerate_pixels() {
        if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
            border += 1;
            light += u64::from(p[0] > t);
        }
    }
    if 2 * light > border {
        imageops::invert(&mut gray);
    }
    gray
}

/// The longest side [`to_mnist`] works at: a larger photo is scaled down first (the digit
/// ends up 20 px tall anyway), which bounds the time and memory of the steps below.
const WORK_MAX: u32 = 1024;
/// The side of the box a digit is fitted into while its stroke width is normalised: 4x
/// MNIST's 20 px, so that eroding or dilating by one pixel changes the width by a tenth of
/// a pixel at MNIST's scale.
const WORK_BOX: u32 = 80;
/// MNIST's median stroke width in a [`WORK_BOX`] box ([`morphology::stroke_width`] at
/// threshold 127), measured on every 20th training digit: p5 5.2, p10 5.9, median 8.65,
/// p90 12.1, p95 13.5.
const MNIST_STROKE: f64 = 8.65;
/// Strokes outside this range of widths (in the [`WORK_BOX`] box) are eroded or dilated
/// toward [`STROKE_TARGET`]. MNIST's own range is wide (its last 2,000 test digits measure
/// p10 8.1, median 10.3, p90 16.1) and the models read all of it: only clearly thinner or
/// thicker strokes are changed.
const STROKE_RANGE: (f64, f64) = (5.0, 16.0);
/// Where eroded and dilated strokes end up: (from thick, from thin), within MNIST's range.
const STROKE_TARGET: (f64, f64) = (12.0, MNIST_STROKE);

/// Prepares a digit as MNIST's were made (white ink on black, as [`load_gray`] gives it):
/// 0. an image scaled up without smoothing (blocks of repeated pixels) is blurred ([`deblock`]);
/// 1. the lighting is evened: a plane fitted to the background is subtracted;
/// 2. the ink is found with Otsu's threshold; specks (connected pieces under 5% of the
///    largest) do not count, so salt noise and dirt do not stretch the box;
/// 3. the ink is stretched to 0-255 (the background's noise level to 0, the strokes'
///    90th percentile to 255) and cropped to its box;
/// 4. in an 80 px box, the stroke width is measured ([`morphology::stroke_width`]) and
///    strokes far outside MNIST's range (under 5 or over 16 px there) are dilated or eroded into it;
/// 5. the longer side is scaled to 20 px (aspect ratio kept) and the digit is placed in
///    28x28 with its centre of mass at the centre.
///
/// With [`Preparation::deskew`], the cropped digit is first sheared upright by its second
/// moments ([`deskew`]) and cropped again.
///
/// `path` names the image in errors.
pub fn to_mnist(gray: &GrayImage, path: &Path) -> Result<GrayImage> {
    to_mnist_with(gray, path, &Preparation::default())
}

/// [`to_mnist`] with the optional steps as `preparation` says.
pub fn to_mnist_with(gray: &GrayImage, path: &Path, preparation: &Preparation) -> Result<GrayImage> {
    Ok(stages(gray, path, preparation)?.digit)
}

/// The optional steps of [`to_mnist`]. A model reads its inputs prepared as its training
/// digits were: [`Preparation::of`] its checkpoint is what predict, evaluate, read, serve,
/// explain and the web page use unless told otherwise; `Preparation::default()` deskews
/// nothing (MNIST's digits as they come).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Preparation {
    /// Shear the digit upright by its second moments ([`deskew`]) before fitting the box.
    pub deskew: bool,
}

impl Preparation {
    /// The preparation `checkpoint`'s model was trained with (its `deskew` metadata).
    pub fn of(checkpoint: &Checkpoint) -> Preparation {
        Preparation { deskew: checkpoint.deskew }
    }

    /// The preparation a command line asks for: `--deskew` or `--no-deskew` (the last one
    /// given wins, so at most one is set), else `default` (the model's, [`Preparation::of`]).
    pub fn from_flags(deskew: bool, no_deskew: bool, default: Preparation) -> Preparation {
        Preparation { deskew: if deskew { true } else if no_deskew { false } else { default.deskew } }
    }
}

/// An MNIST-format image (28x28, white ink on black, a dataset's) prepared as
/// [`to_mnist_with`] prepares a photo; with no ink to prepare, as it is.
pub fn prepare_mnist(digit: GrayImage, preparation: &Preparation) -> Result<GrayImage> {
    match to_mnist_with(&digit, Path::new("a dataset image"), preparation) {
        Ok(prepared) => Ok(prepared),
        Err(Error::File { .. }) => Ok(digit),
        Err(e) => Err(e),
    }
}

/// Every image of an MNIST-format `split` (28x28, white ink on black) prepared as
/// [`to_mnist_with`] prepares a photo: what `train_mnist --deskew` trains on, and what a
/// model trained so is evaluated on. An image with no ink to prepare is kept as it is. The
/// images are shared among the machine's cores.
pub fn prepare_split(split: &Split, preparation: &Preparation) -> Result<Split> {
    let (rows, cols) = (split.images.rows as u32, split.images.cols as u32);
    if rows != 28 || cols != 28 {
        return Err(Error::shape("prepare_split", format!("{rows}x{cols} images: expected MNIST's 28x28")));
    }
    let per = (rows * cols) as usize;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = split.len().div_ceil(threads).max(1) * per;
    let mut pixels = split.images.pixels.clone();
    std::thread::scope(|s| {
        let jobs: Vec<_> = pixels
            .chunks_mut(chunk)
            .map(|part| {
                s.spawn(move || -> Result<()> {
                    for img in part.chunks_exact_mut(per) {
                        let gray = GrayImage::from_raw(cols, rows, img.to_vec()).expect("a whole image");
                        img.copy_from_slice(prepare_mnist(gray, preparation)?.as_raw());
                    }
                    Ok(())
                })
            })
            .collect();
        jobs.into_iter().try_for_each(|j| j.join().expect("a preparation thread panicked"))
    })?;
    Ok(Split { images: Images { pixels, ..split.images.clone() }, labels: split.labels.clone() })
}

/// Each stage of [`to_mnist`] for one image, as `predict --dump-preprocessed` shows them.
#[derive(Clone, Debug)]
pub struct Stages {
    /// The input the preparation starts from (scaled down to 1024 px on its longer side if larger).
    pub original: GrayImage,
    /// The ink cropped, its levels stretched to 0-255, sheared upright when deskewing.
    pub deskewed: GrayImage,
    /// The ink's box at the working scale after the stroke width is normalised: what is
    /// scaled to 20 px.
    pub boxed: GrayImage,
    /// The 28x28 the model sees.
    pub digit: GrayImage,
}

impl Stages {
    /// The stages side by side on one strip, each scaled (nearest neighbour, aspect kept) to
    /// `height` px tall and separated by a grey bar 4 px wide.
    pub fn strip(&self, height: u32) -> GrayImage {
        let height = height.max(1);
        let parts: Vec<GrayImage> = [&self.original, &self.deskewed, &self.boxed, &self.digit]
            .iter()
            .map(|img| {
                let w = ((img.width() as f64 * height as f64 / img.height().max(1) as f64).round() as u32).max(1);
                imageops::resize(*img, w, height, imageops::FilterType::Nearest)
            })
            .collect();
        const GAP: u32 = 4;
        let width = parts.iter().map(|p| p.width()).sum::<u32>() + GAP * (parts.len() as u32 - 1);
        let mut strip = GrayImage::from_pixel(width, height, Luma([128]));
        let mut x = 0;
        for p in &parts {
            imageops::replace(&mut strip, p, x as i64, 0);
            x += p.width() + GAP;
        }
        strip
    }
}

/// The slant of a digit (white ink on black) by its second moments: `mu11 / mu02`, the
/// horizontal shift of the ink per pixel down (negative when it leans right, as `/`); 0
/// for an empty image or a single row.
pub fn slant(img: &GrayImage) -> f64 {
    let (mut m, mut sx, mut sy) = (0f64, 0f64, 0f64);
    for (x, y, p) in img.enumerate_pixels() {
        let v = p[0] as f64;
        (m, sx, sy) = (m + v, sx + v * x as f64, sy + v * y as f64);
    }
    if m == 0.0 {
        return 0.0;
    }
    let (cx, cy) = (sx / m, sy / m);
    let (mut mu11, mut mu02) = (0f64, 0f64);
    for (x, y, p) in img.enumerate_pixels() {
        let v = p[0] as f64;
        mu11 += v * (x as f64 - cx) * (y as f64 - cy);
        mu02 += v * (y as f64 - cy) * (y as f64 - cy);
    }
    if mu02 < 1e-9 * m { 0.0 } else { mu11 / mu02 }
}

/// The largest slant [`deskew`] corrects (45 degrees): a steeper one is a digit lying on its
/// side or not a digit, and shearing it further would only smear it.
pub const MAX_SLANT: f64 = 1.0;

/// Shears a digit (white ink on black) upright, as LeCun's deslanted MNIST: each row moves
/// sideways by `-slant * (y - cy)` ([`slant`], clamped to [`MAX_SLANT`]) about the ink's
/// centre of mass, sampled linearly along the row, and the result is cropped to its ink.
pub fn deskew(img: &GrayImage) -> GrayImage {
    let s = slant(img).clamp(-MAX_SLANT, MAX_SLANT);
    if s == 0.0 {
        return img.clone();
    }
    let (w, h) = img.dimensions();
    let (m, sy) = img.enumerate_pixels().fold((0f64, 0f64), |(m, sy), (_, y, p)| (m + p[0] as f64, sy + p[0] as f64 * y as f64));
    let cy = sy / m;
    // rows shift by -s (y - cy): the new x range covers every shifted row
    let shift = |y: f64| -s * (y - cy);
    let (lo, hi) = (shift(0.0).min(shift(h as f64 - 1.0)), shift(0.0).max(shift(h as f64 - 1.0)));
    let x0 = lo.floor();
    let nw = (w as f64 - 1.0 + hi.ceil() - x0 + 1.0) as u32;
    let sheared = GrayImage::from_fn(nw, h, |x, y| {
        let src = x as f64 + x0 - shift(y as f64);
        let f = src.floor();
        let t = src - f;
        let at = |xx: f64| if xx < 0.0 || xx >= w as f64 { 0.0 } else { img.get_pixel(xx as u32, y)[0] as f64 };
        Luma([morphology::round_u8_f64((1.0 - t) * at(f) + t * at(f + 1.0))])
    });
    crop_to_ink(&sheared, 0)
}

/// The box of the pixels brighter than `level` (the image itself when there are none).
fn crop_to_ink(img: &GrayImage, level: u8) -> GrayImage {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] > level {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 {
        return img.clone();
    }
    imageops::crop_imm(img, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image()
}

/// Every stage of [`to_mnist_with`] for one image (see [`Stages`]).
pub fn stages(gray: &GrayImage, path: &Path, preparation: &Preparation) -> Result<Stages> {
    let (w, h) = gray.dimensions();
    let scaled;
    let gray = if w.max(h) > WORK_MAX {
        let s = WORK_MAX as f64 / w.max(h) as f64;
        scaled = morphology::resize(gray, ((w as f64 * s).round() as u32).max(1), ((h as f64 * s).round() as u32).max(1));
        &scaled
    } else {
        gray
    };
    // the stages' "original" stays the image as given: the blur is the preparation's
    let smoothed = deblock(gray);
    let flat = subtract_background(smoothed.as_ref().unwrap_or(gray));
    let hist = histogram(flat.as_raw());
    let max = (0..256).rev().find(|&v| hist[v] > 0).unwrap_or(0);
    if max < 32 {
        return Err(Error::file(path, "no ink found (the image has almost no contrast)"));
    }
    let t = otsu(&hist);
    let ink = keep_large_pieces(&flat, t);
    // The box of the ink, and the levels that map to 0 and 255.
    let (w, h) = flat.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    let mut strokes = [0u64; 256];
    for (x, y, p) in flat.enumerate_pixels() {
        if ink[(y * w + x) as usize] {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            strokes[p[0] as usize] += 1;
        }
    }
    let hi = ninetieth(&strokes).expect("the largest piece has ink") as f32;
    // the background's noise level: its 90th percentile, from the pixels away from the ink
    let near = grow(&ink, w, h);
    let mut background = [0u64; 256];
    flat.as_raw().iter().zip(&near).filter(|(_, &n)| !n).for_each(|(&v, _)| background[v as usize] += 1);
    let lo = ninetieth(&background).map_or(0.0, |v| v.min(t) as f32);
    let span = (hi - lo).max(1.0);
    let (cw, ch) = (x1 - x0 + 1, y1 - y0 + 1);
    let crop = GrayImage::from_fn(cw, ch, |x, y| {
        let i = ((y + y0) * w + x + x0) as usize;
        let v = (flat.as_raw()[i] as f32 - lo) / span;
        Luma([morphology::round_u8(v * 255.0)])
    });
    let crop = if preparation.deskew { deskew(&crop) } else { crop };
    let (cw, ch) = crop.dimensions();
    // Stroke width, in a box of WORK_BOX.
    let fit = |side: u32| {
        let s = side as f32 / cw.max(ch) as f32;
        (((cw as f32 * s).round() as u32).max(1), ((ch as f32 * s).round() as u32).max(1))
    };
    let (bw, bh) = fit(WORK_BOX);
    let mut work = morphology::resize(&crop, bw, bh);
    // scaling down leaves a hairline faint: its brightest pixel back to 255
    let peak = work.pixels().map(|p| p[0]).max().unwrap_or(0).max(1) as u32;
    if peak < 255 {
        work.pixels_mut().for_each(|p| p[0] = (p[0] as u32 * 255 / peak) as u8);
    }
    if let Some(width) = morphology::stroke_width(&work, 127) {
        if width > STROKE_RANGE.1 {
            // at most a third of the width off each side: no stroke vanishes
            let r = ((width - STROKE_TARGET.0) / 2.0).round().min((width / 3.0).floor()) as u32;
            work = morphology::erode(&work, r);
        } else if width < STROKE_RANGE.0 {
            let r = ((STROKE_TARGET.1 - width) / 2.0).round() as u32;
            // the box grows with the strokes, so that none is cut at the edge
            let mut padded = GrayImage::new(bw + 2 * r, bh + 2 * r);
            imageops::overlay(&mut padded, &work, r as i64, r as i64);
            work = morphology::dilate(&padded, r);
        }
    }
    // the box of the ink again: erosion shrank it
    let work = crop_to_ink(&work, 32);
    let (ww, wh) = work.dimensions();
    let s = 20.0 / ww.max(wh) as f32;
    let (nw, nh) = (((ww as f32 * s).round() as u32).max(1), ((wh as f32 * s).round() as u32).max(1));
    let small = morphology::resize(&work, nw, nh);
    // centre of mass of the scaled digit
    let (mut sx, mut sy, mut sm) = (0f64, 0f64, 0f64);
    for (x, y, p) in small.enumerate_pixels() {
        let m = p[0] as f64;
        sx += m * x as f64;
        sy += m * y as f64;
        sm += m;
    }
    let (cx, cy) = if sm > 0.0 { (sx / sm, sy / sm) } else { (nw as f64 / 2.0, nh as f64 / 2.0) };
    let ox = (14.0 - cx).round().clamp(0.0, (28 - nw) as f64) as i64;
    let oy = (14.0 - cy).round().clamp(0.0, (28 - nh) as f64) as i64;
    let mut canvas = GrayImage::from_pixel(28, 28, Luma([0]));
    imageops::overlay(&mut canvas, &small, ox, oy);
    Ok(Stages { original: gray.clone(), deskewed: crop, boxed: work, digit: canvas })
}

/// An image whose neighbouring rows and columns repeat in runs of at least this many on
/// average ([`block_size`]) was scaled up without smoothing, and is blurred ([`deblock`]).
/// MNIST's digits and photos measure 1.0-1.5, the `lowres` sets (9-12 px scaled to 28 by
/// nearest neighbour) 2.2-3.4.
const BLOCKY: f64 = 2.0;
/// The blur's sigma, per block side: chosen on digits the shipped model never trained on
/// (README, "Real handwriting": 0.2-0.3 all pay alike, 0.35 less, 0.4 costs).
const DEBLOCK_SIGMA: f64 = 0.25;

/// How blocky `img` is: the mean run of identical neighbouring lines (rows, then columns,
/// counting only pairs where one is not flat), the smaller of the two; about the block side
/// of an image scaled up by nearest neighbour, 1 for a photo. `None` for a flat image.
pub fn block_size(img: &GrayImage) -> Option<f64> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    // runs along one axis: `lines` lines of `len` pixels, `at(i, k)` pixel k of line i
    let runs = |lines: usize, len: usize, at: &dyn Fn(usize, usize) -> u8| -> Option<f64> {
        let flat = |i: usize| (1..len).all(|k| at(i, k) == at(i, 0));
        let (mut same, mut pairs) = (0usize, 0usize);
        let mut prev_flat = lines > 0 && flat(0);
        for i in 1..lines {
            let next_flat = flat(i);
            if !(prev_flat && next_flat) {
                pairs += 1;
                same += (0..len).all(|k| at(i, k) == at(i - 1, k)) as usize;
            }
            prev_flat = next_flat;
        }
        (pairs > 0).then(|| pairs as f64 / (pairs - same).max(1) as f64)
    };
    let rows = runs(h, w, &|y, x| raw[y * w + x])?;
    let cols = runs(w, h, &|x, y| raw[y * w + x])?;
    Some(rows.min(cols))
}

/// `img` blurred by a Gaussian of [`DEBLOCK_SIGMA`] block sides when it is blocky
/// ([`block_size`] at least [`BLOCKY`]): its blocks' edges are not the writer's.
pub fn deblock(img: &GrayImage) -> Option<GrayImage> {
    let b = block_size(img).filter(|&b| b >= BLOCKY)?;
    Some(imageops::blur(img, (DEBLOCK_SIGMA * b) as f32))
}

/// The value at index `n * 9 / 10` of the `n` values a histogram counts, sorted; `None` for
/// an empty one.
fn ninetieth(hist: &[u64; 256]) -> Option<u8> {
    let k = hist.iter().sum::<u64>() * 9 / 10;
    let mut below = 0;
    (0..=255u8).find(|&v| {
        below += hist[v as usize];
        below > k
    })
}

/// A 256-bin histogram of 8-bit pixels.
pub fn histogram(pixels: &[u8]) -> [u64; 256] {
    let mut hist = [0u64; 256];
    for &p in pixels {
        hist[p as usize] += 1;
    }
    hist
}

/// Otsu's threshold: the level `t` that best splits the histogram into `<= t` and `> t`
/// (the largest between-class variance; the middle of the best levels on a tie, so that a
/// two-level image splits half way).
pub fn otsu(hist: &[u64; 256]) -> u8 {
    let total: f64 = hist.iter().sum::<u64>() as f64;
    let sum: f64 = hist.iter().enumerate().map(|(v, &c)| v as f64 * c as f64).sum();
    let (mut w0, mut s0) = (0.0, 0.0);
    let (mut best, mut first, mut last) = (-1.0, 0usize, 0usize);
    for (t, &count) in hist.iter().enumerate().take(255) {
        w0 += count as f64;
        s0 += t as f64 * count as f64;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let d = s0 / w0 - (sum - s0) / w1;
        let between = w0 * w1 * d * d;
        if between > best * (1.0 + 1e-12) {
            (best, first, last) = (between, t, t);
        } else if between >= best * (1.0 - 1e-12) {
            last = t;
        }
    }
    ((first + last) / 2) as u8
}

/// The image minus a plane fitted to its background (the pixels not much brighter than
/// the plane, refitted three times so that the ink stops pulling it up), clamped at 0:
/// lighting that varies across the page becomes a flat black.
pub fn subtract_background(gray: &GrayImage) -> GrayImage {
    let (w, h) = gray.dimensions();
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let px = gray.as_raw();
    let mut plane = [0.0f64; 3]; // a + b (x - cx) + c (y - cy)
    let at = |p: &[f64; 3], x: u32, y: u32| p[0] + p[1] * (x as f64 - cx) + p[2] * (y as f64 - cy);
    for round in 0..4 {
        // least squares over the pixels at most 8 levels above the last plane (all, first)
        let mut m = [[0.0f64; 3]; 3];
        let mut r = [0.0f64; 3];
        for y in 0..h {
            for x in 0..w {
                let v = px[(y * w + x) as usize] as f64;
                if round > 0 && v > at(&plane, x, y) + 8.0 {
                    continue;
                }
                let f = [1.0, x as f64 - cx, y as f64 - cy];
                for i in 0..3 {
                    r[i] += f[i] * v;
                    for j in i..3 {
                        m[i][j] += f[i] * f[j];
                    }
                }
            }
        }
        // the lower triangle: the same products summed in the same order
        (m[1][0], m[2][0], m[2][1]) = (m[0][1], m[0][2], m[1][2]);
        match solve3(m, r) {
            Some(p) => plane = p,
            None => break, // too few pixels (a line of them): keep the last plane
        }
    }
    GrayImage::from_fn(w, h, |x, y| Luma([morphology::round_u8_f64(px[(y * w + x) as usize] as f64 - at(&plane, x, y))]))
}

/// Solves the 3x3 system `m p = r` (Cramer's rule); `None` when it is singular.
fn solve3(m: [[f64; 3]; 3], r: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-9 * m[0][0].max(1.0).powi(3) {
        return None;
    }
    let mut p = [0.0; 3];
    for (k, pk) in p.iter_mut().enumerate() {
        let mut mk = m;
        for i in 0..3 {
            mk[i][k] = r[i];
        }
        *pk = det(&mk) / d;
    }
    Some(p)
}

/// The pixels brighter than `t` that belong to a large piece of ink: 8-connected pieces of
/// at least 5% of the largest one's area. Only their box is kept: smaller pieces inside it
/// stay (a faint joint of a stroke can come out as one), those outside are cut away.
fn keep_large_pieces(img: &GrayImage, t: u8) -> Vec<bool> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let on: Vec<bool> = img.as_raw().iter().map(|&v| v > t).collect();
    let mut piece = vec![u32::MAX; w * h];
    let mut areas: Vec<usize> = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !on[start] || piece[start] != u32::MAX {
            continue;
        }
        let id = areas.len() as u32;
        let mut area = 0;
        piece[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            area += 1;
            let (x, y) = ((i % w) as i64, (i / w) as i64);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if on[j] && piece[j] == u32::MAX {
                        piece[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        areas.push(area);
    }
    let largest = areas.iter().copied().max().unwrap_or(0);
    piece.iter().map(|&p| p != u32::MAX && areas[p as usize] * 20 >= largest).collect()
}

/// The mask grown by one pixel (8 neighbours): the ink with its anti-aliased edge.
fn grow(mask: &[bool], w: u32, h: u32) -> Vec<bool> {
    let (w, h) = (w as usize, h as usize);
    (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            (y.saturating_sub(1)..(y + 2).min(h)).any(|yy| (x.saturating_sub(1)..(x + 2).min(w)).any(|xx| mask[yy * w + xx]))
        })
        .collect()
}

/// Normalised model input for 8-bit pixels (one 28x28 image, or many): `(p / 255 - mean) / std`.
pub fn normalise(pixels: &[u8], mean: f32, std: f32) -> Vec<f32> {
    pixels.iter().map(|&p| (p as f32 / 255.0 - mean) / std).collect()
}
