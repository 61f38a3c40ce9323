//! The MNIST trainer behind `examples/train_mnist.rs`: data resident on the GPU, one
//! submit per step, metrics read every `progress_every` steps and once per epoch, then an
//! evaluation pass over the resident test split.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::graph::autotune::{self, TuneReport, Tuning};
use crate::kernels::data::ResidentDataset;
use crate::digits::data::mnist::{Dataset, DatasetKind, Split};
use crate::graph::{ExecStats, Executor, Mode};
use crate::runtime::gpu::Gpu;
use crate::model::nn::Model;
use crate::kernels::gemm::GemmConfig;
use crate::kernels::optim::{Optimizer, Rule, Schedule};
use crate::kernels::softmax::Metrics;
use crate::graph::NamedTensors;
use crate::model::checkpoint::{read_tensors, write_tensors};
use crate::{Error, Result};

/// A training run's settings. What defines the run (all but where the data is, how often
/// progress is read, and a forced kernel) is recorded in the [`TrainState`] beside a
/// checkpoint, so that a resumed run is the same run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Which data set and split protocol.
    pub dataset: DatasetKind,
    /// Where its files are (else the usual places, see `data::mnist`).
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
    /// Random affine warps (rotation, scale, shear, shift) and stroke-width changes of the
    /// training images, on the GPU (`shaders/data.wgsl`).
    pub augment: bool,
    /// Train on this many labelled images of the training split, class-balanced and drawn
    /// with `seed` ([`crate::digits::data::balanced_subset`]); `None`: the whole split.
    #[serde(default)]
    pub train_limit: Option<usize>,
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
            return Err(Error::unsupported("--epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::unsupported("--batch-size", "must be at least 1"));
        }
        self.rule.check()?;
        crate::kernels::softmax::check_smoothing(self.label_smoothing)?;
        match self.lr_schedule {
            LrSchedule::Cosine { hold } => Schedule::check_hold(hold)?,
            LrSchedule::OneCycle { warmup } => Schedule::check_warmup(warmup)?,
            LrSchedule::Constant => {}
        }
        if self.train_limit == Some(0) {
            return Err(Error::unsupported(
                "--train-limit",
                "0: expected a number of labelled training images from 1 to the training split's size",
            ));
        }
        Ok(())
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
        let meta = [("train_config", config), ("epochs_done", self.epochs_done.to_string()), ("step", self.step.to_string())];
        write_tensors(path, &self.moments, &meta)
    }

    /// Reads a state written by [`TrainState::save`].
    pub fn load(path: &Path) -> Result<TrainState> {
        let (meta, moments) = read_tensors(path, "training state")?;
        let bad = |m: String| Error::file(path, format!("not a kiln training state: {m}"));
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("metadata has no '{k}'")));
        let config: TrainConfig = serde_json::from_str(get("train_config")?).map_err(|e| bad(format!("train_config: {e}")))?;
        let epochs_done = get("epochs_done")?.parse().map_err(|e| bad(format!("epochs_done: {e}")))?;
        let step = get("step")?.parse().map_err(|e| bad(format!("step: {e}")))?;
        Ok(TrainState { config, epochs_done, step, moments })
    }
}

/// Where a run continues from: its checkpoint's parameters and its training state.
pub struct Resume {
    /// The checkpoint's tensors (parameters, then state).
    pub params: NamedTensors,
    /// The training state beside it.
    pub state: TrainState,
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
    Ok(ds)
}

fn resident(gpu: &Gpu, split: &Split, mean: f32, std: f32) -> Result<ResidentDataset> {
    let im = &split.images;
    ResidentDataset::upload(gpu, &im.pixels, &split.labels, im.rows, im.cols, mean, std)
}

/// Trains `cfg.model` on `data` and evaluates after every epoch.
pub fn train(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, observer: &mut dyn Observer) -> Result<TrainReport> {
    train_from(gpu, cfg, data, observer, None, None)
}

