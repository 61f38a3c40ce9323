//! Implicit-GEMM convolution (forward, dX, dW) in every GEMM family against the direct
//! f64 reference, on random geometries and on the MNIST CNN's exact layers.

use kiln::cpu::conv2d as cpu;
use kiln::ops::conv2d::{conv2d_backward_input, conv2d_backward_weight, conv2d_forward, Conv2d};
use kiln::ops::gemm::{routes_in_store, Family, GemmConfig};
use kiln::testing::{assert_close, gpu, Rng, LONG_REDUCTION, REDUCTION};
use kiln::{DType, Tensor};

fn check(cfg: &GemmConfig, c: Conv2d, rng: &mut Rng) {
    let gpu = gpu();
    let x = rng.vec(c.x_len());
    let w = rng.vec(c.w_len());
    let b = rng.vec(c.cout);
    let dy = rng.vec(c.y_len());
    let tx = Tensor::from_f32(gpu, &[c.x_len()], &x).unwrap();
    let tw = Tensor::from_f32(gpu, &[c.w_len()], &w).unwrap();
    let tb = Tensor::from_f32(gpu, &[c.cout], &b).unwrap();
    let tdy = Tensor::from_f32(gpu, &[c.y_len()], &dy).unwrap();
    let ty = Tensor::empty(gpu, &[c.y_len()], DType::F32).unwrap();
    let tdx = Tensor::empty(gpu, &[c.x_len()], DType::F32).unwrap();
    let tdw = Tensor::empty(gpu, &[c.w_len()], DType::F32).unwrap();
    let db0 = rng.vec(c.cout);
    let tdb = Tensor::from_f32(gpu, &[c.cout], &db0).unwrap();
    for t in [&ty, &tdx, &tdw] {
        t.poison(gpu).unwrap();
    }
    // the ReLU epilogue (what the lowering fuses) on every other geometry, and the bias
    // gradient with the weight gradient, written or accumulated
    let relu = rng.range(0, 1) == 1;
    let db_acc = rng.range(0, 1) == 1;
    if !db_acc {
        tdb.poison(gpu).unwrap();
    }
    let f = conv2d_forward(gpu, cfg, &c, &tx, &tw, Some(&tb), relu, &ty).unwrap();
    let bi = conv2d_backward_input(gpu, cfg, &c, &tw, &tdy, &tdx, None).unwrap();
    let bw = conv2d_backward_weight(gpu, cfg, &c, &tx, &tdy, &tdw, false, Some((&tdb, db_acc))).unwrap();
    gpu.run(&f.iter().chain(&bi).chain(&bw).collect::<Vec<_>>()).unwrap();
    let (dx, dw) = cpu::conv2d_backward(&c, &x, &w, &dy);
    let name = cfg.name();
    let mut y = cpu::conv2d_forward(&c, &x, &w, Some(&b));
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    assert_close(&format!("conv2d_forward {name} relu={relu} {c:?}"), &ty.to_f32(gpu).unwrap(), &y, REDUCTION);
    assert_close(&format!("conv2d_backward_input {name} {c:?}"), &tdx.to_f32(gpu).unwrap(), &dx, REDUCTION);
    let k = c.batch * c.oh() * c.ow();
    let tol = if k > 10_000 { LONG_REDUCTION } else { REDUCTION };
    assert_close(&format!("conv2d_backward_weight {name} {c:?}"), &tdw.to_f32(gpu).unwrap(), &dw, tol);
    let plane = c.oh() * c.ow();
    let db: Vec<f32> = (0..c.cout)
        .map(|k| {
            let s: f64 = (0..c.batch).flat_map(|b| &dy[(b * c.cout + k) * plane..][..plane]).map(|&v| v as f64).sum();
            (s + if db_acc { db0[k] as f64 } else { 0.0 }) as f32
        })
        .collect();
    assert_close(&format!("conv2d bias gradient {name} accumulate={db_acc} {c:?}"), &tdb.to_f32(gpu).unwrap(), &db, tol);
}

fn random_conv(rng: &mut Rng) -> Conv2d {
    loop {
        let c = Conv2d {
            batch: rng.range(1, 5),
            cin: rng.range(1, 17),
            h: rng.range(1, 31),
            w: rng.range(1, 31),
            cout: rng.range(1, 17),
            r: rng.range(1, 5),
            s: rng.range(1, 5),
            stride: rng.range(1, 3),
            pad: rng.range(0, 2),
        };
        if c.validate("test").is_ok() {
            return c;
        }
    }
}

#[test]
fn random_geometries_match_cpu_in_every_family() {
    let mut rng = Rng::new(5);
    for (_, cfg) in GemmConfig::ALL {
        for _ in 0..12 {
            let c = random_conv(&mut rng);
            check(&cfg, c, &mut rng);
        }
    }
}

#[test]
fn mnist_cnn_layers_match_cpu() {
    let mut rng = Rng::new(6);
    let conv1 = Conv2d { batch: 64, cin: 1, h: 28, w: 28, cout: 16, r: 5, s: 5, stride: 1, pad: 2 };
    let conv2 = Conv2d { batch: 64, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 };
    for (_, cfg) in GemmConfig::ALL {
        check(&cfg, conv1, &mut rng);
        check(&cfg, conv2, &mut rng);
    }
}

