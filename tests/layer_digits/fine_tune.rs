//! Fine-tuning (`train_mnist --init CKPT --images DIR --labels FILE`): a model trained on
//! MNIST adapts to a writer whose digits it reads badly, from a hundred examples, with the
//! defaults alone; `--freeze-features` changes only the last layer.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::checkpoint::Checkpoint;
use kiln::data::mnist::{Dataset, DatasetKind, Split};
use kiln::evaluate::{self, Options};
use kiln::testing::gpu;
use kiln::Classifier;

use crate::common::{self, example};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

/// Writes images `range` of `split` as a writer MNIST never saw would: each digit turned a
/// quarter turn clockwise (a transformation the preparation does not undo), dark ink on white
/// paper with a margin; returns the labels file (`NAME LABEL`).
fn write_turned(dir: &Path, split: &Split, range: std::ops::Range<usize>, labels: &str) -> PathBuf {
    let mut lines = String::new();
    for i in range {
        let img = split.images.image(i).unwrap();
        let page = image::GrayImage::from_fn(40, 40, |x, y| {
            let (x, y) = (x as i64 - 6, y as i64 - 6);
            if (0..28).contains(&x) && (0..28).contains(&y) {
                // out(y, x) = in(27 - x, y): a quarter turn clockwise
                image::Luma([255 - img[((27 - x) * 28 + y) as usize]])
            } else {
                image::Luma([255])
            }
        });
        let name = format!("turned_{i:04}.png");
        page.save(dir.join(&name)).unwrap();
        lines.push_str(&format!("{name} {}\n", split.labels[i]));
    }
    let path = dir.join(labels);
    std::fs::write(&path, lines).unwrap();
    path
}

fn accuracy(model: &Path, dir: &Path, labels: &Path) -> f32 {
    let gpu = gpu();
    let mut classifier = Classifier::load(gpu, model).unwrap().into();
    let files = evaluate::resolve(dir, labels, &evaluate::read_labels(labels).unwrap()).unwrap();
    evaluate::evaluate_folder(&mut classifier, gpu, &files, &Options::default()).unwrap().metrics.accuracy()
}

fn fine_tune(init: &Path, dir: &Path, labels: &Path, save: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(example("train_mnist"))
        .args(["--dataset", "mnist10k", "--data-dir", DATA, "--quiet", "--json", "--init"])
        .arg(init)
        .arg("--images")
        .arg(dir)
        .arg("--labels")
        .arg(labels)
        .arg("--save")
        .arg(save)
        .args(extra)
        .env("KILN_AUTOTUNE", "off")
        .output()
        .unwrap();
    let (code, stdout, stderr) = common::text(&out);
    assert_eq!(code, 0, "fine-tuning failed: {stderr}");
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn fine_tuning_on_a_hundred_digits_of_a_new_writer_beats_the_original() {
    let original = common::trained("cnn");
    // the fixture trained on mnist10k's first 8,000 images; these come from its last 2,000
    let test = Dataset::load(DatasetKind::Mnist10k, Some(Path::new(DATA))).unwrap().test;
    let dir = common::scratch("fine_tune", "turned");
    let train = write_turned(&dir, &test, 0..100, "train.txt");
    let held_out = write_turned(&dir, &test, 1000..1300, "held_out.txt");
    let adapted = dir.join("adapted.safetensors");
    let report = fine_tune(&original, &dir, &train, &adapted, &[]);
    let (before, after) = (accuracy(&original, &dir, &held_out), accuracy(&adapted, &dir, &held_out));
    println!("300 held-out turned digits: original {before}, fine-tuned {after}; MNIST test after fine-tuning {}", report["test_accuracy"]);
    assert!(after > before + 0.2, "300 held-out turned digits: the original reads {before}, the fine-tuned model {after}");
    // MNIST mixed in: it still reads MNIST's test digits
    let mnist = report["test_accuracy"].as_f64().unwrap();
    assert!(mnist > 0.9, "MNIST test accuracy after fine-tuning: {mnist}");
    // a normal checkpoint of the same model, normalised as the original
    let (a, o) = (Checkpoint::load(&adapted).unwrap(), Checkpoint::load(&original).unwrap());
    assert_eq!((a.model, a.mean, a.std), (o.model, o.mean, o.std));
    assert_eq!(report["train_images"], 200, "100 of the folder's and as many of MNIST's (--mix-mnist 0.5)");
}

#[test]
fn freeze_features_trains_only_the_last_layer() {
    let original = common::trained("cnn");
    let test = Dataset::load(DatasetKind::Mnist10k, Some(Path::new(DATA))).unwrap().test;
    let dir = common::scratch("fine_tune", "frozen");
    let train = write_turned(&dir, &test, 0..50, "train.txt");
    let frozen = dir.join("frozen.safetensors");
    let report = fine_tune(&original, &dir, &train, &frozen, &["--freeze-features", "--epochs", "3", "--mix-mnist", "0"]);
    assert_eq!(report["train_images"], 50);
    let (f, o) = (Checkpoint::load(&frozen).unwrap(), Checkpoint::load(&original).unwrap());
    for ((name, _, new), (_, _, old)) in f.params.iter().zip(&o.params) {
        if name.starts_with("fc2.") {
            assert_ne!(new, old, "{name}: the last layer trains");
        } else {
            assert_eq!(new, old, "{name}: a frozen feature changed");
        }
    }
    // --init needs the folder; --model is the checkpoint's
    let refused = |args: &[&str]| {
        let out = Command::new(example("train_mnist")).args(["--dataset", "mnist10k", "--data-dir", DATA, "--no-save", "--init"]).arg(&original).args(args).output().unwrap();
        common::text(&out)
    };
    let (code, _, err) = refused(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--images"), "{err}");
    let (code, _, err) = refused(&["--images", dir.to_str().unwrap(), "--labels", train.to_str().unwrap(), "--model", "mlp"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--model") && err.contains("--init"), "{err}");
}
