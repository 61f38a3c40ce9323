//! References for shaders/elementwise.wgsl and the channel sum of reduce.wgsl.

/// y = max(x, 0).
pub fn relu_forward(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

/// dx = dy where x > 0, else 0 (0 at x = 0, as the kernel and PyTorch).
pub fn relu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter().zip(dy).map(|(&x, &g)| if x > 0.0 { g } else { 0.0 }).collect()
}

/// y = x + `b[channel]` for x seen as [outer, c, inner].
pub fn bias_forward(x: &[f32], b: &[f32], inner: usize) -> Vec<f32> {
    let c = b.len();
    x.iter().enumerate().map(|(i, &v)| v + b[(i / inner) % c]).collect()
}

/// `db[c]` = sum over outer and inner of dy, in f64.
pub fn bias_backward(dy: &[f32], c: usize, inner: usize) -> Vec<f32> {
    let mut acc = vec![0f64; c];
    for (i, &g) in dy.iter().enumerate() {
        acc[(i / inner) % c] += g as f64;
    }
    acc.into_iter().map(|v| v as f32).collect()
}

/// y = alpha·x + beta·z, in f64 then rounded.
pub fn scale_add_forward(alpha: f32, x: &[f32], beta: f32, z: &[f32]) -> Vec<f32> {
    x.iter().zip(z).map(|(&x, &z)| (alpha as f64 * x as f64 + beta as f64 * z as f64) as f32).collect()
}
