//! IDX parsing and dataset loading: every malformed input maps to its own `DataError`
//! variant, and the real MNIST test set (and Fashion-MNIST from Debian) load correctly.
//!
//! Real-data tests never skip: when the data is absent they fail and say how to get it.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use kiln::data::idx::{
    decode_bytes, parse_images, parse_labels, read_images, read_labels, MAX_IDX_BYTES,
};
use kiln::data::{DataError, Dataset, DatasetKind, Split};
use sha2::{Digest, Sha256};

const SHARED_MNIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
const DEBIAN_FASHION: &str = "/usr/share/datasets/fashion-mnist";

// ---------- helpers ----------

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("data_idx")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir under CARGO_TARGET_TMPDIR");
    dir
}

fn images_bytes(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [0x0803, count, rows, cols] {
        b.extend_from_slice(&u32::to_be_bytes(w));
    }
    b.extend_from_slice(pixels);
    b
}

fn labels_bytes(count: u32, labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [0x0801, count] {
        b.extend_from_slice(&u32::to_be_bytes(w));
    }
    b.extend_from_slice(labels);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

/// Deterministic pseudo-random bytes (xorshift64*), never all zeros.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The shared MNIST test set; fails (never skips) when it is not there.
fn shared_mnist() -> PathBuf {
    let dir = PathBuf::from(SHARED_MNIST);
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        assert!(
            dir.join(f).is_file(),
            "real-data test needs {} (the MNIST test set, see ../shared/data/mnist/README.md); it is missing",
            dir.join(f).display()
        );
    }
    dir
}

// ---------- malformed inputs: one variant each ----------

#[test]
fn valid_tiny_files_parse_raw_and_gzip() {
    let px = noise(2 * 3 * 4, 1);
    let raw = images_bytes(2, 3, 4, &px);
    let im = parse_images(&raw, Path::new("raw")).expect("valid raw images");
    assert_eq!((im.count, im.rows, im.cols), (2, 3, 4));
    assert_eq!(im.pixels, px);
    assert_eq!(im.image(1), Some(&px[12..]));
    assert_eq!(im.image(2), None);

    let dir = scratch("valid_tiny");
    // The name says nothing: compression is detected by the magic bytes.
    let gz_named_raw = write(&dir, "raw-but-named.gz", &raw);
    let raw_named_gz = write(&dir, "gzip-but-named.idx", &gzip(&raw));
    assert_eq!(read_images(&gz_named_raw).expect("raw file"), im);
    assert_eq!(read_images(&raw_named_gz).expect("gzip file"), im);

    let lp = write(&dir, "labels", &gzip(&labels_bytes(3, &[0, 9, 5])));
    assert_eq!(read_labels(&lp, 9).expect("valid labels"), vec![0, 9, 5]);
}

