//! Reference convolution: the direct 7-loop form, f64 accumulation. Shapes as in
//! ops/conv2d.rs (NCHW, KCRS).

use crate::kernels::conv::Conv2d;

/// x[b, c, iy, ix] for padded coordinates, None in the padding.
fn at(c: &Conv2d, oy: usize, r: usize, ox: usize, s: usize) -> Option<(usize, usize)> {
    let iy = (oy * c.stride + r).checked_sub(c.pad)?;
    let ix = (ox * c.stride + s).checked_sub(c.pad)?;
    (iy < c.h && ix < c.w).then_some((iy, ix))
}

/// y [N, K, OH, OW] = x ⋆ w + bias: the direct loops over (n, k, oy, ox, c, r, s), f64
/// sums; padding reads as zero.
pub fn conv2d_forward(c: &Conv2d, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (oh, ow) = (c.oh(), c.ow());
    let mut y = vec![0f32; c.y_len()];
    for b in 0..c.batch {
        for k in 0..c.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias.map_or(0.0, |b| b[k] as f64);
                    for ci in 0..c.cin {
                        for r in 0..c.r {
                            for s in 0..c.s {
                                if let Some((iy, ix)) = at(c, oy, r, ox, s) {
                                    acc += x[((b * c.cin + ci) * c.h + iy) * c.w + ix] as f64
                                        * w[((k * c.cin + ci) * c.r + r) * c.s + s] as f64;
                                }
                            }
                        }
                    }
                    y[((b * c.cout + k) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    y
}

/// (dx, dw): the gradients of `conv2d_forward` given dy. db is `elementwise::bias_backward`.
pub fn conv2d_backward(c: &Conv2d, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = (c.oh(), c.ow());
    let mut dx = vec![0f64; c.x_len()];
    let mut dw = vec![0f64; c.w_len()];
    for b in 0..c.batch {
        for k in 0..c.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((b * c.cout + k) * oh + oy) * ow + ox] as f64;
                    for ci in 0..c.cin {
                        for r in 0..c.r {
                            for s in 0..c.s {
                                if let Some((iy, ix)) = at(c, oy, r, ox, s) {
                                    let xi = ((b * c.cin + ci) * c.h + iy) * c.w + ix;
                                    let wi = ((k * c.cin + ci) * c.r + r) * c.s + s;
                                    dx[xi] += g * w[wi] as f64;
                                    dw[wi] += g * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx.into_iter().map(|v| v as f32).collect(), dw.into_iter().map(|v| v as f32).collect())
}
