//! kiln's error type. GPU validation errors, out-of-memory and device loss arrive here
//! as values (through error scopes and the device-lost callback), never as panics.

use std::path::PathBuf;

/// kiln's result type; the error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything kiln can fail with. The `Display` text is written for the person running the
/// program: it names the op, value, file or variable involved and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched; `tried` names the backends and filters that were tried.
    #[error("no GPU adapter found (tried: {tried}).\n{hint}")]
    NoAdapter {
        /// The backends and `KILN_ADAPTER` filter tried, and the adapters present.
        tried: String,
        /// How to get an adapter (`runtime::gpu::INSTALL_HINT`) or fix the filter.
        hint: &'static str,
    },
    /// The adapter was found but refused to open a device with its own limits and features.
    #[error("could not open the GPU device on adapter {adapter:?}: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        message: String,
    },
    /// An environment variable kiln reads (`KILN_BACKEND`, `KILN_AUTOTUNE`, ...) holds a
    /// value it does not accept.
    #[error("bad environment variable {var}={value:?}: {expected}")]
    Env {
        /// The variable's name.
        var: &'static str,
        /// The value found.
        value: String,
        /// The values accepted.
        expected: &'static str,
    },
    /// wgpu validation (or an internal error) caught by an error scope or reported as
    /// uncaptured: a bug in kiln or a driver, not in the caller's input.
    #[error("GPU validation error in {context}: {message}")]
    Validation {
        /// What kiln was doing: a buffer label, `shader::entry`, `queue submit`, ...
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// The device could not allocate: try a smaller batch.
    #[error("GPU out of memory in {context}: {message}")]
    OutOfMemory {
        /// What kiln was allocating or submitting.
        context: String,
        /// wgpu's description.
        message: String,
    },
    /// The device is gone (driver reset, GPU removed, timeout); it cannot be used again.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// Mapping a readback buffer failed.
    #[error("GPU readback failed: {0}")]
    Readback(String),
    /// A shape that does not fit the op; `op` names the op or graph node.
    #[error("shape error in {op}: {message}")]
    Shape {
        /// The op, graph node or function that checked the shape.
        op: String,
        /// The shapes involved and what was expected.
        message: String,
    },
    /// A request the hardware or the implementation cannot serve (too large to bind, say).
    #[error("unsupported in {op}: {message}")]
    Unsupported {
        /// The op, node or function that refused.
        op: String,
        /// What is unsupported and, where there is one, the way around it.
        message: String,
    },
    /// The largest value of a graph does not fit one storage binding on this adapter.
    #[error("unsupported in value '{value}': {bytes} bytes ({shape:?}) exceed the adapter's storage binding limit of {limit} bytes: use a smaller batch")]
    TooLargeToBind {
        /// The graph value's name.
        value: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its size in bytes.
        bytes: u64,
        /// The adapter's `max_storage_buffer_binding_size`.
        limit: u64,
    },
    /// A file kiln reads or writes (checkpoint, plot, font, output path) is unusable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, for a person to read.
        message: String,
    },
    /// Finding, downloading, checking or parsing a dataset failed (the application's
    /// `digits::data::DataError`, boxed: this layer knows no datasets).
    #[error(transparent)]
    Data(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An [`Error::Shape`].
    pub fn shape(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shape { op: op.into(), message: message.into() }
    }
    /// An [`Error::Unsupported`].
    pub fn unsupported(op: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Unsupported { op: op.into(), message: message.into() }
    }
    /// An [`Error::File`]; `message` is anything displayable (an `io::Error`, a string).
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), message: message.to_string() }
    }
}
