//! Datasets: IDX files, MNIST/Fashion-MNIST, downloads, and the GPU-resident dataset.
//!
//! - [`idx`] reads IDX files (raw or gzip), validating every header field against the
//!   real length of the file before anything is allocated.
//! - [`mnist`] finds the four (or two) files of a dataset, loads them into [`Split`]s and
//!   computes the normalisation statistics.
//! - [`download`] fetches missing files from public mirrors, checking MD5s while streaming.
//!
//! Every failure is a [`DataError`] that names the file (or URL) and what was expected;
//! nothing here panics on bad input.

pub mod download;
pub mod gpu;
pub mod idx;
pub mod mnist;

use std::path::PathBuf;

pub use download::{download_dataset, download_file, RemoteFile};
pub use idx::{parse_images, parse_labels, read_idx_bytes, read_images, read_labels, Images};
pub use mnist::{Dataset, DatasetKind, Split};

/// One failed try of a download: the URL and why it failed.
#[derive(Debug)]
pub struct Attempt {
    pub url: String,
    pub error: DataError,
}

/// A directory that was searched for a dataset, and the files that were not in it.
#[derive(Debug, Clone)]
pub struct Searched {
    pub dir: PathBuf,
    /// The file names (gzip name; the un-gzipped name is accepted too) that were absent.
    pub missing: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading (or writing) a file failed at the operating-system level.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file starts with the gzip magic bytes but does not decompress.
    #[error("{path}: not a valid gzip stream: {source}")]
    Gzip {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The IDX magic number is not the one expected (wrong type code or dimension count).
    #[error("{path}: bad IDX magic {found:#010x}, expected {expected:#010x} ({what})")]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
        what: &'static str,
    },
    /// The file (after decompression) is shorter than its header says.
    #[error("{path}: truncated: the header implies {expected} bytes, the file has {found}")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// The file (after decompression) is longer than its header says.
    #[error("{path}: {found} bytes, but the header implies exactly {expected} (trailing data)")]
    TrailingData {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A header (or a decompressed stream, or a download) claims more than the safety limit.
    #[error("{path}: {claimed} bytes claimed, more than the limit of {limit} bytes")]
    TooLarge {
        path: PathBuf,
        claimed: u64,
        limit: u64,
    },
    /// A well-formed file whose shape does not fit the dataset (not 28x28, too few images...).
    #[error("{path}: {message}")]
    BadShape { path: PathBuf, message: String },
    /// An image file and its label file hold different numbers of items.
    #[error("{images_path} holds {images} images but {labels_path} holds {labels} labels")]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },
    /// A label outside `0..num_classes`.
    #[error("{path}: label #{index} is {value}, expected 0..={max}")]
    BadLabel {
        path: PathBuf,
        index: usize,
        value: u8,
        max: u8,
    },
    /// The dataset's files are in none of the directories searched.
    #[error("{dataset}: data files not found. Looked in:\n{}{hint}", format_searched(.searched))]
    Missing {
        dataset: String,
        searched: Vec<Searched>,
        hint: String,
    },
    /// The files are nowhere and downloading them failed too: both are said.
    #[error("{missing}\nDownloading them failed: {download}")]
    NotObtained {
        missing: Box<DataError>,
        download: Box<DataError>,
    },
    /// A dataset name that is not one of the known ones.
    #[error("unknown dataset {name:?}; valid names: {valid}")]
    UnknownDataset { name: String, valid: &'static str },
    /// An HTTP request failed (connection refused, non-2xx status, dying connection...).
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// The downloaded bytes do not have the published MD5.
    #[error("{url}: checksum mismatch: MD5 {found}, expected {expected}")]
    Checksum {
        url: String,
        expected: String,
        found: String,
    },
    /// The server sent fewer bytes than its Content-Length announced.
    #[error("{url}: connection ended after {found} of {expected} bytes")]
    Incomplete {
        url: String,
        expected: u64,
        found: u64,
    },
    /// Every mirror failed for one file; each attempt says why.
    #[error(
        "could not download {file}; tried:\n{}Download it by hand (from any of these URLs) and put it at {dest}",
        format_attempts(.attempts)
    )]
    DownloadFailed {
        file: String,
        dest: PathBuf,
        attempts: Vec<Attempt>,
    },
    /// Downloads are only defined for some datasets.
    #[error("{dataset}: {message}")]
    Unsupported { dataset: String, message: String },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

fn format_searched(searched: &[Searched]) -> String {
    let mut s = String::new();
    for d in searched {
        s.push_str(&format!(
            "  {}: missing {}\n",
            d.dir.display(),
            d.missing.join(", ")
        ));
    }
    s
}

fn format_attempts(attempts: &[Attempt]) -> String {
    let mut s = String::new();
    for a in attempts {
        // Http, Checksum and Incomplete errors already start with the URL.
        let e = a.error.to_string();
        if e.starts_with(&a.url) {
            s.push_str(&format!("  {e}\n"));
        } else {
            s.push_str(&format!("  {}: {e}\n", a.url));
        }
    }
    if attempts.is_empty() {
        s.push_str("  (no mirrors given)\n");
    }
    s
}
