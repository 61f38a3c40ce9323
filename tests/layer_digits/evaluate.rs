//! Evaluation on labelled digits (issue 12 §2): the confusion matrix, labels files, seeded
//! noise, the frozen test sets, the preparation of digits, and the evaluate CLI, whose bad
//! input exits 2 with a message that names the flag or file. The CLI tests evaluate an MLP
//! trained for one epoch on mnist10k (a few seconds on lavapipe).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use image::{GrayImage, Luma};
use kiln::checkpoint::Checkpoint;
use kiln::data::{Dataset, DatasetKind};
use kiln::digit_sets::{self, SetKind};
use kiln::evaluate::{parse_labels, Noise};
use kiln::nn::{Flatten, Linear, Model, ModelKind, Sequential};
use kiln::ops::softmax::Metrics;

use crate::common;
use crate::common::example;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

fn scratch(name: &str) -> PathBuf {
    common::scratch("evaluate", name)
}

fn mnist10k() -> &'static Dataset {
    static DATA_SET: OnceLock<Dataset> = OnceLock::new();
    DATA_SET.get_or_init(|| Dataset::load(DatasetKind::Mnist10k, Some(Path::new(DATA))).expect("MNIST test files in ../shared/data/mnist"))
}

/// The MLP trained for one epoch on mnist10k ([`common::trained`]).
fn trained_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| common::trained("mlp"))
}

fn evaluate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(example("evaluate")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The JSON report's keys are present and agree: accuracy == trace / total, counts are the rows' sums.
fn check_report(v: &serde_json::Value, total: u64) {
    let m: Vec<Vec<u64>> = serde_json::from_value(v["confusion"].clone()).unwrap();
    assert_eq!(m.len(), 10);
    let trace: u64 = (0..10).map(|c| m[c][c]).sum();
    let sum: u64 = m.iter().flatten().sum();
    assert_eq!(sum, total);
    let accuracy = v["accuracy"].as_f64().unwrap();
    assert!((accuracy - trace as f64 / sum as f64).abs() < 1e-12, "{accuracy} vs {trace}/{sum}");
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), 10);
    for (c, s) in per_class.iter().enumerate() {
        assert_eq!(s["class"].as_u64().unwrap(), c as u64);
        assert_eq!(s["count"].as_u64().unwrap(), m[c].iter().sum::<u64>());
        let recall = m[c][c] as f64 / m[c].iter().sum::<u64>().max(1) as f64;
        assert!((s["recall"].as_f64().unwrap() - recall).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&s["precision"].as_f64().unwrap()));
    }
}

/// A folder of the first `n` plain MNIST evaluation digits as PNGs, with its labels file.
fn digit_folder(name: &str, n: usize) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let set = digit_sets::generate(SetKind::Plain, &mnist10k().test.split_at(n).0, digit_sets::SEED);
    for (file, _, img) in &set.images {
        img.save(dir.join(file)).unwrap();
    }
    let labels = dir.join("labels.txt");
    fs::write(&labels, format!("# the first {n} digits\n\n{}", set.labels_file())).unwrap();
    (dir, labels)
}

