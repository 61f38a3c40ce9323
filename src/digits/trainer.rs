//! The one training loop, step by step: [`Trainer`] owns a run's training executor, its
//! resident data, its evaluator and its place in the schedule. `train::train_from` (the
//! CLI's `train_mnist`, `custom_model`) drives it epoch by epoch; the web page drives it a
//! few steps per call (it cannot block: every read has an `_async` form, and the sync forms
//! are `gpu::block_on` of them).
//!
//! ```no_run
//! # fn main() -> kiln::Result<()> {
//! use kiln::train::{TrainConfig, Trainer};
//! # let (cfg, data): (TrainConfig, kiln::data::mnist::Dataset) = unimplemented!();
//! let gpu = kiln::Gpu::new()?;
//! let mut trainer = Trainer::new(&gpu, &cfg, &data)?;
//! while !trainer.is_done() {
//!     let r = trainer.step(100)?; // up to 100 steps (never past an epoch's end), one read
//!     if r.epoch_end {
//!         println!("epoch {}: test accuracy {}", r.epoch, trainer.evaluate()?.accuracy());
//!     }
//! }
//! let checkpoint = trainer.checkpoint()?;
//! # Ok(()) }
//! ```

use crate::digits::data::mnist::{Dataset, Split};
use crate::digits::train::{Resume, TrainConfig, TrainState};
use crate::graph::autotune::{self, TuneReport, Tuning};
use crate::graph::exec::SharedParams;
use crate::graph::{ExecStats, Executor, Mode, NamedTensors};
use crate::kernels::data::{Augment, ResidentDataset};
use crate::kernels::optim::Optimizer;
use crate::kernels::softmax::Metrics;
use crate::model::checkpoint::Checkpoint;
use crate::model::nn::ClassifierGraph;
use crate::runtime::gpu::{block_on, Gpu};
use crate::{Error, Result};

/// A training run stepped by its caller. Built by [`Trainer::new`]: the training split (or
/// its `train_limit` subset) and the test split resident on the GPU, the kernels (autotuned
/// unless `cfg.gemm` fixes them), the optimizer's schedule over the whole run.
pub struct Trainer<'g> {
    gpu: &'g Gpu,
    cfg: TrainConfig,
    pub(crate) executor: Executor<'g>,
    pub(crate) train_data: ResidentDataset,
    /// `None` without test images (or, inside `train_from`, until its thread has built it).
    pub(crate) evaluator: Option<Evaluator<'g>>,
    tune: TuneReport,
    batch: usize,
    steps: usize,
    n_train: usize,
    n_test: usize,
    mean: f32,
    std: f32,
    /// The epoch the last steps belong to (1-based; 0 before the first).
    epoch: usize,
    /// Steps run of that epoch (`steps` once it has ended, and before the first epoch).
    step: usize,
    /// Loss sum and rows at the previous metrics read of this epoch.
    last: (f32, u32),
}

/// What a metrics read says ([`Trainer::step`], [`Trainer::read`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The epoch the steps belong to, 1-based.
    pub epoch: usize,
    /// Steps run of that epoch.
    pub step: usize,
    /// Steps per epoch.
    pub steps: usize,
    /// Steps this call ran ([`Trainer::read`]: 0).
    pub steps_run: usize,
    /// The epoch's metrics so far.
    pub metrics: Metrics,
    /// The mean training loss since the previous read of this epoch.
    pub loss: f32,
    /// The epoch's last step has run.
    pub epoch_end: bool,
    /// The run's last epoch has ended.
    pub done: bool,
}

/// The evaluation executor beside a trainer, with the test split it reads.
pub(crate) struct Evaluator<'g> {
    executor: Executor<'g>,
    _data: ResidentDataset,
    batch: usize,
    steps: usize,
    /// How long building it took (its own thread's time where it ran beside training).
    pub(crate) seconds: f64,
}

/// What building an [`Evaluator`] needs from its trainer (sent to a thread by `train_from`).
pub(crate) struct EvaluatorSpec {
    model: ClassifierGraph,
    tuning: Tuning,
    shared: SharedParams,
    batch: usize,
    mean: f32,
    std: f32,
}

