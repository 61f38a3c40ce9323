//! The graph layer: plans, the executor against the CPU interpreter, memory, statistics, profiles, input gradients.
//!
//! One test binary per layer (each file below was a binary of its own): the suite links
//! 4 binaries instead of 26.

#[path = "../common/mod.rs"]
mod common;

mod exec_stats;
mod graph;
mod input_gradient;
mod memory;
mod profile;
