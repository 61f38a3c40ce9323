//! Misread digit strings explained (issue 30 §4): a labelled folder of fields is read by
//! [`Reader`] (in chunks of [`FIELDS_PER_CALL`]), the fields whose text differs from their
//! label are kept, and for the first few the page shows the segmentation (each chosen
//! digit's box, its label and probability, marked right, wrong or extra by the alignment
//! [`score::align`] makes) and, for every digit, the 28x28 image the classifier saw with the
//! saliency and Grad-CAM of the class read: one [`Explainer`] call over all the digits of all
//! the fields shown, in its bounded batches.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use image::GrayImage;
use serde::Serialize;

use super::report::{self, esc, normalise_abs, overlay, Canvas};
use super::{Explainer, Explanation};
use crate::digits::classify::{Classifier, DEFAULT_BATCH};
use crate::digits::predict::{load_gray, normalise};
use crate::digits::read::score::{self, FIELDS_PER_CALL};
use crate::digits::read::{Options, Reader, Reading};
use crate::model::checkpoint::Checkpoint;
use crate::{Error, Gpu, Result};

/// How a field was misread, by the lengths the alignment leaves unpaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// As many digits read as written; at least one read wrong.
    WrongDigit,
    /// More digits read than written: a digit cut in two (or a speck read as a digit).
    Split,
    /// Fewer digits read than written: touching digits read as one (or a digit left out).
    Merge,
}

impl ErrorKind {
    /// The kind of a reading `read` of the digits `truth` (which differ).
    pub fn of(truth: &str, read: &str) -> ErrorKind {
        match read.len().cmp(&truth.len()) {
            std::cmp::Ordering::Greater => ErrorKind::Split,
            std::cmp::Ordering::Less => ErrorKind::Merge,
            std::cmp::Ordering::Equal => ErrorKind::WrongDigit,
        }
    }

    /// As the summary prints it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::WrongDigit => "a digit wrong",
            ErrorKind::Split => "split",
            ErrorKind::Merge => "merge",
        }
    }
}

/// What the alignment says of one digit read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// Paired with a written digit, and the same.
    Right,
    /// Paired with another written digit.
    Wrong {
        /// The digit written there.
        truth: u8,
    },
    /// Paired with no written digit: one too many.
    Extra,
}

/// The mark of each digit of `read`, and the positions of the digits of `truth` that no digit
/// read is paired with, by [`score::align`] (the alignment the string scores use).
pub fn marks(truth: &str, read: &str) -> (Vec<Mark>, Vec<usize>) {
    let (t, r) = (truth.as_bytes(), read.as_bytes());
    let (_, pairs) = score::align(t, r);
    let mut marks = vec![Mark::Extra; r.len()];
    let mut paired = vec![false; t.len()];
    for (i, j) in pairs {
        marks[j] = if t[i] == r[j] { Mark::Right } else { Mark::Wrong { truth: t[i] - b'0' } };
        paired[i] = true;
    }
    (marks, (0..t.len()).filter(|&i| !paired[i]).collect())
}

/// One misread field.
#[derive(Clone, Debug, Serialize)]
pub struct Misread {
    /// The field's image.
    pub path: PathBuf,
    /// The digits written (its label).
    pub label: String,
    /// The digits read.
    pub read: String,
    /// The reading's confidence.
    pub confidence: f32,
    /// How it was misread.
    pub kind: ErrorKind,
}

/// A misread field shown on the page.
pub struct Shown {
    /// Its index in [`StringsSummary::misread`].
    pub index: usize,
    /// The field as the reader took it (white ink on black).
    pub image: GrayImage,
    /// What the reader read.
    pub reading: Reading,
    /// Each digit read's mark.
    pub marks: Vec<Mark>,
    /// The written digits no digit read is paired with (positions in the label).
    pub missing: Vec<usize>,
    /// Each digit read's explanation, for the class read.
    pub explanations: Vec<Explanation>,
}

