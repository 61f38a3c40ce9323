//! The digit application on top of the engine: datasets ([`data`]), the training loop
//! ([`trainer::Trainer`], driven epoch by epoch by [`train`]), image preparation ([`predict`], [`morphology`]), inference in bounded batches
//! ([`classify::Classifier`]), scores ([`evaluate`]), the frozen test sets ([`digit_sets`]),
//! saliency reports ([`explain`]) and plots ([`plot`]); reading digit strings ([`read`]) and
//! the frozen string sets ([`string_sets`]).

pub mod calibrate;
pub mod classify;
pub mod data;
pub mod digit_sets;
pub mod evaluate;
pub mod explain;
pub mod fine_tune;
pub mod morphology;
// Native only: plotters' fonts.
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
pub mod predict;
pub mod read;
pub mod string_sets;
pub mod train;
pub mod tta;
pub mod trainer;
