//! Reference pooling: the obvious loops. Ties go to the first maximum in window order.

use crate::kernels::pool::{GlobalPool2d, Pool2d};

fn windows(p: &Pool2d, mut f: impl FnMut(usize, usize, &[usize])) {
    let (oh, ow) = (p.oh(), p.ow());
    let mut idx = Vec::with_capacity(p.k * p.k);
    for plane in 0..p.batch * p.channels {
        for oy in 0..oh {
            for ox in 0..ow {
                idx.clear();
                for r in 0..p.k {
                    for s in 0..p.k {
                        let (Some(iy), Some(ix)) = ((oy * p.stride + r).checked_sub(p.pad), (ox * p.stride + s).checked_sub(p.pad)) else {
                            continue;
                        };
                        if iy < p.h && ix < p.w {
                            idx.push(iy * p.w + ix);
                        }
                    }
                }
                f(plane, (plane * oh + oy) * ow + ox, &idx);
            }
        }
    }
}

/// (y, argmax within the plane)
pub fn max_pool2d_forward(p: &Pool2d, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let mut y = vec![0f32; p.y_len()];
    let mut arg = vec![0u32; p.y_len()];
    windows(p, |plane, o, idx| {
        let base = plane * p.h * p.w;
        let mut best = idx[0];
        for &i in &idx[1..] {
            if x[base + i] > x[base + best] {
                best = i;
            }
        }
        y[o] = x[base + best];
        arg[o] = best as u32;
    });
    (y, arg)
}

/// The max-pool backward recomputing the argmax from x: dy added at each window's first
/// maximum.
pub fn max_pool2d_backward(p: &Pool2d, x: &[f32], dy: &[f32]) -> Vec<f32> {
    max_pool2d_backward_saved(p, &max_pool2d_forward(p, x).1, dy)
}

/// The backward from the argmax the forward saved.
pub fn max_pool2d_backward_saved(p: &Pool2d, arg: &[u32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f64; p.x_len()];
    let plane_out = p.oh() * p.ow();
    for (o, &a) in arg.iter().enumerate() {
        dx[(o / plane_out) * p.h * p.w + a as usize] += dy[o] as f64;
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// y = window sum / k² (padding counts as zeros: count_include_pad).
pub fn avg_pool2d_forward(p: &Pool2d, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; p.y_len()];
    let area = (p.k * p.k) as f64;
    windows(p, |plane, o, idx| {
        let base = plane * p.h * p.w;
        y[o] = (idx.iter().map(|&i| x[base + i] as f64).sum::<f64>() / area) as f32;
    });
    y
}

/// dx = dy/k² added to every input element of each window.
pub fn avg_pool2d_backward(p: &Pool2d, dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f64; p.x_len()];
    let area = (p.k * p.k) as f64;
    windows(p, |plane, o, idx| {
        for &i in idx {
            dx[plane * p.h * p.w + i] += dy[o] as f64 / area;
        }
    });
    dx.into_iter().map(|v| v as f32).collect()
}

/// Each plane's mean, summed in f64.
pub fn global_avg_pool_forward(p: &GlobalPool2d, x: &[f32]) -> Vec<f32> {
    let hw = p.h * p.w;
    x.chunks(hw).map(|plane| (plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32).collect()
}

/// dx = dy/(H·W) on every element of each plane.
pub fn global_avg_pool_backward(p: &GlobalPool2d, dy: &[f32]) -> Vec<f32> {
    let hw = p.h * p.w;
    dy.iter().flat_map(|&g| std::iter::repeat_n((g as f64 / hw as f64) as f32, hw)).collect()
}
