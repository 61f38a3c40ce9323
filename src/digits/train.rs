//! Training runs: their settings ([`TrainConfig`]), reports, the state a resumed run needs
//! ([`TrainState`]), and [`train_from`], the epoch loop over a [`Trainer`] behind
//! `examples/train_mnist.rs`: data resident on the GPU, one submit per step, metrics read
//! every `progress_every` steps and once per epoch, then an evaluation pass over the
//! resident test split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::digits::data::mnist::{Dataset, DatasetKind, Split};
use crate::digits::predict;
use crate::digits::trainer::Evaluator;
pub use crate::digits::trainer::{epoch_seed, StepReport, Trainer};
pub use crate::kernels::data::Augment;
use crate::graph::autotune::TuneReport;
use crate::graph::ExecStats;
use crate::graph::NamedTensors;
use crate::kernels::gemm::GemmConfig;
use crate::kernels::optim::{Optimizer, Rule, Schedule};
use crate::kernels::softmax::Metrics;
use crate::model::nn::{Model, ModelKind};
use crate::runtime::gpu::Gpu;
use crate::model::checkpoint::{read_tensors, write_tensors, Checkpoint};
use crate::{Error, Result};

/// A training run's settings. What defines the run (all but where the data is, how often
/// progress is read, and a forced kernel) is recorded in the [`TrainState`] beside a
/// checkpoint, so that a resumed run is the same run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Which data set and split protocol.
    pub dataset: DatasetKind,
    /// Where its files are (else the usual places, see `data::mnist`); a [`TrainState`]
    /// records it apart from the other settings (it does not define the run).
    #[serde(skip)]
    pub data_dir: Option<PathBuf>,
    /// Download missing files.
    #[serde(skip)]
    pub download: bool,
    /// What to train: a built-in model's `ModelKind::spec()` or any described model.
    pub model: Model,
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per step (the last partial batch of an epoch is dropped).
    pub batch_size: usize,
    /// The update rule; its learning rate follows `lr_schedule` over the run's steps.
    pub rule: Rule,
    /// How the learning rate changes over the run.
    pub lr_schedule: LrSchedule,
    /// Label smoothing of the cross-entropy, in [0, 1) (0: none).
    pub label_smoothing: f32,
    /// Initialisation, shuffling, dropout and augmentation all follow from it.
    pub seed: u64,
    /// How the training images are varied on the GPU (`shaders/data.wgsl`): off, affine
    /// warps with stroke-width changes, plus elastic distortions, plus scanner effects.
    /// States written before the levels hold a bool (true: `Affine`).
    pub augment: Augment,
    /// Train on this many labelled images of the training split, class-balanced and drawn
    /// with `seed` ([`crate::digits::data::balanced_subset`]); `None`: the whole split.
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// The inputs' normalisation (pixel mean and std of [0, 1] pixels) when it is not the
    /// training split's: a fine-tuned model keeps its checkpoint's ([`crate::digits::fine_tune`]).
    #[serde(default)]
    pub normalisation: Option<(f32, f32)>,
    /// Train only the last layer's parameters (fine-tuning's `--freeze-features`); the
    /// layers before it keep their values.
    #[serde(default)]
    pub freeze_features: bool,
    /// Train (and evaluate) on deskewed digits: [`load_dataset`] puts every image of both
    /// splits through `predict`'s preparation with deskewing ([`predict::prepare_split`]),
    /// and the checkpoint says so, so that the front ends deskew what they read for it.
    #[serde(default)]
    pub deskew: bool,
    /// Evaluate on the test split after every this many epochs and after the last
    /// (0 or 1: every epoch); an epoch not evaluated reports NaN test figures.
    #[serde(skip)]
    pub eval_every: usize,
    /// Read the metrics every this many steps (0: only per epoch): the progress display,
    /// the loss curve, and the early stop of a diverging run come from these reads.
    #[serde(skip)]
    pub progress_every: usize,
    /// One kernel variant for every GEMM/conv step instead of autotuning.
    #[serde(skip)]
    pub gemm: Option<GemmConfig>,
}

