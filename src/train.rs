//! The MNIST trainer behind `examples/train_mnist.rs`: data resident on the GPU, one
//! submit per step, metrics read every `progress_every` steps and once per epoch, then an
//! evaluation pass over the resident test split.

use std::path::PathBuf;
use std::time::Instant;

use crate::autotune::{self, TuneReport, Tuning};
use crate::data::gpu::ResidentDataset;
use crate::data::mnist::{Dataset, DatasetKind, Split};
use crate::graph::{ExecStats, Executor, Mode};
use crate::gpu::Gpu;
use crate::nn::ModelKind;
use crate::ops::gemm::GemmConfig;
use crate::ops::optim::{Optimizer, Rule, Schedule};
use crate::ops::softmax::Metrics;
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub dataset: DatasetKind,
    pub data_dir: Option<PathBuf>,
    pub download: bool,
    pub model: ModelKind,
    pub epochs: usize,
    pub batch_size: usize,
    /// The update rule; its learning rate follows `lr_schedule` over the run's steps.
    pub rule: Rule,
    pub lr_schedule: LrSchedule,
    pub seed: u64,
    pub augment: bool,
    /// Read the metrics every this many steps (0: only per epoch): the progress display,
    /// the loss curve, and the early stop of a diverging run come from these reads.
    pub progress_every: usize,
    pub gemm: Option<GemmConfig>,
}

/// The learning rate over a whole run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    Constant,
    /// Full rate for this fraction of the run, then half a cosine down to 0 at its end.
    Cosine { hold: f64 },
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
        if let LrSchedule::Cosine { hold } = self.lr_schedule {
            Schedule::check_hold(hold)?;
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
        }
    }
}

impl std::fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Cosine { hold } => write!(f, "cosine decay to 0 over the last {:.0}% of the run", 100.0 * (1.0 - hold)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_loss: f32,
    pub test_accuracy: f32,
    /// Training pass only.
    pub train_seconds: f64,
    pub images_per_sec: f64,
    pub eval_seconds: f64,
}

#[derive(Clone, Debug)]
pub struct TrainReport {
    pub epochs: Vec<EpochReport>,
    pub test: Metrics,
    pub stats: ExecStats,
    pub mean: f32,
    pub std: f32,
    /// Process-independent start-up: from opening the GPU to the first submitted step.
    pub startup_seconds: f64,
    pub params: crate::checkpoint::Params,
    /// (epochs done, mean training loss since the previous point) at each metrics read.
    pub loss_curve: Vec<(f64, f32)>,
    pub train_images: usize,
    pub test_images: usize,
    /// Kernel variant choice: what was chosen, whether from the cache, what it cost.
    pub tune: TuneReport,
}

/// What the trainer tells its caller as it goes (progress bars, logs).
pub trait Observer {
    fn epoch_start(&mut self, _epoch: usize, _steps: usize) {}
    /// After `step` steps of the epoch, with the metrics read so far this epoch.
    fn progress(&mut self, _step: usize, _metrics: &Metrics, _images_per_sec: f64) {}
    fn epoch_end(&mut self, _report: &EpochReport) {}
}

impl Observer for () {}

/// Loads the dataset (downloading when allowed and missing).
pub fn load_dataset(cfg: &TrainConfig) -> Result<Dataset> {
    let dir = cfg.data_dir.as_deref();
    let ds = if cfg.download {
        let mirrors = crate::data::download::default_mirrors(cfg.dataset);
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
    let started = Instant::now();
    cfg.check()?;
    let n_train = data.train.len();
    if cfg.batch_size > n_train {
        return Err(Error::unsupported("--batch-size", format!("must be between 1 and the {n_train} training images")));
    }
    let (mean, std) = data.mean_std();
    let batch = cfg.batch_size;
    let steps = n_train / batch; // the last partial batch is dropped (a new shuffle each epoch)
    let optimizer = Optimizer { rule: cfg.rule, schedule: cfg.lr_schedule.for_steps(steps * cfg.epochs)? };
    let eval_batch = batch.max(256).min(data.test.len().max(1));
    let model = cfg.model.build(batch, cfg.seed)?;
    let eval_model = cfg.model.build(eval_batch, cfg.seed)?;
    let (tuning, tune) = match cfg.gemm {
        Some(c) => (Tuning::fixed(c), TuneReport::default()),
        None => autotune::tune(gpu, &model.graph, optimizer).map_err(|e| batch_error(e, batch))?,
    };
    let mut trainer = Executor::new(gpu, &model.graph, Mode::Train, Some(optimizer), &tuning, None).map_err(|e| batch_error(e, batch))?;
    let mut evaluator =
        Executor::new(gpu, &eval_model.graph, Mode::Eval, None, &tuning, Some(&trainer)).map_err(|e| batch_error(e, eval_batch))?;
    let train_data = resident(gpu, &data.train, mean, std)?;
    let test_data = resident(gpu, &data.test, mean, std)?;
    trainer.attach_dataset(&train_data, cfg.augment, cfg.seed as u32)?;
    evaluator.attach_dataset(&test_data, false, 0)?;
    let eval_steps = data.test.len().div_ceil(eval_batch);
    let mut startup = None;
    let mut epochs = Vec::new();
    let mut loss_curve = Vec::new();
    let mut test = None;
    for epoch in 1..=cfg.epochs {
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
                startup = Some(started.elapsed().as_secs_f64());
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
        evaluator.reset_metrics()?;
        for s in 0..eval_steps {
            evaluator.run_step((s * eval_batch) as u32)?;
        }
        let tm = evaluator.read_metrics()?;
        let report = EpochReport {
            epoch,
            train_loss: m.mean_loss(),
            train_accuracy: m.accuracy(),
            test_loss: tm.mean_loss(),
            test_accuracy: tm.accuracy(),
            train_seconds,
            images_per_sec: (steps * batch) as f64 / train_seconds,
            eval_seconds: t1.elapsed().as_secs_f64(),
        };
        observer.epoch_end(&report);
        epochs.push(report);
        test = Some(tm);
    }
    let params = trainer.read_params()?;
    Ok(TrainReport {
        epochs,
        test: test.expect("at least one epoch"),
        stats: trainer.stats(),
        mean,
        std,
        startup_seconds: startup.unwrap_or(0.0),
        params,
        loss_curve,
        train_images: n_train,
        test_images: data.test.len(),
        tune,
    })
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