/// What [`explain_strings`] found and wrote.
#[derive(Serialize)]
pub struct StringsSummary {
    /// Fields read.
    pub fields: usize,
    /// Every misread field, in the order of the labels.
    pub misread: Vec<Misread>,
    /// Aligned digits read wrong: `((written, read), count)`, most frequent first.
    pub substitutions: Vec<((u8, u8), usize)>,
    /// Digits read that align with no written digit, over all misread fields.
    pub extra_digits: usize,
    /// Written digits that align with no digit read, over all misread fields.
    pub missing_digits: usize,
    /// The first misread fields, explained.
    #[serde(skip)]
    pub shown: Vec<Shown>,
    /// Files written, `index.html` last.
    pub files: Vec<PathBuf>,
}

impl StringsSummary {
    /// Misread fields of `kind`.
    pub fn count(&self, kind: ErrorKind) -> usize {
        self.misread.iter().filter(|m| m.kind == kind).count()
    }
}

impl fmt::Display for StringsSummary {
    /// How many fields were misread, of which kind, and the most frequent wrong digits.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let n = self.misread.len();
        writeln!(f, "misread: {n} of {} fields ({:.2}%)", self.fields, 100.0 * n as f64 / self.fields.max(1) as f64)?;
        writeln!(f, "  a digit wrong: {:>5}  (as many digits read as written)", self.count(ErrorKind::WrongDigit))?;
        writeln!(f, "  split:         {:>5}  (more digits read; {} extra digits in all)", self.count(ErrorKind::Split), self.extra_digits)?;
        writeln!(f, "  merge:         {:>5}  (fewer digits read; {} written digits unread in all)", self.count(ErrorKind::Merge), self.missing_digits)?;
        let top: Vec<String> = self.substitutions.iter().take(8).map(|((t, r), c)| format!("{t}->{r} {c}")).collect();
        if !top.is_empty() {
            writeln!(f, "aligned digits read wrong (written->read count): {}", top.join(", "))?;
        }
        Ok(())
    }
}

/// Reads every field of `files` (`(image, digits written)`, as [`score::resolve_strings`]
/// gives them) and returns the misread ones, with the first `keep` of them ready to show
/// (explanations still empty). An image that cannot be read is an error naming it.
pub fn read_misread(reader: &mut Reader, files: &[(PathBuf, String)], keep: usize) -> Result<(Vec<Misread>, Vec<Shown>)> {
    let (mut misread, mut shown) = (Vec::new(), Vec::new());
    for chunk in files.chunks(FIELDS_PER_CALL) {
        let images = chunk.iter().map(|(p, _)| load_gray(p)).collect::<Result<Vec<_>>>()?;
        let readings = reader.read(&images)?;
        for (((path, label), image), reading) in chunk.iter().zip(images).zip(readings) {
            if reading.text == *label {
                continue;
            }
            let kind = ErrorKind::of(label, &reading.text);
            if shown.len() < keep {
                let (marks, missing) = marks(label, &reading.text);
                shown.push(Shown { index: misread.len(), image, reading: reading.clone(), marks, missing, explanations: Vec::new() });
            }
            misread.push(Misread { path: path.clone(), label: label.clone(), read: reading.text, confidence: reading.confidence, kind });
        }
    }
    Ok((misread, shown))
}

