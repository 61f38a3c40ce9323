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
    Checkpoint { model, mean: 0.1307, std: 0.3081, dataset: "mnist".into(), temperature: 1.0, params }
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
