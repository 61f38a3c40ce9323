//! Datasets: IDX files, MNIST/Fashion-MNIST, downloads, and the GPU-resident dataset.

pub mod gpu;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Other(String),
}
