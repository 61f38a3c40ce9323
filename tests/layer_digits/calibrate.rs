//! Confidence that means what it says (issue 30 §2): temperature scaling, the expected
//! calibration error, the error–rejection curve, and the temperature carried by checkpoints
//! and applied by `Classifier`.

use std::process::Command;

use kiln::calibrate::{self, fit_temperature, rejection_curve, reliability, retemper};
use kiln::checkpoint::Checkpoint;
use kiln::classify::CLASSES;
use kiln::testing::Rng;
use kiln::Classifier;

use crate::common::{self, example, text};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

/// A row of probabilities whose top class is `k` with probability `p`, the rest shared.
fn row(k: usize, p: f32) -> [f32; CLASSES] {
    std::array::from_fn(|i| if i == k { p } else { (1.0 - p) / (CLASSES - 1) as f32 })
}

#[test]
fn the_expected_calibration_error_of_a_hand_computed_case() {
    // Bins of 0.5 (2 bins): (0, 0.5] holds 0.3 (wrong) and 0.45 (right); (0.5, 1] holds 0.9
    // (right), 0.8 (wrong), 0.95 (right). Bin 1: confidence 0.375, accuracy 0.5;
    // bin 2: confidence 0.883.., accuracy 0.666..
    let probs = [row(1, 0.3), row(2, 0.45), row(3, 0.9), row(4, 0.8), row(5, 0.95)];
    let labels = [0, 2, 3, 0, 5];
    let r = reliability(&probs, &labels, 2);
    assert_eq!(r.bins.iter().map(|b| b.count).collect::<Vec<_>>(), [2, 3]);
    let b2_conf = (0.9 + 0.8 + 0.95) / 3.0;
    let want = 2.0 / 5.0 * (0.5f64 - 0.375).abs() + 3.0 / 5.0 * (2.0f64 / 3.0 - b2_conf).abs();
    assert!((r.ece - want).abs() < 1e-6, "ECE {} (want {want})", r.ece);
    // a confidence of exactly 0.5 is in the first bin (0, 0.5]
    assert_eq!(reliability(&[row(0, 0.5)], &[0], 2).bins[0].count, 1);
    // perfectly calibrated answers: ECE 0
    let fair: Vec<_> = (0..10).map(|_| row(0, 0.8)).collect();
    let labels: Vec<u8> = (0..10).map(|i| if i < 8 { 0 } else { 1 }).collect();
    assert!(reliability(&fair, &labels, 15).ece < 1e-6);
}

#[test]
fn the_error_rejection_curve_of_a_hand_computed_case() {
    // 10 answers, confidence rising with the index; the two least confident and the 6th are wrong
    let confidence: Vec<f32> = (0..10).map(|i| 0.5 + 0.05 * i as f32).collect();
    let correct: Vec<bool> = (0..10).map(|i| !matches!(i, 0 | 1 | 5)).collect();
    let curve = rejection_curve(&confidence, &correct, &[0.0, 0.1, 0.2, 0.5, 1.0]);
    let got: Vec<(usize, usize)> = curve.iter().map(|r| (r.accepted, r.errors)).collect();
    assert_eq!(got, [(10, 3), (9, 2), (8, 1), (5, 1), (0, 0)]);
    assert!((curve[0].error_rate - 0.3).abs() < 1e-12 && (curve[2].error_rate - 0.125).abs() < 1e-12);
    assert!((curve[1].threshold - 0.55).abs() < 1e-6, "{}", curve[1].threshold);
    assert_eq!(curve[4].threshold, 1.0);
}

