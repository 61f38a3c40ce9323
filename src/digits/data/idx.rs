//! IDX files (the MNIST container format), raw or gzip-compressed.
//!
//! Layout (all integers big-endian): a 4-byte magic `0x00 0x00 T D` where `T` is the
//! element type (`0x08` = u8, the only one read here) and `D` the number of dimensions,
//! then `D` u32 sizes, then the elements, row-major. Image files are `0x00000803`
//! (count, rows, cols); label files are `0x00000801` (count).
//!
//! Contract: nothing is allocated from a header's word alone. A file is read into memory
//! only up to [`MAX_IDX_BYTES`] (raw files are checked against their real size first;
//! gzip streams are read through `take(limit + 1)`), and a header's claimed size is checked
//! against that limit and then against the bytes really present, which must match exactly.
//! Compression is detected by the gzip magic bytes `1f 8b`, never by the file name.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::DataError;

/// Magic of an IDX file of u8 images: type u8 (0x08), 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of an IDX file of u8 labels: type u8 (0x08), 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// The most bytes one IDX file may hold after decompression (64 MiB; MNIST's largest
/// file, the training images, is 47,040,016 bytes).
pub const MAX_IDX_BYTES: u64 = 64 << 20;
/// The two bytes every gzip stream starts with.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A set of u8 images, `count` of `rows` x `cols`, stored image after image, row-major.
///
/// Invariant (kept by every constructor here): `pixels.len() == count * rows * cols`.
/// `Debug` prints the shape, not the 47 million pixels.
#[derive(Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Height in pixels.
    pub rows: usize,
    /// Width in pixels.
    pub cols: usize,
    /// `count * rows * cols` pixels, image after image, row-major.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Pixels in one image (`rows * cols`).
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let n = self.image_len();
        self.pixels.get(i * n..(i + 1) * n)
    }

    /// Splits into the first `n` images and the rest; `n` is clamped to `count`.
    pub fn split_at(&self, n: usize) -> (Images, Images) {
        let n = n.min(self.count);
        let (a, b) = self.pixels.split_at(n * self.image_len());
        let part = |count, pixels: &[u8]| Images {
            count,
            rows: self.rows,
            cols: self.cols,
            pixels: pixels.to_vec(),
        };
        (part(n, a), part(self.count - n, b))
    }
}

impl fmt::Debug for Images {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Images {{ count: {}, rows: {}, cols: {}, pixels: [{} bytes] }}",
            self.count,
            self.rows,
            self.cols,
            self.pixels.len()
        )
    }
}

/// Reads `path` into memory, decompressing it when it starts with the gzip magic.
///
/// At most [`MAX_IDX_BYTES`] are accepted (after decompression); more is
/// [`DataError::TooLarge`], a broken gzip stream is [`DataError::Gzip`].
pub fn read_idx_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut head = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    if head == GZIP_MAGIC {
        // The gzip trailer's last word is the stream's length mod 2^32: a reservation
        // hint (capped at the limit), so the 47 MB training images decode without
        // regrowing the buffer. A wrong hint costs a reallocation, never a wrong result.
        let mut hint = 0;
        if file_len >= 20 {
            let mut tail = [0u8; 4];
            file.seek(SeekFrom::End(-4)).and_then(|_| file.read_exact(&mut tail)).map_err(|e| DataError::io(path, e))?;
            file.seek(SeekFrom::Start(2)).map_err(|e| DataError::io(path, e))?;
            hint = u64::from(u32::from_le_bytes(tail)).min(MAX_IDX_BYTES) as usize;
        }
        gunzip_limited(head.as_slice().chain(file), path, hint)
    } else {
        if file_len > MAX_IDX_BYTES {
            return Err(DataError::TooLarge {
                path: path.into(),
                claimed: file_len,
                limit: MAX_IDX_BYTES,
            });
        }
        // file_len <= 64 MiB here, so the reservation is bounded.
        let mut bytes = Vec::with_capacity(file_len as usize);
        bytes.extend_from_slice(&head);
        file.take(MAX_IDX_BYTES + 1 - head.len() as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(path, e))?;
        check_limit(bytes.len() as u64, path)?;
        Ok(bytes)
    }
}

/// Decompresses `bytes` if they start with the gzip magic, else borrows them unchanged.
/// `path` only names the source in errors. Same limit as [`read_idx_bytes`].
pub fn decode_bytes<'a>(bytes: &'a [u8], path: &Path) -> Result<Cow<'a, [u8]>, DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        gunzip_limited(bytes, path, 0).map(Cow::Owned)
    } else {
        check_limit(bytes.len() as u64, path)?;
        Ok(Cow::Borrowed(bytes))
    }
}

/// Reads an IDX image file (raw or gzip).
pub fn read_images(path: &Path) -> Result<Images, DataError> {
    let mut bytes = read_idx_bytes(path)?;
    let (dims, body) = parse_header(&bytes, path, IMAGES_MAGIC, "u8 images, 3 dimensions")?;
    let (count, rows, cols, header_len) = (dims[0], dims[1], dims[2], bytes.len() - body.len());
    // The pixels move down over the header in place: no second 47 MB buffer.
    bytes.drain(..header_len);
    Ok(Images { count, rows, cols, pixels: bytes })
}

