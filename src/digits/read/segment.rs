//! Segmentation by recognition, the geometric half: a field is binarised, cut into
//! *atoms* (connected pieces of ink, wide ones cut again at candidate cuts, each a [`seam`]
//! that may lean between slanted digits), and every run of up to [`Grain::max_atoms`]
//! neighbouring atoms is a candidate digit. The classifier scores
//! each candidate ([`super::Reader`]); [`best_path`] then picks the partition of the atoms
//! into digits with the best total score (dynamic programming over the cut points).
//!
//! Everything here is CPU work on one image and needs no model, so that it can be tested
//! against fields whose digit boxes are known.

use image::{GrayImage, Luma};

use crate::digits::morphology;
use crate::digits::predict::{histogram, otsu, subtract_background};

/// The longest side a field is segmented at: a larger image is scaled down first (digits
/// stay well above MNIST's 20 px unless the field is a very long line), which bounds the
/// time and memory of the steps below. Boxes are given back in the image's own pixels.
pub const WORK_MAX: u32 = 2048;
/// How finely wide pieces of ink are cut into atoms, and how many atoms a candidate joins.
/// Where digits overlap, the projection has no minimum between them and only a cut near
/// their true boundary lets a candidate hold one digit: on 2,000 generated touching fields
/// (mnist10k's training digits) the true reading was among the candidates of 54.8% at a
/// step of 0.4 line heights (5 atoms a candidate), 73.4% at 0.2 (8), 81.0% at 0.15 (10),
/// 86.9% at 0.1 (14) ([`super::train_data::offered`]), 71.8% with [`Grain::READING`]'s
/// straight cuts, 71.0% with its leaning ones (which the reader reads better: [`seam`]);
/// candidates per field grow as steps shrink, and the reading time with them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grain {
    /// The widest stretch of a piece left uncut, in line heights...
    pub step: f64,
    /// ...in pieces at least this many line heights wide (likely two digits or more);
    /// narrower ones are cut every [`Grain::COARSE`] at most.
    pub wide: f64,
    /// The most atoms one candidate digit joins.
    pub max_atoms: usize,
    /// How far a cut may lean from its column, in line heights ([`seam`]).
    pub seam: f64,
}

impl Grain {
    /// What the reader cuts fields at: with the reading model, 1,000 validation fields of
    /// touching digits (drawn as the `touching` set draws, from mnist10k's training digits)
    /// read 55.5% against 48.6% at [`Grain::TRAINING`], zip 94.2 / 94.5%, amount 84.0 /
    /// 83.7%, photo 82.2 / 82.4%. Cutting pieces under one line height finely too read
    /// touching 56.4%, amount 84.9%, zip and photo alike, at half the speed (zip 21 against
    /// 40 fields/s on lavapipe): single digits were cut into many atoms for nothing.
    pub const READING: Grain = Grain { step: 0.2, max_atoms: 8, wide: 1.0, seam: Grain::SEAM };
    /// What the reader's training cuts are made at ([`super::train_data`]): the same model
    /// trained on cuts every 0.2 line heights read those validation fields worse (touching
    /// 51.8%, zip 93.4%): the finer slices of one digit, labelled "not a digit", look like
    /// 1s, and the 1s that touch a neighbour were read into it more often.
    pub const TRAINING: Grain = Grain { step: Grain::COARSE, max_atoms: 5, wide: 0.0, seam: 0.0 };
    /// The step in pieces narrower than [`Grain::wide`].
    pub const COARSE: f64 = 0.4;
    /// How far the reader's cuts may lean ([`Grain::seam`]).
    pub const SEAM: f64 = 0.15;
}

/// A box of pixels, inclusive: `x0..=x1`, `y0..=y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Bbox {
    /// Left column.
    pub x0: u32,
    /// Top row.
    pub y0: u32,
    /// Right column (inclusive).
    pub x1: u32,
    /// Bottom row (inclusive).
    pub y1: u32,
}

