//! The explain report (issue 12 §1): written for a trained CNN and MLP, the deletion test
//! shows the saliency is faithful, bad input exits 2. The input gradient itself is
//! checked in tests/layer_graph/input_gradient.rs.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use kiln::explain::{grad_cam, resize_bilinear};

use crate::common;
use crate::common::example;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(example(name)).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{name} {args:?}: {err}");
    out
}

fn explain(ck: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--model", ck.to_str().unwrap(), "--dataset", "mnist10k", "--data-dir", DATA, "--out", out.to_str().unwrap()];
    args.extend(extra);
    run("explain", &args)
}

#[test]
fn the_report_is_written_for_the_cnn_and_the_mlp_and_the_saliency_is_faithful() {
    let dir = common::scratch("explain", "report");
    for model in ["cnn", "mlp"] {
        let ck = common::trained(model);
        let out_dir = dir.join(format!("{model}-report"));
        let out = explain(&ck, &out_dir, &["--count", "4", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        let accuracy = json["accuracy"].as_f64().unwrap();
        assert!(accuracy > 0.85, "{model}: accuracy {accuracy}");
        let rows = json["deletion"].as_array().unwrap();
        assert_eq!(rows.iter().map(|r| r["fraction"].as_f64().unwrap()).collect::<Vec<_>>(), [0.05, 0.1, 0.2]);
        for r in rows {
            let (salient, random) = (r["salient_drop"].as_f64().unwrap(), r["random_drop"].as_f64().unwrap());
            // a faithful map: deleting the salient pixels costs far more than random ones
            assert!(salient > random + 0.05, "{model}: {r}");
        }
        let html = fs::read_to_string(out_dir.join("index.html")).unwrap();
        for section in ["<h2>Saliency", "deletion test", "<h2>Misclassified", "<h2>Confusion matrix"] {
            assert!(html.contains(section), "{model}: no '{section}' section");
        }
        let misclassified = json["misclassified"].as_u64().unwrap() as usize;
        assert!(html.contains(&format!("{misclassified} of 2000 test images are misclassified")), "{model}");
        let conv_sections = ["Grad-CAM on <code>relu2</code>", "<h2>First-layer filters", "<h2>Feature maps"];
        for s in conv_sections {
            assert_eq!(html.contains(s), model == "cnn", "{model}: section '{s}'");
        }
        let mut expected = vec!["index.html", "misclassified.png", "saliency-0.png", "saliency-3.png"];
        if model == "cnn" {
            expected.extend(["filters.png", "features-0-relu1.png", "features-1-relu2.png"]);
        }
        for f in expected {
            assert!(out_dir.join(f).is_file(), "{model}: {f} missing");
        }
        let png = image::open(out_dir.join("saliency-0.png")).unwrap();
        assert_eq!(png.width(), if model == "cnn" { 3 * 112 + 8 } else { 2 * 112 + 4 }, "{model}: panels");
    }
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let dir = common::scratch("explain", "bad");
    let not_a_model = dir.join("notes.safetensors");
    fs::write(&not_a_model, b"not a checkpoint").unwrap();
    let file = dir.join("file.txt");
    fs::write(&file, b"x").unwrap();
    let model = not_a_model.to_str().unwrap();
    let fresh = dir.join("fresh");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--model", model, "--out", dir.to_str().unwrap(), "--count", "0"], "--count"),
        (vec!["--model", model, "--out", dir.to_str().unwrap(), "--deletion-images", "-3"], "--deletion-images"),
        (vec!["--model", model, "--out", file.to_str().unwrap()], "expected a directory"),
        // a new folder: this one holds files explain did not write, which --out refuses
        (vec!["--model", model, "--out", fresh.to_str().unwrap()], "notes.safetensors"),
    ];
    for (args, needle) in cases {
        let out = run("explain", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
    }
    // too many digits for the split: checked once the split is known
    let ck = common::trained("mlp");
    let out = explain(&ck, &dir.join("r"), &["--count", "2001"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--count") && err.contains("1 to 2000"), "{err}");
}

#[test]
fn grad_cam_upsamples_like_pytorch_and_weights_channels_by_their_mean_gradient() {
    // F.interpolate([[0, 1], [2, 3]], size=4, mode="bilinear", align_corners=False)
    let up = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], (2, 2), (4, 4));
    let want = [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
    assert_eq!(up, want);
    // channel 0 has a positive mean gradient, channel 1 a negative one: the map is
    // ReLU(A0 - A1), scaled to a maximum of 1
    let a = [1.0, 3.0, 0.0, 2.0, /* channel 1 */ 2.0, 0.0, 0.0, 0.0];
    let da = [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0];
    assert_eq!(grad_cam(&a, &da, [2, 2, 2], (2, 2)), [0.0, 1.0, 0.0, 2.0 / 3.0]);
}
