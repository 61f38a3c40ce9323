//! `linear_forward_small` against `cpu::gemm::linear_forward`, with and without bias and
//! ReLU; `linear_backward_small` (the one-dispatch backward of a linear layer with few outputs)
//! against the f64 reference `cpu::gemm::linear_backward`, with and without the fused ReLU
//! mask, every subset of outputs, written and accumulated; `linear_backward_weight` (dW
//! with the bias gradient summed in the same GEMM where the kernel can) in every family;
//! `linear_backward_input_routed` (dX through a max-pool's backward) in every family.

use kiln::cpu::gemm as cpu;
use kiln::ops::gemm::{Family, GemmConfig};
use kiln::ops::linear::{linear_backward_small, linear_backward_weight, linear_forward_small, Linear, SMALL_OUT};
use kiln::testing::{assert_close, gpu, Rng, REDUCTION};
use kiln::{DType, Tensor};

fn upload(v: &[f32]) -> Tensor {
    Tensor::from_f32(gpu(), &[v.len()], v).unwrap()
}

/// The expected gradient: `g` written, or added to what the output held (`old`).
fn plus(g: Vec<f32>, old: &[f32], acc: bool) -> Vec<f32> {
    g.iter().zip(old).map(|(g, o)| if acc { (*g as f64 + *o as f64) as f32 } else { *g }).collect()
}

fn check(l: Linear, want_dx: bool, relu: bool, want_dw: Option<bool>, want_db: Option<bool>, rng: &mut Rng) {
    let gpu = gpu();
    let (dy, w) = (rng.vec(l.rows * l.out), rng.vec(l.out * l.inp));
    // ReLU outputs: about half exactly zero
    let x: Vec<f32> = rng.vec(l.rows * l.inp).into_iter().map(|v| if relu { v.max(0.0) } else { v }).collect();
    let (dw0, db0) = (rng.vec(l.out * l.inp), rng.vec(l.out));
    let (tdy, tw, tx) = (upload(&dy), upload(&w), upload(&x));
    let (tdx, tdw, tdb) = (Tensor::empty(gpu, &[l.rows * l.inp], DType::F32).unwrap(), upload(&dw0), upload(&db0));
    // written (not accumulated) outputs start as NaN so a missed element shows
    if want_dw == Some(false) {
        tdw.poison(gpu).unwrap();
    }
    if want_db == Some(false) {
        tdb.poison(gpu).unwrap();
    }
    tdx.poison(gpu).unwrap();
    let d = linear_backward_small(
        gpu,
        &l,
        &tdy,
        &tw,
        Some(&tx),
        want_dx.then_some(&tdx),
        relu,
        want_dw.map(|acc| (&tdw, acc)),
        want_db.map(|acc| (&tdb, acc)),
    )
    .unwrap();
    gpu.run(&[&d]).unwrap();
    let (mut gx, gw, gb) = cpu::linear_backward(&x, &w, &dy, l.rows, l.inp, l.out);
    let what = format!("linear_backward_small {l:?} dx {want_dx} relu {relu} dw {want_dw:?} db {want_db:?}");
    if want_dx {
        if relu {
            gx.iter_mut().zip(&x).filter(|(_, &x)| x <= 0.0).for_each(|(g, _)| *g = 0.0);
        }
        assert_close(&format!("{what}: dx"), &tdx.to_f32(gpu).unwrap(), &gx, REDUCTION);
    }
    if let Some(acc) = want_dw {
        assert_close(&format!("{what}: dw"), &tdw.to_f32(gpu).unwrap(), &plus(gw, &dw0, acc), REDUCTION);
    } else {
        assert_eq!(tdw.to_f32(gpu).unwrap(), dw0, "{what}: dw not wanted but changed");
    }
    if let Some(acc) = want_db {
        assert_close(&format!("{what}: db"), &tdb.to_f32(gpu).unwrap(), &plus(gb, &db0, acc), REDUCTION);
    } else {
        assert_eq!(tdb.to_f32(gpu).unwrap(), db0, "{what}: db not wanted but changed");
    }
}

