//! MNIST, Fashion-MNIST and the mnist10k protocol: where the files are, and loading them.
//!
//! Directory resolution, first match wins (a directory matches when every file the
//! dataset needs is in it, each either gzip-compressed or not):
//! 1. the explicit `data_dir` (`--data-dir`); when given, it is the only place searched;
//! 2. `$KILN_DATA/<dir>`: `KILN_DATA` names a root holding one directory per dataset;
//! 3. `./data/<dir>`;
//! 4. for `fashion` only, Debian's `/usr/share/datasets/fashion-mnist`
//!    (package `dataset-fashion-mnist`).
//!
//! `<dir>` is the dataset name; `mnist10k`, which reads only MNIST's two test files,
//! looks in `mnist` first (and downloads there), then in `mnist10k`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::idx::{read_images, read_labels, Images};
use super::{DataError, Searched};

/// Classes in every dataset here (digits 0-9, or ten kinds of clothing).
pub const NUM_CLASSES: usize = 10;
/// Image side in every dataset here.
pub const IMAGE_SIDE: usize = 28;
/// The mnist10k protocol: the first 8,000 MNIST test images train...
pub const MNIST10K_TRAIN: usize = 8_000;
/// ...and the last 2,000 evaluate; the test files must hold exactly this many.
pub const MNIST10K_TOTAL: usize = 10_000;

/// The MNIST file of the 60,000 training images (also Fashion-MNIST's name).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
/// The MNIST file of the 60,000 training labels.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
/// The MNIST file of the 10,000 test images.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
/// The MNIST file of the 10,000 test labels.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// The environment variable naming the root of the data directories.
pub const DATA_ENV: &str = "KILN_DATA";
/// Debian's install directory for Fashion-MNIST.
pub const DEBIAN_FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

const VALID_NAMES: &str = "mnist, fashion, mnist10k";

/// A dataset kiln knows how to find, load and download; `--dataset` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum DatasetKind {
    /// MNIST digits: 60,000 train, 10,000 test.
    Mnist,
    /// Fashion-MNIST (Zalando): 60,000 train, 10,000 test, same format and file names.
    Fashion,
    /// MNIST's test set alone: the first 8,000 images train, the last 2,000 evaluate.
    Mnist10k,
}

impl DatasetKind {
    /// Every dataset, in the order help texts list them.
    pub const ALL: [DatasetKind; 3] = [
        DatasetKind::Mnist,
        DatasetKind::Fashion,
        DatasetKind::Mnist10k,
    ];

    /// The `--dataset` name: `mnist`, `fashion` or `mnist10k`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Fashion => "fashion",
            DatasetKind::Mnist10k => "mnist10k",
        }
    }

    /// The files this dataset needs, by their gzip names (the un-gzipped names, without
    /// `.gz`, are accepted too).
    pub fn files(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mnist | DatasetKind::Fashion => {
                &[TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
            }
            DatasetKind::Mnist10k => &[TEST_IMAGES, TEST_LABELS],
        }
    }

    /// The files of the evaluation split alone (mnist10k's are all of its files).
    pub fn test_files(self) -> &'static [&'static str] {
        &[TEST_IMAGES, TEST_LABELS]
    }

    /// Directory names under a data root, in search order.
    fn dir_names(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mnist => &["mnist"],
            DatasetKind::Fashion => &["fashion"],
            DatasetKind::Mnist10k => &["mnist", "mnist10k"],
        }
    }

    /// The directories searched, in order (see the module docs), with `KILN_DATA` read
    /// from the environment.
    pub fn candidate_dirs(self, data_dir: Option<&Path>) -> Vec<PathBuf> {
        self.candidate_dirs_with(data_dir, std::env::var_os(DATA_ENV).map(PathBuf::from))
    }

    /// [`DatasetKind::candidate_dirs`] with the value of `KILN_DATA` given (tests use this
    /// instead of mutating the process environment).
    pub fn candidate_dirs_with(
        self,
        data_dir: Option<&Path>,
        kiln_data: Option<PathBuf>,
    ) -> Vec<PathBuf> {
        if let Some(dir) = data_dir {
            return vec![dir.to_path_buf()];
        }
        let mut dirs = Vec::new();
        if let Some(root) = kiln_data.filter(|r| !r.as_os_str().is_empty()) {
            dirs.extend(self.dir_names().iter().map(|d| root.join(d)));
        }
        dirs.extend(self.dir_names().iter().map(|d| Path::new("data").join(d)));
        if self == DatasetKind::Fashion {
            dirs.push(PathBuf::from(DEBIAN_FASHION_DIR));
        }
        dirs
    }

    /// Where `--download` puts the files: the explicit `data_dir`, else the first writable
    /// candidate (`$KILN_DATA/<name>` or `./data/<name>`).
    pub fn download_dir(self, data_dir: Option<&Path>) -> PathBuf {
        self.candidate_dirs(data_dir).swap_remove(0)
    }

    /// Finds the directory holding this dataset's files, or says where it looked.
    pub fn locate(self, data_dir: Option<&Path>) -> Result<PathBuf, DataError> {
        self.locate_files(data_dir, self.files())
    }

    /// Finds the directory holding `files` (some of [`DatasetKind::files`]), or says where
    /// it looked and which of them each place lacks.
    fn locate_files(self, data_dir: Option<&Path>, files: &[&str]) -> Result<PathBuf, DataError> {
        let candidates = self.candidate_dirs(data_dir);
        let mut searched = Vec::new();
        for dir in &candidates {
            let missing: Vec<String> = files
                .iter()
                .filter(|f| find_file(dir, f).is_none())
                .map(|f| f.to_string())
                .collect();
            if missing.is_empty() {
                return Ok(dir.clone());
            }
            searched.push(Searched {
                dir: dir.clone(),
                missing,
            });
        }
        Err(DataError::Missing {
            dataset: self.name().into(),
            searched,
            hint: self.missing_hint(&candidates[0]),
        })
    }

    fn missing_hint(self, first: &Path) -> String {
        let mut hint = format!(
            "Put the files in {} yourself (gzip or not), or point the data directory or {DATA_ENV} at the \
             directory that holds them, or download them (data::download_dataset).",
            first.display()
        );
        match self {
            DatasetKind::Mnist => hint.push_str(
                " Offline with only MNIST's two test files (t10k-*)? The mnist10k dataset trains on 8,000 of them \
                 and evaluates on the other 2,000.",
            ),
            DatasetKind::Fashion => hint.push_str(" On Debian/Ubuntu: apt-get install dataset-fashion-mnist."),
            DatasetKind::Mnist10k => {}
        }
        hint
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| DataError::UnknownDataset {
                name: s.into(),
                valid: VALID_NAMES,
            })
    }
}

