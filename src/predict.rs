//! Turning a user's picture of a digit into what an MNIST model expects, the way the
//! dataset was made: grayscale, white ink on black (inverted if the background is light),
//! background to 0 and ink to 255, cropped to the ink, the longer side scaled to 20 px keeping the aspect ratio, and
//! placed in a 28x28 canvas with the ink's centre of mass at the centre.

use std::path::Path;

use image::{imageops, GrayImage, Luma};

use crate::data::gpu::median3x3;
use crate::{DType, Error, Gpu, Result, Tensor};

/// Loads an image file as 8-bit grayscale, white ink on a dark background. Transparency
/// is flattened first (see [`flatten_alpha`]).
pub fn load_gray(path: &Path) -> Result<GrayImage> {
    let img = image::open(path).map_err(|e| Error::file(path, format!("cannot read the image (PNG or JPEG expected): {e}")))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::file(path, "the image is empty"));
    }
    let gray = if img.color().has_alpha() { flatten_alpha(&img.to_rgba8()) } else { img.to_luma8() };
    Ok(load_gray_from(gray))
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
        Luma([(a * luma(p) + (1.0 - a) * background).round().clamp(0.0, 255.0) as u8])
    })
}

/// The pixels a band of the GPU median filter may hold: bounds the memory of denoising a
/// huge photo (a 10000x10000 image runs as 25 bands of 400 rows).
const DENOISE_BAND_PIXELS: usize = 4 << 20;

/// 3x3 median filter on the GPU ([`crate::data::gpu::median3x3`], edges replicated), in
/// bands of rows that each fit a storage binding; each band carries one row of its
/// neighbours above and below, so the result equals one pass over the whole image.
pub fn denoise(gpu: &Gpu, img: &GrayImage) -> Result<GrayImage> {
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
        gpu.run(&[&median3x3(gpu, &input, &filtered, bottom - top, w)?])?;
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
pub fn denoise_many(gpu: &Gpu, images: &[GrayImage]) -> Result<Vec<GrayImage>> {
    let Some(first) = images.first() else { return Ok(Vec::new()) };
    let (w, h) = first.dimensions();
    if let Some(i) = images.iter().position(|img| img.dimensions() != (w, h)) {
        return Err(Error::shape("denoise_many", format!("image {i} is {}x{}, image 0 is {w}x{h}", images[i].width(), images[i].height())));
    }
    let values: Vec<f32> = images.iter().flat_map(|img| img.as_raw().iter().map(|&v| v as f32)).collect();
    let shape = [images.len(), h as usize, w as usize];
    let input = Tensor::from_f32(gpu, &shape, &values)?;
    let filtered = Tensor::empty(gpu, &shape, DType::F32)?;
    gpu.run(&[&median3x3(gpu, &input, &filtered, h as usize, w as usize)?])?;
    let v = filtered.to_f32(gpu)?;
    Ok(v.chunks_exact((w * h) as usize).map(|c| GrayImage::from_raw(w, h, c.iter().map(|&x| x as u8).collect()).expect("w * h pixels")).collect())
}

/// `load_gray` for an image already in memory: inverts light backgrounds.
pub fn load_gray_from(mut gray: GrayImage) -> GrayImage {
    // The border tells the background: light paper gets inverted to MNIST's dark one.
    let (w, h) = gray.dimensions();
    let border: Vec<u32> = gray
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x == w - 1 || *y == h - 1)
        .map(|(_, _, p)| p[0] as u32)
        .collect();
    if border.iter().sum::<u32>() / border.len() as u32 > 127 {
        imageops::invert(&mut gray);
    }
    gray
}

/// Crops to the ink, scales the longer side to 20 px and centres by centre of mass in
/// 28x28. `path` names the image in errors.
pub fn to_mnist(gray: &GrayImage, path: &Path) -> Result<GrayImage> {
    let max = gray.pixels().map(|p| p[0]).max().unwrap_or(0);
    let min = gray.pixels().map(|p| p[0]).min().unwrap_or(0);
    if max - min < 32 {
        return Err(Error::file(path, "no ink found (the image has almost no contrast)"));
    }
    // Background to 0, strongest ink to 255, as in MNIST.
    let span = (max - min) as f32;
    let gray = GrayImage::from_fn(gray.width(), gray.height(), |x, y| {
        Luma([((gray.get_pixel(x, y)[0] - min) as f32 * 255.0 / span).round() as u8])
    });
    let gray = &gray;
    let threshold = 64;
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in gray.enumerate_pixels() {
        if p[0] > threshold {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    let (cw, ch) = (x1 - x0 + 1, y1 - y0 + 1);
    let crop = imageops::crop_imm(gray, x0, y0, cw, ch).to_image();
    let scale = 20.0 / cw.max(ch) as f32;
    let (nw, nh) = (((cw as f32 * scale).round() as u32).max(1), ((ch as f32 * scale).round() as u32).max(1));
    let small = imageops::resize(&crop, nw, nh, imageops::FilterType::Triangle);
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
    Ok(canvas)
}

/// Normalised model input for 8-bit pixels (one 28x28 image, or many): `(p / 255 - mean) / std`.
pub fn normalise(pixels: &[u8], mean: f32, std: f32) -> Vec<f32> {
    pixels.iter().map(|&p| (p as f32 / 255.0 - mean) / std).collect()
}
