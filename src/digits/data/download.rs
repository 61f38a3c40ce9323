//! Downloading missing dataset files from public mirrors.
//!
//! Contract: a file appears under its final name only with the published MD5. Bytes go
//! to `<file>.part` while the MD5 is computed on the fly; the `.part` is renamed after the
//! checksum matches and deleted on any failure (bad checksum, HTTP error, a connection
//! that dies mid-transfer, a body over [`MAX_DOWNLOAD_BYTES`]). Mirrors are tried in turn;
//! when all fail, [`DataError::DownloadFailed`] lists every URL and why, and where to put
//! the file by hand.

// the browser build keeps the module's API but not its HTTP client
#![cfg_attr(target_arch = "wasm32", allow(unused_imports, dead_code))]

use std::fs::{self, File};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(not(target_arch = "wasm32"))]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use md5::{Digest, Md5};

use super::mnist::{find_file, Dataset, DatasetKind, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use super::{Attempt, DataError};

/// The largest body accepted (64 MiB; the largest file, Fashion's training images, is
/// about 26 MB compressed).
pub const MAX_DOWNLOAD_BYTES: u64 = 64 << 20;

/// torchvision's MNIST mirrors, in the order it tries them.
pub const MNIST_MIRRORS: &[&str] = &[
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];
/// Zalando's Fashion-MNIST mirror.
pub const FASHION_MIRRORS: &[&str] =
    &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"];

/// A file to fetch: its name (relative to a mirror's base URL) and published MD5 (hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteFile {
    /// The file's name, appended to a mirror's base URL (also its name on disk).
    pub name: &'static str,
    /// The MD5 of the published file, lowercase hex.
    pub md5: &'static str,
}

/// MNIST's four files with the MD5s of the original .gz files.
pub const MNIST_FILES: [RemoteFile; 4] = [
    RemoteFile {
        name: TRAIN_IMAGES,
        md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    },
    RemoteFile {
        name: TRAIN_LABELS,
        md5: "d53e105ee54ea40749a09fcbcd1e9432",
    },
    RemoteFile {
        name: TEST_IMAGES,
        md5: "9fb629c4189551a2d022fa330f9573f3",
    },
    RemoteFile {
        name: TEST_LABELS,
        md5: "ec29112dd5afa0611ce80d1b7f02629c",
    },
];

/// Fashion-MNIST's four files with the MD5s Zalando publishes (of their .gz files).
pub const FASHION_FILES: [RemoteFile; 4] = [
    RemoteFile {
        name: TRAIN_IMAGES,
        md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    },
    RemoteFile {
        name: TRAIN_LABELS,
        md5: "25c81989df183df01b3e8a0aad5dffbe",
    },
    RemoteFile {
        name: TEST_IMAGES,
        md5: "bef4ecab320f06d8554ea6380940ec79",
    },
    RemoteFile {
        name: TEST_LABELS,
        md5: "bb300cfdad3c16e7a12a480ee83cd310",
    },
];

/// The files `kind` needs from the network (mnist10k: MNIST's two test files).
pub fn remote_files(kind: DatasetKind) -> &'static [RemoteFile] {
    match kind {
        DatasetKind::Mnist => &MNIST_FILES,
        DatasetKind::Mnist10k => &MNIST_FILES[2..],
        DatasetKind::Fashion => &FASHION_FILES,
    }
}

/// The public mirrors for `kind`, as owned base URLs.
pub fn default_mirrors(kind: DatasetKind) -> Vec<String> {
    let m = match kind {
        DatasetKind::Mnist | DatasetKind::Mnist10k => MNIST_MIRRORS,
        DatasetKind::Fashion => FASHION_MIRRORS,
    };
    m.iter().map(|s| s.to_string()).collect()
}

/// Downloads into `dir` (created if needed) every file of `kind` that is not already
/// there (gzip or not), each from the first of `mirrors` that serves it with the right
/// MD5. Returns the paths of the files downloaded.
pub fn download_dataset(
    kind: DatasetKind,
    dir: &Path,
    mirrors: &[String],
    quiet: bool,
) -> Result<Vec<PathBuf>, DataError> {
    // The first directory on the way that does not exist yet: removed again (if still
    // empty) when nothing could be downloaded, so a failed try leaves no empty ./data/mnist.
    let created = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).last().map(Path::to_path_buf);
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut fetched = Vec::new();
    for file in remote_files(kind) {
        if find_file(dir, file.name).is_none() {
            match fetch(file, dir, mirrors, quiet) {
                Ok(path) => fetched.push(path),
                Err(e) => {
                    if let (Some(top), true) = (&created, fetched.is_empty()) {
                        let _ = remove_empty_dirs(dir, top);
                    }
                    return Err(e);
                }
            }
        }
    }
    Ok(fetched)
}

/// Removes `dir` and its parents up to and including `top`, each only if empty.
fn remove_empty_dirs(dir: &Path, top: &Path) -> std::io::Result<()> {
    for d in dir.ancestors() {
        fs::remove_dir(d)?;
        if d == top {
            break;
        }
    }
    Ok(())
}