/// How a model trains unless told otherwise: each built-in model's own ([`Recipe::of`], the
/// recipes README's figures were measured with), and fine-tuning's ([`Recipe::FINE_TUNE`]).
/// [`Recipe::resolve`] fills in what a [`RecipeChoice`] leaves open.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    /// adam | adamw | sgd.
    pub optimizer: &'static str,
    /// `None`: the optimizer's default (Adam and AdamW 1e-3, SGD 0.01).
    pub lr: Option<f32>,
    /// `None`: the optimizer's default (AdamW 0.01, else 0).
    pub weight_decay: Option<f32>,
    /// constant | cosine | onecycle.
    pub lr_schedule: &'static str,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f32,
    /// Augmentation level.
    pub augment: Augment,
    /// Passes over the training images.
    pub epochs: usize,
}

impl Recipe {
    /// Adam 1e-3 at full rate for 80% of the run, then a cosine to 0: the CNN's, the MLP's
    /// and LeNet-5's (BENCHMARKS.md, "How the recipe was chosen").
    const ADAM_COSINE: Recipe =
        Recipe { optimizer: "adam", lr: None, weight_decay: None, lr_schedule: "cosine", label_smoothing: 0.0, augment: Augment::Off, epochs: 5 };

    /// Fine-tuning a trained model on a few hundred of a user's images (`train_mnist --init`):
    /// 0.3 of training's rate, warmed up and annealed, with the robust augmentation (a small
    /// folder is seen many times), 120 passes. Chosen on UCI draws of 10 per class with
    /// seeds 4-6 (the README's figures are seeds 1-3), from the robust default: 98.84% of
    /// the others on average, against 98.23% with the earlier 40 passes of elastic
    /// augmentation, 98.61% with 80 passes, 98.60% at 1e-3 (MNIST's test set 0.3 point worse).
    pub const FINE_TUNE: Recipe =
        Recipe { optimizer: "adam", lr: Some(3e-4), weight_decay: None, lr_schedule: "onecycle", label_smoothing: 0.0, augment: Augment::Robust, epochs: 120 };

    /// A built-in model's recipe: `cnn-bn` trains with AdamW 3e-3 (weight decay 0.01), one
    /// cycle and label smoothing 0.1 (99.55% on mnist10k in 5 epochs, against 99.20% with
    /// the others' recipe); the others with Adam 1e-3, cosine.
    pub fn of(model: ModelKind) -> Recipe {
        match model {
            ModelKind::CnnBn => Recipe { optimizer: "adamw", lr: Some(3e-3), weight_decay: Some(0.01), lr_schedule: "onecycle", label_smoothing: 0.1, ..Recipe::ADAM_COSINE },
            ModelKind::Cnn | ModelKind::Mlp | ModelKind::Lenet5 => Recipe::ADAM_COSINE,
        }
    }

    /// The run's settings: what `choice` gives, the rest from this recipe. The recipe's rate
    /// and weight decay go with its optimizer: another optimizer gets that optimizer's defaults.
    pub fn resolve(&self, choice: &RecipeChoice) -> Result<Resolved> {
        let optimizer = choice.optimizer.as_deref().unwrap_or(self.optimizer);
        let own = optimizer == self.optimizer;
        let lr = choice.lr.or(self.lr.filter(|_| own));
        let wd = choice.weight_decay.or(self.weight_decay.filter(|_| own));
        let rule = match optimizer {
            "adam" => Rule::Adam { lr: lr.unwrap_or(1e-3), beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd.unwrap_or(0.0) },
            "adamw" => Optimizer::adamw(lr.unwrap_or(1e-3), wd.unwrap_or(0.01)).rule,
            "sgd" => Rule::Sgd { lr: lr.unwrap_or(0.01), momentum: choice.momentum, weight_decay: wd.unwrap_or(0.0) },
            other => return Err(Error::unsupported("RecipeChoice::optimizer", format!("{other}: expected adam, adamw or sgd"))),
        };
        let lr_schedule = match choice.lr_schedule.as_deref().unwrap_or(self.lr_schedule) {
            "constant" => LrSchedule::Constant,
            "cosine" => LrSchedule::Cosine { hold: choice.lr_hold },
            "onecycle" => LrSchedule::OneCycle { warmup: choice.warmup },
            other => return Err(Error::unsupported("RecipeChoice::lr_schedule", format!("{other}: expected constant, cosine or onecycle"))),
        };
        Ok(Resolved {
            rule,
            lr_schedule,
            label_smoothing: choice.label_smoothing.unwrap_or(self.label_smoothing),
            augment: choice.augment.unwrap_or(self.augment),
            epochs: choice.epochs.unwrap_or(self.epochs),
        })
    }
}

