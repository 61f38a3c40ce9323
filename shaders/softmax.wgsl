// Softmax and fused softmax + cross-entropy over rows of logits [R, C]; metrics.
//
// Numerics: every row subtracts its max before exp, so exp never overflows and the
// largest term is exactly 1; the loss is logsumexp(z) - z[label] computed as
// log(sum exp(z - max)) - (z[label] - max), never as -log(softmax), which underflows.
// One invocation per row: C is small (10 classes), rows are many.
//
// Label smoothing e (PyTorch's CrossEntropyLoss(label_smoothing=e)): the target is
// t = (1 - e) onehot + e / C, so the loss is lse - (1 - e) z[label] - e mean(z) and its
// gradient softmax - t. e = 0 is the plain cross-entropy.
//
// A label equal to C means "no class" (a training image that is no digit: outlier
// exposure): the target is uniform, t = 1/C (whatever e), so the loss is lse - mean(z) and
// the gradient softmax - 1/C. Labels above C are padding rows: no loss, no gradient.

struct Params {
    rows: u32,
    classes: u32,
    // softmax_forward: 1/T, the inverse temperature (1: the plain softmax);
    // backward: dlogits = (softmax - t) * scale, scale = 1/rows for a mean loss
    scale: f32,
    smoothing: f32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> row_pred: array<u32>;
@group(0) @binding(6) var<storage, read_write> dlogits: array<f32>;

fn row_of(wid: vec3u, nwg: vec3u, lid: vec3u) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

fn row_max(base: u32) -> f32 {
    var m = logits[base];
    for (var j = 1u; j < p.classes; j++) { m = max(m, logits[base + j]); }
    return m;
}

fn row_sum_exp(base: u32, m: f32) -> f32 {
    var s = 0.0;
    for (var j = 0u; j < p.classes; j++) { s += exp(logits[base + j] - m); }
    return s;
}

@compute @workgroup_size(WG)
fn softmax_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_id) lid: vec3u) {
    let r = row_of(wid, nwg, lid);
    if r >= p.rows { return; }
    let base = r * p.classes;
    let m = row_max(base);
    // p.scale = 1/T > 0 keeps the max the max: exp(s (z - m)) <= 1, no overflow. s = 1
    // multiplies exactly, so an uncalibrated model's probabilities are the plain softmax's.
    var sum = 0.0;
    for (var j = 0u; j < p.classes; j++) { sum += exp(p.scale * (logits[base + j] - m)); }
    let inv = 1.0 / sum;
    for (var j = 0u; j < p.classes; j++) { probs[base + j] = exp(p.scale * (logits[base + j] - m)) * inv; }
}

// Row r's loss and predicted class (argmax, first max on ties), written to row_loss and
// row_pred; returns the loss (0 for a padding row).
fn xent_row(r: u32) -> f32 {
    let base = r * p.classes;
    var m = logits[base];
    var arg = 0u;
    for (var j = 1u; j < p.classes; j++) {
        if logits[base + j] > m { m = logits[base + j]; arg = j; }
    }
    let label = labels[r];
    var loss = 0.0;
    // Rows past the end of the data carry label 0xffffffff: no loss, no gradient, not counted.
    if label <= p.classes {
        var mean = 0.0;
        for (var j = 0u; j < p.classes; j++) { mean += logits[base + j] - m; }
        mean /= f32(p.classes);
        // no class (label C): all of the target is the uniform share; its onehot term has
        // weight 0 (the index is clamped into the row, never read past it)
        let e = select(p.smoothing, 1.0, label == p.classes);
        let soft_label = (1.0 - e) * (logits[base + min(label, p.classes - 1u)] - m) + e * mean;
        loss = log(row_sum_exp(base, m)) - soft_label;
    }
    row_loss[r] = loss;
    row_pred[r] = arg;
    return loss;
}

// Row r's dlogits = (softmax - t) * scale.
fn xent_grad_row(r: u32) {
    let base = r * p.classes;
    let m = row_max(base);
    let inv = 1.0 / row_sum_exp(base, m);
    let label = labels[r];
    let valid = select(0.0, 1.0, label <= p.classes);
    // no class (label C): the uniform target, e = 1 (j never equals C)
    let e = select(p.smoothing, 1.0, label == p.classes);
    let spread = e / f32(p.classes);
    for (var j = 0u; j < p.classes; j++) {
        let t = select(0.0, 1.0 - e, j == label) + spread;
        dlogits[base + j] = (exp(logits[base + j] - m) * inv - t) * p.scale * valid;
    }
}

@compute @workgroup_size(WG)
fn softmax_xent_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_id) lid: vec3u) {
    let r = row_of(wid, nwg, lid);
    if r >= p.rows { return; }
    xent_row(r);
}