/// [`train`], continuing `resume` (a run stopped after some epochs) and stopping after
/// epoch `stop_after` of `cfg.epochs` (what a preempted job does). With fixed kernels the
/// result is bit-identical to the run that never stopped: the same parameters, optimizer
/// moments, step count (schedule, dropout, augmentation) and per-epoch shuffles.
pub fn train_from(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &Dataset,
    observer: &mut dyn Observer,
    resume: Option<&Resume>,
    stop_after: Option<usize>,
) -> Result<TrainReport> {
    let started = Instant::now();
    cfg.check()?;
    let first = resume.map_or(0, |r| r.state.epochs_done);
    let final_epoch = stop_after.unwrap_or(cfg.epochs);
    if final_epoch == 0 || final_epoch > cfg.epochs {
        return Err(Error::unsupported("--stop-after", format!("{final_epoch}: expected an epoch between 1 and --epochs {}", cfg.epochs)));
    }
    if first >= final_epoch {
        return Err(Error::unsupported(
            "--resume",
            format!("the run has done {first} of its {} epochs: nothing is left before epoch {final_epoch}", cfg.epochs),
        ));
    }
    let Setup { mut trainer, tuning, tune, train_data, batch, steps, n_train, mean, std } = setup(gpu, cfg, data)?;
    let phases = StartupPhases { trainer: started.elapsed().as_secs_f64(), ..Default::default() };
    // Evaluation batches: 256 rows on GPUs; on CPU adapters the training batch, so its
    // im2col columns fit the scratch region the trainer already holds (Gpu::scratch).
    let eval_batch = if gpu.info().is_cpu() { batch } else { batch.max(256) }.min(data.test.len().max(1));
    let eval_model = cfg.model.build_smoothed(eval_batch, cfg.seed, cfg.label_smoothing)?;
    let shared = trainer.shared_params();
    let build_evaluator = move || -> Result<Evaluator<'_>> {
        let built = Instant::now();
        let mut executor =
            Executor::new_sharing(gpu, &eval_model.graph, Mode::Eval, &tuning, &shared).map_err(|e| batch_error(e, eval_batch))?;
        let data = resident(gpu, &data.test, mean, std)?;
        executor.attach_dataset(&data, false, 0)?;
        Ok(Evaluator { executor, _data: data, seconds: built.elapsed().as_secs_f64() })
    };
    if let Some(r) = resume {
        trainer.write_model(&r.params)?;
        trainer.write_optimizer_state(r.state.step, &r.state.moments)?;
    }
    // The evaluator (its pipelines, the test split's upload) is built on a second thread
    // while the first epoch trains, and joined when it first evaluates: its ~0.1 s of
    // pipeline compilation on a fresh GPU machine is then no part of the start-up. wasm32
    // has no threads: there it is built when it first evaluates.
    let rest = Epochs { first, final_epoch, batch, steps, eval_batch, n_train, mean, std, tune, train_data, started, phases };
    #[cfg(not(target_arch = "wasm32"))]
    return std::thread::scope(|scope| {
        let job = scope.spawn(build_evaluator);
        let evaluator = Deferred::new(move || job.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        run_epochs(gpu, cfg, data, observer, trainer, evaluator, rest)
    });
    #[cfg(target_arch = "wasm32")]
    run_epochs(gpu, cfg, data, observer, trainer, Deferred::new(build_evaluator), rest)
}

/// The evaluation executor beside a trainer, with the test split it reads.
struct Evaluator<'g> {
    executor: Executor<'g>,
    _data: ResidentDataset,
    /// How long building it took (its own thread's time where it ran beside training).
    seconds: f64,
}

/// A value built elsewhere, taken when first needed.
struct Deferred<'a, T> {
    job: Option<Box<dyn FnOnce() -> Result<T> + 'a>>,
    value: Option<T>,
}

impl<'a, T> Deferred<'a, T> {
    fn new(job: impl FnOnce() -> Result<T> + 'a) -> Self {
        Deferred { job: Some(Box::new(job)), value: None }
    }

    /// The value, built by the job the first time.
    fn get(&mut self) -> Result<&mut T> {
        if let Some(job) = self.job.take() {
            self.value = Some(job()?);
        }
        self.value.as_mut().ok_or_else(|| Error::unsupported("evaluator", "its construction failed earlier"))
    }
}

/// What [`run_epochs`] carries over from set-up.
struct Epochs {
    first: usize,
    final_epoch: usize,
    batch: usize,
    steps: usize,
    eval_batch: usize,
    n_train: usize,
    mean: f32,
    std: f32,
    tune: TuneReport,
    train_data: ResidentDataset,
    started: Instant,
    phases: StartupPhases,
}