/// The explain report of a labelled folder of digit strings (the application behind
/// `explain --strings`): reads every field with a [`Reader`] over `checkpoint`, explains
/// the first `count` misread fields (every digit's saliency for the class read, in one
/// [`Explainer`] call) and writes the page into `dir` (new, empty, or an earlier report's:
/// see [`report::check_dir`]).
pub fn explain_strings(gpu: &Gpu, checkpoint: Checkpoint, files: &[(PathBuf, String)], count: usize, dir: &Path, title: &str) -> Result<StringsSummary> {
    if count == 0 {
        return Err(Error::unsupported("explain_strings(count)", "expected at least 1 misread field to show"));
    }
    let earlier = report::check_dir(dir)?;
    let (mean, std) = (checkpoint.mean, checkpoint.std);
    let mut reader = Reader::new(Classifier::new(gpu, checkpoint.clone(), DEFAULT_BATCH)?, Options::default());
    let (misread, mut shown) = read_misread(&mut reader, files, count)?;
    drop(reader);
    let digits: Vec<&crate::digits::read::ReadDigit> = shown.iter().flat_map(|s| &s.reading.digits).collect();
    if !digits.is_empty() {
        let inputs: Vec<f32> = digits.iter().flat_map(|d| normalise(d.input.as_raw(), mean, std)).collect();
        let classes: Vec<usize> = digits.iter().map(|d| d.label as usize).collect();
        let mut explained = Explainer::new(gpu, checkpoint, 64)?.explain(&inputs, Some(&classes))?.into_iter();
        for s in &mut shown {
            s.explanations = explained.by_ref().take(s.reading.digits.len()).collect();
        }
    }
    let mut substitutions: BTreeMap<(u8, u8), usize> = BTreeMap::new();
    let (mut extra_digits, mut missing_digits) = (0, 0);
    for m in &misread {
        let (marks, missing) = marks(&m.label, &m.read);
        missing_digits += missing.len();
        for (mark, r) in marks.iter().zip(m.read.bytes()) {
            match mark {
                Mark::Wrong { truth } => *substitutions.entry((*truth, r - b'0')).or_default() += 1,
                Mark::Extra => extra_digits += 1,
                Mark::Right => {}
            }
        }
    }
    let mut substitutions: Vec<_> = substitutions.into_iter().collect();
    substitutions.sort_by_key(|&(pair, c)| (std::cmp::Reverse(c), pair));
    let mut summary = StringsSummary { fields: files.len(), misread, substitutions, extra_digits, missing_digits, shown, files: Vec::new() };
    let (html, pictures) = page(&summary, title);
    summary.files = report::write_page(dir, earlier, pictures, &html)?;
    Ok(summary)
}

/// The colour of a mark: green right, red wrong, orange extra.
fn colour(mark: Mark) -> [u8; 3] {
    match mark {
        Mark::Right => [40, 190, 60],
        Mark::Wrong { .. } => [235, 40, 40],
        Mark::Extra => [255, 150, 0],
    }
}

/// Upscaling of each digit's 28x28 panels.
pub const DIGIT_SCALE: usize = 3;
/// The coloured frame around each digit's column of panels, in pixels.
pub const FRAME: usize = 3;
/// The space between two digits' columns, in pixels.
pub const DIGIT_GAP: usize = 6;
/// The band above a field for its digits' labels: two rows of text.
pub const LABEL_BAND: usize = 2 * (5 * GLYPH_SCALE + 3) + 2;
const GLYPH_SCALE: usize = 2;

/// The integer upscaling of a field of `(w, h)` pixels: about 112 pixels high, at most 4x,
/// at most 2,400 pixels wide (huge fields stay at 1x).
pub fn field_scale(w: usize, h: usize) -> usize {
    let mut s = (112 / h.max(1)).clamp(1, 4);
    while s > 1 && w * s > 2400 {
        s -= 1;
    }
    s
}

/// 3x5 glyphs of `0-9` and `.`, one row of three bits per byte, top row first.
const GLYPHS: [[u8; 5]; 11] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
    [0, 0, 0, 0, 2],
];

/// Draws `text` (digits, `.` and spaces) at (x, y) in `rgb`, clipped to the canvas; returns
/// the width drawn.
fn text(c: &mut Canvas, x: usize, y: usize, text: &str, rgb: [u8; 3]) -> usize {
    let advance = 4 * GLYPH_SCALE;
    for (k, ch) in text.chars().enumerate() {
        let glyph = match ch {
            '0'..='9' => GLYPHS[ch as usize - '0' as usize],
            '.' => GLYPHS[10],
            _ => continue,
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) == 0 {
                    continue;
                }
                for dy in 0..GLYPH_SCALE {
                    for dx in 0..GLYPH_SCALE {
                        let (px, py) = (x + k * advance + col * GLYPH_SCALE + dx, y + row * GLYPH_SCALE + dy);
                        if px < c.w && py < c.h {
                            let o = (py * c.w + px) * 3;
                            c.rgb[o..o + 3].copy_from_slice(&rgb);
                        }
                    }
                }
            }
        }
    }
    text.chars().count() * advance
}

