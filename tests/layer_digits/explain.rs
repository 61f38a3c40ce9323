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

/// `explain --strings` (issue 30 §4) on 40 generated fields (20 touching, 20 zip) whose
/// labels are true except for three fields the reader reads right, relabelled with one
/// digit changed (a digit wrong), one appended (a merge) and one dropped (a split): the
/// report lists exactly the fields whose reading (by the test's own `Reader`) differs from
/// the label, with their kinds; the pictures have the sizes of their fields and digits, the
/// last box is drawn where the reader put it in its mark's colour, and each digit's saliency
/// is for the class read on the image the reader classified.
#[test]
fn explain_strings_lists_exactly_the_misread_fields_and_draws_them() {
    use kiln::data::{Dataset, DatasetKind};
    use kiln::explain::strings::{self, ErrorKind, Mark};
    use kiln::read::{Options, Reader};
    use kiln::string_sets::{self, StringKind};

    let dir = common::scratch("explain", "strings");
    let fields_dir = dir.join("fields");
    fs::create_dir_all(&fields_dir).unwrap();
    let test = Dataset::load(DatasetKind::Mnist10k, Some(Path::new(DATA))).unwrap().test;
    let mut fields = Vec::new();
    for (kind, prefix) in [(StringKind::Touching, "t"), (StringKind::Zip, "z")] {
        let set = string_sets::generate(kind, &test, string_sets::SEED);
        for (name, text, img) in set.fields.into_iter().take(20) {
            let path = fields_dir.join(format!("{prefix}{name}"));
            img.save(&path).unwrap();
            fields.push((path, text));
        }
    }
    let ck = common::trained("cnn");
    let gpu = kiln::testing::gpu();
    let checkpoint = kiln::checkpoint::Checkpoint::load(&ck).unwrap();
    let mut reader = Reader::new(kiln::Classifier::new(gpu, checkpoint.clone(), kiln::classify::DEFAULT_BATCH).unwrap(), Options::default());
    let images: Vec<_> = fields.iter().map(|(p, _)| kiln::predict::load_gray(p).unwrap()).collect();
    let readings = reader.read(&images).unwrap();
    drop(reader);
    let read: Vec<String> = readings.iter().map(|r| r.text.clone()).collect();
    // relabel three fields read right (at least two digits long)
    let right: Vec<usize> = (0..fields.len()).filter(|&i| read[i] == fields[i].1 && read[i].len() >= 2).take(3).collect();
    assert_eq!(right.len(), 3, "the 1-epoch CNN reads at least 3 of these 40 fields right: {read:?}");
    let flip = |c: u8| char::from(b'0' + (c - b'0' + 1) % 10);
    let t = &mut fields[right[0]].1;
    *t = format!("{}{}", flip(t.as_bytes()[0]), &t[1..]);
    fields[right[1]].1.push('7');
    fields[right[2]].1.pop();
    let labels: String = fields.iter().map(|(p, t)| format!("{} {t}\n", p.file_name().unwrap().to_str().unwrap())).collect();
    let labels_file = dir.join("labels.txt");
    fs::write(&labels_file, labels).unwrap();
    let expected: Vec<usize> = (0..fields.len()).filter(|&i| read[i] != fields[i].1).collect();
    assert!(expected.len() >= 3);

    let out_dir = dir.join("report");
    let out = run("explain", &["--model", ck.to_str().unwrap(), "--strings", fields_dir.to_str().unwrap(), "--labels", labels_file.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--count", "3", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["fields"], 40);
    let listed = json["misread"].as_array().unwrap();
    let names = |v: &serde_json::Value| v["path"].as_str().unwrap().to_string();
    assert_eq!(listed.iter().map(names).collect::<Vec<_>>(), expected.iter().map(|&i| fields[i].0.display().to_string()).collect::<Vec<_>>());
    for (m, &i) in listed.iter().zip(&expected) {
        assert_eq!((m["label"].as_str().unwrap(), m["read"].as_str().unwrap()), (fields[i].1.as_str(), read[i].as_str()));
        let kind = match read[i].len().cmp(&fields[i].1.len()) {
            std::cmp::Ordering::Equal => "wrong_digit",
            std::cmp::Ordering::Greater => "split",
            std::cmp::Ordering::Less => "merge",
        };
        assert_eq!(m["kind"], kind, "{m}");
    }
    let kind_of = |i: usize| listed[expected.iter().position(|&e| e == i).unwrap()]["kind"].clone();
    assert_eq!([kind_of(right[0]), kind_of(right[1]), kind_of(right[2])], ["wrong_digit", "merge", "split"]);
    assert_eq!(json["shown"], 3);

    // the pictures: field k scaled under the label band (two rows of 10-pixel text: 28 pixels), one framed column per digit read
    for (k, (m, &i)) in listed.iter().zip(&expected).take(3).enumerate() {
        let (w, h) = images[i].dimensions();
        let s = (112 / h).clamp(1, 4);
        let png = image::open(out_dir.join(format!("string-{k}.png"))).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (w * s, 28 + h * s), "string-{k}.png");
        let (label, text) = (m["label"].as_str().unwrap(), m["read"].as_str().unwrap());
        let n = text.len() as u32;
        let digits = image::open(out_dir.join(format!("string-{k}-digits.png"))).unwrap();
        // 84-pixel panels (28 x 3): digit, saliency, Grad-CAM; a 3-pixel frame; 6 pixels apart
        assert_eq!((digits.width(), digits.height()), (n * 90 + (n - 1) * 6, 3 * 84 + 6), "string-{k}-digits.png");
        let (marks, _) = strings::marks(label, text);
        let colour = match marks.last().unwrap() {
            Mark::Right => [40, 190, 60],
            Mark::Wrong { .. } => [235, 40, 40],
            Mark::Extra => [255, 150, 0],
        };
        let b = readings[i].digits.last().unwrap().bbox;
        assert_eq!(png.get_pixel(b.x0 * s, 28 + b.y0 * s).0, colour, "string-{k}.png: the last box's corner");
    }
    let html = fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(html.contains(&format!("misread: {} of 40 fields", expected.len())), "{html}");

    // the library: every digit of the fields shown explained for the class read, on the
    // image the reader classified (the same probability)
    let summary = strings::explain_strings(gpu, checkpoint, &fields, 2, &dir.join("lib-report"), "test").unwrap();
    assert_eq!(summary.misread.len(), expected.len());
    assert_eq!(summary.count(ErrorKind::WrongDigit) + summary.count(ErrorKind::Split) + summary.count(ErrorKind::Merge), expected.len());
    assert_eq!(summary.shown.len(), 2);
    for s in &summary.shown {
        assert_eq!(s.explanations.len(), s.reading.digits.len());
        for (d, e) in s.reading.digits.iter().zip(&s.explanations) {
            assert_eq!((e.class, e.saliency.len(), d.input.dimensions()), (d.label as usize, 28 * 28, (28, 28)));
            assert!(e.saliency.iter().any(|&v| v != 0.0));
            assert!((e.probs[e.class] - d.top3[0].1).abs() < 1e-4, "{} vs {}", e.probs[e.class], d.top3[0].1);
        }
    }
}

#[test]
fn explain_strings_bad_input_exits_2_naming_the_flag() {
    let dir = common::scratch("explain", "strings-bad");
    let ck = common::trained("cnn");
    let ck = ck.to_str().unwrap();
    let labels = dir.join("labels.txt");
    fs::write(&labels, "a.png 12\n").unwrap();
    let bad_labels = dir.join("bad.txt");
    fs::write(&bad_labels, "# fields\na.png 1x\n").unwrap();
    fs::write(dir.join("a.png"), b"not a png").unwrap();
    let (d, l, b, out) = (dir.to_str().unwrap(), labels.to_str().unwrap(), bad_labels.to_str().unwrap(), dir.join("out"));
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--strings", "/nonexistent-fields", "--labels", l], vec!["--strings", "/nonexistent-fields"]),
        (vec!["--strings", d, "--labels", "/nonexistent.txt"], vec!["--labels", "/nonexistent.txt"]),
        (vec!["--strings", d, "--labels", b], vec!["--labels", "bad.txt", "line 2"]),
        (vec!["--strings", d], vec!["--labels"]),
        (vec!["--strings", d, "--labels", l, "--dataset", "mnist"], vec!["--dataset"]),
        (vec!["--strings", d, "--labels", l, "--count", "0"], vec!["--count"]),
        // the field itself is not an image: named, and not blamed on --out
        (vec!["--strings", d, "--labels", l], vec!["a.png", "PNG or JPEG"]),
    ];
    for (args, needles) in cases {
        let mut all = vec!["--model", ck, "--out", out];
        all.extend(&args);
        let o = run("explain", &all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
        }
        if args.len() == 4 && args[3] == l && args[1] == d {
            assert!(!err.contains("--out"), "{args:?}: {err}");
        }
    }
}
