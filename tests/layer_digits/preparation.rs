//! The optional steps of the one preparation (issue 31): deskewing by second moments, the
//! stages `predict --dump-preprocessed` shows; and ensembles of checkpoints.

use std::path::Path;
use std::process::Command;

use image::{GrayImage, Luma};
use kiln::checkpoint::Checkpoint;
use kiln::nn::ModelKind;
use kiln::classify::Ensemble;
use kiln::predict::{self, Preparation};
use kiln::Classifier;

use crate::common;

const DESKEW: Preparation = Preparation { deskew: true };
const UPRIGHT: Preparation = Preparation { deskew: false };

/// A white stroke `width` px wide on black, from (x0, y0) to (x1, y1), on a `side` px square.
fn stroke(side: u32, (x0, y0): (f64, f64), (x1, y1): (f64, f64), width: f64) -> GrayImage {
    let (dx, dy) = (x1 - x0, y1 - y0);
    let len2 = dx * dx + dy * dy;
    GrayImage::from_fn(side, side, |x, y| {
        let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
        let t = (((px - x0) * dx + (py - y0) * dy) / len2).clamp(0.0, 1.0);
        let d = ((px - x0 - t * dx).powi(2) + (py - y0 - t * dy).powi(2)).sqrt();
        Luma([if d <= width / 2.0 { 255 } else { 0 }])
    })
}

#[test]
fn deskewing_makes_a_slanted_stroke_upright() {
    let p = Path::new("slanted.png");
    // a "1" written leaning right: 30 px to the right over 100 px up
    let img = stroke(120, (75.0, 10.0), (45.0, 110.0), 10.0);
    assert!(predict::slant(&img) < -0.25, "the test stroke is slanted: {}", predict::slant(&img));
    let kept = predict::to_mnist_with(&img, p, &UPRIGHT).unwrap();
    let upright = predict::to_mnist_with(&img, p, &DESKEW).unwrap();
    assert!(predict::slant(&kept) < -0.2, "without deskewing the 28x28 leans as the input: {}", predict::slant(&kept));
    assert!(predict::slant(&upright).abs() < 0.03, "deskewed, the slant is {}", predict::slant(&upright));
    // still MNIST's framing: centred, 20 px tall
    let ((cx, cy), side) = common::centre_and_box(&upright);
    assert!((cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0 && (18..=21).contains(&side), "centre ({cx}, {cy}), box {side}");
    // leaning left the other way
    let left = predict::to_mnist_with(&stroke(120, (45.0, 10.0), (75.0, 110.0), 10.0), p, &DESKEW).unwrap();
    assert!(predict::slant(&left).abs() < 0.03, "deskewed, the slant is {}", predict::slant(&left));
}

#[test]
fn deskewing_leaves_an_upright_digit_as_it_was() {
    let p = Path::new("upright.png");
    // a "1" (a vertical bar) and a "0" (an upright ring): no slant to remove
    let one = stroke(100, (50.0, 10.0), (50.0, 90.0), 9.0);
    let zero = GrayImage::from_fn(100, 100, |x, y| {
        let (u, v) = ((x as f64 + 0.5 - 50.0) / 28.0, (y as f64 + 0.5 - 50.0) / 40.0);
        let r = (u * u + v * v).sqrt();
        Luma([if (0.75..=1.0).contains(&r) { 255 } else { 0 }])
    });
    for (name, img) in [("one", one), ("zero", zero)] {
        let a = predict::to_mnist_with(&img, p, &UPRIGHT).unwrap();
        let b = predict::to_mnist_with(&img, p, &DESKEW).unwrap();
        let worst = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| (x as i32 - y as i32).abs()).max().unwrap();
        assert!(worst <= 2, "{name}: deskewing changed a pixel by {worst} levels");
    }
}