/// A rectangle's outline, `t` pixels thick, inside (x0, y0)..(x1, y1) exclusive.
fn outline(c: &mut Canvas, (x0, y0, x1, y1): (usize, usize, usize, usize), t: usize, rgb: [u8; 3]) {
    for y in y0..y1.min(c.h) {
        for x in x0..x1.min(c.w) {
            if x < x0 + t || x + t >= x1 || y < y0 + t || y + t >= y1 {
                let o = (y * c.w + x) * 3;
                c.rgb[o..o + 3].copy_from_slice(&rgb);
            }
        }
    }
}

/// The field scaled by [`field_scale`] under a [`LABEL_BAND`], each digit's box outlined in
/// its mark's colour and labelled above with the digit and its probability (`7 .93`).
fn field_picture(s: &Shown) -> Canvas {
    let (w, h) = (s.image.width() as usize, s.image.height() as usize);
    let k = field_scale(w, h);
    let mut c = Canvas::new(w * k, LABEL_BAND + h * k, 255);
    let pixels = s.image.as_raw();
    c.blit(0, LABEL_BAND, (h, w), k, |p| [pixels[p]; 3]);
    let mut row_end = [0usize; 2];
    for (d, &mark) in s.reading.digits.iter().zip(&s.marks) {
        let b = d.bbox;
        let rgb = colour(mark);
        outline(&mut c, (b.x0 as usize * k, LABEL_BAND + b.y0 as usize * k, (b.x1 as usize + 1) * k, LABEL_BAND + (b.y1 as usize + 1) * k), 2, rgb);
        // percent, at most .99: a "1.00" would claim a certainty no softmax has
        let label = format!("{} .{:02}", d.label, ((d.top3[0].1 * 100.0).floor() as u32).min(99));
        // above the box's left edge, inside the picture; the upper row unless the label
        // before it there would touch it
        let x = (b.x0 as usize * k).min(c.w.saturating_sub(label.len() * 4 * GLYPH_SCALE));
        let row = usize::from(x < row_end[0] && x >= row_end[1]);
        row_end[row] = x + text(&mut c, x, 1 + row * (5 * GLYPH_SCALE + 3), &label, rgb) + 2 * GLYPH_SCALE;
    }
    c
}

/// One column per digit read, framed in its mark's colour: the 28x28 input, its saliency for
/// the class read and (for a model with convolutions) its Grad-CAM, each [`DIGIT_SCALE`]x.
/// `None` for a reading without digits.
fn digits_picture(s: &Shown) -> Option<Canvas> {
    let n = s.explanations.len();
    let first = s.explanations.first()?;
    let panels = if first.grad_cam.is_some() { 3 } else { 2 };
    let p = 28 * DIGIT_SCALE;
    let cell = p + 2 * FRAME;
    let mut c = Canvas::new(n * cell + (n - 1) * DIGIT_GAP, panels * p + 2 * FRAME, 255);
    for (i, ((d, e), &mark)) in s.reading.digits.iter().zip(&s.explanations).zip(&s.marks).enumerate() {
        let x = i * (cell + DIGIT_GAP);
        let height = c.h;
        outline(&mut c, (x, 0, x + cell, height), FRAME, colour(mark));
        let digit = d.input.as_raw();
        c.blit(x + FRAME, FRAME, (28, 28), DIGIT_SCALE, |q| [digit[q]; 3]);
        let sal = normalise_abs(&e.saliency[..28 * 28]);
        c.blit(x + FRAME, FRAME + p, (28, 28), DIGIT_SCALE, |q| overlay(digit[q], sal[q]));
        if let Some(cam) = &e.grad_cam {
            c.blit(x + FRAME, FRAME + 2 * p, (28, 28), DIGIT_SCALE, |q| overlay(digit[q], cam[q]));
        }
    }
    Some(c)
}

