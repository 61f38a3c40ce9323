//! The GPU-resident dataset: the batch gather against a CPU reference on the real MNIST
//! test images, permutations, partial last batches, augmentation and the median filter.

use kiln::cpu::data as reference;
use kiln::kernels::data::{impulse_median3x3, median3x3, permutation, Augment, ResidentDataset};
use kiln::kernels::dropout::pcg;
use kiln::data::mnist::{Dataset, DatasetKind};
use kiln::testing::{assert_close, gpu, Rng, ELEMENTWISE, EXACT};
use kiln::{DType, Tensor};

fn mnist10k() -> Dataset {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist"));
    Dataset::load(DatasetKind::Mnist10k, Some(dir)).unwrap_or_else(|e| panic!("the MNIST test files are needed here: {e}"))
}

struct Batch {
    x: Tensor,
    y: Tensor,
    step: Tensor,
}

fn batch(b: usize) -> Batch {
    let gpu = gpu();
    Batch {
        x: Tensor::empty(gpu, &[b, 1, 28, 28], DType::F32).unwrap(),
        y: Tensor::empty(gpu, &[b], DType::U32).unwrap(),
        step: Tensor::from_u32(gpu, &[4], &[0; 4]).unwrap(),
    }
}

#[test]
fn gather_matches_the_cpu_reference_and_pads_the_last_batch() {
    let gpu = gpu();
    let data = mnist10k();
    let (mean, std) = data.mean_std();
    let split = &data.test; // 2,000 images
    let ds = ResidentDataset::upload(gpu, &split.images.pixels, &split.labels, 28, 28, mean, std).unwrap();
    let perm = ds.shuffle(gpu, 7).unwrap();
    let mut sorted = perm.clone();
    sorted.sort();
    assert_eq!(sorted, (0..2000).collect::<Vec<u32>>(), "the shuffle is a permutation");
    let b = batch(64);
    let d = ds.gather(gpu, &b.step, &b.x, &b.y, Augment::Off, 0).unwrap();
    // a full batch, then the last one (1,984..2,047: 16 rows of data, 48 of padding)
    for start in [128usize, 1984] {
        b.x.poison(gpu).unwrap();
        b.y.poison(gpu).unwrap();
        b.step.write_u32(gpu, &[0, start as u32, 0, 0]).unwrap();
        gpu.run(&[&d]).unwrap();
        let mut want_x = Vec::new();
        let mut want_y = Vec::new();
        for row in 0..64 {
            match perm.get(start + row) {
                Some(&i) => {
                    let img = split.images.image(i as usize).unwrap();
                    want_x.extend(img.iter().map(|&p| (p as f32 / 255.0 - mean) / std));
                    want_y.push(split.labels[i as usize] as u32);
                }
                None => {
                    want_x.extend([0.0; 784]);
                    want_y.push(u32::MAX);
                }
            }
        }
        // one f32 division and one multiply per pixel: WGSL allows a few ulp on division
        assert_close(&format!("gathered batch at {start}"), &b.x.to_f32(gpu).unwrap(), &want_x, ELEMENTWISE);
        assert_eq!(b.y.to_u32(gpu).unwrap(), want_y, "labels at {start}");
    }
    assert_ne!(permutation(100, 1), permutation(100, 2));
    assert_eq!(permutation(100, 1), permutation(100, 1));
}

#[test]
fn augmentation_keeps_shape_and_is_reproducible_per_seed_and_step() {
    let gpu = gpu();
    let data = mnist10k();
    let (mean, std) = data.mean_std();
    let ds = ResidentDataset::upload(gpu, &data.test.images.pixels, &data.test.labels, 28, 28, mean, std).unwrap();
    let b = batch(32);
    let run = |seed: u32, step: u32| {
        let d = ds.gather(gpu, &b.step, &b.x, &b.y, Augment::Affine, seed).unwrap();
        b.step.write_u32(gpu, &[step, 0, 0, 0]).unwrap();
        gpu.run(&[&d]).unwrap();
        b.x.to_f32(gpu).unwrap()
    };
    let plain = {
        let d = ds.gather(gpu, &b.step, &b.x, &b.y, Augment::Off, 0).unwrap();
        b.step.write_u32(gpu, &[0, 0, 0, 0]).unwrap();
        gpu.run(&[&d]).unwrap();
        b.x.to_f32(gpu).unwrap()
    };
    let a1 = run(5, 3);
    assert_eq!(a1.len(), 32 * 784);
    assert_close("same seed and step", &run(5, 3), &a1, EXACT);
    assert_ne!(run(5, 4), a1, "another step moves the images differently");
    assert_ne!(run(6, 3), a1, "another seed moves the images differently");
    assert_ne!(plain, a1);
    // a small warp keeps the ink: mean intensity within 15% of the original's
    let ink = |v: &[f32]| v.iter().map(|x| x * std + mean).sum::<f32>();
    let (p, a) = (ink(&plain), ink(&a1));
    assert!((a - p).abs() < 0.15 * p, "ink {p} -> {a}");
}

