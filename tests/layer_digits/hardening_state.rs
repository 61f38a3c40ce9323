//! A resumed run's files (issue "Hardening III"): the training state beside a checkpoint is
//! validated, tied to its checkpoint, and checked before any work, and no save replaces a
//! usable checkpoint with an unusable one. The CLI tests run `train_mnist` on mnist10k (the
//! MLP, one or two epochs: seconds on lavapipe).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::checkpoint::Checkpoint;
use kiln::train::TrainState;

use crate::common;
use crate::common::example;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

fn scratch(name: &str) -> PathBuf {
    common::scratch("hardening_state", name)
}

/// train_mnist on mnist10k, MLP, with `extra`.
fn train(extra: &[&str]) -> (i32, String, String) {
    let mut c = Command::new(example("train_mnist"));
    c.args(["--data-dir", DATA]).args(extra).env("KILN_AUTOTUNE", "off");
    common::text(&c.output().unwrap())
}

/// A run of 2 epochs stopped after the first: its checkpoint `dir/m.safetensors` and the state beside it.
fn stopped_run(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = dir.join("m.safetensors");
    let (code, _, stderr) = train(&["--dataset", "mnist10k", "--model", "mlp", "--epochs", "2", "--stop-after", "1", "--quiet", "--save", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let state = TrainState::path_for(&ck);
    assert!(state.exists());
    (ck, state)
}

// 2. A NaN in the optimizer state is refused on load, before any training; the checkpoint stays.
#[test]
fn a_nan_in_the_state_is_refused_and_the_checkpoint_kept() {
    let dir = scratch("nan_state");
    let (ck, state_path) = stopped_run(&dir);
    let mut state = TrainState::load(&state_path).unwrap();
    state.moments[0].2[3] = f32::NAN;
    state.save(&state_path).unwrap();
    let before = fs::read(&ck).unwrap();
    let (code, _, stderr) = train(&["--resume", ck.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("train-state.safetensors") && stderr.contains("NaN") && stderr.contains(&state.moments[0].0), "{stderr}");
    assert_eq!(fs::read(&ck).unwrap(), before, "the checkpoint changed");
    Checkpoint::load(&ck).unwrap();
}

// 2. A moment whose shape is not its parameter's is refused on load.
#[test]
fn a_state_of_other_shapes_is_refused() {
    let dir = scratch("shape_state");
    let (ck, state_path) = stopped_run(&dir);
    let mut state = TrainState::load(&state_path).unwrap();
    state.moments[0].1.push(1); // [n] -> [n, 1], [a, b] -> [a, b, 1]: the same values, another shape
    state.save(&state_path).unwrap();
    let (code, _, stderr) = train(&["--resume", ck.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("train-state.safetensors") && stderr.contains(&state.moments[0].0), "{stderr}");
}

// 2. A checkpoint that would not load never replaces one that does: the old file is kept, and said.
#[test]
fn an_unusable_checkpoint_does_not_replace_a_usable_one() {
    let dir = scratch("unusable_save");
    let path = dir.join("m.safetensors");
    let good = Checkpoint::load(&common::trained("mlp")).unwrap();
    good.save(&path).unwrap();
    let before = fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad.params[0].2[5] = f32::NAN;
    match kiln::cli::save_or_rescue(&bad, &path) {
        Ok(s) => panic!("an unusable checkpoint was saved: {s:?}"),
        Err(e) => {
            let e = e.to_string();
            assert!(e.contains("would not load") && e.contains("NaN") && e.contains("earlier file is kept"), "{e}");
        }
    }
    assert_eq!(fs::read(&path).unwrap(), before, "the good checkpoint changed");
    assert!(fs::read_dir(&dir).unwrap().count() == 1, "another file was written");
}

/// `path`'s modification time set `secs` seconds back.
fn age(path: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs)).unwrap();
}

// 3. A state saved with another checkpoint (an epoch-1 state beside the epoch-2 checkpoint, as a
// kill between the two saves leaves; another run's state) is refused, saying which file is newer.
#[test]
fn a_state_of_another_checkpoint_is_refused() {
    let dir = scratch("pairing");
    let ck = dir.join("m.safetensors");
    let (code, _, stderr) = train(&["--dataset", "mnist10k", "--model", "mlp", "--epochs", "3", "--stop-after", "1", "--quiet", "--save", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let state_path = TrainState::path_for(&ck);
    let epoch1 = fs::read(&state_path).unwrap();
    let (code, _, stderr) = train(&["--resume", ck.to_str().unwrap(), "--stop-after", "2", "--quiet"]);
    assert_eq!(code, 0, "{stderr}");
    let epoch2 = fs::read(&ck).unwrap();

    // the epoch-2 checkpoint, the epoch-1 state (older)
    fs::write(&state_path, &epoch1).unwrap();
    age(&state_path, 60);
    let (code, _, stderr) = train(&["--resume", ck.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "an epoch-1 state resumed an epoch-2 checkpoint: {stderr}");
    assert!(stderr.contains("train-state.safetensors") && stderr.contains("checkpoint is newer"), "{stderr}");
    assert_eq!(fs::read(&ck).unwrap(), epoch2, "the checkpoint changed");

    // another run's state, newer than the checkpoint
    let other = scratch("pairing_other").join("o.safetensors");
    let (code, _, stderr) = train(&["--dataset", "mnist10k", "--model", "mlp", "--epochs", "3", "--stop-after", "2", "--seed", "9", "--quiet", "--save", other.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    fs::copy(TrainState::path_for(&other), &state_path).unwrap();
    age(&ck, 60);
    let (code, _, stderr) = train(&["--resume", ck.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 2, "another run's state was accepted: {stderr}");
    assert!(stderr.contains("state is newer"), "{stderr}");
    assert_eq!(fs::read(&ck).unwrap(), epoch2, "the checkpoint changed");
}

// 4. With --stop-after and --save-every-epoch the training state's path is checked before the
// data and the GPU, as --save's is: a directory or a symbolic link there fails at once.
#[test]
fn a_bad_state_path_is_refused_before_any_work() {
    let dir = scratch("state_path");
    let ck = dir.join("m.safetensors");
    let state = TrainState::path_for(&ck);
    let target = dir.join("elsewhere");
    fs::write(&target, b"a file of the user's").unwrap();
    for (flag, make) in [("--stop-after", 0), ("--save-every-epoch", 1)] {
        let _ = fs::remove_dir(&state);
        let _ = fs::remove_file(&state);
        if make == 0 {
            fs::create_dir(&state).unwrap();
        } else {
            std::os::unix::fs::symlink(&target, &state).unwrap();
        }
        let run: &[&str] = if flag == "--stop-after" { &["--stop-after", "1"] } else { &["--save-every-epoch"] };
        let args = [&["--dataset", "mnist10k", "--model", "mlp", "--epochs", "2", "--save", ck.to_str().unwrap()], run].concat();
        let (code, stdout, stderr) = train(&args);
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert!(!stdout.contains("adapter:") && !stdout.contains("--resume"), "{flag}: the work started: {stdout}");
        assert!(stderr.contains("m.train-state.safetensors") && stderr.contains(flag), "{flag}: {stderr}");
        assert!(!ck.exists(), "{flag}: a checkpoint was written");
        assert_eq!(fs::read(&target).unwrap(), b"a file of the user's");
    }
}

/// Runs example `program` with `args` under a 2 GiB address-space limit, killed after 20 s:
/// a program reading a device or a huge file whole fails here instead of taking the machine.
fn guarded(program: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -v 2097152; exec \"$0\" \"$@\"", example(program).to_str().unwrap()]).args(args).env("KILN_AUTOTUNE", "off");
    common::text(&common::output_within(&mut cmd, std::time::Duration::from_secs(20), &format!("{program} {args:?}")))
}

/// A sparse file of `len` bytes (no disk used), all zeros.
fn sparse(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

// 10. Devices and huge files given as inputs are refused without reading them whole: a
// checkpoint's header is checked against its size first, a labels file is capped.
#[test]
fn devices_and_huge_inputs_are_refused_unread() {
    let dir = scratch("huge_inputs");
    let big = dir.join("big.safetensors");
    sparse(&big, 3 << 30);
    let big_labels = dir.join("labels.txt");
    sparse(&big_labels, 100 << 20);
    let images = dir.join("images");
    fs::create_dir(&images).unwrap();
    let model = common::trained("mlp");
    let model = model.to_str().unwrap();
    let eval = |m: &str| vec!["--model", m, "--dataset", "mnist10k", "--data-dir", DATA].into_iter().map(String::from).collect::<Vec<_>>();
    let labels = |l: &str| vec!["--model", model, "--images", images.to_str().unwrap(), "--labels", l].into_iter().map(String::from).collect::<Vec<_>>();
    let cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
        ("evaluate", eval("/dev/zero"), "/dev/zero", "not a regular file"),
        ("evaluate", eval("/dev/urandom"), "/dev/urandom", "not a regular file"),
        ("evaluate", eval(big.to_str().unwrap()), "big.safetensors", "not a kiln checkpoint"),
        ("train_mnist", vec!["--resume".into(), "/dev/zero".into()], "/dev/zero", "not a regular file"),
        ("evaluate", labels("/dev/zero"), "/dev/zero", "not a regular file"),
        ("evaluate", labels(big_labels.to_str().unwrap()), "labels.txt", "64 MiB"),
    ];
    for (program, args, file, says) in cases {
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let (code, _, stderr) = guarded(program, &args);
        assert_eq!(code, 2, "{program} {args:?}: {stderr}");
        assert!(stderr.contains(file) && stderr.contains(says), "{program} {args:?}: {stderr}");
    }
    fs::remove_dir_all(&dir).unwrap(); // the sparse files: no tool copying target/ should meet 3 GB
}

// 17. --resume accepts run flags equal to the recorded settings and refuses only real
// conflicts, naming the recorded value; it finds the data where the run found it, so the
// command --stop-after prints works as printed (no --data-dir).
#[test]
fn resume_takes_matching_flags_and_the_recorded_data() {
    let dir = scratch("resume_flags");
    let ck = dir.join("m.safetensors");
    let (code, stdout, stderr) = train(&["--dataset", "mnist10k", "--model", "mlp", "--epochs", "3", "--stop-after", "1", "--save", ck.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let printed = format!("--resume {}", ck.display());
    assert!(stdout.contains(&printed), "{stdout}");
    let resume = |extra: &[&str]| {
        let mut c = Command::new(example("train_mnist"));
        c.args(["--resume", ck.to_str().unwrap(), "--quiet"]).args(extra).env("KILN_AUTOTUNE", "off").env_remove("KILN_DATA").current_dir(&dir);
        common::text(&c.output().unwrap())
    };
    for (flag, value, recorded) in [("--seed", "5", "has 1"), ("--dataset", "mnist", "has mnist10k"), ("--model", "cnn", "has mlp"), ("--momentum", "0.5", "no such setting")] {
        let (code, _, stderr) = resume(&[flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(recorded), "{flag} {value}: {stderr}");
    }
    let (code, _, stderr) = resume(&["--dataset", "mnist10k", "--model", "mlp", "--epochs", "3", "--seed", "1", "--lr", "0.001", "--stop-after", "2"]);
    assert_eq!(code, 0, "flags equal to the run's were refused: {stderr}");
    assert_eq!(TrainState::load(&TrainState::path_for(&ck)).unwrap().epochs_done, 2);
}

// 5. A failed final save with an unusable current directory and no temporary directory
// still rescues the model ($HOME), and says every place it tried.
#[test]
fn a_rescue_tries_home_and_says_where_it_tried() {
    use std::io::{BufRead, BufReader};
    let dir = scratch("rescue_home");
    let (cwd, target_dir, home) = (dir.join("cwd"), dir.join("gone"), dir.join("home"));
    for d in [&cwd, &target_dir, &home] {
        fs::create_dir_all(d).unwrap();
    }
    let target = target_dir.join("m.safetensors");
    let mut child = Command::new(example("train_mnist"))
        .args(["--dataset", "mnist10k", "--data-dir", DATA, "--model", "mlp", "--epochs", "2", "--save", target.to_str().unwrap()])
        .env("KILN_AUTOTUNE", "off")
        .env("TMPDIR", dir.join("no-such-tmp"))
        .env("HOME", &home)
        .current_dir(&cwd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // the adapter line comes after every check: the current and the target directory go then
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next();
    assert!(matches!(&first, Some(Ok(l)) if l.starts_with("adapter:")), "{first:?}");
    fs::remove_dir_all(&cwd).unwrap();
    fs::remove_dir_all(&target_dir).unwrap();
    let _: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let (code, _, stderr) = common::text(&child.wait_with_output().unwrap());
    assert_eq!(code, 2, "{stderr}");
    let rescued: Vec<PathBuf> = fs::read_dir(&home).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(rescued.len(), 1, "nothing rescued to $HOME: {stderr}");
    Checkpoint::load(&rescued[0]).unwrap();
    assert!(stderr.contains(&*rescued[0].to_string_lossy()), "{stderr}");
    assert!(stderr.contains("./kiln-rescued-") && stderr.contains("no-such-tmp"), "the places tried are not named: {stderr}");
}

/// The cache file's lines (`KEY\tVARIANT`) in `dir`.
fn cache_lines(dir: &Path) -> Vec<String> {
    let files: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "txt")).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    fs::read_to_string(&files[0]).unwrap().lines().map(String::from).collect()
}

// 16. Two first runs sharing an empty KILN_CACHE keep both their entries (merged under a lock).
#[test]
fn concurrent_first_runs_keep_both_cache_entries() {
    let dir = scratch("cache_merge");
    let profile = |model: &str, cache: &Path| {
        let mut c = Command::new(example("train_mnist"));
        c.args(["--dataset", "mnist10k", "--data-dir", DATA, "--model", model, "--profile", "1", "--batch-size", "8"]);
        c.env_remove("KILN_AUTOTUNE").env("KILN_CACHE", cache).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        c
    };
    // each model's entries, tuned alone
    let mut alone = Vec::new();
    for model in ["mlp", "cnn"] {
        let cache = dir.join(format!("alone-{model}"));
        let out = profile(model, &cache).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        alone.extend(cache_lines(&cache));
    }
    // both at once from an empty cache: the MLP (quick to tune) writes while the CNN tunes
    let shared = dir.join("shared");
    let runs: Vec<_> = ["mlp", "cnn"].iter().map(|m| profile(m, &shared).spawn().unwrap()).collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let both = cache_lines(&shared);
    let keys = |lines: &[String]| -> std::collections::BTreeSet<String> { lines.iter().map(|l| l.split('\t').next().unwrap().to_string()).collect() };
    assert_eq!(keys(&both), keys(&alone), "a run's entries were lost: {both:?}");
}
