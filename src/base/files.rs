//! Writing the user's files safely: every output (checkpoint, plot, ONNX model, report
//! image) goes through [`write_atomic`], and programs check their output paths with
//! [`check_output`] and [`check_distinct`] before they start any work.
//!
//! The contract: an existing target is replaced only when it is a regular file; a target
//! is never half-written (the bytes go to `.NAME.part` beside it, are flushed to disk,
//! and renamed over it; the directory is flushed after the rename, so a power loss leaves
//! the old file or the new one); a stale `.NAME.part` from an interrupted save is
//! replaced by the next save of the same target.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What an output path holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Nothing: the file will be created.
    Nothing,
    /// A regular file that a successful write replaces.
    File,
}

/// Checks that `path` (given with `flag`, e.g. `--save`) can receive an output: it is not a
/// directory, device, FIFO, socket or symbolic link, and its directory exists and is
/// writable. Says whether a file will be replaced.
pub fn check_output(flag: &str, path: &Path) -> Result<Existing> {
    let bad = |message: String| Error::file(path, format!("{flag}: {message}"));
    let file_name = path.file_name().ok_or_else(|| bad("expected a file path, not a directory".into()))?;
    let existing = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Existing::Nothing,
        Err(e) => return Err(bad(format!("cannot inspect it: {e}"))),
        Ok(m) if m.is_dir() => return Err(bad("is a directory, expected a file path".into())),
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::canonicalize(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "a missing file".into());
            return Err(bad(format!(
                "is a symbolic link (to {target}); kiln writes a new file and renames it into place, which would replace \
                 the link itself: name the target file instead"
            )));
        }
        Ok(m) if !m.is_file() => {
            return Err(bad("is not a regular file (a device, FIFO or socket): refusing to replace it".into()));
        }
        Ok(_) => Existing::File,
    };
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(bad(format!("the directory {} does not exist", dir.display())));
    }
    // The write probe uses the name of the part file a save writes anyway.
    let probe = part_path(path, file_name);
    let probed = File::create(&probe).map_err(|e| bad(format!("cannot write in {}: {e}", dir.display())));
    let _ = fs::remove_file(&probe);
    probed?;
    Ok(existing)
}

/// Refuses two outputs, or an output and an input, that name the same file:
/// `paths` are (flag, path) pairs, e.g. `[("--save", a), ("--plot", b)]`.
pub fn check_distinct(paths: &[(&str, &Path)]) -> Result<()> {
    for (i, (fa, a)) in paths.iter().enumerate() {
        for (fb, b) in &paths[i + 1..] {
            if same_file(a, b) {
                return Err(Error::file(*b, format!("{fa} and {fb} name the same file: refusing to overwrite one with the other")));
            }
        }
    }
    Ok(())
}

/// Whether two paths name the same file (existing or not): compared after resolving
/// their directories, so `a.png` and `./x/../a.png` are the same.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(ca), Ok(cb)) = (fs::canonicalize(a), fs::canonicalize(b)) {
        return ca == cb;
    }
    let resolve = |p: &Path| -> Option<PathBuf> {
        let dir = fs::canonicalize(parent_dir(p)).ok()?;
        Some(dir.join(p.file_name()?))
    };
    match (resolve(a), resolve(b)) {
        (Some(ra), Some(rb)) => ra == rb,
        _ => a == b,
    }
}

/// What stands at `path` when it is not a regular file (symbolic links followed), in words
/// for an error message: "is a directory", "is a FIFO (named pipe)", "is not there"...;
/// `None` for a regular file. Checked before opening an input: opening a FIFO blocks.
pub fn not_a_regular_file(path: &Path) -> Option<String> {
    let followed = match fs::metadata(path) {
        Ok(m) if m.is_file() => return None,
        Ok(m) => m.file_type(),
        Err(e) => {
            let link = fs::symlink_metadata(path).map(|l| l.file_type().is_symlink()).unwrap_or(false);
            return Some(match e.kind() {
                std::io::ErrorKind::NotFound if link => "is a symbolic link to a missing file".into(),
                std::io::ErrorKind::NotFound => "is not there".into(),
                _ if link => format!("is a symbolic link that cannot be followed (a loop?): {e}"),
                _ => format!("cannot be inspected: {e}"),
            });
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if followed.is_fifo() {
            return Some("is a FIFO (named pipe), not a regular file".into());
        }
        if followed.is_socket() {
            return Some("is a socket, not a regular file".into());
        }
        if followed.is_block_device() || followed.is_char_device() {
            return Some("is a device, not a regular file".into());
        }
    }
    Some(if followed.is_dir() { "is a directory, not a regular file" } else { "is not a regular file" }.into())
}

/// Writes `bytes` to `path` atomically (see the module docs). Refuses a target that is not
/// a regular file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| Error::file(path, "not a file path"))?;
    if let Ok(m) = fs::symlink_metadata(path) {
        if !m.is_file() {
            return Err(Error::file(path, "exists and is not a regular file: refusing to replace it"));
        }
    }
    let part = part_path(path, file_name);
    let written = (|| -> std::io::Result<()> {
        let mut f = File::create(&part)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&part);
        return Err(Error::file(path, format!("cannot write: {e}")));
    }
    if let Err(e) = fs::rename(&part, path) {
        let _ = fs::remove_file(&part);
        return Err(Error::file(path, format!("cannot move the new file into place: {e}")));
    }
    // The rename is durable once the directory is; some systems cannot open a directory.
    if let Ok(d) = File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Opens an input that must be a regular file (a symbolic link to one is fine; a directory,
/// device such as `/dev/zero`, FIFO or socket is refused): `what` names it in errors
/// ("checkpoint", "labels file"). Returns the file and its size.
pub fn open_input(path: &Path, what: &str) -> Result<(File, u64)> {
    if let Some(kind) = not_a_regular_file(path) {
        return Err(Error::file(path, format!("the {what} {kind}: expected a file")));
    }
    let f = File::open(path).map_err(|e| Error::file(path, format!("cannot read the {what}: {e}")))?;
    let len = f.metadata().map_err(|e| Error::file(path, format!("cannot read the {what}: {e}")))?.len();
    Ok((f, len))
}

/// Reads a whole input file ([`open_input`]) of at most `max` bytes; a larger one is refused
/// before it is read.
pub fn read_input(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    let (f, len) = open_input(path, what)?;
    let too_big = |n: u64| Error::file(path, format!("the {what} is {n} bytes, more than the {} MiB a {what} may have", max >> 20));
    if len > max {
        return Err(too_big(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // the file may grow while it is read: never past the limit
    f.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::file(path, format!("cannot read the {what}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Encodes `pixels` (`size` = width, height; `color` their layout, e.g. `L8`, `Rgb8`) as
/// PNG and writes it with [`write_atomic`].
pub fn write_png(path: &Path, pixels: &[u8], size: (u32, u32), color: image::ExtendedColorType) -> Result<()> {
    use image::ImageEncoder;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(pixels, size.0, size.1, color)
        .map_err(|e| Error::file(path, format!("cannot encode the PNG: {e}")))?;
    write_atomic(path, &png)
}

/// The temporary file a write of `path` goes through: `.NAME.part` beside it.
pub fn part_path(path: &Path, file_name: &std::ffi::OsStr) -> PathBuf {
    path.with_file_name(format!(".{}.part", file_name.to_string_lossy()))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}