/// The augmented gather of shaders/data.wgsl, in the same f32 operations: the random
/// affine warp (rotation from tan(angle / 2), scale, shear, shift) of the source blended
/// towards its dilation or erosion, sampled bilinearly, then normalised.
fn augment_cpu(img: &[u8], seed: u32, step: u32, row: u32, mean: f32, std: f32) -> Vec<f32> {
    let rand = |which: u32| (pcg(which ^ pcg(row ^ pcg(step ^ pcg(seed)))) >> 8) as f32 / 8388608.0 - 1.0;
    let pixel = |y: i32, x: i32| if (0..28).contains(&y) && (0..28).contains(&x) { img[(y * 28 + x) as usize] as f32 } else { 0.0 };
    let (w, amount) = { let w = rand(5); (w, (w.abs() - 0.4).max(0.0) / 0.6) };
    let stroke = |y: i32, x: i32| {
        let c = pixel(y, x);
        if amount == 0.0 {
            return c;
        }
        let m = if w > 0.0 {
            c.max(pixel(y, x + 1)).max(pixel(y + 1, x)).max(pixel(y, x - 1)).max(pixel(y - 1, x))
        } else {
            c.min(pixel(y, x + 1)).min(pixel(y + 1, x))
        };
        c + (m - c) * amount
    };
    let u = rand(0) * 0.131_652_5;
    let scale = 1.0 + 0.1 * rand(1);
    let shift = (rand(2) * 2.5, rand(3) * 2.5);
    let shear = 0.2 * rand(4);
    let centre = 28.0 * 0.5 - 0.5;
    let (cs, sn) = ((1.0 - u * u) / (1.0 + u * u), 2.0 * u / (1.0 + u * u));
    (0..28 * 28)
        .map(|k| {
            let (oy, ox) = ((k / 28) as f32, (k % 28) as f32);
            let d = ((ox - centre - shift.0) / scale, (oy - centre - shift.1) / scale);
            let r = (cs * d.0 + sn * d.1, -sn * d.0 + cs * d.1);
            let src = (r.0 - shear * r.1 + centre, r.1 + centre);
            let (fx, fy) = (src.0.floor(), src.1.floor());
            let (tx, ty) = (src.0 - fx, src.1 - fy);
            let (x0, y0) = (fx as i32, fy as i32);
            let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
            let v = lerp(lerp(stroke(y0, x0), stroke(y0, x0 + 1), tx), lerp(stroke(y0 + 1, x0), stroke(y0 + 1, x0 + 1), tx), ty);
            (v / 255.0 - mean) / std
        })
        .collect()
}

#[test]
fn augmentation_matches_the_cpu_reference() {
    // Sample positions carry a few f32 roundings (~1e-6 px at radius 14; fused multiply-adds
    // may differ from the CPU's), times an edge slope of up to 255 levels per pixel, over
    // 255 * std: ~2e-5. Bilinear sampling is continuous, so a floor() that lands on the other
    // side of an integer changes nothing more.
    const WARP: kiln::testing::Tolerance = kiln::testing::Tolerance { name: "warp", abs: 1e-4, rel: 1e-4 };
    let gpu = gpu();
    let data = mnist10k();
    let (mean, std) = data.mean_std();
    let split = &data.test;
    let ds = ResidentDataset::upload(gpu, &split.images.pixels, &split.labels, 28, 28, mean, std).unwrap();
    let b = batch(61);
    let (seed, step, start) = (11u32, 37u32, 300u32);
    let d = ds.gather(gpu, &b.step, &b.x, &b.y, Augment::Affine, seed).unwrap();
    b.x.poison(gpu).unwrap();
    b.step.write_u32(gpu, &[step, start, 0, 0]).unwrap();
    gpu.run(&[&d]).unwrap();
    let want: Vec<f32> = (0..61u32)
        .flat_map(|row| augment_cpu(split.images.image((start + row) as usize).unwrap(), seed, step, row, mean, std))
        .collect();
    assert_close("augmented batch", &b.x.to_f32(gpu).unwrap(), &want, WARP);
}

