//! The explain report: one HTML page (`index.html`) with PNGs beside it, and their list
//! ([`MANIFEST`]) so that a later report replaces only its own files. Sections:
//! saliency and Grad-CAM per digit, the deletion test, first-layer filters, feature maps,
//! the misclassified gallery (one contact sheet, captions in HTML), the confusion matrix
//! as a heat map with counts. Pictures are drawn here pixel by pixel (nearest-neighbour
//! upscaling keeps the 28x28 pixels visible); no plotting crate is needed for grids.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Deletion, Explanation};
use crate::digits::classify::CLASSES;
use crate::digits::evaluate::Metrics;
use crate::base::files::{write_atomic, write_png};
use crate::{Error, Result};

/// Digits in the misclassified gallery at most.
pub const GALLERY_MAX: usize = 100;
/// Upscaling of a 28x28 digit in the saliency panels.
const PANEL_SCALE: usize = 4;
/// Upscaling of a digit in the contact sheet.
const SHEET_SCALE: usize = 2;

/// Everything the page shows. `pixels` and `labels` are the evaluated split (u8 images of
/// `size` = (height, width)); `probs` holds the model's probabilities for every image.
pub struct Report<'a> {
    /// A heading: the model, the checkpoint, the dataset.
    pub title: String,
    /// The evaluated images, one after another.
    pub pixels: &'a [u8],
    /// Height and width of one image.
    pub size: (usize, usize),
    /// The true class of each image.
    pub labels: &'a [u8],
    /// The model's probabilities for each image.
    pub probs: &'a [[f32; CLASSES]],
    /// Explained images: (index in the split, explanation).
    pub explained: &'a [(usize, Explanation)],
    /// The deletion test's rows.
    pub deletion: &'a [Deletion],
    /// The images the deletion test averaged over.
    pub deletion_images: usize,
    /// The first convolution's filters [K, C, R, S] and weights, if any.
    pub filters: Option<(Vec<usize>, &'a [f32])>,
    /// The node Grad-CAM reads, if any.
    pub cam_layer: Option<String>,
}

/// The predicted class of each image.
fn predictions(probs: &[[f32; CLASSES]]) -> Vec<usize> {
    probs.iter().map(|p| super::argmax(p)).collect()
}

/// An RGB canvas.
pub(super) struct Canvas {
    pub(super) w: usize,
    pub(super) h: usize,
    pub(super) rgb: Vec<u8>,
}

impl Canvas {
    pub(super) fn new(w: usize, h: usize, background: u8) -> Canvas {
        Canvas { w, h, rgb: vec![background; w * h * 3] }
    }

    /// Draws a `(h, w)` plane of colours at (x, y), each pixel a `scale` x `scale` block.
    pub(super) fn blit(&mut self, x: usize, y: usize, (h, w): (usize, usize), scale: usize, colour: impl Fn(usize) -> [u8; 3]) {
        for py in 0..h * scale {
            for px in 0..w * scale {
                let c = colour((py / scale) * w + px / scale);
                let o = ((y + py) * self.w + x + px) * 3;
                self.rgb[o..o + 3].copy_from_slice(&c);
            }
        }
    }

    pub(super) fn save(&self, path: &Path) -> Result<()> {
        write_png(path, &self.rgb, (self.w as u32, self.h as u32), image::ExtendedColorType::Rgb8)
    }
}

/// A heat colour for t in [0, 1]: black, red, yellow, white (as "hot").
fn hot(t: f32) -> [u8; 3] {
    let t = t.clamp(0.0, 1.0) * 3.0;
    let c = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(t), c(t - 1.0), c(t - 2.0)]
}

/// Blue (-1), white (0), red (+1).
fn diverging(t: f32) -> [u8; 3] {
    let t = t.clamp(-1.0, 1.0);
    let fade = (255.0 * (1.0 - t.abs())).round() as u8;
    if t >= 0.0 {
        [255, fade, fade]
    } else {
        [fade, fade, 255]
    }
}

/// `heat` over a gray digit: the digit darkened to a quarter, the heat colour mixed in
/// with weight = the heat.
pub(super) fn overlay(gray: u8, heat: f32) -> [u8; 3] {
    let base = gray as f32 * 0.25;
    let h = hot(heat);
    std::array::from_fn(|i| (base * (1.0 - heat) + h[i] as f32 * heat).round() as u8)
}

