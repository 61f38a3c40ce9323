//! Recognises digits in PNG/JPEG images with a kiln checkpoint, on the GPU.
//!
//!   cargo run --release --example predict -- --model model.safetensors digit.png [...]
//!
//! Prints the digit and the top-3 probabilities per image, in batches (any number of
//! images). An image that cannot be read gets an error line and the others still get
//! their answer; the exit code is then 2, as for any bad input, and as when the answers
//! cannot be written (a closed or full standard output).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use kiln::cli::{self, fail};
use kiln::files;
use kiln::{errln, outln, Classifier};

#[derive(Parser, Debug)]
#[command(about = "Recognise handwritten digits with a kiln checkpoint")]
struct Args {
    /// Checkpoint written by train_mnist
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    prep: kiln::cli::PreparationFlags,
    /// Write the 28x28 image the network saw, and beside it NAME-stages.png: each stage
    /// side by side (original, deskewed, boxed, final 28x28). With several images, one
    /// pair each: NAME-0.png and NAME-0-stages.png, ... in the order of the images
    #[arg(long)]
    dump_preprocessed: Option<PathBuf>,
    /// Images to classify
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Where image `i` of `n` is dumped: the path itself for one image, else NAME-i.EXT.
fn dump_path(dump: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return dump.to_path_buf();
    }
    suffixed(dump, &format!("-{i}"))
}

/// NAME.EXT with `suffix` after NAME.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}{ext}"))
}

/// Where image `i` of `n`'s stages are dumped: beside its 28x28, NAME-stages.EXT.
fn stages_path(dump: &Path, i: usize, n: usize) -> PathBuf {
    suffixed(&dump_path(dump, i, n), "-stages")
}

/// The strip of stages is this tall: each stage scaled to it.
const STRIP_HEIGHT: u32 = 112;

/// The dump files must not replace an input image, the checkpoint or each other.
fn check_outputs(args: &Args) -> kiln::Result<()> {
    let Some(dump) = &args.dump_preprocessed else { return Ok(()) };
    let n = args.images.len();
    let targets: Vec<PathBuf> = (0..n).flat_map(|i| [dump_path(dump, i, n), stages_path(dump, i, n)]).collect();
    for t in &targets {
        files::check_output("--dump-preprocessed", t)?;
    }
    let mut paths: Vec<(&str, &Path)> = vec![("--model", &args.model)];
    paths.extend(args.images.iter().map(|p| ("an input image", p.as_path())));
    paths.extend(targets.iter().map(|p| ("--dump-preprocessed", p.as_path())));
    files::check_distinct(&paths)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check_outputs(&args) {
        return fail(e);
    }
    let gpu = match kiln::Gpu::new() {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let mut classifier = match Classifier::load(&gpu, &args.model) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(w) = classifier.checkpoint().dataset_warning(&["mnist", "mnist10k"]) {
        errln!("warning: {}: {w}", args.model.display());
    }
    let preparation = args.prep.preparation(classifier.checkpoint());
    let n = args.images.len();
    let mut failures = 0;
    // Bounded memory: a batch of images is read, prepared and classified at a time.
    for (b, chunk) in args.images.chunks(classifier.batch()).enumerate() {
        if cli::stdout_closed() {
            break; // the answers are lost: said at the end
        }
        let mut ready = Vec::new();
        for (j, path) in chunk.iter().enumerate() {
            let i = b * classifier.batch() + j;
            let prepared = kiln::predict::load_gray(path)
                .and_then(|g| match args.prep.denoise {
                    Some(kind) => kiln::predict::denoise(&gpu, &g, kind),
                    None => Ok(g),
                })
                .and_then(|g| kiln::predict::stages(&g, path, &preparation))
                .and_then(|stages| match &args.dump_preprocessed {
                    Some(dump) => {
                        let (img, strip) = (&stages.digit, stages.strip(STRIP_HEIGHT));
                        files::write_png(&dump_path(dump, i, n), img.as_raw(), img.dimensions(), image::ExtendedColorType::L8)?;
                        files::write_png(&stages_path(dump, i, n), strip.as_raw(), strip.dimensions(), image::ExtendedColorType::L8)?;
                        Ok(stages.digit)
                    }
                    None => Ok(stages.digit),
                });
            match prepared {
                Ok(img) => ready.push((path, img)),
                Err(e) => {
                    errln!("error: {e}");
                    failures += 1;
                }
            }
        }
        let images: Vec<_> = ready.iter().map(|(_, img)| img.clone()).collect();
        let probs = match classifier.classify(&images) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        for ((path, _), p) in ready.iter().zip(probs) {
            let mut order: Vec<usize> = (0..10).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let top: Vec<String> = order[..3].iter().map(|&c| format!("{c}: {:.1}%", 100.0 * p[c])).collect();
            outln!("{}: {}   ({})", path.display(), order[0], top.join(", "));
        }
    }
    if failures > 0 {
        errln!("{failures} of {n} images could not be read");
    }
    if cli::answer_lost() || failures > 0 {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
