//! Hardening III: the programs' files and streams. Nothing is overwritten that a program did
//! not write, a lost answer is an error, and odd files (a FIFO, a directory, a BOM) are named
//! for what they are. Each test reproduces one item of the issue.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::checkpoint::Checkpoint;
use kiln::nn::ModelKind;

use crate::common;
use crate::common::example;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

/// explain of the MLP fixture into `out`, on as few digits as it takes.
fn explain(out: &Path) -> (i32, String, String) {
    let ck = common::trained("mlp");
    let o = Command::new(example("explain"))
        .args(["--model", ck.to_str().unwrap(), "--dataset", "mnist10k", "--data-dir", DATA, "--count", "1", "--deletion-images", "1", "--out"])
        .arg(out)
        .output()
        .unwrap();
    let t = common::text(&o);
    assert!(!t.2.contains("panicked"), "{}", t.2);
    t
}

// 1. explain replaces only the files of an earlier report, and checks every target first.
#[test]
fn explain_refuses_a_folder_it_did_not_write_and_checks_before_writing() {
    let dir = common::scratch("hardening_io", "explain");
    // a folder of the user's, holding files named as the report's
    let theirs = dir.join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::write(theirs.join("index.html"), "my page").unwrap();
    fs::write(theirs.join("saliency-0.png"), "my picture").unwrap();
    let (code, _, err) = explain(&theirs);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--out") && err.contains("not an earlier explain report"), "{err}");
    assert_eq!(fs::read_to_string(theirs.join("index.html")).unwrap(), "my page");
    assert_eq!(fs::read_to_string(theirs.join("saliency-0.png")).unwrap(), "my picture");

    // a fresh folder, then the same folder again: the earlier report is replaced
    let report = dir.join("report");
    let (code, _, err) = explain(&report);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = explain(&report);
    assert_eq!(code, 0, "{err}");
    assert!(report.join("index.html").is_file() && report.join("saliency-0.png").is_file());

    // an empty folder is fine
    let empty = dir.join("empty");
    fs::create_dir(&empty).unwrap();
    assert_eq!(explain(&empty).0, 0);

    // the report's index.html became a link: refused before any PNG is written
    let elsewhere = dir.join("elsewhere.html");
    fs::write(&elsewhere, "not the report's").unwrap();
    fs::remove_file(report.join("index.html")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, report.join("index.html")).unwrap();
    let before = fs::metadata(report.join("saliency-0.png")).unwrap().ino();
    let (code, _, err) = explain(&report);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("index.html") && err.contains("symbolic link"), "{err}");
    assert_eq!(fs::metadata(report.join("saliency-0.png")).unwrap().ino(), before, "a PNG was written before the refusal");
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "not the report's");
}

/// A dark vertical stroke on light paper: a one.
fn digit_png(path: &Path) {
    let mut img = image::GrayImage::from_pixel(40, 40, image::Luma([235]));
    for y in 6..34 {
        for x in 18..22 {
            img.put_pixel(x, y, image::Luma([15]));
        }
    }
    img.save(path).unwrap();
}

// 8. predict's and evaluate's printed answer is their product: losing it is an error.
#[test]
fn a_lost_answer_exits_2() {
    let dir = common::scratch("hardening_io", "lost");
    let one = dir.join("one.png");
    digit_png(&one);
    let ck = common::trained("mlp");
    let full = || fs::File::create("/dev/full").unwrap();
    let predict = Command::new(example("predict")).arg("--model").arg(&ck).arg(&one).stdout(full()).output().unwrap();
    let evaluate = Command::new(example("evaluate"))
        .arg("--model")
        .arg(&ck)
        .args(["--dataset", "mnist10k", "--data-dir", DATA])
        .stdout(full())
        .output()
        .unwrap();
    for (name, out) in [("predict", predict), ("evaluate", evaluate)] {
        let (code, _, err) = common::text(&out);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains("standard output") && err.contains("answer was not written"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn evaluate_folder(images: &Path, labels: &Path) -> (i32, String, String) {
    let ck = common::trained("mlp");
    let o = Command::new(example("evaluate")).arg("--model").arg(&ck).arg("--images").arg(images).arg("--labels").arg(labels).output().unwrap();
    common::text(&o)
}

/// DIR/images holding two ones, a.png and b.png, and DIR/labels.txt holding `labels`.
fn two_ones(dir: &Path, labels: &str) -> (PathBuf, PathBuf) {
    let images = dir.join("images");
    fs::create_dir(&images).unwrap();
    digit_png(&images.join("a.png"));
    digit_png(&images.join("b.png"));
    let path = dir.join("labels.txt");
    fs::write(&path, labels).unwrap();
    (images, path)
}

/// A checkpoint of `kind` with constant weights, said to be trained on `dataset`.
fn checkpoint(kind: ModelKind, dataset: &str, path: &Path) {
    let params = kind.build(1, 0).unwrap().graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.01; s.iter().product()])).collect();
    Checkpoint { model: kind.spec(), mean: 0.13, std: 0.31, dataset: dataset.into(), temperature: 1.0, deskew: false, params }.save(path).unwrap();
}