#[test]
fn median_filter_matches_cpu() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    for (b, rows, cols) in [(1, 1, 1), (2, 5, 7), (3, 28, 28), (1, 61, 33)] {
        let img = rng.vec(b * rows * cols);
        let t = Tensor::from_f32(gpu, &[b, rows, cols], &img).unwrap();
        let out = Tensor::empty(gpu, &[b, rows, cols], DType::F32).unwrap();
        out.poison(gpu).unwrap();
        gpu.run(&[&median3x3(gpu, &t, &out, rows, cols).unwrap()]).unwrap();
        let want = reference::median3x3(&img, rows, cols);
        assert_close(&format!("median3x3 {b}x{rows}x{cols}"), &out.to_f32(gpu).unwrap(), &want, EXACT);
    }
}

/// Digit-like images with salt and pepper: strokes of ink (250-255) on paper (0-6), a few
/// anti-aliased levels between, and a fraction `p` of the pixels set to 0 or 255.
fn noisy_strokes(rng: &mut Rng, b: usize, rows: usize, cols: usize, p: f32) -> Vec<f32> {
    let mut unit = || rng.unit() as f32;
    let mut img = Vec::with_capacity(b * rows * cols);
    for _ in 0..b {
        let (a, c) = (unit() * 0.5 + 0.2, unit() * cols as f32);
        for y in 0..rows {
            for x in 0..cols {
                // a slanted band 3 px wide and a horizontal one 2 px tall
                let d = (x as f32 - (c + a * y as f32 - a * rows as f32 / 2.0)).abs();
                let v = if d < 1.5 || y == rows / 3 || y == rows / 3 + 1 { 250.0 + (unit() * 6.0).floor() } else if d < 2.5 { 128.0 } else { (unit() * 7.0).floor() };
                let r = unit();
                img.push(if r < p / 2.0 { 0.0 } else if r < p { 255.0 } else { v });
            }
        }
    }
    img
}

#[test]
fn impulse_median_matches_cpu_and_leaves_clean_pixels() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    for (b, rows, cols, p) in [(1, 1, 1, 0.5), (2, 5, 7, 0.1), (3, 28, 28, 0.1), (1, 61, 33, 0.3), (2, 28, 28, 0.0)] {
        let img = noisy_strokes(&mut rng, b, rows, cols, p);
        let t = Tensor::from_f32(gpu, &[b, rows, cols], &img).unwrap();
        let out = Tensor::empty(gpu, &[b, rows, cols], DType::F32).unwrap();
        out.poison(gpu).unwrap();
        gpu.run(&[&impulse_median3x3(gpu, &t, &out, rows, cols).unwrap()]).unwrap();
        let want = reference::impulse_median3x3(&img, rows, cols);
        assert_close(&format!("impulse_median3x3 {b}x{rows}x{cols}"), &out.to_f32(gpu).unwrap(), &want, EXACT);
    }
    // the detector: on clean strokes it changes (almost) nothing where the plain median
    // changes many pixels; with 10% salt and pepper it removes most impulses
    let (rows, cols) = (28, 28);
    let clean = noisy_strokes(&mut Rng::new(5), 8, rows, cols, 0.0);
    let changed = |a: &[f32], b: &[f32]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    let plain = changed(&clean, &reference::median3x3(&clean, rows, cols));
    let impulse = changed(&clean, &reference::impulse_median3x3(&clean, rows, cols));
    assert!(impulse * 20 <= plain && plain > 100, "clean pixels changed: impulse {impulse}, plain median {plain}");
    let noisy = noisy_strokes(&mut Rng::new(5), 8, rows, cols, 0.1);
    let wrong = |a: &[f32]| a.iter().zip(&clean).filter(|(x, y)| (*x - *y).abs() > 64.0).count();
    let (before, after) = (wrong(&noisy), wrong(&reference::impulse_median3x3(&noisy, rows, cols)));
    assert!(after * 3 <= before, "pixels far from the clean image: {before} noisy, {after} after the impulse median");
}

