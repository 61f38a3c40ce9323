//! Trains a CNN (or the original tutorial's MLP) on MNIST-style data on the GPU, reports
//! accuracy, per-class precision/recall and a confusion matrix, and saves a checkpoint.
//!
//!   cargo run --release --example train_mnist -- --dataset mnist10k --epochs 3
//!
//! Exit codes: 0 success, 1 accuracy below --min-accuracy, 2 bad input or GPU/data error
//! (also when the checkpoint or plot could not be written where asked: see kiln::cli).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::checkpoint::Checkpoint;
use kiln::cli::{self, fail, Saved};
use kiln::files::{self, Existing};
use kiln::{errln, outln, Classifier};
use kiln::data::mnist::DatasetKind;
use kiln::nn::ModelKind;
use kiln::ops::gemm::GemmConfig;
use kiln::ops::optim::{Rule, Schedule};
use kiln::ops::softmax::Metrics;
use kiln::train::{Augment, EpochReport, LrSchedule, Observer, Recipe, RecipeChoice, Resume, Start, TrainConfig, TrainReport, TrainState};

#[derive(Parser, Debug)]
#[command(about = "Train a digit classifier on the GPU with kiln")]
// Numbers may be negative where they parse (`--lr -1`), so that the check below can say
// why the value is refused instead of clap calling it an unknown flag.
struct Args {
    /// mnist | fashion | mnist10k (the MNIST test files split 8,000 train / 2,000 test)
    #[arg(long, default_value = "mnist")]
    dataset: DatasetKind,
    /// Directory holding the IDX files (else $KILN_DATA/<dataset>, then ./data/<dataset>)
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not download missing mnist/fashion files
    #[arg(long)]
    no_download: bool,
    /// cnn | mlp (the tutorial's 784-512-10 with dropout 0.2) | lenet5 (tanh, average pooling) | cnn-bn (BatchNorm).
    /// Each trains with its own recipe (optimizer, rate, schedule, label smoothing) unless
    /// a flag says otherwise
    #[arg(long, default_value = "cnn")]
    model: ModelKind,
    /// Passes over the training images (default: 5; with --init 120)
    #[arg(long, allow_negative_numbers = true)]
    epochs: Option<usize>,
    /// Images per step (with --init and no --batch-size: 32)
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    batch_size: usize,
    /// adam | adamw | sgd (default: the model's recipe; cnn-bn adamw, the others adam)
    #[arg(long)]
    optimizer: Option<String>,
    /// Weight decay: L2 in the gradient for adam and sgd, decoupled for adamw
    /// (default 0, adamw 0.01 as torch.optim.AdamW)
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f32>,
    /// Label smoothing of the cross-entropy, in [0, 1) (default: the model's recipe; cnn-bn 0.1, the others 0)
    #[arg(long, allow_negative_numbers = true)]
    label_smoothing: Option<f32>,
    /// Learning rate (default: the model's recipe with its optimizer, cnn-bn 3e-3; else 1e-3
    /// for Adam and AdamW, 0.01 for SGD)
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f32,
    /// constant | cosine: full rate, then a cosine decay to 0 at the last step | onecycle:
    /// linear warmup from 1/25 of the rate (--warmup), then a cosine decay to 0 (default: the
    /// model's recipe; cnn-bn onecycle, the others cosine)
    #[arg(long, value_parser = ["constant", "cosine", "onecycle"])]
    lr_schedule: Option<String>,
    /// With --lr-schedule cosine: the fraction of the run at full rate before the decay
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    lr_hold: f64,
    /// With --lr-schedule onecycle: the fraction of the run warming up, in (0, 1)
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    warmup: f64,
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    seed: u64,
    /// Vary the training images on the GPU: off | affine (random affine warps: rotation,
    /// scale, shear, shift, and stroke-width changes; what --augment alone means) | elastic
    /// (affine plus elastic distortions) | robust (elastic plus scanner effects: down-up
    /// sampling to 8-16 px, blur, binarisation). Default: off (with --init: robust)
    #[arg(long, num_args = 0..=1, default_missing_value = "affine", value_name = "LEVEL")]
    augment: Option<Augment>,
    /// Train on N labelled images of the training split, class-balanced and drawn with
    /// --seed (the test split stays whole); a --batch-size above N becomes N
    #[arg(long, allow_negative_numbers = true)]
    train_limit: Option<usize>,
    /// Evaluate on the test split after every N epochs and after the last
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    eval_every: usize,
    /// Where to write the checkpoint (safetensors; default model.safetensors). An existing
    /// checkpoint there is replaced (the summary says so); anything but a regular file is refused
    #[arg(long)]
    save: Option<PathBuf>,
    /// Write no checkpoint
    #[arg(long, conflicts_with = "save")]
    no_save: bool,
    /// Draw the loss (at every metrics read) and the test accuracy per epoch to this PNG
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Throughput mode: report steady-state training images/s (first epoch excluded when
    /// there are several) and process start to first step
    #[arg(long)]
    bench: bool,
    /// Profile the training step instead of training: per kernel, GPU µs (timestamp
    /// queries where the adapter has them), share, GFLOP/s or GB/s, over N steps; nothing
    /// is saved (with --json: the profile as JSON)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    profile: Option<i64>,
    /// Print one machine-readable JSON summary line at the end
    #[arg(long)]
    json: bool,
    /// No progress bars or per-epoch lines
    #[arg(long)]
    quiet: bool,
    /// Exit with status 1 if the final test accuracy is below this (0..1)
    #[arg(long, allow_negative_numbers = true)]
    min_accuracy: Option<f32>,
    /// Steps between metric readbacks (progress bar, loss curve, early stop of a diverging run)
    #[arg(long, default_value_t = 200, allow_negative_numbers = true)]
    progress_every: usize,
    /// Force one GEMM/conv kernel variant (tiled64, vec4, ...) instead of autotuning
    #[arg(long)]
    kernel: Option<String>,
    /// End the run after epoch N of its --epochs, leaving a resumable checkpoint: the
    /// --save file and its training state (NAME.train-state.safetensors) beside it
    #[arg(long, allow_negative_numbers = true)]
    stop_after: Option<usize>,
    /// Continue the run that left this checkpoint (and its training state) to its --epochs;
    /// the run's settings come from the state. --save defaults to this checkpoint
    #[arg(long, conflicts_with = "no_save")]
    resume: Option<PathBuf>,
    /// Save the checkpoint and its training state at every epoch end (a crash loses at most
    /// one epoch)
    #[arg(long, conflicts_with = "no_save")]
    save_every_epoch: bool,
    /// Hold out the last N images of the training split, and after training fit the softmax
    /// temperature on them: the checkpoint's confidences are then calibrated
    #[arg(long, allow_negative_numbers = true, conflicts_with = "init")]
    calibrate: Option<i64>,
    /// Fine-tune this trained checkpoint (its model and normalisation) on your own digits,
    /// --images DIR --labels FILE, mixed with MNIST (--mix-mnist). Defaults for 50-1,000
    /// images: 120 epochs, batch 32, Adam 3e-4 one cycle, --augment robust, evaluated on the
    /// test split after the last epoch
    #[arg(long, requires_all = ["images", "labels"], conflicts_with_all = ["resume", "stop_after", "save_every_epoch", "train_limit", "profile"])]
    init: Option<PathBuf>,
    /// With --init: the folder of labelled digit images (photos, scans, drawings), prepared
    /// as predict and evaluate --images prepare them
    #[arg(long, requires = "init")]
    images: Option<PathBuf>,
    /// With --init: the folder's labels, 'NAME LABEL' per line (evaluate's format)
    #[arg(long, requires = "init")]
    labels: Option<PathBuf>,
    /// With --init: the fraction of the training images drawn (class-balanced, --seed) from
    /// --dataset's training split so that the model keeps reading its digits; 0 for none
    /// (default 0.5: as many as yours)
    #[arg(long, requires = "init", allow_negative_numbers = true)]
    mix_mnist: Option<f64>,
    /// With --init: train only the last layer; the features before it stay as they are
    #[arg(long, requires = "init")]
    freeze_features: bool,
    /// Train and evaluate on deskewed digits (each image of both splits through predict's
    /// preparation, sheared upright); the checkpoint says so, and predict, evaluate, read,
    /// serve and the web page then deskew what they read for it. With --init: the
    /// checkpoint's own setting
    #[arg(long, conflicts_with = "init")]
    deskew: bool,
    /// Add N images that are not one digit (the reader's wrong cuts of generated fields of
    /// training digits: pairs, fragments), trained towards the uniform distribution, and N/2
    /// of its right cuts (their digit), so that the reader can tell a digit from a bad cut;
    /// seeded by --seed (kiln::read::train_data)
    #[arg(long, default_value_t = 0, conflicts_with_all = ["init", "resume", "train_limit"])]
    not_digits: usize,
}

/// The flags that define a run: with --resume they come from the run's training state.
const RUN_FLAGS: [&str; 17] = [
    "dataset", "model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "label_smoothing",
    "lr_schedule", "lr_hold", "warmup", "seed", "augment", "train_limit", "kernel", "deskew",
];

struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    /// --save-every-epoch: the checkpoint to write at each epoch end, and its model
    snapshots: Option<(PathBuf, Checkpoint)>,
}

