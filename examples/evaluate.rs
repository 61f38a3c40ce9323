//! Measures a kiln checkpoint on labelled digits: a dataset's test split, or a folder of
//! PNG/JPEG images with a labels file; optionally corrupted with seeded noise first.
//!
//!   cargo run --release --example evaluate -- --model M.safetensors --dataset mnist --data-dir DIR
//!   cargo run --release --example evaluate -- --model M.safetensors [--model M2.safetensors ...] --images DIR --labels FILE
//!       [--noise salt-pepper:P|gaussian:SIGMA] [--seed 1] [--denoise[=impulse|median]] [--deskew|--no-deskew] [--batch-size 256] [--json]
//!       [--plot-reliability R.png] [--plot-rejection E.png] [--tta N]
//!
//! Prints the accuracy, per-class precision and recall, the confusion matrix, and how far the
//! confidences can be trusted: the expected calibration error (15 bins) before and after the
//! checkpoint's temperature, and the error among accepted answers when the least confident
//! 0, 1, 2, 5 and 10% are rejected (with --json, one JSON object: `accuracy`, `per_class`,
//! `confusion`, `calibration`, ...).
//! Exit codes: 0 done, 2 bad input (flag, checkpoint, labels, unreadable image), a GPU error
//! or a lost answer (standard output closed or full).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln::checkpoint::Checkpoint;
use kiln::cli::{self, fail};
use kiln::data::{Dataset, DatasetKind};
use kiln::calibrate::Calibration;
use kiln::evaluate::{self, Metrics, Noise, Options};
use kiln::classify::Ensemble;
use kiln::{errln, outln};

#[derive(Parser, Debug)]
#[command(about = "Measure a kiln checkpoint on labelled digits")]
struct Args {
    /// Checkpoint written by train_mnist; give it several times for an ensemble (the mean
    /// of the checkpoints' probabilities)
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Evaluate this dataset's test split (mnist10k: its last 2,000 images)
    #[arg(long, conflicts_with_all = ["images", "labels"], required_unless_present_any = ["images", "strings"])]
    dataset: Option<DatasetKind>,
    /// Directory holding the dataset's IDX files (else $KILN_DATA/<dataset>, then ./data/<dataset>)
    #[arg(long, requires = "dataset")]
    data_dir: Option<PathBuf>,
    /// Folder of PNG/JPEG digits, prepared as predict prepares them
    #[arg(long, requires = "labels")]
    images: Option<PathBuf>,
    /// The folder's labels: 'NAME LABEL' per line ('NAME DIGITS' with --strings), # comments and blank lines allowed
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Folder of PNG/JPEG fields of handwritten digit strings, read as the read example reads them
    #[arg(long, requires = "labels", conflicts_with_all = ["dataset", "images", "noise", "denoise"])]
    strings: Option<PathBuf>,
    /// Corrupt each image first: salt-pepper:P (P in 0-1) or gaussian:SIGMA (SIGMA in pixel units, 0-255)
    #[arg(long, value_parser = parse_noise)]
    noise: Option<Noise>,
    /// The noise's seed: the same seed, the same corrupted images
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    prep: kiln::cli::PreparationFlags,
    /// Images per GPU step
    #[arg(long, default_value_t = kiln::classify::DEFAULT_BATCH as i64, allow_negative_numbers = true)]
    batch_size: i64,
    /// One JSON object on standard output instead of the tables
    #[arg(long)]
    json: bool,
    /// Test-time augmentation: read each image as the mean over N views (the image and N - 1
    /// small warps seeded by --seed)
    #[arg(long, default_value_t = 1)]
    tta: usize,
    /// Draw the reliability diagram (before and after the checkpoint's temperature) to this PNG
    #[arg(long)]
    plot_reliability: Option<PathBuf>,
    /// Draw the error-rejection curve to this PNG
    #[arg(long)]
    plot_rejection: Option<PathBuf>,
}

fn parse_noise(s: &str) -> Result<Noise, String> {
    s.parse()
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) if cli::answer_lost() => ExitCode::from(2),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// An error prefixed with the flag it concerns.
fn flag(name: &str) -> impl Fn(kiln::Error) -> String + '_ {
    move |e| format!("{name}: {e}")
}

