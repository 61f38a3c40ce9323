//! What kiln's command-line programs share, so that they stay thin and behave alike:
//! printing that never ends a run ([`outln!`](crate::outln), [`errln!`](crate::errln)),
//! the exit codes, and saving a checkpoint so that a trained model is never lost.
//!
//! Exit codes: 0 done, 1 a target not met (`--min-accuracy`), 2 bad input or an error
//! (a lost answer included: [`answer_lost`]).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::base::files;
use crate::model::checkpoint::Checkpoint;
use crate::Error;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line to standard output. The first failed write (a closed pipe, as with
/// `| head`, or a full disk) stops all further printing instead of panicking as `println!`
/// does: a program's reporting must never kill its work.
pub fn print_line(args: fmt::Arguments) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out.write_fmt(args).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush()).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

/// Writes one line to standard error, ignoring failure (there is nowhere left to say it).
pub fn eprint_line(args: fmt::Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|_| err.write_all(b"\n"));
}

/// Whether standard output failed (and printing stopped).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// `println!` that cannot panic: see [`print_line`].
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::print_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::cli::print_line(format_args!($($arg)*)) };
}

/// `eprintln!` that cannot panic: see [`eprint_line`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::eprint_line(format_args!($($arg)*)) };
}

/// A library error as the person running a program should read it: the library names its
/// settings (`TrainConfig::epochs`, a function's parameter), never a flag, so each program
/// replaces those names (`names`: (library name, flag)) in the error's op and message.
pub fn with_flags(e: Error, names: &[(&str, &str)]) -> Error {
    let rename = |text: String| names.iter().fold(text, |t, (name, flag)| t.replace(name, flag));
    match e {
        Error::Unsupported { op, message } => Error::Unsupported { op: rename(op), message: rename(message) },
        Error::Shape { op, message } => Error::Shape { op: rename(op), message: rename(message) },
        e => e,
    }
}