#[test]
fn truncated_file_is_truncated() {
    let raw = images_bytes(3, 2, 2, &noise(10, 2)); // header says 12 pixels
    match parse_images(&raw, Path::new("t.idx")) {
        Err(DataError::Truncated {
            path,
            expected,
            found,
        }) => {
            assert_eq!(path, Path::new("t.idx"));
            assert_eq!((expected, found), (28, 26));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // A header cut short, and an empty file.
    for bytes in [&raw[..9], &raw[..0], &raw[..3]] {
        assert!(
            matches!(
                parse_images(bytes, Path::new("h")),
                Err(DataError::Truncated { .. })
            ),
            "{} header bytes should be Truncated",
            bytes.len()
        );
    }
    // Through the file reader, gzip included.
    let dir = scratch("truncated");
    let p = write(&dir, "t.gz", &gzip(&labels_bytes(5, &[1, 2, 3])));
    match read_labels(&p, 9) {
        Err(DataError::Truncated {
            path,
            expected: 13,
            found: 11,
        }) => assert_eq!(path, p),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn trailing_bytes_are_trailing_data() {
    let raw = labels_bytes(2, &[1, 2, 3]);
    assert!(matches!(
        parse_labels(&raw, Path::new("l"), 9),
        Err(DataError::TrailingData {
            expected: 10,
            found: 11,
            ..
        })
    ));
}

#[test]
fn wrong_magic_is_bad_magic() {
    // A label file where images are expected, and vice versa.
    match parse_images(&labels_bytes(1, &[3]), Path::new("swapped")) {
        Err(DataError::BadMagic {
            expected: 0x803,
            found: 0x801,
            path,
            ..
        }) => assert_eq!(path, Path::new("swapped")),
        other => panic!("expected BadMagic, got {other:?}"),
    }
    assert!(matches!(
        parse_labels(&images_bytes(1, 1, 1, &[0]), Path::new("x"), 9),
        Err(DataError::BadMagic {
            expected: 0x801,
            found: 0x803,
            ..
        })
    ));
    // Right type code, wrong dimension count; and a float (0x0d) type code.
    let mut four_dims = images_bytes(1, 1, 1, &[0, 0, 0, 0]);
    four_dims[3] = 4;
    assert!(matches!(
        parse_images(&four_dims, Path::new("x")),
        Err(DataError::BadMagic { found: 0x804, .. })
    ));
    let mut floats = images_bytes(1, 1, 1, &[0]);
    floats[2] = 0x0d;
    assert!(matches!(
        parse_images(&floats, Path::new("x")),
        Err(DataError::BadMagic { found: 0xd03, .. })
    ));
}

#[test]
fn header_claiming_2_31_images_is_too_large() {
    // 2^31 images of 28x28 would be 1.6 TiB; the file holds one image. Neither reader
    // may allocate by the header's word: this must fail fast with TooLarge.
    let raw = images_bytes(1 << 31, 28, 28, &noise(784, 3));
    match parse_images(&raw, Path::new("huge")) {
        Err(DataError::TooLarge { claimed, limit, .. }) => {
            assert_eq!(claimed, 16 + (1u64 << 31) * 784);
            assert_eq!(limit, MAX_IDX_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let dir = scratch("huge");
    for (name, bytes) in [("huge.raw", raw.clone()), ("huge.gz", gzip(&raw))] {
        let p = write(&dir, name, &bytes);
        assert!(
            matches!(read_images(&p), Err(DataError::TooLarge { .. })),
            "{name}"
        );
    }
    // Three maximal u32 sizes overflow u64: still TooLarge, never a wrap-around.
    let max = images_bytes(u32::MAX, u32::MAX, u32::MAX, &[]);
    assert!(matches!(
        parse_images(&max, Path::new("max")),
        Err(DataError::TooLarge { .. })
    ));
    assert!(matches!(
        parse_labels(&labels_bytes(u32::MAX, &[]), Path::new("l"), 9),
        Err(DataError::TooLarge { .. })
    ));
}

#[test]
fn gzip_bomb_is_too_large() {
    // 65 MiB of zeros compress to ~64 KiB; decompression must stop at the limit.
    let bomb = gzip(&vec![0u8; (MAX_IDX_BYTES + (1 << 20)) as usize]);
    assert!(bomb.len() < 1 << 20);
    assert!(matches!(
        decode_bytes(&bomb, Path::new("bomb.gz")),
        Err(DataError::TooLarge { .. })
    ));
}

#[test]
fn image_and_label_counts_disagree_is_count_mismatch() {
    let dir = scratch("count_mismatch");
    let ip = write(&dir, "images", &images_bytes(3, 2, 2, &noise(12, 4)));
    let lp = write(&dir, "labels", &labels_bytes(2, &[1, 2]));
    match Split::read(&ip, &lp, 9) {
        Err(DataError::CountMismatch {
            images_path,
            labels_path,
            images: 3,
            labels: 2,
        }) => {
            assert_eq!((images_path, labels_path), (ip, lp));
        }
        other => panic!("expected CountMismatch, got {other:?}"),
    }
}

#[test]
fn label_11_is_bad_label() {
    match parse_labels(&labels_bytes(4, &[0, 9, 11, 12]), Path::new("labels"), 9) {
        Err(DataError::BadLabel {
            path,
            index: 2,
            value: 11,
            max: 9,
        }) => assert_eq!(path, Path::new("labels")),
        other => panic!("expected BadLabel at index 2, got {other:?}"),
    }
    // The same file is fine for a reader that accepts any byte.
    assert!(parse_labels(&labels_bytes(4, &[0, 9, 11, 12]), Path::new("labels"), 255).is_ok());
}

#[test]
fn gzip_of_garbage_is_gzip_error() {
    // Gzip magic followed by noise: not a gzip stream.
    let mut bad = vec![0x1f, 0x8b];
    bad.extend(noise(500, 5));
    let dir = scratch("gzip_garbage");
    let p = write(&dir, "garbage.gz", &bad);
    match read_images(&p) {
        Err(DataError::Gzip { path, .. }) => assert_eq!(path, p),
        other => panic!("expected Gzip, got {other:?}"),
    }
    // A gzip stream cut in half.
    let good = gzip(&images_bytes(2, 3, 4, &noise(24, 6)));
    let p = write(&dir, "cut.gz", &good[..good.len() / 2]);
    assert!(matches!(read_images(&p), Err(DataError::Gzip { .. })));
    // A valid gzip stream whose content is garbage: the IDX check catches it.
    let p = write(&dir, "gz-of-noise.gz", &gzip(&noise(500, 7)));
    assert!(matches!(read_images(&p), Err(DataError::BadMagic { .. })));
}

#[test]
fn missing_file_is_io_error_naming_the_path() {
    let p = scratch("io").join("nope");
    match read_images(&p) {
        Err(DataError::Io { path, source }) => {
            assert_eq!(path, p);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

// ---------- datasets ----------

#[test]
fn dataset_kind_names_round_trip() {
    for k in DatasetKind::ALL {
        assert_eq!(k.to_string().parse::<DatasetKind>().ok(), Some(k));
    }
    match "cifar".parse::<DatasetKind>() {
        Err(e @ DataError::UnknownDataset { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("cifar") && msg.contains("mnist, fashion, mnist10k"),
                "{msg}"
            );
        }
        other => panic!("expected UnknownDataset, got {other:?}"),
    }
}

#[test]
fn candidate_dirs_follow_the_documented_order() {
    let explicit = Path::new("/x/y");
    assert_eq!(
        DatasetKind::Fashion.candidate_dirs_with(Some(explicit), Some("/env".into())),
        vec![explicit]
    );
    assert_eq!(
        DatasetKind::Mnist.candidate_dirs_with(None, Some("/env".into())),
        vec![PathBuf::from("/env/mnist"), PathBuf::from("data/mnist")]
    );
    assert_eq!(
        DatasetKind::Fashion.candidate_dirs_with(None, None),
        vec![PathBuf::from("data/fashion"), PathBuf::from(DEBIAN_FASHION)]
    );
    assert_eq!(
        DatasetKind::Mnist10k.candidate_dirs_with(None, Some("".into())),
        vec![PathBuf::from("data/mnist"), PathBuf::from("data/mnist10k")]
    );
}

#[test]
fn missing_dataset_says_which_files_where_and_how_to_get_them() {
    let dir = scratch("missing");
    write(&dir, "t10k-labels-idx1-ubyte", &labels_bytes(1, &[1])); // un-gzipped name counts
    match Dataset::load(DatasetKind::Mnist, Some(&dir)) {
        Err(e @ DataError::Missing { .. }) => {
            let msg = e.to_string();
            let DataError::Missing { searched, .. } = &e else {
                unreachable!()
            };
            assert_eq!(searched.len(), 1);
            assert_eq!(searched[0].dir, dir);
            assert_eq!(
                searched[0].missing,
                [
                    "train-images-idx3-ubyte.gz",
                    "train-labels-idx1-ubyte.gz",
                    "t10k-images-idx3-ubyte.gz"
                ]
            );
            assert!(
                msg.contains(&dir.display().to_string())
                    && msg.contains("data::download_dataset")
                    && !msg.contains("--")
                    && msg.contains("The mnist10k dataset"),
                "{msg}"
            );
        }
        other => panic!("expected Missing, got {other:?}"),
    }
}

#[test]
fn synthetic_dataset_loads_from_mixed_raw_and_gzip_files() {
    let dir = scratch("synthetic");
    let px = |n: u32, seed| noise((n * 784) as usize, seed);
    write(
        &dir,
        "train-images-idx3-ubyte",
        &images_bytes(5, 28, 28, &px(5, 8)),
    );
    write(
        &dir,
        "train-labels-idx1-ubyte.gz",
        &gzip(&labels_bytes(5, &[0, 1, 2, 3, 9])),
    );
    write(
        &dir,
        "t10k-images-idx3-ubyte.gz",
        &gzip(&images_bytes(2, 28, 28, &px(2, 9))),
    );
    write(&dir, "t10k-labels-idx1-ubyte", &labels_bytes(2, &[4, 5]));
    let ds = Dataset::load(DatasetKind::Fashion, Some(&dir)).expect("synthetic dataset loads");
    assert_eq!((ds.train.len(), ds.test.len()), (5, 2));
    assert_eq!(ds.test.labels, [4, 5]);
    assert_eq!(ds.dir, dir);

    // Not 28x28: BadShape naming the file.
    write(
        &dir,
        "t10k-images-idx3-ubyte.gz",
        &gzip(&images_bytes(2, 14, 56, &px(2, 9))),
    );
    match Dataset::load(DatasetKind::Fashion, Some(&dir)) {
        Err(DataError::BadShape { path, .. }) => {
            assert_eq!(path, dir.join("t10k-images-idx3-ubyte.gz"))
        }
        other => panic!("expected BadShape, got {other:?}"),
    }
    // mnist10k needs exactly 10,000 test images.
    assert!(matches!(
        Dataset::load(DatasetKind::Mnist10k, Some(&dir)),
        Err(DataError::BadShape { .. })
    ));
}

#[test]
fn mean_std_is_exact_on_known_pixels() {
    let split = |pixels: Vec<u8>| Split {
        images: kiln::data::Images {
            count: 1,
            rows: 1,
            cols: pixels.len(),
            pixels: pixels.clone(),
        },
        labels: vec![0],
    };
    assert_eq!(split(vec![0, 255, 0, 255]).mean_std(), (0.5, 0.5));
    let (m, s) = split(vec![51; 7]).mean_std();
    assert!((m - 0.2).abs() < 1e-7 && s == 0.0, "{m} {s}");
    // Against a direct f64 computation on noise.
    let px = noise(9973, 10);
    let xs: Vec<f64> = px.iter().map(|&p| p as f64 / 255.0).collect();
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let std = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
    let (m, s) = split(px).mean_std();
    assert!(
        (m as f64 - mean).abs() < 1e-6 && (s as f64 - std).abs() < 1e-6,
        "{m} {s} vs {mean} {std}"
    );
}

// ---------- real data ----------

/// SHA-256 of the .gz files, from ../shared/data/mnist/README.md.
const MNIST_GZ_SHA256: [(&str, &str); 2] = [
    (
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
];

#[test]
fn real_mnist_test_set_loads() {
    let dir = shared_mnist();
    for (name, want) in MNIST_GZ_SHA256 {
        let bytes = std::fs::read(dir.join(name)).expect("read shared MNIST file");
        assert_eq!(
            sha256_hex(&bytes),
            want,
            "{name}: SHA-256 differs from the README's"
        );
    }
    let images = read_images(&dir.join("t10k-images-idx3-ubyte.gz")).expect("MNIST test images");
    let labels = read_labels(&dir.join("t10k-labels-idx1-ubyte.gz"), 9).expect("MNIST test labels");
    assert_eq!((images.count, images.rows, images.cols), (10_000, 28, 28));
    assert_eq!(images.pixels.len(), 10_000 * 784);
    assert_eq!(labels.len(), 10_000);
    assert_eq!(labels[0], 7);
    // Every digit occurs, and the label histogram is MNIST's test histogram.
    let mut hist = [0usize; 10];
    labels.iter().for_each(|&l| hist[l as usize] += 1);
    assert_eq!(
        hist,
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

#[test]
fn mnist10k_splits_8000_2000() {
    let dir = shared_mnist();
    let ds = Dataset::load(DatasetKind::Mnist10k, Some(&dir))
        .expect("mnist10k from ../shared/data/mnist");
    assert_eq!((ds.train.len(), ds.test.len()), (8_000, 2_000));
    assert_eq!(
        (ds.train.images.count, ds.test.images.count),
        (8_000, 2_000)
    );
    assert_eq!(ds.train.labels[0], 7);
    let all = read_labels(&dir.join("t10k-labels-idx1-ubyte.gz"), 9).expect("labels");
    assert_eq!(ds.test.labels[..], all[8_000..]);
    // MNIST's well-known statistics: mean ~0.13, std ~0.31.
    let (m, s) = ds.train.mean_std();
    assert!(
        (0.12..0.145).contains(&m) && (0.29..0.325).contains(&s),
        "mean {m}, std {s}"
    );
}

/// SHA-256 of the *decompressed* Fashion-MNIST files (Debian recompressed the .gz files,
/// so their own checksums differ from Zalando's; the content is the same).
const FASHION_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

#[test]
fn fashion_from_debian_package_loads() {
    let dir = Path::new(DEBIAN_FASHION);
    assert!(
        dir.is_dir(),
        "{DEBIAN_FASHION} is missing: this test needs Fashion-MNIST; run `apt-get install dataset-fashion-mnist`"
    );
    for (name, want) in FASHION_SHA256 {
        let bytes = kiln::data::read_idx_bytes(&dir.join(name)).expect("read Fashion-MNIST file");
        assert_eq!(
            sha256_hex(&bytes),
            want,
            "{name}: decompressed SHA-256 differs"
        );
    }
    let ds = Dataset::load(DatasetKind::Fashion, Some(dir)).expect("Fashion-MNIST loads");
    assert_eq!((ds.train.len(), ds.test.len()), (60_000, 10_000));
    assert_eq!((ds.train.labels[0], ds.test.labels[0]), (9, 9)); // ankle boots
    assert!(DatasetKind::Fashion
        .candidate_dirs(None)
        .contains(&dir.to_path_buf()));
}

// ---------- fuzzing on stable: seeded mutations of the seed corpus ----------

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/idx");

/// xorshift64*: a fixed seed makes every run (and every failure) reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    const BYTES: [u8; 12] = [0, 1, 7, 8, 9, 10, 11, 0x1f, 0x7f, 0x80, 0x8b, 0xff];
    const WORDS: [u32; 10] = [
        0,
        1,
        2,
        28,
        0x801,
        0x803,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fffe,
        0xffff_ffff,
    ];
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = BYTES[rng.below(BYTES.len())];
            }
            // Header words are where the interesting checks are.
            2 if len >= 4 => {
                let at = 4 * rng.below(len.min(20) / 4);
                let w = WORDS[rng.below(WORDS.len())].to_be_bytes();
                input[at..at + 4].copy_from_slice(&w);
            }
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let fill: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, fill);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at..end);
            }
            5 => input.truncate(rng.below(len + 1)),
            6 => input.extend((0..1 + rng.below(32)).map(|_| rng.next() as u8)),
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
        }
    }
}

/// 200,000 mutated inputs (override with KILN_FUZZ_ITERS) through the fuzz target's body.
/// A quarter of the gzip seeds are mutated inside (decompress, mutate, recompress) so the
/// IDX checks behind the gzip layer are reached too. A panic saves the input and fails.
#[test]
fn fuzz_corpus_mutations_never_panic() {
    let mut seeds = Vec::new();
    let entries =
        std::fs::read_dir(CORPUS).unwrap_or_else(|e| panic!("seed corpus {CORPUS} missing: {e}"));
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        seeds.push(std::fs::read(&path).expect("read corpus file"));
    }
    assert!(
        seeds.len() >= 10,
        "seed corpus {CORPUS} has only {} files",
        seeds.len()
    );
    seeds.sort(); // read_dir order is not stable; the mutation sequence must be
    let iters: usize = std::env::var("KILN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);

    let mut rng = Rng(0x6b69_6c6e_6964_7831);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..iters {
        let seed = &seeds[rng.below(seeds.len())];
        let input = if seed.starts_with(&[0x1f, 0x8b]) && rng.below(4) == 0 {
            let mut inner = decode_bytes(seed, Path::new("seed"))
                .map(|c| c.into_owned())
                .unwrap_or_default();
            mutate(&mut rng, &mut inner, &seeds);
            gzip(&inner)
        } else {
            let mut input = seed.clone();
            mutate(&mut rng, &mut input, &seeds);
            input
        };
        match std::panic::catch_unwind(|| kiln::data::idx::fuzz_one(&input)) {
            Ok(r) => {
                let name = match r {
                    Ok(()) => "Ok".to_string(),
                    Err(e) => format!("{e:?}")
                        .split([' ', '('])
                        .next()
                        .unwrap_or("?")
                        .to_string(),
                };
                *outcomes.entry(name).or_default() += 1;
            }
            Err(_) => {
                let crash = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("idx-crash-{i}"));
                let _ = std::fs::write(&crash, &input);
                panic!(
                    "iteration {i}: the parser panicked; input saved to {}",
                    crash.display()
                );
            }
        }
    }
    eprintln!("{iters} mutated inputs ran clean; outcomes: {outcomes:?}");
    // The mutations must reach past the first check: several outcomes, including success.
    for want in [
        "Ok",
        "Truncated",
        "BadMagic",
        "TooLarge",
        "Gzip",
        "BadLabel",
        "TrailingData",
    ] {
        assert!(
            iters < 10_000 || outcomes.contains_key(want),
            "never reached {want}: {outcomes:?}"
        );
    }
}