fn run(args: &Args) -> Result<(), String> {
    if args.batch_size < 1 {
        return Err(format!("--batch-size: {} (expected at least 1)", args.batch_size));
    }
    if !(1..=kiln::tta::MAX_VIEWS).contains(&args.tta) {
        return Err(format!("--tta: {} (expected 1 to {} views per image)", args.tta, kiln::tta::MAX_VIEWS));
    }
    if let Some(dir) = &args.strings {
        return strings(args, dir);
    }
    for (name, plot) in [("--plot-reliability", &args.plot_reliability), ("--plot-rejection", &args.plot_rejection)] {
        if let Some(path) = plot {
            kiln::plot::check_path(path).map_err(flag(name))?;
            kiln::files::check_output(name, path).map_err(|e| e.to_string())?;
        }
    }
    // The cheap checks first: the checkpoints, the labels and the files, then the GPU.
    let checkpoints = args.model.iter().map(|m| Checkpoint::load(m).map_err(flag("--model"))).collect::<Result<Vec<_>, _>>()?;
    // each model reads its inputs prepared as it was trained: an ensemble's must agree
    let preparation = args.prep.preparation(&checkpoints[0]);
    if let Some(other) = checkpoints.iter().position(|c| args.prep.preparation(c) != preparation) {
        return Err(format!(
            "--model: {} was trained on deskewed digits and {} was not: give --deskew or --no-deskew for the whole ensemble",
            args.model[if preparation.deskew { 0 } else { other }].display(),
            args.model[if preparation.deskew { other } else { 0 }].display()
        ));
    }
    let options = Options { noise: args.noise, seed: args.seed, denoise: args.prep.denoise, preparation };
    let check = |dataset: &str| -> Result<(), String> {
        for (c, path) in checkpoints.iter().zip(&args.model) {
            evaluate::check_model(c, dataset).map_err(|e| format!("--model {}: {e}", path.display()))?;
        }
        Ok(())
    };
    let source = match (&args.dataset, &args.images, &args.labels) {
        (Some(kind), _, _) => {
            check(kind.name())?;
            let (test, dir) = Dataset::load_test(*kind, args.data_dir.as_deref()).map_err(|e| format!("--dataset {kind}: {}", kiln::cli::data_error(e, false)))?;
            Source::Split(*kind, test, dir)
        }
        (None, Some(dir), Some(labels)) => {
            check("mnist")?;
            let entries = evaluate::read_labels(labels).map_err(flag("--labels"))?;
            let files = evaluate::resolve(dir, labels, &entries).map_err(|e| format!("--images/--labels: {e}"))?;
            Source::Folder(files)
        }
        _ => return Err("give --dataset, or --images and --labels".into()),
    };
    for (c, path) in checkpoints.iter().zip(&args.model) {
        if c.dataset.is_empty() {
            errln!("warning: {}: the checkpoint does not say what it was trained on", path.display());
        }
    }
    let gpu = kiln::Gpu::new().map_err(|e| e.to_string())?;
    let names: Vec<String> = args.model.iter().map(|m| m.display().to_string()).collect();
    let mut classifier = Ensemble::new(&gpu, checkpoints, &names, args.batch_size as usize).map_err(flag("--model"))?.with_views(args.tta, args.seed).map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    let (what, answers) = match &source {
        Source::Split(kind, test, dir) => {
            let c = evaluate::evaluate_split(&mut classifier, &gpu, test, &options).map_err(|e| e.to_string())?;
            (format!("{kind} test split ({})", dir.display()), c)
        }
        Source::Folder(files) => {
            let c = evaluate::evaluate_folder(&mut classifier, &gpu, files, &options).map_err(|e| format!("--images: {e}"))?;
            (format!("{} ({})", args.images.as_ref().expect("folder").display(), args.labels.as_ref().expect("folder").display()), c)
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let confusion = &answers.metrics;
    // an ensemble's probabilities are the mean of its members', each at its own temperature
    let temperature = match classifier.members() {
        [one] => one.checkpoint().temperature,
        _ => 1.0,
    };
    let calibration = Calibration::measure(&answers.probs, &answers.labels, temperature);
    if let Some(path) = &args.plot_reliability {
        kiln::plot::plot_reliability(path, &calibration).map_err(flag("--plot-reliability"))?;
    }
    if let Some(path) = &args.plot_rejection {
        kiln::plot::plot_rejection(path, &calibration.rejection).map_err(flag("--plot-rejection"))?;
    }
    let noise = args.noise.map_or("none".to_string(), |n| format!("{n} (seed {})", args.seed));
    if args.json {
        let mut json = confusion.to_json();
        json["model"] = names[0].clone().into();
        json["models"] = names.clone().into();
        json["images"] = what.into();
        json["noise"] = args.noise.map(|n| n.to_string()).into();
        json["seed"] = args.seed.into();
        json["denoise"] = args.prep.denoise.map(|d| d.to_string()).into();
        json["deskew"] = preparation.deskew.into();
        json["tta"] = args.tta.into();
        json["seconds"] = seconds.into();
        json["calibration"] = serde_json::to_value(&calibration).map_err(|e| e.to_string())?;
        outln!("{json}");
    } else {
        if names.len() > 1 {
            outln!("ensemble: the mean of {} checkpoints' probabilities ({})", names.len(), names.join(", "));
        }
        if args.tta > 1 {
            outln!("test-time augmentation: each image the mean over {} views (seed {})", args.tta, args.seed);
        }
        print_report(&what, &noise, args.prep.denoise, confusion, seconds);
        print_calibration(&calibration);
    }
    Ok(())
}

/// `--strings DIR --labels FILE`: reads every field and prints the string scores.
fn strings(args: &Args, dir: &std::path::Path) -> Result<(), String> {
    use kiln::read::{score, Options, Reader};
    let labels = args.labels.as_ref().expect("--strings requires --labels");
    let [model] = &args.model[..] else {
        return Err(format!("--strings reads with one --model, not an ensemble of {}", args.model.len()));
    };
    let checkpoint = Checkpoint::load(model).map_err(flag("--model"))?;
    evaluate::check_model(&checkpoint, "mnist").map_err(flag("--model"))?;
    let entries = score::read_string_labels(labels).map_err(flag("--labels"))?;
    let files = score::resolve_strings(dir, labels, &entries).map_err(|e| format!("--strings/--labels: {e}"))?;
    let gpu = kiln::Gpu::new().map_err(|e| e.to_string())?;
    let mut reader = Reader::new(kiln::Classifier::new(&gpu, checkpoint, args.batch_size as usize).map_err(|e| e.to_string())?, Options::default());
    let start = std::time::Instant::now();
    let scores = score::evaluate_strings(&mut reader, &files).map_err(|e| format!("--strings: {e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let mut json = scores.to_json();
        json["model"] = model.display().to_string().into();
        json["strings"] = dir.display().to_string().into();
        json["seconds"] = seconds.into();
        json["fields_per_second"] = (files.len() as f64 / seconds).into();
        outln!("{json}");
    } else {
        outln!("fields: {} ({}); read in {seconds:.1} s ({:.1} fields/s)", dir.display(), labels.display(), files.len() as f64 / seconds);
        outln!("{scores}");
    }
    Ok(())
}

enum Source {
    /// A dataset's test split, read from the directory.
    Split(DatasetKind, kiln::data::Split, PathBuf),
    Folder(Vec<(PathBuf, u8)>),
}

fn print_report(what: &str, noise: &str, denoise: Option<kiln::predict::Denoise>, c: &Metrics, seconds: f64) {
    outln!("images: {what}; noise: {noise}; denoise: {}", denoise.map_or("off".to_string(), |d| d.to_string()));
    outln!("accuracy: {:.2}% ({} of {}) in {seconds:.1} s", 100.0 * c.accuracy_f64(), c.correct, c.rows);
    outln!("class  precision   recall  count");
    for s in c.per_class() {
        // a score of no answers (precision) or no images (recall) is undefined, not 0%
        let percent = |v: f64, of: u64| if of == 0 { "—".to_string() } else { format!("{:.2}%", 100.0 * v) };
        outln!("{:>5}  {:>9}  {:>7}  {:>5}", s.class, percent(s.precision, s.answered), percent(s.recall, s.count), s.count);
    }
    outln!("confusion (rows: label, columns: prediction):");
    outln!("{c}");
}

fn print_calibration(c: &Calibration) {
    let t = if c.temperature == 1.0 { "T = 1, not calibrated".to_string() } else { format!("T = {:.3}", c.temperature) };
    outln!("calibration ({t}): expected calibration error {:.2}% before, {:.2}% after ({} bins)", 100.0 * c.before.ece, 100.0 * c.after.ece, kiln::calibrate::BINS);
    outln!("rejected  accepted  error among accepted  lowest confidence kept");
    for r in &c.rejection {
        outln!("{:>7.0}%  {:>8}  {:>19.2}%  {:>22.4}", 100.0 * r.rejected, r.accepted, 100.0 * r.error_rate, r.threshold);
    }
}