#[test]
fn confusion_counts_and_scores() {
    let c = Metrics::from_pairs(3, [(0, 0), (0, 1), (1, 1), (2, 1), (2, 2), (2, 2)]).unwrap();
    assert_eq!((c.rows, c.correct), (6, 4));
    assert_eq!(c.accuracy(), 4.0 / 6.0);
    assert_eq!(c.confusion, [vec![1, 1, 0], vec![0, 1, 0], vec![0, 1, 2]]);
    assert_eq!((c.precision()[1], c.recall()[1]), (1.0 / 3.0, 1.0));
    assert_eq!((c.precision()[2], c.recall()[2], c.count(2)), (1.0, 2.0 / 3.0, 3));
    assert_eq!(Metrics::new(4).accuracy(), 0.0, "no example: 0, not NaN");
    assert_eq!(Metrics::new(4).precision()[0], 0.0);
    assert!(Metrics::from_pairs(3, [(0, 3)]).is_err());
    let mut twice = c.clone();
    twice.merge(&c).unwrap();
    assert_eq!((twice.rows, twice.accuracy()), (12, c.accuracy()));
    assert!(twice.merge(&Metrics::new(2)).is_err());
    let per = c.per_class();
    assert_eq!(per[2].count, 3);
    assert_eq!(c.to_json()["confusion"], serde_json::json!([[1, 1, 0], [0, 1, 0], [0, 1, 2]]));
    assert_eq!(c.to_string().lines().count(), 4, "{c}");
    // the GPU metrics are the same type (Confusion was folded into Metrics): the same
    // counts give the same scores
    let m = Metrics { loss_sum: 1.0, correct: 4, rows: 6, no_class: 0, confusion: vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 1, 2]] };
    let from = Metrics { loss_sum: 0.0, ..m.clone() };
    assert_eq!(from, c);
    assert_eq!(from.accuracy_f64() as f32, m.accuracy());
    assert_eq!(from.per_class()[1].precision as f32, m.precision()[1]);
}

#[test]
fn labels_files_parse_with_line_numbers() {
    let p = Path::new("labels.txt");
    let got = parse_labels("# digits\n\na.png 3\n  with space.png   7  # a comment\nb.jpg 0\n", p).unwrap();
    let names: Vec<_> = got.iter().map(|l| (l.name.as_str(), l.label, l.line)).collect();
    assert_eq!(names, [("a.png", 3, 3), ("with space.png", 7, 4), ("b.jpg", 0, 5)]);
    for (text, expect) in [
        ("a.png 1\nb.png\n", "line 2"),
        ("a.png 1\nb.png 10\n", "outside 0-9"),
        ("a.png -1\n", "outside 0-9"),
        ("a.png seven\n", "line 1"),
        ("a.png 1\na.png 2\n", "first on line 1"),
        ("# nothing\n\n", "no labelled image"),
        ("", "no labelled image"),
    ] {
        let err = parse_labels(text, p).unwrap_err().to_string();
        assert!(err.contains("labels.txt") && err.contains(expect), "{text:?}: {err}");
    }
}