impl EvaluatorSpec {
    /// The evaluator of `split` (`None` when it is empty).
    pub(crate) fn build<'g>(self, gpu: &'g Gpu, split: &Split) -> Result<Option<Evaluator<'g>>> {
        if split.is_empty() {
            return Ok(None);
        }
        let (built, seconds) = timed(|| -> Result<_> {
            let mut executor = Executor::new_sharing(gpu, &self.model.graph, Mode::Eval, &self.tuning, &self.shared).map_err(|e| batch_error(e, self.batch))?;
            let data = resident(gpu, split, self.mean, self.std)?;
            executor.attach_dataset(&data, Augment::Off, 0)?;
            Ok((executor, data))
        });
        let (executor, data) = built?;
        Ok(Some(Evaluator { executor, _data: data, batch: self.batch, steps: split.len().div_ceil(self.batch), seconds }))
    }
}

/// The shuffle of epoch `epoch` (1-based) of a run seeded `seed`: a resumed run and the
/// web page draw the same orders.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)
}

fn resident(gpu: &Gpu, split: &Split, mean: f32, std: f32) -> Result<ResidentDataset> {
    let im = &split.images;
    ResidentDataset::upload(gpu, &im.pixels, &split.labels, im.rows, im.cols, mean, std)
}

impl<'g> Trainer<'g> {
    /// Checks `cfg` against `data`, builds the trainer and its evaluator (evaluation
    /// batches of 256 rows on GPUs; on CPU adapters the training batch, so that its im2col
    /// columns fit the scratch region the trainer already holds, `Gpu::scratch`).
    pub fn new(gpu: &'g Gpu, cfg: &TrainConfig, data: &Dataset) -> Result<Trainer<'g>> {
        let (mut trainer, spec) = Self::without_evaluator(gpu, cfg, data, None)?;
        trainer.evaluator = spec.build(gpu, &data.test)?;
        Ok(trainer)
    }

    /// [`Trainer::new`] evaluating in batches of `eval_batch` rows.
    pub fn with_eval_batch(gpu: &'g Gpu, cfg: &TrainConfig, data: &Dataset, eval_batch: usize) -> Result<Trainer<'g>> {
        if eval_batch == 0 {
            return Err(Error::unsupported("Trainer::with_eval_batch", "an evaluation batch of 0 rows"));
        }
        let (mut trainer, spec) = Self::without_evaluator(gpu, cfg, data, Some(eval_batch))?;
        trainer.evaluator = spec.build(gpu, &data.test)?;
        Ok(trainer)
    }

    /// The trainer, and what its evaluator needs (`train_from` builds that on a thread
    /// while the first epoch trains).
    pub(crate) fn without_evaluator(gpu: &'g Gpu, cfg: &TrainConfig, data: &Dataset, eval_batch: Option<usize>) -> Result<(Trainer<'g>, EvaluatorSpec)> {
        cfg.check()?;
        cfg.check_data(data)?;
        let train_split = crate::digits::train::training_split(cfg, data)?;
        let n_train = train_split.len();
        // normalised with the whole split's pixel statistics, which need no labels, so that a
        // train_limit run's checkpoint reads its inputs as every other run's does
        let (mean, std) = cfg.normalisation.unwrap_or_else(|| data.mean_std());
        let batch = crate::digits::train::effective_batch(cfg, n_train);
        let steps = n_train / batch; // the last partial batch is dropped (a new shuffle each epoch)
        let optimizer = Optimizer { rule: cfg.rule, schedule: cfg.lr_schedule.for_steps(steps * cfg.epochs)? };
        let model = cfg.model.build_smoothed(batch, cfg.seed, cfg.label_smoothing)?;
        let (tuning, tune) = match cfg.gemm {
            Some(c) => (Tuning::fixed(c), TuneReport::default()),
            None => autotune::tune(gpu, &model.graph, optimizer).map_err(|e| batch_error(e, batch))?,
        };
        let mut executor = Executor::new(gpu, &model.graph, Mode::Train, Some(optimizer), &tuning, None).map_err(|e| batch_error(e, batch))?;
        let train_data = resident(gpu, &train_split, mean, std)?;
        executor.attach_dataset(&train_data, cfg.augment, cfg.seed as u32)?;
        if cfg.freeze_features {
            executor.train_only_from(last_layer(&executor.plan.params)?)?;
        }
        let n_test = data.test.len();
        let eval_batch = eval_batch.unwrap_or(if gpu.info().is_cpu() { batch } else { batch.max(256) }).min(n_test.max(1));
        let spec = EvaluatorSpec {
            model: cfg.model.build_smoothed(eval_batch, cfg.seed, cfg.label_smoothing)?,
            tuning,
            shared: executor.shared_params(),
            batch: eval_batch,
            mean,
            std,
        };
        let trainer = Trainer {
            gpu,
            cfg: cfg.clone(),
            executor,
            train_data,
            evaluator: None,
            tune,
            batch,
            steps,
            n_train,
            n_test,
            mean,
            std,
            epoch: 0,
            step: steps,
            last: (0.0, 0),
        };
        Ok((trainer, spec))
    }

    /// Continues `resume` (a run stopped after some epochs): its parameters, optimizer
    /// moments and step count, and its place in the schedule. Before the first step.
    pub fn resume(&mut self, resume: &Resume) -> Result<()> {
        let done = resume.state.epochs_done;
        if self.epoch > 0 || done >= self.cfg.epochs {
            let why = if self.epoch > 0 { "the trainer has already stepped".to_string() } else { format!("the run has done {done} of its {} epochs", self.cfg.epochs) };
            return Err(Error::unsupported("Trainer::resume", why));
        }
        self.executor.write_model(&resume.params)?;
        self.executor.write_optimizer_state(resume.state.step, &resume.state.moments)?;
        self.epoch = done;
        Ok(())
    }

    /// Starts from a trained model's parameters and state (a checkpoint's tensors, in the
    /// model's order): fine-tuning. Before the first step.
    pub fn init(&mut self, params: &NamedTensors) -> Result<()> {
        if self.epoch > 0 {
            return Err(Error::unsupported("Trainer::init", "the trainer has already stepped"));
        }
        self.executor.write_model(params)
    }

    /// Submits up to `steps` training steps (at least one; one submit each, no readback),
    /// never past an epoch's end; the first step of an epoch shuffles the training data
    /// ([`epoch_seed`]) and restarts the epoch's metrics. Returns the steps run: 0 once the
    /// run is done.
    pub fn run(&mut self, steps: usize) -> Result<usize> {
        if self.step == self.steps {
            if self.epoch >= self.cfg.epochs {
                return Ok(0);
            }
            self.epoch += 1;
            self.step = 0;
            self.train_data.shuffle(self.gpu, epoch_seed(self.cfg.seed, self.epoch))?;
            self.executor.reset_metrics()?;
            self.last = (0.0, 0);
        }
        let mut ran = 0;
        while ran < steps.max(1) && self.step < self.steps {
            self.executor.run_step((self.step * self.batch) as u32)?;
            self.step += 1;
            ran += 1;
        }
        Ok(ran)
    }

    /// Reads the epoch's metrics (one readback, which waits for the steps submitted); a
    /// loss that is no longer finite is an error naming the epoch and step.
    pub async fn read_async(&mut self) -> Result<StepReport> {
        let metrics = self.executor.read_metrics_async().await?;
        if !metrics.loss_sum.is_finite() {
            return Err(Error::unsupported(
                "training",
                format!(
                    "the loss became {} by epoch {}, step {}: lower the learning rate (TrainConfig::rule) or check the data",
                    metrics.loss_sum, self.epoch, self.step
                ),
            ));
        }
        let rows = metrics.rows.saturating_sub(self.last.1).max(1);
        let loss = (metrics.loss_sum - self.last.0) / rows as f32;
        self.last = (metrics.loss_sum, metrics.rows);
        let epoch_end = self.step == self.steps;
        Ok(StepReport {
            epoch: self.epoch,
            step: self.step,
            steps: self.steps,
            steps_run: 0,
            metrics,
            loss,
            epoch_end,
            done: epoch_end && self.epoch == self.cfg.epochs,
        })
    }

    /// [`Trainer::read_async`], waiting.
    pub fn read(&mut self) -> Result<StepReport> {
        block_on(self.read_async())
    }

    /// [`Trainer::run`] `steps`, then [`Trainer::read_async`].
    pub async fn step_async(&mut self, steps: usize) -> Result<StepReport> {
        let ran = self.run(steps)?;
        Ok(StepReport { steps_run: ran, ..self.read_async().await? })
    }

    /// [`Trainer::step_async`], waiting.
    pub fn step(&mut self, steps: usize) -> Result<StepReport> {
        block_on(self.step_async(steps))
    }

    /// Loss and accuracy on the test split with the parameters as they are now (its
    /// confusion matrix too); an error when there are no test images.
    pub async fn evaluate_async(&mut self) -> Result<Metrics> {
        let Some(e) = &mut self.evaluator else {
            return Err(Error::unsupported("Trainer::evaluate", "there are no test images"));
        };
        e.executor.reset_metrics()?;
        for s in 0..e.steps {
            e.executor.run_step((s * e.batch) as u32)?;
        }
        e.executor.read_metrics_async().await
    }

    /// [`Trainer::evaluate_async`], waiting.
    pub fn evaluate(&mut self) -> Result<Metrics> {
        block_on(self.evaluate_async())
    }

    /// The parameters and the training state after the epochs done (two readbacks; native
    /// only, the optimizer state has no async read).
    pub fn snapshot(&self) -> Result<(NamedTensors, TrainState)> {
        let (step, moments) = self.executor.read_optimizer_state()?;
        let state = TrainState { config: self.cfg.clone(), epochs_done: self.epochs_done(), step, moments, checkpoint_sha256: None };
        Ok((self.executor.read_model()?, state))
    }

    /// The model as it stands, as a checkpoint (`dataset`: the config's).
    pub async fn checkpoint_async(&self) -> Result<Checkpoint> {
        let params = self.executor.read_model_async().await?;
        Ok(Checkpoint { model: self.cfg.model.clone(), mean: self.mean, std: self.std, dataset: self.cfg.dataset.to_string(), temperature: 1.0, deskew: self.cfg.deskew, params })
    }

    /// [`Trainer::checkpoint_async`], waiting.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        block_on(self.checkpoint_async())
    }

    /// Epochs whose every step has run.
    pub fn epochs_done(&self) -> usize {
        if self.step == self.steps {
            self.epoch
        } else {
            self.epoch - 1
        }
    }

    /// The run's last epoch has ended.
    pub fn is_done(&self) -> bool {
        self.epochs_done() == self.cfg.epochs
    }

    /// The epoch the last steps belong to (1-based; 0 before the first step).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.steps
    }