#[test]
fn the_dump_shows_each_stage() {
    let dir = common::scratch("preparation", "dump");
    let model = dir.join("m.safetensors");
    random_mlp(1).save(&model).unwrap();
    let digit = dir.join("seven.png");
    // dark ink on light paper, slanted: every stage differs from the last
    let mut img = stroke(90, (60.0, 8.0), (35.0, 82.0), 6.0);
    image::imageops::invert(&mut img);
    img.save(&digit).unwrap();
    let seen = dir.join("seen.png");
    let out = Command::new(common::example("predict"))
        .args(["--model", model.to_str().unwrap(), "--deskew", "--dump-preprocessed", seen.to_str().unwrap(), digit.to_str().unwrap()])
        .output()
        .unwrap();
    let (code, stdout, stderr) = common::text(&out);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let final28 = image::open(&seen).unwrap().to_luma8();
    assert_eq!(final28.dimensions(), (28, 28));
    let strip = image::open(dir.join("seen-stages.png")).unwrap().to_luma8();
    // the same stages from the library: the strip is exactly them
    let stages = predict::stages(&predict::load_gray(&digit).unwrap(), &digit, &DESKEW).unwrap();
    assert_eq!(stages.digit, final28);
    assert_eq!(strip, stages.strip(112));
    assert_eq!(strip.height(), 112);
    // four panels: the original is square (90 px -> 112), the final 28x28 too (112)
    let panels = 112 + 112 + stages.deskewed.width() * 112 / stages.deskewed.height() + stages.boxed.width() * 112 / stages.boxed.height();
    assert!((strip.width() as i64 - panels as i64 - 12).abs() <= 2, "strip {} px wide for panels of {panels} px and 3 gaps", strip.width());
    // the original is light-on-dark as load_gray gives it; the deskewed crop is upright
    assert!(predict::slant(&stages.original) < -0.2 && predict::slant(&stages.deskewed).abs() < 0.05);
    assert_eq!(stages.original.dimensions(), (90, 90));
}

/// An MLP checkpoint with seeded random weights: a model whose answers differ from seed to seed.
fn random_mlp(seed: u64) -> Checkpoint {
    let model = ModelKind::Mlp.spec();
    let graph = model.build(1, 0).unwrap().graph;
    let mut rng = kiln::rng::Rng::new(seed);
    let params = graph
        .params()
        .into_iter()
        .map(|(_, name, shape)| {
            let n = shape.iter().product();
            (name.to_string(), shape.to_vec(), rng.vec(n).iter().map(|v| 0.1 * v).collect())
        })
        .collect();
    Checkpoint { model, mean: 0.1307, std: 0.3081, dataset: "mnist".into(), temperature: 1.0, deskew: false, params }
}

/// A few 28x28 digits with random ink: the models' answers differ on them.
fn some_digits() -> Vec<GrayImage> {
    let mut rng = kiln::rng::Rng::new(7);
    (0..5).map(|_| GrayImage::from_fn(28, 28, |_, _| Luma([if rng.unit() < 0.3 { 255 } else { 0 }]))).collect()
}

#[test]
fn an_ensemble_averages_its_members_probabilities() {
    let gpu = kiln::testing::gpu();
    let images = some_digits();
    let names = ["a".to_string(), "b".to_string()];
    let single = Classifier::new(gpu, random_mlp(1), 4).unwrap().classify(&images).unwrap();
    let other = Classifier::new(gpu, random_mlp(2), 4).unwrap().classify(&images).unwrap();
    assert_ne!(single, other, "two models that answer alike would not test the mean");
    // of one: that model, exactly
    let one = Ensemble::new(gpu, vec![random_mlp(1)], &names[..1], 4).unwrap().classify(&images).unwrap();
    assert_eq!(one, single);
    // of two: the mean of their probabilities (batches of 4 over 5 images: a remainder too)
    let two = Ensemble::new(gpu, vec![random_mlp(1), random_mlp(2)], &names, 4).unwrap().classify(&images).unwrap();
    for ((e, a), b) in two.iter().zip(&single).zip(&other) {
        for c in 0..10 {
            let mean = (a[c] + b[c]) / 2.0;
            assert!((e[c] - mean).abs() <= 1e-6, "class {c}: ensemble {} vs mean {mean}", e[c]);
        }
    }
}

