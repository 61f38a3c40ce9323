//! What a user can do wrong, and what kiln must do then (issue 16): no user action loses a
//! trained model or a user's file, and every bad value is refused before work starts.
//! Each test reproduces one case of that issue. The CLI tests run the example binaries on
//! mnist10k (the MLP, one epoch: a few seconds on lavapipe).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image::{GrayImage, Luma, Rgba, RgbaImage};
use kiln::checkpoint::Checkpoint;
use kiln::nn::ModelKind;

use crate::common;
use crate::common::example;

fn scratch(name: &str) -> PathBuf {
    common::scratch("hardening", name)
}

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");



/// train_mnist on mnist10k, MLP, 1 epoch unless `extra` says otherwise.
fn train_cmd(extra: &[&str]) -> Command {
    let mut c = Command::new(example("train_mnist"));
    c.args(["--dataset", "mnist10k", "--data-dir", DATA, "--model", "mlp"]).args(extra);
    if !extra.contains(&"--epochs") {
        c.args(["--epochs", "1"]);
    }
    c.env("KILN_AUTOTUNE", "off");
    c
}

fn mlp_checkpoint(mean: f32, std: f32, dataset: &str) -> Checkpoint {
    let model = ModelKind::Mlp.build(1, 3).unwrap();
    let params = model.graph.params().iter().map(|(_, n, s)| (n.to_string(), s.to_vec(), vec![0.01; s.iter().product()])).collect();
    Checkpoint { model: ModelKind::Mlp.spec(), mean, std, dataset: dataset.into(), temperature: 1.0, deskew: false, params }
}

/// A dark digit-like stroke on light paper.
fn digit_png(path: &Path) {
    let mut img = GrayImage::from_pixel(60, 60, Luma([235]));
    for y in 10..50 {
        for x in 27..33 {
            img.put_pixel(x, y, Luma([15]));
        }
    }
    img.save(path).unwrap();
}