@compute @workgroup_size(WG)
fn softmax_xent_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                         @builtin(local_invocation_id) lid: vec3u) {
    let r = row_of(wid, nwg, lid);
    if r >= p.rows { return; }
    xent_grad_row(r);
}

// ---- metrics: one workgroup folds a batch's row losses and predictions into running
// totals, so an epoch needs one readback. Layout of `metrics` (u32 words):
//   [0] loss sum (f32 bits)  [1] correct  [2] rows counted (label <= C)  [3] of them, no-class rows
//   (label C: their loss counted, never correct, outside the confusion)  [4..4+C*C] confusion[label][pred]
// The loss sum is a fixed-order tree reduction (deterministic run to run); counts are
// integer atomics (order-independent).

const RWG: u32 = 256u;
@group(0) @binding(7) var<storage, read> m_loss: array<f32>;
@group(0) @binding(8) var<storage, read> m_pred: array<u32>;
@group(0) @binding(9) var<storage, read> m_labels: array<u32>;
@group(0) @binding(10) var<storage, read_write> metrics: array<atomic<u32>>;

var<workgroup> partial: array<f32, RWG>;
var<workgroup> correct: array<u32, RWG>;
var<workgroup> rows_seen: array<u32, RWG>;
var<workgroup> none_seen: array<u32, RWG>;

// An invocation's sums over its rows: the loss, the rows predicted right, the rows counted,
// of them the no-class rows.
struct HeadSums { loss: f32, correct: u32, seen: u32, none: u32 }

// Row r's share of the sums (label, prediction, loss given) and its confusion count.
fn count_row(label: u32, pred: u32, loss: f32, sums: ptr<function, HeadSums>) {
    if label > p.classes { return; }
    (*sums).loss += loss;
    (*sums).seen += 1u;
    if label == p.classes { (*sums).none += 1u; return; }
    (*sums).correct += u32(pred == label);
    atomicAdd(&metrics[4u + label * p.classes + pred], 1u);
}

// The workgroup's per-invocation sums, reduced in a fixed-order tree, added to `metrics`.
fn fold_metrics(lid: u32, sums: HeadSums) {
    partial[lid] = sums.loss;
    correct[lid] = sums.correct;
    rows_seen[lid] = sums.seen;
    none_seen[lid] = sums.none;
    workgroupBarrier();
    for (var half = RWG / 2u; half > 0u; half /= 2u) {
        if lid < half {
            partial[lid] += partial[lid + half];
            correct[lid] += correct[lid + half];
            rows_seen[lid] += rows_seen[lid + half];
            none_seen[lid] += none_seen[lid + half];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        let total = bitcast<f32>(atomicLoad(&metrics[0])) + partial[0];
        atomicStore(&metrics[0], bitcast<u32>(total));
        atomicAdd(&metrics[1], correct[0]);
        atomicAdd(&metrics[2], rows_seen[0]);
        atomicAdd(&metrics[3], none_seen[0]);
    }
}

@compute @workgroup_size(RWG)
fn metrics_accumulate(@builtin(local_invocation_id) lid: vec3u) {
    var sums = HeadSums(0.0, 0u, 0u, 0u);
    for (var r = lid.x; r < p.rows; r += RWG) { count_row(m_labels[r], m_pred[r], m_loss[r], &sums); }
    fold_metrics(lid.x, sums);
}

// ---- the loss head in one dispatch: softmax_xent_forward and metrics_accumulate, and in
// training softmax_xent_backward, by one workgroup (rows r = lid, lid + RWG, ...). The
// same row code and the same reduction order as the separate kernels: the same bits.

// Row r's loss and prediction, its confusion count, and its share of the invocation's sums.
fn head_row(r: u32, sums: ptr<function, HeadSums>) {
    let loss = xent_row(r);
    count_row(labels[r], row_pred[r], loss, sums);
}

// The two entry points differ by the backward's dlogits: a forward-only dispatch binds no
// dlogits, and a pipeline's layout holds every binding its entry point can reach.
@compute @workgroup_size(RWG)
fn softmax_xent_metrics(@builtin(local_invocation_id) lid: vec3u) {
    var sums = HeadSums(0.0, 0u, 0u, 0u);
    for (var r = lid.x; r < p.rows; r += RWG) { head_row(r, &sums); }
    fold_metrics(lid.x, sums);
}

@compute @workgroup_size(RWG)
fn softmax_xent_metrics_backward(@builtin(local_invocation_id) lid: vec3u) {
    var sums = HeadSums(0.0, 0u, 0u, 0u);
    for (var r = lid.x; r < p.rows; r += RWG) { head_row(r, &sums); xent_grad_row(r); }
    fold_metrics(lid.x, sums);
}
