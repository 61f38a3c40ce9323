//! Every GEMM family against the f64 reference: every transpose combination, every
//! epilogue (split-K too), shapes with 1, primes, non-multiples of the tile, a large case.

use kiln::cpu::gemm as cpu;
use kiln::ops::gemm::{gemm, gemm_scratch_bytes, Bias, Family, Gemm, GemmConfig};
use kiln::testing::{assert_close, gpu, Rng, REDUCTION};
use kiln::{DType, Tensor};

fn check(cfg: &GemmConfig, g: Gemm, rng: &mut Rng) {
    let gpu = gpu();
    let a = rng.vec(g.m * g.k);
    let b = rng.vec(g.k * g.n);
    let c0 = rng.vec(g.m * g.n);
    let bias = rng.vec(if g.bias == Bias::Row { g.m } else { g.n });
    let ta = Tensor::from_f32(gpu, &[g.m * g.k], &a).unwrap();
    let tb = Tensor::from_f32(gpu, &[g.k * g.n], &b).unwrap();
    let tbias = Tensor::from_f32(gpu, &[bias.len()], &bias).unwrap();
    let tc = Tensor::empty(gpu, &[g.m, g.n], DType::F32).unwrap();
    if g.accumulate {
        tc.write_f32(gpu, &c0).unwrap();
    } else {
        tc.poison(gpu).unwrap();
    }
    let d = gemm(gpu, cfg, &g, &ta, &tb, (g.bias != Bias::None).then_some(&tbias), &tc).unwrap();
    gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
    let mut want = cpu::gemm(g.m, g.n, g.k, &a, g.trans_a, &b, g.trans_b);
    for (idx, v) in want.iter_mut().enumerate() {
        let (i, j) = (idx / g.n, idx % g.n);
        let mut x = *v as f64;
        if g.accumulate {
            x += c0[idx] as f64;
        }
        match g.bias {
            Bias::Row => x += bias[i] as f64,
            Bias::Col => x += bias[j] as f64,
            Bias::None => {}
        }
        if g.relu {
            x = x.max(0.0);
        }
        *v = x as f32;
    }
    assert_close(&format!("gemm {} {g:?}", cfg.name()), &tc.to_f32(gpu).unwrap(), &want, REDUCTION);
}

#[test]
fn every_family_matches_cpu_on_awkward_shapes() {
    let mut rng = Rng::new(3);
    let shapes = [(1, 1, 1), (1, 7, 3), (5, 1, 2), (13, 17, 19), (64, 64, 64), (67, 31, 129), (2, 130, 1), (65, 3, 67)];
    for (_, cfg) in GemmConfig::ALL {
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            for t in 0..4 {
                let mut g = Gemm::new(m, n, k);
                g.trans_a = t & 1 != 0;
                g.trans_b = t & 2 != 0;
                // cycle through the epilogues as well
                g.bias = [Bias::None, Bias::Row, Bias::Col][(i + t) % 3];
                g.relu = (i + t) % 2 == 0;
                g.accumulate = (i + t) % 4 == 1;
                check(&cfg, g, &mut rng);
            }
        }
    }
}

#[test]
fn mnist_fc1_shapes_and_a_large_case_match_cpu() {
    let mut rng = Rng::new(4);
    for (_, cfg) in GemmConfig::ALL {
        // fc1 forward: [64,1568] . [128,1568]^T; backward dX: [64,128].[128,1568]; dW: [64,128]^T.[64,1568]
        let mut fwd = Gemm::new(64, 128, 1568);
        fwd.trans_b = true;
        fwd.bias = Bias::Col;
        fwd.relu = true;
        check(&cfg, fwd, &mut rng);
        check(&cfg, Gemm::new(64, 1568, 128), &mut rng);
        let mut dw = Gemm::new(128, 1568, 64);
        dw.trans_a = true;
        check(&cfg, dw, &mut rng);
    }
    check(&GemmConfig::default_for(gpu().info()), Gemm::new(300, 257, 1000), &mut rng);
}

#[test]
fn split_k_gemms_apply_every_epilogue_in_the_sum() {
    // Few output tiles and a long K: the tiled families split K over workgroups and
    // splitk_sum adds the slices, then accumulate, the bias (per row or column) and ReLU.
    let mut rng = Rng::new(5);
    let gpu = gpu();
    for (name, cfg) in GemmConfig::ALL.iter().filter(|(_, c)| matches!(c.family, Family::Tiled | Family::Tiled4)) {
        for (i, bias) in [Bias::Row, Bias::Col, Bias::None].into_iter().enumerate() {
            let g = Gemm { trans_a: i == 1, trans_b: i != 1, accumulate: i != 0, relu: i != 2, bias, ..Gemm::new(19, 40, 1500) };
            assert!(gemm_scratch_bytes(gpu, cfg, &g) > 0, "{name} does not split {g:?}: the test would not reach split-K");
            check(cfg, g, &mut rng);
        }
    }
}

