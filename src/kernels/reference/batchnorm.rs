//! Reference batch normalisation (shaders/batchnorm.wgsl), in f64 with two-pass
//! statistics. x is seen as [N, C, INNER]; channel c's statistics run over the
//! M = N * INNER values x[n, c, i].

use crate::kernels::batchnorm::BatchNorm;

/// What the train-mode forward produces: the output, the saved statistics for the
/// backward (mean and 1/sqrt(var + eps), biased variance), and the updated running
/// statistics (num_batches_tracked just counts: the caller adds 1).
#[derive(Clone, Debug)]
pub struct TrainForward {
    /// Output, x's shape.
    pub y: Vec<f32>,
    /// Batch mean per channel `[C]`.
    pub mean: Vec<f32>,
    /// 1/√(biased variance + eps) per channel `[C]`.
    pub invstd: Vec<f32>,
    /// The running mean after this step `[C]`.
    pub running_mean: Vec<f32>,
    /// The running variance after this step, updated with the unbiased batch variance `[C]`.
    pub running_var: Vec<f32>,
}

fn index(bn: &BatchNorm, c: usize, e: usize) -> usize {
    let (n, i) = (e / bn.inner, e % bn.inner);
    (n * bn.channels + c) * bn.inner + i
}

/// Per channel: (mean, biased variance), two passes in f64.
fn statistics(bn: &BatchNorm, x: &[f32]) -> Vec<(f64, f64)> {
    let m = bn.per_channel();
    (0..bn.channels)
        .map(|c| {
            let mean = (0..m).map(|e| x[index(bn, c, e)] as f64).sum::<f64>() / m as f64;
            let var = (0..m).map(|e| (x[index(bn, c, e)] as f64 - mean).powi(2)).sum::<f64>() / m as f64;
            (mean, var)
        })
        .collect()
}

/// y = (x - mean) / sqrt(var + eps) * weight + bias per channel, with given statistics.
fn normalise(bn: &BatchNorm, x: &[f32], weight: &[f32], bias: &[f32], mean: &[f64], invstd: &[f64]) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(k, &v)| {
            let c = (k / bn.inner) % bn.channels;
            ((v as f64 - mean[c]) * invstd[c] * weight[c] as f64 + bias[c] as f64) as f32
        })
        .collect()
}

/// Training mode: batch statistics, and the running update
/// running = (1 - momentum) running + momentum * batch statistic, with the unbiased
/// variance var * M / (M - 1) for running_var, as PyTorch. Needs M >= 2.
pub fn batchnorm_forward_train(bn: &BatchNorm, x: &[f32], weight: &[f32], bias: &[f32], running_mean: &[f32], running_var: &[f32]) -> TrainForward {
    let m = bn.per_channel() as f64;
    let stats = statistics(bn, x);
    let mean: Vec<f64> = stats.iter().map(|s| s.0).collect();
    let invstd: Vec<f64> = stats.iter().map(|s| 1.0 / (s.1 + bn.eps as f64).sqrt()).collect();
    let mom = bn.momentum as f64;
    let update = |old: f32, batch: f64| ((1.0 - mom) * old as f64 + mom * batch) as f32;
    TrainForward {
        y: normalise(bn, x, weight, bias, &mean, &invstd),
        mean: mean.iter().map(|&v| v as f32).collect(),
        invstd: invstd.iter().map(|&v| v as f32).collect(),
        running_mean: running_mean.iter().zip(&stats).map(|(&r, s)| update(r, s.0)).collect(),
        running_var: running_var.iter().zip(&stats).map(|(&r, s)| update(r, s.1 * m / (m - 1.0))).collect(),
    }
}

/// Eval mode: the running statistics.
pub fn batchnorm_forward_eval(bn: &BatchNorm, x: &[f32], weight: &[f32], bias: &[f32], running_mean: &[f32], running_var: &[f32]) -> Vec<f32> {
    let mean: Vec<f64> = running_mean.iter().map(|&v| v as f64).collect();
    let invstd: Vec<f64> = running_var.iter().map(|&v| 1.0 / (v as f64 + bn.eps as f64).sqrt()).collect();
    normalise(bn, x, weight, bias, &mean, &invstd)
}

/// Train-mode backward from the saved `mean` and `invstd` (see the derivation in
/// shaders/batchnorm.wgsl): with xhat = (x - mean) * invstd,
/// dbias = sum dy, dweight = sum dy * xhat,
/// dx = weight * invstd / M * (M dy - dbias - xhat * dweight). Returns (dx, dweight, dbias).
pub fn batchnorm_backward(bn: &BatchNorm, x: &[f32], weight: &[f32], mean: &[f32], invstd: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = bn.per_channel();
    let mut dx = vec![0f32; x.len()];
    let (mut dweight, mut dbias) = (vec![0f32; bn.channels], vec![0f32; bn.channels]);
    for c in 0..bn.channels {
        let (mu, is) = (mean[c] as f64, invstd[c] as f64);
        let xhat = |k: usize| (x[k] as f64 - mu) * is;
        let (mut db, mut dw) = (0f64, 0f64);
        for e in 0..m {
            let k = index(bn, c, e);
            db += dy[k] as f64;
            dw += dy[k] as f64 * xhat(k);
        }
        let scale = weight[c] as f64 * is / m as f64;
        for e in 0..m {
            let k = index(bn, c, e);
            dx[k] = (scale * (m as f64 * dy[k] as f64 - db - xhat(k) * dw)) as f32;
        }
        dweight[c] = dw as f32;
        dbias[c] = db as f32;
    }
    (dx, dweight, dbias)
}