#[test]
fn matches_the_reference_for_every_output_subset() {
    let mut rng = Rng::new(11);
    let shapes = [
        Linear { rows: 64, inp: 128, out: 10 },
        Linear { rows: 1, inp: 1, out: 1 },
        Linear { rows: 7, inp: 301, out: SMALL_OUT },
        Linear { rows: 129, inp: 3, out: 2 },
    ];
    for (i, &l) in shapes.iter().enumerate() {
        for case in 0..6 {
            let relu = (i + case) % 2 == 0;
            let want_dw = [Some(false), Some(true), None][case % 3];
            let want_db = [None, Some(false), Some(true)][(case + i) % 3];
            check(l, true, relu, want_dw, want_db, &mut rng);
        }
        // the first layer of a network: no dx
        check(l, false, false, Some(false), Some(true), &mut rng);
    }
}

#[test]
fn bad_shapes_and_empty_requests_are_errors() {
    let gpu = gpu();
    let l = Linear { rows: 4, inp: 3, out: 2 };
    let t = |n: usize| Tensor::empty(gpu, &[n], DType::F32).unwrap();
    let (dy, w, x, dx) = (t(8), t(6), t(12), t(12));
    let dw = t(6);
    assert!(linear_backward_small(gpu, &l, &dy, &w, Some(&x), None, false, None, None).is_err(), "nothing wanted");
    assert!(linear_backward_small(gpu, &l, &dy, &w, Some(&x), None, true, Some((&dw, false)), None).is_err(), "gate without dx");
    assert!(linear_backward_small(gpu, &l, &dy, &w, None, Some(&dx), true, None, None).is_err(), "gate without x");
    assert!(linear_backward_small(gpu, &l, &dy, &w, None, None, false, Some((&dw, false)), None).is_err(), "dW without x");
    assert!(linear_backward_small(gpu, &l, &t(9), &w, Some(&x), Some(&dx), false, None, None).is_err(), "dy too long");
    assert!(linear_backward_small(gpu, &l, &dy, &w, Some(&x), Some(&t(11)), false, None, None).is_err(), "dx too short");
    assert!(linear_backward_small(gpu, &Linear { rows: 0, ..l }, &t(0), &w, Some(&t(0)), None, false, Some((&dw, false)), None).is_err());
    // dx alone (input gradients) needs no x
    let d = linear_backward_small(gpu, &l, &dy, &w, None, Some(&dx), false, None, None).unwrap();
    gpu.run(&[&d]).unwrap();
}

#[test]
fn weight_gradient_with_bias_gradient_matches_in_every_family() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    // fc1's shape, a vec4-shaped one, and shapes the vec4 form cannot take (out % 4 != 0)
    let shapes = [Linear { rows: 64, inp: 1568, out: 128 }, Linear { rows: 8, inp: 12, out: 4 }, Linear { rows: 5, inp: 7, out: 3 }];
    for (name, cfg) in GemmConfig::ALL {
        for (i, &l) in shapes.iter().enumerate() {
            let (dy, x) = (rng.vec(l.rows * l.out), rng.vec(l.rows * l.inp));
            let (dw0, db0) = (rng.vec(l.out * l.inp), rng.vec(l.out));
            let (acc_w, acc_b) = (i % 2 == 1, i != 1);
            let (tdw, tdb) = (upload(&dw0), upload(&db0));
            let d = linear_backward_weight(gpu, &cfg, &l, &upload(&dy), &upload(&x), &tdw, acc_w, Some((&tdb, acc_b))).unwrap();
            gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
            let (_, gw, gb) = cpu::linear_backward(&x, &rng.vec(l.out * l.inp), &dy, l.rows, l.inp, l.out);
            let what = format!("linear_backward_weight {name} {l:?}");
            if matches!(cfg.family, Family::Tiled | Family::Tiled4) {
                assert_eq!(d.len(), 1, "{what}: the tiled kernels sum db from their A tiles");
            }
            assert_close(&format!("{what}: dw"), &tdw.to_f32(gpu).unwrap(), &plus(gw, &dw0, acc_w), REDUCTION);
            assert_close(&format!("{what}: db"), &tdb.to_f32(gpu).unwrap(), &plus(gb, &db0, acc_b), REDUCTION);
        }
    }
}

