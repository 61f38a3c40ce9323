//! Batch normalisation kernels against the f64 reference: train-mode forward (output,
//! saved statistics, running update, num_batches_tracked), eval-mode forward, and the
//! backward (written and accumulated parameter gradients), on shapes with 1, primes,
//! non-multiples of the 256-wide workgroup, a channel count beyond one grid dimension,
//! and inputs with |mean| >> std. Outputs are NaN-poisoned first.

use kiln::cpu::batchnorm as cpu;
use kiln::ops::batchnorm::*;
use kiln::testing::{assert_close, gpu, Rng, BATCH_NORM, EXACT};
use kiln::{DType, Tensor};

fn upload(data: &[f32]) -> Tensor {
    Tensor::from_f32(gpu(), &[data.len()], data).unwrap()
}

fn poisoned(n: usize) -> Tensor {
    let t = Tensor::empty(gpu(), &[n], DType::F32).unwrap();
    t.poison(gpu()).unwrap();
    t
}

/// Largest |gpu - cpu| / (abs + rel |cpu|) of BATCH_NORM over the pairs: how much of the
/// tolerance is used, for the log (the tolerance table's evidence).
fn tolerance_used(pairs: &[(&[f32], &[f32])]) -> f64 {
    let t = BATCH_NORM;
    let used = |(&g, &w): (&f32, &f32)| (g as f64 - w as f64).abs() / (t.abs + t.rel * (w as f64).abs());
    pairs.iter().flat_map(|(a, b)| a.iter().zip(b.iter()).map(used)).fold(0.0, f64::max)
}

fn check(shape: &[usize], offset: f32, rng: &mut Rng) {
    let gpu = gpu();
    let bn = BatchNorm::for_shape("test", shape, MOMENTUM, EPS).unwrap();
    let (n, c) = (bn.len(), bn.channels);
    let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 2.0 + offset).collect();
    let (weight, bias, dy) = (rng.vec(c), rng.vec(c), rng.vec(n));
    let running_mean = rng.vec(c);
    let running_var: Vec<f32> = rng.vec(c).iter().map(|v| v.abs() + 0.5).collect();
    let (tx, tw, tb, tdy) = (upload(&x), upload(&weight), upload(&bias), upload(&dy));
    let (trm, trv, tcount) = (upload(&running_mean), upload(&running_var), upload(&[3.0]));
    // eval reads its own copy of the initial running statistics
    let (erm, erv) = (upload(&running_mean), upload(&running_var));
    let (ty, tmean, tinv, tdx, tdw, tdb, tyeval) = (poisoned(n), poisoned(c), poisoned(c), poisoned(n), poisoned(c), poisoned(c), poisoned(n));
    // a second backward adds onto earlier gradients (a parameter used twice)
    let (prior_w, prior_b) = (rng.vec(c), rng.vec(c));
    let (tdw2, tdb2, tdx2) = (upload(&prior_w), upload(&prior_b), poisoned(n));
    let d = [
        batchnorm_forward_train(gpu, &bn, &tx, &tw, &tb, &ty, &tmean, &tinv, &trm, &trv, &tcount).unwrap(),
        batchnorm_backward(gpu, &bn, &tx, &tw, &tmean, &tinv, &tdy, &tdx, &tdw, &tdb, (false, false)).unwrap(),
        batchnorm_backward(gpu, &bn, &tx, &tw, &tmean, &tinv, &tdy, &tdx2, &tdw2, &tdb2, (true, true)).unwrap(),
        batchnorm_forward_eval(gpu, &bn, &tx, &tw, &tb, &erm, &erv, &tyeval).unwrap(),
    ];
    gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();

    let what = format!("{shape:?} offset {offset}");
    let want = cpu::batchnorm_forward_train(&bn, &x, &weight, &bias, &running_mean, &running_var);
    let got_y = ty.to_f32(gpu).unwrap();
    let (got_mean, got_inv) = (tmean.to_f32(gpu).unwrap(), tinv.to_f32(gpu).unwrap());
    let (got_rm, got_rv) = (trm.to_f32(gpu).unwrap(), trv.to_f32(gpu).unwrap());
    assert_close(&format!("forward_train y {what}"), &got_y, &want.y, BATCH_NORM);
    assert_close(&format!("forward_train mean {what}"), &got_mean, &want.mean, BATCH_NORM);
    // invstd is 1/std: compare relative (it is large when a channel's values nearly agree)
    let rel: Vec<f32> = got_inv.iter().zip(&want.invstd).map(|(g, w)| g / w).collect();
    assert_close(&format!("forward_train invstd / reference {what}"), &rel, &vec![1.0; c], BATCH_NORM);
    assert_close(&format!("running_mean {what}"), &got_rm, &want.running_mean, BATCH_NORM);
    assert_close(&format!("running_var {what}"), &got_rv, &want.running_var, BATCH_NORM);
    assert_close(&format!("num_batches_tracked {what}"), &tcount.to_f32(gpu).unwrap(), &[4.0], EXACT);

    let (dx, dw, db) = cpu::batchnorm_backward(&bn, &x, &weight, &want.mean, &want.invstd, &dy);
    let (got_dx, got_dw, got_db) = (tdx.to_f32(gpu).unwrap(), tdw.to_f32(gpu).unwrap(), tdb.to_f32(gpu).unwrap());
    assert_close(&format!("backward dx {what}"), &got_dx, &dx, BATCH_NORM);
    assert_close(&format!("backward dweight {what}"), &got_dw, &dw, BATCH_NORM);
    assert_close(&format!("backward dbias {what}"), &got_db, &db, BATCH_NORM);
    let acc = |prior: &[f32], g: &[f32]| prior.iter().zip(g).map(|(a, b)| a + b).collect::<Vec<f32>>();
    assert_close(&format!("backward dx (second) {what}"), &tdx2.to_f32(gpu).unwrap(), &dx, BATCH_NORM);
    assert_close(&format!("backward dweight += {what}"), &tdw2.to_f32(gpu).unwrap(), &acc(&prior_w, &dw), BATCH_NORM);
    assert_close(&format!("backward dbias += {what}"), &tdb2.to_f32(gpu).unwrap(), &acc(&prior_b, &db), BATCH_NORM);

    let yeval = cpu::batchnorm_forward_eval(&bn, &x, &weight, &bias, &running_mean, &running_var);
    let got_eval = tyeval.to_f32(gpu).unwrap();
    assert_close(&format!("forward_eval y {what}"), &got_eval, &yeval, BATCH_NORM);
    let pairs = [(&got_y[..], &want.y[..]), (&got_dx, &dx), (&got_dw, &dw), (&got_db, &db), (&got_eval, &yeval), (&got_rm, &want.running_mean), (&got_rv, &want.running_var)];
    println!("batchnorm {what}: worst element uses {:.1}% of the tolerance", 100.0 * tolerance_used(&pairs));
}

