//! Exports a kiln checkpoint as an ONNX model (opset 13).
//!
//!   cargo run --release --example export -- --model model.safetensors --onnx model.onnx
//!
//! With `--logits FILE` it also writes kiln's own GPU logits for the dataset's test split
//! (what `scripts/check_onnx.py` compares onnxruntime's output with). Exit code 2 on bad input.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use kiln::checkpoint::Checkpoint;
use kiln::cli::fail;
use kiln::data::mnist::{Dataset, DatasetKind, Split};
use kiln::files::{self, Existing};
use kiln::{outln, Classifier};

#[derive(Parser, Debug)]
#[command(
    about = "Export a kiln checkpoint as an ONNX model: input [N,1,28,28] normalised with the checkpoint's mean/std (in metadata_props), output logits [N,10]",
    long_about = "Export a kiln checkpoint as an ONNX model (opset 13).\n\n\
        Input 'input': float32 [N, 1, 28, 28], N the batch (dynamic), normalised as in training: \
        (pixel / 255 - mean) / std with the checkpoint's mean and std, which the model records in \
        its metadata_props under the keys 'mean' and 'std'. Output 'logits': float32 [N, 10] \
        (no softmax).\n\n\
        What exports: every model kind (cnn, mlp, lenet5, cnn-bn) and any model described with \
        kiln's layers (examples/custom_model.rs): Conv2d, Linear, MaxPool2d, AvgPool2d, \
        GlobalAvgPool, BatchNorm (as BatchNormalization with the running statistics), ReLU, \
        LeakyReLU, Tanh, Sigmoid, GELU (as Erf and arithmetic: opset 13 has no Gelu), Flatten, \
        Dropout (dropped: inference) and Residual (an Add). A layer that cannot be exported is \
        refused with the checkpoint file and the layer named."
)]
struct Args {
    /// Checkpoint written by train_mnist
    #[arg(long)]
    model: PathBuf,
    /// Where to write the ONNX model (written atomically; only a regular file is replaced,
    /// and the summary says so; '-' is refused: the model is binary, name a file)
    #[arg(long)]
    onnx: PathBuf,
    /// Also write kiln's GPU logits for the test split of --dataset to FILE:
    /// raw little-endian float32, [test images, 10] row-major
    #[arg(long, value_name = "FILE")]
    logits: Option<PathBuf>,
    /// For --logits: mnist | fashion | mnist10k (its test split is the last 2,000 MNIST test images)
    #[arg(long, default_value = "mnist10k")]
    dataset: DatasetKind,
    /// For --logits: directory holding the IDX files (else $KILN_DATA/<dataset>, then ./data/<dataset>)
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// kiln's GPU logits for the test split, as raw little-endian float32 [n, 10].
fn write_logits(ck: Checkpoint, test: &Split, path: &Path) -> kiln::Result<()> {
    let gpu = kiln::Gpu::new()?;
    let inputs = kiln::predict::normalise(&test.images.pixels, ck.mean, ck.std);
    let logits = Classifier::new(&gpu, ck, 256)?.logits_tensor(&inputs)?;
    let bytes: Vec<u8> = logits.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    files::write_atomic(path, &bytes)
}

/// The outputs must be files (not '-'), writable, distinct, and not the checkpoint.
/// Says whether `--onnx` replaces a file.
fn check_outputs(args: &Args) -> kiln::Result<Existing> {
    let mut paths: Vec<(&str, &Path)> = vec![("--model", &args.model), ("--onnx", &args.onnx)];
    paths.extend(args.logits.iter().map(|l| ("--logits", l.as_path())));
    for (flag, path) in &paths[1..] {
        if path.as_os_str() == "-" {
            return Err(kiln::Error::file(path, format!("{flag}: standard output is not supported (the output is binary): name a file")));
        }
    }
    let existing = files::check_output("--onnx", &args.onnx)?;
    if let Some(l) = &args.logits {
        files::check_output("--logits", l)?;
    }
    files::check_distinct(&paths)?;
    Ok(existing)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let existing = match check_outputs(&args) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let ck = match Checkpoint::load(&args.model) {
        Ok(c) => c,
        Err(e) => return fail(format_args!("--model: {e}")),
    };
    // the test split first, so that a bad --data-dir fails before anything is written
    let test = match args.logits.as_ref().map(|_| Dataset::load_test(args.dataset, args.data_dir.as_deref())).transpose() {
        Ok(d) => d,
        Err(e) => return fail(format_args!("--dataset {} --data-dir: {}", args.dataset, kiln::cli::data_error(e, false))),
    };
    let model = match kiln::onnx::export_checkpoint(&ck) {
        Ok(m) => m,
        Err(e) => return fail(format_args!("--model {}: cannot export its {} model: {e}", args.model.display(), ck.model.name())),
    };
    if let Err(e) = files::write_atomic(&args.onnx, &model.bytes) {
        return fail(format_args!("--onnx: {e}"));
    }
    outln!(
        "wrote {}{}: {} model, opset {}, {} bytes, {} initializers, nodes {}; input normalised with mean {} std {}",
        args.onnx.display(),
        if existing == Existing::File { " (replaced the earlier file)" } else { "" },
        ck.model.name(),
        kiln::onnx::OPSET,
        model.bytes.len(),
        model.initializers,
        model.op_types.join(" "),
        ck.mean,
        ck.std
    );
    if let (Some(path), Some((test, _))) = (&args.logits, &test) {
        if let Err(e) = write_logits(ck, test, path) {
            return fail(e);
        }
        let n = test.len();
        outln!("wrote {}: kiln's logits for the {n} test images of {}, float32 [{n}, 10]", path.display(), args.dataset);
    }
    ExitCode::SUCCESS
}