#[test]
fn an_ensemble_refuses_members_of_other_classes() {
    let gpu = kiln::testing::gpu();
    let names = ["digits.safetensors".to_string(), "clothes.safetensors".to_string()];
    let mut clothes = random_mlp(2);
    clothes.dataset = "fashion".into();
    let err = Ensemble::new(gpu, vec![random_mlp(1), clothes], &names, 4).err().expect("refused").to_string();
    assert!(err.contains("clothes.safetensors") && err.contains("classes differ"), "{err}");
    let err = Ensemble::new(gpu, vec![], &[], 4).err().expect("refused").to_string();
    assert!(err.contains("no checkpoint"), "{err}");
}

#[test]
fn evaluate_takes_several_models() {
    let dir = common::scratch("preparation", "ensemble");
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    random_mlp(1).save(&a).unwrap();
    random_mlp(2).save(&b).unwrap();
    let mut labels = String::new();
    for (i, img) in some_digits().iter().enumerate() {
        img.save(dir.join(format!("{i}.png"))).unwrap();
        labels.push_str(&format!("{i}.png {}\n", i % 10));
    }
    std::fs::write(dir.join("labels.txt"), labels).unwrap();
    let out = Command::new(common::example("evaluate"))
        .args(["--model", a.to_str().unwrap(), "--model", b.to_str().unwrap(), "--images", dir.to_str().unwrap(), "--labels"])
        .arg(dir.join("labels.txt"))
        .arg("--json")
        .output()
        .unwrap();
    let (code, stdout, stderr) = common::text(&out);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["models"].as_array().map(|m| m.len()), Some(2), "{json}");
    assert_eq!(json["total"], 5);
}

/// Digits slanted as a fast writer slants them: MNIST-like strokes sheared to the right.
fn slanted_digits(dir: &Path) -> std::path::PathBuf {
    let mut labels = String::new();
    for i in 0..4u32 {
        let lean = 8.0 + 3.0 * i as f64;
        let img = stroke(60, (30.0 - lean, 50.0), (30.0 + lean, 10.0), 5.0);
        img.save(dir.join(format!("{i}.png"))).unwrap();
        labels.push_str(&format!("{i}.png 1\n"));
    }
    std::fs::write(dir.join("labels.txt"), labels).unwrap();
    dir.join("labels.txt")
}

#[test]
fn a_deskewing_checkpoint_says_so_and_its_inputs_are_deskewed_unless_told_otherwise() {
    let dir = common::scratch("preparation", "deskewing-checkpoint");
    let (plain, skewed) = (dir.join("plain.safetensors"), dir.join("skewed.safetensors"));
    random_mlp(1).save(&plain).unwrap();
    Checkpoint { deskew: true, ..random_mlp(1) }.save(&skewed).unwrap();
    assert!(Checkpoint::load(&skewed).unwrap().deskew && !Checkpoint::load(&plain).unwrap().deskew);
    assert_eq!(Preparation::of(&Checkpoint::load(&skewed).unwrap()), DESKEW);
    // the metadata is written only when set: a plain checkpoint keeps the bytes it had
    assert!(!String::from_utf8_lossy(&std::fs::read(&plain).unwrap()[..400]).contains("deskew"));
    // a value that is neither true nor false is refused, naming the file
    let bytes = std::fs::read(&skewed).unwrap();
    let at = bytes.windows(10).position(|w| w == b"\"deskew\":\"").unwrap() + 10;
    let mut bad = bytes.clone();
    bad[at..at + 4].copy_from_slice(b"yes!");
    let e = Checkpoint::from_bytes(&bad, &skewed).expect_err("refused").to_string();
    assert!(e.contains("skewed.safetensors") && e.contains("deskew"), "{e}");

    let labels = slanted_digits(&dir);
    let evaluate = |extra: &[&str]| {
        let out = Command::new(common::example("evaluate")).args(extra).arg("--images").arg(&dir).arg("--labels").arg(&labels).arg("--json").output().unwrap();
        let (code, stdout, stderr) = common::text(&out);
        (code, stdout.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()), stderr)
    };
    let m = |p: &Path| p.to_str().unwrap().to_string();
    for (args, deskewed) in [
        (vec!["--model".to_string(), m(&skewed)], true),
        (vec!["--model".to_string(), m(&skewed), "--no-deskew".into()], false),
        (vec!["--model".to_string(), m(&plain)], false),
        (vec!["--model".to_string(), m(&plain), "--deskew".into()], true),
        (vec!["--model".to_string(), m(&plain), "--model".into(), m(&skewed), "--deskew".into()], true),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, json, stderr) = evaluate(&args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(json.expect("json")["deskew"], deskewed, "{args:?}");
    }
    // an ensemble whose members were prepared differently needs to be told which
    let (code, _, stderr) = evaluate(&["--model", &m(&plain), "--model", &m(&skewed)]);
    assert_eq!(code, 2);
    assert!(stderr.contains("skewed.safetensors") && stderr.contains("--no-deskew"), "{stderr}");
}

