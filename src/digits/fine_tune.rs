//! Fine-tuning: a trained checkpoint adapted to a user's own labelled digits
//! (`train_mnist --init CKPT --images DIR --labels FILE`). The folder is read and prepared as
//! `evaluate --images` reads it (the labels file, [`evaluate::resolve`], [`evaluate::prepare`]:
//! `predict`'s preparation), mixed with a class-balanced draw of MNIST so that the model keeps
//! reading MNIST's digits, and trained from the checkpoint's parameters with
//! [`crate::digits::train::Recipe::FINE_TUNE`] unless told otherwise. The result is a normal,
//! self-describing checkpoint of the same model, normalised as the original.

use std::path::{Path, PathBuf};

use crate::digits::data::idx::Images;
use crate::digits::data::mnist::Split;
use crate::digits::evaluate::{self, Options};
use crate::digits::predict::Preparation;
use crate::runtime::gpu::Gpu;
use crate::{Error, Result};

/// The share of MNIST images among a fine-tuning run's training images unless `--mix-mnist`
/// says otherwise: as many MNIST digits as the user's (a hundred of a user's digits then
/// do not wash out what ten thousand steps of MNIST taught).
pub const DEFAULT_MIX_MNIST: f64 = 0.5;

/// Fine-tuning's batch unless `--batch-size` says otherwise: a folder of 50-1,000 images
/// still gets several steps per pass (a smaller folder trains in one batch of all of it).
pub const BATCH: usize = 32;

/// The labelled images of folder `dir` (`labels`: `NAME LABEL` per line), each prepared as
/// `predict` and `evaluate --images` prepare it for the model (`preparation`, as [`Preparation::of`]
/// its checkpoint says): the 28x28 digits the model will see. An
/// image that cannot be read or holds no ink fails the whole folder, after the others are
/// read so that the error counts them (as `evaluate` does).
pub fn load_folder(gpu: &Gpu, dir: &Path, labels: &Path, preparation: Preparation) -> Result<Split> {
    let entries = evaluate::read_labels(labels)?;
    let files: Vec<(PathBuf, u8)> = evaluate::resolve(dir, labels, &entries)?;
    let mut pixels = Vec::with_capacity(files.len() * 784);
    let mut failures = Vec::new();
    for (i, (path, _)) in files.iter().enumerate() {
        match evaluate::prepare(gpu, path, i, &Options { preparation, ..Options::default() }) {
            Ok(img) => pixels.extend_from_slice(img.as_raw()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if !failures.is_empty() {
        let shown: Vec<_> = failures.iter().take(5).cloned().collect();
        let more = if failures.len() > 5 { format!("\n  ... and {} more", failures.len() - 5) } else { String::new() };
        return Err(Error::file(dir, format!("{} of {} images could not be used:\n  {}{more}", failures.len(), files.len(), shown.join("\n  "))));
    }
    Ok(Split { images: Images { count: files.len(), rows: 28, cols: 28, pixels }, labels: files.iter().map(|(_, l)| *l).collect() })
}

/// The training images of a fine-tuning run: `user`'s, then a class-balanced draw (with
/// `seed`, as `--train-limit` draws) from `mnist` making up `fraction` of the whole
/// (0: the user's alone; 0.5: as many of each), at most all of `mnist`.
pub fn mix(user: &Split, mnist: &Split, fraction: f64, seed: u64) -> Result<Split> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::unsupported("fine_tune::mix(fraction)", format!("{fraction}: expected a fraction of MNIST images from 0 to below 1")));
    }
    let n = ((user.len() as f64 * fraction / (1.0 - fraction)).round() as usize).min(mnist.len());
    if n == 0 {
        return Ok(user.clone());
    }
    let drawn = mnist.balanced(n, seed)?;
    let mut pixels = user.images.pixels.clone();
    pixels.extend_from_slice(&drawn.images.pixels);
    let mut labels = user.labels.clone();
    labels.extend_from_slice(&drawn.labels);
    Ok(Split { images: Images { count: labels.len(), rows: 28, cols: 28, pixels }, labels })
}