/// What the person running a training chose of its recipe; `None` leaves it to the
/// [`Recipe`]. `momentum`, `lr_hold` and `warmup` only shape the optimizer or schedule the
/// recipe or the choice names.
#[derive(Clone, Debug, PartialEq)]
pub struct RecipeChoice {
    /// adam | adamw | sgd.
    pub optimizer: Option<String>,
    /// Learning rate.
    pub lr: Option<f32>,
    /// Weight decay (L2 for adam and sgd, decoupled for adamw).
    pub weight_decay: Option<f32>,
    /// SGD's momentum.
    pub momentum: f32,
    /// constant | cosine | onecycle.
    pub lr_schedule: Option<String>,
    /// Cosine's fraction of the run at full rate.
    pub lr_hold: f64,
    /// One cycle's fraction of the run warming up.
    pub warmup: f64,
    /// Label smoothing.
    pub label_smoothing: Option<f32>,
    /// Augmentation level.
    pub augment: Option<Augment>,
    /// Passes over the training images.
    pub epochs: Option<usize>,
}

impl Default for RecipeChoice {
    /// Nothing chosen; momentum 0.9, hold 0.8, warmup 0.3 (`train_mnist`'s defaults).
    fn default() -> RecipeChoice {
        RecipeChoice {
            optimizer: None,
            lr: None,
            weight_decay: None,
            momentum: 0.9,
            lr_schedule: None,
            lr_hold: 0.8,
            warmup: 0.3,
            label_smoothing: None,
            augment: None,
            epochs: None,
        }
    }
}

/// A [`Recipe`] resolved against a [`RecipeChoice`]: the settings of [`TrainConfig`] it decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolved {
    /// The update rule.
    pub rule: Rule,
    /// The learning-rate schedule.
    pub lr_schedule: LrSchedule,
    /// Label smoothing.
    pub label_smoothing: f32,
    /// Augmentation level.
    pub augment: Augment,
    /// Passes over the training images.
    pub epochs: usize,
}

/// The learning rate over a whole run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LrSchedule {
    /// The rule's learning rate throughout.
    Constant,
    /// Full rate for this fraction of the run, then half a cosine down to 0 at its end.
    Cosine {
        /// The fraction of the run at full rate, in [0, 1).
        hold: f64,
    },
    /// A linear warmup from 1/25 of the rate, then a cosine decay to 0 (`Schedule::OneCycle`).
    OneCycle {
        /// The fraction of the run warming up, in (0, 1).
        warmup: f64,
    },
}

impl TrainConfig {
    /// Checks every setting that needs no data or GPU: run it before opening either.
    pub fn check(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::unsupported("TrainConfig::epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::unsupported("TrainConfig::batch_size", "must be at least 1"));
        }
        self.rule.check()?;
        if let Err(Error::Unsupported { message, .. }) = crate::kernels::softmax::check_smoothing(self.label_smoothing) {
            return Err(Error::unsupported("TrainConfig::label_smoothing", message));
        }
        match self.lr_schedule {
            LrSchedule::Cosine { hold } => Schedule::check_hold(hold)?,
            LrSchedule::OneCycle { warmup } => Schedule::check_warmup(warmup)?,
            LrSchedule::Constant => {}
        }
        if self.train_limit == Some(0) {
            return Err(Error::unsupported(
                "TrainConfig::train_limit",
                "0: expected a number of labelled training images from 1 to the training split's size",
            ));
        }
        Ok(())
    }

    /// Checks the settings that need the data (the training split's size): run it after
    /// loading the data, before opening the GPU. [`Trainer::new`] makes it too.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        let n = data.train.len();
        match self.train_limit {
            Some(limit) => crate::digits::data::subset::check_limit(limit, n),
            None if self.batch_size > n => {
                Err(Error::unsupported("TrainConfig::batch_size", format!("{}: must be at most the {n} training images", self.batch_size)))
            }
            None => Ok(()),
        }
    }
}

