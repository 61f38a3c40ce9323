//! Reads handwritten numbers (fields of digits) in PNG/JPEG images with a kiln checkpoint.
//!
//!   cargo run --release --example read -- --model model.safetensors field.png [...]
//!       [--json] [--reject 0.9] [--dump-segments DIR]
//!
//! Prints one line per image: `field.png: 90210 (0.97)`, or with digits under --reject
//! shown as `?`, `field.png: 9?210 unsure (0.41)`; with --json one JSON object per line
//! with each digit's box and top-3 probabilities. --dump-segments writes the 28x28 image
//! the classifier saw for each digit read: DIR/NAME-K.png. An image that cannot be read,
//! or holds no ink, gets an error line and the others are still read; the exit code is
//! then 2, as for any bad input and a lost answer (standard output closed or full).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use kiln::cli::{self, fail};
use kiln::read::{Options, Reader};
use kiln::{errln, files, outln, Classifier};

#[derive(Parser, Debug)]
#[command(about = "Read handwritten numbers with a kiln checkpoint")]
struct Args {
    /// Checkpoint written by train_mnist
    #[arg(long)]
    model: PathBuf,
    /// Readings whose confidence is below this are unsure (0-1)
    #[arg(long, default_value_t = 0.0)]
    reject: f32,
    /// One JSON object per image instead of the lines
    #[arg(long)]
    json: bool,
    /// Write each digit read as the classifier saw it: DIR/NAME-K.png
    #[arg(long)]
    dump_segments: Option<PathBuf>,
    /// Images to read
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Fields read per call: bounded memory for any number of images.
const CHUNK: usize = 64;

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.reject) {
        return fail(format!("--reject: {} (expected a probability in 0-1)", args.reject));
    }
    if let Some(dir) = &args.dump_segments {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return fail(format!("--dump-segments: {}: cannot create the folder: {e}", dir.display()));
        }
    }
    let gpu = match kiln::Gpu::new() {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let classifier = match Classifier::load(&gpu, &args.model) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(w) = classifier.checkpoint().dataset_warning(&["mnist", "mnist10k"]) {
        errln!("warning: {}: {w}", args.model.display());
    }
    let mut reader = Reader::new(classifier, Options { reject: args.reject });
    let mut failures = 0;
    for chunk in args.images.chunks(CHUNK) {
        if cli::stdout_closed() {
            break;
        }
        let mut ready = Vec::new();
        for path in chunk {
            match kiln::predict::load_gray(path) {
                Ok(img) => ready.push((path, img)),
                Err(e) => {
                    errln!("error: {e}");
                    failures += 1;
                }
            }
        }
        let images: Vec<_> = ready.iter().map(|(_, img)| img.clone()).collect();
        let readings = match reader.read(&images) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        for ((path, _), reading) in ready.iter().zip(readings) {
            if reading.digits.is_empty() {
                errln!("error: {}: no ink found (the image has almost no contrast)", path.display());
                failures += 1;
                continue;
            }
            if let Err(e) = dump(args.dump_segments.as_deref(), path, &reading) {
                errln!("error: {e}");
                failures += 1;
            }
            if args.json {
                let mut json = serde_json::to_value(&reading).expect("a reading serialises");
                json["image"] = path.display().to_string().into();
                outln!("{json}");
            } else if reading.accepted {
                outln!("{}: {} ({:.2})", path.display(), reading.text, reading.confidence);
            } else {
                outln!("{}: {} unsure ({:.2})", path.display(), reading.marked(), reading.confidence);
            }
        }
    }
    if failures > 0 {
        errln!("{failures} of {} images could not be read", args.images.len());
    }
    if cli::answer_lost() || failures > 0 {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Writes each digit's 28x28 input as DIR/NAME-K.png.
fn dump(dir: Option<&Path>, image: &Path, reading: &kiln::read::Reading) -> kiln::Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for (k, d) in reading.digits.iter().enumerate() {
        files::write_png(&dir.join(format!("{stem}-{k}.png")), d.input.as_raw(), d.input.dimensions(), image::ExtendedColorType::L8)?;
    }
    Ok(())
}