#[test]
fn train_mnist_deskew_trains_on_prepared_digits_and_its_checkpoint_says_so() {
    // the library's preparation of a split is to_mnist_with of each digit
    let data = kiln::data::Dataset::load(kiln::data::DatasetKind::Mnist10k, Some(Path::new(DATA))).unwrap();
    let few = data.test.split_at(16).0;
    let prepared = predict::prepare_split(&few, &DESKEW).unwrap();
    for i in 0..16 {
        let digit = GrayImage::from_raw(28, 28, few.images.image(i).unwrap().to_vec()).unwrap();
        let own = predict::to_mnist_with(&digit, Path::new("d"), &DESKEW).unwrap();
        assert_eq!(prepared.images.image(i).unwrap(), own.as_raw().as_slice(), "digit {i}");
    }
    assert_eq!(prepared.labels, few.labels);
    assert_ne!(prepared.images, few.images, "deskewing changed nothing: the test would not see it");

    let dir = common::scratch("preparation", "train-deskew");
    let save = dir.join("d.safetensors");
    let out = Command::new(common::example("train_mnist"))
        .args(["--dataset", "mnist10k", "--data-dir", DATA, "--model", "mlp", "--epochs", "1", "--train-limit", "500", "--calibrate", "500", "--deskew"])
        .args(["--save", save.to_str().unwrap()])
        .env("KILN_AUTOTUNE", "off")
        .output()
        .unwrap();
    let (code, stdout, err) = common::text(&out);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("every digit prepared and deskewed") && stdout.contains("validation accuracy"), "{stdout}");
    assert!(Checkpoint::load(&save).unwrap().deskew);
    // fine-tuning keeps its checkpoint's preparation; --deskew does not go with --init
    let out = Command::new(common::example("train_mnist")).args(["--init", save.to_str().unwrap(), "--images", ".", "--labels", "x", "--deskew"]).output().unwrap();
    let (code, _, err) = common::text(&out);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--deskew") && err.contains("--init"), "{err}");
}

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

/// Zhang-Suen thinning as the paper states it: every pixel scanned in each sub-iteration,
/// the tests written out. The reference for `morphology::skeleton`'s table-driven scan.
fn textbook_skeleton(img: &GrayImage, threshold: u8) -> Vec<Vec<bool>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut m = vec![vec![false; w + 2]; h + 2];
    for (x, y, p) in img.enumerate_pixels() {
        m[y as usize + 1][x as usize + 1] = p[0] > threshold;
    }
    loop {
        let mut changed = false;
        for step in 0..2 {
            let mut remove = Vec::new();
            for y in 1..=h {
                for x in 1..=w {
                    let n = [m[y - 1][x], m[y - 1][x + 1], m[y][x + 1], m[y + 1][x + 1], m[y + 1][x], m[y + 1][x - 1], m[y][x - 1], m[y - 1][x - 1]];
                    let b = n.iter().filter(|&&v| v).count();
                    let a = (0..8).filter(|&i| !n[i] && n[(i + 1) % 8]).count();
                    let (p2, p4, p6, p8) = (n[0], n[2], n[4], n[6]);
                    let cond = if step == 0 { !(p4 && p6 && (p2 || p8)) } else { !(p2 && p8 && (p4 || p6)) };
                    if m[y][x] && (2..=6).contains(&b) && a == 1 && cond {
                        remove.push((x, y));
                    }
                }
            }
            changed |= !remove.is_empty();
            remove.into_iter().for_each(|(x, y)| m[y][x] = false);
        }
        if !changed {
            return m[1..=h].iter().map(|row| row[1..=w].to_vec()).collect();
        }
    }
}