/// |v| scaled by its 99th percentile into [0, 1] (one hot pixel does not wash out the map).
pub(super) fn normalise_abs(v: &[f32]) -> Vec<f32> {
    let mut sorted: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    sorted.sort_by(f32::total_cmp);
    let top = sorted[((sorted.len() - 1) as f64 * 0.99) as usize].max(f32::MIN_POSITIVE);
    v.iter().map(|x| (x.abs() / top).min(1.0)).collect()
}

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The file in a report's folder that lists, one name a line, every file explain wrote
/// there: a later report into the same folder replaces those and nothing else.
pub const MANIFEST: &str = "explain-files.txt";

/// Checks that `dir` can take a report: it is missing, empty, or an earlier report's
/// folder (it holds [`MANIFEST`]). Returns the files the earlier report wrote.
pub fn check_dir(dir: &Path) -> Result<Vec<String>> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::file(dir, format!("cannot inspect the report's directory: {e}"))),
        Ok(_) if !dir.is_dir() => return Err(Error::file(dir, "expected a directory for the report, found a file")),
        Ok(_) => {}
    }
    let mut listing = std::fs::read_dir(dir).map_err(|e| Error::file(dir, format!("cannot read the report's directory: {e}")))?;
    if listing.next().is_none() {
        return Ok(Vec::new());
    }
    let manifest = dir.join(MANIFEST);
    match std::fs::symlink_metadata(&manifest) {
        Ok(m) if m.is_file() => {}
        _ => {
            return Err(Error::file(
                dir,
                format!("holds files and is not an earlier explain report (no regular file {MANIFEST}): refusing to replace what explain did not write; name a new or empty directory"),
            ))
        }
    }
    let text = std::fs::read_to_string(&manifest).map_err(|e| Error::file(&manifest, format!("cannot read the earlier report's list of files: {e}")))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// Checks every file a report writes into `dir` before any is written: each is new, or a
/// regular file that the earlier report (`earlier`, from [`check_dir`]) wrote.
fn check_targets<'n>(dir: &Path, names: impl IntoIterator<Item = &'n str>, earlier: &[String]) -> Result<()> {
    for name in names {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(_) => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::file(&path, "is a symbolic link: explain writes a new file and renames it into place, which would replace the link; nothing was written"))
            }
            Ok(m) if !m.is_file() => return Err(Error::file(&path, "is not a regular file: refusing to replace it; nothing was written")),
            Ok(_) if !earlier.iter().any(|e| e == name) => {
                return Err(Error::file(&path, format!("exists and is not listed in {MANIFEST} (explain did not write it): refusing to replace it; nothing was written")))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Writes `dir/index.html`, its PNGs and [`MANIFEST`]; returns every file written but the
/// manifest, `index.html` last. `dir` is created if missing; it must be new, empty or an
/// earlier report's ([`check_dir`]), and every target is checked before the first write.
pub fn write(dir: &Path, r: &Report) -> Result<Vec<PathBuf>> {
    let earlier = check_dir(dir)?;
    let (h, w) = r.size;
    let image = |i: usize| &r.pixels[i * h * w..(i + 1) * h * w];
    let predicted = predictions(r.probs);
    let correct = r.labels.iter().zip(&predicted).filter(|(&l, &p)| l as usize == p).count();
    // The pictures are drawn first and written once every target is checked.
    let mut pictures: Vec<(String, Canvas)> = Vec::new();
    let mut html = String::new();

    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>kiln explain: {t}</title>\n<style>\
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} img{{image-rendering:pixelated}}\
 .grid{{display:flex;flex-wrap:wrap;gap:12px}} figure{{margin:0}} figcaption{{font-size:13px}}\
 table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right;font-size:13px}}\
 .sprite{{width:{s}px;height:{s}px;background-image:url(misclassified.png)}} .cell{{width:150px}}\