/// The elastic and robust levels (`gather_batch_warp`, one workgroup per image) against the
/// f64 reference, on MNIST digits and on random images of an odd size whose last batch is
/// partly padding.
#[test]
fn elastic_and_robust_gathers_match_the_cpu_reference() {
    // As `warp`, with the elastic field's sums on top: two passes of 13 f32 terms (relative
    // error ~1e-6, times α 34 ~ 4e-5 px of displacement) and exp() of the Gaussian weights,
    // times the edge slope (255 levels per pixel, over 255 * std ~ 3.2 per px): ~1.5e-4.
    const ELASTIC: kiln::testing::Tolerance = kiln::testing::Tolerance { name: "elastic", abs: 5e-4, rel: 1e-4 };
    let gpu = gpu();
    let data = mnist10k();
    let (mean, std) = data.mean_std();
    let mut rng = Rng::new(23);
    let odd: Vec<u8> = (0..37 * 13 * 20).map(|_| (rng.vec(1)[0].abs() * 255.0).min(255.0) as u8).collect();
    let odd_labels: Vec<u8> = (0..37).map(|i| (i % 10) as u8).collect();
    // (pixels, labels, rows, cols, batch, first row, seed, step)
    let cases: [(&[u8], &[u8], usize, usize, usize, u32, u32, u32); 2] = [
        (&data.test.images.pixels, &data.test.labels, 28, 28, 61, 300, 11, 37),
        (&odd, &odd_labels, 13, 20, 9, 32, 4, 5),
    ];
    for (pixels, labels, rows, cols, b, start, seed, step) in cases {
        let ds = ResidentDataset::upload(gpu, pixels, labels, rows, cols, mean, std).unwrap();
        let x = Tensor::empty(gpu, &[b, 1, rows, cols], DType::F32).unwrap();
        let y = Tensor::empty(gpu, &[b], DType::U32).unwrap();
        let step_t = Tensor::from_u32(gpu, &[4], &[step, start, 0, 0]).unwrap();
        let mut got = Vec::new();
        for augment in [Augment::Elastic, Augment::Robust] {
            let d = ds.gather(gpu, &step_t, &x, &y, augment, seed).unwrap();
            x.poison(gpu).unwrap();
            y.poison(gpu).unwrap();
            gpu.run(&[&d]).unwrap();
            let plane = rows * cols;
            let mut want = Vec::new();
            let mut want_y = Vec::new();
            for row in 0..b as u32 {
                match labels.get((start + row) as usize) {
                    Some(&l) => {
                        let img = &pixels[(start + row) as usize * plane..][..plane];
                        let v = reference::gather_image(img, rows, cols, seed, step, row, augment, mean as f64, std as f64);
                        want.extend(v.iter().map(|&v| v as f32));
                        want_y.push(l as u32);
                    }
                    None => {
                        want.extend(vec![0.0; plane]);
                        want_y.push(u32::MAX);
                    }
                }
            }
            let x_got = x.to_f32(gpu).unwrap();
            assert_close(&format!("{augment} gather of {b} {rows}x{cols} images"), &x_got, &want, ELASTIC);
            assert_eq!(y.to_u32(gpu).unwrap(), want_y, "{augment} labels");
            got.push(x_got);
        }
        assert_ne!(got[0], got[1], "the robust level adds to the elastic one");
    }
    // the elastic level moves the ink of the affine one; robust binarises some digits
    let ds = ResidentDataset::upload(gpu, &data.test.images.pixels, &data.test.labels, 28, 28, mean, std).unwrap();
    let b = batch(61);
    b.step.write_u32(gpu, &[37, 300, 0, 0]).unwrap();
    let run = |augment| {
        gpu.run(&[&ds.gather(gpu, &b.step, &b.x, &b.y, augment, 11).unwrap()]).unwrap();
        b.x.to_f32(gpu).unwrap()
    };
    let (affine, robust) = (run(Augment::Affine), run(Augment::Robust));
    assert_ne!(affine, run(Augment::Elastic));
    let (lo, hi) = (-mean / std, (1.0 - mean) / std);
    let binary = robust.chunks(784).filter(|img| img.iter().all(|&v| (v - lo).abs() < 1e-5 || (v - hi).abs() < 1e-5)).count();
    assert!(binary > 0, "no binarised digit in 61 robust rows (probability 0.15 each)");
}
