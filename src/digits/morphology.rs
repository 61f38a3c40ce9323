//! Small image morphology on 8-bit grayscale, white ink on black: what preparing a digit
//! (thinning a thick marker, thickening a hairline, scaling it) and making test digits need.
//! CPU code: the images are small (a digit at 80x80 at most when it is used here), and every
//! request `serve` answers runs them, so each is written for one channel and no bounds
//! checks in its inner loop.

use image::{GrayImage, Luma};

/// Each pixel replaced by the `pick` (min or max) of the pixels within `r + 0.5` of it,
/// outside the image counting as background (0). The disc is cut into rows: row `dy` spans
/// `-a..=a` with `a` its half-width, so the disc's pick is the pick, over the rows, of a
/// horizontal pick of width `2a + 1`, and those come from each other (the span `a` is the
/// pick of span `a - 1` one pixel left and one right). About `3r` picks a pixel instead of
/// the disc's `3r²`, on whole rows at a time.
fn filter(img: &GrayImage, r: u32, pick: fn(u8, u8) -> u8) -> GrayImage {
    if r == 0 {
        return img.clone();
    }
    let (w, h, r) = (img.width() as usize, img.height() as usize, r as usize);
    let pw = w + 2 * r;
    // the image on a border of r background pixels; spans[a]: the horizontal pick of width 2a + 1
    let mut spans = vec![vec![0u8; pw * (h + 2 * r)]];
    for (y, row) in img.as_raw().chunks_exact(w.max(1)).enumerate() {
        spans[0][(y + r) * pw + r..][..w].copy_from_slice(row);
    }
    for a in 1..=r {
        let last = &spans[a - 1];
        let mut next = vec![0u8; last.len()];
        // span a at x: span a - 1 at x - 1 and x + 1 (and at x, for a = 1)
        for (x, v) in next.iter_mut().enumerate().take(last.len() - 1).skip(1) {
            *v = pick(last[x - 1], last[x + 1]);
            if a == 1 {
                *v = pick(*v, last[x]);
            }
        }
        spans.push(next);
    }
    let limit = (r as f32 + 0.5).powi(2);
    let half = |dy: usize| (0..=r).rev().find(|&dx| ((dx * dx + dy * dy) as f32) <= limit).expect("dx = 0 is inside");
    let mut out = img.as_raw().clone();
    for y in 0..h {
        let row = &mut out[y * w..(y + 1) * w];
        for dy in 0..=2 * r {
            let span = &spans[half(dy.abs_diff(r))][(y + dy) * pw + r..][..w];
            row.iter_mut().zip(span).for_each(|(o, &s)| *o = pick(*o, s));
        }
    }
    GrayImage::from_raw(w as u32, h as u32, out).expect("w x h pixels")
}

/// Grayscale dilation by a disc of radius `r`: each pixel becomes the brightest within `r`,
/// so white strokes grow by `r` on each side.
pub fn dilate(img: &GrayImage, r: u32) -> GrayImage {
    filter(img, r, u8::max)
}

/// Grayscale erosion by a disc of radius `r` (the darkest within `r`; outside the image
/// counts as black): white strokes shrink by `r` on each side.
pub fn erode(img: &GrayImage, r: u32) -> GrayImage {
    filter(img, r, u8::min)
}

/// `x.round().clamp(0.0, 255.0) as u8` (halves away from zero) without a call to libm's
/// `roundf`, which the baseline x86-64 target cannot inline and which cost a twentieth of
/// preparing a digit: below 2^23 truncation and the fraction are exact in f32.
pub fn round_u8(x: f32) -> u8 {
    let x = x.clamp(0.0, 255.0);
    let whole = x as u32;
    (whole + u32::from(x - whole as f32 >= 0.5)) as u8
}

/// [`round_u8`] for an f64.
pub fn round_u8_f64(x: f64) -> u8 {
    let x = x.clamp(0.0, 255.0);
    let whole = x as u32;
    (whole + u32::from(x - whole as f64 >= 0.5)) as u8
}

