//! Scarce data (`--train-limit`): the class-balanced subset on the real MNIST labels, the
//! refusals, the one-cycle schedule, a resumable config from before the flag, and a tiny
//! run end to end on mnist10k.

use std::process::Command;

use kiln::data::balanced_subset;
use kiln::data::mnist::{Dataset, DatasetKind};
use kiln::nn::ModelKind;
use kiln::ops::optim::{Rule, Schedule};
use kiln::train::{LrSchedule, TrainConfig};

use crate::common;
use crate::common::example;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

fn mnist10k() -> Dataset {
    Dataset::load(DatasetKind::Mnist10k, Some(DATA.as_ref())).unwrap_or_else(|e| panic!("the MNIST test files are needed here: {e}"))
}

fn per_class(labels: &[u8], pick: &[u32]) -> [usize; 10] {
    let mut c = [0; 10];
    for &i in pick {
        c[labels[i as usize] as usize] += 1;
    }
    c
}

#[test]
fn the_subset_is_class_balanced_seeded_and_deterministic() {
    let data = mnist10k();
    let labels = &data.train.labels; // 8,000 labels, classes of unequal sizes
    for (n, want) in [(10, [1; 10]), (100, [10; 10]), (1003, [101, 101, 101, 100, 100, 100, 100, 100, 100, 100])] {
        let pick = balanced_subset(labels, n, 1).unwrap();
        assert_eq!(per_class(labels, &pick), want, "{n} labels");
        assert!(pick.windows(2).all(|w| w[0] < w[1]), "{n}: ascending and distinct");
        assert_eq!(pick, balanced_subset(labels, n, 1).unwrap(), "{n}: the same seed gives the same subset");
        assert_ne!(pick, balanced_subset(labels, n, 2).unwrap(), "{n}: another seed gives another subset");
    }
    let small = balanced_subset(labels, 100, 4).unwrap();
    let large = balanced_subset(labels, 1000, 4).unwrap();
    assert!(small.iter().all(|i| large.contains(i)), "for one seed, 100 labels are among the 1,000");
    // the subset split holds those images and labels
    let sub = data.train.balanced(100, 4).unwrap();
    assert_eq!((sub.len(), sub.images.count), (100, 100));
    for (k, &i) in small.iter().enumerate() {
        assert_eq!(sub.images.image(k), data.train.images.image(i as usize));
        assert_eq!(sub.labels[k], labels[i as usize]);
    }
}