/// The 3-4 chamfer distance as a brute force: the cheapest 3/4-step path from each ink
/// pixel to a background pixel or outside the image (what the two-pass scan computes).
fn brute_chamfer(img: &GrayImage, threshold: u8) -> Vec<f64> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let ink = |x: i64, y: i64| x >= 0 && y >= 0 && x < w && y < h && img.get_pixel(x as u32, y as u32)[0] > threshold;
    let mut out = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if !ink(x, y) {
                out.push(0.0);
                continue;
            }
            // the chamfer distance to (bx, by) is 3 max + (4 - 3) min of |dx|, |dy|... for 3-4: 4 min + 3 (max - min)
            let mut best = i64::MAX;
            for by in -1..=h {
                for bx in -1..=w {
                    if !ink(bx, by) {
                        let (dx, dy) = ((bx - x).abs(), (by - y).abs());
                        best = best.min(4 * dx.min(dy) + 3 * (dx.max(dy) - dx.min(dy)));
                    }
                }
            }
            out.push(best as f64 / 3.0);
        }
    }
    out
}

/// Erosion (`min`) or dilation (`max`) by a disc of radius `r` as defined: every pixel
/// within `r + 0.5`, outside the image black.
fn textbook_disc(img: &GrayImage, r: i64, pick: fn(u8, u8) -> u8) -> GrayImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let mut v = img.get_pixel(x, y)[0];
        for (dx, dy) in (-r..=r).flat_map(|dx| (-r..=r).map(move |dy| (dx, dy))).filter(|&(dx, dy)| ((dx * dx + dy * dy) as f32) <= (r as f32 + 0.5).powi(2)) {
            let (sx, sy) = (x as i64 + dx, y as i64 + dy);
            v = pick(v, if sx < 0 || sy < 0 || sx >= w || sy >= h { 0 } else { img.get_pixel(sx as u32, sy as u32)[0] });
        }
        Luma([v])
    })
}

#[test]
fn the_skeleton_the_distance_and_the_discs_equal_their_textbook_definitions() {
    let mut rng = kiln::base::rng::Rng::new(31);
    let mut images = vec![
        stroke(80, (20.0, 5.0), (60.0, 75.0), 11.0),
        stroke(40, (3.0, 20.0), (37.0, 22.0), 1.5),
        GrayImage::from_pixel(9, 7, Luma([255])),
        GrayImage::new(5, 5),
    ];
    // random blobs: a noisy field smoothed by a 3x3 box, thresholded at 127 below; rows of
    // more than one 64-bit word (the skeleton works on 64 pixels at once)
    for (w, h) in [(17u32, 17u32), (33, 33), (64, 64), (130, 21)] {
        let noise: Vec<u8> = (0..w * h).map(|_| (rng.unit() * 255.0) as u8).collect();
        images.push(GrayImage::from_fn(w, h, |x, y| {
            let mut s = 0u32;
            for (dx, dy) in (-1i64..=1).flat_map(|dx| (-1i64..=1).map(move |dy| (dx, dy))) {
                let (sx, sy) = ((x as i64 + dx).clamp(0, w as i64 - 1), (y as i64 + dy).clamp(0, h as i64 - 1));
                s += noise[(sy * w as i64 + sx) as usize] as u32;
            }
            Luma([(s / 9) as u8])
        }));
    }
    for (k, img) in images.iter().enumerate() {
        assert_eq!(kiln::morphology::skeleton(img, 127), textbook_skeleton(img, 127), "image {k}: skeleton");
        assert_eq!(kiln::morphology::distance_inside(img, 127), brute_chamfer(img, 127), "image {k}: distance");
        for r in [1, 2, 3, 6] {
            assert_eq!(kiln::morphology::erode(img, r), textbook_disc(img, r as i64, u8::min), "image {k}: erosion by {r}");
            assert_eq!(kiln::morphology::dilate(img, r), textbook_disc(img, r as i64, u8::max), "image {k}: dilation by {r}");
        }
    }
}

