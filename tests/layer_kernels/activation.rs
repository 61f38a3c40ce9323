//! GPU vs CPU for the activation kernel (LeakyReLU, Tanh, Sigmoid, GELU), forward and
//! backward, on sizes that include 1, primes and non-multiples of the workgroup (256), with
//! inputs spread over [-8, 8] (both tails of every activation) plus edge values: ±0, tiny,
//! the tanh polynomial/exp switch at ±0.125, and magnitudes where a naive formula overflows.

use kiln::cpu::activation as cpu;
use kiln::ops::activation::{self as ops, Activation};
use kiln::testing::{assert_close, gpu, Rng, Tolerance, EXACT, TRANSCENDENTAL};
use kiln::{DType, Tensor};

const SIZES: [usize; 7] = [1, 7, 61, 256, 257, 4099, 65_537];
const EDGES: [f32; 16] =
    [0.0, -0.0, 1e-30, -1e-30, 1e-4, -1e-4, 0.125, -0.125, 0.1249, -0.1249, 30.0, -30.0, 100.0, -100.0, 3.0e4, -3.0e4];

/// LeakyReLU is one comparison and at most one f32 multiply, correctly rounded on both
/// sides: bit-exact. Tanh/Sigmoid/GELU go through f32 exp (and GELU through a 1.2e-7
/// erfc fit): the transcendental preset.
fn tolerance(act: Activation) -> Tolerance {
    match act {
        Activation::LeakyRelu { .. } => EXACT,
        _ => TRANSCENDENTAL,
    }
}

fn inputs(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x: Vec<f32> = rng.vec(n).iter().map(|v| v * 8.0).collect();
    for (v, e) in x.iter_mut().zip(EDGES) {
        *v = e;
    }
    x
}

/// Runs forward and backward on the GPU; `saved` for the backward is the CPU's (x or y per
/// the contract), so each kernel is checked alone. Returns (gpu y, cpu y, gpu dx, cpu dx).
fn run(act: Activation, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let gpu = gpu();
    let n = x.len();
    let y = cpu::activation_forward(act, x);
    let saved = if act.backward_reads_output() { &y } else { x };
    let tx = Tensor::from_f32(gpu, &[n], x).unwrap();
    let ts = Tensor::from_f32(gpu, &[n], saved).unwrap();
    let tdy = Tensor::from_f32(gpu, &[n], dy).unwrap();
    let ty = Tensor::empty(gpu, &[n], DType::F32).unwrap();
    let tdx = Tensor::empty(gpu, &[n], DType::F32).unwrap();
    ty.poison(gpu).unwrap();
    tdx.poison(gpu).unwrap();
    let fwd = ops::activation_forward(gpu, act, &tx, &ty).unwrap();
    let bwd = ops::activation_backward(gpu, act, &ts, &tdy, &tdx).unwrap();
    if n > 65_535 * 256 {
        assert!(fwd.groups()[1] > 1, "n = {n} must use a 2-D grid, got {:?}", fwd.groups());
    }
    gpu.run(&[&fwd, &bwd]).unwrap();
    let dx = cpu::activation_backward(act, saved, dy);
    (ty.to_f32(gpu).unwrap(), y, tdx.to_f32(gpu).unwrap(), dx)
}

fn max_err(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0f64, 0f64), |(abs, rel), (&g, &w)| {
        let e = (g as f64 - w as f64).abs();
        (abs.max(e), if w.abs() > 1e-3 { rel.max(e / w.abs() as f64) } else { rel })
    })
}