fn train(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(example("train_mnist"))
        .args(["--dataset", "mnist10k", "--data-dir", DATA, "--no-save"])
        .args(args)
        .env("KILN_AUTOTUNE", "off")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn train_limit_zero_or_above_the_split_exits_2_naming_the_flag_and_range() {
    for (limit, range) in [("0", "from 1 to the training split's size"), ("8001", "from 1 to 8000")] {
        let (code, stdout, stderr) = train(&["--train-limit", limit]);
        assert_eq!(code, 2, "--train-limit {limit}: {stderr}");
        assert!(stderr.contains("--train-limit") && stderr.contains(range), "--train-limit {limit}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!stdout.contains("adapter:"), "refused before the GPU is opened: {stdout}");
    }
    let (code, _, stderr) = train(&["--train-limit", "-3"]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = train(&["--lr-schedule", "onecycle", "--warmup", "1"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--warmup"), "{stderr}");
}

#[test]
fn a_tiny_train_limit_run_works_end_to_end() {
    // 20 images (2 per class) with the default batch 64: the batch becomes 20, one step per
    // epoch; evaluated on all 2,000 test images once, at the end
    let (code, stdout, stderr) = train(&[
        "--train-limit", "20", "--epochs", "4", "--eval-every", "10", "--augment", "--lr-schedule", "onecycle", "--json", "--quiet",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["train_images"], 20);
    assert_eq!(json["batch_size"], 20);
    assert_eq!(json["test_images"], 2000);
    assert_eq!(json["steps"], 4);
    let accuracy = json["test_accuracy"].as_f64().unwrap();
    assert!(accuracy.is_finite() && accuracy > 0.0, "{accuracy}");
}

#[test]
fn a_resumed_train_limit_run_with_augmentation_is_bit_identical() {
    let dir = common::scratch("scarce", "resume");
    let p = |n: &str| dir.join(format!("{n}.safetensors")).display().to_string();
    let run = |extra: &[&str]| {
        let out = Command::new(example("train_mnist"))
            .args(["--data-dir", DATA, "--quiet", "--eval-every", "10"])
            .args(extra)
            .env("KILN_AUTOTUNE", "off")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let flags = ["--dataset", "mnist10k", "--train-limit", "50", "--batch-size", "32", "--epochs", "3", "--augment", "--lr-schedule", "onecycle", "--seed", "5"];
    run(&[&flags[..], &["--save", &p("a")]].concat());
    run(&[&flags[..], &["--stop-after", "1", "--save", &p("b")]].concat());
    run(&["--resume", &p("b"), "--save", &p("c")]);
    assert_eq!(std::fs::read(p("a")).unwrap(), std::fs::read(p("c")).unwrap(), "the resumed run's checkpoint differs");
}

#[test]
fn one_cycle_warms_up_linearly_then_anneals_to_zero() {
    let s = Schedule::one_cycle(0.25, 100).unwrap();
    assert_eq!(s, Schedule::OneCycle { warmup: 25, total: 100 });
    assert!((s.factor(0) - 0.04).abs() < 1e-12);
    assert!((s.factor(12) - (0.04 + 0.96 * 12.0 / 25.0)).abs() < 1e-12);
    assert_eq!(s.factor(25), 1.0);
    assert!((s.factor(25 + 75 / 2) - 0.5).abs() < 0.03);
    assert_eq!(s.factor(100), 0.0);
    assert_eq!(s.factor(1000), 0.0);
    for bad in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(Schedule::one_cycle(bad, 100).unwrap_err().to_string().contains("Schedule::warmup"));
    }
}

#[test]
fn a_train_state_from_before_train_limit_still_loads() {
    let cfg = TrainConfig {
        dataset: DatasetKind::Mnist10k,
        data_dir: None,
        download: false,
        model: ModelKind::Cnn.spec(),
        epochs: 2,
        batch_size: 64,
        rule: Rule::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
        lr_schedule: LrSchedule::OneCycle { warmup: 0.3 },
        label_smoothing: 0.0,
        seed: 1,
        augment: kiln::train::Augment::Affine,
        train_limit: Some(100),
        normalisation: None,
        freeze_features: false,
        deskew: false,
        eval_every: 1,
        progress_every: 0,
        gemm: None,
    };
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["train_limit"], 100);
    let back: TrainConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back.train_limit, Some(100));
    let mut old = json;
    old.as_object_mut().unwrap().remove("train_limit");
    let back: TrainConfig = serde_json::from_value(old).unwrap();
    assert_eq!(back.train_limit, None, "a state written before --train-limit trains on the whole split");
    assert_eq!(json_augment(&cfg, serde_json::json!(true)), kiln::train::Augment::Affine, "a state from before the levels: --augment");
    assert_eq!(json_augment(&cfg, serde_json::json!(false)), kiln::train::Augment::Off);
    assert_eq!(json_augment(&cfg, serde_json::json!("robust")), kiln::train::Augment::Robust);
    assert!(TrainConfig { train_limit: Some(0), ..cfg }.check().unwrap_err().to_string().contains("TrainConfig::train_limit"));
}

/// `cfg` read back from JSON whose `augment` is `value`.
fn json_augment(cfg: &TrainConfig, value: serde_json::Value) -> kiln::train::Augment {
    let mut json = serde_json::to_value(cfg).unwrap();
    json["augment"] = value;
    serde_json::from_value::<TrainConfig>(json).unwrap().augment
}
