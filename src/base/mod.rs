//! The bottom layer: what every other layer uses and that needs no GPU — the crate's
//! [`error::Error`], the seeded [`rng::Rng`], and [`files`]' atomic writes (checkpoints, the
//! autotune cache and plots are all written through it).

pub mod error;
pub mod files;
pub mod rng;