#[test]
fn a_window_that_does_not_fit_is_a_shape_error() {
    let gpu = gpu();
    let c = Conv2d { batch: 1, cin: 1, h: 2, w: 2, cout: 1, r: 5, s: 5, stride: 1, pad: 0 };
    let t = Tensor::empty(gpu, &[4], DType::F32).unwrap();
    let err = conv2d_forward(gpu, &GemmConfig::TILED_64, &c, &t, &t, None, false, &t).err().unwrap();
    assert!(err.to_string().contains("conv2d_forward"), "{err}");
}

/// The im2col family stages its buffers wherever the vec4 forms fit (forward: N*OH*OW a
/// multiple of 4; dX, dW: OH*OW a multiple of 4; C*R*S anything, the weight is padded)
/// and falls back to the implicit modes elsewhere: checked by dispatch names, with
/// strides, padding and non-square shapes, then against the CPU.
#[test]
fn im2col_family_takes_the_staged_path_where_it_fits() {
    let gpu = gpu();
    let mut rng = Rng::new(7);
    let cfg = GemmConfig::IM2COL_VEC4;
    let staged_f = &["im2col", "gemm_vec4"][..];
    let staged_dx = &["gemm_vec4", "col2im"][..];
    let staged_dw = &["im2col", "gemm_vec4"][..];
    let padded_f = &["im2col_pad_weight", "gemm_vec4"][..];
    let padded_dx = &["pad_weight", "gemm_vec4", "col2im"][..];
    let implicit = &["gemm_regblock"][..];
    // dW with the bias gradient: summed in gemm_vec4, a separate reduction elsewhere
    let implicit_dw = &["gemm_regblock", "bias_backward"][..];
    let cases = [
        (Conv2d { batch: 3, cin: 4, h: 8, w: 7, cout: 5, r: 3, s: 3, stride: 1, pad: 1 }, [staged_f, staged_dx, staged_dw]),
        (Conv2d { batch: 2, cin: 3, h: 15, w: 9, cout: 7, r: 2, s: 2, stride: 2, pad: 0 }, [staged_f, staged_dx, staged_dw]),
        (Conv2d { batch: 5, cin: 1, h: 12, w: 12, cout: 3, r: 4, s: 5, stride: 3, pad: 2 }, [staged_f, staged_dx, staged_dw]),
        // C*R*S = 25 (conv1's): the weight is padded to 28 columns
        (Conv2d { batch: 2, cin: 1, h: 6, w: 6, cout: 4, r: 5, s: 5, stride: 1, pad: 2 }, [padded_f, padded_dx, staged_dw]),
        (Conv2d { batch: 3, cin: 3, h: 5, w: 2, cout: 9, r: 3, s: 1, stride: 1, pad: 1 }, [padded_f, padded_dx, staged_dw]),
        // OH*OW = 9: only the forward fits (N*OH*OW = 36)
        (Conv2d { batch: 4, cin: 4, h: 3, w: 3, cout: 3, r: 1, s: 1, stride: 1, pad: 0 }, [staged_f, implicit, implicit_dw]),
        // N*OH*OW = 15: nothing fits
        (Conv2d { batch: 3, cin: 2, h: 5, w: 1, cout: 2, r: 1, s: 1, stride: 1, pad: 0 }, [implicit, implicit, implicit_dw]),
    ];
    for (c, [ef, edx, edw]) in cases {
        let t = |n: usize| Tensor::empty(gpu, &[n], DType::F32).unwrap();
        let (x, w, y, dx, dw) = (t(c.x_len()), t(c.w_len()), t(c.y_len()), t(c.x_len()), t(c.w_len()));
        let names = |d: Vec<kiln::ops::Dispatch>| d.iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(names(conv2d_forward(gpu, &cfg, &c, &x, &w, None, false, &y).unwrap()), ef, "forward {c:?}");
        assert_eq!(names(conv2d_backward_input(gpu, &cfg, &c, &w, &y, &dx, None).unwrap()), edx, "dX {c:?}");
        let db = t(c.cout);
        assert_eq!(names(conv2d_backward_weight(gpu, &cfg, &c, &x, &y, &dw, false, Some((&db, false))).unwrap()), edw, "dW {c:?}");
        check(&cfg, c, &mut rng);
    }
}