#[test]
fn batchnorm2d_matches_cpu() {
    let mut rng = Rng::new(31);
    // 1s, primes, M = N*H*W below, at and above the workgroup (256), MNIST's conv1 output
    let mut shapes = vec![vec![2, 1, 1, 1], vec![1, 1, 1, 2], vec![1, 3, 13, 11], vec![3, 5, 7, 7], vec![4, 2, 8, 8], vec![5, 7, 1, 1], vec![64, 16, 28, 28]];
    for _ in 0..4 {
        let (n, c, h, w) = (rng.range(1, 9), rng.range(1, 17), rng.range(1, 23), rng.range(1, 23));
        if n * h * w >= 2 {
            shapes.push(vec![n, c, h, w]);
        }
    }
    for s in &shapes {
        check(s, 0.0, &mut rng);
    }
    // |mean| / std ~ 10^3: a one-pass E[x^2] - E[x]^2 would lose the variance entirely
    check(&[8, 3, 13, 13], 1000.0, &mut rng);
    check(&[2, 2, 5, 5], -37.0, &mut rng);
}

#[test]
fn batchnorm1d_matches_cpu() {
    let mut rng = Rng::new(32);
    for s in [[2, 1], [67, 13], [3, 300], [256, 128], [257, 3], [1000, 1]] {
        check(&s, 0.0, &mut rng);
    }
    check(&[61, 7], 250.0, &mut rng);
}

#[test]
fn more_channels_than_one_grid_dimension() {
    // one workgroup per channel: 65,537 channels need the 2-D grid (x * y >= C, tail guarded)
    let mut rng = Rng::new(33);
    let c = gpu().limits().max_compute_workgroups_per_dimension as usize + 2;
    check(&[2, c], 0.0, &mut rng);
}

#[test]
fn training_with_one_value_per_channel_is_refused() {
    let bn = BatchNorm::for_shape("bn", &[1, 4], MOMENTUM, EPS).unwrap();
    let t = |n: usize| Tensor::empty(gpu(), &[n], DType::F32).unwrap();
    let err = batchnorm_forward_train(gpu(), &bn, &t(4), &t(4), &t(4), &t(4), &t(4), &t(4), &t(4), &t(4), &t(1))
        .err()
        .expect("M = 1 has no unbiased variance");
    assert!(err.to_string().contains("more than 1 value per channel"), "{err}");
    // eval with one row is fine (inference on a single image)
    let y = t(4);
    batchnorm_forward_eval(gpu(), &bn, &t(4), &t(4), &t(4), &t(4), &t(4), &y).unwrap();
    assert!(BatchNorm::for_shape("bn", &[2, 3, 4], MOMENTUM, EPS).is_err(), "3-D input is neither 1d nor 2d");
}
