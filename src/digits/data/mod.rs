//! Datasets: IDX files, MNIST/Fashion-MNIST, downloads, and the GPU-resident dataset.
//!
//! - [`idx`] reads IDX files (raw or gzip), validating every header field against the
//!   real length of the file before anything is allocated.
//! - [`mnist`] finds the four (or two) files of a dataset, loads them into [`Split`]s and
//!   computes the normalisation statistics.
//! - [`download`] fetches missing files from public mirrors, checking MD5s while streaming.
//! - [`subset`] draws a class-balanced, seeded subset of a split (scarce labels).
//!
//! Every failure is a [`DataError`] that names the file (or URL) and what was expected;
//! nothing here panics on bad input.

pub mod download;
pub mod idx;
pub mod mnist;
pub mod subset;

use std::path::PathBuf;

pub use download::{download_dataset, download_file, RemoteFile};
pub use idx::{parse_images, parse_labels, read_idx_bytes, read_images, read_labels, Images};
pub use mnist::{Dataset, DatasetKind, Split};
pub use subset::balanced_subset;

/// One failed try of a download: the URL and why it failed.
#[derive(Debug)]
pub struct Attempt {
    /// The mirror URL tried.
    pub url: String,
    /// Why it failed.
    pub error: DataError,
}

/// A directory that was searched for a dataset, and the files that were not in it.
#[derive(Debug, Clone)]
pub struct Searched {
    /// The directory.
    pub dir: PathBuf,
    /// The file names (gzip name; the un-gzipped name is accepted too) that were absent.
    pub missing: Vec<String>,
}

/// Why a dataset could not be found, downloaded, read or validated. Each variant names the
/// file or URL and what was expected; the `Display` text is written for the person running
/// the program.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading (or writing) a file failed at the operating-system level.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file starts with the gzip magic bytes but does not decompress.
    #[error("{path}: not a valid gzip stream: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The IDX magic number is not the one expected (wrong type code or dimension count).
    #[error("{path}: bad IDX magic {found:#010x}, expected {expected:#010x} ({what})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number for this kind of file.
        expected: u32,
        /// The first four bytes, big-endian.
        found: u32,
        /// What the file should hold, e.g. "u8 images, 3 dimensions".
        what: &'static str,
    },
    /// The file (after decompression) is shorter than its header says.
    #[error("{path}: truncated: the header implies {expected} bytes, the file has {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// The file (after decompression) is longer than its header says.
    #[error("{path}: {found} bytes, but the header implies exactly {expected} (trailing data)")]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes the file has.
        found: u64,
    },
    /// A header (or a decompressed stream, or a download) claims more than the safety limit.
    #[error("{path}: {claimed} bytes claimed, more than the limit of {limit} bytes")]
    TooLarge {
        /// The file (or URL) concerned.
        path: PathBuf,
        /// Bytes claimed.
        claimed: u64,
        /// The largest size accepted.
        limit: u64,
    },
    /// A well-formed file whose shape does not fit the dataset (not 28x28, too few images...).
    #[error("{path}: {message}")]
    BadShape {
        /// The file.
        path: PathBuf,
        /// What is wrong, for a person to read.
        message: String,
    },
    /// An image file and its label file hold different numbers of items.
    #[error("{images_path} holds {images} images but {labels_path} holds {labels} labels")]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// The label file.
        labels_path: PathBuf,
        /// Images it holds.
        images: usize,
        /// Labels it holds.
        labels: usize,
    },
    /// A label outside `0..num_classes`.
    #[error("{path}: label #{index} is {value}, expected 0..={max}")]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// Position of the label in the file (from 0).
        index: usize,
        /// The label found.
        value: u8,
        /// The largest valid label.
        max: u8,
    },
    /// The dataset's files are in none of the directories searched.
    #[error("{dataset}: data files not found. Looked in:\n{}{hint}", format_searched(.searched))]
    Missing {
        /// The dataset's name.
        dataset: String,
        /// Each directory looked in, with the files absent from it.
        searched: Vec<Searched>,
        /// How to get the files (a flag, an environment variable, a download).
        hint: String,
    },
    /// The files are nowhere and downloading them failed too: both are said.
    #[error("{missing}\nDownloading them failed: {download}")]
    NotObtained {
        /// Why the files were not found (a `Missing`).
        missing: Box<DataError>,
        /// Why downloading them failed.
        download: Box<DataError>,
    },
    /// A dataset name that is not one of the known ones.
    #[error("unknown dataset {name:?}; valid names: {valid}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The valid names.
        valid: &'static str,
    },
    /// An HTTP request failed (connection refused, non-2xx status, dying connection...).
    #[error("{url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What failed: the status or the transport's error.
        message: String,
    },
    /// The downloaded bytes do not have the published MD5.
    #[error("{url}: checksum mismatch: MD5 {found}, expected {expected}")]
    Checksum {
        /// The URL.
        url: String,
        /// The published MD5, hex.
        expected: String,
        /// The MD5 of the bytes received, hex.
        found: String,
    },
    /// The server sent fewer bytes than its Content-Length announced.
    #[error("{url}: connection ended after {found} of {expected} bytes")]
    Incomplete {
        /// The URL.
        url: String,
        /// Bytes announced.
        expected: u64,
        /// Bytes received.
        found: u64,
    },
    /// Every mirror failed for one file; each attempt says why.
    #[error(
        "could not download {file}; tried:\n{}Download it by hand (from any of these URLs) and put it at {dest}",
        format_attempts(.attempts)
    )]
    DownloadFailed {
        /// The file's name.
        file: String,
        /// Where it was to be written.
        dest: PathBuf,
        /// Each URL tried and why it failed.
        attempts: Vec<Attempt>,
    },
    /// Downloads are only defined for some datasets.
    #[error("{dataset}: {message}")]
    Unsupported {
        /// The dataset's name.
        dataset: String,
        /// What is wrong, for a person to read.
        message: String,
    },
}

impl From<DataError> for crate::Error {
    fn from(e: DataError) -> Self {
        crate::Error::Data(Box::new(e))
    }
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