impl Observer for Progress {
    fn wants_snapshots(&self) -> bool {
        self.snapshots.is_some()
    }
    fn snapshot(&mut self, params: &kiln::graph::NamedTensors, state: &TrainState) -> kiln::Result<()> {
        let Some((path, ck)) = &mut self.snapshots else { return Ok(()) };
        ck.params = params.clone();
        save_run(ck, state, path)
    }
    fn epoch_start(&mut self, epoch: usize, steps: usize) {
        if self.quiet || steps < 2 {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} steps {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(epoch.to_string());
        self.bar = Some(bar);
    }
    fn progress(&mut self, step: usize, m: &Metrics, ips: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {:.4} | {:.0} images/s", m.mean_loss(), ips));
        }
    }
    fn epoch_end(&mut self, r: &EpochReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if !self.quiet && r.test_accuracy.is_nan() {
            outln!(
                "epoch {}: train loss {:.4}, train accuracy {:.2}%, {:.1} s ({:.0} images/s)",
                r.epoch,
                r.train_loss,
                100.0 * r.train_accuracy,
                r.train_seconds,
                r.images_per_sec
            );
        } else if !self.quiet {
            outln!(
                "epoch {}: train loss {:.4}, train accuracy {:.2}%, test loss {:.4}, test accuracy {:.2}%, {:.1} s ({:.0} images/s)",
                r.epoch,
                r.train_loss,
                100.0 * r.train_accuracy,
                r.test_loss,
                100.0 * r.test_accuracy,
                r.train_seconds,
                r.images_per_sec
            );
        }
    }
}