impl Bbox {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.x1 - self.x0 + 1
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.y1 - self.y0 + 1
    }
    fn union(&self, o: &Bbox) -> Bbox {
        Bbox { x0: self.x0.min(o.x0), y0: self.y0.min(o.y0), x1: self.x1.max(o.x1), y1: self.y1.max(o.y1) }
    }
    fn of(pixels: &[u32], w: u32) -> Bbox {
        let mut b = Bbox { x0: u32::MAX, y0: u32::MAX, x1: 0, y1: 0 };
        for &i in pixels {
            let (x, y) = (i % w, i / w);
            b = Bbox { x0: b.x0.min(x), y0: b.y0.min(y), x1: b.x1.max(x), y1: b.y1.max(y) };
        }
        b
    }
    /// The box scaled by `1 / scale` back to the image's own pixels.
    pub fn unscaled(&self, scale: f64) -> Bbox {
        let f = |v: u32| (v as f64 / scale).floor() as u32;
        let g = |v: u32| ((v + 1) as f64 / scale).ceil() as u32 - 1;
        Bbox { x0: f(self.x0), y0: f(self.y0), x1: g(self.x1), y1: g(self.y1) }
    }
}

/// A binarised field: the ink as [`crate::digits::predict::to_mnist`] would see it.
pub struct Field {
    /// White ink on black, the lighting evened (background plane subtracted).
    pub flat: GrayImage,
    /// The pixels above Otsu's threshold.
    pub ink: Vec<bool>,
    /// Work pixels per image pixel (below 1 when the image was scaled down).
    pub scale: f64,
}

/// A piece of ink: its pixels (indices into the field, row-major) and box.
#[derive(Clone, Debug)]
pub struct Atom {
    /// Pixel indices, `y * width + x`.
    pub pixels: Vec<u32>,
    /// Their box.
    pub bbox: Bbox,
    /// The piece of ink it was cut from ([`atoms`] numbers them); atoms of one piece meet at a cut.
    pub piece: usize,
}

/// A candidate digit: atoms `first..=last` (in left-to-right order) taken together.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The first atom.
    pub first: usize,
    /// The last atom (inclusive).
    pub last: usize,
    /// The box of their ink.
    pub bbox: Bbox,
}

/// Binarises a field given white ink on black (as [`crate::digits::predict::load_gray`]
/// gives it): scaled to at most [`WORK_MAX`], the lighting evened, half Otsu's threshold
/// (MNIST's faint joints break at Otsu's own, and a broken digit is harder to read than
/// two touching ones are to cut).
/// `None` when there is no ink (almost no contrast, as `to_mnist` decides).
pub fn binarise(gray: &GrayImage) -> Option<Field> {
    let (w, h) = gray.dimensions();
    let scale = if w.max(h) > WORK_MAX { WORK_MAX as f64 / w.max(h) as f64 } else { 1.0 };
    let scaled;
    let gray = if scale < 1.0 {
        let size = |v: u32| ((v as f64 * scale).round() as u32).max(1);
        scaled = morphology::resize(gray, size(w), size(h));
        &scaled
    } else {
        gray
    };
    let flat = subtract_background(gray);
    let hist = histogram(flat.as_raw());
    if (0..256).rev().find(|&v| hist[v] > 0).unwrap_or(0) < 32 {
        return None;
    }
    let t = otsu(&hist) / 2;
    let ink = flat.as_raw().iter().map(|&v| v > t).collect();
    Some(Field { flat, ink, scale })
}

/// A field segmented: its binarised ink, its atoms (left to right), its candidate digits
/// and its line height.
pub struct Segmented {
    /// The binarised field.
    pub field: Field,
    /// The atoms, left to right ([`atoms`]).
    pub atoms: Vec<Atom>,
    /// The candidate digits ([`candidates`]).
    pub candidates: Vec<Candidate>,
    /// The line height ([`line_height`]).
    pub height: u32,
}

