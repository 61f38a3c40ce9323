//! The wasm-bindgen surface the page calls: [`App`] (the device, the classifier, the number
//! reader) and [`Trainer`] (a training run stepped from the page).
//!
//! Each GPU call borrows its object's `RefCell` for as long as it runs, awaits included: the
//! page makes one call at a time per object, and a second one meanwhile gets a "busy" error
//! from `try_borrow_mut`, never a panic.
#![allow(clippy::await_holding_refcell_ref)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use js_sys::Promise;
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use kiln::checkpoint::Checkpoint;
use kiln::data::idx::{decode_bytes, parse_images, parse_labels};
use kiln::data::mnist::{Dataset, DatasetKind, Split};
use kiln::explain::Explainer;
use kiln::graph::{Executor, Mode};
use kiln::nn::ModelKind;
use kiln::ops::gemm::GemmConfig;
use kiln::ops::optim::Optimizer;
use kiln::read::{Options, Reader};
use kiln::rng::Rng;
use kiln::train::{LrSchedule, TrainConfig};
use kiln::{Classifier, Gpu};

fn js(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// A second GPU call on an object while its first is still running.
fn busy(what: &str) -> JsValue {
    js(format!("{what} is busy: await the previous call first"))
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The preprocessing alone (no GPU): the 28x28 digit `predict` would make of the canvas's
/// RGBA pixels (deskewed when `deskew`: the model's `deskew`, from `App.model()`), or
/// `undefined` when the canvas holds no ink.
#[wasm_bindgen]
pub fn prepare(rgba: Vec<u8>, width: u32, height: u32, deskew: bool) -> Result<Option<Vec<u8>>, JsValue> {
    Ok(crate::prepare(rgba, width, height, &kiln::predict::Preparation { deskew }).map_err(js)?.map(|d| d.into_raw()))
}

/// The device and the classifier the page draws against.
#[wasm_bindgen]
pub struct App {
    /// Leaked once per opened device: executors borrow the device for as long as the page
    /// lives (a retry after a lost device leaks the lost one, a few KiB).
    gpu: &'static Gpu,
    classifier: Rc<RefCell<Classifier<'static>>>,
    /// `kiln::explain`'s input-gradient executor for the same checkpoint, built on the
    /// first saliency request (and again after the model changes).
    explainer: Rc<RefCell<Option<Explainer<'static>>>>,
    /// `kiln::read`'s reader for the "write a number" canvas, on a classifier of its own
    /// (batches of [`READ_BATCH`]: a field's candidates in one GPU step, where the digit
    /// canvas's classifier runs one image), built on the first reading (and again after the
    /// model or the threshold changes).
    reader: Rc<RefCell<Option<Reader<'static>>>>,
}

/// The most candidate digits one GPU step of the number reader takes: a written number of
/// five digits makes some 15-40 candidates, so one step reads most fields.
const READ_BATCH: usize = 64;

#[wasm_bindgen]
impl App {
    /// Opens WebGPU (the adapter the browser chooses) and loads a checkpoint's bytes
    /// (safetensors, as `train_mnist --save` writes them).
    pub async fn open(checkpoint: Vec<u8>) -> Result<App, JsValue> {
        let gpu: &'static Gpu = Box::leak(Box::new(Gpu::new_async().await.map_err(js)?));
        let checkpoint = Checkpoint::from_bytes(&checkpoint, Path::new("cnn.safetensors")).map_err(js)?;
        let classifier = Classifier::new(gpu, checkpoint, 1).map_err(js)?;
        Ok(App { gpu, classifier: Rc::new(RefCell::new(classifier)), explainer: Rc::default(), reader: Rc::default() })
    }

    /// Classifies with another checkpoint's bytes from now on (the shipped one again, say).
    pub fn use_checkpoint(&self, checkpoint: Vec<u8>) -> Result<(), JsValue> {
        let checkpoint = Checkpoint::from_bytes(&checkpoint, Path::new("cnn.safetensors")).map_err(js)?;
        let mut c = self.classifier.try_borrow_mut().map_err(|_| busy("the classifier"))?;
        *c = Classifier::new(self.gpu, checkpoint, 1).map_err(js)?;
        Ok(())
    }

    /// The adapter as JSON: name, backend, device type, driver, a few limits.
    pub fn adapter(&self) -> String {
        let i = self.gpu.info();
        json!({
            "summary": i.summary(),
            "name": i.name,
            "backend": format!("{:?}", i.backend),
            "device_type": format!("{:?}", i.device_type),
            "driver": i.driver_label(),
            "max_storage_binding_mib": i.limits.max_storage_buffer_binding_size >> 20,
            "storage_buffers_per_stage": i.limits.max_storage_buffers_per_shader_stage,
        })
        .to_string()
    }

    /// The loaded model as JSON: its name, the dataset it was trained on, its parameter count.
    pub fn model(&self) -> Result<String, JsValue> {
        let c = self.classifier.try_borrow().map_err(|_| busy("the classifier"))?;
        let ck = c.checkpoint();
        let params: usize = ck.params.iter().map(|p| p.2.len()).sum();
        Ok(json!({ "name": ck.model.name(), "dataset": ck.dataset, "values": params, "deskew": ck.deskew }).to_string())
    }

    /// A device loss or GPU error seen since the last call, if any (the page then offers a
    /// retry, which opens a new `App`).
    pub fn fault(&self) -> Option<String> {
        self.gpu.check().err().map(|e| e.to_string())
    }

    /// Compiles every kiln shader with the browser's own WGSL compiler (Tint in Chrome),
    /// whichever kernels this adapter's family runs, and resolves to JSON: `checked` (file
    /// names), `skipped` (those calling subgroup built-ins on a device without subgroups) and
    /// `errors` (`file:line:column: message`). The page's test calls it, so the GPU
    /// families' shaders are compiled by the browser even on a CPU adapter. Each module is
    /// created inside an error scope, so a bad one is reported here, not as a device fault.
    pub fn check_shaders(&self) -> Promise {
        let gpu = self.gpu;
        future_to_promise(async move {
            let c = gpu.compile_every_shader().await;
            Ok(JsValue::from_str(&json!({ "checked": c.checked, "skipped": c.skipped, "errors": c.errors }).to_string()))
        })
    }

    /// One training step of the CNN (batch 8, seeded inputs and labels) with the kernel
    /// variant named `kernel` (a `GemmConfig::ALL` name, or "default" for this adapter's
    /// heuristic choice), resolving to JSON: the step's loss, computed before the update, and
    /// its dispatches per step (which tell the variants' kernels apart). The page's
    /// test compares the GPU families' kernels (`tiled32x64`: conv_shared with its pools,
    /// `linear_backward_input_routed`) with the adapter's own in this browser, pipelines
    /// created with their override constants included.
    pub fn first_step_loss(&self, kernel: String) -> Promise {
        let gpu = self.gpu;
        future_to_promise(async move {
            let cfg = match kernel.as_str() {
                "default" => GemmConfig::default_for(gpu.info()),
                name => GemmConfig::named(name).ok_or_else(|| js(format!("no kernel variant {name}")))?,
            };
            const BATCH: usize = 8;
            let graph = ModelKind::Cnn.spec().build(BATCH, 1).map_err(js)?;
            let mut exec = Executor::new(gpu, &graph.graph, Mode::Train, Some(Optimizer::adam(1e-3)), &cfg, None).map_err(js)?;
            let mut rng = Rng::new(12345);
            let input = rng.vec(BATCH * 784);
            let labels: Vec<u32> = (0..BATCH).map(|_| rng.range(0, 9) as u32).collect();
            exec.write_input(&input).map_err(js)?;
            exec.write_labels(&labels).map_err(js)?;
            exec.reset_metrics().map_err(js)?;
            exec.run_step(0).map_err(js)?;
            let m = exec.read_metrics_async().await.map_err(js)?;
            gpu.check().map_err(js)?;
            Ok(JsValue::from_str(&json!({ "loss": m.mean_loss(), "dispatches": exec.stats().dispatches_per_step }).to_string()))
        })
    }

    /// Class probabilities (10, a `Float32Array`) for a 28x28 digit from [`prepare`].
    pub fn classify(&self, digit: Vec<u8>) -> Promise {
        let classifier = self.classifier.clone();
        future_to_promise(async move {
            let img = image::GrayImage::from_raw(28, 28, digit).ok_or_else(|| js("classify takes 28x28 = 784 pixels"))?;
            let mut c = classifier.try_borrow_mut().map_err(|_| busy("the classifier"))?;
            let probs = c.classify_async(&[img]).await.map_err(js)?;
            Ok(js_sys::Float32Array::from(&probs[0][..]).into())
        })
    }

    /// The saliency map of a 28x28 digit from [`prepare`] (`kiln::explain`: the gradient
    /// of the predicted class's logit with respect to each input pixel, on the GPU), as
    /// 784 magnitudes scaled to [0, 1] (a `Float32Array`).
    pub fn saliency(&self, digit: Vec<u8>) -> Promise {
        let (gpu, classifier, explainer) = (self.gpu, self.classifier.clone(), self.explainer.clone());
        future_to_promise(async move {
            if digit.len() != 784 {
                return Err(js("saliency takes 28x28 = 784 pixels"));
            }
            let checkpoint = classifier.try_borrow().map_err(|_| busy("the classifier"))?.checkpoint().clone();
            let mut slot = explainer.try_borrow_mut().map_err(|_| busy("the explainer"))?;
            if slot.as_ref().is_none_or(|e| e.checkpoint() != &checkpoint) {
                *slot = Some(Explainer::new(gpu, checkpoint.clone(), 1).map_err(js)?);
            }
            let input = kiln::predict::normalise(&digit, checkpoint.mean, checkpoint.std);
            let explained = slot.as_mut().expect("set above").explain_async(&input, None).await.map_err(js)?;
            let magnitude: Vec<f32> = explained[0].saliency.iter().map(|g| g.abs()).collect();
            let max = magnitude.iter().fold(0f32, |m, &v| m.max(v));
            let scaled: Vec<f32> = magnitude.iter().map(|&v| if max > 0.0 { v / max } else { 0.0 }).collect();
            Ok(js_sys::Float32Array::from(&scaled[..]).into())
        })
    }

    /// Reads the number written on a canvas (its RGBA pixels, ink opaque, background
    /// transparent) with `kiln::read::Reader`, the reading and each digit under `reject` (a
    /// probability) marked unsure, and resolves to the `Reading` as JSON: `text`,
    /// `confidence`, `accepted`, and `digits`, each with its `bbox` (`x0`, `y0`, `x1`, `y1`,
    /// inclusive, in canvas pixels), `label`, `top3` (`[digit, probability]` pairs) and
    /// `unsure` (the fields of the server's `POST /v1/read` answer). No ink: no digits. The
    /// canvas is read [`crate::READ_SHRINK`] times smaller than drawn.
    pub fn read(&self, rgba: Vec<u8>, width: u32, height: u32, reject: f32) -> Promise {
        let (gpu, classifier, reader) = (self.gpu, self.classifier.clone(), self.reader.clone());
        future_to_promise(async move {
            if !(0.0..=1.0).contains(&reject) {
                return Err(js(format!("read: reject {reject}, expected a probability in 0-1")));
            }
            let field = crate::number_field(rgba, width, height).map_err(js)?;
            let mut slot = reader.try_borrow_mut().map_err(|_| busy("the reader"))?;
            {
                let c = classifier.try_borrow().map_err(|_| busy("the classifier"))?;
                if slot.as_mut().is_none_or(|r| r.options().reject != reject || r.classifier().checkpoint() != c.checkpoint()) {
                    *slot = Some(Reader::new(Classifier::new(gpu, c.checkpoint().clone(), READ_BATCH).map_err(js)?, Options { reject }));
                }
            }
            let mut reading = slot.as_mut().expect("set above").read_async(&[field]).await.map_err(js)?.remove(0);
            for d in &mut reading.digits {
                d.bbox = crate::to_canvas(d.bbox);
            }
            Ok(JsValue::from_str(&serde_json::to_string(&reading).map_err(js)?))
        })
    }

    /// A training run of the CNN on the first `count` images of the IDX files given
    /// (bytes, gzip or raw; the page fetches MNIST's test set), `epochs` passes of batches
    /// of `batch`, Adam at 1e-3; the next `held_out` images (rounded down to whole
    /// evaluation batches of 250) are what [`Trainer::evaluate`] measures.
    #[allow(clippy::too_many_arguments)] // the page's one call; JavaScript has no struct to pass
    pub fn trainer(&self, images: Vec<u8>, labels: Vec<u8>, count: usize, held_out: usize, epochs: usize, batch: usize, seed: u32) -> Result<Trainer, JsValue> {
        Training::new(self.gpu, &images, &labels, count, held_out, epochs, batch, seed as u64).map(|t| Trainer { inner: Rc::new(RefCell::new(t)) }).map_err(js)
    }

    /// Classifies with what `trainer` has learnt from now on (reads its parameters back).
    pub fn use_trained(&self, trainer: &Trainer) -> Promise {
        let (gpu, classifier, training) = (self.gpu, self.classifier.clone(), trainer.inner.clone());
        future_to_promise(async move {
            let t = training.try_borrow().map_err(|_| busy("the trainer"))?;
            let checkpoint = Checkpoint { dataset: "mnist-t10k (trained in this browser)".into(), ..t.trainer.checkpoint_async().await.map_err(js)? };
            let mut c = classifier.try_borrow_mut().map_err(|_| busy("the classifier"))?;
            *c = Classifier::new(gpu, checkpoint, 1).map_err(js)?;
            Ok(JsValue::UNDEFINED)
        })
    }
}

/// A training run stepped from the page: each [`Trainer::step`] records a few steps (one
/// submit each) and awaits one metrics read, so the page draws between calls. The run is
/// the library's `kiln::train::Trainer`; this wraps it for JavaScript.
#[wasm_bindgen]
pub struct Trainer {
    inner: Rc<RefCell<Training>>,
}

struct Training {
    trainer: kiln::train::Trainer<'static>,
}

/// Images per evaluation step of the held-out images.
const EVAL_BATCH: usize = 250;

impl Training {
    #[allow(clippy::too_many_arguments)]
    fn new(gpu: &'static Gpu, images: &[u8], labels: &[u8], count: usize, held_out: usize, epochs: usize, batch: usize, seed: u64) -> kiln::Result<Training> {
        let path = Path::new("t10k-images-idx3-ubyte");
        let data_err = |e: kiln::data::DataError| kiln::Error::file(path, e);
        let images = parse_images(&decode_bytes(images, path).map_err(data_err)?, path).map_err(data_err)?;
        let mut labels = parse_labels(&decode_bytes(labels, Path::new("t10k-labels-idx1-ubyte")).map_err(data_err)?, path, 9).map_err(data_err)?;
        let n = images.count.min(labels.len());
        if count > n {
            return Err(kiln::Error::unsupported("trainer", format!("{count} images (of {n}), batch {batch}, {epochs} epochs")));
        }
        labels.truncate(n);
        let all = Split { images: images.split_at(n).0, labels };
        // the first `count` images train (their statistics normalise every input, as
        // train_mnist's training split's do); the next ones, in whole evaluation batches, are held out
        let (train, rest) = all.split_at(count);
        let held = rest.len().min(held_out) / EVAL_BATCH * EVAL_BATCH;
        let data = Dataset { kind: DatasetKind::Mnist10k, train, test: rest.split_at(held).0, dir: PathBuf::new() };
        let cfg = TrainConfig {
            dataset: DatasetKind::Mnist10k,
            data_dir: None,
            download: false,
            model: ModelKind::Cnn.spec(),
            epochs,
            batch_size: batch,
            rule: Optimizer::adam(1e-3).rule,
            lr_schedule: LrSchedule::Constant,
            label_smoothing: 0.0,
            seed,
            augment: kiln::train::Augment::Off,
            train_limit: None,
            normalisation: None,
            freeze_features: false,
            deskew: false,
            eval_every: 1,
            progress_every: 0,
            // the heuristic choice: autotuning times variants with blocking waits
            gemm: Some(GemmConfig::default_for(gpu.info())),
        };
        Ok(Training { trainer: kiln::train::Trainer::with_eval_batch(gpu, &cfg, &data, EVAL_BATCH)? })
    }

    /// Runs up to `steps` steps (never past an epoch's end), then reads the metrics.
    async fn step(&mut self, steps: usize) -> kiln::Result<serde_json::Value> {
        let t = &mut self.trainer;
        let r = t.step_async(steps).await?;
        Ok(json!({
            "epoch": r.epoch,
            "epochs": t.config().epochs,
            "step": (r.epoch - 1) * r.steps + r.step,
            "steps": r.steps * t.config().epochs,
            "steps_run": r.steps_run,
            "images": r.steps_run * t.batch(),
            "loss": r.loss,
            "epoch_loss": r.metrics.mean_loss(),
            "epoch_accuracy": r.metrics.accuracy(),
            "epoch_end": r.epoch_end,
            "done": r.done,
        }))
    }

    /// Loss and accuracy on the held-out images, with the parameters as they are now.
    async fn evaluate(&mut self) -> kiln::Result<serde_json::Value> {
        if self.trainer.test_images() == 0 {
            return Ok(json!({ "images": 0 }));
        }
        let m = self.trainer.evaluate_async().await?;
        Ok(json!({ "images": self.trainer.test_images(), "loss": m.mean_loss(), "accuracy": m.accuracy() }))
    }
}

#[wasm_bindgen]
impl Trainer {
    /// Runs up to `steps` training steps and resolves to their figures as JSON: the mean
    /// loss since the previous call, the epoch's accuracy so far, `epoch_end`, and `done`
    /// after the last epoch.
    pub fn step(&self, steps: usize) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut t = inner.try_borrow_mut().map_err(|_| busy("the trainer"))?;
            let out = t.step(steps).await.map_err(js)?;
            Ok(JsValue::from_str(&out.to_string()))
        })
    }

    /// Evaluates the held-out images; resolves to `{images, loss, accuracy}` as JSON.
    pub fn evaluate(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let mut t = inner.try_borrow_mut().map_err(|_| busy("the trainer"))?;
            let out = t.evaluate().await.map_err(js)?;
            Ok(JsValue::from_str(&out.to_string()))
        })
    }
}