/// Downloads `file` into `dir`, trying each mirror in turn.
pub fn fetch(
    file: &RemoteFile,
    dir: &Path,
    mirrors: &[String],
    quiet: bool,
) -> Result<PathBuf, DataError> {
    let dest = dir.join(file.name);
    let mut attempts = Vec::new();
    for base in mirrors {
        let url = format!("{}/{}", base.trim_end_matches('/'), file.name);
        match download_file(&url, &dest, file.md5, quiet) {
            Ok(()) => return Ok(dest),
            Err(error) => attempts.push(Attempt { url, error }),
        }
    }
    Err(DataError::DownloadFailed {
        file: file.name.into(),
        dest,
        attempts,
    })
}

/// Downloads `url` to `dest`, which appears only if the body's MD5 is `md5_hex`.
///
/// Errors: [`DataError::Http`] (no connection, non-2xx status, read failure),
/// [`DataError::Incomplete`] (fewer bytes than Content-Length), [`DataError::Checksum`],
/// [`DataError::TooLarge`], [`DataError::Io`]. On every error neither `dest` nor
/// `<dest>.part` is left behind (an existing `dest` is not touched).
///
/// In the browser (wasm32) there is no file system to download into: the web page fetches
/// its data itself, and this returns [`DataError::Http`] at once.
#[cfg(target_arch = "wasm32")]
pub fn download_file(url: &str, _dest: &Path, _md5_hex: &str, _quiet: bool) -> Result<(), DataError> {
    Err(DataError::Http { url: url.into(), message: "no downloads to files in the browser: fetch the data from the page".into() })
}

/// See the wasm32 twin above; this is the real one.
#[cfg(not(target_arch = "wasm32"))]
pub fn download_file(url: &str, dest: &Path, md5_hex: &str, quiet: bool) -> Result<(), DataError> {
    let http = |message: String| DataError::Http {
        url: url.into(),
        message,
    };
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    // identity: the checksum is of the .gz file itself, so no transfer decoding.
    let response = agent
        .get(url)
        .header("Accept-Encoding", "identity")
        .call()
        .map_err(|e| http(e.to_string()))?;
    let length = response.body().content_length();
    if let Some(len) = length.filter(|&l| l > MAX_DOWNLOAD_BYTES) {
        return Err(DataError::TooLarge {
            path: dest.into(),
            claimed: len,
            limit: MAX_DOWNLOAD_BYTES,
        });
    }
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(MAX_DOWNLOAD_BYTES)
        .reader();

    let part = PartFile::create(dest)?;
    let bar = progress_bar(length, url, quiet);
    let mut hasher = Md5::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = &part.file;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                return Err(match length {
                    Some(expected) if got < expected => DataError::Incomplete {
                        url: url.into(),
                        expected,
                        found: got,
                    },
                    _ => http(format!("reading the body after {got} bytes: {e}")),
                });
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(&part.path, e))?;
        got += n as u64;
        bar.set_position(got);
    }
    bar.finish_and_clear();
    if let Some(expected) = length.filter(|&l| l != got) {
        return Err(DataError::Incomplete {
            url: url.into(),
            expected,
            found: got,
        });
    }
    let found = hex(&hasher.finalize());
    if !found.eq_ignore_ascii_case(md5_hex) {
        return Err(DataError::Checksum {
            url: url.into(),
            expected: md5_hex.into(),
            found,
        });
    }
    part.commit(dest)
}

/// `<dest>.part`, deleted on drop unless committed (renamed to `dest`).
struct PartFile {
    path: PathBuf,
    file: File,
    keep: bool,
}

impl PartFile {
    fn create(dest: &Path) -> Result<PartFile, DataError> {
        let mut name = dest.as_os_str().to_owned();
        name.push(".part");
        let path = PathBuf::from(name);
        let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
        Ok(PartFile {
            path,
            file,
            keep: false,
        })
    }

    fn commit(mut self, dest: &Path) -> Result<(), DataError> {
        self.file
            .sync_all()
            .map_err(|e| DataError::io(&self.path, e))?;
        fs::rename(&self.path, dest).map_err(|e| DataError::io(dest, e))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: the error being returned matters more than a failed cleanup.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn progress_bar(length: Option<u64>, url: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
    let template = "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(url.to_string());
    bar
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Here rather than in `mnist`, so that `mnist` needs nothing from `download`.
impl Dataset {
    /// Like [`Dataset::load`], but when the files are found nowhere, downloads them into
    /// [`DatasetKind::download_dir`] from `mirrors` (base URLs; see
    /// [`default_mirrors`]) first. `quiet` hides the progress bar.
    pub fn load_or_download(
        kind: DatasetKind,
        data_dir: Option<&Path>,
        mirrors: &[String],
        quiet: bool,
    ) -> Result<Dataset, DataError> {
        match kind.locate(data_dir) {
            Ok(dir) => Dataset::load_from_dir(kind, &dir),
            Err(missing @ DataError::Missing { .. }) => {
                let dir = kind.download_dir(data_dir);
                match download_dataset(kind, &dir, mirrors, quiet) {
                    Ok(_) => Dataset::load_from_dir(kind, &dir),
                    Err(failed) => Err(DataError::NotObtained {
                        missing: Box::new(missing),
                        download: Box::new(failed),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }
}
