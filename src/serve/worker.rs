//! The GPU worker: one thread owns the device and the model (a [`Classifier`] borrows the
//! [`Gpu`], and wgpu's queue is best fed from one place), fed by a channel. It takes the
//! first waiting job, then waits at most `max_wait` for more until `max_batch` images are
//! together, and runs them as one batch. Admission is bounded before anything is queued
//! (a semaphore of `--queue` permits in [`super`]), so the channel itself never grows past it.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::GrayImage;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::metrics::Metrics;
use crate::digits::classify::{Classifier, CLASSES, DEFAULT_BATCH};
use crate::digits::read::{Options as ReadOptions, Reader, Reading};
use crate::model::checkpoint::Checkpoint;
use crate::{Gpu, Result};

/// A checkpoint read and validated from its file, with what the metrics say about it.
pub struct Loaded {
    /// The validated checkpoint.
    pub checkpoint: Checkpoint,
    /// The model's name (`cnn`, `mlp`, ...).
    pub name: String,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

impl Loaded {
    /// Reads the file once, validates it ([`Checkpoint::from_bytes`]) and hashes the same bytes.
    pub fn read(path: &std::path::Path) -> Result<Loaded> {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(path).map_err(|e| crate::Error::file(path, format!("cannot read the checkpoint: {e}")))?;
        let checkpoint = Checkpoint::from_bytes(&bytes, path)?;
        let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        Ok(Loaded { name: checkpoint.model.name().to_string(), checkpoint, sha256 })
    }
}

/// Class probabilities per image, or why there are none.
pub type Answer = std::result::Result<Vec<[f32; CLASSES]>, String>;

/// What the worker is asked to do.
pub enum Job {
    /// Classify prepared 28x28 digits; `permit` is the request's place in the queue,
    /// given back when the worker takes the job.
    Classify { images: Vec<GrayImage>, reply: oneshot::Sender<Answer>, permit: OwnedSemaphorePermit },
    /// Read fields of digits (decoded, not prepared), one reading each.
    Read { fields: Vec<GrayImage>, reply: oneshot::Sender<std::result::Result<Vec<Reading>, String>>, permit: OwnedSemaphorePermit },
    /// Load the checkpoint at this path, check it classifies on the GPU, and only then
    /// serve it; the answer is the new model's name and hash, or why the old one stays.
    Reload { path: PathBuf, reply: oneshot::Sender<std::result::Result<(String, String), String>> },
    /// Readiness: classify one blank digit with the current model.
    Ping { reply: oneshot::Sender<std::result::Result<(), String>> },
}

/// One checkpoint's classifier for batches of up to `max_batch` (an executor for each size
/// that arrives, all in one arena: [`Classifier`]) and its string reader.
struct Model<'g> {
    gpu: &'g Gpu,
    loaded: Loaded,
    classifier: Classifier<'g>,
    /// The string reader, built on the first read (its classifier's batch: the default).
    reader: Option<Reader<'g>>,
}

impl<'g> Model<'g> {
    fn new(gpu: &'g Gpu, loaded: Loaded, max_batch: usize) -> Result<Model<'g>> {
        let classifier = Classifier::new(gpu, loaded.checkpoint.clone(), max_batch)?;
        let mut model = Model { gpu, loaded, classifier, reader: None };
        model.classify(&[GrayImage::new(28, 28)])?; // builds and runs the model once: a bad one fails here
        Ok(model)
    }

    fn classify(&mut self, images: &[GrayImage]) -> Result<Vec<[f32; CLASSES]>> {
        self.classifier.classify(images)
    }

    fn read(&mut self, fields: &[GrayImage]) -> Result<Vec<Reading>> {
        let reader = match &mut self.reader {
            Some(r) => r,
            slot => slot.insert(Reader::new(Classifier::new(self.gpu, self.loaded.checkpoint.clone(), DEFAULT_BATCH)?, ReadOptions::default())),
        };
        reader.read(fields)
    }
}

/// Runs the worker until every sender of `jobs` is dropped and the jobs sent before are
/// answered. `ready` is told once whether the first model loaded.
pub fn run(
    gpu: Gpu,
    first: Loaded,
    jobs: Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
    metrics: Arc<Metrics>,
    ready: std::sync::mpsc::Sender<Result<()>>,
) {
    let mut model = match Model::new(&gpu, first, max_batch) {
        Ok(m) => {
            metrics.set_model(&m.loaded);
            let _ = ready.send(Ok(()));
            m
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut pending: Option<Job> = None;
    loop {
        let job = match pending.take() {
            Some(j) => j,
            None => match jobs.recv() {
                Ok(j) => j,
                Err(_) => return, // every sender gone: shut down, nothing left
            },
        };
        match job {
            Job::Classify { images, reply, permit } => {
                drop(permit);
                let mut batch = vec![(images, reply)];
                let mut count = batch[0].0.len();
                let deadline = Instant::now() + max_wait;
                while count < max_batch {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match jobs.recv_timeout(wait) {
                        Ok(Job::Classify { images, reply, permit }) => {
                            if count + images.len() > max_batch {
                                pending = Some(Job::Classify { images, reply, permit });
                                break;
                            }
                            drop(permit);
                            count += images.len();
                            batch.push((images, reply));
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
                // a client that went away (timed out, disconnected) costs no GPU time
                batch.retain(|(_, reply)| !reply.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let images: Vec<GrayImage> = batch.iter().flat_map(|(i, _)| i.iter().cloned()).collect();
                let start = Instant::now();
                let result = model.classify(&images);
                metrics.batch(images.len(), start.elapsed());
                match result {
                    Ok(probs) => {
                        let mut rest = &probs[..];
                        for (imgs, reply) in batch {
                            let (mine, tail) = rest.split_at(imgs.len());
                            rest = tail;
                            let _ = reply.send(Ok(mine.to_vec()));
                        }
                    }
                    Err(e) => {
                        for (_, reply) in batch {
                            let _ = reply.send(Err(format!("the GPU could not classify the batch: {e}")));
                        }
                    }
                }
            }
            Job::Read { fields, reply, permit } => {
                drop(permit);
                if reply.is_closed() {
                    continue;
                }
                let start = Instant::now();
                let result = model.read(&fields);
                metrics.read(fields.len(), start.elapsed());
                let _ = reply.send(result.map_err(|e| format!("the GPU could not read the fields: {e}")));
            }
            Job::Reload { path, reply } => {
                let result = Loaded::read(&path).and_then(|loaded| Model::new(&gpu, loaded, max_batch));
                let _ = reply.send(match result {
                    Ok(m) => {
                        model = m;
                        metrics.set_model(&model.loaded);
                        Ok((model.loaded.name.clone(), model.loaded.sha256.clone()))
                    }
                    Err(e) => Err(format!("{e}; still serving {} ({})", model.loaded.name, model.loaded.sha256)),
                });
            }
            Job::Ping { reply } => {
                let _ = reply.send(model.classify(&[GrayImage::new(28, 28)]).map(|_| ()).map_err(|e| e.to_string()));
            }
        }
    }
}