    /// Images per step.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Images trained on (the training split or its subset).
    pub fn train_images(&self) -> usize {
        self.n_train
    }

    /// Images evaluated.
    pub fn test_images(&self) -> usize {
        self.n_test
    }

    /// The pixel mean and standard deviation inputs are normalised with.
    pub fn mean_std(&self) -> (f32, f32) {
        (self.mean, self.std)
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Kernel variant choice: what was chosen, whether from the cache, what it cost.
    pub fn tune(&self) -> &TuneReport {
        &self.tune
    }

    /// The training executor's submits, readbacks, dispatches per step, GPU memory.
    pub fn stats(&self) -> ExecStats {
        self.executor.stats()
    }
}

/// Says which batch size would fit when a batch's activations are too large to bind.
fn batch_error(e: Error, batch: usize) -> Error {
    match e {
        Error::TooLargeToBind { value, shape, bytes, limit } if shape.first() == Some(&batch) => Error::unsupported(
            format!("TrainConfig::batch_size {batch}"),
            format!(
                "'{value}' {shape:?} takes {bytes} bytes, over this adapter's storage binding limit of {limit} bytes; the largest batch that fits is {}",
                limit / bytes.div_ceil(batch as u64)
            ),
        ),
        e => e,
    }
}

/// `f`'s value and the seconds it took (natively; the browser has no std clock: 0 there).
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let t = std::time::Instant::now();
        let value = f();
        (value, t.elapsed().as_secs_f64())
    }
    #[cfg(target_arch = "wasm32")]
    (f(), 0.0)
}

/// The index of the last layer's first parameter: the parameters from there on share the
/// last parameter's layer name (`fc2.weight`, `fc2.bias`).
fn last_layer(params: &[crate::graph::plan::ParamInfo]) -> Result<usize> {
    let layer = |name: &str| name.rsplit_once('.').map_or(name.to_string(), |(l, _)| l.to_string());
    let last = params.last().ok_or_else(|| Error::unsupported("TrainConfig::freeze_features", "the model has no parameters"))?;
    let name = layer(&last.name);
    let first = params.iter().rposition(|p| layer(&p.name) != name).map_or(0, |i| i + 1);
    if first == 0 {
        return Err(Error::unsupported("TrainConfig::freeze_features", format!("every parameter belongs to the last layer '{name}': nothing would be frozen")));
    }
    Ok(first)
}
