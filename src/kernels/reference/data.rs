//! References of shaders/data.wgsl: the batch gather at every augmentation level, in f64
//! from the kernel's own random draws (`kernels::dropout::pcg`), and the 3x3 filters over
//! images [B, rows, cols] of 8-bit levels held as f32 (a median picks one of its inputs, so
//! GPU and CPU agree exactly).

use crate::kernels::data::Augment;
use crate::kernels::dropout::pcg;
/// The median of the 3x3 window about (y, x) of one image (edges replicated).
fn median_at(img: &[f32], rows: usize, cols: usize, y: usize, x: usize) -> f32 {
    let at = |dy: i64, dx: i64| img[((y as i64 + dy).clamp(0, rows as i64 - 1) as usize) * cols + (x as i64 + dx).clamp(0, cols as i64 - 1) as usize];
    let mut v: Vec<f32> = (0..9).map(|k| at(k / 3 - 1, k % 3 - 1)).collect();
    v.sort_by(f32::total_cmp);
    v[4]
}

/// Every pixel replaced by the median of its 3x3 window, edges replicated.
pub fn median3x3(images: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    images.chunks(rows * cols).flat_map(|img| (0..rows * cols).map(move |i| median_at(img, rows, cols, i / cols, i % cols))).collect()
}

/// A pixel at most this level, or at least [`IMPULSE_HIGH`], may be an impulse.
pub const IMPULSE_LOW: f32 = 8.0;
/// See [`IMPULSE_LOW`].
pub const IMPULSE_HIGH: f32 = 247.0;
/// A neighbour within this many levels of a pixel is like it.
pub const IMPULSE_NEAR: f32 = 64.0;
/// An extreme pixel with at most this many like neighbours (of its 8, in the image) is an impulse.
pub const IMPULSE_ALIKE: usize = 1;

/// [`median3x3`] for the pixels taken for impulses (extreme, with at most
/// [`IMPULSE_ALIKE`] like neighbours); every other pixel as it was.
pub fn impulse_median3x3(images: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    images
        .chunks(rows * cols)
        .flat_map(|img| {
            (0..rows * cols).map(move |i| {
                let (y, x, v) = (i / cols, i % cols, img[i]);
                if v > IMPULSE_LOW && v < IMPULSE_HIGH {
                    return v;
                }
                let mut alike = 0;
                for (dy, dx) in (0..9).filter(|&k| k != 4).map(|k| (k / 3 - 1, k % 3 - 1)) {
                    let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                    if yy >= 0 && xx >= 0 && yy < rows as i64 && xx < cols as i64 && (img[yy as usize * cols + xx as usize] - v).abs() <= IMPULSE_NEAR {
                        alike += 1;
                    }
                }
                if alike <= IMPULSE_ALIKE { median_at(img, rows, cols, y, x) } else { v }
            })
        })
        .collect()
}

/// `gather_batch_warp`'s elastic field, on its grid of half the resolution: σ and the
/// truncation radius in grid cells, and α (Simard's σ 4 px, α 34 at full resolution).
pub const ELASTIC_SIGMA: f64 = 2.0;
/// See [`ELASTIC_SIGMA`].
pub const ELASTIC_ALPHA: f64 = 17.0;
/// See [`ELASTIC_SIGMA`].
pub const ELASTIC_RADIUS: i64 = 6;