#[test]
fn small_forward_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(41);
    for (rows, inp, out) in [(64, 128, 10), (3, 1, 1), (257, 33, SMALL_OUT), (1, 784, 7)] {
        let l = Linear { rows, inp, out };
        let (x, w, b) = (rng.vec(rows * inp), rng.vec(out * inp), rng.vec(out));
        for (bias, relu) in [(false, false), (true, false), (true, true), (false, true)] {
            let y = Tensor::empty(gpu, &[rows * out], DType::F32).unwrap();
            y.poison(gpu).unwrap();
            let tb = upload(&b);
            let d = linear_forward_small(gpu, &l, &upload(&x), &upload(&w), bias.then_some(&tb), relu, &y).unwrap();
            gpu.run(&[&d]).unwrap();
            let zeros = vec![0.0; out];
            let mut want = cpu::linear_forward(&x, &w, if bias { &b } else { &zeros }, rows, inp, out);
            if relu {
                want.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            assert_close(&format!("linear_forward_small {l:?} bias {bias} relu {relu}"), &y.to_f32(gpu).unwrap(), &want, REDUCTION);
        }
    }
    // more outputs than SMALL_OUT: refused with the shape
    let l = Linear { rows: 2, inp: 3, out: SMALL_OUT + 1 };
    let t = |n: usize| Tensor::empty(gpu, &[n], DType::F32).unwrap();
    let err = linear_forward_small(gpu, &l, &t(6), &t(3 * (SMALL_OUT + 1)), None, false, &t(2 * (SMALL_OUT + 1))).err().unwrap();
    assert!(err.to_string().contains("at most"), "{err}");
}

/// dx of a layer reading a max-pool's flattened output, routed through the pool's backward
/// (and its ReLU's): `linear_backward_input_routed` on the GPU families (one dispatch of its
/// own kernel), the routed GEMM elsewhere; against the CPU's dx through the saved argmax, for
/// batches that are and are not a multiple of the kernel's four rows, with and without pool
/// padding and the ReLU mask.
#[test]
fn routed_input_gradient_matches_cpu_in_every_family() {
    use kiln::cpu::pool as cpu_pool;
    use kiln::ops::linear::linear_backward_input_routed;
    use kiln::ops::pool::{max_pool2d_forward, MaxPoolRoute, Pool2d};
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let pools = [
        Pool2d { batch: 5, channels: 3, h: 6, w: 8, k: 2, stride: 2, pad: 0 },
        Pool2d { batch: 8, channels: 2, h: 7, w: 10, k: 3, stride: 3, pad: 1 },
    ];
    for pool in pools {
        let l = Linear { rows: pool.batch, inp: pool.channels * pool.oh() * pool.ow(), out: 7 };
        // the pool's input is a ReLU's output: a third of it exactly 0
        let x: Vec<f32> = rng.vec(pool.x_len()).into_iter().map(|v| if v < -0.3 { 0.0 } else { v + 1.0 }).collect();
        let (dy, w) = (rng.vec(l.rows * l.out), rng.vec(l.out * l.inp));
        let (tx, tdy, tw) = (upload(&x), upload(&dy), upload(&w));
        let targ = Tensor::empty(gpu, &[pool.y_len()], DType::U32).unwrap();
        let tpy = Tensor::empty(gpu, &[pool.y_len()], DType::F32).unwrap();
        gpu.run(&[&max_pool2d_forward(gpu, &pool, &tx, &tpy, &targ).unwrap()]).unwrap();
        let arg = targ.to_u32(gpu).unwrap();
        let dflat = cpu::gemm(l.rows, l.inp, l.out, &dy, false, &w, false);
        let through = cpu_pool::max_pool2d_backward_saved(&pool, &arg, &dflat);
        for (name, cfg) in GemmConfig::ALL {
            for relu in [false, true] {
                let route = MaxPoolRoute { pool: &pool, argmax: &targ, relu: relu.then_some(&tx) };
                let tdx = Tensor::empty(gpu, &[pool.x_len()], DType::F32).unwrap();
                tdx.poison(gpu).unwrap();
                let d = linear_backward_input_routed(gpu, &cfg, &l, &tdy, &tw, &tdx, &route).unwrap();
                if matches!(cfg.family, Family::Tiled | Family::Tiled4) {
                    assert_eq!(d.iter().map(|d| d.name).collect::<Vec<_>>(), ["linear_backward_input_routed"], "{name}");
                }
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                let want: Vec<f32> = through.iter().zip(&x).map(|(&g, &v)| if relu && v <= 0.0 { 0.0 } else { g }).collect();
                assert_close(&format!("{name} relu={relu} {pool:?}"), &tdx.to_f32(gpu).unwrap(), &want, REDUCTION);
            }
        }
    }
}