#[test]
fn wrong_shapes_are_errors() {
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[6], &[1.0; 6]).unwrap();
    // C should hold 2 x 2 elements
    let c = Tensor::empty(gpu, &[5], DType::F32).unwrap();
    let err = gemm(gpu, &GemmConfig::TILED_64, &Gemm::new(2, 2, 3), &a, &a, None, &c).err().unwrap();
    assert!(err.to_string().contains("gemm") && err.to_string().contains("C has shape [5]"), "{err}");
}

/// `gemm_routed`: C (a max-pool's output gradient, as dflatten is) written through that
/// pool's backward, in every family, with and without the ReLU's mask: bit for bit `gemm`
/// followed by max_pool2d_backward(_relu), in one dispatch where the family routes in the
/// GEMM's store, else the two (`routes_in_store`); never split over K (where the plain GEMM
/// splits, its slices sum in another order and the two agree within REDUCTION).
#[test]
fn routed_gemms_give_the_pool_backward_bits() {
    use kiln::ops::gemm::{gemm_routed, routes_in_store};
    use kiln::ops::pool::{max_pool2d_backward, max_pool2d_backward_relu, max_pool2d_forward, MaxPoolRoute, Pool2d};
    let gpu = gpu();
    let mut rng = Rng::new(21);
    // the MNIST CNN's pool2 and dflatten at batch 16, and a padded 3x3 pool
    let cases = [
        (Pool2d { batch: 16, channels: 32, h: 14, w: 14, k: 2, stride: 2, pad: 0 }, 128),
        (Pool2d { batch: 4, channels: 3, h: 7, w: 4, k: 3, stride: 3, pad: 1 }, 72),
    ];
    for (pool, k) in cases {
        let g = Gemm::new(pool.batch, pool.channels * pool.oh() * pool.ow(), k);
        let x: Vec<f32> = rng.vec(pool.x_len()).into_iter().map(|v| v.max(0.0)).collect();
        let tx = Tensor::from_f32(gpu, &[pool.x_len()], &x).unwrap();
        let (py, arg) = (Tensor::empty(gpu, &[pool.y_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[pool.y_len()], DType::U32).unwrap());
        gpu.run(&[&max_pool2d_forward(gpu, &pool, &tx, &py, &arg).unwrap()]).unwrap();
        let a = Tensor::from_f32(gpu, &[g.m * g.k], &rng.vec(g.m * g.k)).unwrap();
        let b = Tensor::from_f32(gpu, &[g.k * g.n], &rng.vec(g.k * g.n)).unwrap();
        for (name, cfg) in GemmConfig::ALL {
            for relu in [None, Some(&tx)] {
                let route = MaxPoolRoute { pool: &pool, argmax: &arg, relu };
                let routed = Tensor::empty(gpu, &[pool.x_len()], DType::F32).unwrap();
                routed.poison(gpu).unwrap();
                let d = gemm_routed(gpu, &cfg, &g, &a, &b, &routed, &route).unwrap();
                let names: Vec<_> = d.iter().map(|d| d.name).collect();
                let pool_pass = if relu.is_some() { "max_pool2d_backward_relu" } else { "max_pool2d_backward" };
                match routes_in_store(&cfg) {
                    true => assert!(names.len() == 1 && names[0].starts_with("gemm_"), "{name}: {names:?}"),
                    false => assert!(names.len() == 2 && names[0].starts_with("gemm_tiled") && names[1] == pool_pass, "{name}: {names:?}"),
                }
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                let (c, two) = (Tensor::empty(gpu, &[g.m * g.n], DType::F32).unwrap(), Tensor::empty(gpu, &[pool.x_len()], DType::F32).unwrap());
                let mut d = gemm(gpu, &cfg, &g, &a, &b, None, &c).unwrap();
                let split = d.len() > 1;
                d.push(match relu {
                    Some(x) => max_pool2d_backward_relu(gpu, &pool, &arg, x, &c, &two).unwrap(),
                    None => max_pool2d_backward(gpu, &pool, &arg, &c, &two).unwrap(),
                });
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                let what = format!("{name} relu={} {pool:?}: routed GEMM against GEMM + pool backward", relu.is_some());
                if split {
                    // the plain GEMM split K (its slices sum in another order)
                    assert_close(&what, &routed.to_f32(gpu).unwrap(), &two.to_f32(gpu).unwrap(), REDUCTION);
                } else {
                    let bits = |t: &Tensor| t.to_f32(gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert!(bits(&routed) == bits(&two), "{what}: the bits differ");
                }
            }
        }
    }
}

/// VEC4_SG shares A's loads across subgroups (gemm_vec4_sg) and sums in gemm_vec4's order:
/// the same bits as VEC4 in all three vec4 forms, on shapes with partial row blocks (M % 16
/// != 0), partial column blocks and subgroups wholly past N.
#[test]
fn subgroup_gemm_gives_vec4s_bits() {
    let gpu = gpu();
    assert!(
        gpu.info().shares_subgroups(),
        "{} has no subgroups of 8 or more lanes, so VEC4_SG would run as VEC4 and this test would compare VEC4 with itself: \
         run it on lavapipe (scripts/install-lavapipe.sh) or a GPU with subgroups",
        gpu.info().summary()
    );
    let mut rng = Rng::new(11);
    for &(m, n, k) in &[(4, 4, 4), (20, 12, 8), (36, 268, 44), (16, 260, 4), (52, 1028, 12)] {
        // NN, TN, NT (NT also with N % 4 != 0)
        for (t, (ta, tb)) in [(false, false), (true, false), (false, true), (false, true)].into_iter().enumerate() {
            let n = if t == 3 { n + 1 } else { n };
            let mut g = Gemm::new(m, n, k);
            (g.trans_a, g.trans_b) = (ta, tb);
            g.bias = [Bias::Row, Bias::Col, Bias::None, Bias::Row][t];
            g.relu = t != 1;
            g.accumulate = t == 1;
            let a = Tensor::from_f32(gpu, &[m * k], &rng.vec(m * k)).unwrap();
            let b = Tensor::from_f32(gpu, &[k * n], &rng.vec(k * n)).unwrap();
            let nb = if g.bias == Bias::Row { m } else { n };
            let bias = Tensor::from_f32(gpu, &[nb], &rng.vec(nb)).unwrap();
            let c0 = rng.vec(m * n);
            let mut out = Vec::new();
            for cfg in [GemmConfig::VEC4, GemmConfig::VEC4_SG] {
                let c = Tensor::from_f32(gpu, &[m * n], &c0).unwrap();
                let d = gemm(gpu, &cfg, &g, &a, &b, (g.bias != Bias::None).then_some(&bias), &c).unwrap();
                let want = if cfg.subgroups { "gemm_vec4_sg" } else { "gemm_vec4" };
                assert_eq!(d.iter().map(|d| d.name).collect::<Vec<_>>(), [want], "{g:?}");
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                out.push(c.to_f32(gpu).unwrap());
            }
            let differ = out[0].iter().zip(&out[1]).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(differ, 0, "{g:?}: {differ} of {} elements differ from gemm_vec4's", m * n);
        }
    }
}

/// The tiled kernels stage plain NN products (K and N multiples of 4) with 16-byte loads
/// (`VEC_STAGE`): the same values in the same tile places as the scalar staging, so the NN
/// product gives the bits of the NT one (B transposed on the host, staged element by
/// element), with ragged M, K not a multiple of BK, N not a multiple of BN, a bias, ReLU and
/// accumulation, and a shape that splits K.
#[test]
fn tiled_vec4_staging_gives_the_scalar_staging_bits() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let shapes = [(37, 36, 44), (130, 1024, 260), (64, 1568, 128), (16, 2048, 16)];
    for cfg in [GemmConfig::TILED_64, GemmConfig::TILED_16X64, GemmConfig::TILED4_64X128, GemmConfig::TILED4_128] {
        for (m, k, n) in shapes {
            let (a, b) = (rng.vec(m * k), rng.vec(k * n));
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            let c0 = rng.vec(m * n);
            let bias = Tensor::from_f32(gpu, &[n], &rng.vec(n)).unwrap();
            let ta = Tensor::from_f32(gpu, &[m * k], &a).unwrap();
            let mut out = Vec::new();
            for (bv, trans_b) in [(&b, false), (&bt, true)] {
                let tb = Tensor::from_f32(gpu, &[k * n], bv).unwrap();
                let tc = Tensor::from_f32(gpu, &[m, n], &c0).unwrap();
                let g = Gemm { trans_b, bias: Bias::Col, relu: true, accumulate: true, ..Gemm::new(m, n, k) };
                let d = gemm(gpu, &cfg, &g, &ta, &tb, Some(&bias), &tc).unwrap();
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                out.push(tc.to_f32(gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert!(out[0] == out[1], "{} {m}x{k}x{n}: NN (vec4 staging) and NT (scalar) differ", cfg.name());
        }
    }
}
