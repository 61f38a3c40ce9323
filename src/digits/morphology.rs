//! Small image morphology on 8-bit grayscale, white ink on black: what preparing a digit
//! (thinning a thick marker, thickening a hairline) and making test digits need.
//! CPU code: the images are small (a digit at 80x80 at most when it is used here).

use image::{GrayImage, Luma};

/// The offsets of a disc of radius `r` (pixels within `r + 0.5` of the centre).
fn disc(r: u32) -> Vec<(i32, i32)> {
    let r = r as i32;
    let limit = (r as f32 + 0.5).powi(2);
    (-r..=r).flat_map(|dy| (-r..=r).map(move |dx| (dx, dy))).filter(|&(dx, dy)| ((dx * dx + dy * dy) as f32) <= limit).collect()
}

fn filter(img: &GrayImage, r: u32, pick: fn(u8, u8) -> u8, start: u8) -> GrayImage {
    if r == 0 {
        return img.clone();
    }
    let offsets = disc(r);
    let (w, h) = (img.width() as i32, img.height() as i32);
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let mut v = start;
        for &(dx, dy) in &offsets {
            let (sx, sy) = (x as i32 + dx, y as i32 + dy);
            // outside the image is background (0)
            let p = if sx < 0 || sy < 0 || sx >= w || sy >= h { 0 } else { img.get_pixel(sx as u32, sy as u32)[0] };
            v = pick(v, p);
        }
        Luma([v])
    })
}

/// Grayscale dilation by a disc of radius `r`: each pixel becomes the brightest within `r`,
/// so white strokes grow by `r` on each side.
pub fn dilate(img: &GrayImage, r: u32) -> GrayImage {
    filter(img, r, u8::max, 0)
}

/// Grayscale erosion by a disc of radius `r` (the darkest within `r`; outside the image
/// counts as black): white strokes shrink by `r` on each side.
pub fn erode(img: &GrayImage, r: u32) -> GrayImage {
    filter(img, r, u8::min, 255)
}

/// The one-pixel-wide skeleton of the pixels brighter than `threshold` (Zhang-Suen
/// thinning), as a mask: `true` on the skeleton.
pub fn skeleton(img: &GrayImage, threshold: u8) -> Vec<Vec<bool>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // a one-pixel frame of background so that neighbours always exist
    let mut m = vec![vec![false; w + 2]; h + 2];
    for (x, y, p) in img.enumerate_pixels() {
        m[y as usize + 1][x as usize + 1] = p[0] > threshold;
    }
    loop {
        let mut changed = false;
        for step in 0..2 {
            let mut remove = Vec::new();
            for y in 1..=h {
                for x in 1..=w {
                    if !m[y][x] {
                        continue;
                    }
                    // P2..P9 clockwise from north
                    let n = [m[y - 1][x], m[y - 1][x + 1], m[y][x + 1], m[y + 1][x + 1], m[y + 1][x], m[y + 1][x - 1], m[y][x - 1], m[y - 1][x - 1]];
                    let b = n.iter().filter(|&&v| v).count();
                    let a = (0..8).filter(|&i| !n[i] && n[(i + 1) % 8]).count();
                    let (p2, p4, p6, p8) = (n[0], n[2], n[4], n[6]);
                    // step 0: not (P2 P4 P6) and not (P4 P6 P8); step 1: not (P2 P4 P8) and not (P2 P6 P8)
                    let cond = if step == 0 { !(p4 && p6 && (p2 || p8)) } else { !(p2 && p8 && (p4 || p6)) };
                    if (2..=6).contains(&b) && a == 1 && cond {
                        remove.push((x, y));
                    }
                }
            }
            changed |= !remove.is_empty();
            for (x, y) in remove {
                m[y][x] = false;
            }
        }
        if !changed {
            break;
        }
    }
    m[1..=h].iter().map(|row| row[1..=w].to_vec()).collect()
}

/// The mean stroke width of the ink brighter than `threshold`, in pixels: twice the mean
/// distance from the skeleton to the background, minus one (the skeleton pixel itself).
/// Unlike area over skeleton length, it does not grow at a stroke's ends, where thinning
/// shortens the skeleton by half a width. `None` when there is no ink.
pub fn stroke_width(img: &GrayImage, threshold: u8) -> Option<f64> {
    let skeleton = skeleton(img, threshold);
    let distance = distance_inside(img, threshold);
    let w = img.width() as usize;
    let (sum, n) = skeleton.iter().enumerate().flat_map(|(y, row)| row.iter().enumerate().filter(|(_, &s)| s).map(move |(x, _)| (x, y))).fold((0.0, 0usize), |(s, n), (x, y)| (s + distance[y * w + x], n + 1));
    (n > 0).then(|| 2.0 * sum / n as f64 - 1.0)
}

/// For each pixel brighter than `threshold`, its distance to the nearest other pixel (or
/// the image's edge), in pixels: the 3-4 chamfer approximation of the Euclidean distance,
/// two passes. 0 for the others.
pub fn distance_inside(img: &GrayImage, threshold: u8) -> Vec<f64> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut d: Vec<u32> = img.as_raw().iter().map(|&v| if v > threshold { u32::MAX / 2 } else { 0 }).collect();
    // outside the image is background: distance 0
    let at = |d: &[u32], x: i64, y: i64| if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 { 0 } else { d[y as usize * w + x as usize] };
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let i = y as usize * w + x as usize;
            let v = d[i].min(at(&d, x - 1, y) + 3).min(at(&d, x - 1, y - 1) + 4).min(at(&d, x, y - 1) + 3).min(at(&d, x + 1, y - 1) + 4);
            d[i] = v;
        }
    }
    for y in (0..h as i64).rev() {
        for x in (0..w as i64).rev() {
            let i = y as usize * w + x as usize;
            let v = d[i].min(at(&d, x + 1, y) + 3).min(at(&d, x + 1, y + 1) + 4).min(at(&d, x, y + 1) + 3).min(at(&d, x - 1, y + 1) + 4);
            d[i] = v;
        }
    }
    d.iter().map(|&v| v as f64 / 3.0).collect()
}

/// The image with the mask's pixels white (255) and the rest black.
pub fn mask_image(mask: &[Vec<bool>]) -> GrayImage {
    let (h, w) = (mask.len() as u32, mask.first().map_or(0, |r| r.len()) as u32);
    GrayImage::from_fn(w, h, |x, y| Luma([if mask[y as usize][x as usize] { 255 } else { 0 }]))
}