#[test]
fn activations_match_cpu_forward_and_backward() {
    let mut rng = Rng::new(31);
    let acts = Activation::ALL_DEFAULT.into_iter().chain([Activation::LeakyRelu { slope: 0.2 }, Activation::LeakyRelu { slope: -0.5 }]);
    for act in acts {
        let (mut worst_y, mut worst_dx) = ((0f64, 0f64), (0f64, 0f64));
        for n in SIZES {
            let (x, dy) = (inputs(n, &mut rng), rng.vec(n));
            let (gy, cy, gdx, cdx) = run(act, &x, &dy);
            assert_close(&format!("{act:?} forward n={n}"), &gy, &cy, tolerance(act));
            assert_close(&format!("{act:?} backward n={n}"), &gdx, &cdx, tolerance(act));
            let (ey, edx) = (max_err(&gy, &cy), max_err(&gdx, &cdx));
            worst_y = (worst_y.0.max(ey.0), worst_y.1.max(ey.1));
            worst_dx = (worst_dx.0.max(edx.0), worst_dx.1.max(edx.1));
        }
        // the figures quoted in ARCHITECTURE.md (relative error over |cpu| > 1e-3)
        println!(
            "{act:?}: forward max |err| {:.2e} (rel {:.2e}), backward max |err| {:.2e} (rel {:.2e})",
            worst_y.0, worst_y.1, worst_dx.0, worst_dx.1
        );
    }
}

#[test]
fn huge_launch_uses_the_2d_grid() {
    // more than 65535 workgroups of 256: the grid split is shared by every activation, so
    // one of each backward kind (reads x, reads y) is enough at this size
    let mut rng = Rng::new(32);
    let n = 256 * 65_535 + 17;
    let (x, dy) = (inputs(n, &mut rng), rng.vec(n));
    for act in [Activation::LeakyRelu { slope: 0.01 }, Activation::Sigmoid] {
        let (gy, cy, gdx, cdx) = run(act, &x, &dy);
        assert_close(&format!("{act:?} forward n={n}"), &gy, &cy, tolerance(act));
        assert_close(&format!("{act:?} backward n={n}"), &gdx, &cdx, tolerance(act));
    }
}

#[test]
fn outputs_saturate_without_nan() {
    // saturation (no overflow to NaN or inf), odd symmetry, and PyTorch's leaky_relu
    // gradient at 0 (slope * dy)
    let x = [0.0f32, 100.0, -100.0, 3.0e4, -3.0e4];
    let dy = [1.0f32; 5];
    let (y, _, dx, _) = run(Activation::Tanh, &x, &dy);
    assert_close("tanh edges", &y, &[0.0, 1.0, -1.0, 1.0, -1.0], TRANSCENDENTAL);
    assert_close("tanh' edges", &dx, &[1.0, 0.0, 0.0, 0.0, 0.0], TRANSCENDENTAL);
    let (y, _, _, _) = run(Activation::Sigmoid, &x, &dy);
    assert_close("sigmoid edges", &y, &[0.5, 1.0, 0.0, 1.0, 0.0], TRANSCENDENTAL);
    let (y, _, dx, _) = run(Activation::Gelu, &x, &dy);
    assert_close("gelu edges", &y, &[0.0, 100.0, 0.0, 3.0e4, 0.0], TRANSCENDENTAL);
    assert_close("gelu' edges", &dx, &[0.5, 1.0, 0.0, 1.0, 0.0], TRANSCENDENTAL);
    let (_, _, dx, _) = run(Activation::LeakyRelu { slope: 0.01 }, &x, &dy);
    assert_close("leaky_relu' edges", &dx, &[0.01, 1.0, 0.01, 1.0, 0.01], EXACT);
}

#[test]
fn mismatches_and_bad_slopes_are_errors() {
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[3], &[1.0, 2.0, 3.0]).unwrap();
    let b = Tensor::from_f32(gpu, &[2], &[1.0, 2.0]).unwrap();
    let err = ops::activation_forward(gpu, Activation::Tanh, &a, &b).err().expect("mismatched shapes must fail");
    assert!(err.to_string().contains("activation_forward"), "{err}");
    let err = ops::activation_forward(gpu, Activation::LeakyRelu { slope: f32::NAN }, &a, &a).err().expect("NaN slope");
    assert!(err.to_string().contains("slope"), "{err}");
}
