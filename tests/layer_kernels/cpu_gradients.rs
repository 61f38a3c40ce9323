//! The first link of the chain of trust: every CPU backward against central finite
//! differences of its CPU forward. For an op y = f(x) and a random r, the scalar
//! L = sum(y * r) has dL/dx = backward(dy = r).

use kiln::cpu::{activation, conv2d, dropout, elementwise, gemm, pool, softmax};
use kiln::ops::activation::Activation;
use kiln::ops::conv2d::Conv2d;
use kiln::ops::pool::{GlobalPool2d, Pool2d};
use kiln::testing::{assert_close, Rng, FINITE_DIFF};

const H: f32 = 1e-2;

/// dL/dx by central differences, L(x) = sum(f(x) * r).
fn numeric(x: &[f32], r: &[f32], f: impl Fn(&[f32]) -> Vec<f32>) -> Vec<f32> {
    let loss = |x: &[f32]| f(x).iter().zip(r).map(|(&y, &r)| y as f64 * r as f64).sum::<f64>();
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            x[i] = v + H;
            let up = loss(&x);
            x[i] = v - H;
            let down = loss(&x);
            x[i] = v;
            ((up - down) / (2.0 * H as f64)) as f32
        })
        .collect()
}

#[test]
fn linear_backward_matches_finite_differences() {
    let mut rng = Rng::new(20);
    let (batch, inp, out) = (3, 5, 4);
    let (x, w, b, r) = (rng.vec(batch * inp), rng.vec(out * inp), rng.vec(out), rng.vec(batch * out));
    let (dx, dw, db) = gemm::linear_backward(&x, &w, &r, batch, inp, out);
    assert_close("linear dx", &dx, &numeric(&x, &r, |x| gemm::linear_forward(x, &w, &b, batch, inp, out)), FINITE_DIFF);
    assert_close("linear dW", &dw, &numeric(&w, &r, |w| gemm::linear_forward(&x, w, &b, batch, inp, out)), FINITE_DIFF);
    assert_close("linear db", &db, &numeric(&b, &r, |b| gemm::linear_forward(&x, &w, b, batch, inp, out)), FINITE_DIFF);
}

#[test]
fn bias_and_relu_backward_match_finite_differences() {
    let mut rng = Rng::new(21);
    let (c, inner) = (3, 4);
    let (x, b, r) = (rng.vec(2 * c * inner), rng.vec(c), rng.vec(2 * c * inner));
    let db = elementwise::bias_backward(&r, c, inner);
    assert_close("bias db", &db, &numeric(&b, &r, |b| elementwise::bias_forward(&x, b, inner)), FINITE_DIFF);
    // move inputs at least 0.05 away from the kink at 0, so x +- H stays on one side
    let x: Vec<f32> = x.iter().map(|v| v + v.signum() * 0.05).collect();
    assert_close("relu dx", &elementwise::relu_backward(&x, &r), &numeric(&x, &r, elementwise::relu_forward), FINITE_DIFF);
}

#[test]
fn softmax_xent_backward_matches_finite_differences() {
    let mut rng = Rng::new(22);
    let (rows, classes) = (5, 10);
    let logits: Vec<f32> = rng.vec(rows * classes).iter().map(|v| v * 3.0).collect();
    // a padding row (> C) and a no-class row (C: the uniform target)
    let labels = [3u32, 0, 9, u32::MAX, 10];
    let scale = 1.0 / rows as f32;
    for smoothing in [0.0, 0.1, 0.5] {
        let analytic = softmax::softmax_xent_backward(&logits, &labels, classes, smoothing, scale);
        // L = scale * sum of row losses: r = scale for every row
        let r = vec![scale; rows];
        let num = numeric(&logits, &r, |z| softmax::softmax_xent_forward(z, &labels, classes, smoothing).0);
        assert_close(&format!("softmax_xent dlogits, smoothing {smoothing}"), &analytic, &num, FINITE_DIFF);
    }
}

#[test]
fn dropout_backward_matches_finite_differences_for_a_fixed_mask() {
    let mut rng = Rng::new(23);
    let (x, r) = (rng.vec(50), rng.vec(50));
    let analytic = dropout::dropout_backward(&r, 0.3, 5, 9);
    assert_close("dropout dx", &analytic, &numeric(&x, &r, |x| dropout::dropout_forward(x, 0.3, 5, 9)), FINITE_DIFF);
}

#[test]
fn conv2d_backward_matches_finite_differences() {
    let mut rng = Rng::new(24);
    for c in [
        Conv2d { batch: 2, cin: 2, h: 5, w: 4, cout: 3, r: 3, s: 2, stride: 1, pad: 1 },
        Conv2d { batch: 1, cin: 3, h: 7, w: 7, cout: 2, r: 3, s: 3, stride: 2, pad: 2 },
    ] {
        let (x, w, b, r) = (rng.vec(c.x_len()), rng.vec(c.w_len()), rng.vec(c.cout), rng.vec(c.y_len()));
        let (dx, dw) = conv2d::conv2d_backward(&c, &x, &w, &r);
        let db = elementwise::bias_backward(&r, c.cout, c.oh() * c.ow());
        assert_close("conv dx", &dx, &numeric(&x, &r, |x| conv2d::conv2d_forward(&c, x, &w, Some(&b))), FINITE_DIFF);
        assert_close("conv dW", &dw, &numeric(&w, &r, |w| conv2d::conv2d_forward(&c, &x, w, Some(&b))), FINITE_DIFF);
        assert_close("conv db", &db, &numeric(&b, &r, |b| conv2d::conv2d_forward(&c, &x, &w, Some(b))), FINITE_DIFF);
    }
}