impl LrSchedule {
    /// The schedule in optimizer steps, for a run of `total` steps.
    pub fn for_steps(self, total: usize) -> Result<Schedule> {
        match self {
            LrSchedule::Constant => Ok(Schedule::Constant),
            LrSchedule::Cosine { hold } => Schedule::cosine(hold, total),
            LrSchedule::OneCycle { warmup } => Schedule::one_cycle(warmup, total),
        }
    }
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Cosine { hold } => write!(f, "cosine decay to 0 over the last {:.0}% of the run", 100.0 * (1.0 - hold)),
            LrSchedule::OneCycle { warmup } => {
                write!(f, "one cycle: linear warmup from 1/25 over the first {:.0}% of the run, then cosine decay to 0", 100.0 * warmup)
            }
        }
    }
}

/// One epoch's training and evaluation figures.
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f32,
    /// Fraction of training images classified right during the epoch.
    pub train_accuracy: f32,
    /// Mean loss over the test split after the epoch.
    pub test_loss: f32,
    /// Fraction of the test split classified right after the epoch.
    pub test_accuracy: f32,
    /// Training pass only.
    pub train_seconds: f64,
    /// Training images per second of the training pass.
    pub images_per_sec: f64,
    /// The evaluation pass.
    pub eval_seconds: f64,
}

/// What a run produced: the trained tensors, its state, its figures.
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// One report per epoch run.
    pub epochs: Vec<EpochReport>,
    /// The last evaluation: accuracy, per-class counts, confusion matrix.
    pub test: Metrics,
    /// Submits, readbacks, dispatches per step, GPU memory.
    pub stats: ExecStats,
    /// The training split's pixel mean (inputs are normalised with it).
    pub mean: f32,
    /// The training split's pixel standard deviation.
    pub std: f32,
    /// Process-independent start-up: from opening the GPU to the first submitted step.
    pub startup_seconds: f64,
    /// Where `startup_seconds` went.
    pub startup_phases: StartupPhases,
    /// The trained parameters and state, as a checkpoint holds them.
    pub params: NamedTensors,
    /// What resuming this run needs (saved beside the checkpoint by `--stop-after` and
    /// `--save-every-epoch`).
    pub state: TrainState,
    /// (epochs done, mean training loss since the previous point) at each metrics read.
    pub loss_curve: Vec<(f64, f32)>,
    /// Images in the training split.
    pub train_images: usize,
    /// Images in the test split.
    pub test_images: usize,
    /// Kernel variant choice: what was chosen, whether from the cache, what it cost.
    pub tune: TuneReport,
}

/// The parts of a run's start-up (`TrainReport::startup_seconds`), in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StartupPhases {
    /// Kernel variant choice, the trainer's pipelines and buffers, the training split's
    /// upload (`TuneReport::seconds` of it the autotuning).
    pub trainer: f64,
    /// The evaluator's pipelines and buffers and the test split's upload: built on a
    /// thread of its own beside the first epoch (natively), so not part of the start-up.
    pub evaluator: f64,
    /// The first epoch's shuffle and the recording and submit of its first step.
    pub first_step: f64,
}

/// What the trainer tells its caller as it goes (progress bars, logs).
pub trait Observer {
    /// Epoch `epoch` (1-based) of `steps` steps begins.
    fn epoch_start(&mut self, _epoch: usize, _steps: usize) {}
    /// After `step` steps of the epoch, with the metrics read so far this epoch.
    fn progress(&mut self, _step: usize, _metrics: &Metrics, _images_per_sec: f64) {}
    /// Epoch done and evaluated.
    fn epoch_end(&mut self, _report: &EpochReport) {}
    /// Whether [`Observer::snapshot`] should be called at every epoch end (it costs a
    /// readback of the parameters and the optimizer state).
    fn wants_snapshots(&self) -> bool {
        false
    }
    /// The run as it stands after `state.epochs_done` epochs: parameters and the state to
    /// resume from (`--save-every-epoch` saves both). An error stops the training.
    fn snapshot(&mut self, _params: &NamedTensors, _state: &TrainState) -> Result<()> {
        Ok(())
    }
}

