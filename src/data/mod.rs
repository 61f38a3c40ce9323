//! Datasets: IDX files, MNIST/Fashion-MNIST, downloads, and the GPU-resident dataset.
//! (Being written: see issue 6.)

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Other(String),
}