#[test]
fn the_resize_equals_the_image_crates_triangle_filter_bit_for_bit() {
    let mut rng = kiln::base::rng::Rng::new(32);
    // up and down, by whole and odd ratios, to a line, to the same size and from a pixel
    let sizes = [((28, 28), (80, 80)), ((17, 40), (80, 34)), ((80, 63), (20, 16)), ((300, 120), (7, 3)), ((5, 9), (5, 9)), ((1, 1), (3, 2)), ((40, 1), (13, 1)), ((9, 30), (1, 20))];
    for ((w, h), (nw, nh)) in sizes {
        let img = GrayImage::from_fn(w, h, |_, _| Luma([if rng.unit() < 0.3 { 255 } else { (rng.unit() * 256.0) as u8 }]));
        assert_eq!(kiln::morphology::resize(&img, nw, nh), image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle), "{w}x{h} to {nw}x{nh}");
    }
}

#[test]
fn rounding_to_a_pixel_equals_round_then_clamp() {
    use kiln::morphology::{round_u8, round_u8_f64};
    let mut xs: Vec<f32> = vec![f32::NAN, f32::INFINITY, -f32::INFINITY, -0.0, -0.5, -0.49, 1e9, 255.49, 255.5, 256.0];
    // each whole number and each half, and the floats either side of them
    let (down, up) = (|x: f32| f32::from_bits(x.to_bits() - 1), |x: f32| f32::from_bits(x.to_bits() + 1));
    for k in 1..256 {
        let (whole, half) = (k as f32, k as f32 + 0.5);
        xs.extend([whole, half, down(half), up(half), down(whole), up(whole)]);
    }
    xs.extend([0.0, 0.5, down(0.5), up(0.5)]);
    let mut rng = kiln::base::rng::Rng::new(33);
    xs.extend((0..10_000).map(|_| (rng.unit() * 300.0 - 20.0) as f32));
    for x in xs {
        assert_eq!(round_u8(x), x.round().clamp(0.0, 255.0) as u8, "{x:e}");
        let y = x as f64 + 1e-9 * x as f64;
        assert_eq!(round_u8_f64(y), y.round().clamp(0.0, 255.0) as u8, "{y:e}");
        assert_eq!(round_u8_f64(x as f64), (x as f64).round().clamp(0.0, 255.0) as u8, "{x:e}");
    }
}

/// Issue 31 §1, resolution: a digit scaled up by nearest neighbour (the `lowres` sets' 9-12 px
/// blocks) is found blocky and blurred, which brings it closer to what a smooth scaler would
/// have made of the same small image; a digit drawn at its size, MNIST's look, is left alone.
#[test]
fn a_blocky_digit_is_smoothed_and_a_drawn_one_left_alone() {
    let drawn = stroke(28, (17.0, 4.0), (10.0, 24.0), 3.0);
    assert_eq!(predict::deblock(&drawn), None, "block size {:?}", predict::block_size(&drawn));
    let small = kiln::morphology::resize(&drawn, 10, 10);
    let blocky = image::imageops::resize(&small, 28, 28, image::imageops::FilterType::Nearest);
    let smooth = image::imageops::resize(&small, 28, 28, image::imageops::FilterType::Triangle);
    let b = predict::block_size(&blocky).unwrap();
    assert!((2.4..=3.2).contains(&b), "10 px scaled to 28 repeats lines about 2.8 times: {b}");
    let deblocked = predict::deblock(&blocky).expect("blocky");
    let distance = |a: &GrayImage| a.as_raw().iter().zip(smooth.as_raw()).map(|(&p, &q)| (p as f64 - q as f64).powi(2)).sum::<f64>().sqrt();
    let (before, after) = (distance(&blocky), distance(&deblocked));
    assert!(after < 0.8 * before, "distance to the smooth scaling: {before:.0} blocky, {after:.0} deblocked");
}
