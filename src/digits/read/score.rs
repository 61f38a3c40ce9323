//! Scores of readings against labelled digit strings: string accuracy, digit accuracy (one
//! minus the edit distance over the true digits), length accuracy, the confusion of the
//! digits an alignment pairs, and the error–rejection curve (the error among the accepted
//! readings when the least confident fraction is rejected).

use std::fmt;
use std::path::Path;

use crate::digits::classify::CLASSES;
use crate::digits::evaluate::{parse_named, read_labels_text};
use crate::kernels::softmax::Metrics;
use crate::Result;

pub use crate::digits::calibrate::REJECTED;

/// The most digits a label may have.
pub const MAX_DIGITS: usize = 64;

/// One line of a string labels file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StringLabel {
    /// The image's name as written.
    pub name: String,
    /// Its digits, `0-9` only.
    pub digits: String,
    /// The line it came from (1-based).
    pub line: usize,
}

/// Parses a string labels file: `NAME DIGITS` per line (the digits are the last word, 1 to
/// [`MAX_DIGITS`] of `0-9`), `#` comments and blank lines ignored, as
/// [`crate::digits::evaluate::parse_labels`] does for single digits. `path` names the file
/// in errors, which give the line.
pub fn parse_string_labels(text: &str, path: &Path) -> Result<Vec<StringLabel>> {
    let entries = parse_named(text, path, "DIGITS", |_, digits, content| {
        if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("expected 'NAME DIGITS' with 1 to {MAX_DIGITS} digits 0-9, found {content:?}"));
        }
        Ok(digits.to_string())
    })?;
    Ok(entries.into_iter().map(|(name, digits, line)| StringLabel { name, digits, line }).collect())
}

/// Reads and parses a string labels file (see [`parse_string_labels`]).
pub fn read_string_labels(path: &Path) -> Result<Vec<StringLabel>> {
    parse_string_labels(&read_labels_text(path)?, path)
}

/// The edit (Levenshtein) distance between two strings of digits, and the pairs of
/// positions an optimal alignment matches or substitutes (`(truth, read)`).
pub fn align(truth: &[u8], read: &[u8]) -> (usize, Vec<(usize, usize)>) {
    let (n, m) = (truth.len(), read.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = d[i - 1][j - 1] + usize::from(truth[i - 1] != read[j - 1]);
            d[i][j] = sub.min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
        }
    }
    let mut pairs = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        if d[i][j] == d[i - 1][j - 1] + usize::from(truth[i - 1] != read[j - 1]) {
            pairs.push((i - 1, j - 1));
            (i, j) = (i - 1, j - 1);
        } else if d[i][j] == d[i - 1][j] + 1 {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    pairs.reverse();
    (d[n][m], pairs)
}

/// Readings scored against their labels, added one at a time.
#[derive(Clone, Debug)]
pub struct StringScores {
    /// Fields scored.
    pub fields: u64,
    /// Fields read exactly.
    pub exact: u64,
    /// Fields read with the right number of digits.
    pub right_length: u64,
    /// True digits, over all fields.
    pub true_digits: u64,
    /// Edit distances, summed.
    pub edits: u64,
    /// The digits an alignment pairs, counted as (truth, read): `confusion.confusion[truth][read]`.
    pub confusion: Metrics,
    /// Each field's (confidence, read exactly), in the order added.
    pub outcomes: Vec<(f32, bool)>,
}

impl Default for StringScores {
    fn default() -> StringScores {
        StringScores { fields: 0, exact: 0, right_length: 0, true_digits: 0, edits: 0, confusion: Metrics::new(CLASSES), outcomes: Vec::new() }
    }
}

impl StringScores {
    /// Scores a reading (`read`, with its `confidence`) of a field whose digits are `truth`.
    pub fn add(&mut self, truth: &str, read: &str, confidence: f32) {
        let (t, r) = (truth.as_bytes(), read.as_bytes());
        let (edits, pairs) = align(t, r);
        for (i, j) in pairs {
            self.confusion.add((t[i] - b'0') as usize, (r[j] - b'0') as usize);
        }
        self.fields += 1;
        self.exact += u64::from(t == r);
        self.right_length += u64::from(t.len() == r.len());
        self.true_digits += t.len() as u64;
        self.edits += edits as u64;
        self.outcomes.push((confidence, t == r));
    }