// 12. A labels file may start with a UTF-8 BOM; an entry that is not an image file is named
// for what it is.
#[test]
fn labels_with_a_bom_are_read_and_odd_entries_are_named() {
    let dir = common::scratch("hardening_io", "labels");
    let (images, labels) = two_ones(&dir, "\u{feff}a.png 1\nb.png 1\n");
    let (code, _, err) = evaluate_folder(&images, &labels);
    assert_eq!(code, 0, "{err}");

    fs::create_dir(images.join("sub")).unwrap();
    std::os::unix::fs::symlink("loop", images.join("loop")).unwrap();
    mkfifo(&images.join("fifo"));
    fs::write(&labels, "a.png 1\nsub 1\nloop 2\nfifo 3\ngone.png 4\n").unwrap();
    let (code, _, err) = evaluate_folder(&images, &labels);
    assert_eq!(code, 2, "{err}");
    for said in ["line 2: 'sub' is a directory", "line 3: 'loop' is a symbolic link", "line 4: 'fifo' is a FIFO", "line 5: 'gone.png' is not there"] {
        assert!(err.contains(said), "'{said}' not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

// 11. A FIFO among predict's images is reported, not opened: opening one blocks until a
// writer comes, and every other answer waited with it.
#[test]
fn a_fifo_among_predicts_images_is_refused_not_waited_on() {
    let dir = common::scratch("hardening_io", "fifo");
    let (a, fifo, b) = (dir.join("a.png"), dir.join("pipe.png"), dir.join("b.png"));
    digit_png(&a);
    digit_png(&b);
    mkfifo(&fifo);
    let ck = common::trained("mlp");
    let mut predict = Command::new(example("predict"));
    predict.arg("--model").arg(&ck).args([&a, &fifo, &b]);
    let (code, out, err) = common::text(&common::output_within(&mut predict, std::time::Duration::from_secs(30), "predict, waiting on the FIFO,"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pipe.png") && err.contains("FIFO"), "{err}");
    assert!(out.contains("a.png: ") && out.contains("b.png: "), "the other images are answered: {out}");
}

/// A scratch folder `name` holding a Fashion-MNIST MLP checkpoint and an empty data folder.
fn fashion_without_data(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = common::scratch("hardening_io", name);
    let fashion = dir.join("fashion.safetensors");
    checkpoint(ModelKind::Mlp, "fashion", &fashion);
    let empty = dir.join("no-data");
    fs::create_dir(&empty).unwrap();
    (dir, fashion, empty)
}

// 14. evaluate reads a dataset's test split alone, and a score with nothing to measure is
// "—", not 0.00%.
#[test]
fn evaluate_asks_only_for_the_test_files_and_dashes_undefined_scores() {
    let (dir, fashion, empty) = fashion_without_data("evaluate");
    let o = Command::new(example("evaluate")).arg("--model").arg(&fashion).args(["--dataset", "fashion", "--data-dir"]).arg(&empty).output().unwrap();
    let (code, _, err) = common::text(&o);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("t10k-images-idx3-ubyte.gz") && err.contains("t10k-labels-idx1-ubyte.gz"), "{err}");
    assert!(!err.contains("train-"), "the test split alone is read: {err}");

    // only ones: the other classes have no images (recall "—"), and a class never
    // answered has no precision
    let (images, labels) = two_ones(&dir, "a.png 1\nb.png 1\n");
    let (code, out, err) = evaluate_folder(&images, &labels);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<&str>> = out.lines().skip_while(|l| !l.starts_with("class")).skip(1).take(10).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 10, "{out}");
    for r in &rows {
        let (precision, recall, count) = (r[1], r[2], r[3]);
        assert_eq!(recall == "—", count == "0", "class {}: {out}", r[0]);
        assert!(!precision.starts_with("0.00"), "class {} never answered is '—': {out}", r[0]);
    }
    assert!(rows.iter().any(|r| r[1] == "—"), "{out}");
}

// 13. export says what it exports, that it replaced a file and refuses '-'; and (15) every
// model kind exports, lenet5 (tanh, average pooling) too.
#[test]
fn export_says_what_exports_what_it_replaced_and_refuses_stdout() {
    let dir = common::scratch("hardening_io", "export");
    let (mlp, lenet) = (dir.join("mlp.safetensors"), dir.join("lenet.safetensors"));
    checkpoint(ModelKind::Mlp, "mnist", &mlp);
    checkpoint(ModelKind::Lenet5, "mnist", &lenet);
    let export = |args: &[&std::ffi::OsStr]| common::text(&Command::new(example("export")).args(args).current_dir(&dir).output().unwrap());

    let (code, help, _) = export(&["--help".as_ref()]);
    assert_eq!(code, 0);
    for said in ["cnn", "mlp", "lenet5", "cnn-bn", "Conv2d", "BatchNorm", "GELU", "GlobalAvgPool", "Residual"] {
        assert!(help.contains(said), "'{said}' not in --help: {help}");
    }

    let onnx = dir.join("m.onnx");
    let (code, out, err) = export(&["--model".as_ref(), mlp.as_os_str(), "--onnx".as_ref(), onnx.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("replaced"), "{out}");
    let (code, out, err) = export(&["--model".as_ref(), mlp.as_os_str(), "--onnx".as_ref(), onnx.as_os_str()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(replaced the earlier file)"), "{out}");

    let (code, _, err) = export(&["--model".as_ref(), mlp.as_os_str(), "--onnx".as_ref(), "-".as_ref()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--onnx") && err.contains("standard output"), "{err}");
    assert!(!dir.join("-").exists(), "a file named '-' was written");

    let (code, out, err) = export(&["--model".as_ref(), lenet.as_os_str(), "--onnx".as_ref(), dir.join("l.onnx").as_os_str()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lenet5 model") && out.contains("AveragePool") && out.contains("Tanh"), "{out}");
}

/// A raw Exif chunk (little-endian TIFF) holding one tag: Orientation = `o`.
fn exif_orientation(o: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend(8u32.to_le_bytes()); // the first IFD follows the header
    t.extend(1u16.to_le_bytes()); // one entry
    t.extend(0x0112u16.to_le_bytes()); // Orientation
    t.extend(3u16.to_le_bytes()); // SHORT
    t.extend(1u32.to_le_bytes()); // one value
    t.extend(o.to_le_bytes());
    t.extend([0, 0]);
    t.extend(0u32.to_le_bytes()); // no next IFD
    t
}

// 6. A photo's EXIF orientation (JPEG, or a PNG's eXIf chunk) is applied on load, as a viewer shows it.
#[test]
fn exif_orientation_is_applied_on_load() {
    use image::imageops::{flip_horizontal, flip_vertical, rotate180, rotate270, rotate90};
    use image::{GrayImage, ImageEncoder, Luma};
    let dir = common::scratch("hardening_io", "exif");
    // not square, not symmetric: a dark bar on light paper and a dark block in one corner
    let stored = GrayImage::from_fn(36, 24, |x, y| Luma([if (14..18).contains(&x) && (4..20).contains(&y) || (x < 6 && y < 6) { 20 } else { 230 }]));
    let jpeg = |o: Option<u16>| {
        let path = dir.join(format!("o{}.jpg", o.unwrap_or(0)));
        let mut bytes = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
        if let Some(o) = o {
            enc.set_exif_metadata(exif_orientation(o)).unwrap();
        }
        enc.write_image(stored.as_raw(), 36, 24, image::ExtendedColorType::L8).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    };
    let plain = kiln::predict::load_gray(&jpeg(None)).unwrap();
    let shown: [fn(&GrayImage) -> GrayImage; 8] = [
        |i| i.clone(),
        |i| flip_horizontal(i),
        |i| rotate180(i),
        |i| flip_vertical(i),
        |i| flip_horizontal(&rotate90(i)), // transpose
        |i| rotate90(i),
        |i| flip_horizontal(&rotate270(i)), // transverse
        |i| rotate270(i),
    ];
    // a PNG's eXIf chunk says the same
    let png = |o: u16| {
        let path = dir.join(format!("o{o}.png"));
        let mut bytes = Vec::new();
        let mut enc = image::codecs::png::PngEncoder::new(&mut bytes);
        enc.set_exif_metadata(exif_orientation(o)).unwrap();
        enc.write_image(plain.as_raw(), plain.width(), plain.height(), image::ExtendedColorType::L8).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    };
    for (o, show) in (1..=8).zip(shown) {
        let want = show(&plain);
        for (kind, got) in [("JPEG", kiln::predict::load_gray(&jpeg(Some(o))).unwrap()), ("PNG", kiln::predict::load_gray(&png(o)).unwrap())] {
            assert_eq!(got.dimensions(), want.dimensions(), "{kind} orientation {o}");
            assert!(got == want, "{kind} orientation {o}: the pixels are not the picture as shown");
        }
    }
}

// 14 (export): --logits reads the test split alone, so it asks only for its files.
#[test]
fn export_logits_ask_only_for_the_test_files() {
    let (dir, fashion, empty) = fashion_without_data("export-logits");
    let o = Command::new(example("export"))
        .arg("--model")
        .arg(&fashion)
        .arg("--onnx")
        .arg(dir.join("m.onnx"))
        .arg("--logits")
        .arg(dir.join("logits.f32"))
        .args(["--dataset", "fashion", "--data-dir"])
        .arg(&empty)
        .output()
        .unwrap();
    let (code, _, err) = common::text(&o);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("t10k-images-idx3-ubyte.gz") && !err.contains("train-"), "{err}");
    assert!(!dir.join("m.onnx").exists(), "nothing is written before the data is found");
}
