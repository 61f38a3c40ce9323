//! An HTML report of what a trained model looks at: saliency maps and Grad-CAM (by kiln's
//! autodiff, on the GPU), the deletion test of their faithfulness, first-layer filters,
//! feature maps, the misclassified gallery and the confusion matrix.
//!
//!   cargo run --release --example explain -- --model model.safetensors --dataset mnist --out report
//!
//! With `--strings DIR --labels FILE` it reads a folder of digit strings instead (as
//! `evaluate --strings` does) and shows the misread fields: the segmentation the reader chose
//! and each digit's saliency; it prints how many were misread and how.
//!
//!   cargo run --release --example explain -- --model model.safetensors --strings sets/touching --labels sets/touching.txt --out report
//!
//! Writes DIR/index.html with PNGs beside it and their list, DIR/explain-files.txt: a later
//! report replaces those files and no others. Exit code 2 on bad input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use kiln::checkpoint::Checkpoint;
use kiln::cli::{self, fail};
use kiln::data::mnist::{Dataset, DatasetKind};
use kiln::explain::explain_split;
use kiln::explain::strings::explain_strings;
use kiln::read::score;
use kiln::{errln, outln};

#[derive(Parser, Debug)]
#[command(about = "Explain a kiln checkpoint: saliency, Grad-CAM, deletion test, filters, feature maps, errors, confusion matrix, as an HTML page; or, with --strings, the misread digit strings of a folder: segmentation and saliency per digit")]
struct Args {
    /// Checkpoint written by train_mnist
    #[arg(long)]
    model: PathBuf,
    /// mnist | fashion | mnist10k: its test split is explained (mnist10k: the last 2,000 test images)
    #[arg(long, default_value = "mnist")]
    dataset: DatasetKind,
    /// Directory holding the IDX files (else $KILN_DATA/<dataset>, then ./data/<dataset>)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder of PNG/JPEG fields of handwritten digit strings (as evaluate --strings takes):
    /// its misread fields are explained instead of a dataset's digits
    #[arg(long, requires = "labels", conflicts_with_all = ["dataset", "data_dir", "deletion_images"])]
    strings: Option<PathBuf>,
    /// The fields' labels: 'NAME DIGITS' per line, # comments and blank lines allowed
    #[arg(long, requires = "strings")]
    labels: Option<PathBuf>,
    /// Directory for index.html and its PNGs: a new or empty one, or an earlier report's.
    /// explain lists what it writes in DIR/explain-files.txt and replaces only those files;
    /// a non-empty directory without that list is refused
    #[arg(long)]
    out: PathBuf,
    /// Test digits with saliency and Grad-CAM maps on the page (with --strings: misread fields)
    #[arg(long, default_value_t = 16, allow_negative_numbers = true)]
    count: i64,
    /// Test digits the deletion test averages over
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    deletion_images: i64,
    /// Print a JSON summary (accuracy, deletion rows, files; with --strings: the misread
    /// fields and their kinds) instead of text
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    for (flag, v) in [("--count", args.count), ("--deletion-images", args.deletion_images)] {
        if v < 1 {
            return fail(format!("{flag}: expected at least 1, got {v}"));
        }
    }
    if let Err(e) = kiln::explain::report::check_dir(&args.out) {
        return fail(cli::for_flag("--out", e));
    }
    let checkpoint = match Checkpoint::load(&args.model) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(dir) = &args.strings {
        return match strings(&args, dir, checkpoint) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let (test, _) = match Dataset::load_test(args.dataset, args.data_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(cli::data_error(e, false)),
    };
    let expected = match args.dataset {
        DatasetKind::Fashion => vec!["fashion"],
        _ => vec!["mnist", "mnist10k"],
    };
    if let Some(w) = checkpoint.dataset_warning(&expected) {
        errln!("warning: {}: {w}", args.model.display());
    }
    let gpu = match kiln::Gpu::new() {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    let title = format!("{} trained on {} ({}), {} test split", checkpoint.model.name, checkpoint.dataset, args.model.display(), args.dataset.name());
    let summary = match explain_split(&gpu, checkpoint, &test, args.count as usize, args.deletion_images as usize, &args.out, &title) {
        Ok(s) => s,
        Err(e) => {
            let flags = [("explain_split(count)", "--count"), ("explain_split(deletion_images)", "--deletion-images"), ("explain_split(checkpoint)", "--model")];
            return fail(cli::for_flag("--out", cli::with_flags(e, &flags)));
        }
    };
    let index = summary.files.last().expect("index.html is written");
    if args.json {
        outln!("{}", serde_json::json!({ "report": index, "accuracy": summary.accuracy, "misclassified": summary.misclassified, "deletion_images": summary.deletion_images, "deletion": summary.deletion }));
    } else {
        outln!("{title}: accuracy {:.2}%, {} misclassified", 100.0 * summary.accuracy, summary.misclassified);
        outln!("deletion test over {} digits (drop of the class probability):", summary.deletion_images);
        for d in &summary.deletion {
            outln!("  {:>4.0}% of the pixels: salient {:.3}, random {:.3}", 100.0 * d.fraction, d.salient_drop, d.random_drop);
        }
        outln!("wrote {} ({} files)", index.display(), summary.files.len());
    }
    kiln::cli::report_closed_stdout();
    ExitCode::SUCCESS
}

/// `--strings DIR --labels FILE`: the misread fields, explained.
fn strings(args: &Args, dir: &Path, checkpoint: Checkpoint) -> Result<(), String> {
    let labels = args.labels.as_ref().expect("--strings requires --labels");
    kiln::evaluate::check_model(&checkpoint, "mnist").map_err(|e| format!("--model: {e}"))?;
    if let Some(w) = checkpoint.dataset_warning(&["mnist", "mnist10k"]) {
        errln!("warning: {}: {w}", args.model.display());
    }
    let entries = score::read_string_labels(labels).map_err(|e| format!("--labels: {e}"))?;
    let files = score::resolve_strings(dir, labels, &entries).map_err(|e| format!("--strings/--labels: {e}"))?;
    let gpu = kiln::Gpu::new().map_err(|e| e.to_string())?;
    let title = format!("{} trained on {} ({}), fields of {}", checkpoint.model.name, checkpoint.dataset, args.model.display(), dir.display());
    let summary = explain_strings(&gpu, checkpoint, &files, args.count as usize, &args.out, &title)
        // an image that cannot be read names itself; a file of the report names --out
        .map_err(|e| match e {
            kiln::Error::File { ref path, .. } if path.starts_with(&args.out) => cli::for_flag("--out", e).to_string(),
            e => e.to_string(),
        })?;
    let index = summary.files.last().expect("index.html is written");
    if args.json {
        let mut json = serde_json::to_value(&summary).map_err(|e| e.to_string())?;
        json["shown"] = summary.shown.len().into();
        json["report"] = serde_json::json!(index);
        outln!("{json}");
    } else {
        outln!("{title}");
        outln!("{summary}");
        outln!("wrote {} ({} files, {} misread fields shown)", index.display(), summary.files.len(), summary.shown.len());
    }
    kiln::cli::report_closed_stdout();
    Ok(())
}
