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
use kiln::cli::fail;
use kiln::data::{Dataset, DatasetKind};
use kiln::digit_sets::{self, SetKind};
use kiln::{errln, files, outln};

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
    let mut kinds = Vec::new();
    for name in &args.sets {
        match digit_sets::ALL.iter().find(|k| k.name() == name) {
            Some(k) => kinds.push(*k),
            None => return fail(format!("--sets: unknown set '{name}' (expected plain, thick, thin, lowres, photo)")),
        }
    }
    if kinds.is_empty() {
        kinds = digit_sets::ALL.to_vec();
    }
    let data = match Dataset::load(DatasetKind::Mnist10k, args.data_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let mut changed = 0;
    for kind in kinds {
        let set = digit_sets::generate(kind, &data.test, digit_sets::SEED);
        if let Err(e) = write_set(&args.out, kind, &set) {
            return fail(e);
        }
        let sum = set.checksum();
        let verdict = if sum == kind.frozen() { "frozen" } else { "CHANGED" };
        changed += usize::from(sum != kind.frozen());
        outln!("{:<7} {} images in {}  sha256 {sum} ({verdict})", kind.name(), set.images.len(), args.out.join(kind.name()).display());
    }
    if changed > 0 {
        errln!("{changed} set(s) differ from the frozen checksums in src/digits/digit_sets.rs: the generator changed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn write_set(out: &std::path::Path, kind: SetKind, set: &digit_sets::Generated) -> kiln::Result<()> {
    let dir = out.join(kind.name());
    std::fs::create_dir_all(&dir).map_err(|e| kiln::Error::file(&dir, format!("--out: cannot create the folder: {e}")))?;
    for (name, _, img) in &set.images {
        files::write_png(&dir.join(name), img.as_raw(), img.dimensions(), image::ExtendedColorType::L8)?;
    }
    files::write_atomic(&dir.join("labels.txt"), set.labels_file().as_bytes())
}