// 1. A failed write to stdout must not kill the run or lose the model.
#[test]
fn closed_or_full_stdout_still_trains_and_saves() {
    let dir = scratch("stdout");
    let closed = dir.join("closed.safetensors");
    let mut child = train_cmd(&["--save", closed.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // as `| head -0` would
    let out = child.wait_with_output().unwrap();
    let (code, _, stderr) = common::text(&out);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    Checkpoint::load(&closed).expect("the checkpoint of a run whose stdout was closed");

    let full = dir.join("full.safetensors");
    let out = train_cmd(&["--save", full.to_str().unwrap()]).stdout(fs::File::create("/dev/full").unwrap()).output().unwrap();
    let (code, _, stderr) = common::text(&out);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("standard output was closed or full"), "{stderr}");
    Checkpoint::load(&full).expect("the checkpoint of a run whose stdout was /dev/full");
}

// 2. --save refuses anything that is not a regular file, before any work.
#[test]
fn save_refuses_devices_fifos_and_symlinks() {
    let dir = scratch("targets");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let link = dir.join("link");
    fs::write(dir.join("real"), b"keep me").unwrap();
    std::os::unix::fs::symlink(dir.join("real"), &link).unwrap();
    let mut targets = vec![(fifo, "not a regular file"), (link, "symbolic link")];
    // a character device like /dev/null, made here (needs root, as CI is)
    let device = dir.join("null");
    if Command::new("mknod").arg(&device).args(["c", "1", "3"]).status().is_ok_and(|s| s.success()) {
        targets.push((device, "not a regular file"));
    }
    for (target, expect) in &targets {
        let kind = fs::symlink_metadata(target).unwrap().file_type();
        let (code, _, stderr) = common::text(&train_cmd(&["--save", target.to_str().unwrap()]).output().unwrap());
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("--save") && stderr.contains(expect), "{stderr}");
        assert_eq!(fs::symlink_metadata(target).unwrap().file_type(), kind, "{} was replaced", target.display());
    }
    assert_eq!(fs::read(dir.join("real")).unwrap(), b"keep me");
    // the library refuses too
    let err = mlp_checkpoint(0.1, 0.3, "mnist").save(&targets[0].0).unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

// 3. Colliding outputs, outputs that are inputs, and a replaced checkpoint.
#[test]
fn colliding_outputs_are_refused_and_replacing_is_said() {
    let dir = scratch("collide");
    let same = dir.join("same.png");
    let (code, _, stderr) = common::text(&train_cmd(&["--save", same.to_str().unwrap(), "--plot", same.to_str().unwrap()]).output().unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--save and --plot name the same file"), "{stderr}");
    assert!(!same.exists());

    let model = dir.join("m.safetensors");
    mlp_checkpoint(0.13, 0.31, "mnist10k").save(&model).unwrap();
    let victim = dir.join("victim.png");
    digit_png(&victim);
    let before = fs::read(&victim).unwrap();
    let out = Command::new(example("predict"))
        .args(["--model", model.to_str().unwrap(), victim.to_str().unwrap(), "--dump-preprocessed", victim.to_str().unwrap()])
        .output()
        .unwrap();
    let (code, _, stderr) = common::text(&out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("name the same file"), "{stderr}");
    assert_eq!(fs::read(&victim).unwrap(), before, "the input image was overwritten");

    // --save over an earlier checkpoint: done, and said
    let (code, stdout, stderr) = common::text(&train_cmd(&["--save", model.to_str().unwrap(), "--json", "--quiet"]).output().unwrap());
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(json["checkpoint"].as_str().unwrap().contains("replaced the earlier file"), "{json}");
    // the start-up's phases add up to it, the overlapped two within the first; the
    // evaluator was built beside the first epoch, not in the start-up
    let phase = |k: &str| json["startup_phases"][k].as_f64().unwrap_or_else(|| panic!("startup_phases.{k} in {json}"));
    let sum = phase("before_training") + phase("trainer") + phase("first_step");
    assert!(phase("evaluator") > 0.0, "{json}");
    assert!((sum - json["startup_seconds"].as_f64().unwrap()).abs() < 1e-6, "{json}");
    assert!(phase("gpu_open").max(phase("dataset_decode")) <= phase("before_training"), "{json}");
    assert!(json["autotune_seconds"].as_f64().unwrap() <= phase("trainer"), "{json}");
}

// 4. The missing-data message: real flags, every missing file, the offline protocol, no
// empty directory left behind.
#[test]
fn missing_data_names_every_file_and_the_offline_protocol() {
    let dir = scratch("nodata");
    let out = Command::new(example("train_mnist"))
        .args(["--dataset", "mnist", "--no-download", "--epochs", "1"])
        .current_dir(&dir)
        .env_remove("KILN_DATA")
        .output()
        .unwrap();
    let (code, _, stderr) = common::text(&out);
    assert_eq!(code, 2, "{stderr}");
    for f in ["train-images", "train-labels", "t10k-images", "t10k-labels", "--dataset mnist10k", "--no-download"] {
        assert!(stderr.contains(f), "{f} not in: {stderr}");
    }
    assert!(!stderr.contains("--download "), "names a flag that does not exist: {stderr}");
    assert!(!dir.join("data").exists(), "created {}", dir.join("data").display());
}

// 5. Checkpoints no model could use are refused; another dataset's is warned about.
#[test]
fn meaningless_checkpoints_are_refused() {
    let dir = scratch("badmeta");
    let path = dir.join("m.safetensors");
    for (mean, std) in [(0.1, 0.0), (0.1, f32::NAN), (0.1, f32::INFINITY), (0.1, -0.3), (f32::NAN, 0.3)] {
        mlp_checkpoint(mean, std, "mnist").save(&path).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("normalisation"), "mean {mean} std {std}: {err}");
    }
    let mut ck = mlp_checkpoint(0.1, 0.3, "mnist");
    ck.params[1].2[7] = f32::NAN;
    ck.save(&path).unwrap();
    let err = Checkpoint::load(&path).unwrap_err().to_string();
    assert!(err.contains("fc1.bias") && err.contains("NaN"), "{err}");
    let digit = dir.join("d.png");
    digit_png(&digit);
    let (code, stdout, stderr) = common::text(&Command::new(example("predict")).args(["--model", path.to_str().unwrap(), digit.to_str().unwrap()]).output().unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "an answer from a broken checkpoint: {stdout}");

    mlp_checkpoint(0.28, 0.35, "fashion").save(&path).unwrap();
    let (code, stdout, stderr) = common::text(&Command::new(example("predict")).args(["--model", path.to_str().unwrap(), digit.to_str().unwrap()]).output().unwrap());
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains("'fashion'"), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

// 6 and 7. Every flag is checked before the data and the GPU are touched (a missing data
// directory and an adapter filter matching nothing would fail first otherwise); negative
// numbers reach the check instead of being taken for flags.
#[test]
fn bad_flags_are_refused_before_data_and_gpu() {
    for (flags, expect) in [
        (vec!["--epochs", "0"], "--epochs"),
        (vec!["--batch-size", "0"], "--batch-size"),
        (vec!["--lr=nan"], "--lr"),
        (vec!["--lr", "inf"], "--lr"),
        (vec!["--lr", "-1"], "--lr: -1"),
        (vec!["--lr=0"], "--lr"),
        (vec!["--optimizer", "sgd", "--momentum", "nan"], "--momentum"),
        (vec!["--lr-hold", "-0.1"], "--lr-hold: -0.1"),
        (vec!["--min-accuracy", "-0.5"], "--min-accuracy"),
        (vec!["--plot", "curve.txt"], "--plot"),
        (vec!["--kernel", "fastest"], "--kernel"),
    ] {
        let out = Command::new(example("train_mnist"))
            .args(["--dataset", "mnist", "--data-dir", "/nonexistent-kiln-data", "--no-download", "--no-save"])
            .args(&flags)
            .env("KILN_ADAPTER", "no-such-adapter-anywhere")
            .output()
            .unwrap();
        let (code, _, stderr) = common::text(&out);
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(stderr.contains(expect), "{flags:?}: expected {expect:?} in: {stderr}");
        assert!(!stderr.contains("nonexistent-kiln-data") && !stderr.contains("adapter"), "{flags:?}: checked too late: {stderr}");
        assert!(!stderr.contains("unexpected argument") && !stderr.contains("Debug"), "{flags:?}: {stderr}");
    }
}

// 6. A diverging run stops at the first metrics read, also when nothing is displayed.
#[test]
fn a_diverging_quiet_run_stops_at_the_first_read() {
    let dir = scratch("diverge");
    let save = dir.join("m.safetensors");
    let out = train_cmd(&["--optimizer", "sgd", "--lr", "1e9", "--progress-every", "10", "--quiet", "--save", save.to_str().unwrap()])
        .output()
        .unwrap();
    let (code, _, stderr) = common::text(&out);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("epoch 1, step 10"), "{stderr}");
    assert!(!save.exists());
}

// 8 and 9. Large images and many images go through in bounded pieces; one unreadable image
// costs only its own answer.
#[test]
fn predict_takes_huge_images_many_images_and_survives_a_bad_one() {
    let dir = scratch("predict");
    let model = dir.join("m.safetensors");
    mlp_checkpoint(0.13, 0.31, "mnist").save(&model).unwrap();
    // 10000x10000: 400 MB as f32, over lavapipe's 128 MiB binding limit in one piece
    let huge = dir.join("huge.png");
    let mut img = GrayImage::from_pixel(10_000, 10_000, Luma([230]));
    for y in 2000..8000 {
        for x in 4800..5400 {
            img.put_pixel(x, y, Luma([20]));
        }
    }
    img.save(&huge).unwrap();
    drop(img);
    let (code, stdout, stderr) =
        common::text(&Command::new(example("predict")).args(["--model", model.to_str().unwrap(), "--denoise", huge.to_str().unwrap()]).output().unwrap());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(huge.to_str().unwrap()), "{stdout}");

    let good = dir.join("good.png");
    digit_png(&good);
    let bad = dir.join("bad.png");
    fs::write(&bad, b"not a png").unwrap();
    let mut args: Vec<String> = vec!["--model".into(), model.display().to_string()];
    args.extend((0..3000).map(|i| if i == 1234 { bad.display().to_string() } else { good.display().to_string() }));
    let (code, stdout, stderr) = common::text(&Command::new(example("predict")).args(&args).output().unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout.lines().count(), 2999, "one answer per readable image");
    assert!(stderr.contains("bad.png") && stderr.contains("1 of 3000 images"), "{stderr}");
}