/// `image::imageops::resize(img, width, height, FilterType::Triangle)`, bit for bit: the
/// same weights and the same f32 sums in the same order (columns first, then rows, rounded
/// once at the end), for one channel. The crate's resampler is generic over four channels
/// and reads each pixel through `get_pixel`; preparing a digit scales it three times, which
/// made the crate's resize the largest cost of a `serve` request after thinning.
pub fn resize(img: &GrayImage, width: u32, height: u32) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return GrayImage::new(width, height);
    }
    if (width, height) == img.dimensions() {
        return img.clone();
    }
    let (nw, nh) = (width as usize, height as usize);
    let px = img.as_raw();
    let mut columns = vec![0f32; w * nh];
    let (down, weights) = triangle_weights(h, nh);
    for (y, &(first, at, taps)) in down.iter().enumerate() {
        let row = &mut columns[y * w..(y + 1) * w];
        for (k, &wt) in weights[at..at + taps].iter().enumerate() {
            let src = &px[(first + k) * w..(first + k + 1) * w];
            row.iter_mut().zip(src).for_each(|(t, &p)| *t += p as f32 * wt);
        }
    }
    let mut out = vec![0u8; nw * nh];
    let (across, weights) = triangle_weights(w, nw);
    for (row, src) in out.chunks_exact_mut(nw).zip(columns.chunks_exact(w)) {
        for (o, &(first, at, taps)) in row.iter_mut().zip(&across) {
            let t = weights[at..at + taps].iter().zip(&src[first..]).fold(0f32, |t, (&wt, &p)| t + p * wt);
            *o = round_u8(t);
        }
    }
    GrayImage::from_raw(width, height, out).expect("width x height pixels")
}

/// For each of `to` output pixels along one axis of `from` input pixels: the first input
/// pixel it reads, where its weights start in the second vector and how many there are: the
/// normalised triangle weights of the pixels it reads (image's `Filter { kernel:
/// triangle_kernel, support: 1.0 }`, widened by the ratio when shrinking).
fn triangle_weights(from: usize, to: usize) -> (Vec<(usize, usize, usize)>, Vec<f32>) {
    let ratio = from as f32 / to as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio;
    let mut weights = Vec::new();
    let taps = (0..to)
        .map(|out| {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, from as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, from as i64);
            let centre = centre - 0.5;
            let at = weights.len();
            weights.extend((left..right).map(|i| {
                let x = ((i as f32 - centre) / sratio).abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }));
            let sum = weights[at..].iter().fold(0f32, |s, &w| s + w);
            weights[at..].iter_mut().for_each(|w| *w /= sum);
            (left as usize, at, weights.len() - at)
        })
        .collect();
    (taps, weights)
}

/// The one-pixel-wide skeleton of the pixels brighter than `threshold` (Zhang-Suen
/// thinning), as a mask: `true` on the skeleton.
///
/// Bit-parallel: each row is a string of 64-bit words, one bit a pixel, and each
/// sub-iteration's test runs on 64 pixels at once ([`removable`]). Removals are applied
/// after the whole scan, as the algorithm says.
pub fn skeleton(img: &GrayImage, threshold: u8) -> Vec<Vec<bool>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let words = w.div_ceil(64).max(1);
    // rows -1 and h are background, as is every bit past w
    let mut m = vec![0u64; words * (h + 2)];
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] > threshold {
            m[(y as usize + 1) * words + x as usize / 64] |= 1 << (x % 64);
        }
    }
    let mut remove = vec![0u64; words * h];
    loop {
        let mut changed = false;
        for step in 0..2 {
            for y in 0..h {
                let [up, row, down] = [y, y + 1, y + 2].map(|r| &m[r * words..(r + 1) * words]);
                for j in 0..words {
                    remove[y * words + j] = removable(step, up, row, down, j);
                }
            }
            for (word, &r) in m[words..words * (h + 1)].iter_mut().zip(&remove) {
                changed |= r != 0;
                *word &= !r;
            }
        }
        if !changed {
            break;
        }
    }
    (1..=h).map(|y| (0..w).map(|x| m[y * words + x / 64] >> (x % 64) & 1 == 1).collect()).collect()
}

/// Word `j` of `row`'s pixels that Zhang-Suen's sub-iteration `step` removes, 64 at a time:
/// a pixel goes when it is on, has 2 to 6 of its 8 neighbours on, exactly one off-to-on
/// transition around them (P2, P3, ... P9, P2: clockwise from north), and in the first step
/// not (P2 P4 P6) and not (P4 P6 P8), in the second not (P2 P4 P8) and not (P2 P6 P8).
fn removable(step: usize, up: &[u64], row: &[u64], down: &[u64], j: usize) -> u64 {
    if row[j] == 0 {
        return 0;
    }
    // bit x of east(r) is pixel x + 1 of r, of west(r) pixel x - 1
    let east = |r: &[u64]| r[j] >> 1 | r.get(j + 1).map_or(0, |n| n << 63);
    let west = |r: &[u64]| r[j] << 1 | if j > 0 { r[j - 1] >> 63 } else { 0 };
    let n = [up[j], east(up), east(row), east(down), down[j], west(down), west(row), west(up)];
    // the number of neighbours on, as four bit planes (0 to 8)
    let mut count = [0u64; 4];
    for &v in &n {
        let mut carry = v;
        for c in count.iter_mut() {
            (*c, carry) = (*c ^ carry, *c & carry);
        }
    }
    let two_to_six = (count[1] | count[2]) & !count[3] & !(count[2] & count[1] & count[0]);
    // off-to-on transitions around the ring: exactly one
    let (mut once, mut twice) = (0u64, 0u64);
    for k in 0..8 {
        let t = !n[k] & n[(k + 1) % 8];
        twice |= once & t;
        once |= t;
    }
    let (p2, p4, p6, p8) = (n[0], n[2], n[4], n[6]);
    let keep = if step == 0 { p4 & p6 & (p2 | p8) } else { p2 & p8 & (p4 | p6) };
    row[j] & two_to_six & once & !twice & !keep
}

