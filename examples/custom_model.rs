//! Your own model on kiln: a small residual network with batch normalisation and global
//! average pooling, described with `kiln::nn`, trained with the library's `Trainer` (an epoch
//! per call here; the web page takes a few steps per call), saved as a
//! checkpoint that carries its description (so `predict` and `export` read it with no flag).
//!
//!   cargo run --release --example custom_model -- --data-dir ../shared/data/mnist --save custom.safetensors
//!
//! Copy this file to start your own: change `model()`, keep the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln::cli::fail;
use kiln::data::mnist::DatasetKind;
use kiln::nn::{BatchNorm, Conv2d, Flatten, GlobalAvgPool, Linear, Model, ReLU, Residual, Sequential};
use kiln::ops::optim::Optimizer;
use kiln::train::{LrSchedule, TrainConfig, Trainer};
use kiln::{files, outln};

#[derive(Parser)]
#[command(about = "Train a user-defined residual CNN with kiln (one epoch of mnist10k by default)")]
struct Args {
    /// Directory holding MNIST's IDX files
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Where to write the checkpoint
    #[arg(long, default_value = "custom.safetensors")]
    save: PathBuf,
}

/// conv 3x3 (1 -> 16, stride 2: 28x28 -> 14x14) -> BN -> ReLU
/// -> residual [conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN] -> ReLU
/// -> global average pooling -> flatten -> linear (16 -> 10)
fn model() -> Model {
    let block = Sequential::new()
        .add("conv1", Conv2d::new(16, 16, 3).padding(1))
        .add("bn1", BatchNorm { channels: 16 })
        .add("relu", ReLU)
        .add("conv2", Conv2d::new(16, 16, 3).padding(1))
        .add("bn2", BatchNorm { channels: 16 });
    Model::new(
        "tiny-resnet",
        Sequential::new()
            .add("stem", Conv2d::new(1, 16, 3).padding(1).stride(2))
            .add("bn", BatchNorm { channels: 16 })
            .add("relu1", ReLU)
            .add("block1", Residual { body: block })
            .add("relu2", ReLU)
            .add("pool", GlobalAvgPool)
            .add("flatten", Flatten)
            .add("fc", Linear::new(16, 10)),
    )
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = files::check_output("--save", &args.save) {
        return fail(e);
    }
    let cfg = TrainConfig {
        dataset: DatasetKind::Mnist10k,
        data_dir: args.data_dir,
        download: true,
        model: model(),
        epochs: args.epochs,
        batch_size: 64,
        rule: Optimizer::adamw(1e-2, 0.01).rule,
        lr_schedule: LrSchedule::Cosine { hold: 0.0 },
        label_smoothing: 0.0,
        seed: 1,
        augment: kiln::train::Augment::Off,
        train_limit: None,
        normalisation: None,
        freeze_features: false,
        deskew: false,
        eval_every: 1,
        progress_every: 0,
        gemm: None,
    };
    let run = || -> kiln::Result<()> {
        cfg.check()?;
        let data = kiln::train::load_dataset(&cfg)?;
        let gpu = kiln::Gpu::new()?;
        outln!("{} on {}", cfg.model.name(), gpu.info().summary());
        let mut trainer = Trainer::new(&gpu, &cfg, &data)?;
        while !trainer.is_done() {
            let epoch = trainer.step(trainer.steps_per_epoch())?; // a whole epoch, then one metrics read
            let test = trainer.evaluate()?;
            outln!("epoch {}: train loss {:.4}, test accuracy {:.2}%", epoch.epoch, epoch.metrics.mean_loss(), 100.0 * test.accuracy());
        }
        let ck = trainer.checkpoint()?;
        ck.save(&args.save)?;
        outln!("saved {} ({} tensors, the model description in its metadata)", args.save.display(), ck.params.len());
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
