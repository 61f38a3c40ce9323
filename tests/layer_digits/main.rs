//! The digit application and the programs: datasets, training, evaluation, explain, the examples run as a user would, hardening.
//!
//! One test binary per layer (each file below was a binary of its own): the suite links
//! 4 binaries instead of 26.

#[path = "../common/mod.rs"]
mod common;

mod app;
mod calibrate;
mod data_download;
mod data_idx;
mod evaluate;
mod explain;
mod fine_tune;
mod hardening;
mod hardening_io;
mod hardening_state;
mod preparation;
mod read;
mod recipes;
mod scarce;
mod serve;
mod tta;