/// The mean stroke width of the ink brighter than `threshold`, in pixels: twice the mean
/// distance from the skeleton to the background, minus one (the skeleton pixel itself).
/// Unlike area over skeleton length, it does not grow at a stroke's ends, where thinning
/// shortens the skeleton by half a width. `None` when there is no ink.
pub fn stroke_width(img: &GrayImage, threshold: u8) -> Option<f64> {
    let skeleton = skeleton(img, threshold);
    let distance = chamfer(img, threshold);
    let stride = img.width() as usize + 2;
    let (sum, n) = skeleton.iter().enumerate().flat_map(|(y, row)| row.iter().enumerate().filter(|(_, &s)| s).map(move |(x, _)| (x, y))).fold((0.0, 0usize), |(s, n), (x, y)| (s + distance[(y + 1) * stride + x + 1] as f64 / 3.0, n + 1));
    (n > 0).then(|| 2.0 * sum / n as f64 - 1.0)
}

/// For each pixel brighter than `threshold`, its distance to the nearest other pixel (or
/// the image's edge), in pixels: the 3-4 chamfer approximation of the Euclidean distance,
/// two passes. 0 for the others.
pub fn distance_inside(img: &GrayImage, threshold: u8) -> Vec<f64> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let d = chamfer(img, threshold);
    d.chunks_exact(w + 2).skip(1).take(h).flat_map(|row| row[1..=w].iter().map(|&v| v as f64 / 3.0)).collect()
}

/// [`distance_inside`] in thirds of a pixel (3 a step along a row or column, 4 diagonally),
/// on the image with a one-pixel frame: row `y` of the image is row `y + 1` here, `w + 2` wide.
fn chamfer(img: &GrayImage, threshold: u8) -> Vec<u32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // a one-pixel frame of background (distance 0): outside the image is background
    let stride = w + 2;
    let mut d = vec![0u32; stride * (h + 2)];
    for (row, src) in d.chunks_exact_mut(stride).skip(1).zip(img.as_raw().chunks_exact(w.max(1))) {
        for (v, &p) in row[1..=w].iter_mut().zip(src) {
            *v = if p > threshold { u32::MAX / 2 } else { 0 };
        }
    }
    // each pass: the row above (below) first, a whole row at once; then along the row
    let mut from_row = vec![0u32; w];
    for y in 1..=h {
        let (above, rest) = d.split_at_mut(y * stride);
        let (above, row) = (&above[(y - 1) * stride..], &mut rest[..stride]);
        for (x, t) in from_row.iter_mut().enumerate() {
            *t = row[x + 1].min(above[x] + 4).min(above[x + 1] + 3).min(above[x + 2] + 4);
        }
        for x in 1..=w {
            row[x] = from_row[x - 1].min(row[x - 1] + 3);
        }
    }
    for y in (1..=h).rev() {
        let (rest, below) = d.split_at_mut((y + 1) * stride);
        let (row, below) = (&mut rest[y * stride..], &below[..stride]);
        for (x, t) in from_row.iter_mut().enumerate() {
            *t = row[x + 1].min(below[x + 2] + 4).min(below[x + 1] + 3).min(below[x] + 4);
        }
        for x in (1..=w).rev() {
            row[x] = from_row[x - 1].min(row[x + 1] + 3);
        }
    }
    d
}

/// The image with the mask's pixels white (255) and the rest black.
pub fn mask_image(mask: &[Vec<bool>]) -> GrayImage {
    let (h, w) = (mask.len() as u32, mask.first().map_or(0, |r| r.len()) as u32);
    GrayImage::from_fn(w, h, |x, y| Luma([if mask[y as usize][x as usize] { 255 } else { 0 }]))
}