/// What resuming a run needs besides its checkpoint: the run's settings, how far it got,
/// and the optimizer's state. A second file beside the checkpoint ([`TrainState::path_for`]),
/// so that the checkpoint stays an inference checkpoint PyTorch loads strictly.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// The run's settings.
    pub config: TrainConfig,
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimizer steps taken: the learning-rate schedule's position, Adam's t, and the
    /// dropout and augmentation counter.
    pub step: u32,
    /// The optimizer's moments per parameter (see [`Executor::read_optimizer_state`]).
    pub moments: NamedTensors,
    /// The SHA-256 (hex) of the checkpoint file this state was saved beside
    /// ([`TrainState::save_beside`]); [`Resume::load`] refuses any other checkpoint.
    /// `None` until saved beside one (and in states from before the pairing).
    pub checkpoint_sha256: Option<String>,
}

impl TrainState {
    /// `model.safetensors` -> `model.train-state.safetensors` (any other name: NAME.train-state.safetensors).
    pub fn path_for(checkpoint: &Path) -> PathBuf {
        let name = checkpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
        checkpoint.with_file_name(format!("{stem}.train-state.safetensors"))
    }

    /// Writes the state (atomically) to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let config = serde_json::to_string(&self.config).map_err(|e| Error::file(path, e))?;
        let mut meta = vec![("train_config", config), ("epochs_done", self.epochs_done.to_string()), ("step", self.step.to_string())];
        if let Some(sha) = &self.checkpoint_sha256 {
            meta.push(("checkpoint_sha256", sha.clone()));
        }
        if let Some(dir) = &self.config.data_dir {
            meta.push(("data_dir", dir.to_string_lossy().into_owned()));
        }
        write_tensors(path, &self.moments, &meta)
    }

    /// Saves the state beside the checkpoint file at `checkpoint` ([`TrainState::path_for`]),
    /// tied to it by the checkpoint's SHA-256: save the checkpoint first, so that a kill
    /// between the two saves leaves a pair [`Resume::load`] refuses, never a wrong one.
    pub fn save_beside(&self, checkpoint: &Path) -> Result<()> {
        let bytes = std::fs::read(checkpoint).map_err(|e| Error::file(checkpoint, format!("cannot read the checkpoint back: {e}")))?;
        let paired = TrainState { checkpoint_sha256: Some(sha256_hex(&bytes)), ..self.clone() };
        paired.save(&TrainState::path_for(checkpoint))
    }

    /// Reads a state written by [`TrainState::save`].
    pub fn load(path: &Path) -> Result<TrainState> {
        let (meta, moments) = read_tensors(path, "training state")?;
        let bad = |m: String| Error::file(path, format!("not a kiln training state: {m}"));
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("metadata has no '{k}'")));
        let mut config: TrainConfig = serde_json::from_str(get("train_config")?).map_err(|e| bad(format!("train_config: {e}")))?;
        config.data_dir = meta.get("data_dir").map(PathBuf::from);
        let epochs_done = get("epochs_done")?.parse().map_err(|e| bad(format!("epochs_done: {e}")))?;
        let step = get("step")?.parse().map_err(|e| bad(format!("step: {e}")))?;
        for (name, _, values) in &moments {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("tensor '{name}' holds {} at index {i}: the optimizer state is not usable", values[i])));
            }
        }
        Ok(TrainState { config, epochs_done, step, moments, checkpoint_sha256: meta.get("checkpoint_sha256").cloned() })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Which of the two files was modified later, for the person choosing which to keep.
fn newer(checkpoint: &Path, state: &Path) -> &'static str {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(checkpoint), modified(state)) {
        (Some(c), Some(s)) if c > s => "the checkpoint is newer than the state (a save stopped between the two files, or another run saved the checkpoint)",
        (Some(c), Some(s)) if s > c => "the state is newer than the checkpoint (another run saved the state, or the checkpoint was replaced by an older one)",
        _ => "both were modified at the same time",
    }
}

