//! Reference softmax and cross-entropy, max-subtracted, in f64.

/// Row-wise softmax of logits / temperature [rows, classes], max-subtracted, in f64.
pub fn softmax_forward(logits: &[f32], classes: usize, temperature: f32) -> Vec<f32> {
    let s = 1.0 / temperature as f64;
    logits
        .chunks(classes)
        .flat_map(|row| {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (s * (v as f64 - m)).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / s) as f32)
        })
        .collect()
}

/// Per-row loss logsumexp(z) - (1 - e) `z[label]` - e mean(z) (label smoothing e) and argmax
/// (first max); a row with label C (no class) has the uniform target, loss logsumexp(z) -
/// mean(z), whatever e; rows with label > C (padding) get loss 0.
pub fn softmax_xent_forward(logits: &[f32], labels: &[u32], classes: usize, smoothing: f32) -> (Vec<f32>, Vec<u32>) {
    logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, &label)| {
            let mut arg = 0;
            for j in 1..classes {
                if row[j] > row[arg] {
                    arg = j;
                }
            }
            let m = row[arg] as f64;
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / classes as f64;
            let label = label as usize;
            let loss = match label.cmp(&classes) {
                std::cmp::Ordering::Less => lse - (1.0 - smoothing as f64) * row[label] as f64 - smoothing as f64 * mean,
                std::cmp::Ordering::Equal => lse - mean,
                std::cmp::Ordering::Greater => 0.0,
            };
            (loss as f32, arg as u32)
        })
        .unzip()
}

/// d(mean loss * scale)/dlogits = (softmax - t) * scale, t = (1 - e) onehot + e / C, t = 1 / C
/// for the no-class label C; zero rows for padding labels (> C).
pub fn softmax_xent_backward(logits: &[f32], labels: &[u32], classes: usize, smoothing: f32, scale: f32) -> Vec<f32> {
    let p = softmax_forward(logits, classes, 1.0);
    p.iter()
        .enumerate()
        .map(|(i, &v)| {
            let label = labels[i / classes] as usize;
            if label > classes {
                return 0.0;
            }
            let e = if label == classes { 1.0 } else { smoothing as f64 };
            let target = if i % classes == label { 1.0 - e } else { 0.0 } + e / classes as f64;
            ((v as f64 - target) * scale as f64) as f32
        })
        .collect()
}