/// The library's errors name `TrainConfig`'s fields and `train_from`'s parameters; the person running this typed flags.
fn flag_names(e: kiln::Error) -> kiln::Error {
    const FLAGS: [(&str, &str); 13] = [
        ("RecipeChoice::optimizer", "--optimizer"),
        ("RecipeChoice::lr_schedule", "--lr-schedule"),
        ("Rule::lr", "--lr"),
        ("Rule::momentum", "--momentum"),
        ("Schedule::warmup", "--warmup"),
        ("Schedule::hold", "--lr-hold"),
        ("TrainConfig::train_limit", "--train-limit"),
        ("TrainConfig::epochs", "--epochs"),
        ("TrainConfig::batch_size", "--batch-size"),
        ("TrainConfig::label_smoothing", "--label-smoothing"),
        ("TrainConfig::rule", "--lr"),
        ("train_from(resume)", "--resume"),
        ("train_from(stop_after)", "--stop-after"),
    ];
    cli::with_flags(e, &FLAGS)
}

/// Writes a checkpoint and then the training state beside it, tied to it (each atomically).
fn save_run(ck: &Checkpoint, state: &TrainState, path: &Path) -> kiln::Result<()> {
    files::write_atomic(path, &ck.usable_bytes(path)?)?;
    state.save_beside(path)
}

/// A run-defining flag's value in `c` as text (`None`: the run has no such setting, as an
/// Adam run has no momentum; a forced --kernel is not recorded).
fn setting(flag: &str, c: &TrainConfig) -> Option<String> {
    let (Rule::Sgd { lr, weight_decay, .. } | Rule::Adam { lr, weight_decay, .. } | Rule::AdamW { lr, weight_decay, .. }) = c.rule;
    Some(match (flag, c.rule, c.lr_schedule) {
        ("dataset", ..) => c.dataset.to_string(),
        ("model", ..) => c.model.to_json(),
        ("epochs", ..) => c.epochs.to_string(),
        ("batch_size", ..) => c.batch_size.to_string(),
        ("optimizer", Rule::Sgd { .. }, _) => "sgd".into(),
        ("optimizer", Rule::Adam { .. }, _) => "adam".into(),
        ("optimizer", Rule::AdamW { .. }, _) => "adamw".into(),
        ("lr", ..) => lr.to_string(),
        ("momentum", Rule::Sgd { momentum, .. }, _) => momentum.to_string(),
        ("weight_decay", ..) => weight_decay.to_string(),
        ("label_smoothing", ..) => c.label_smoothing.to_string(),
        ("lr_schedule", _, LrSchedule::Constant) => "constant".into(),
        ("lr_schedule", _, LrSchedule::Cosine { .. }) => "cosine".into(),
        ("lr_schedule", _, LrSchedule::OneCycle { .. }) => "onecycle".into(),
        ("lr_hold", _, LrSchedule::Cosine { hold }) => hold.to_string(),
        ("warmup", _, LrSchedule::OneCycle { warmup }) => warmup.to_string(),
        ("seed", ..) => c.seed.to_string(),
        ("augment", ..) => c.augment.to_string(),
        ("train_limit", ..) => c.train_limit?.to_string(),
        ("deskew", ..) => c.deskew.to_string(),
        _ => return None,
    })
}