</style></head><body>\n<h1>What the network sees</h1>\n<p>{t}. Test accuracy {acc:.2}% ({correct} of {n}).</p>\n",
        t = esc(&r.title),
        s = w * SHEET_SCALE,
        acc = 100.0 * correct as f64 / r.labels.len().max(1) as f64,
        n = r.labels.len()
    );

    // Saliency and Grad-CAM.
    let _ = write!(
        html,
        "<h2>Saliency{cam}</h2>\n<p>Left: the digit. Middle: saliency, |d logit / d pixel| of the predicted class (kiln's autodiff, on the GPU). {cam_text}</p>\n<div class=\"grid\">\n",
        cam = if r.cam_layer.is_some() { " and Grad-CAM" } else { "" },
        cam_text = match &r.cam_layer {
            Some(layer) => format!("Right: Grad-CAM on <code>{}</code>, the last convolutional feature map.", esc(layer)),
            None => "This model has no convolution, so no Grad-CAM.".into(),
        }
    );
    for (k, (i, e)) in r.explained.iter().enumerate() {
        let panels = if e.grad_cam.is_some() { 3 } else { 2 };
        let (pw, ph) = (w * PANEL_SCALE, h * PANEL_SCALE);
        let mut c = Canvas::new(panels * pw + (panels - 1) * 4, ph, 255);
        let digit = image(*i);
        c.blit(0, 0, (h, w), PANEL_SCALE, |p| [digit[p]; 3]);
        let sal = normalise_abs(&e.saliency[..h * w]);
        c.blit(pw + 4, 0, (h, w), PANEL_SCALE, |p| overlay(digit[p], sal[p]));
        if let Some(cam) = &e.grad_cam {
            c.blit(2 * (pw + 4), 0, (h, w), PANEL_SCALE, |p| overlay(digit[p], cam[p]));
        }
        let name = format!("saliency-{k}.png");
        pictures.push((name.clone(), c));
        let ok = if r.labels[*i] as usize == e.class { "" } else { " (wrong)" };
        let _ = writeln!(
            html,
            "<figure><img src=\"{name}\" alt=\"saliency of test image {i}\"><figcaption>test #{i}: label {}, predicted {} ({:.1}%){ok}</figcaption></figure>",
            r.labels[*i],
            e.class,
            100.0 * e.probs[e.class]
        );
    }
    html.push_str("</div>\n");

    // Deletion test.
    let _ = write!(
        html,
        "<h2>Is the saliency faithful? The deletion test</h2>\n<p>For {} test digits, the k most salient pixels are set to black, and so are k random pixels; \
the table gives the mean drop of the predicted class's probability. A faithful map drops it far more than random pixels do.</p>\n\
<table><tr><th>pixels deleted</th><th>salient drop</th><th>random drop</th></tr>\n",
        r.deletion_images
    );
    for d in r.deletion {
        let _ = writeln!(
            html,
            "<tr><td>{:.0}% ({} px)</td><td>{:.3}</td><td>{:.3}</td></tr>",
            100.0 * d.fraction,
            (d.fraction * (h * w) as f64).round(),
            d.salient_drop,
            d.random_drop
        );
    }
    html.push_str("</table>\n");

    // Filters and feature maps.
    if let Some((shape, weights)) = &r.filters {
        let (k, c, fr, fs) = (shape[0], shape[1], shape[2], shape[3]);
        let scale = 12;
        let max = weights.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
        let cols = 8.min(k);
        let rows = k.div_ceil(cols);
        let cell = fs * scale + 6;
        let mut canvas = Canvas::new(cols * cell, rows * (fr * scale + 6), 255);
        for f in 0..k {
            // the first input channel of each filter (MNIST has one)
            let wk = &weights[f * c * fr * fs..f * c * fr * fs + fr * fs];
            canvas.blit((f % cols) * cell + 3, (f / cols) * (fr * scale + 6) + 3, (fr, fs), scale, |p| diverging(wk[p] / max));
        }
        pictures.push(("filters.png".into(), canvas));
        let _ = writeln!(
            html,
            "<h2>First-layer filters</h2>\n<p>The first convolution's {k} kernels ({fr}x{fs}); red positive, blue negative weights, one scale for all.</p>\n<img src=\"filters.png\" alt=\"first-layer filters\">"
        );
    }
    let with_features: Vec<_> = r.explained.iter().filter(|(_, e)| !e.features.is_empty()).take(2).collect();
    if !with_features.is_empty() {
        html.push_str("<h2>Feature maps</h2>\n<p>The outputs of the first two convolutions (after their activation) for two digits; each map scaled to its own layer's range, black low, white high.</p>\n");
        for (i, e) in with_features {
            let _ = writeln!(html, "<h3>test #{i} (label {})</h3>\n<div class=\"grid\">", r.labels[*i]);
            for f in &e.features {
                let [ch, fh, fw] = f.shape;
                let scale = (56 / fh.max(1)).max(1);
                let (lo, hi) = f.values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                let span = (hi - lo).max(f32::MIN_POSITIVE);
                let cols = 8.min(ch);
                let (cw, chh) = (fw * scale + 4, fh * scale + 4);
                let mut canvas = Canvas::new(cols * cw, ch.div_ceil(cols) * chh, 255);
                for m in 0..ch {
                    let plane = &f.values[m * fh * fw..(m + 1) * fh * fw];
                    canvas.blit((m % cols) * cw + 2, (m / cols) * chh + 2, (fh, fw), scale, |p| [((plane[p] - lo) / span * 255.0).round() as u8; 3]);
                }
                let name = format!("features-{i}-{}.png", f.layer);
                pictures.push((name.clone(), canvas));
                let _ = writeln!(html, "<figure><img src=\"{name}\" alt=\"{}\"><figcaption><code>{}</code>: {ch} maps {fh}x{fw}</figcaption></figure>", esc(&f.layer), esc(&f.layer));
            }
            html.push_str("</div>\n");
        }
    }

    // Misclassified gallery: one contact sheet; the page shows each digit as a sprite of it.
    let wrong: Vec<usize> = (0..r.labels.len()).filter(|&i| r.labels[i] as usize != predicted[i]).collect();
    let shown = &wrong[..wrong.len().min(GALLERY_MAX)];
    let _ = writeln!(
        html,
        "<h2>Misclassified</h2>\n<p>{} of {} test images are misclassified{}. Each: true label, prediction, top-3 probabilities.</p>",
        wrong.len(),
        r.labels.len(),
        if wrong.len() > shown.len() { format!("; the first {} are shown", shown.len()) } else { String::new() }
    );
    if !shown.is_empty() {
        let (sw, sh) = (w * SHEET_SCALE, h * SHEET_SCALE);
        let cols = 10.min(shown.len());
        let mut sheet = Canvas::new(cols * sw, shown.len().div_ceil(cols) * sh, 0);
        html.push_str("<div class=\"grid\">\n");
        for (k, &i) in shown.iter().enumerate() {
            let digit = image(i);
            let (x, y) = ((k % cols) * sw, (k / cols) * sh);
            sheet.blit(x, y, (h, w), SHEET_SCALE, |p| [digit[p]; 3]);
            let mut top: Vec<usize> = (0..CLASSES).collect();
            top.sort_by(|&a, &b| r.probs[i][b].total_cmp(&r.probs[i][a]));
            let top3 = top[..3].iter().map(|&c| format!("{c}: {:.2}", r.probs[i][c])).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                html,
                "<figure class=\"cell\"><div class=\"sprite\" style=\"background-position:-{x}px -{y}px\"></div><figcaption>#{i} true {} &rarr; {}<br>{top3}</figcaption></figure>",
                r.labels[i], predicted[i]
            );
        }
        html.push_str("</div>\n");
        pictures.push(("misclassified.png".into(), sheet));
    }

    // Confusion matrix as a heat map: cell colour by the share of its row.
    let mut m = Metrics::new(CLASSES);
    r.labels.iter().zip(&predicted).for_each(|(&l, &p)| m.add(l as usize, p));
    html.push_str("<h2>Confusion matrix</h2>\n<p>Rows: true label; columns: prediction; colour: share of the row.</p>\n<table><tr><th></th>");
    for c in 0..CLASSES {
        let _ = write!(html, "<th>{c}</th>");
    }
    html.push_str("</tr>\n");
    for (l, row) in m.confusion.iter().enumerate() {
        let total = row.iter().sum::<u32>().max(1) as f32;
        let _ = write!(html, "<tr><th>{l}</th>");
        for &count in row {
            let share = count as f32 / total;
            // off-diagonal errors are rare: a square root makes them visible
            let [cr, cg, cb] = hot(1.0 - share.sqrt() * 0.85);
            let text = if share > 0.5 { "#fff" } else { "#000" };
            let _ = write!(html, "<td style=\"background:rgb({cr},{cg},{cb});color:{text}\">{count}</td>");
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n<p>Made by kiln's <code>explain</code> example.</p>\n</body></html>\n");
    write_page(dir, earlier, pictures, &html)
}

/// Writes a page's PNGs, `index.html` and [`MANIFEST`] into `dir` (created if missing),
/// every target checked before the first write (`earlier`: from [`check_dir`]); returns the
/// files written but the manifest, `index.html` last.
pub(super) fn write_page(dir: &Path, earlier: Vec<String>, pictures: Vec<(String, Canvas)>, html: &str) -> Result<Vec<PathBuf>> {
    let index = "index.html";
    check_targets(dir, pictures.iter().map(|(n, _)| n.as_str()).chain([index]), &earlier)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create the report's directory: {e}")))?;
    // The list goes first: a report cut short still owns the files it wrote.
    let mut listed = earlier;
    listed.extend(pictures.iter().map(|(n, _)| n.clone()).chain([index.to_string()]));
    listed.sort();
    listed.dedup();
    write_atomic(&dir.join(MANIFEST), (listed.join("\n") + "\n").as_bytes())?;
    let mut written = Vec::new();
    for (name, canvas) in &pictures {
        let path = dir.join(name);
        canvas.save(&path)?;
        written.push(path);
    }
    let index = dir.join(index);
    write_atomic(&index, html.as_bytes())?;
    written.push(index);
    Ok(written)
}