// 8. The GPU median filter in bands equals the filter over the whole image.
#[test]
fn banded_denoise_matches_the_cpu_median() {
    let gpu = kiln::testing::gpu();
    let mut rng = kiln::testing::Rng::new(16);
    let (w, h) = (37u32, 29u32);
    let img = GrayImage::from_fn(w, h, |_, _| Luma([(rng.unit() * 255.0) as u8]));
    let got = kiln::predict::denoise(gpu, &img, kiln::predict::Denoise::Median).unwrap();
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let mut v: Vec<u8> = (0..9)
                .map(|i| img.get_pixel((x + i % 3 - 1).clamp(0, w as i64 - 1) as u32, (y + i / 3 - 1).clamp(0, h as i64 - 1) as u32)[0])
                .collect();
            v.sort();
            assert_eq!(got.get_pixel(x as u32, y as u32)[0], v[4], "at {x},{y}");
        }
    }
}

// 10. Black ink on a transparent canvas is ink, not "no ink".
#[test]
fn transparent_canvases_are_composited() {
    let dir = scratch("alpha");
    for (ink, name) in [([0u8, 0, 0], "black.png"), ([255, 255, 255], "white.png")] {
        let mut img = RgbaImage::from_pixel(50, 50, Rgba([0, 0, 0, 0]));
        for y in 10..40 {
            for x in 22..28 {
                img.put_pixel(x, y, Rgba([ink[0], ink[1], ink[2], 255]));
            }
        }
        let path = dir.join(name);
        img.save(&path).unwrap();
        let gray = kiln::predict::load_gray(&path).unwrap();
        assert!(gray.get_pixel(0, 0)[0] < 50 && gray.get_pixel(25, 25)[0] > 200, "{name}: ink must end up white on black");
        kiln::predict::to_mnist(&gray, &path).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

// 11. The autotune cache: refused entries are said and re-tuned; the file carries kiln's
// version; KILN_CACHE naming a file is an error.
#[test]
fn a_bad_autotune_cache_is_refused_and_retuned() {
    let dir = scratch("cache");
    let cache = dir.join("cache");
    let run = |cache_var: &Path| {
        let mut c = train_cmd(&["--no-save", "--quiet"]);
        c.env_remove("KILN_AUTOTUNE").env("KILN_CACHE", cache_var);
        common::text(&c.output().unwrap())
    };
    let (code, _, stderr) = run(&cache);
    assert_eq!(code, 0, "{stderr}");
    let file = fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.contains(env!("CARGO_PKG_VERSION")), "{name}");
    let good = fs::read_to_string(&file).unwrap();
    // a variant of another adapter family, and a name kiln does not know
    let gpu = kiln::testing::gpu();
    let foreign = if gpu.info().is_cpu() { "tiled64" } else { "vec4" };
    let bad: String = good.lines().enumerate().map(|(i, l)| format!("{}\t{}\n", l.split('\t').next().unwrap(), if i == 0 { "warp-speed" } else { foreign })).collect();
    fs::write(&file, &bad).unwrap();
    let (code, _, stderr) = run(&cache);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("'warp-speed' is not a candidate") && stderr.contains(&format!("'{foreign}' is not a candidate")), "{stderr}");
    // re-tuning writes a valid choice back for every step (timing decides which)
    let retuned = fs::read_to_string(&file).unwrap();
    assert_eq!(retuned.lines().count(), good.lines().count(), "{retuned}");
    for line in retuned.lines() {
        let (key, name) = line.split_once('\t').unwrap();
        let key = kiln::autotune::TuneKey::parse(key).expect(line);
        assert!(kiln::autotune::candidates(gpu, &key).iter().any(|c| c.name() == name), "{line}");
    }

    let (code, _, stderr) = run(&file);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("KILN_CACHE"), "{stderr}");
}

