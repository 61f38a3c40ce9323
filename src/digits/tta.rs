//! Test-time augmentation: a prepared digit's class probabilities averaged over several
//! views of it: the digit itself and `n - 1` small seeded warps (rotation within ±8°, scale
//! 0.93-1.07, shift within ±1 px, bilinear), so that one unlucky stroke position weighs less.
//! The views of image `i` depend only on (`seed`, `i`, view): the same whatever the batch.

use image::GrayImage;

use crate::base::rng::Rng;
use crate::digits::classify::{Classifier, CLASSES};
use crate::digits::morphology::round_u8_f64;
use crate::{Error, Result};

/// The most views per image (`--tta N`).
pub const MAX_VIEWS: usize = 64;

/// View `view` (1-based; 0 is the digit itself) of prepared digit `index`: a small affine warp
/// about the centre, drawn from (`seed`, `index`, `view`), sampled bilinearly (zero outside).
pub fn view(img: &GrayImage, seed: u64, index: usize, view: usize) -> GrayImage {
    if view == 0 {
        return img.clone();
    }
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (view as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f));
    let mut draw = |half: f64| (2.0 * rng.unit() - 1.0) * half;
    let angle = draw(8f64.to_radians());
    let scale = 1.0 + draw(0.07);
    let (sx, sy) = (draw(1.0), draw(1.0));
    let (w, h) = img.dimensions();
    let (cx, cy) = (w as f64 / 2.0 - 0.5, h as f64 / 2.0 - 0.5);
    let (cs, sn) = (angle.cos(), angle.sin());
    let at = |x: i64, y: i64| if x >= 0 && y >= 0 && x < w as i64 && y < h as i64 { img.get_pixel(x as u32, y as u32)[0] as f64 } else { 0.0 };
    GrayImage::from_fn(w, h, |x, y| {
        // inverse map: output position -> source position
        let (dx, dy) = ((x as f64 - cx - sx) / scale, (y as f64 - cy - sy) / scale);
        let (px, py) = (cs * dx + sn * dy + cx, -sn * dx + cs * dy + cy);
        let (fx, fy) = (px.floor(), py.floor());
        let (tx, ty) = (px - fx, py - fy);
        let (x0, y0) = (fx as i64, fy as i64);
        let top = at(x0, y0) * (1.0 - tx) + at(x0 + 1, y0) * tx;
        let bottom = at(x0, y0 + 1) * (1.0 - tx) + at(x0 + 1, y0 + 1) * tx;
        image::Luma([round_u8_f64(top * (1.0 - ty) + bottom * ty)])
    })
}

/// Class probabilities of prepared digits (as [`Classifier::classify`] takes them), each the
/// mean over `n` views ([`view`]): `n = 1` is [`Classifier::classify`] itself.
pub fn classify(classifier: &mut Classifier, images: &[GrayImage], n: usize, seed: u64) -> Result<Vec<[f32; CLASSES]>> {
    if !(1..=MAX_VIEWS).contains(&n) {
        return Err(Error::unsupported("tta::classify(n)", format!("{n}: expected 1 to {MAX_VIEWS} views per image")));
    }
    let mut out = Vec::with_capacity(images.len());
    // a classifier batch of images at a time, all their views together
    let per = (classifier.batch() / n).max(1);
    for (c, chunk) in images.chunks(per).enumerate() {
        let views: Vec<GrayImage> = chunk.iter().enumerate().flat_map(|(j, img)| (0..n).map(move |v| view(img, seed, c * per + j, v))).collect();
        let probs = classifier.classify(&views)?;
        for p in probs.chunks(n) {
            let mut mean = [0f64; CLASSES];
            for q in p {
                mean.iter_mut().zip(q).for_each(|(m, &v)| *m += v as f64);
            }
            out.push(mean.map(|m| (m / n as f64) as f32));
        }
    }
    Ok(out)
}