#[test]
fn the_fitted_temperature_is_the_one_the_labels_were_drawn_with() {
    // labels drawn from softmax(z / 2.5): the NLL's minimum is near T = 2.5
    let mut rng = Rng::new(5);
    let (mut logits, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..20_000 {
        let z: [f32; CLASSES] = std::array::from_fn(|_| 8.0 * rng.unit() as f32);
        let p = kiln::cpu::softmax::softmax_forward(&z, CLASSES, 2.5);
        let u = rng.unit() as f32;
        let mut acc = 0.0;
        let y = p.iter().position(|&q| { acc += q; u < acc }).unwrap_or(CLASSES - 1);
        logits.push(z);
        labels.push(y as u8);
    }
    let t = fit_temperature(&logits, &labels).unwrap();
    assert!((t - 2.5).abs() < 0.1, "fitted T = {t}");
    // the NLL at the fitted T is below its neighbours'
    let at = |t: f64| calibrate::nll(&logits, &labels, t);
    assert!(at(t as f64) < at(t as f64 * 1.1) && at(t as f64) < at(t as f64 / 1.1));
    assert!(fit_temperature(&[], &[]).is_err());
    assert!(fit_temperature(&logits[..1], &[10]).is_err());
}

#[test]
fn probabilities_read_at_one_temperature_re_read_at_another() {
    let z: Vec<f32> = Rng::new(3).vec(3 * CLASSES).iter().map(|v| 6.0 * v).collect();
    let at = |t: f32| -> Vec<[f32; CLASSES]> {
        kiln::cpu::softmax::softmax_forward(&z, CLASSES, t).chunks(CLASSES).map(|r| r.try_into().unwrap()).collect()
    };
    for (got, want) in retemper(&at(0.7), 0.7, 1.0).iter().flatten().zip(at(1.0).iter().flatten()) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn a_checkpoints_temperature_is_saved_applied_by_the_classifier_and_checked_on_load() {
    let gpu = kiln::testing::gpu();
    let plain = Checkpoint::load(&common::trained("cnn")).unwrap();
    assert_eq!(plain.temperature, 1.0, "an uncalibrated fixture");
    let dir = common::scratch("calibrate", "temperature");
    let path = dir.join("hot.safetensors");
    Checkpoint { temperature: 2.0, ..plain.clone() }.save(&path).unwrap();
    let hot = Checkpoint::load(&path).unwrap();
    assert_eq!(hot.temperature, 2.0);
    // the classifier's probabilities are softmax(logits / T), the logits unchanged
    let inputs: Vec<f32> = Rng::new(1).vec(3 * 784);
    let mut c = Classifier::new(gpu, hot, 3).unwrap();
    let logits = c.logits_tensor(&inputs).unwrap();
    let probs = c.classify_tensor(&inputs).unwrap();
    let mut p1 = Classifier::new(gpu, plain.clone(), 3).unwrap();
    assert_eq!(p1.logits_tensor(&inputs).unwrap(), logits, "the temperature changed the logits");
    for (l, p) in logits.iter().zip(&probs) {
        let want = kiln::cpu::softmax::softmax_forward(l, CLASSES, 2.0);
        for (a, b) in p.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{p:?} vs {want:?}");
        }
    }
    // a temperature that is no temperature is refused on load, naming the file
    for bad in ["0", "-1", "NaN", "inf", "warm"] {
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(15).position(|w| w == b"\"temperature\":\"").unwrap() + 15;
        let end = at + bytes[at..].iter().position(|&b| b == b'"').unwrap();
        // same length, so the header's size still holds: pad with spaces inside the value
        let mut value = bad.as_bytes().to_vec();
        if value.len() > end - at {
            continue;
        }
        value.resize(end - at, b' ');
        bytes.splice(at..end, value);
        let e = Checkpoint::from_bytes(&bytes, &path).err().unwrap_or_else(|| panic!("temperature {bad:?} loaded")).to_string();
        assert!(e.contains("hot.safetensors") && e.contains("temperature"), "{e}");
    }
}

#[test]
fn train_mnist_calibrate_refuses_what_it_cannot_do_before_training() {
    let dir = common::scratch("calibrate", "flags");
    let save = dir.join("m.safetensors");
    for (args, want) in [
        (vec!["--calibrate", "0"], "--calibrate"),
        (vec!["--calibrate", "100", "--stop-after", "1", "--epochs", "2"], "--stop-after"),
        (vec!["--calibrate", "9000"], "8000"),
    ] {
        let out = Command::new(example("train_mnist"))
            .args(["--dataset", "mnist10k", "--data-dir", DATA, "--quiet", "--save", save.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let (code, _, err) = text(&out);
        assert!(code == 2 && err.contains(want), "{args:?}: exit {code}: {err}");
        assert!(!save.exists(), "{args:?} wrote a checkpoint");
    }
}

#[test]
fn evaluate_reports_the_calibration_and_the_rejection_curve() {
    let out = Command::new(example("evaluate"))
        .args(["--model", common::trained("cnn").to_str().unwrap(), "--dataset", "mnist10k", "--data-dir", DATA, "--json"])
        .output()
        .unwrap();
    let (code, stdout, err) = text(&out);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let c = &json["calibration"];
    assert_eq!(c["temperature"], 1.0);
    assert_eq!(c["before"]["bins"].as_array().unwrap().len(), calibrate::BINS);
    // uncalibrated: before and after are the same model's
    assert!((c["before"]["ece"].as_f64().unwrap() - c["after"]["ece"].as_f64().unwrap()).abs() < 1e-4, "{c}");
    let curve = c["rejection"].as_array().unwrap();
    assert_eq!(curve.iter().map(|r| r["rejected"].as_f64().unwrap()).collect::<Vec<_>>(), calibrate::REJECTED);
    assert_eq!(curve[0]["accepted"], 2000);
    let errors: Vec<f64> = curve.iter().map(|r| r["error_rate"].as_f64().unwrap()).collect();
    assert!(errors.windows(2).all(|w| w[1] <= w[0] + 0.005), "rejecting the least confident should not raise the error much: {errors:?}");
    assert!(errors[4] < errors[0], "{errors:?}");
}

#[test]
fn train_mnist_calibrate_stores_the_fitted_temperature() {
    let dir = common::scratch("calibrate", "fit");
    let save = dir.join("m.safetensors");
    let out = Command::new(example("train_mnist"))
        .args(["--dataset", "mnist10k", "--data-dir", DATA, "--model", "mlp", "--epochs", "1", "--train-limit", "500", "--calibrate", "500"])
        .args(["--save", save.to_str().unwrap()])
        .env("KILN_AUTOTUNE", "off")
        .output()
        .unwrap();
    let (code, stdout, err) = text(&out);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("fitted on the 500 held-out training images"), "{stdout}");
    let t = Checkpoint::load(&save).unwrap().temperature;
    assert!(t.is_finite() && t > 0.0 && t != 1.0, "temperature {t}");
}