/// Where a run continues from: its checkpoint's parameters and its training state.
pub struct Resume {
    /// The checkpoint's tensors (parameters, then state).
    pub params: NamedTensors,
    /// The training state beside it.
    pub state: TrainState,
}

impl Resume {
    /// The checkpoint at `checkpoint` and the training state beside it
    /// ([`TrainState::path_for`]), checked to be of the same model.
    pub fn load(checkpoint: &Path) -> Result<Resume> {
        let bytes = crate::model::checkpoint::read_file(checkpoint, "checkpoint")?;
        let ck = Checkpoint::from_bytes(&bytes, checkpoint)?;
        let state_path = TrainState::path_for(checkpoint);
        if !state_path.exists() {
            return Err(Error::file(
                &state_path,
                "no training state beside the checkpoint (a run leaves one when it stops after an epoch or saves every epoch)",
            ));
        }
        let state = TrainState::load(&state_path)?;
        let checkpoint_sha = sha256_hex(&bytes);
        if let Some(sha) = state.checkpoint_sha256.as_deref().filter(|&sha| sha != checkpoint_sha) {
            return Err(Error::file(
                &state_path,
                format!(
                    "this training state (after epoch {}) was saved with another checkpoint than {} (SHA-256 {}.., the checkpoint's {}..): {}; \
                     resuming would re-train or mix runs: resume from the checkpoint saved with this state, or start the run again",
                    state.epochs_done,
                    checkpoint.display(),
                    &sha[..12.min(sha.len())],
                    &checkpoint_sha[..12],
                    newer(checkpoint, &state_path)
                ),
            ));
        }
        if state.config.model != ck.model {
            return Err(Error::file(&state_path, format!("this training state is of a '{}' model, the checkpoint of '{}'", state.config.model.name(), ck.model.name())));
        }
        // each moment is `KIND.PARAM` (`exp_avg.fc1.weight`) of a parameter of the checkpoint's shape
        for (name, shape, _) in &state.moments {
            let param = name.split_once('.').and_then(|(_, p)| ck.params.iter().find(|(n, _, _)| n == p));
            match param {
                Some((_, s, _)) if s == shape => {}
                Some((p, s, _)) => {
                    return Err(Error::file(&state_path, format!("not a kiln training state of this checkpoint: tensor '{name}' is {shape:?}, the parameter '{p}' {s:?}")))
                }
                None => return Err(Error::file(&state_path, format!("not a kiln training state of this checkpoint: tensor '{name}' is the moment of no parameter of its {} model", ck.model.name()))),
            }
        }
        Ok(Resume { params: ck.params, state })
    }
}

impl Observer for () {}

/// Loads the dataset (downloading when allowed and missing).
pub fn load_dataset(cfg: &TrainConfig) -> Result<Dataset> {
    let dir = cfg.data_dir.as_deref();
    let ds = if cfg.download {
        let mirrors = crate::digits::data::download::default_mirrors(cfg.dataset);
        Dataset::load_or_download(cfg.dataset, dir, &mirrors, false)?
    } else {
        Dataset::load(cfg.dataset, dir)?
    };
    if !cfg.deskew {
        return Ok(ds);
    }
    let preparation = predict::Preparation { deskew: true };
    let train = predict::prepare_split(&ds.train, &preparation)?;
    let test = predict::prepare_split(&ds.test, &preparation)?;
    Ok(Dataset { train, test, ..ds })
}

/// Trains `cfg.model` on `data` and evaluates after every epoch.
pub fn train(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, observer: &mut dyn Observer) -> Result<TrainReport> {
    train_from(gpu, cfg, data, observer, None, None)
}

/// [`train`], continuing `resume` (a run stopped after some epochs) and stopping after
/// epoch `stop_after` of `cfg.epochs` (what a preempted job does). With fixed kernels the
/// result is bit-identical to the run that never stopped: the same parameters, optimizer
/// moments, step count (schedule, dropout, augmentation) and per-epoch shuffles.
///
/// A loop over a [`Trainer`]: metrics read every `cfg.progress_every` steps and at each
/// epoch's end, an evaluation after every `cfg.eval_every` epochs and the last, timings.
pub fn train_from(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &Dataset,
    observer: &mut dyn Observer,
    resume: Option<&Resume>,
    stop_after: Option<usize>,
) -> Result<TrainReport> {
    train_start(gpu, cfg, data, observer, resume.map_or(Start::Fresh, Start::Resume), stop_after)
}