/// The epochs of [`train_from`]: train, evaluate, report.
fn run_epochs(
    gpu: &Gpu,
    cfg: &TrainConfig,
    data: &Dataset,
    observer: &mut dyn Observer,
    mut trainer: Executor,
    mut evaluator: Deferred<Evaluator>,
    e: Epochs,
) -> Result<TrainReport> {
    let Epochs { first, final_epoch, batch, steps, eval_batch, n_train, mean, std, tune, train_data, started, mut phases } = e;
    let eval_steps = data.test.len().div_ceil(eval_batch);
    let mut startup = None;
    let mut epochs = Vec::new();
    let mut loss_curve = Vec::new();
    let mut test = None;
    for epoch in first + 1..=final_epoch {
        train_data.shuffle(gpu, cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64))?;
        trainer.reset_metrics()?;
        observer.epoch_start(epoch, steps);
        let t0 = Instant::now();
        let mut last = (0.0f32, 0u32); // loss sum and rows at the previous read
        let mut point = |m: &Metrics, s: usize| {
            let rows = m.rows.saturating_sub(last.1).max(1);
            loss_curve.push(((epoch - 1) as f64 + s as f64 / steps as f64, (m.loss_sum - last.0) / rows as f32));
            last = (m.loss_sum, m.rows);
        };
        for s in 0..steps {
            trainer.run_step((s * batch) as u32)?;
            if startup.is_none() {
                let secs = started.elapsed().as_secs_f64();
                phases.first_step = secs - phases.trainer;
                startup = Some(secs);
            }
            if cfg.progress_every > 0 && (s + 1) % cfg.progress_every == 0 && s + 1 < steps {
                let m = trainer.read_metrics()?;
                check_finite(&m, epoch, s + 1)?;
                point(&m, s + 1);
                observer.progress(s + 1, &m, ((s + 1) * batch) as f64 / t0.elapsed().as_secs_f64());
            }
        }
        let m = trainer.read_metrics()?; // waits for the epoch's last step
        let train_seconds = t0.elapsed().as_secs_f64();
        check_finite(&m, epoch, steps)?;
        point(&m, steps);
        observer.progress(steps, &m, (steps * batch) as f64 / train_seconds);

        let t1 = Instant::now();
        let evaluate = epoch == final_epoch || epoch % cfg.eval_every.max(1) == 0;
        let tm = if evaluate {
            let evaluator = evaluator.get()?;
            phases.evaluator = evaluator.seconds;
            let evaluator = &mut evaluator.executor;
            evaluator.reset_metrics()?;
            for s in 0..eval_steps {
                evaluator.run_step((s * eval_batch) as u32)?;
            }
            Some(evaluator.read_metrics()?)
        } else {
            None
        };
        let report = EpochReport {
            epoch,
            train_loss: m.mean_loss(),
            train_accuracy: m.accuracy(),
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
            let (params, state) = snapshot(&trainer, cfg, epoch)?;
            observer.snapshot(&params, &state)?;
        }
    }
    let (params, state) = snapshot(&trainer, cfg, final_epoch)?;
    if observer.wants_snapshots() {
        observer.snapshot(&params, &state)?;
    }
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
        train_images: n_train,
        test_images: data.test.len(),
        tune,
    })
}

/// The trainer a config describes, with its kernels and its resident training data.
struct Setup<'g> {
    trainer: Executor<'g>,
    tuning: Tuning,
    tune: TuneReport,
    train_data: ResidentDataset,
    batch: usize,
    steps: usize,
    n_train: usize,
    mean: f32,
    std: f32,
}