/// The page and its pictures.
fn page(r: &StringsSummary, title: &str) -> (String, Vec<(String, Canvas)>) {
    let mut html = String::new();
    let mut pictures = Vec::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>kiln explain: {t}</title>\n<style>\
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} img{{image-rendering:pixelated;display:block;margin:4px 0}}\
 table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right;font-size:13px}}\
 .right{{color:#1a8f32}} .wrong{{color:#d01818}} .extra{{color:#d07800}}\
</style></head><body>\n<h1>Misread digit strings</h1>\n<p>{t}.</p>\n<pre>{summary}</pre>\n",
        t = esc(title),
        summary = esc(&r.to_string())
    );
    let _ = writeln!(
        html,
        "<p>Each field: above, as the reader took it, each digit it chose boxed and labelled with the digit and its probability, \
<span class=\"right\">green</span> where the alignment with the label pairs it with the same digit, <span class=\"wrong\">red</span> \
with another, <span class=\"extra\">orange</span> with none (a split). Below, per digit: the 28x28 image the classifier saw, \
the saliency of the class read (|d logit / d pixel|){}.</p>",
        if r.shown.first().and_then(|s| s.explanations.first()).is_some_and(|e| e.grad_cam.is_some()) { " and its Grad-CAM" } else { "" }
    );
    if r.shown.len() < r.misread.len() {
        let _ = writeln!(html, "<p>The first {} misread fields are shown.</p>", r.shown.len());
    }
    for (k, s) in r.shown.iter().enumerate() {
        let m = &r.misread[s.index];
        let name = m.path.file_name().map_or_else(|| m.path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let _ = writeln!(
            html,
            "<h3>{}: written {}, read {} ({:.2}) &mdash; {}</h3>",
            esc(&name),
            m.label,
            if m.read.is_empty() { "nothing".into() } else { m.read.clone() },
            m.confidence,
            m.kind.name()
        );
        let field = format!("string-{k}.png");
        let _ = writeln!(html, "<img src=\"{field}\" alt=\"field {} with the digits read boxed\">", esc(&name));
        pictures.push((field, field_picture(s)));
        if let Some(digits) = digits_picture(s) {
            let file = format!("string-{k}-digits.png");
            let _ = writeln!(html, "<img src=\"{file}\" alt=\"each digit of {} and its saliency\">", esc(&name));
            pictures.push((file, digits));
        }
        html.push_str("<table><tr><th>digit</th><th>box (x0, y0, x1, y1)</th><th>read</th><th>top 3</th><th>written</th></tr>\n");
        for (i, (d, mark)) in s.reading.digits.iter().zip(&s.marks).enumerate() {
            let top3 = d.top3.iter().map(|(c, p)| format!("{c}: {p:.2}")).collect::<Vec<_>>().join(", ");
            let (class, written) = match mark {
                Mark::Right => ("right", d.label.to_string()),
                Mark::Wrong { truth } => ("wrong", truth.to_string()),
                Mark::Extra => ("extra", "none (extra)".into()),
            };
            let b = d.bbox;
            let _ = writeln!(html, "<tr class=\"{class}\"><td>{}</td><td>{}, {}, {}, {}</td><td>{}</td><td>{top3}</td><td>{written}</td></tr>", i + 1, b.x0, b.y0, b.x1, b.y1, d.label);
        }
        html.push_str("</table>\n");
        if !s.missing.is_empty() {
            let unread: Vec<String> = s.missing.iter().map(|&i| format!("{} (digit {})", &m.label[i..=i], i + 1)).collect();
            let _ = writeln!(html, "<p>Written and not read: {}.</p>", unread.join(", "));
        }
    }
    html.push_str("<p>Made by kiln's <code>explain --strings</code> example.</p>\n</body></html>\n");
    (html, pictures)
}