// 12 and 14. Saves are atomic, replace stale part files, and identical checkpoints are
// identical files.
#[test]
fn saves_replace_stale_parts_and_are_byte_identical() {
    let dir = scratch("parts");
    let path = dir.join("m.safetensors");
    let part = dir.join(".m.safetensors.part");
    fs::write(&part, b"half a checkpoint from a killed save").unwrap();
    let ck = mlp_checkpoint(0.13, 0.31, "mnist");
    ck.save(&path).unwrap();
    assert!(!part.exists(), "the stale part file is still there");
    let first = fs::read(&path).unwrap();
    for _ in 0..5 {
        ck.save(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), first, "the same checkpoint saved twice differs");
    }
    assert_eq!(Checkpoint::load(&path).unwrap(), ck);
}

// 13. A save that fails at the end of training rescues the model elsewhere, exit 2.
#[test]
fn a_failed_final_save_rescues_the_model() {
    let dir = scratch("rescue");
    let target_dir = dir.join("gone");
    fs::create_dir_all(&target_dir).unwrap();
    let target = target_dir.join("m.safetensors");
    let mut child = train_cmd(&["--epochs", "2", "--save", target.to_str().unwrap()])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The adapter line comes after every check: remove the directory then.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(first)) = lines.next() else {
        let out = child.wait_with_output().unwrap();
        panic!("no output: {}", String::from_utf8_lossy(&out.stderr));
    };
    assert!(first.starts_with("adapter:"), "{first}");
    fs::remove_dir_all(&target_dir).unwrap();
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let out = child.wait_with_output().unwrap();
    let (code, _, stderr) = common::text(&out);
    assert_eq!(code, 2, "{stderr}");
    let rescued: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.to_string_lossy().contains("kiln-rescued-")).collect();
    assert_eq!(rescued.len(), 1, "{stderr}");
    assert!(stderr.contains(&*rescued[0].file_name().unwrap().to_string_lossy()), "{stderr}");
    assert!(rest.iter().any(|l| l.contains("kiln-rescued-")), "the summary names the rescued file: {rest:?}");
    Checkpoint::load(&rescued[0]).unwrap();
}

