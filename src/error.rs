//! kiln's error type. GPU validation errors, out-of-memory and device loss arrive here
//! as values (through error scopes and the device-lost callback), never as panics.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched; `tried` names the backends and filters that were tried.
    #[error("no GPU adapter found (tried: {tried}).\n{hint}")]
    NoAdapter { tried: String, hint: &'static str },
    #[error("could not open the GPU device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },
    #[error("bad environment variable {var}={value:?}: {expected}")]
    Env { var: &'static str, value: String, expected: &'static str },
    #[error("GPU validation error in {context}: {message}")]
    Validation { context: String, message: String },
    #[error("GPU out of memory in {context}: {message}")]
    OutOfMemory { context: String, message: String },
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    #[error("GPU readback failed: {0}")]
    Readback(String),
    /// A shape that does not fit the op; `op` names the op or graph node.
    #[error("shape error in {op}: {message}")]
    Shape { op: String, message: String },
    /// A request the hardware or the implementation cannot serve (too large to bind, say).
    #[error("unsupported in {op}: {message}")]
    Unsupported { op: String, message: String },
    /// The largest value of a graph does not fit one storage binding on this adapter.
    #[error("unsupported in value '{value}': {bytes} bytes ({shape:?}) exceed the adapter's storage binding limit of {limit} bytes: use a smaller batch")]
    TooLargeToBind { value: String, shape: Vec<usize>, bytes: u64, limit: u64 },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl Error {
    pub fn shape(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shape { op: op.into(), message: message.into() }
    }
    pub fn unsupported(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unsupported { op: op.into(), message: message.into() }
    }
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), message: message.to_string() }
    }
}