/// Where a run's parameters come from.
#[derive(Clone, Copy)]
pub enum Start<'a> {
    /// The model's initialisation (from `cfg.seed`).
    Fresh,
    /// A run stopped after some epochs ([`train_from`]).
    Resume(&'a Resume),
    /// A trained model's parameters and state (a checkpoint's tensors), with fresh optimizer
    /// moments and schedule: fine-tuning.
    Init(&'a NamedTensors),
}

/// [`train_from`] from any [`Start`].
pub fn train_start(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, observer: &mut dyn Observer, start: Start<'_>, stop_after: Option<usize>) -> Result<TrainReport> {
    let resume = match start {
        Start::Resume(r) => Some(r),
        _ => None,
    };
    let started = Instant::now();
    cfg.check()?;
    let first = resume.map_or(0, |r| r.state.epochs_done);
    let final_epoch = stop_after.unwrap_or(cfg.epochs);
    if final_epoch == 0 || final_epoch > cfg.epochs {
        return Err(Error::unsupported("train_from(stop_after)", format!("{final_epoch}: expected an epoch from 1 to the run's {}", cfg.epochs)));
    }
    if first >= final_epoch {
        return Err(Error::unsupported(
            "train_from(resume)",
            format!("the run has done {first} of its {} epochs: nothing is left before epoch {final_epoch}", cfg.epochs),
        ));
    }
    let (mut trainer, evaluator) = Trainer::without_evaluator(gpu, cfg, data, None)?;
    let phases = StartupPhases { trainer: started.elapsed().as_secs_f64(), ..Default::default() };
    match start {
        Start::Resume(r) => trainer.resume(r)?,
        Start::Init(params) => trainer.init(params)?,
        Start::Fresh => {}
    }
    // The evaluator (its pipelines, the test split's upload) is built on a second thread
    // while the first epoch trains, and joined when it first evaluates: its ~0.1 s of
    // pipeline compilation on a fresh GPU machine is then no part of the start-up. wasm32
    // has no threads: there it is built when it first evaluates.
    let rest = Epochs { final_epoch, started, phases };
    #[cfg(not(target_arch = "wasm32"))]
    return std::thread::scope(|scope| {
        let job = scope.spawn(|| evaluator.build(gpu, &data.test));
        let evaluator = move || job.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        run_epochs(cfg, observer, trainer, Box::new(evaluator), rest)
    });
    #[cfg(target_arch = "wasm32")]
    run_epochs(cfg, observer, trainer, Box::new(|| evaluator.build(gpu, &data.test)), rest)
}

/// The evaluator of a [`Trainer`] built without one, when it is first needed.
type Pending<'a, 'g> = Box<dyn FnOnce() -> Result<Option<Evaluator<'g>>> + 'a>;

/// What [`run_epochs`] carries over from set-up.
struct Epochs {
    final_epoch: usize,
    started: Instant,
    phases: StartupPhases,
}

/// The epochs of [`train_from`]: train, evaluate, report.
fn run_epochs<'g>(cfg: &TrainConfig, observer: &mut dyn Observer, mut trainer: Trainer<'g>, evaluator: Pending<'_, 'g>, e: Epochs) -> Result<TrainReport> {
    let Epochs { final_epoch, started, mut phases } = e;
    let mut evaluator = Some(evaluator);
    let (steps, batch, every) = (trainer.steps_per_epoch(), trainer.batch(), cfg.progress_every);
    let mut startup = None;
    let mut epochs = Vec::new();
    let mut loss_curve = Vec::new();
    let mut test = None;
    while trainer.epochs_done() < final_epoch {
        let epoch = trainer.epochs_done() + 1;
        observer.epoch_start(epoch, steps);
        let t0 = Instant::now();
        let mut point = |r: &StepReport| loss_curve.push(((epoch - 1) as f64 + r.step as f64 / steps as f64, r.loss));
        let mut s = 0;
        while s < steps {
            // the first step alone (the start-up ends with it), then on to the next read
            let next = match (startup, every) {
                (None, _) => 1,
                (_, 0) => steps,
                _ => every - s % every,
            };
            s += trainer.run(next)?;
            if startup.is_none() {
                let secs = started.elapsed().as_secs_f64();
                phases.first_step = secs - phases.trainer;
                startup = Some(secs);
            }
            if every > 0 && s % every == 0 && s < steps {
                let r = trainer.read()?;
                point(&r);
                observer.progress(s, &r.metrics, (s * batch) as f64 / t0.elapsed().as_secs_f64());
            }
        }
        let r = trainer.read()?; // waits for the epoch's last step
        let train_seconds = t0.elapsed().as_secs_f64();
        point(&r);
        observer.progress(steps, &r.metrics, (steps * batch) as f64 / train_seconds);

        let t1 = Instant::now();
        let evaluate = epoch == final_epoch || epoch.is_multiple_of(cfg.eval_every.max(1));
        let tm = if evaluate {
            if let Some(build) = evaluator.take() {
                trainer.evaluator = build()?;
                phases.evaluator = trainer.evaluator.as_ref().map_or(0.0, |e| e.seconds);
            }
            Some(trainer.evaluate()?)
        } else {
            None
        };
        let report = EpochReport {
            epoch,
            train_loss: r.metrics.mean_loss(),
            train_accuracy: r.metrics.accuracy(),
            test_loss: tm.as_ref().map_or(f32::NAN, |t| t.mean_loss()),
            test_accuracy: tm.as_ref().map_or(f32::NAN, |t| t.accuracy()),
            train_seconds,
            images_per_sec: (steps * batch) as f64 / train_seconds,
            eval_seconds: t1.elapsed().as_secs_f64(),
        };
        observer.epoch_end(&report);
        epochs.push(report);
        if tm.is_some() {
            test = tm;
        }
        if observer.wants_snapshots() && epoch < final_epoch {
            let (params, state) = trainer.snapshot()?;
            observer.snapshot(&params, &state)?;
        }
    }
    let (params, state) = trainer.snapshot()?;
    if observer.wants_snapshots() {
        observer.snapshot(&params, &state)?;
    }
    let (mean, std) = trainer.mean_std();
    Ok(TrainReport {
        epochs,
        test: test.expect("at least one epoch"),
        stats: trainer.stats(),
        mean,
        std,
        startup_seconds: startup.unwrap_or(0.0),
        startup_phases: phases,
        params,
        state,
        loss_curve,
        train_images: trainer.train_images(),
        test_images: trainer.test_images(),
        tune: trainer.tune().clone(),
    })
}

