//! The application's pieces: checkpoints, image preprocessing, and the train_mnist CLI's
//! handling of bad input (clear message, exit code 2, no panic, no checkpoint written).

use std::path::Path;
use std::process::Command;

use kiln::checkpoint::Checkpoint;
use kiln::nn::ModelKind;

use crate::common;
use crate::common::example;


fn mlp_checkpoint() -> Checkpoint {
    let model = ModelKind::Mlp.build(1, 3).unwrap();
    let params = model.graph.params().iter().enumerate().map(|(i, (_, n, s))| (n.to_string(), s.to_vec(), vec![i as f32; s.iter().product()])).collect();
    Checkpoint { model: ModelKind::Mlp.spec(), mean: 0.13, std: 0.31, dataset: "mnist10k".into(), temperature: 1.0, deskew: false, params }
}

#[test]
fn checkpoints_round_trip_with_pytorch_names() {
    let dir = std::env::temp_dir().join(format!("kiln-ck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let ck = mlp_checkpoint();
    ck.save(&path).unwrap();
    let back = Checkpoint::load(&path).unwrap();
    assert_eq!(back, ck);
    let names: Vec<_> = back.params.iter().map(|p| (p.0.as_str(), p.1.clone())).collect();
    assert_eq!(names, [("fc1.weight", vec![512, 784]), ("fc1.bias", vec![512]), ("fc2.weight", vec![10, 512]), ("fc2.bias", vec![10])]);
    // a checkpoint missing a tensor is explained
    let mut short = ck.clone();
    short.params.pop();
    short.save(&path).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("fc2.bias"), "{err}");
    // not a checkpoint at all
    std::fs::write(&path, b"hello").unwrap();
    assert!(Checkpoint::load(&path).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saving_into_a_missing_directory_fails_and_leaves_nothing() {
    let path = Path::new("/nonexistent-kiln-dir/m.safetensors");
    let err = mlp_checkpoint().save(path).unwrap_err().to_string();
    assert!(err.contains("/nonexistent-kiln-dir/m.safetensors"), "{err}");
    assert!(!path.exists());
}

#[test]
fn preprocessing_crops_scales_and_centres_like_mnist() {
    // a dark '7'-ish stroke on light paper, off-centre in a large image
    let mut img = image::GrayImage::from_pixel(120, 90, image::Luma([230]));
    for x in 70..110 {
        for y in 10..16 {
            img.put_pixel(x, y, image::Luma([20]));
        }
    }
    for i in 0..60 {
        for w in 0..6 {
            img.put_pixel(105 - i / 2 + w, 16 + i, image::Luma([20]));
        }
    }
    let path = std::env::temp_dir().join(format!("kiln-digit-{}.png", std::process::id()));
    img.save(&path).unwrap();
    let gray = kiln::predict::load_gray(&path).unwrap();
    assert!(gray.get_pixel(0, 0)[0] < 50, "light background must be inverted");
    let out = kiln::predict::to_mnist(&gray, &path).unwrap();
    assert_eq!(out.dimensions(), (28, 28));
    let ((cx, cy), side) = common::centre_and_box(&out);
    assert!((cx - 14.0).abs() < 1.5 && (cy - 14.0).abs() < 1.5, "centre of mass {cx} {cy}");
    assert!(side <= 21, "ink box side {side}");
    let blank = image::GrayImage::from_pixel(40, 40, image::Luma([200]));
    let err = kiln::predict::to_mnist(&kiln::predict::load_gray_from(blank), &path).unwrap_err().to_string();
    assert!(err.contains("no ink"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

fn train(args: &[&str]) -> (i32, String) {
    let out = Command::new(example("train_mnist")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn train_mnist_rejects_bad_input_with_exit_code_2() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
    let save = std::env::temp_dir().join(format!("kiln-never-{}.safetensors", std::process::id()));
    let save = save.to_str().unwrap();
    let base = ["--dataset", "mnist10k", "--data-dir", data, "--quiet", "--save", save];
    for (extra, expect) in [
        (vec!["--epochs", "0"], "--epochs"),
        (vec!["--batch-size", "0"], "--batch-size"),
        (vec!["--batch-size", "9000"], "--batch-size"),
        (vec!["--optimizer", "rmsprop"], "--optimizer"),
        (vec!["--min-accuracy", "7"], "--min-accuracy"),
        (vec!["--lr-schedule", "linear"], "--lr-schedule"),
        (vec!["--lr-hold", "1.5"], "--lr-hold"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let (code, stderr) = train(&args);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(expect) && !stderr.contains("panicked"), "{extra:?}: {stderr}");
    }
    // conv1's output for a batch of 8,000: more than lavapipe's 128 MiB binding limit
    let bytes = 8000 * 16 * 28 * 28 * 4;
    let args: Vec<&str> = base.iter().copied().chain(["--epochs", "1", "--batch-size", "8000"]).collect();
    let (code, stderr) = train(&args);
    if bytes > kiln::testing::gpu().limits().max_storage_buffer_binding_size {
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("--batch-size 8000") && stderr.contains("the largest batch that fits is"), "{stderr}");
    } else {
        assert_eq!(code, 0, "a batch this adapter can bind trains: {stderr}");
        std::fs::remove_file(save).unwrap();
    }
    let (code, stderr) = train(&["--dataset", "mnist10k", "--data-dir", data, "--save", "/nonexistent-kiln/m.safetensors"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--save"), "{stderr}");
    let (code, stderr) = train(&["--dataset", "mnist", "--data-dir", "/nonexistent-kiln-data", "--no-download", "--save", save]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nonexistent-kiln-data") && !stderr.contains("panicked"), "{stderr}");
    assert!(!Path::new(save).exists(), "no checkpoint after a failed run");
}

#[test]
fn a_diverging_loss_stops_training_naming_epoch_and_step() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
    let save = std::env::temp_dir().join(format!("kiln-diverged-{}.safetensors", std::process::id()));
    let args = ["--dataset", "mnist10k", "--data-dir", data, "--model", "mlp", "--epochs", "2", "--optimizer", "sgd"];
    let tail = ["--lr", "1e9", "--progress-every", "20", "--save", save.to_str().unwrap()];
    let (code, stderr) = train(&args.iter().chain(&tail).copied().collect::<Vec<_>>());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("epoch 1, step 20") && stderr.contains("--lr") && !stderr.contains("panicked"), "{stderr}");
    assert!(!save.exists(), "no checkpoint of a diverged run");
}

#[test]
fn the_training_curve_is_a_png() {
    let epochs: Vec<_> = (1..=3)
        .map(|e| kiln::train::EpochReport {
            epoch: e,
            train_loss: 1.0 / e as f32,
            train_accuracy: 0.9,
            test_loss: 0.8 / e as f32,
            test_accuracy: 0.9 + 0.02 * e as f32,
            train_seconds: 1.0,
            images_per_sec: 1.0,
            eval_seconds: 0.1,
        })
        .collect();
    let path = std::env::temp_dir().join(format!("kiln-curve-{}.png", std::process::id()));
    let curve: Vec<(f64, f32)> = (1..=6).map(|i| (i as f64 / 2.0, 1.0 / i as f32)).collect();
    kiln::plot::plot_curve(&path, &epochs, &curve).expect("plot (needs a TTF font: fonts-dejavu-core or KILN_FONT)");
    let img = image::open(&path).unwrap();
    assert_eq!((img.width(), img.height()), (1000, 400));
    std::fs::remove_file(&path).unwrap();
}