#[test]
fn pool_backward_matches_finite_differences() {
    let mut rng = Rng::new(25);
    let p = Pool2d { batch: 2, channels: 2, h: 6, w: 5, k: 3, stride: 2, pad: 1 };
    // spread the inputs so that no perturbation of H changes a window's argmax
    let x: Vec<f32> = (0..p.x_len()).map(|i| ((i * 37) % p.x_len()) as f32 * 0.1 + rng.unit() as f32 * 0.01).collect();
    let r = rng.vec(p.y_len());
    assert_close("max_pool dx", &pool::max_pool2d_backward(&p, &x, &r), &numeric(&x, &r, |x| pool::max_pool2d_forward(&p, x).0), FINITE_DIFF);
    assert_close("avg_pool dx", &pool::avg_pool2d_backward(&p, &r), &numeric(&x, &r, |x| pool::avg_pool2d_forward(&p, x)), FINITE_DIFF);
}

#[test]
fn activation_backward_matches_finite_differences() {
    let mut rng = Rng::new(26);
    // inputs over [-4, 4], moved at least 0.05 away from leaky_relu's kink at 0 so x +- H
    // stays on one side; the smooth activations do not need it but it does not hurt them
    let x: Vec<f32> = rng.vec(64).iter().map(|v| v * 4.0 + v.signum() * 0.05).collect();
    let r = rng.vec(64);
    let acts = Activation::ALL_DEFAULT.into_iter().chain([Activation::LeakyRelu { slope: -0.3 }]);
    for act in acts {
        let y = activation::activation_forward(act, &x);
        // the backward's contract: the forward output for tanh/sigmoid, the input otherwise
        let saved = if act.backward_reads_output() { &y } else { &x };
        let analytic = activation::activation_backward(act, saved, &r);
        assert_close(&format!("{act:?} dx"), &analytic, &numeric(&x, &r, |x| activation::activation_forward(act, x)), FINITE_DIFF);
    }
}

#[test]
fn normal_cdf_matches_tabulated_values() {
    // Phi(x) = erfc(-x / sqrt 2) / 2 from glibc's erfc (Python's math.erfc)
    for (x, want) in [(0.0, 0.5), (1.0, 0.8413447460685429), (-1.0, 0.15865525393145707), (-3.0, 0.0013498980316300957), (-6.0, 9.865876450377012e-10)] {
        let got = activation::normal_cdf(x);
        assert!((got - want).abs() <= 1e-14 * want.max(1e-300) + 1e-16, "Phi({x}) = {got}, expected {want}");
    }
}

#[test]
fn global_avg_pool_backward_matches_finite_differences() {
    let mut rng = Rng::new(27);
    let p = GlobalPool2d { batch: 2, channels: 3, h: 5, w: 3 };
    let (x, r) = (rng.vec(p.x_len()), rng.vec(p.y_len()));
    let analytic = pool::global_avg_pool_backward(&p, &r);
    assert_close("global_avg_pool dx", &analytic, &numeric(&x, &r, |x| pool::global_avg_pool_forward(&p, x)), FINITE_DIFF);
}

#[test]
fn batchnorm_backward_matches_finite_differences() {
    use kiln::cpu::batchnorm;
    use kiln::ops::batchnorm::{BatchNorm, EPS, MOMENTUM};
    let mut rng = Rng::new(26);
    // 2d (statistics over N*H*W) and 1d (over N); train mode, where the batch statistics
    // depend on x, so dx carries the mean and variance terms
    for shape in [[2usize, 3, 2, 3].as_slice(), &[5, 4]] {
        let bn = BatchNorm::for_shape("fd", shape, MOMENTUM, EPS).unwrap();
        let c = bn.channels;
        // spread inputs (std ~ 1.2) keep the O(h^2) curvature of 1/std small at h = 1e-2
        let x: Vec<f32> = rng.vec(bn.len()).iter().map(|v| v * 2.0).collect();
        let (w, b, r) = (rng.vec(c), rng.vec(c), rng.vec(bn.len()));
        let (rm, rv) = (vec![0.0; c], vec![1.0; c]);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| batchnorm::batchnorm_forward_train(&bn, x, w, b, &rm, &rv).y;
        let saved = batchnorm::batchnorm_forward_train(&bn, &x, &w, &b, &rm, &rv);
        let (dx, dw, db) = batchnorm::batchnorm_backward(&bn, &x, &w, &saved.mean, &saved.invstd, &r);
        assert_close(&format!("batchnorm dx {shape:?}"), &dx, &numeric(&x, &r, |x| fwd(x, &w, &b)), FINITE_DIFF);
        assert_close(&format!("batchnorm dweight {shape:?}"), &dw, &numeric(&w, &r, |w| fwd(&x, w, &b)), FINITE_DIFF);
        assert_close(&format!("batchnorm dbias {shape:?}"), &db, &numeric(&b, &r, |b| fwd(&x, &w, b)), FINITE_DIFF);
    }
}
