//! GPU vs CPU for the elementwise kernels, on sizes that include 1, primes, and a size
//! needing more than 65535 workgroups (the 2-D grid split).

use kiln::cpu::elementwise as cpu;
use kiln::ops::elementwise as ops;
use kiln::testing::{assert_close, gpu, Rng, ELEMENTWISE, EXACT};
use kiln::Tensor;

const SIZES: [usize; 6] = [1, 7, 256, 4099, 65_537, 256 * 65_535 + 17];

#[test]
fn relu_forward_and_backward_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(1);
    for n in SIZES {
        let x = rng.vec(n);
        let g = rng.vec(n);
        let tx = Tensor::from_f32(gpu, &[n], &x).unwrap();
        let tg = Tensor::from_f32(gpu, &[n], &g).unwrap();
        let ty = Tensor::empty(gpu, &[n], kiln::DType::F32).unwrap();
        let tdx = Tensor::empty(gpu, &[n], kiln::DType::F32).unwrap();
        ty.poison(gpu).unwrap();
        tdx.poison(gpu).unwrap();
        let fwd = ops::relu_forward(gpu, &tx, &ty).unwrap();
        let bwd = ops::relu_backward(gpu, &tx, &tg, &tdx).unwrap();
        if n > 65_535 * 256 {
            assert!(fwd.groups()[1] > 1, "n = {n} must use a 2-D grid, got {:?}", fwd.groups());
        }
        gpu.run(&[&fwd, &bwd]).unwrap();
        assert_close(&format!("relu_forward n={n}"), &ty.to_f32(gpu).unwrap(), &cpu::relu_forward(&x), EXACT);
        assert_close(&format!("relu_backward n={n}"), &tdx.to_f32(gpu).unwrap(), &cpu::relu_backward(&x, &g), EXACT);
    }
}

#[test]
fn bias_and_scale_add_match_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(2);
    for (n, c, hw) in [(1, 1, 1), (3, 17, 1), (5, 16, 49), (64, 10, 1), (2, 3, 31 * 31)] {
        let len = n * c * hw;
        let x = rng.vec(len);
        let b = rng.vec(c);
        let z = rng.vec(len);
        let shape = if hw == 1 { vec![n, c] } else { vec![n, c, hw] };
        let tx = Tensor::from_f32(gpu, &shape, &x).unwrap();
        let tb = Tensor::from_f32(gpu, &[c], &b).unwrap();
        let tz = Tensor::from_f32(gpu, &shape, &z).unwrap();
        let ty = Tensor::empty(gpu, &shape, kiln::DType::F32).unwrap();
        let tw = Tensor::empty(gpu, &shape, kiln::DType::F32).unwrap();
        ty.poison(gpu).unwrap();
        tw.poison(gpu).unwrap();
        let d1 = ops::bias_forward(gpu, &tx, &tb, &ty).unwrap();
        let d2 = ops::scale_add_forward(gpu, 0.5, &tx, -2.0, &tz, &tw).unwrap();
        gpu.run(&[&d1, &d2]).unwrap();
        assert_close("bias_forward", &ty.to_f32(gpu).unwrap(), &cpu::bias_forward(&x, &b, hw), ELEMENTWISE);
        assert_close("scale_add_forward", &tw.to_f32(gpu).unwrap(), &cpu::scale_add_forward(0.5, &x, -2.0, &z), ELEMENTWISE);
    }
}

#[test]
fn shape_mismatch_is_an_error_not_a_panic() {
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[3], &[1.0, 2.0, 3.0]).unwrap();
    let b = Tensor::from_f32(gpu, &[2], &[1.0, 2.0]).unwrap();
    let err = ops::relu_forward(gpu, &a, &b).err().expect("mismatched shapes must fail");
    assert!(err.to_string().contains("relu_forward"), "{err}");
}