#[test]
fn noise_specs_parse_and_noise_is_seeded() {
    assert_eq!("salt-pepper:0.1".parse::<Noise>(), Ok(Noise::SaltPepper(0.1)));
    assert_eq!("gaussian:40".parse::<Noise>(), Ok(Noise::Gaussian(40.0)));
    for bad in ["salt-pepper:1.5", "gaussian:-1", "gaussian:300", "speckle:0.1", "gaussian", "gaussian:x"] {
        assert!(bad.parse::<Noise>().is_err(), "{bad}");
    }
    let clean = vec![100u8; 10_000];
    for noise in [Noise::SaltPepper(0.2), Noise::Gaussian(30.0)] {
        let run = |seed, index| {
            let mut v = clean.clone();
            noise.apply_seeded(&mut v, seed, index);
            v
        };
        assert_eq!(run(7, 3), run(7, 3), "{noise}: same seed, same image");
        assert_ne!(run(7, 3), run(8, 3), "{noise}: another seed");
        assert_ne!(run(7, 3), run(7, 4), "{noise}: another image");
    }
    let mut v = clean.clone();
    Noise::SaltPepper(0.2).apply_seeded(&mut v, 1, 0);
    let hit = v.iter().filter(|&&p| p != 100).count() as f64 / v.len() as f64;
    assert!((hit - 0.2).abs() < 0.02, "{hit}");
    let mut v = clean.clone();
    Noise::Gaussian(30.0).apply_seeded(&mut v, 1, 0);
    let sd = (v.iter().map(|&p| (p as f64 - 100.0).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
    assert!((sd - 30.0).abs() < 1.5, "{sd}");
}

#[test]
fn the_digit_sets_are_frozen() {
    for kind in digit_sets::ALL {
        let set = digit_sets::generate(kind, &mnist10k().test, digit_sets::SEED);
        assert_eq!(set.images.len(), 2000);
        assert_eq!(set.checksum(), kind.frozen(), "{}: the generator changed: the frozen set and README's numbers no longer match it", kind.name());
    }
}

/// A '7' drawn with strokes `width` px wide on a `size` canvas: white ink on black.
fn seven(size: u32, width: u32) -> GrayImage {
    let mut img = GrayImage::new(size, size);
    let s = size as f64 / 100.0;
    for i in 0..1000 {
        let t = i as f64 / 1000.0;
        // the bar, then the diagonal
        let (cx, cy) = if t < 0.4 { (25.0 + 50.0 * t / 0.4, 20.0) } else { (75.0 - 35.0 * (t - 0.4) / 0.6, 20.0 + 65.0 * (t - 0.4) / 0.6) };
        let (cx, cy) = (cx * s, cy * s);
        let r = width as f64 / 2.0;
        for y in (cy - r).floor() as i64..=(cy + r).ceil() as i64 {
            for x in (cx - r).floor() as i64..=(cx + r).ceil() as i64 {
                if (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2) <= r * r && x >= 0 && y >= 0 && x < size as i64 && y < size as i64 {
                    img.put_pixel(x as u32, y as u32, Luma([255]));
                }
            }
        }
    }
    img
}

#[test]
fn preparation_centres_by_mass_in_a_20px_box() {
    let p = Path::new("seven.png");
    for (size, width) in [(100, 10), (300, 30), (60, 5)] {
        let out = kiln::predict::to_mnist(&seven(size, width), p).unwrap();
        let ((cx, cy), side) = common::centre_and_box(&out);
        assert!((cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0, "{size}px: centre of mass at ({cx:.2}, {cy:.2})");
        assert!((18..=21).contains(&side), "{size}px: ink box {side}");
    }
}

#[test]
fn preparation_thins_thick_strokes_and_thickens_hairlines() {
    let p = Path::new("seven.png");
    let width = |img: &GrayImage| kiln::morphology::stroke_width(img, 127).unwrap();
    let normal = width(&kiln::predict::to_mnist(&seven(100, 10), p).unwrap());
    let thick = kiln::predict::to_mnist(&seven(100, 26), p).unwrap();
    let thin = kiln::predict::to_mnist(&seven(300, 3), p).unwrap();
    // a 26-px marker on 100 px is about 5.5 px wide at MNIST's scale, a 3-px pen on 300 px
    // about 0.3 px: the
    // marker is eroded toward the thick end of MNIST's range, the pen dilated toward its median
    let (thick, thin) = (width(&thick), width(&thin));
    assert!(thick < 4.0 && thick > normal - 0.5, "thick {thick} vs normal {normal}");
    // (measured on 28x28 at threshold 127, a diagonal 2-px line reads about 1.3)
    assert!(thin > 1.0 && (thin - normal).abs() < 1.0, "thin {thin} vs normal {normal}");
}

#[test]
fn preparation_detects_the_polarity() {
    let p = Path::new("seven.png");
    let light_on_dark = seven(120, 12);
    let mut dark_on_light = light_on_dark.clone();
    image::imageops::invert(&mut dark_on_light);
    // grey paper, uneven: lighter at the top, and a digit that touches the edge
    let paper = GrayImage::from_fn(120, 120, |x, y| Luma([if dark_on_light.get_pixel(x, y)[0] < 128 { 40 } else { (220 - y / 3) as u8 }]));
    let a = kiln::predict::to_mnist(&kiln::predict::load_gray_from(light_on_dark.clone()), p).unwrap();
    for other in [dark_on_light, paper] {
        let gray = kiln::predict::load_gray_from(other);
        assert!(gray.get_pixel(0, 119)[0] < 100 && gray.get_pixel(60, 24)[0] > 150, "the background must come out dark, the ink light");
        let b = kiln::predict::to_mnist(&gray, p).unwrap();
        let diff = a.pixels().zip(b.pixels()).filter(|(x, y)| (x[0] as i32 - y[0] as i32).abs() > 64).count();
        assert!(diff < 20, "{diff} pixels differ");
    }
}

#[test]
fn evaluate_reports_a_dataset_and_a_folder() {
    let model = trained_model().to_str().unwrap();
    let (code, stdout, stderr) = evaluate(&["--model", model, "--dataset", "mnist10k", "--data-dir", DATA, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v = json(&stdout);
    check_report(&v, 2000);
    assert!(v["accuracy"].as_f64().unwrap() > 0.8, "{v}");

    // 300 PNGs in batches of 64: four full batches and a remainder
    let (dir, labels) = digit_folder("folder", 300);
    let (code, stdout, stderr) = evaluate(&["--model", model, "--images", dir.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "--batch-size", "64", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let folder = json(&stdout);
    check_report(&folder, 300);
    assert!(folder["accuracy"].as_f64().unwrap() > 0.7, "{folder}");
    // the batch size changes nothing
    let (_, stdout, _) = evaluate(&["--model", model, "--images", dir.to_str().unwrap(), "--labels", labels.to_str().unwrap(), "--json"]);
    assert_eq!(json(&stdout)["confusion"], folder["confusion"]);
    // the tables
    let (code, stdout, stderr) = evaluate(&["--model", model, "--images", dir.to_str().unwrap(), "--labels", labels.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("accuracy:") && stdout.contains("precision") && stdout.contains("label\\pred"), "{stdout}");
}

#[test]
fn evaluate_noise_is_seeded() {
    let model = trained_model().to_str().unwrap();
    let run = |noise: &str, seed: &str, denoise: bool| {
        let mut args = vec!["--model", model, "--dataset", "mnist10k", "--data-dir", DATA, "--noise", noise, "--seed", seed, "--json"];
        if denoise {
            args.push("--denoise");
        }
        let (code, stdout, stderr) = evaluate(&args);
        assert_eq!(code, 0, "{stderr}");
        let v = json(&stdout);
        check_report(&v, 2000);
        v
    };
    let a = run("salt-pepper:0.3", "5", false);
    assert_eq!(a["confusion"], run("salt-pepper:0.3", "5", false)["confusion"], "same seed, same result");
    assert_ne!(a["confusion"], run("salt-pepper:0.3", "6", false)["confusion"], "another seed, other noise");
    let cleaned = run("salt-pepper:0.3", "5", true);
    assert!(cleaned["accuracy"].as_f64() > a["accuracy"].as_f64(), "the median filter helps against salt and pepper: {} vs {}", cleaned["accuracy"], a["accuracy"]);
}

fn mlp_checkpoint(dataset: &str) -> Checkpoint {
    let model = ModelKind::Mlp.build(1, 3).unwrap();
    let params = model.graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.01; s.iter().product()])).collect();
    Checkpoint { model: ModelKind::Mlp.spec(), mean: 0.13, std: 0.31, dataset: dataset.into(), temperature: 1.0, deskew: false, params }
}

#[test]
fn evaluate_refuses_bad_input_with_exit_code_2() {
    let dir = scratch("bad");
    let (images, labels) = digit_folder("bad-folder", 20);
    let (images, labels) = (images.to_str().unwrap().to_string(), labels.to_str().unwrap().to_string());
    let model = dir.join("m.safetensors");
    mlp_checkpoint("mnist").save(&model).unwrap();
    let model = model.to_str().unwrap().to_string();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let not_a_model = file("not-a-model.safetensors", "hello");
    let fashion = dir.join("fashion.safetensors");
    mlp_checkpoint("fashion").save(&fashion).unwrap();
    // a model of 32x32 images
    let wide = dir.join("wide.safetensors");
    let spec = Model { name: "wide".into(), input: [1, 32, 32], layers: Sequential::new().add("flatten", Flatten).add("fc", Linear::new(1024, 10)) };
    let params = spec.build(1, 0).unwrap().graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.01; s.iter().product()])).collect();
    Checkpoint { model: spec, mean: 0.1, std: 0.3, dataset: "mnist".into(), temperature: 1.0, deskew: false, params }.save(&wide).unwrap();
    let missing = file("missing.txt", "0000.png 7\nnope.png 3\n");
    let out_of_range = file("range.txt", "0000.png 7\n0001.png 12\n");
    let malformed = file("malformed.txt", "0000.png 7\n\n0001.png\n");
    let empty_labels = file("empty.txt", "# nothing here\n");
    let empty_dir = scratch("empty-dir");
    let unreadable_dir = scratch("unreadable");
    fs::write(unreadable_dir.join("a.png"), b"not a png").unwrap();
    image::GrayImage::from_pixel(28, 28, Luma([0])).save(unreadable_dir.join("blank.png")).unwrap();
    let unreadable = file("unreadable.txt", "a.png 1\nblank.png 2\n");
    let fashion = fashion.to_str().unwrap();
    let wide = wide.to_str().unwrap();
    let empty_dir = empty_dir.to_str().unwrap();
    let unreadable_dir = unreadable_dir.to_str().unwrap();
    let folder = |m: &str, l: &str| vec!["--model".to_string(), m.into(), "--images".into(), images.clone(), "--labels".into(), l.into()];
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (folder(&not_a_model, &labels), vec!["--model", "not a kiln checkpoint"]),
        (folder("/nonexistent-kiln/m.safetensors", &labels), vec!["--model", "/nonexistent-kiln/m.safetensors"]),
        (folder(fashion, &labels), vec!["--model", "fashion"]),
        (folder(wide, &labels), vec!["--model", "1x32x32"]),
        (folder(&model, &missing), vec!["missing.txt", "nope.png", "line 2"]),
        (folder(&model, &out_of_range), vec!["--labels", "line 2", "outside 0-9"]),
        (folder(&model, &malformed), vec!["--labels", "line 3"]),
        (folder(&model, &empty_labels), vec!["--labels", "no labelled image"]),
        (folder(&model, "/nonexistent-kiln/labels.txt"), vec!["--labels", "/nonexistent-kiln/labels.txt"]),
        (vec!["--model".into(), model.clone(), "--images".into(), empty_dir.into(), "--labels".into(), labels.clone()], vec!["--images", "empty"]),
        (vec!["--model".into(), model.clone(), "--images".into(), unreadable_dir.into(), "--labels".into(), unreadable], vec!["--images", "2 of 2 images", "a.png", "blank.png"]),
        ([folder(&model, &labels), vec!["--noise".into(), "speckle:3".into()]].concat(), vec!["--noise", "speckle"]),
        ([folder(&model, &labels), vec!["--noise".into(), "salt-pepper:2".into()]].concat(), vec!["--noise", "out of range"]),
        ([folder(&model, &labels), vec!["--batch-size".into(), "0".into()]].concat(), vec!["--batch-size"]),
        (vec!["--model".into(), model.clone(), "--dataset".into(), "mnist10k".into(), "--data-dir".into(), "/nonexistent-kiln-data".into()], vec!["nonexistent-kiln-data"]),
        (vec!["--model".into(), model.clone(), "--dataset".into(), "fashion".into(), "--data-dir".into(), DATA.into()], vec!["--model", "mnist"]),
        (vec!["--model".into(), model.clone()], vec!["--dataset"]),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, stderr) = evaluate(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        for e in expect {
            assert!(stderr.contains(e), "{args:?}: expected '{e}' in: {stderr}");
        }
    }
}