/// `dir/name` if it is a file, else `dir/name` without `.gz` if that is a file.
pub fn find_file(dir: &Path, gz_name: &str) -> Option<PathBuf> {
    let gz = dir.join(gz_name);
    if gz.is_file() {
        return Some(gz);
    }
    let raw = dir.join(gz_name.strip_suffix(".gz")?);
    raw.is_file().then_some(raw)
}

/// Images and their labels; `images.count == labels.len()` always.
#[derive(Clone, PartialEq)]
pub struct Split {
    /// The images.
    pub images: Images,
    /// One label per image (in `0..=9` for the datasets kiln loads).
    pub labels: Vec<u8>,
}

impl fmt::Debug for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Split {{ images: {:?}, labels: [{} labels] }}",
            self.images,
            self.labels.len()
        )
    }
}

impl Split {
    /// Reads an image file and a label file (labels in `0..=max_label`) and checks that
    /// they hold the same number of items.
    pub fn read(images_path: &Path, labels_path: &Path, max_label: u8) -> Result<Split, DataError> {
        let images = read_images(images_path)?;
        let labels = read_labels(labels_path, max_label)?;
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                images_path: images_path.into(),
                labels_path: labels_path.into(),
                images: images.count,
                labels: labels.len(),
            });
        }
        Ok(Split { images, labels })
    }

    /// Number of items (images, and labels).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no item.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` items and the rest (`n` clamped to the length).
    pub fn split_at(&self, n: usize) -> (Split, Split) {
        let n = n.min(self.len());
        let (ia, ib) = self.images.split_at(n);
        let (la, lb) = self.labels.split_at(n);
        (
            Split {
                images: ia,
                labels: la.to_vec(),
            },
            Split {
                images: ib,
                labels: lb.to_vec(),
            },
        )
    }

    /// Mean and (population) standard deviation of all pixels as `pixel / 255`, for
    /// normalising inputs to `(x - mean) / std`. Exact: a 256-bin histogram of u64
    /// counts, reduced in f64; only the result is rounded to f32. `(0, 0)` when empty.
    pub fn mean_std(&self) -> (f32, f32) {
        let mut hist = [0u64; 256];
        for &p in &self.images.pixels {
            hist[p as usize] += 1;
        }
        let n = self.images.pixels.len() as f64;
        if n == 0.0 {
            return (0.0, 0.0);
        }
        let mean = hist
            .iter()
            .enumerate()
            .map(|(v, &c)| v as f64 / 255.0 * c as f64)
            .sum::<f64>()
            / n;
        // Two-pass over the histogram: no cancellation from E[x^2] - E[x]^2.
        let var = hist
            .iter()
            .enumerate()
            .map(|(v, &c)| {
                let d = v as f64 / 255.0 - mean;
                d * d * c as f64
            })
            .sum::<f64>()
            / n;
        (mean as f32, var.sqrt() as f32)
    }
}