/// The run to continue: its checkpoint and state, and its settings with this invocation's
/// data location (else the recorded one, while it still holds the files) and display flags.
/// A run-defining flag must equal the recorded setting (`given`: this invocation's settings).
fn resume_config(args: &Args, matches: &ArgMatches, given: &TrainConfig, path: &Path) -> kiln::Result<(TrainConfig, Resume)> {
    let resume = Resume::load(path).map_err(|e| cli::for_flag("--resume", e))?;
    let recorded = &resume.state.config;
    for flag in RUN_FLAGS {
        if matches.value_source(flag) != Some(ValueSource::CommandLine) {
            continue;
        }
        // flags that need another to take effect are compared as typed
        let typed = match flag {
            "momentum" => Some(args.momentum.to_string()),
            "lr_hold" => Some(args.lr_hold.to_string()),
            "warmup" => Some(args.warmup.to_string()),
            _ => setting(flag, given),
        };
        let had = setting(flag, recorded);
        if typed.is_none() || typed != had {
            let shown = |v: Option<String>| match (flag, v) {
                ("model", Some(_)) => recorded.model.name().to_string(),
                (_, Some(v)) => v,
                (_, None) => "no such setting".into(),
            };
            return Err(kiln::Error::unsupported(
                format!("--{}", flag.replace('_', "-")),
                format!(
                    "the run being resumed (--resume) has {}: a resumed run keeps its settings (give this flag only with the recorded value, or start a new run)",
                    shown(had)
                ),
            ));
        }
    }
    let data_dir = args.data_dir.clone().or_else(|| recorded.data_dir.clone().filter(|d| recorded.dataset.locate(Some(d)).is_ok()));
    let cfg = TrainConfig {
        data_dir,
        download: !args.no_download,
        progress_every: args.progress_every,
        eval_every: args.eval_every,
        gemm: None,
        ..recorded.clone()
    };
    Ok((cfg, resume))
}

/// Everything that can be checked before the data and the GPU are touched.
fn check_args(args: &Args, matches: &ArgMatches) -> kiln::Result<(TrainConfig, Option<Resume>, Option<PathBuf>, Existing, Option<Checkpoint>)> {
    // --lr-hold is checked even when --lr-schedule constant ignores it
    Schedule::check_hold(args.lr_hold).map_err(flag_names)?;
    Schedule::check_warmup(args.warmup).map_err(flag_names)?;
    let init = match &args.init {
        Some(path) => {
            let ck = Checkpoint::load(path).map_err(|e| cli::for_flag("--init", e))?;
            kiln::evaluate::check_model(&ck, &args.dataset.to_string()).map_err(|e| cli::for_flag("--init", e))?;
            if matches.value_source("model") == Some(ValueSource::CommandLine) {
                return Err(kiln::Error::unsupported("--model", "--init fine-tunes the checkpoint's own model: give one of the two"));
            }
            Some(ck)
        }
        None => None,
    };
    if let Some(f) = args.mix_mnist.filter(|f| !(0.0..1.0).contains(f)) {
        return Err(kiln::Error::unsupported("--mix-mnist", format!("{f}: expected a fraction from 0 to below 1")));
    }
    let recipe = if init.is_some() { Recipe::FINE_TUNE } else { Recipe::of(args.model) };
    let run = recipe.resolve(&recipe_choice(args)).map_err(flag_names)?;
    let given = |flag: &str| matches.value_source(flag) == Some(ValueSource::CommandLine);
    if let Some(n) = args.profile.filter(|&n| !(1..=100_000).contains(&n)) {
        return Err(kiln::Error::unsupported("--profile", format!("{n}: expected a number of steps from 1 to 100000")));
    }
    if let Some(a) = args.min_accuracy {
        if !(0.0..=1.0).contains(&a) {
            return Err(kiln::Error::unsupported("--min-accuracy", format!("{a}: expected a fraction between 0 and 1")));
        }
    }
    let gemm = match args.kernel.as_deref() {
        None => None,
        Some(name) => match GemmConfig::named(name) {
            Some(c) => Some(c),
            None => {
                let names: Vec<_> = GemmConfig::ALL.iter().map(|(n, _)| *n).collect();
                return Err(kiln::Error::unsupported("--kernel", format!("{name}: expected one of {}", names.join(", "))));
            }
        },
    };
    let cfg = TrainConfig {
        dataset: args.dataset,
        data_dir: args.data_dir.clone(),
        download: !args.no_download,
        model: init.as_ref().map_or_else(|| args.model.spec(), |ck| ck.model.clone()),
        epochs: run.epochs,
        batch_size: if init.is_some() && !given("batch_size") { kiln::fine_tune::BATCH } else { args.batch_size },
        rule: run.rule,
        lr_schedule: run.lr_schedule,
        label_smoothing: run.label_smoothing,
        seed: args.seed,
        augment: run.augment,
        train_limit: args.train_limit,
        normalisation: init.as_ref().map(|ck| (ck.mean, ck.std)),
        freeze_features: args.freeze_features,
        deskew: init.as_ref().map_or(args.deskew, |ck| ck.deskew),
        eval_every: if init.is_some() && !given("eval_every") { run.epochs } else { args.eval_every },
        progress_every: args.progress_every,
        gemm,
    };
    let (cfg, resume) = match &args.resume {
        Some(path) => {
            let (cfg, resume) = resume_config(args, matches, &cfg, path)?;
            (cfg, Some(resume))
        }
        None => (cfg, None),
    };
    cfg.check().map_err(flag_names)?;
    if let Some(n) = args.calibrate {
        if n < 1 {
            return Err(kiln::Error::unsupported("--calibrate", format!("{n}: expected a number of held-out images, at least 1")));
        }
        // the held-out images are not recorded in the training state: a resumed run would not know them
        if let Some(flag) = resumable_by(args) {
            return Err(kiln::Error::unsupported("--calibrate", format!("cannot go with {flag}: calibrate the finished run instead")));
        }
    }
    if let Some(n) = args.stop_after {
        if n == 0 || n >= cfg.epochs {
            return Err(kiln::Error::unsupported("--stop-after", format!("{n}: expected an epoch from 1 to {} (before the run's last, --epochs {})", cfg.epochs - 1, cfg.epochs)));
        }
        if args.no_save {
            return Err(kiln::Error::unsupported("--stop-after", "leaves a checkpoint to resume from: it cannot go with --no-save"));
        }
    }
    let default_save = args.resume.clone().unwrap_or_else(|| PathBuf::from("model.safetensors"));
    let save = (!args.no_save).then(|| args.save.clone().unwrap_or(default_save));
    let mut existing = Existing::Nothing;
    if let Some(s) = &save {
        existing = files::check_output("--save", s)?;
    }
    if let Some(p) = &args.plot {
        kiln::plot::check_path(p).map_err(|e| cli::for_flag("--plot", e))?;
        files::check_output("--plot", p)?;
    }
    // a resumable run also writes its training state beside the checkpoint
    let state = match (resumable_by(args), &save) {
        (Some(flag), Some(s)) => {
            let path = TrainState::path_for(s);
            files::check_output(&format!("{flag} (the training state beside --save)"), &path)?;
            Some(path)
        }
        _ => None,
    };
    let outputs: Vec<(&str, &Path)> = [("--save", save.as_deref()), ("the training state", state.as_deref()), ("--plot", args.plot.as_deref())]
        .into_iter()
        .filter_map(|(f, p)| Some((f, p?)))
        .collect();
    files::check_distinct(&outputs)?;
    Ok((cfg, resume, save, existing, init))
}