/// Builds `cfg`'s trainer on `data`: the training split (or its `--train-limit` subset),
/// kernels (autotuned unless fixed), the optimizer over the whole run, the data uploaded
/// and attached.
fn setup<'g>(gpu: &'g Gpu, cfg: &TrainConfig, data: &Dataset) -> Result<Setup<'g>> {
    let train_split = training_split(cfg, data)?;
    let n_train = train_split.len();
    if cfg.batch_size > n_train && cfg.train_limit.is_none() {
        return Err(Error::unsupported("--batch-size", format!("must be between 1 and the {n_train} training images")));
    }
    // normalised with the whole split's pixel statistics, which need no labels, so that a
    // --train-limit run's checkpoint reads its inputs as every other run's does
    let (mean, std) = data.mean_std();
    let batch = effective_batch(cfg, n_train);
    let steps = n_train / batch; // the last partial batch is dropped (a new shuffle each epoch)
    let optimizer = Optimizer { rule: cfg.rule, schedule: cfg.lr_schedule.for_steps(steps * cfg.epochs)? };
    let model = cfg.model.build_smoothed(batch, cfg.seed, cfg.label_smoothing)?;
    let (tuning, tune) = match cfg.gemm {
        Some(c) => (Tuning::fixed(c), TuneReport::default()),
        None => autotune::tune(gpu, &model.graph, optimizer).map_err(|e| batch_error(e, batch))?,
    };
    let mut trainer = Executor::new(gpu, &model.graph, Mode::Train, Some(optimizer), &tuning, None).map_err(|e| batch_error(e, batch))?;
    let train_data = resident(gpu, &train_split, mean, std)?;
    trainer.attach_dataset(&train_data, cfg.augment, cfg.seed as u32)?;
    Ok(Setup { trainer, tuning, tune, train_data, batch, steps, n_train, mean, std })
}

/// A per-kernel profile of `cfg`'s training step (`train_mnist --profile`, see
/// [`crate::graph::profile`]): the trainer [`train`] would build, on the first batch of
/// the shuffled training data, over `reps` repetitions after a warm-up. The steps run for
/// real; nothing is kept.
pub fn profile(gpu: &Gpu, cfg: &TrainConfig, data: &Dataset, reps: usize) -> Result<crate::graph::profile::Profile> {
    cfg.check()?;
    let Setup { mut trainer, train_data, .. } = setup(gpu, cfg, data)?;
    train_data.shuffle(gpu, cfg.seed)?;
    trainer.run_step(0)?;
    trainer.profile(reps)
}

/// The images a run trains on: the training split, or its class-balanced subset of
/// `cfg.train_limit` images drawn with `cfg.seed` (refused when larger than the split).
pub fn training_split<'a>(cfg: &TrainConfig, data: &'a Dataset) -> Result<std::borrow::Cow<'a, Split>> {
    match cfg.train_limit {
        None => Ok(std::borrow::Cow::Borrowed(&data.train)),
        Some(n) => Ok(std::borrow::Cow::Owned(data.train.balanced(n, cfg.seed)?)),
    }
}

/// The batch a run trains with: `--batch-size`, except that with `--train-limit` below it
/// the batch is the whole subset (an epoch is then one step over every image). Without a
/// limit a batch larger than the split is refused instead.
pub fn effective_batch(cfg: &TrainConfig, n_train: usize) -> usize {
    match cfg.train_limit {
        Some(_) => cfg.batch_size.min(n_train),
        None => cfg.batch_size,
    }
}

/// The parameters and the training state after `epochs_done` epochs (two readbacks).
fn snapshot(trainer: &Executor, cfg: &TrainConfig, epochs_done: usize) -> Result<(NamedTensors, TrainState)> {
    let (step, moments) = trainer.read_optimizer_state()?;
    Ok((trainer.read_model()?, TrainState { config: cfg.clone(), epochs_done, step, moments }))
}

/// Says which --batch-size would fit when a batch's activations are too large to bind.
fn batch_error(e: Error, batch: usize) -> Error {
    match e {
        Error::TooLargeToBind { value, shape, bytes, limit } if shape.first() == Some(&batch) => Error::unsupported(
            format!("--batch-size {batch}"),
            format!(
                "'{value}' {shape:?} takes {bytes} bytes, over this adapter's storage binding limit of {limit} bytes; the largest batch that fits is {}",
                limit / bytes.div_ceil(batch as u64)
            ),
        ),
        e => e,
    }
}

fn check_finite(m: &Metrics, epoch: usize, step: usize) -> Result<()> {
    if m.loss_sum.is_finite() {
        Ok(())
    } else {
        Err(Error::unsupported(
            "training",
            format!("the loss became {} by epoch {epoch}, step {step}: lower --lr or check the data", m.loss_sum),
        ))
    }
}