/// A dataset loaded into memory: a training split, an evaluation split, and where it
/// came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Which dataset.
    pub kind: DatasetKind,
    /// The training split (mnist10k: the first 8,000 test images).
    pub train: Split,
    /// The evaluation split (mnist10k: the last 2,000 test images).
    pub test: Split,
    /// The directory the files were read from.
    pub dir: PathBuf,
}

impl Dataset {
    /// Finds the files (see the module docs) and loads them.
    pub fn load(kind: DatasetKind, data_dir: Option<&Path>) -> Result<Dataset, DataError> {
        let dir = kind.locate(data_dir)?;
        Dataset::load_from_dir(kind, &dir)
    }

    /// Finds and loads the evaluation split alone (see [`Dataset::test`]), asking only for
    /// its files ([`DatasetKind::test_files`]); returns it with the directory it came from.
    pub fn load_test(kind: DatasetKind, data_dir: Option<&Path>) -> Result<(Split, PathBuf), DataError> {
        let dir = kind.locate_files(data_dir, kind.test_files())?;
        let test = match kind {
            DatasetKind::Mnist | DatasetKind::Fashion => read_split(kind, &dir, TEST_IMAGES, TEST_LABELS)?,
            DatasetKind::Mnist10k => read_mnist10k(&dir)?.1,
        };
        Ok((test, dir))
    }

    /// The training split's pixel mean and standard deviation (see [`Split::mean_std`]):
    /// the statistics to normalise both splits with.
    pub fn mean_std(&self) -> (f32, f32) {
        self.train.mean_std()
    }

    /// Loads the dataset from `dir`, which must hold all of [`DatasetKind::files`].
    /// Checks that every image is 28x28, labels are 0..=9, and counts agree.
    pub fn load_from_dir(kind: DatasetKind, dir: &Path) -> Result<Dataset, DataError> {
        let split = |images: &str, labels: &str| read_split(kind, dir, images, labels);
        let (train, test) = match kind {
            // the test split decodes on a second thread while the training split does
            // (errors are reported training split first, as one after the other would)
            DatasetKind::Mnist | DatasetKind::Fashion => std::thread::scope(|s| {
                let test = s.spawn(|| split(TEST_IMAGES, TEST_LABELS));
                let train = split(TRAIN_IMAGES, TRAIN_LABELS);
                let test = test.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                Ok::<_, DataError>((train?, test?))
            })?,
            DatasetKind::Mnist10k => read_mnist10k(dir)?,
        };
        Ok(Dataset {
            kind,
            train,
            test,
            dir: dir.to_path_buf(),
        })
    }
}

/// One split of `dir`, checked: every image 28x28, labels 0..=9, counts that agree.
fn read_split(kind: DatasetKind, dir: &Path, images: &str, labels: &str) -> Result<Split, DataError> {
    let ip = require(kind, dir, images)?;
    let lp = require(kind, dir, labels)?;
    let s = Split::read(&ip, &lp, (NUM_CLASSES - 1) as u8)?;
    check_shape(&s, &ip)?;
    Ok(s)
}

/// mnist10k from `dir`: MNIST's test set, split into (the first 8,000, the last 2,000).
fn read_mnist10k(dir: &Path) -> Result<(Split, Split), DataError> {
    let all = read_split(DatasetKind::Mnist10k, dir, TEST_IMAGES, TEST_LABELS)?;
    if all.len() != MNIST10K_TOTAL {
        return Err(DataError::BadShape {
            path: dir.join(TEST_IMAGES),
            message: format!("mnist10k needs exactly {MNIST10K_TOTAL} test images, found {}", all.len()),
        });
    }
    Ok(all.split_at(MNIST10K_TRAIN))
}

/// The path of a needed file in `dir` (gzip or not), or a `Missing` error naming it.
fn require(kind: DatasetKind, dir: &Path, gz_name: &str) -> Result<PathBuf, DataError> {
    find_file(dir, gz_name).ok_or_else(|| DataError::Missing {
        dataset: kind.name().into(),
        searched: vec![Searched {
            dir: dir.into(),
            missing: vec![gz_name.into()],
        }],
        hint: kind.missing_hint(dir),
    })
}

fn check_shape(split: &Split, path: &Path) -> Result<(), DataError> {
    let im = &split.images;
    if im.rows != IMAGE_SIDE || im.cols != IMAGE_SIDE || im.count == 0 {
        return Err(DataError::BadShape {
            path: path.into(),
            message: format!(
                "{} images of {}x{}; expected at least one image of {IMAGE_SIDE}x{IMAGE_SIDE}",
                im.count, im.rows, im.cols
            ),
        });
    }
    Ok(())
}