/// The staged path has no atomics and one sequential sum per output: two runs of the
/// MNIST conv2 passes agree bit for bit.
#[test]
fn im2col_family_is_deterministic() {
    let gpu = gpu();
    let mut rng = Rng::new(8);
    let cfg = GemmConfig::IM2COL_VEC4;
    let c = Conv2d { batch: 8, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 };
    let tx = Tensor::from_f32(gpu, &[c.x_len()], &rng.vec(c.x_len())).unwrap();
    let tw = Tensor::from_f32(gpu, &[c.w_len()], &rng.vec(c.w_len())).unwrap();
    let tdy = Tensor::from_f32(gpu, &[c.y_len()], &rng.vec(c.y_len())).unwrap();
    let run = || {
        let (ty, tdx, tdw) = (Tensor::empty(gpu, &[c.y_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[c.x_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[c.w_len()], DType::F32).unwrap());
        let f = conv2d_forward(gpu, &cfg, &c, &tx, &tw, None, true, &ty).unwrap();
        let bi = conv2d_backward_input(gpu, &cfg, &c, &tw, &tdy, &tdx, None).unwrap();
        let tdb = Tensor::empty(gpu, &[c.cout], DType::F32).unwrap();
        let bw = conv2d_backward_weight(gpu, &cfg, &c, &tx, &tdy, &tdw, false, Some((&tdb, false))).unwrap();
        gpu.run(&f.iter().chain(&bi).chain(&bw).collect::<Vec<_>>()).unwrap();
        [ty, tdx, tdw, tdb].map(|t| t.to_f32(gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>())
    };
    assert!(run() == run(), "two runs of the im2col passes differ");
}

/// The tiled families sum a weight gradient's bias gradient from the dy values their A tiles
/// load (split-K slices included: splitk_sum adds the slices' row sums), so no separate
/// bias_backward runs: checked by dispatch names on a convolution too wide for the direct
/// weight gradients (64 input channels); the values by the tests above, which pass a db to
/// every family.
#[test]
fn tiled_weight_gradients_sum_the_bias_in_the_gemm() {
    let gpu = gpu();
    let c = Conv2d { batch: 64, cin: 64, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 };
    let (x, dy) = (Tensor::empty(gpu, &[c.x_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[c.y_len()], DType::F32).unwrap());
    let (dw, db) = (Tensor::empty(gpu, &[c.w_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[c.cout], DType::F32).unwrap());
    for (name, entry) in [("tiled64", "gemm_tiled"), ("tiled4_64x128", "gemm_tiled4")] {
        let cfg = GemmConfig::named(name).unwrap();
        let d = conv2d_backward_weight(gpu, &cfg, &c, &x, &dy, &dw, false, Some((&db, true))).unwrap();
        assert_eq!(d.iter().map(|d| d.name).collect::<Vec<_>>(), [entry, "splitk_sum"], "{name}");
    }
}

/// With a max-pool routed through (`MaxPoolRoute`, what the lowering fuses in training), dX
/// is the pool input's gradient: bit for bit what conv dX followed by max_pool2d_backward
/// (or its ReLU form) gives, in every family (the im2col family in col2im, the vec4 and
/// register-blocked ones in the GEMM's store: one dispatch; the tiled ones in conv_shared's
/// store where their dX is conv_shared (into 8 or more channels), else as the two steps,
/// `routes_in_store`), with and without padding in the pool; a pool whose windows overlap
/// is refused.
#[test]
fn a_routed_max_pool_backward_gives_the_two_steps_bits() {
    use kiln::ops::pool::{max_pool2d_backward, max_pool2d_backward_relu, max_pool2d_forward, MaxPoolRoute, Pool2d};
    let gpu = gpu();
    let mut rng = Rng::new(9);
    let pools = [
        Pool2d { batch: 4, channels: 16, h: 28, w: 28, k: 2, stride: 2, pad: 0 },
        Pool2d { batch: 3, channels: 5, h: 7, w: 10, k: 3, stride: 3, pad: 1 },
        Pool2d { batch: 2, channels: 9, h: 7, w: 10, k: 3, stride: 3, pad: 1 },
    ];
    for pool in pools {
        let c = Conv2d { batch: pool.batch, cin: pool.channels, h: pool.oh(), w: pool.ow(), cout: 6, r: 5, s: 5, stride: 1, pad: 2 };
        // the pool's input is a ReLU's output: a quarter of it exactly 0
        let x: Vec<f32> = rng.vec(pool.x_len()).into_iter().map(|v| v.max(-0.5) + 0.5).map(|v| if v < 0.25 { 0.0 } else { v }).collect();
        let tx = Tensor::from_f32(gpu, &[pool.x_len()], &x).unwrap();
        let (tpy, targ) = (Tensor::empty(gpu, &[pool.y_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[pool.y_len()], DType::U32).unwrap());
        gpu.run(&[&max_pool2d_forward(gpu, &pool, &tx, &tpy, &targ).unwrap()]).unwrap();
        let tw = Tensor::from_f32(gpu, &[c.w_len()], &rng.vec(c.w_len())).unwrap();
        let tdy = Tensor::from_f32(gpu, &[c.y_len()], &rng.vec(c.y_len())).unwrap();
        for (name, cfg) in GemmConfig::ALL {
            for relu in [None, Some(&tx)] {
                let route = MaxPoolRoute { pool: &pool, argmax: &targ, relu };
                let fused = Tensor::empty(gpu, &[pool.x_len()], DType::F32).unwrap();
                fused.poison(gpu).unwrap();
                let d = conv2d_backward_input(gpu, &cfg, &c, &tw, &tdy, &fused, Some(&route)).unwrap();
                let names: Vec<_> = d.iter().map(|d| d.name).collect();
                let pool_pass = if relu.is_some() { "max_pool2d_backward_relu" } else { "max_pool2d_backward" };
                if cfg.family == Family::Im2colVec4 && cfg.subgroups && gpu.info().shares_subgroups() {
                    assert_eq!(names, ["conv_direct"], "{name} {pool:?}");
                } else if cfg.family == Family::Im2colVec4 {
                    assert_eq!(names.last(), Some(&"col2im_max_pool_backward"), "{name} {pool:?}");
                } else if routes_in_store(&cfg) {
                    assert!(names.len() == 1 && names[0].starts_with("gemm_"), "{name} {pool:?}: {names:?}");
                } else if c.cin >= 8 {
                    // the direct dX (conv_shared) routes in its store
                    assert_eq!(names, ["conv_shared"], "{name} {pool:?}");
                } else {
                    assert!(names.len() == 2 && names[0].starts_with("gemm_tiled") && names[1] == pool_pass, "{name} {pool:?}: {names:?}");
                }
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                let (dpool, two) = (Tensor::empty(gpu, &[c.x_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[pool.x_len()], DType::F32).unwrap());
                let mut d = conv2d_backward_input(gpu, &cfg, &c, &tw, &tdy, &dpool, None).unwrap();
                d.push(match relu {
                    Some(x) => max_pool2d_backward_relu(gpu, &pool, &targ, x, &dpool, &two).unwrap(),
                    None => max_pool2d_backward(gpu, &pool, &targ, &dpool, &two).unwrap(),
                });
                gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
                let bits = |t: &Tensor| t.to_f32(gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let (f, t) = (bits(&fused), bits(&two));
                let first = f.iter().zip(&t).position(|(a, b)| a != b);
                assert!(first.is_none(), "{name} relu={} {pool:?}: the routed dX differs from the two steps first at {first:?}: {:?} against {:?}", relu.is_some(), first.map(|i| f32::from_bits(f[i])), first.map(|i| f32::from_bits(t[i])));
            }
        }
    }
    let overlapping = Pool2d { batch: 1, channels: 2, h: 9, w: 9, k: 3, stride: 2, pad: 0 };
    let c = Conv2d { batch: 1, cin: 2, h: 4, w: 4, cout: 2, r: 3, s: 3, stride: 1, pad: 1 };
    let t = |n: usize, dt: DType| Tensor::empty(gpu, &[n], dt).unwrap();
    let (w, dy, dx, arg) = (t(c.w_len(), DType::F32), t(c.y_len(), DType::F32), t(overlapping.x_len(), DType::F32), t(overlapping.y_len(), DType::U32));
    let route = MaxPoolRoute { pool: &overlapping, argmax: &arg, relu: None };
    let err = conv2d_backward_input(gpu, &GemmConfig::IM2COL_VEC4, &c, &w, &dy, &dx, Some(&route)).err().expect("overlapping windows refused");
    assert!(err.to_string().contains("tile its input exactly"), "{err}");
}

/// A forward that keeps its im2col columns (`conv2d_forward_keeping_columns`) and the weight
/// gradient read from them (no im2col of its own) give the usual passes' bits; only staged
/// or direct forwards can keep them (not the implicit families). The subgroup variant's
/// direct forward (`conv_direct`) stores copies of what it loads: im2col's bits.
#[test]
fn kept_columns_give_the_same_weight_gradient_with_one_im2col() {
    use kiln::ops::conv2d::{conv2d_backward_weight_from_columns, conv2d_forward_keeping_columns, kept_columns_len};
    let gpu = gpu();
    let mut rng = Rng::new(10);
    let conv1 = Conv2d { batch: 64, cin: 1, h: 28, w: 28, cout: 16, r: 5, s: 5, stride: 1, pad: 2 };
    let conv2 = Conv2d { batch: 64, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 };
    let small = Conv2d { batch: 3, cin: 4, h: 8, w: 7, cout: 5, r: 3, s: 3, stride: 1, pad: 1 };
    for cfg in [GemmConfig::IM2COL_VEC4, GemmConfig::IM2COL_VEC4_SG] {
        assert_eq!(kept_columns_len(gpu, &cfg, &cfg, &conv2), Some(400 * 64 * 14 * 14), "conv2's columns: K = 400 rows");
        assert_eq!(kept_columns_len(gpu, &GemmConfig::TILED_64, &cfg, &conv1), None, "an implicit forward stages nothing");
    }
    let columns_of = |cfg: &GemmConfig, c: &Conv2d, x: &Tensor, w: &Tensor| {
        let len = kept_columns_len(gpu, cfg, cfg, c).expect("kept");
        let (y, col) = (Tensor::empty(gpu, &[c.y_len()], DType::F32).unwrap(), Tensor::empty(gpu, &[len], DType::F32).unwrap());
        gpu.run(&conv2d_forward_keeping_columns(gpu, cfg, c, x, w, None, true, &y, Some(&col), None).unwrap().iter().collect::<Vec<_>>()).unwrap();
        // the weight gradient reads the first C*R*S rows
        col.to_f32(gpu).unwrap()[..c.cin * c.r * c.s * c.batch * c.oh() * c.ow()].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    for c in [conv1, small] {
        let x = Tensor::from_f32(gpu, &[c.x_len()], &rng.vec(c.x_len())).unwrap();
        let w = Tensor::from_f32(gpu, &[c.w_len()], &rng.vec(c.w_len())).unwrap();
        let dy = Tensor::from_f32(gpu, &[c.y_len()], &rng.vec(c.y_len())).unwrap();
        if gpu.info().shares_subgroups() {
            assert!(columns_of(&GemmConfig::IM2COL_VEC4_SG, &c, &x, &w) == columns_of(&GemmConfig::IM2COL_VEC4, &c, &x, &w), "conv_direct's columns are not im2col's, {c:?}");
        }
        for cfg in [GemmConfig::IM2COL_VEC4, GemmConfig::IM2COL_VEC4_SG] {
            let len = kept_columns_len(gpu, &cfg, &cfg, &c).expect("kept");
            let t = |n: usize| Tensor::empty(gpu, &[n], DType::F32).unwrap();
            let (y1, dw1, db1, y2, dw2, db2, col) = (t(c.y_len()), t(c.w_len()), t(c.cout), t(c.y_len()), t(c.w_len()), t(c.cout), t(len));
            let mut kept = conv2d_forward_keeping_columns(gpu, &cfg, &c, &x, &w, None, true, &y1, Some(&col), None).unwrap();
            let from = conv2d_backward_weight_from_columns(gpu, &cfg, &c, &col, &dy, &dw1, false, Some((&db1, false))).unwrap();
            assert_eq!(from.len(), 1, "one GEMM, no im2col: {c:?}");
            assert!(from[0].name.starts_with("gemm_vec4"), "{c:?}");
            kept.extend(from);
            gpu.run(&kept.iter().collect::<Vec<_>>()).unwrap();
            let mut plain = conv2d_forward(gpu, &cfg, &c, &x, &w, None, true, &y2).unwrap();
            plain.extend(conv2d_backward_weight(gpu, &cfg, &c, &x, &dy, &dw2, false, Some((&db2, false))).unwrap());
            gpu.run(&plain.iter().collect::<Vec<_>>()).unwrap();
            let bits = |t: &Tensor| t.to_f32(gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for (what, a, b) in [("y", &y1, &y2), ("dw", &dw1, &dw2), ("db", &db1, &db2)] {
                assert!(bits(a) == bits(b), "{what} from kept columns differs, {} {c:?}", cfg.name());
            }
        }
    }
}

/// The subgroup im2col variant runs the forward and (stride 1, pad < R and S) the dX as one
/// `conv_direct` dispatch each, 8 or, where their window row does not fit, 4 outputs per
/// invocation, and stages what does not fit (a stride-2 dX, a window row wider than the
/// registers, fewer than 4 output channels): checked by dispatch names, then against the CPU.
#[test]
fn subgroup_im2col_family_runs_direct_convolutions_where_they_fit() {
    let gpu = gpu();
    assert!(
        gpu.info().shares_subgroups(),
        "{} has no subgroups of 8 or more lanes, so IM2COL_VEC4_SG would run as IM2COL_VEC4 and conv_direct would not run: \
         run this on lavapipe (scripts/install-lavapipe.sh) or a GPU with subgroups",
        gpu.info().summary()
    );
    let mut rng = Rng::new(12);
    let cfg = GemmConfig::IM2COL_VEC4_SG;
    let direct = &["conv_direct"][..];
    let staged_f = &["im2col", "gemm_vec4_sg"][..];
    let staged_dx = &["gemm_vec4_sg", "col2im"][..];
    let padded_dx = &["pad_weight", "gemm_vec4_sg", "col2im"][..];
    let cases = [
        // conv1 (its dX into one channel staged: fewer than 4), conv2
        (Conv2d { batch: 2, cin: 1, h: 28, w: 28, cout: 16, r: 5, s: 5, stride: 1, pad: 2 }, [direct, padded_dx]),
        (Conv2d { batch: 2, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 }, [direct, direct]),
        // 4 and 8 output channels (4 x 8 and 8 x 8 tiles); 3: staged
        (Conv2d { batch: 2, cin: 8, h: 9, w: 9, cout: 4, r: 3, s: 3, stride: 1, pad: 1 }, [direct, direct]),
        (Conv2d { batch: 2, cin: 3, h: 8, w: 8, cout: 4, r: 3, s: 3, stride: 1, pad: 1 }, [direct, padded_dx]),
        // partial row blocks and chunks, a non-square kernel, no padding
        (Conv2d { batch: 3, cin: 4, h: 9, w: 7, cout: 37, r: 3, s: 2, stride: 1, pad: 0 }, [direct, direct]),
        (Conv2d { batch: 2, cin: 4, h: 6, w: 11, cout: 5, r: 1, s: 3, stride: 1, pad: 0 }, [direct, direct]),
        // stride 2: the forward is direct, the dX staged
        (Conv2d { batch: 2, cin: 3, h: 15, w: 9, cout: 7, r: 2, s: 2, stride: 2, pad: 0 }, [direct, staged_dx]),
        // an 11-wide window: 7 x 1 + 11 input values per kernel row do not fit, 3 x 1 + 11 do
        // (4 outputs per invocation)
        (Conv2d { batch: 2, cin: 4, h: 12, w: 12, cout: 40, r: 3, s: 11, stride: 1, pad: 1 }, [direct, direct]),
        // a 14-wide one: not even 3 x 1 + 14: staged
        (Conv2d { batch: 2, cin: 4, h: 12, w: 16, cout: 8, r: 3, s: 14, stride: 1, pad: 1 }, [staged_f, staged_dx]),
    ];
    for (c, [ef, edx]) in cases {
        let t = |n: usize| Tensor::empty(gpu, &[n], DType::F32).unwrap();
        let (x, w, y, dx) = (t(c.x_len()), t(c.w_len()), t(c.y_len()), t(c.x_len()));
        let names = |d: Vec<kiln::ops::Dispatch>| d.iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(names(conv2d_forward(gpu, &cfg, &c, &x, &w, None, false, &y).unwrap()), ef, "forward {c:?}");
        assert_eq!(names(conv2d_backward_input(gpu, &cfg, &c, &w, &y, &dx, None).unwrap()), edx, "dX {c:?}");
        check(&cfg, c, &mut rng);
    }
}

/// The GPU families take the direct weight gradients where a tile of one output row fits
/// the workgroup memory: conv_shared_weight (an output channel's weight per invocation) up to
/// 32 weights per output channel, conv_shared_weight4 (one weight of 16 channels) above, the
/// GEMM elsewhere: dispatch names, then the CPU, the weight and bias gradients accumulated
/// into what was there.
#[test]
fn weight_gradients_run_direct_on_the_gpu_families() {
    let gpu = gpu();
    let mut rng = Rng::new(13);
    let items = Some("conv_shared_weight");
    let blocks = Some("conv_shared_weight4");
    let cases = [
        // conv1 at batch 64: 7-row bands, 256 tiles, one per workgroup; conv2
        (Conv2d { batch: 64, cin: 1, h: 28, w: 28, cout: 16, r: 5, s: 5, stride: 1, pad: 2 }, items),
        (Conv2d { batch: 64, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 }, blocks),
        // 3 x 3 x 3 = 27 weights, stride 2, no padding, a partial last band
        (Conv2d { batch: 3, cin: 3, h: 17, w: 13, cout: 8, r: 3, s: 3, stride: 2, pad: 0 }, items),
        // 64 channels x 26 items: more items than one workgroup's invocations
        (Conv2d { batch: 2, cin: 1, h: 14, w: 14, cout: 64, r: 5, s: 5, stride: 1, pad: 2 }, items),
        // non-square kernel, one-row bands (a wide image)
        (Conv2d { batch: 2, cin: 2, h: 5, w: 150, cout: 20, r: 2, s: 7, stride: 1, pad: 1 }, items),
        // 33 weights per channel, 4 channels (one partial block of 16)
        (Conv2d { batch: 2, cin: 3, h: 8, w: 8, cout: 4, r: 1, s: 11, stride: 1, pad: 5 }, blocks),
        // 37 channels (three blocks, the last partial), stride 2, 3 x 3 x 9
        (Conv2d { batch: 3, cin: 9, h: 15, w: 11, cout: 37, r: 3, s: 3, stride: 2, pad: 1 }, blocks),
        // one output row of dy alone is over 4096 floats; 64 input channels' rows over 2048
        (Conv2d { batch: 1, cin: 1, h: 3, w: 300, cout: 16, r: 3, s: 3, stride: 1, pad: 1 }, None),
        (Conv2d { batch: 2, cin: 64, h: 14, w: 14, cout: 16, r: 5, s: 5, stride: 1, pad: 2 }, None),
    ];
    for cfg in [GemmConfig::TILED_64, GemmConfig::TILED4_64X128] {
        for (c, expected) in cases {
            let (x, dy) = (rng.vec(c.x_len()), rng.vec(c.y_len()));
            let (dw0, db0) = (rng.vec(c.w_len()), rng.vec(c.cout));
            let t = |v: &[f32]| Tensor::from_f32(gpu, &[v.len()], v).unwrap();
            let (tx, tdy, tdw, tdb) = (t(&x), t(&dy), t(&dw0), t(&db0));
            let d = conv2d_backward_weight(gpu, &cfg, &c, &tx, &tdy, &tdw, true, Some((&tdb, true))).unwrap();
            let names: Vec<_> = d.iter().map(|d| d.name).collect();
            match expected {
                Some(kernel) => assert_eq!(names, [kernel, "conv_shared_weight_sum"], "{} {c:?}", cfg.name()),
                None => assert!(names[0].starts_with("gemm_tiled"), "{} {c:?}: {names:?}", cfg.name()),
            }
            gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
            let (_, dw) = cpu::conv2d_backward(&c, &x, &vec![0.0; c.w_len()], &dy);
            let plane = c.oh() * c.ow();
            let dw: Vec<f32> = dw.iter().zip(&dw0).map(|(g, a)| g + a).collect();
            let db: Vec<f32> = (0..c.cout)
                .map(|k| ((0..c.batch).flat_map(|b| &dy[(b * c.cout + k) * plane..][..plane]).map(|&v| v as f64).sum::<f64>() + db0[k] as f64) as f32)
                .collect();
            let tol = if c.batch * plane > 10_000 { LONG_REDUCTION } else { REDUCTION };
            assert_close(&format!("dw {} {c:?}", cfg.name()), &tdw.to_f32(gpu).unwrap(), &dw, tol);
            assert_close(&format!("db {} {c:?}", cfg.name()), &tdb.to_f32(gpu).unwrap(), &db, tol);
        }
    }
}

/// The GPU families run the forward and the stride-1 dX as conv_shared (16 output channels
/// per workgroup from workgroup memory) where the pass has 8 or more output channels and a
/// band's input fits, the GEMM elsewhere: dispatch names, then the CPU for all three passes.
#[test]
fn gpu_families_run_shared_memory_convolutions_where_they_fit() {
    let gpu = gpu();
    let mut rng = Rng::new(14);
    let direct = &["conv_shared"][..];
    let gemm = &["gemm_tiled"][..];
    let cases = [
        // conv1 (its dX into one channel: the GEMM), conv2
        (Conv2d { batch: 4, cin: 1, h: 28, w: 28, cout: 16, r: 5, s: 5, stride: 1, pad: 2 }, [direct, gemm]),
        (Conv2d { batch: 4, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 }, [direct, direct]),
        // 37 input channels (rounds of staged channels, the last partial), 40 output
        // channels (three blocks of 16, the last partial), a 7 x 7 kernel
        (Conv2d { batch: 2, cin: 37, h: 11, w: 9, cout: 40, r: 7, s: 7, stride: 1, pad: 3 }, [direct, direct]),
        // stride 2: the forward direct, the dX the GEMM; a 1 x 1 kernel
        (Conv2d { batch: 3, cin: 9, h: 15, w: 13, cout: 12, r: 3, s: 3, stride: 2, pad: 1 }, [direct, gemm]),
        (Conv2d { batch: 2, cin: 8, h: 6, w: 5, cout: 8, r: 1, s: 1, stride: 1, pad: 0 }, [direct, direct]),
        // 4 output channels forward: the GEMM; dX into 8
        (Conv2d { batch: 2, cin: 8, h: 9, w: 9, cout: 4, r: 3, s: 3, stride: 1, pad: 1 }, [gemm, direct]),
        // an output row of 300: no band fits 256 invocations
        (Conv2d { batch: 1, cin: 8, h: 2, w: 300, cout: 8, r: 1, s: 3, stride: 1, pad: 1 }, [gemm, gemm]),
    ];
    for cfg in [GemmConfig::TILED_32X64, GemmConfig::TILED4_64X128] {
        for (c, [ef, edx]) in cases {
            let t = |n: usize| Tensor::empty(gpu, &[n], DType::F32).unwrap();
            let (x, w, y, dx) = (t(c.x_len()), t(c.w_len()), t(c.y_len()), t(c.x_len()));
            let first = |d: Vec<kiln::ops::Dispatch>| d[0].name.split('+').next().unwrap().to_string();
            let f = first(conv2d_forward(gpu, &cfg, &c, &x, &w, None, false, &y).unwrap());
            let b = first(conv2d_backward_input(gpu, &cfg, &c, &w, &y, &dx, None).unwrap());
            assert!(f.starts_with(ef[0]), "{} forward {c:?}: {f}", cfg.name());
            assert!(b.starts_with(edx[0]), "{} dX {c:?}: {b}", cfg.name());
            check(&cfg, c, &mut rng);
        }
    }
}

/// A max-pool after a direct forward runs in the convolution's dispatch where it can: in
/// conv_shared's (the GPU families) where its windows tile the output (bands a whole number
/// of windows tall), in conv_direct's (the subgroup im2col family, lavapipe's) for 2 x 2
/// windows at stride 2 over an even output; else as a dispatch of its own. Either way: y as
/// the CPU's convolution, the pooled output and argmax as the CPU pool of that y (ReLU zeros
/// make ties: the first in window order wins), and all three the same bits as the
/// convolution and `max_pool2d_forward` run apart.
#[test]
fn pools_run_in_the_convolutions_dispatch_where_the_windows_tile_it() {
    use kiln::cpu::pool as cpu_pool;
    use kiln::ops::conv2d::conv2d_forward_keeping_columns;
    use kiln::ops::pool::{max_pool2d_forward, MaxPoolOut, Pool2d};
    let gpu = gpu();
    let mut rng = Rng::new(15);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let same = |got: &[u32], want: &[u32], what: &str| {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        assert!(got.len() == want.len() && first.is_none(), "{what}: first difference at {first:?} of {}", want.len());
    };
    // (geometry, window, pooled inside by conv_shared (None: not tried there), by conv_direct)
    let cases = [
        // conv1 and conv2 of the MNIST CNN (bands of 8 and 14 rows)
        (Conv2d { batch: 3, cin: 1, h: 28, w: 28, cout: 16, r: 5, s: 5, stride: 1, pad: 2 }, 2, Some(true), true),
        (Conv2d { batch: 2, cin: 16, h: 14, w: 14, cout: 32, r: 5, s: 5, stride: 1, pad: 2 }, 2, Some(true), true),
        // 3 x 3 windows; 20 channels (the second block of 16 partial); stride 2
        (Conv2d { batch: 2, cin: 9, h: 23, w: 23, cout: 20, r: 3, s: 3, stride: 2, pad: 1 }, 3, Some(true), false),
        // a 7 x 7 output: 2 x 2 windows do not tile it, the pool runs apart
        (Conv2d { batch: 2, cin: 8, h: 7, w: 7, cout: 8, r: 3, s: 3, stride: 1, pad: 1 }, 2, Some(false), false),
        // 10 x 10: the last of an invocation's 4 columns past the edge; 20 of 32 channels; a
        // 3 x 2 kernel; stride 2 (the pool apart: conv_direct pools only at stride 1)
        (Conv2d { batch: 2, cin: 3, h: 10, w: 10, cout: 20, r: 3, s: 3, stride: 1, pad: 1 }, 2, None, true),
        (Conv2d { batch: 3, cin: 5, h: 12, w: 9, cout: 6, r: 3, s: 2, stride: 1, pad: 1 }, 2, None, true),
        (Conv2d { batch: 3, cin: 5, h: 15, w: 14, cout: 6, r: 3, s: 2, stride: 2, pad: 1 }, 2, None, false),
    ];
    let sg = gpu.info().shares_subgroups();
    for cfg in [GemmConfig::TILED_32X64, GemmConfig::TILED4_64X128, GemmConfig::IM2COL_VEC4_SG] {
        let kernel = if cfg == GemmConfig::IM2COL_VEC4_SG { "conv_direct" } else { "conv_shared" };
        if kernel == "conv_direct" && !sg {
            panic!("{} has no subgroups of 8 or more lanes: conv_direct cannot run", gpu.info().name);
        }
        for (c, k, shared, direct) in cases {
            let Some(fused) = (if kernel == "conv_direct" { Some(direct) } else { shared }) else { continue };
            let pool = Pool2d { batch: c.batch, channels: c.cout, h: c.oh(), w: c.ow(), k, stride: k, pad: 0 };
            let (x, w, b) = (rng.vec(c.x_len()), rng.vec(c.w_len()), rng.vec(c.cout));
            let up = |d: &[f32]| Tensor::from_f32(gpu, &[d.len()], d).unwrap();
            let (tx, tw, tb) = (up(&x), up(&w), up(&b));
            let empty = |n: usize, dtype: DType| {
                let t = Tensor::empty(gpu, &[n], dtype).unwrap();
                t.poison(gpu).unwrap();
                t
            };
            let (y, py, arg) = (empty(c.y_len(), DType::F32), empty(pool.y_len(), DType::F32), empty(pool.y_len(), DType::U32));
            let out = MaxPoolOut { pool: &pool, y: &py, argmax: &arg };
            let d = conv2d_forward_keeping_columns(gpu, &cfg, &c, &tx, &tw, Some(&tb), true, &y, None, Some(&out)).unwrap();
            let names: Vec<&str> = d.iter().map(|d| d.name).collect();
            let want: &[&str] = if fused { &[kernel] } else { &[kernel, "max_pool2d_forward"] };
            assert_eq!(names, want, "{} {c:?} pool {k}", cfg.name());
            gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
            let (gy, gpy, garg) = (y.to_f32(gpu).unwrap(), py.to_f32(gpu).unwrap(), arg.to_u32(gpu).unwrap());
            let want_y: Vec<f32> = cpu::conv2d_forward(&c, &x, &w, Some(&b)).iter().map(|v| v.max(0.0)).collect();
            let what = format!("{} {c:?} pool {k}", cfg.name());
            assert_close(&format!("{what}: y"), &gy, &want_y, REDUCTION);
            let (want_py, want_arg) = cpu_pool::max_pool2d_forward(&pool, &gy);
            same(&bits(&gpy), &bits(&want_py), &format!("{what}: pooled y"));
            same(&garg, &want_arg, &format!("{what}: argmax"));
            // a window whose maximum is 0 holds only ReLU zeros: a tie
            assert!(gpy.contains(&0.0), "{what}: no window of ReLU zeros, no tie tested");
            // apart: the same bits
            let (y2, py2, arg2) = (empty(c.y_len(), DType::F32), empty(pool.y_len(), DType::F32), empty(pool.y_len(), DType::U32));
            let mut apart = conv2d_forward(gpu, &cfg, &c, &tx, &tw, Some(&tb), true, &y2).unwrap();
            apart.push(max_pool2d_forward(gpu, &pool, &y2, &py2, &arg2).unwrap());
            gpu.run(&apart.iter().collect::<Vec<_>>()).unwrap();
            same(&bits(&gy), &bits(&y2.to_f32(gpu).unwrap()), &format!("{what}: y apart"));
            same(&bits(&gpy), &bits(&py2.to_f32(gpu).unwrap()), &format!("{what}: pooled y apart"));
            same(&garg, &arg2.to_u32(gpu).unwrap(), &format!("{what}: argmax apart"));
        }
    }
}
