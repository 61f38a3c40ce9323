//! Reference GEMM: f64 accumulation, the plain triple loop.

/// C[M, N] = op(A) . op(B); A is [M, K] or [K, M] (trans_a), B is [K, N] or [N, K] (trans_b).
pub fn gemm(m: usize, n: usize, k: usize, a: &[f32], trans_a: bool, b: &[f32], trans_b: bool) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                s += av as f64 * bv as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

/// Linear layer as PyTorch defines it: y[N, out] = x[N, in] . W[out, in]^T + b.
pub fn linear_forward(x: &[f32], w: &[f32], b: &[f32], batch: usize, inp: usize, out: usize) -> Vec<f32> {
    let mut y = gemm(batch, out, inp, x, false, w, true);
    for (i, v) in y.iter_mut().enumerate() {
        *v = (*v as f64 + b[i % out] as f64) as f32;
    }
    y
}

/// Gradients of `linear_forward`: (dx = dy . W, dW = dy^T . x, db = column sums of dy).
pub fn linear_backward(x: &[f32], w: &[f32], dy: &[f32], batch: usize, inp: usize, out: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dx = gemm(batch, inp, out, dy, false, w, false);
    let dw = gemm(out, inp, batch, dy, true, x, false);
    let db = super::elementwise::bias_backward(dy, out, 1);
    (dx, dw, db)
}
