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
use kiln::cli::fail;
use kiln::data::{Dataset, DatasetKind};
use kiln::string_sets::{self, StringKind};
use kiln::{errln, files, outln};

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
    let mut kinds = Vec::new();
    for name in &args.sets {
        match string_sets::ALL.iter().find(|k| k.name() == name) {
            Some(k) => kinds.push(*k),
            None => return fail(format!("--sets: unknown set '{name}' (expected zip, touching, amount, photo)")),
        }
    }
    if kinds.is_empty() {
        kinds = string_sets::ALL.to_vec();
    }
    let data = match Dataset::load(DatasetKind::Mnist10k, args.data_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let mut changed = 0;
    for kind in kinds {
        let set = string_sets::generate(kind, &data.test, string_sets::SEED);
        if let Err(e) = write_set(&args.out, kind, &set) {
            return fail(e);
        }
        let sum = set.checksum();
        let verdict = if sum == kind.frozen() { "frozen" } else { "CHANGED" };
        changed += usize::from(sum != kind.frozen());
        outln!("{:<8} {} fields in {}  sha256 {sum} ({verdict})", kind.name(), set.fields.len(), args.out.join(kind.name()).display());
    }
    if changed > 0 {
        errln!("{changed} set(s) differ from the frozen checksums in src/digits/string_sets.rs: the generator changed");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn write_set(out: &std::path::Path, kind: StringKind, set: &string_sets::Strings) -> kiln::Result<()> {
    let dir = out.join(kind.name());
    std::fs::create_dir_all(&dir).map_err(|e| kiln::Error::file(&dir, format!("--out: cannot create the folder: {e}")))?;
    for (name, _, img) in &set.fields {
        files::write_png(&dir.join(name), img.as_raw(), img.dimensions(), image::ExtendedColorType::L8)?;
    }
    files::write_atomic(&dir.join("labels.txt"), set.labels_file().as_bytes())
}
