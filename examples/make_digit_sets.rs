//! Writes the frozen test sets of non-MNIST-looking digits (see `kiln::digit_sets`) as PNGs
//! and a labels file per set, from MNIST's test set (its last 2,000 digits):
//!
//!   cargo run --release --example make_digit_sets -- --data-dir ../shared/data/mnist --out target/digit-sets
//!
//! Then `evaluate --images target/digit-sets/thick --labels target/digit-sets/thick/labels.txt`.
//! Prints each set's checksum and says whether it matches the frozen one.
//! Exit codes: 0 done (and every checksum matches), 1 a checksum differs, 2 bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln::digit_sets::SetKind;

#[derive(Parser, Debug)]
#[command(about = "Write the frozen test sets of digits that do not look like MNIST's")]
struct Args {
    /// Directory holding MNIST's test files (t10k-*)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to write the sets: one folder per set
    #[arg(long, default_value = "target/digit-sets")]
    out: PathBuf,
    /// Sets to write (default: all): plain, thick, thin, lowres, photo
    #[arg(long, value_delimiter = ',')]
    sets: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    kiln::cli::make_frozen_sets::<SetKind>(args.data_dir.as_deref(), &args.out, &args.sets)
}
