//! Writes the frozen sets of handwritten digit strings (see `kiln::string_sets`) as PNGs and
//! a labels file per set, from MNIST's test set (its last 2,000 digits):
//!
//!   cargo run --release --example make_string_sets -- --data-dir ../shared/data/mnist --out target/string-sets
//!
//! Then `evaluate --model M --strings target/string-sets/zip --labels target/string-sets/zip/labels.txt`.
//! Prints each set's checksum and says whether it matches the frozen one.
//! Exit codes: 0 done (and every checksum matches), 1 a checksum differs, 2 bad input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln::string_sets::StringKind;

#[derive(Parser, Debug)]
#[command(about = "Write the frozen sets of handwritten digit strings")]
struct Args {
    /// Directory holding MNIST's test files (t10k-*)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to write the sets: one folder per set
    #[arg(long, default_value = "target/string-sets")]
    out: PathBuf,
    /// Sets to write (default: all): zip, touching, amount, photo
    #[arg(long, value_delimiter = ',')]
    sets: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    kiln::cli::make_frozen_sets::<StringKind>(args.data_dir.as_deref(), &args.out, &args.sets)
}