/// Reads an IDX label file (raw or gzip); every label must be in `0..=max_label`
/// (9 for the digit and fashion sets; 255 accepts any).
pub fn read_labels(path: &Path, max_label: u8) -> Result<Vec<u8>, DataError> {
    parse_labels(&read_idx_bytes(path)?, path, max_label)
}

/// Parses an uncompressed IDX image file held in memory. `path` only names the source
/// in errors.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<Images, DataError> {
    let (dims, body) = parse_header(bytes, path, IMAGES_MAGIC, "u8 images, 3 dimensions")?;
    // parse_header checked that count * rows * cols == body.len() (no overflow).
    Ok(Images {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels: body.to_vec(),
    })
}

/// Parses an uncompressed IDX label file held in memory; labels must be in
/// `0..=max_label`, else [`DataError::BadLabel`] names the first bad one.
pub fn parse_labels(bytes: &[u8], path: &Path, max_label: u8) -> Result<Vec<u8>, DataError> {
    let (_, body) = parse_header(bytes, path, LABELS_MAGIC, "u8 labels, 1 dimension")?;
    if let Some((index, &value)) = body.iter().enumerate().find(|(_, &v)| v > max_label) {
        return Err(DataError::BadLabel {
            path: path.into(),
            index,
            value,
            max: max_label,
        });
    }
    Ok(body.to_vec())
}

/// Checks the magic, reads the dimensions, and checks that the elements they imply
/// (u8 each) are exactly the rest of `bytes`. Returns the dimensions and the elements.
fn parse_header<'a>(
    bytes: &'a [u8],
    path: &Path,
    magic: u32,
    what: &'static str,
) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let found_len = bytes.len() as u64;
    let truncated = |expected: u64| DataError::Truncated {
        path: path.into(),
        expected,
        found: found_len,
    };
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(4 * i..4 * i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).ok_or_else(|| truncated(4))?;
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.into(),
            expected: magic,
            found,
            what,
        });
    }
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims as u64;
    let mut dims = Vec::with_capacity(ndims);
    let mut payload: u64 = 1;
    for i in 1..=ndims {
        let d = word(i).ok_or_else(|| truncated(header_len))?;
        dims.push(d as usize);
        // Saturates instead of overflowing: 3 u32 sizes can exceed u64.
        payload = payload.saturating_mul(u64::from(d));
    }
    let expected = payload.saturating_add(header_len);
    if expected > MAX_IDX_BYTES {
        return Err(DataError::TooLarge {
            path: path.into(),
            claimed: expected,
            limit: MAX_IDX_BYTES,
        });
    }
    if found_len < expected {
        return Err(truncated(expected));
    }
    if found_len > expected {
        return Err(DataError::TrailingData {
            path: path.into(),
            expected,
            found: found_len,
        });
    }
    Ok((dims, &bytes[header_len as usize..]))
}

/// Decompresses a gzip stream (all members), reading at most `MAX_IDX_BYTES + 1` bytes
/// of output so a gzip bomb cannot exhaust memory.
/// `hint` is the expected length (at most the limit), reserved up front.
fn gunzip_limited(reader: impl Read, path: &Path, hint: usize) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(hint);
    MultiGzDecoder::new(reader)
        .take(MAX_IDX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            path: path.into(),
            source,
        })?;
    check_limit(out.len() as u64, path)?;
    Ok(out)
}

fn check_limit(len: u64, path: &Path) -> Result<(), DataError> {
    if len > MAX_IDX_BYTES {
        return Err(DataError::TooLarge {
            path: path.into(),
            claimed: len,
            limit: MAX_IDX_BYTES,
        });
    }
    Ok(())
}

/// The body of the `idx` fuzz target (`fuzz/fuzz_targets/idx.rs`) and of the seeded
/// mutation test: decodes `data` (gzip or not) and runs both parsers on it.
///
/// Returns `Ok` if either parser accepted the bytes, else the more specific error (the
/// label parser's when the image parser only saw a label magic). Panics only when a
/// parser breaks its own contract (an accepted file whose sizes do not add up), never
/// on bad input: a panic here is a bug.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) -> Result<(), DataError> {
    let path = Path::new("fuzz-input");
    let bytes = decode_bytes(data, path)?;
    assert!(
        bytes.len() as u64 <= MAX_IDX_BYTES,
        "decoded input over the limit"
    );
    let images = parse_images(&bytes, path);
    if let Ok(im) = &images {
        assert_eq!(
            im.pixels.len(),
            im.count * im.rows * im.cols,
            "Images invariant"
        );
        assert_eq!(im.pixels.len() + 16, bytes.len(), "image file length");
    }
    let labels = parse_labels(&bytes, path, 9);
    if let Ok(l) = &labels {
        assert!(l.iter().all(|&v| v <= 9), "label over max accepted");
        assert_eq!(l.len() + 8, bytes.len(), "label file length");
    }
    match (images, labels) {
        (Ok(_), _) | (_, Ok(_)) => Ok(()),
        (Err(DataError::BadMagic { .. }), Err(e)) => Err(e),
        (Err(e), Err(_)) => Err(e),
    }
}
