//! Optimizer kernels, bias gradient and dropout against the references, several steps.

use kiln::ops::dropout::{dropout_backward, dropout_forward};
use kiln::ops::optim::{optimizer_step, step_words, Optimizer, Rule, Schedule, STEP_WORDS};
use kiln::ops::reduce::bias_backward;
use kiln::testing::{assert_close, gpu, Rng, ELEMENTWISE, REDUCTION};
use kiln::{cpu, DType, Tensor};

#[test]
fn sgd_momentum_adam_and_adamw_match_cpu_over_steps() {
    let gpu = gpu();
    let mut rng = Rng::new(10);
    let opts = [
        Optimizer::sgd(0.1, 0.0),
        Optimizer::sgd(0.05, 0.9),
        Rule::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 1e-2 }.into(),
        Optimizer::adam(1e-3),
        Rule::Adam { lr: 1e-2, beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 1e-3 }.into(),
        // decoupled weight decay, large enough to dominate the update, under a schedule
        Optimizer::adamw(1e-2, 0.5),
        Optimizer::adamw(1e-2, 0.05).with_schedule(Schedule::Cosine { hold: 1, total: 4 }),
        // over the 5 steps below: held, decaying, and 0 from step 3 (SGD) or 4 (Adam) on
        Optimizer::sgd(0.05, 0.9).with_schedule(Schedule::Cosine { hold: 0, total: 3 }),
        Optimizer::adam(1e-2).with_schedule(Schedule::Cosine { hold: 1, total: 4 }),
    ];
    for opt in opts {
        for n in [1, 131, 70_001] {
            let mut w = rng.vec(n);
            let (mut m1, mut m2) = (vec![0f32; n], vec![0f32; n]);
            let tw = Tensor::from_f32(gpu, &[n], &w).unwrap();
            let tm1 = Tensor::from_f32(gpu, &[n], &m1).unwrap();
            let tm2 = Tensor::from_f32(gpu, &[n], &m2).unwrap();
            let tg = Tensor::empty(gpu, &[n], DType::F32).unwrap();
            let step = Tensor::from_u32(gpu, &[STEP_WORDS], &[0; STEP_WORDS]).unwrap();
            let d = optimizer_step(gpu, &opt, &step, &tg, &tw, &tm1, Some(&tm2)).unwrap();
            for t in 0..5u32 {
                let g = rng.vec(n);
                tg.write_f32(gpu, &g).unwrap();
                step.write_u32(gpu, &step_words(Some(&opt), t, 0)).unwrap();
                gpu.run(&[&d]).unwrap();
                cpu::optim::optimizer_step(&opt, t, &g, &mut w, &mut m1, &mut m2);
            }
            assert_close(&format!("{opt:?} n={n} weights"), &tw.to_f32(gpu).unwrap(), &w, ELEMENTWISE);
            assert_close(&format!("{opt:?} n={n} state"), &tm1.to_f32(gpu).unwrap(), &m1, ELEMENTWISE);
        }
    }
}

#[test]
fn cosine_schedule_holds_then_decays_to_zero() {
    let s = Schedule::cosine(0.8, 100).unwrap();
    assert_eq!(s, Schedule::Cosine { hold: 80, total: 100 });
    for (t, want) in [(0, 1.0), (79, 1.0), (80, 1.0), (85, 0.853_553_390_593), (90, 0.5), (95, 0.146_446_609_407), (100, 0.0), (1000, 0.0)] {
        assert!((s.factor(t) - want).abs() < 1e-9, "factor({t}) = {}, expected {want}", s.factor(t));
    }
    let plain = Schedule::cosine(0.0, 10).unwrap();
    assert!((plain.factor(5) - 0.5).abs() < 1e-12 && plain.factor(0) == 1.0);
    assert_eq!(Schedule::Constant.factor(123_456), 1.0);
    for bad in [1.0, -0.1, f64::NAN] {
        let e = Schedule::cosine(bad, 100).unwrap_err().to_string();
        assert!(e.contains("Schedule::hold"), "{e}");
    }
}

#[test]
fn bias_backward_matches_cpu_and_accumulates() {
    let gpu = gpu();
    let mut rng = Rng::new(11);
    for shape in [vec![1, 1], vec![64, 10], vec![3, 17, 5, 7], vec![64, 32, 14, 14], vec![1000, 128]] {
        let (c, inner) = (shape[1], shape[2..].iter().product::<usize>());
        let n: usize = shape.iter().product();
        let dy = rng.vec(n);
        let db0 = rng.vec(c);
        let tdy = Tensor::from_f32(gpu, &shape, &dy).unwrap();
        let tdb = Tensor::empty(gpu, &[c], DType::F32).unwrap();
        let tacc = Tensor::from_f32(gpu, &[c], &db0).unwrap();
        tdb.poison(gpu).unwrap();
        let d1 = bias_backward(gpu, &tdy, &tdb, false).unwrap();
        let d2 = bias_backward(gpu, &tdy, &tacc, true).unwrap();
        gpu.run(&[&d1, &d2]).unwrap();
        let want = cpu::elementwise::bias_backward(&dy, c, inner);
        assert_close(&format!("bias_backward {shape:?}"), &tdb.to_f32(gpu).unwrap(), &want, REDUCTION);
        let want_acc: Vec<f32> = want.iter().zip(&db0).map(|(a, b)| a + b).collect();
        assert_close(&format!("bias_backward += {shape:?}"), &tacc.to_f32(gpu).unwrap(), &want_acc, REDUCTION);
    }
}

#[test]
fn dropout_matches_cpu_mask_and_is_reproducible() {
    let gpu = gpu();
    let mut rng = Rng::new(12);
    for (n, p) in [(1, 0.5), (1000, 0.2), (65_537, 0.5), (4099, 0.0)] {
        let x = rng.vec(n);
        let tx = Tensor::from_f32(gpu, &[n], &x).unwrap();
        let ty = Tensor::empty(gpu, &[n], DType::F32).unwrap();
        let tdx = Tensor::empty(gpu, &[n], DType::F32).unwrap();
        let step = Tensor::from_u32(gpu, &[1], &[41]).unwrap();
        ty.poison(gpu).unwrap();
        tdx.poison(gpu).unwrap();
        let f = dropout_forward(gpu, p, 7, &step, &tx, &ty).unwrap();
        let b = dropout_backward(gpu, p, 7, &step, &tx, &tdx).unwrap();
        gpu.run(&[&f, &b]).unwrap();
        let want = cpu::dropout::dropout_forward(&x, p, 7, 41);
        assert_close(&format!("dropout_forward n={n} p={p}"), &ty.to_f32(gpu).unwrap(), &want, ELEMENTWISE);
        assert_close(&format!("dropout_backward n={n} p={p}"), &tdx.to_f32(gpu).unwrap(), &cpu::dropout::dropout_backward(&x, p, 7, 41), ELEMENTWISE);
        if n >= 1000 {
            let dropped = want.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
            assert!((dropped - p as f64).abs() < 0.05, "dropped fraction {dropped} for p = {p}");
        }
        // another step gives another mask
        step.write_u32(gpu, &[42]).unwrap();
        gpu.run(&[&f]).unwrap();
        let other = ty.to_f32(gpu).unwrap();
        assert_close("dropout step 42", &other, &cpu::dropout::dropout_forward(&x, p, 7, 42), ELEMENTWISE);
    }
}
