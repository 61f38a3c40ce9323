//! Pooling against the reference on random geometries (overlapping windows included) and
//! the MNIST CNN's pools. Inputs are nudged apart so no two elements of a window tie.

use kiln::cpu::pool as cpu;
use kiln::ops::pool::*;
use kiln::testing::{assert_close, gpu, Rng, ELEMENTWISE, EXACT};
use kiln::{DType, Tensor};

fn check(p: Pool2d, rng: &mut Rng) {
    let gpu = gpu();
    let x = rng.vec_untied(p.x_len());
    let dy = rng.vec(p.y_len());
    let tx = Tensor::from_f32(gpu, &[p.x_len()], &x).unwrap();
    let tdy = Tensor::from_f32(gpu, &[p.y_len()], &dy).unwrap();
    let ty = Tensor::empty(gpu, &[p.y_len()], DType::F32).unwrap();
    let targ = Tensor::empty(gpu, &[p.y_len()], DType::U32).unwrap();
    let tdx = Tensor::empty(gpu, &[p.x_len()], DType::F32).unwrap();
    let tavg = Tensor::empty(gpu, &[p.y_len()], DType::F32).unwrap();
    let tdavg = Tensor::empty(gpu, &[p.x_len()], DType::F32).unwrap();
    let tdrelu = Tensor::empty(gpu, &[p.x_len()], DType::F32).unwrap();
    for t in [&ty, &targ, &tdx, &tavg, &tdavg, &tdrelu] {
        t.poison(gpu).unwrap();
    }
    let d = [
        max_pool2d_forward(gpu, &p, &tx, &ty, &targ).unwrap(),
        max_pool2d_backward(gpu, &p, &targ, &tdy, &tdx).unwrap(),
        avg_pool2d_forward(gpu, &p, &tx, &tavg).unwrap(),
        avg_pool2d_backward(gpu, &p, &tdy, &tdavg).unwrap(),
        // x stands in for a ReLU's output: the mask keeps its positive elements
        max_pool2d_backward_relu(gpu, &p, &targ, &tx, &tdy, &tdrelu).unwrap(),
    ];
    gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
    let (y, arg) = cpu::max_pool2d_forward(&p, &x);
    assert_close(&format!("max_pool2d_forward {p:?}"), &ty.to_f32(gpu).unwrap(), &y, EXACT);
    assert_eq!(targ.to_u32(gpu).unwrap(), arg, "argmax {p:?}");
    assert_close(&format!("max_pool2d_backward {p:?}"), &tdx.to_f32(gpu).unwrap(), &cpu::max_pool2d_backward(&p, &x, &dy), ELEMENTWISE);
    let masked: Vec<f32> = cpu::max_pool2d_backward(&p, &x, &dy).iter().zip(&x).map(|(&g, &x)| if x > 0.0 { g } else { 0.0 }).collect();
    assert_close(&format!("max_pool2d_backward_relu {p:?}"), &tdrelu.to_f32(gpu).unwrap(), &masked, ELEMENTWISE);
    assert_close(&format!("avg_pool2d_forward {p:?}"), &tavg.to_f32(gpu).unwrap(), &cpu::avg_pool2d_forward(&p, &x), ELEMENTWISE);
    assert_close(&format!("avg_pool2d_backward {p:?}"), &tdavg.to_f32(gpu).unwrap(), &cpu::avg_pool2d_backward(&p, &dy), ELEMENTWISE);
}

#[test]
fn random_geometries_match_cpu() {
    let mut rng = Rng::new(7);
    let mut done = 0;
    while done < 40 {
        let k = rng.range(1, 5);
        let p = Pool2d {
            batch: rng.range(1, 5),
            channels: rng.range(1, 17),
            h: rng.range(1, 31),
            w: rng.range(1, 31),
            k,
            stride: rng.range(1, 3),
            pad: rng.range(0, k / 2),
        };
        if p.validate("test").is_ok() {
            check(p, &mut rng);
            done += 1;
        }
    }
}

#[test]
fn mnist_cnn_pools_match_cpu() {
    let mut rng = Rng::new(8);
    check(Pool2d { batch: 64, channels: 16, h: 28, w: 28, k: 2, stride: 2, pad: 0 }, &mut rng);
    check(Pool2d { batch: 64, channels: 32, h: 14, w: 14, k: 2, stride: 2, pad: 0 }, &mut rng);
}

#[test]
fn ties_go_to_the_first_maximum() {
    let gpu = gpu();
    let p = Pool2d { batch: 1, channels: 1, h: 2, w: 2, k: 2, stride: 1, pad: 0 };
    let tx = Tensor::from_f32(gpu, &[4], &[1.0, 3.0, 3.0, 3.0]).unwrap();
    let ty = Tensor::empty(gpu, &[1], DType::F32).unwrap();
    let targ = Tensor::empty(gpu, &[1], DType::U32).unwrap();
    gpu.run(&[&max_pool2d_forward(gpu, &p, &tx, &ty, &targ).unwrap()]).unwrap();
    assert_eq!(targ.to_u32(gpu).unwrap(), vec![1]);
}

/// Global average pooling: planes of 1, primes, a plane count that is not a multiple of the
/// workgroup (5 * 67 = 335), the end of a CNN (64 x 32 x 7 x 7) and one long plane (61 x 67 =
/// 4087 values summed by one invocation).
#[test]
fn global_avg_pool_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    for (batch, channels, h, w) in [(1, 1, 1, 1), (2, 3, 7, 5), (3, 17, 13, 11), (5, 67, 3, 2), (64, 32, 7, 7), (1, 2, 61, 67)] {
        let p = GlobalPool2d { batch, channels, h, w };
        let (x, dy) = (rng.vec(p.x_len()), rng.vec(p.y_len()));
        let tx = Tensor::from_f32(gpu, &[batch, channels, h, w], &x).unwrap();
        let tdy = Tensor::from_f32(gpu, &[batch, channels, 1, 1], &dy).unwrap();
        let ty = Tensor::empty(gpu, &[batch, channels, 1, 1], DType::F32).unwrap();
        let tdx = Tensor::empty(gpu, &[batch, channels, h, w], DType::F32).unwrap();
        ty.poison(gpu).unwrap();
        tdx.poison(gpu).unwrap();
        let d = [global_avg_pool_forward(gpu, &p, &tx, &ty).unwrap(), global_avg_pool_backward(gpu, &p, &tdy, &tdx).unwrap()];
        gpu.run(&d.iter().collect::<Vec<_>>()).unwrap();
        // the forward is an f32 sum of up to 4087 values per plane, then a division
        assert_close(&format!("global_avg_pool_forward {p:?}"), &ty.to_f32(gpu).unwrap(), &cpu::global_avg_pool_forward(&p, &x), ELEMENTWISE);
        // the backward is one division per element: WGSL allows 2.5 ulp (NVIDIA's Vulkan
        // driver is 1 ulp off the correctly rounded quotient where lavapipe is exact)
        assert_close(&format!("global_avg_pool_backward {p:?}"), &tdx.to_f32(gpu).unwrap(), &cpu::global_avg_pool_backward(&p, &dy), ELEMENTWISE);
    }
    let p = GlobalPool2d { batch: 2, channels: 3, h: 4, w: 4 };
    let x = Tensor::empty(gpu, &[2 * 3 * 4 * 4 + 1], DType::F32).unwrap();
    let y = Tensor::empty(gpu, &[6], DType::F32).unwrap();
    let err = global_avg_pool_forward(gpu, &p, &x, &y).err().expect("wrong x size must fail");
    assert!(err.to_string().contains("global_avg_pool_forward"), "{err}");
}