    /// The fraction of fields read exactly.
    pub fn string_accuracy(&self) -> f64 {
        self.exact as f64 / self.fields.max(1) as f64
    }

    /// One minus the edit distance per true digit (at least 0).
    pub fn digit_accuracy(&self) -> f64 {
        (1.0 - self.edits as f64 / self.true_digits.max(1) as f64).max(0.0)
    }

    /// The fraction of fields read with the right number of digits.
    pub fn length_accuracy(&self) -> f64 {
        self.right_length as f64 / self.fields.max(1) as f64
    }

    /// The error–rejection curve ([`crate::digits::calibrate::rejection_curve`], the digits'
    /// rule): for each fraction of [`REJECTED`], the `round(fraction * fields)` least
    /// confident readings rejected (ties broken by order added), the
    /// `(fraction, confidence threshold, error rate among the accepted)`; the threshold is the
    /// lowest accepted confidence.
    pub fn rejection_curve(&self) -> Vec<(f64, f32, f64)> {
        let (confidence, exact): (Vec<f32>, Vec<bool>) = self.outcomes.iter().copied().unzip();
        crate::digits::calibrate::rejection_curve(&confidence, &exact, &REJECTED).into_iter().map(|r| (r.rejected, r.threshold as f32, r.error_rate)).collect()
    }

    /// The scores as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let curve: Vec<_> = self.rejection_curve().into_iter().map(|(f, t, e)| serde_json::json!({"rejected": f, "threshold": t, "error": e})).collect();
        serde_json::json!({
            "fields": self.fields,
            "string_accuracy": self.string_accuracy(),
            "digit_accuracy": self.digit_accuracy(),
            "length_accuracy": self.length_accuracy(),
            "error_rejection": curve,
            "confusion": self.confusion.confusion,
        })
    }
}

impl fmt::Display for StringScores {
    /// The scores as a table: accuracies, the error–rejection curve, the confusion matrix.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        writeln!(f, "string accuracy: {:.2}% ({} of {})", 100.0 * self.string_accuracy(), self.exact, self.fields)?;
        writeln!(f, "digit accuracy:  {:.2}% (edit distance {} over {} digits)", 100.0 * self.digit_accuracy(), self.edits, self.true_digits)?;
        writeln!(f, "length accuracy: {:.2}%", 100.0 * self.length_accuracy())?;
        writeln!(f, "rejected  threshold  error among accepted")?;
        for (r, t, e) in self.rejection_curve() {
            writeln!(f, "{:>7.0}%  {t:>9.4}  {:>8.2}%", 100.0 * r, 100.0 * e)?;
        }
        writeln!(f, "confusion of aligned digits (rows: label, columns: read):")?;
        write!(f, "{}", self.confusion)
    }
}

/// The fields of a folder named by a string labels file, with their digits, checked to be
/// regular files (as [`crate::digits::evaluate::resolve`] checks single digits).
pub fn resolve_strings(dir: &Path, labels: &Path, entries: &[StringLabel]) -> Result<Vec<(std::path::PathBuf, String)>> {
    let named: Vec<_> = entries.iter().map(|e| crate::digits::evaluate::Labelled { name: e.name.clone(), label: 0, line: e.line }).collect();
    let files = crate::digits::evaluate::resolve(dir, labels, &named)?;
    Ok(files.into_iter().zip(entries).map(|((path, _), e)| (path, e.digits.clone())).collect())
}

/// Fields read per [`super::Reader::read`] call by [`evaluate_strings`]: bounds the memory of
/// the candidates (some 40 KB per field) while keeping the classifier's batches full.
pub const FIELDS_PER_CALL: usize = 64;

/// Reads every field (loaded as [`crate::digits::predict::load_gray`] loads a photo) and scores
/// the readings against their digits. An image that cannot be read is an error naming it.
pub fn evaluate_strings(reader: &mut super::Reader, files: &[(std::path::PathBuf, String)]) -> Result<StringScores> {
    let mut scores = StringScores::default();
    for chunk in files.chunks(FIELDS_PER_CALL) {
        let images = chunk.iter().map(|(p, _)| crate::digits::predict::load_gray(p)).collect::<Result<Vec<_>>>()?;
        for ((_, truth), reading) in chunk.iter().zip(reader.read(&images)?) {
            scores.add(truth, &reading.text, reading.confidence);
        }
    }
    Ok(scores)
}