/// The image `img` (u8, rows x cols) as batch row `row` at `step` of a run seeded `seed`
/// receives it, normalised with `mean` and `std`.
#[allow(clippy::too_many_arguments)]
pub fn gather_image(img: &[u8], rows: usize, cols: usize, seed: u32, step: u32, row: u32, augment: Augment, mean: f64, std: f64) -> Vec<f64> {
    let (r, c) = (rows as i64, cols as i64);
    let plane = rows * cols;
    let rowhash = pcg(row ^ pcg(step ^ pcg(seed)));
    // the kernel's draws: rand in [-1, 1) (the affine level), unit in [0, 1)
    let rand = |which: u32| (pcg(which ^ rowhash) >> 8) as f64 / 8388608.0 - 1.0;
    let unit = |which: u32| (pcg(which ^ rowhash) >> 8) as f64 / 16777216.0;
    let pixel = |y: i64, x: i64| if (0..r).contains(&y) && (0..c).contains(&x) { img[(y * c + x) as usize] as f64 } else { 0.0 };
    let (w, amount) = (rand(5), (rand(5).abs() - 0.4).max(0.0) / 0.6);
    let stroke = |y: i64, x: i64| {
        let v = pixel(y, x);
        if amount == 0.0 {
            return v;
        }
        let m = if w > 0.0 {
            v.max(pixel(y, x + 1)).max(pixel(y + 1, x)).max(pixel(y, x - 1)).max(pixel(y - 1, x))
        } else {
            v.min(pixel(y, x + 1)).min(pixel(y + 1, x))
        };
        v + (m - v) * amount
    };
    let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
    // the affine level's sample at output position (ox, oy)
    let warped = |ox: f64, oy: f64| {
        let u = rand(0) * 0.13165250;
        let scale = 1.0 + 0.1 * rand(1);
        let (shift_x, shift_y) = (rand(2) * 2.5, rand(3) * 2.5);
        let shear = 0.2 * rand(4);
        let (cx, cy) = (cols as f64 * 0.5 - 0.5, rows as f64 * 0.5 - 0.5);
        let (dx, dy) = ((ox - cx - shift_x) / scale, (oy - cy - shift_y) / scale);
        let (cs, sn) = ((1.0 - u * u) / (1.0 + u * u), 2.0 * u / (1.0 + u * u));
        let (rx, ry) = (cs * dx + sn * dy, -sn * dx + cs * dy);
        let (sx, sy) = (rx - shear * ry + cx, ry + cy);
        let (fx, fy) = (sx.floor(), sy.floor());
        let (x0, y0) = (fx as i64, fy as i64);
        lerp(lerp(stroke(y0, x0), stroke(y0, x0 + 1), sx - fx), lerp(stroke(y0 + 1, x0), stroke(y0 + 1, x0 + 1), sx - fx), sy - fy)
    };
    let mut v: Vec<f64> = match augment {
        Augment::Off => (0..plane).map(|k| img[k] as f64).collect(),
        Augment::Affine => (0..plane).map(|k| warped((k % cols) as f64, (k / cols) as f64)).collect(),
        Augment::Elastic | Augment::Robust => {
            let field = elastic_field(rows, cols, unit);
            (0..plane).map(|k| warped((k % cols) as f64 + field[k].0, (k / cols) as f64 + field[k].1)).collect()
        }
    };
    if augment == Augment::Robust {
        if unit(6) < 0.3 {
            let size = 8 + ((unit(7) * 9.0) as i64).min(8);
            v = down_up(&v, r, c, size);
        }
        if unit(8) < 0.3 {
            let amount = 1.0 - unit(9);
            let at = |y: i64, x: i64| if (0..r).contains(&y) && (0..c).contains(&x) { v[(y * c + x) as usize] } else { 0.0 };
            v = (0..plane as i64)
                .map(|k| {
                    let (y, x) = (k / c, k % c);
                    let mut s = 0.0;
                    for dy in -1..=1i64 {
                        for dx in -1..=1i64 {
                            s += ((2 - dy.abs()) * (2 - dx.abs())) as f64 * at(y + dy, x + dx);
                        }
                    }
                    lerp(at(y, x), s / 16.0, amount)
                })
                .collect();
        }
        if unit(10) < 0.15 {
            let threshold = 64.0 + 128.0 * unit(11);
            v.iter_mut().for_each(|p| *p = if *p >= threshold { 255.0 } else { 0.0 });
        }
    }
    v.iter().map(|p| (p / 255.0 - mean) / std).collect()
}