/// What the flags chose of the run's recipe (the rest comes from the model's).
fn recipe_choice(args: &Args) -> RecipeChoice {
    RecipeChoice {
        optimizer: args.optimizer.clone(),
        lr: args.lr,
        weight_decay: args.weight_decay,
        momentum: args.momentum,
        lr_schedule: args.lr_schedule.clone(),
        lr_hold: args.lr_hold,
        warmup: args.warmup,
        label_smoothing: args.label_smoothing,
        augment: args.augment,
        epochs: args.epochs,
    }
}

/// With --init: the training split becomes the --images folder mixed with a share of
/// `data`'s training split, and a batch larger than it the whole of it; with the line
/// that says so. Without: all as it was.
fn fine_tune_data(args: &Args, gpu: &kiln::Gpu, data: kiln::data::Dataset, cfg: TrainConfig) -> kiln::Result<(kiln::data::Dataset, TrainConfig, Option<String>)> {
    let (Some(init), Some(dir), Some(labels)) = (&args.init, &args.images, &args.labels) else { return Ok((data, cfg, None)) };
    let user = kiln::fine_tune::load_folder(gpu, dir, labels, kiln::predict::Preparation { deskew: cfg.deskew }).map_err(|e| cli::for_flag("--images/--labels", e))?;
    let fraction = args.mix_mnist.unwrap_or(kiln::fine_tune::DEFAULT_MIX_MNIST);
    let train = kiln::fine_tune::mix(&user, &data.train, fraction, cfg.seed).map_err(|e| cli::for_flag("--mix-mnist", e))?;
    let line = format!(
        "fine-tuning {} on {} images of {} and {} of {}'s training split{}",
        init.display(),
        user.len(),
        dir.display(),
        train.len() - user.len(),
        cfg.dataset,
        if cfg.freeze_features { " (--freeze-features: the last layer only)" } else { "" }
    );
    let cfg = TrainConfig { batch_size: cfg.batch_size.min(train.len()), ..cfg };
    Ok((kiln::data::Dataset { train, ..data }, cfg, Some(line)))
}