/// A per-kernel profile of `cfg`'s training step (`train_mnist --profile`, see
/// [`crate::graph::profile`]): the trainer [`train`] would build, on the first batch of
/// the shuffled training data, over `reps` repetitions after a warm-up. The steps run for
/// real; nothing is kept.
pub fn profile(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, reps: usize) -> Result<crate::graph::profile::Profile> {
    let (mut trainer, _) = Trainer::without_evaluator(gpu, cfg, data, None)?;
    trainer.train_data.shuffle(gpu, cfg.seed)?;
    trainer.executor.run_step(0)?;
    trainer.executor.profile(reps)
}

/// The images a run trains on: the training split, or its class-balanced subset of
/// `cfg.train_limit` images drawn with `cfg.seed` (refused when larger than the split).
pub fn training_split<'a>(cfg: &TrainConfig, data: &'a Dataset) -> Result<std::borrow::Cow<'a, Split>> {
    match cfg.train_limit {
        None => Ok(std::borrow::Cow::Borrowed(&data.train)),
        Some(n) => Ok(std::borrow::Cow::Owned(data.train.balanced(n, cfg.seed)?)),
    }
}

/// The batch a run trains with: `cfg.batch_size`, except that with a `train_limit` below it
/// the batch is the whole subset (an epoch is then one step over every image). Without a
/// limit a batch larger than the split is refused instead.
pub fn effective_batch(cfg: &TrainConfig, n_train: usize) -> usize {
    match cfg.train_limit {
        Some(_) => cfg.batch_size.min(n_train),
        None => cfg.batch_size,
    }
}