/// The elastic displacement (x, y) of each pixel: on a grid of ⌈rows/2⌉ x ⌈cols/2⌉ cells,
/// components `2 * unit(16 + k) - 1` and `2 * unit(16 + cells + k) - 1` per cell, smoothed by
/// the normalised, truncated Gaussian along x, then y (zero outside the grid), times α, then
/// interpolated bilinearly at each pixel's place on the grid.
fn elastic_field(rows: usize, cols: usize, unit: impl Fn(u32) -> f64) -> Vec<(f64, f64)> {
    let (gr, gc) = (rows.div_ceil(2), cols.div_ceil(2));
    let cells = gr * gc;
    let g: Vec<f64> = (0..=ELASTIC_RADIUS).map(|t| (-((t * t) as f64) / (2.0 * ELASTIC_SIGMA * ELASTIC_SIGMA)).exp()).collect();
    let gsum = g[0] + 2.0 * g[1..].iter().sum::<f64>();
    let noise: Vec<(f64, f64)> = (0..cells as u32).map(|k| (2.0 * unit(16 + k) - 1.0, 2.0 * unit(16 + cells as u32 + k) - 1.0)).collect();
    let smooth = |src: &[(f64, f64)], along_x: bool| -> Vec<(f64, f64)> {
        (0..cells)
            .map(|k| {
                let (y, x) = ((k / gc) as i64, (k % gc) as i64);
                let mut s = (0.0, 0.0);
                for t in -ELASTIC_RADIUS..=ELASTIC_RADIUS {
                    let (sy, sx) = if along_x { (y, x + t) } else { (y + t, x) };
                    if (0..gr as i64).contains(&sy) && (0..gc as i64).contains(&sx) {
                        let (a, b) = src[(sy * gc as i64 + sx) as usize];
                        let w = g[t.unsigned_abs() as usize];
                        s = (s.0 + w * a, s.1 + w * b);
                    }
                }
                (s.0 / gsum, s.1 / gsum)
            })
            .collect()
    };
    let field: Vec<(f64, f64)> = smooth(&smooth(&noise, true), false).into_iter().map(|(a, b)| (ELASTIC_ALPHA * a, ELASTIC_ALPHA * b)).collect();
    (0..rows * cols)
        .map(|k| {
            let gy = (((k / cols) as f64 + 0.5) * 0.5 - 0.5).clamp(0.0, (gr - 1) as f64);
            let gx = (((k % cols) as f64 + 0.5) * 0.5 - 0.5).clamp(0.0, (gc - 1) as f64);
            let (y0, x0) = (gy.floor() as usize, gx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(gr - 1), (x0 + 1).min(gc - 1));
            let (ty, tx) = (gy - y0 as f64, gx - x0 as f64);
            let at = |y: usize, x: usize| field[y * gc + x];
            let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
            let (a, b, c, d) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            (lerp(lerp(a.0, b.0, tx), lerp(c.0, d.0, tx), ty), lerp(lerp(a.1, b.1, tx), lerp(c.1, d.1, tx), ty))
        })
        .collect()
}

/// Area means onto a size x size grid (cell (i, j): the pixels with y·size/rows = i and
/// x·size/cols = j), then bilinear back at the pixel centres, clamped to the grid's.
fn down_up(v: &[f64], rows: i64, cols: i64, size: i64) -> Vec<f64> {
    let cell = |i: i64, n: i64| ((i * n + size - 1) / size, ((i + 1) * n + size - 1) / size);
    let grid: Vec<f64> = (0..size * size)
        .map(|k| {
            let ((y0, y1), (x0, x1)) = (cell(k / size, rows), cell(k % size, cols));
            let mut s = 0.0;
            for y in y0..y1 {
                for x in x0..x1 {
                    s += v[(y * cols + x) as usize];
                }
            }
            s / ((y1 - y0) * (x1 - x0)).max(1) as f64
        })
        .collect();
    let fs = size as f64;
    (0..rows * cols)
        .map(|k| {
            let ly = ((((k / cols) as f64) + 0.5) * fs / rows as f64 - 0.5).clamp(0.0, fs - 1.0);
            let lx = ((((k % cols) as f64) + 0.5) * fs / cols as f64 - 0.5).clamp(0.0, fs - 1.0);
            let (y0, x0) = ((ly.floor() as i64).min(size - 1), (lx.floor() as i64).min(size - 1));
            let (y1, x1) = ((y0 + 1).min(size - 1), (x0 + 1).min(size - 1));
            let (ty, tx) = (ly - y0 as f64, lx - x0 as f64);
            let at = |y: i64, x: i64| grid[(y * size + x) as usize];
            let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * tx;
            let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * tx;
            top + (bottom - top) * ty
        })
        .collect()
}
