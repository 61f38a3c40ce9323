//! Reference 3x3 filters of shaders/data.wgsl over images [B, rows, cols] of 8-bit levels
//! held as f32: a median picks one of its inputs, so GPU and CPU agree exactly.

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