/// The flag that makes this run resumable (its training state then goes beside the
/// checkpoint), if any.
fn resumable_by(args: &Args) -> Option<&'static str> {
    [(args.stop_after.is_some(), "--stop-after"), (args.save_every_epoch, "--save-every-epoch"), (args.resume.is_some(), "--resume")]
        .into_iter()
        .find_map(|(on, flag)| on.then_some(flag))
}

fn main() -> ExitCode {
    let process_start = std::time::Instant::now();
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let (cfg, resume, save, existing, init) = match check_args(&args, &matches) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Decoding the dataset and opening the GPU overlap (each takes a good part of start-up).
    let ((data, gpu), open_seconds) = std::thread::scope(|s| {
        let loader = s.spawn(|| {
            let t = std::time::Instant::now();
            (kiln::train::load_dataset(&cfg), t.elapsed().as_secs_f64())
        });
        let t = std::time::Instant::now();
        let gpu = kiln::Gpu::new();
        let gpu_seconds = t.elapsed().as_secs_f64();
        let (data, data_seconds) = match loader.join() {
            Ok((d, secs)) => (Ok(d), secs),
            Err(e) => (Err(e), 0.0),
        };
        ((data, gpu), (gpu_seconds, data_seconds))
    });
    let mut data = match data {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return fail(cli::data_error(e, true)),
        Err(_) => return fail("loading the dataset failed (its thread stopped; see the message above)"),
    };
    // --calibrate: the last N training images are held out of training for the temperature
    let held_out = match args.calibrate.map(|n| n as usize) {
        Some(n) if n >= data.train.len() => {
            return fail(format!("--calibrate {n}: the {} training split has {} images; hold out fewer", cfg.dataset, data.train.len()))
        }
        Some(n) => {
            let (train, held) = data.train.split_at(data.train.len() - n);
            data.train = train;
            Some(held)
        }
        None => None,
    };
    if args.not_digits > 0 {
        let t = std::time::Instant::now();
        let cuts = kiln::read::train_data::cuts(&data.train, args.not_digits, args.not_digits / 2, cfg.seed, &kiln::predict::Preparation { deskew: cfg.deskew });
        data.train = kiln::read::train_data::appended(&data.train, &cuts);
        if !args.quiet {
            outln!("--not-digits: {} cuts of generated fields added ({:.1} s)", cuts.len(), t.elapsed().as_secs_f64());
        }
    }
    // the training state records where the data was found: `--resume` finds it there again
    let cfg = TrainConfig { data_dir: Some(std::fs::canonicalize(&data.dir).unwrap_or_else(|_| data.dir.clone())), ..cfg };
    let gpu = match gpu {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    // fine-tuning: the user's folder (prepared on this GPU) and a share of the training split
    let (data, cfg, fine_tuning) = match fine_tune_data(&args, &gpu, data, cfg) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if let Err(e) = cfg.check_data(&data) {
        return fail(flag_names(e));
    }
    let n_train = cfg.train_limit.unwrap_or(data.train.len());
    let batch = kiln::train::effective_batch(&cfg, n_train);
    if !args.quiet {
        outln!("adapter: {}", gpu.info().summary());
        outln!(
            "dataset: {} from {} ({} train{}, {} test{}); model: {}; batch {}; {}; lr schedule: {}; label smoothing {}; augment: {}",
            cfg.dataset,
            data.dir.display(),
            n_train,
            if cfg.train_limit.is_some() { ", class-balanced subset (--train-limit)" } else { "" },
            data.test.len(),
            if cfg.deskew { ", every digit prepared and deskewed" } else { "" },
            cfg.model.name(),
            batch,
            cfg.rule,
            cfg.lr_schedule,
            cfg.label_smoothing,
            cfg.augment
        );
        if let Some(line) = &fine_tuning {
            outln!("{line}");
        }
    }
    if let Some(reps) = args.profile {
        let profile = match kiln::train::profile(&gpu, &cfg, &data, reps as usize) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        if args.json {
            outln!("{}", serde_json::to_string(&profile).expect("a profile serialises"));
        } else {
            outln!("profile of one training step, median of {reps} ({}):\n{}", gpu.info().name, profile.table());
        }
        cli::report_closed_stdout();
        return ExitCode::SUCCESS;
    }
    let mut progress = Progress { bar: None, quiet: args.quiet || args.bench, snapshots: None };
    let before_train = process_start.elapsed().as_secs_f64();
    let model_checkpoint = |params: kiln::graph::NamedTensors, mean: f32, std: f32| Checkpoint {
        model: cfg.model.clone(),
        mean,
        std,
        dataset: cfg.dataset.to_string(),
        temperature: 1.0,
        deskew: cfg.deskew,
        params,
    };
    if let (true, Some(path)) = (args.save_every_epoch, &save) {
        let (mean, std) = data.mean_std();
        progress.snapshots = Some((path.clone(), model_checkpoint(Vec::new(), mean, std)));
    }
    let start = match (&init, &resume) {
        (Some(ck), _) => Start::Init(&ck.params),
        (None, Some(r)) => Start::Resume(r),
        (None, None) => Start::Fresh,
    };
    let mut report = match kiln::train::train_start(&gpu, &cfg, &data, &mut progress, start, args.stop_after) {
        Ok(r) => r,
        Err(e) => return fail(flag_names(e)),
    };
    for w in &report.tune.warnings {
        errln!("warning: {w}");
    }
    // from process start, not from opening the GPU
    report.startup_seconds += before_train;
    if args.bench {
        // the first epoch includes warm-up, unless it is the only one
        let steady = if report.epochs.len() > 1 { &report.epochs[1..] } else { &report.epochs[..] };
        outln!(
            "bench: {} {} on {}: {:.0} images/s steady state (epochs {}..={}, training pass only), process start to first step {:.2} s",
            cfg.model.name(),
            cfg.dataset,
            gpu.info().name,
            images_per_sec(&report, batch, steady),
            steady[0].epoch,
            report.epochs.len(),
            report.startup_seconds
        );
    }
    // The trained model first: nothing after this point may lose it.
    let mut failed = false;
    let mut temperature = 1.0;
    if let Some(held) = &held_out {
        let fitted = Classifier::new(&gpu, model_checkpoint(report.params.clone(), report.mean, report.std), kiln::classify::DEFAULT_BATCH)
            .and_then(|mut c| kiln::calibrate::fit_on(&mut c, held));
        match fitted {
            Ok(fit) => {
                temperature = fit.temperature;
                if !args.quiet {
                    outln!(
                        "calibration: softmax temperature {:.4}, fitted on the {} held-out training images (validation accuracy {:.2}%)",
                        fit.temperature,
                        held.len(),
                        100.0 * fit.accuracy
                    );
                }
            }
            // the model is still saved, uncalibrated
            Err(e) => {
                errln!("error: --calibrate: {e} (the checkpoint is saved uncalibrated)");
                failed = true;
            }
        }
    }
    // The training state goes beside the checkpoint when the run may be resumed; a stale
    // one from an earlier run at that path would resume the wrong run, so it goes.
    let resumable = resumable_by(&args).is_some();
    let saved = save.as_ref().map(|path| {
        let checkpoint = Checkpoint { temperature, ..model_checkpoint(report.params.clone(), report.mean, report.std) };
        // the state goes beside the checkpoint only once the checkpoint is saved there
        let mut save_state = |ck_path: &Path| {
            let state_path = TrainState::path_for(ck_path);
            let state_saved = if resumable { report.state.save_beside(ck_path) } else { std::fs::remove_file(&state_path).or(Ok(())) };
            if let Err(e) = state_saved {
                errln!("error: {e}");
                failed = true;
            }
        };
        match cli::save_or_rescue(&checkpoint, path) {
            Ok(Saved::Asked) => {
                save_state(path);
                match existing {
                    Existing::File => format!("{} (replaced the earlier file)", path.display()),
                    Existing::Nothing => path.display().to_string(),
                }
            }
            Ok(Saved::Rescued(e, rescue)) => {
                save_state(&rescue);
                errln!("error: {e}\nthe checkpoint was saved to {} instead", rescue.display());
                failed = true;
                rescue.display().to_string()
            }
            Err(e) => {
                errln!("error: {e}");
                failed = true;
                "not saved".into()
            }
        }
    });
    if let (Some(n), Some(path), false) = (args.stop_after, &save, failed) {
        outln!("stopped after epoch {n} of {}: continue with --resume {}", cfg.epochs, path.display());
    }
    if let Some(plot) = &args.plot {
        if let Err(e) = kiln::plot::plot_curve(plot, &report.epochs, &report.loss_curve) {
            errln!("error: {e} (the checkpoint is saved)");
            failed = true;
        }
    }
    if !args.quiet && !args.bench {
        print_summary(&report, saved.as_deref().unwrap_or("not saved (--no-save)"));
    }
    if args.json {
        outln!("{}", json_summary(&cfg, batch, &gpu, &report, saved.as_deref(), (before_train, open_seconds)));
    }
    cli::report_closed_stdout();
    let accuracy = report.test.accuracy();
    match args.min_accuracy {
        _ if failed => ExitCode::from(2),
        Some(min) if accuracy < min => {
            errln!("test accuracy {:.2}% is below --min-accuracy {:.2}%", 100.0 * accuracy, 100.0 * min);
            ExitCode::from(1)
        }
        _ => ExitCode::SUCCESS,
    }
}

fn print_summary(r: &TrainReport, checkpoint: &str) {
    let m = &r.test;
    outln!("\ntest accuracy: {:.2}% ({} of {})", 100.0 * m.accuracy(), m.correct, m.rows);
    outln!("class  precision  recall");
    for (c, (p, rc)) in m.precision().iter().zip(m.recall()).enumerate() {
        outln!("{c:>5}  {:>8.2}%  {:>6.2}%", 100.0 * p, 100.0 * rc);
    }
    outln!("\nconfusion matrix (rows: true class, columns: predicted)");
    let header: String = (0..m.confusion.len()).map(|c| format!("{c:>6}")).collect();
    outln!("     {header}");
    for (c, row) in m.confusion.iter().enumerate() {
        let counts: String = row.iter().map(|v| format!("{v:>6}")).collect();
        outln!("{c:>5}{counts}");
    }
    let s = &r.stats;
    outln!(
        "\nExecStats: {} steps, {} submits, {} host readbacks, {} dispatches per step, {:.1} MiB on the GPU at peak (activations {:.1} MiB planned vs {:.1} MiB without reuse, {} buffers)",
        s.steps,
        s.submits,
        s.readbacks,
        s.dispatches_per_step,
        s.gpu_peak_bytes as f64 / 1048576.0,
        s.planned_bytes as f64 / 1048576.0,
        s.naive_bytes as f64 / 1048576.0,
        s.activation_buffers
    );
    outln!("process start to first step: {:.2} s; checkpoint: {checkpoint}", r.startup_seconds);
    let t = &r.tune;
    if !t.chosen.is_empty() {
        let source = if t.from_cache { "from the cache" } else { "measured" };
        outln!("kernel variants ({source}, {:.2} s):", t.seconds);
        for (key, (variant, secs)) in &t.chosen {
            let time = if secs.is_nan() { "    (untimed)".to_string() } else { format!("{:>9.3} ms", secs * 1e3) };
            outln!("  {variant:<14} {time}  {key}");
        }
    }
}

/// Training images/s over `epochs` (training pass only): each epoch runs the full batches.
fn images_per_sec(r: &TrainReport, batch: usize, epochs: &[EpochReport]) -> f64 {
    let images = epochs.len() * (r.train_images / batch) * batch;
    images as f64 / epochs.iter().map(|e| e.train_seconds).sum::<f64>()
}

/// `opened`: seconds from process start to training (argument checks, then the dataset's
/// decode and the GPU's opening, overlapped) and those two (GPU, dataset) alone.
fn json_summary(cfg: &TrainConfig, batch: usize, gpu: &kiln::Gpu, r: &TrainReport, checkpoint: Option<&str>, opened: (f64, (f64, f64))) -> String {
    let (before_train, (gpu_open, dataset)) = opened;
    let p = r.startup_phases;
    serde_json::json!({
        "dataset": cfg.dataset.to_string(),
        "model": cfg.model.name(),
        "epochs": cfg.epochs,
        "batch_size": batch,
        "train_images": r.train_images,
        "test_images": r.test_images,
        "augment": cfg.augment,
        "deskew": cfg.deskew,
        "seed": cfg.seed,
        "train_seconds": r.epochs.iter().map(|e| e.train_seconds + e.eval_seconds).sum::<f64>(),
        "adapter": gpu.info().name,
        "backend": format!("{:?}", gpu.info().backend),
        "epoch_seconds": r.epochs.iter().map(|e| e.train_seconds).collect::<Vec<_>>(),
        // null for epochs not evaluated (--eval-every)
        "epoch_test_accuracy": r.epochs.iter().map(|e| e.test_accuracy).collect::<Vec<_>>(),
        "images_per_sec": images_per_sec(r, batch, &r.epochs),
        "images_per_sec_after_first_epoch": (r.epochs.len() > 1).then(|| images_per_sec(r, batch, &r.epochs[1..])),
        "test_accuracy": r.test.accuracy(),
        "recall": r.test.recall(),
        "precision": r.test.precision(),
        "host_readbacks": r.stats.readbacks,
        "submits": r.stats.submits,
        "steps": r.stats.steps,
        "gpu_peak_bytes": r.stats.gpu_peak_bytes,
        "dispatches_per_step": r.stats.dispatches_per_step,
        "startup_seconds": r.startup_seconds,
        "autotune_seconds": r.tune.seconds,
        // where startup_seconds went: before_training (overlapping gpu_open and
        // dataset_decode), then trainer (autotune included), first_step; the evaluator
        // is built beside the first epoch
        "startup_phases": {
            "before_training": before_train, "gpu_open": gpu_open, "dataset_decode": dataset,
            "trainer": p.trainer, "evaluator": p.evaluator, "first_step": p.first_step,
        },
        "autotune_from_cache": r.tune.from_cache,
        "autotune_choices": r.tune.chosen.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect::<std::collections::BTreeMap<_, _>>(),
        "checkpoint": checkpoint,
    })
    .to_string()
}