/// A dataset error as a program prints it: the library names the data directory and the
/// mnist10k dataset, the person typed flags (`--data-dir`, `--dataset mnist10k`); a program
/// that downloads missing files (`downloads`) says how not to.
pub fn data_error(e: impl fmt::Display, downloads: bool) -> String {
    let text = e.to_string();
    if !text.contains("point the data directory") {
        return text;
    }
    let text = text.replace("point the data directory", "point --data-dir").replace("The mnist10k dataset", "--dataset mnist10k");
    if downloads {
        format!("{text}
Missing files are downloaded unless --no-download is given.")
    } else {
        text
    }
}

/// A file error of the path given to `flag`, saying so: `PATH: FLAG: MESSAGE`.
pub fn for_flag(flag: &str, e: Error) -> Error {
    match e {
        Error::File { path, message } => Error::File { path, message: format!("{flag}: {message}") },
        e => e,
    }
}

/// Prints `error: MESSAGE` to standard error and returns exit code 2.
pub fn fail(message: impl fmt::Display) -> ExitCode {
    errln!("error: {message}");
    ExitCode::from(2)
}

/// Where a checkpoint ended up.
#[derive(Debug)]
pub enum Saved {
    /// At the path asked for.
    Asked,
    /// The path asked for failed (`Error`); the checkpoint was rescued to the other path.
    Rescued(Error, PathBuf),
}

/// Saves `ck` at `path`; when that fails (the directory vanished during training, the file
/// became read-only...), saves it as `kiln-rescued-<pid>-NAME` in the first place that takes
/// it of the current directory, the temporary directory, `$HOME` and `/tmp`, so that hours
/// of training are not thrown away; the error then names each place that failed. `Err`
/// only when no place took it (naming every place tried), or when the checkpoint would not
/// load (then nothing is written: an unusable model must not replace a usable one).
pub fn save_or_rescue(ck: &Checkpoint, path: &Path) -> Result<Saved, Error> {
    let bytes = ck.usable_bytes(path)?;
    let first = match files::write_atomic(path, &bytes) {
        Ok(()) => return Ok(Saved::Asked),
        Err(e) => e,
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model.safetensors".into());
    let name = format!("kiln-rescued-{}-{name}", std::process::id());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut tried: Vec<String> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let with_tried = |e: Error, tried: &[String], end: &str| match e {
        Error::File { path, message } if !tried.is_empty() => Error::File { path, message: format!("{message}; tried {}{end}", tried.join("; ")) },
        Error::File { path, message } => Error::File { path, message: format!("{message}{end}") },
        e => e,
    };
    for dir in [Some(PathBuf::from(".")), Some(std::env::temp_dir()), home, Some(PathBuf::from("/tmp"))].into_iter().flatten() {
        let rescue = dir.join(&name);
        if seen.iter().any(|s| files::same_file(s, &rescue)) {
            continue;
        }
        seen.push(rescue.clone());
        let saved = if rescue.exists() { Err(Error::file(&rescue, "exists")) } else { files::write_atomic(&rescue, &bytes) };
        match saved {
            Ok(()) => return Ok(Saved::Rescued(with_tried(first, &tried, ""), rescue)),
            Err(e) => tried.push(e.to_string()),
        }
    }
    Err(with_tried(first, &tried, "; no other place took the checkpoint either"))
}

/// For a program whose printed answer is its product (`predict`, `evaluate`), unlike one
/// whose product is a file (`train_mnist`'s checkpoint): whether standard output failed, so
/// that the answer is lost; says so on standard error. The program then exits with code 2.
pub fn answer_lost() -> bool {
    if stdout_closed() {
        errln!("error: standard output was closed or full: the answer was not written");
    }
    stdout_closed()
}

/// After a failed write to standard output: says so on standard error (once, at the end).
pub fn report_closed_stdout() {
    if stdout_closed() {
        errln!("note: standard output was closed or full; printing stopped there, the work went on");
    }
}

/// The whole of `make_digit_sets` and `make_string_sets`: makes the sets named by `--sets`
/// (all of the family when none) from MNIST's last 2,000 test digits (mnist10k's evaluation
/// part, read from `data_dir`), writes them under `out`, prints each one's checksum. Exit 1
/// when a checksum differs from the frozen one, 2 on bad input.
pub fn make_frozen_sets<K: crate::digits::digit_sets::Frozen>(data_dir: Option<&Path>, out: &Path, sets: &[String]) -> ExitCode {
    use crate::digits::data::mnist::{Dataset, DatasetKind};
    let kinds = match crate::digits::digit_sets::choose::<K>(sets) {
        Ok(k) => k,
        Err(e) => return fail(e),
    };
    let data = match Dataset::load(DatasetKind::Mnist10k, data_dir) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let written = match crate::digits::digit_sets::write_sets(&kinds, &data.test, out) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    for set in &written {
        outln!("{set}");
    }
    let changed = written.iter().filter(|s| !s.frozen).count();
    if changed > 0 {
        errln!("{changed} set(s) differ from the frozen checksums in {}: the generator changed", K::SOURCE);
        return ExitCode::from(1);
    }
    report_closed_stdout();
    ExitCode::SUCCESS
}

/// The preparation flags `predict` and `evaluate` share (`#[command(flatten)]` in both).
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct PreparationFlags {
    /// A 3x3 median filter on the GPU (after any --noise) before the digit is cut out:
    /// --denoise (or --denoise=impulse) replaces only the pixels taken for salt or pepper,
    /// --denoise=median every pixel
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "impulse", value_name = "KIND")]
    pub denoise: Option<crate::digits::predict::Denoise>,
    /// Shear each digit upright by its second moments before fitting the box
    /// (default: as the model was trained, its checkpoint's `deskew`)
    #[arg(long, overrides_with = "no_deskew")]
    pub deskew: bool,
    /// Do not deskew
    #[arg(long, overrides_with = "deskew")]
    pub no_deskew: bool,
}

impl PreparationFlags {
    /// The preparation the flags ask for, else the one `checkpoint`'s model was trained with.
    pub fn preparation(&self, checkpoint: &crate::model::checkpoint::Checkpoint) -> crate::digits::predict::Preparation {
        use crate::digits::predict::Preparation;
        Preparation::from_flags(self.deskew, self.no_deskew, Preparation::of(checkpoint))
    }
}
