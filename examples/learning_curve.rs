//! Draws a learning curve (test accuracy against labelled training images, log x) from the
//! `--json` summaries of `train_mnist --train-limit N` runs, and writes it as CSV too.
//! `scripts/learning_curve.sh` runs the trainings and then this.
//!
//!   cargo run --release --example learning_curve -- --png curve.png --csv curve.csv runs/*.json
//!
//! Exit codes: 0 done, 2 a summary that cannot be read, or an output that cannot be written.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln::cli::{self, fail};
use kiln::plot::CurvePoint;
use kiln::{files, outln};

#[derive(Parser, Debug)]
#[command(about = "Plot test accuracy against labelled training images from train_mnist --json summaries")]
struct Args {
    /// train_mnist --json outputs (the last line of each is its summary)
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The PNG to draw
    #[arg(long)]
    png: PathBuf,
    /// Also write the table as CSV here
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Reference points to draw beside kiln's, as LABELS:ACCURACY,... (accuracy a fraction)
    #[arg(long, value_delimiter = ',')]
    reference: Vec<String>,
    /// The reference's name in the legend
    #[arg(long, default_value = "reference")]
    reference_name: String,
}

struct Run {
    point: CurvePoint,
    epochs: u64,
    seconds: f64,
}

fn read_run(path: &PathBuf) -> Result<Run, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let last = text.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or(format!("{}: no JSON summary line", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(last).map_err(|e| format!("{}: {e}", path.display()))?;
    let field = |k: &str| v[k].as_f64().ok_or(format!("{}: the summary has no number '{k}'", path.display()));
    Ok(Run {
        point: CurvePoint { labels: field("train_images")? as usize, accuracy: field("test_accuracy")? },
        epochs: field("epochs")? as u64,
        seconds: field("train_seconds")?,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut reference = Vec::new();
    for r in &args.reference {
        match r.split_once(':').and_then(|(n, a)| Some(CurvePoint { labels: n.parse().ok()?, accuracy: a.parse().ok()? })) {
            Some(p) => reference.push(p),
            None => return fail(format!("--reference {r}: expected LABELS:ACCURACY, e.g. 100:0.925")),
        }
    }
    if let Err(e) = kiln::plot::check_path(&args.png).map_err(|e| cli::for_flag("--png", e)).and_then(|_| files::check_output("--png", &args.png).map(|_| ())) {
        return fail(e);
    }
    let mut runs = Vec::new();
    for path in &args.runs {
        match read_run(path) {
            Ok(r) => runs.push(r),
            Err(e) => return fail(e),
        }
    }
    runs.sort_by_key(|r| r.point.labels);
    let mut csv = String::from("labels,test_accuracy,epochs,seconds\n");
    outln!("{:>8}  {:>8}  {:>6}  {:>8}", "labels", "accuracy", "epochs", "seconds");
    for r in &runs {
        outln!("{:>8}  {:>7.2}%  {:>6}  {:>8.0}", r.point.labels, 100.0 * r.point.accuracy, r.epochs, r.seconds);
        let _ = writeln!(csv, "{},{},{},{:.1}", r.point.labels, r.point.accuracy, r.epochs, r.seconds);
    }
    if let Some(path) = &args.csv {
        if let Err(e) = files::write_atomic(path, csv.as_bytes()) {
            return fail(e);
        }
    }
    let points: Vec<CurvePoint> = runs.iter().map(|r| r.point).collect();
    if let Err(e) = kiln::plot::plot_learning_curve(&args.png, &points, &reference, &args.reference_name) {
        return fail(e);
    }
    outln!("learning curve: {}", args.png.display());
    ExitCode::SUCCESS
}