// 14. The loss panel of a one-epoch run has a curve: the training loss at each read.
#[test]
fn a_one_epoch_plot_draws_the_loss() {
    let dir = scratch("plot");
    let epochs = [kiln::train::EpochReport {
        epoch: 1,
        train_loss: 0.5,
        train_accuracy: 0.9,
        test_loss: 0.3,
        test_accuracy: 0.95,
        train_seconds: 1.0,
        images_per_sec: 1.0,
        eval_seconds: 0.1,
    }];
    let curve: Vec<(f64, f32)> = (1..=5).map(|i| (i as f64 / 5.0, 2.0 / i as f32)).collect();
    let path = dir.join("curve.png");
    kiln::plot::plot_curve(&path, &epochs, &curve).expect("plot (needs a TTF font: fonts-dejavu-core or KILN_FONT)");
    let img = image::open(&path).unwrap().to_rgb8();
    let blue = img.enumerate_pixels().filter(|(x, _, p)| *x < 500 && p[2] > 200 && p[0] < 60 && p[1] < 60).count();
    assert!(blue > 200, "the training loss curve is missing ({blue} blue pixels)");
}

// 14. Adapter errors: each adapter once, and no install hint when adapters are there.
#[test]
fn an_unmatched_adapter_filter_lists_each_adapter_once() {
    let (code, _, stderr) = common::text(&Command::new(example("gpu_info")).env("KILN_ADAPTER", "no-such-adapter-anywhere").output().unwrap());
    assert_eq!(code, 2, "{stderr}");
    let present = stderr.split("adapters present: ").nth(1).expect(&stderr).lines().next().unwrap();
    let names: Vec<&str> = present.trim_end_matches('.').trim_end_matches(')').split("; ").collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "{present}");
    assert!(!stderr.contains("Install Mesa"), "{stderr}");
    let info = kiln::gpu::GpuInfo { driver: String::new(), driver_info: String::new(), ..kiln::testing::gpu().info().clone() };
    assert!(info.summary().contains("driver not reported"), "{}", info.summary());
}

#[test]
fn an_unknown_kiln_direct_conv_value_is_refused() {
    let (code, _, stderr) = common::text(&Command::new(example("gpu_info")).env("KILN_DIRECT_CONV", "sometimes").output().unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("KILN_DIRECT_CONV=\"sometimes\"") && stderr.contains("unfused"), "{stderr}");
    for ok in ["unfused", "0", "on"] {
        let (code, _, stderr) = common::text(&Command::new(example("gpu_info")).env("KILN_DIRECT_CONV", ok).output().unwrap());
        assert_eq!(code, 0, "KILN_DIRECT_CONV={ok}: {stderr}");
    }
}