/// The whole geometric half on one field (what [`super::Reader`] does before it classifies):
/// [`binarise`], [`components`] (keeping the `max_atoms` largest), [`merge_overlapping`],
/// [`atoms`] cut at `grain` (at most `max_atoms` of them), [`candidates`]. `None` when the field holds no ink.
pub fn segment(img: &GrayImage, max_atoms: usize, grain: Grain) -> Option<Segmented> {
    let field = binarise(img)?;
    let mut pieces = components(&field);
    if pieces.is_empty() {
        return None;
    }
    if pieces.len() > max_atoms {
        pieces.sort_by_key(|a| std::cmp::Reverse(a.pixels.len()));
        pieces.truncate(max_atoms);
    }
    let pieces = merge_overlapping(pieces);
    let height = line_height(&pieces);
    let mut atoms = atoms(pieces, field.flat.width(), height, grain);
    atoms.truncate(max_atoms);
    let candidates = candidates(&atoms, height, grain.max_atoms);
    Some(Segmented { field, atoms, candidates, height })
}

/// The 8-connected pieces of ink, specks dropped (under 1/40 of the largest piece's area, or
/// under 3 pixels), in no particular order.
pub fn components(field: &Field) -> Vec<Atom> {
    let (w, h) = (field.flat.width() as usize, field.flat.height() as usize);
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !field.ink[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            pixels.push(i as u32);
            let (x, y) = (i % w, i / w);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    let j = ny * w + nx;
                    if field.ink[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        let bbox = Bbox::of(&pixels, w as u32);
        out.push(Atom { pixels, bbox, piece: 0 });
    }
    let largest = out.iter().map(|a| a.pixels.len()).max().unwrap_or(0);
    out.retain(|a| a.pixels.len() >= 3 && a.pixels.len() * 40 >= largest);
    out
}

/// Joins pieces that overlap in x by at least half the narrower one's width (a digit whose
/// thin joint fell under the threshold: the top bar of a 5, the tail of a 3): one piece.
pub fn merge_overlapping(mut pieces: Vec<Atom>) -> Vec<Atom> {
    pieces.sort_by_key(|a| a.bbox.x0);
    let mut out: Vec<Atom> = Vec::with_capacity(pieces.len());
    for p in pieces {
        let joined = out.iter_mut().rev().take(3).find(|q| {
            let overlap = q.bbox.x1.min(p.bbox.x1) as i64 - q.bbox.x0.max(p.bbox.x0) as i64 + 1;
            2 * overlap >= q.bbox.width().min(p.bbox.width()) as i64
        });
        match joined {
            Some(q) => {
                q.bbox = q.bbox.union(&p.bbox);
                q.pixels.extend(p.pixels);
            }
            None => out.push(p),
        }
    }
    out
}

/// The height of a digit in the field: the tallest piece of ink (broken digits have shorter
/// pieces; touching ones are about as tall as one, plus their baseline's jitter). The median
/// of the large pieces' heights was measured worse: zip 60% against 91% (100 fields).
pub fn line_height(pieces: &[Atom]) -> u32 {
    pieces.iter().map(|a| a.bbox.height()).max().unwrap_or(1)
}

/// Candidate cut columns inside a piece of ink at least 0.7 line heights wide: the minima
/// of its vertical projection (ink pixels per column), lowest first, at least 0.2 heights
/// from its edges and from each other, at most one per 0.3 heights of width; then, where
/// two cuts are more than `step` heights apart (overlapping digits leave no minimum), cuts
/// at even steps between them. A cut at column `c` puts the columns `< c` on the left.
pub fn cuts(atom: &Atom, width: u32, height: u32, step: f64) -> Vec<u32> {
    let b = atom.bbox;
    let hf = height as f64;
    if (b.width() as f64) < 0.7 * hf {
        return Vec::new();
    }
    let mut proj = vec![0u32; b.width() as usize];
    for &i in &atom.pixels {
        proj[(i % width - b.x0) as usize] += 1;
    }
    let margin = ((0.2 * hf).round() as usize).max(2);
    let n = proj.len();
    if n < 2 * margin + 1 {
        return Vec::new();
    }
    // local minima (the middle of a flat bottom), inside the margins
    let mut minima = Vec::new();
    let mut x = margin;
    while x < n - margin {
        let mut end = x;
        while end + 1 < n - margin && proj[end + 1] == proj[x] {
            end += 1;
        }
        let left = proj[x - 1];
        let right = proj[end + 1];
        if left >= proj[x] && right >= proj[x] && (left > proj[x] || right > proj[x]) {
            minima.push(((x + end).div_ceil(2), proj[x]));
        }
        x = end + 1;
    }
    minima.sort_by_key(|&(x, v)| (v, x));
    let most = ((b.width() as f64 / (0.3 * hf)).ceil() as usize).max(1);
    let mut kept: Vec<usize> = Vec::new();
    for (x, _) in minima {
        if kept.len() < most && kept.iter().all(|&k| k.abs_diff(x) >= margin) {
            kept.push(x);
        }
    }
    // where the projection has no minimum (digits overlapping), cuts at even steps: no
    // stretch between cuts wider than `step` line heights
    kept.sort_unstable();
    let step = (step * hf).max(2.0);
    let mut edges = vec![0];
    edges.extend(&kept);
    edges.push(n);
    let mut out = Vec::new();
    for pair in edges.windows(2) {
        let (a, z) = (pair[0], pair[1]);
        if a > 0 {
            out.push(b.x0 + a as u32);
        }
        let parts = ((z - a) as f64 / step).ceil() as usize;
        for k in 1..parts {
            out.push(b.x0 + (a + k * (z - a) / parts) as u32);
        }
    }
    out
}

/// Cuts every piece at its [`cuts`] and orders the resulting atoms left to right (by the
/// centre of their box). Each cut follows the [`seam`] from its column, leaning at most
/// `grain.seam` line heights.
pub fn atoms(pieces: Vec<Atom>, width: u32, height: u32, grain: Grain) -> Vec<Atom> {
    let mut out = Vec::new();
    for (id, mut piece) in pieces.into_iter().enumerate() {
        piece.piece = id;
        let wide = piece.bbox.width() as f64 >= grain.wide * height as f64;
        let cuts = cuts(&piece, width, height, if wide { grain.step } else { Grain::COARSE.max(grain.step) });
        if cuts.is_empty() {
            out.push(piece);
            continue;
        }
        let b = piece.bbox;
        let reach = (grain.seam * height as f64).round() as u32;
        // seams in order, none left of the one before it in any row
        let mut seams: Vec<Vec<u32>> = Vec::with_capacity(cuts.len());
        for &c in &cuts {
            let mut s = seam(&piece, width, c, reach);
            if let Some(before) = seams.last() {
                s.iter_mut().zip(before).for_each(|(x, &p)| *x = (*x).max(p));
            }
            seams.push(s);
        }
        let mut slabs: Vec<Vec<u32>> = vec![Vec::new(); cuts.len() + 1];
        for &i in &piece.pixels {
            let (x, row) = (i % width, (i / width - b.y0) as usize);
            slabs[seams.iter().take_while(|s| x >= s[row]).count()].push(i);
        }
        out.extend(slabs.into_iter().filter(|s| !s.is_empty()).map(|pixels| Atom { bbox: Bbox::of(&pixels, width), pixels, piece: id }));
    }
    out.sort_by_key(|a| (a.bbox.x0 + a.bbox.x1, a.bbox.y0));
    out
}

/// What a [`seam`] pays for each column it leans from its own in a row, in 1/64 of an ink
/// pixel crossed: it leans only where that saves crossing ink. Chosen on validation fields
/// (ARCHITECTURE.md, "How finely to cut"): 8 and 24 read them about as well, 1 (leaning almost
/// freely) offered far fewer true readings.
pub const LEAN: u32 = 16;

/// The cut through a piece near column `c`: for each row of the piece's box (top first), the
/// column its pixels start the right side at, at most `reach` columns from `c`, moving at most
/// one column a row, through the fewest ink pixels of the piece (ties: nearest `c`). Where
/// digits overlap, a slanted stroke leaves no empty column between them, but often an empty
/// diagonal; `reach` 0 is the straight cut at `c`.
pub fn seam(piece: &Atom, width: u32, c: u32, reach: u32) -> Vec<u32> {
    let b = piece.bbox;
    // the band's columns: lo..=hi, inside the box (a cut at x0 or x1 + 1 leaves a side empty)
    let lo = c.saturating_sub(reach).max(b.x0 + 1).min(c);
    let hi = (c + reach).min(b.x1).max(c);
    let cols = (hi - lo + 1) as usize;
    let rows = b.height() as usize;
    if cols == 1 {
        return vec![c; rows];
    }
    // a cut at column x puts the row's pixels left of x on the left: it crosses the ink pixel
    // at x, if any (a straight cut crosses its column's projection)
    let mut ink = vec![false; rows * cols];
    for &i in &piece.pixels {
        let (x, y) = (i % width, i / width);
        if (lo..=hi).contains(&x) {
            ink[(y - b.y0) as usize * cols + (x - lo) as usize] = true;
        }
    }
    // cost in units of 1/64 ink pixel
    let off = |k: usize| LEAN * (lo as usize + k).abs_diff(c as usize) as u32;
    let cost = |y: usize, k: usize| 64 * u32::from(ink[y * cols + k]) + off(k);
    let mut total: Vec<u32> = (0..cols).map(|k| cost(0, k)).collect();
    // from[y * cols + k]: the column (in the band) the best path to row y, column k comes from
    let mut from = vec![0usize; rows * cols];
    for y in 1..rows {
        total = (0..cols)
            .map(|k| {
                // ties: from straight above first, then the left, then the right
                let j = [k, k.wrapping_sub(1), k + 1].into_iter().filter(|&j| j < cols).min_by_key(|&j| total[j]).expect("k itself");
                from[y * cols + k] = j;
                total[j] + cost(y, k)
            })
            .collect();
    }
    let mut k = (0..cols).min_by_key(|&k| (total[k], off(k))).expect("a column");
    let mut out = vec![0u32; rows];
    for y in (0..rows).rev() {
        out[y] = lo + k as u32;
        if y > 0 {
            k = from[y * cols + k];
        }
    }
    out
}

/// The candidate digits: each run of 1 to `max_atoms` neighbouring atoms at most 1.6 line
/// heights wide, with no empty gap wider than 0.4 heights between its atoms.
pub fn candidates(atoms: &[Atom], height: u32, max_atoms: usize) -> Vec<Candidate> {
    let hf = height as f64;
    let mut out = Vec::new();
    for first in 0..atoms.len() {
        let mut bbox = atoms[first].bbox;
        out.push(Candidate { first, last: first, bbox });
        for (last, atom) in atoms.iter().enumerate().take(first + max_atoms).skip(first + 1) {
            let gap = atom.bbox.x0 as i64 - bbox.x1 as i64 - 1;
            bbox = bbox.union(&atom.bbox);
            if gap as f64 > 0.4 * hf || bbox.width() as f64 > 1.6 * hf {
                break;
            }
            out.push(Candidate { first, last, bbox });
        }
    }
    out
}

/// The candidate's ink as an image of its box plus a 2 px border: the field's evened values
/// on the atoms' pixels and one pixel around them (the anti-aliased edge), black elsewhere,
/// so that a neighbour's ink inside the box is left out.
pub fn crop(field: &Field, atoms: &[Atom], c: &Candidate) -> GrayImage {
    let w = field.flat.width();
    let (x0, y0) = (c.bbox.x0 as i64 - 2, c.bbox.y0 as i64 - 2);
    let (cw, ch) = (c.bbox.width() + 4, c.bbox.height() + 4);
    let mut mask = vec![false; (cw * ch) as usize];
    for atom in &atoms[c.first..=c.last] {
        for &i in &atom.pixels {
            let (x, y) = ((i % w) as i64 - x0, (i / w) as i64 - y0);
            for dy in -1..=1 {
                for dx in -1..=1 {
                    mask[((y + dy) * cw as i64 + x + dx) as usize] = true;
                }
            }
        }
    }
    GrayImage::from_fn(cw, ch, |x, y| {
        let (fx, fy) = (x as i64 + x0, y as i64 + y0);
        let inside = fx >= 0 && fy >= 0 && fx < w as i64 && fy < field.flat.height() as i64;
        Luma([if mask[(y * cw + x) as usize] && inside { field.flat.get_pixel(fx as u32, fy as u32)[0] } else { 0 }])
    })
}

/// The score a candidate's shape adds to its log-probability: 0 for a digit-like box, less
/// for one much shorter than the line (a fragment: below half its height, 20 per line
/// height) or wider than the line is high (a pair: 15 per line height over 1).
pub fn shape_prior(bbox: &Bbox, height: u32) -> f64 {
    let r = bbox.height() as f64 / height as f64;
    let a = bbox.width() as f64 / height as f64;
    -20.0 * (0.5 - r).max(0.0) - 15.0 * (a - 1.0).max(0.0)
}


/// Which atoms [`best_path`] may leave out as specks of dirt: those under 1/7 of the
/// largest atom's ink.
pub fn specks(atoms: &[Atom]) -> Vec<bool> {
    let largest = atoms.iter().map(|a| a.pixels.len()).max().unwrap_or(0);
    atoms.iter().map(|a| a.pixels.len() * 7 < largest).collect()
}

/// What a cut through a piece of ink costs (half on each side): splitting a digit in two
/// must make the two parts together e^0.25 more probable than the whole. With a classifier
/// trained on non-digits (`train_mnist --not-digits`) a pair scores low by itself: 0.25 read
/// touching 65.6% against 63.7% at 0.5 and 66.7% at 0, zip 96.8% against 97.0% and 96.5%.
pub const CUT: f64 = 0.25;
/// What each digit read costs: fewer, surer digits are preferred to fragments read as 1s.
pub const DIGIT: f64 = 0.2;

/// What leaving an atom out costs (it is taken for a speck of dirt): `ln(0.02)`.
pub const SKIP: f64 = -3.9;

/// The best partition of atoms `0..n` into candidates (their indices, left to right) by
/// dynamic programming over the cut points between atoms: the total of `score[k]` over the
/// chosen candidates, an atom left out for [`SKIP`] when `skippable(atom)` says it may be
/// (a small one). Candidates with a non-finite score are never chosen. `None` when no
/// partition exists (never, with every atom skippable).
pub fn best_path(n: usize, candidates: &[Candidate], score: &[f64], skippable: impl Fn(usize) -> bool) -> Option<Vec<usize>> {
    // best[j]: the best total over atoms 0..j; from[j]: the candidate ending there (None: atom j-1 skipped)
    let mut best = vec![f64::NEG_INFINITY; n + 1];
    let mut from: Vec<Option<Option<usize>>> = vec![None; n + 1];
    best[0] = 0.0;
    let mut ending: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    for (k, c) in candidates.iter().enumerate() {
        ending[c.last + 1].push(k);
    }
    for j in 1..=n {
        if skippable(j - 1) && best[j - 1] + SKIP > best[j] {
            best[j] = best[j - 1] + SKIP;
            from[j] = Some(None);
        }
        for &k in &ending[j] {
            let total = best[candidates[k].first] + score[k];
            if score[k].is_finite() && total > best[j] {
                best[j] = total;
                from[j] = Some(Some(k));
            }
        }
    }
    if !best[n].is_finite() {
        return None;
    }
    let mut path = Vec::new();
    let mut j = n;
    while j > 0 {
        match from[j].expect("reached") {
            Some(k) => {
                path.push(k);
                j = candidates[k].first;
            }
            None => j -= 1,
        }
    }
    path.reverse();
    Some(path)
}
