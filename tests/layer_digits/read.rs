//! Reading digit strings (issue 30): the segmentation against fields whose boxes are known
//! (CPU, no model), a reading of a field made of MNIST digits, the string scores on small
//! hand-computed cases, the `read` example's bad inputs, and the frozen string sets.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use image::{GrayImage, Luma};
use kiln::data::{Dataset, DatasetKind};
use kiln::read::segment::{self, Bbox, Candidate, Grain};
use kiln::read::{score, Options, Reader};
use kiln::string_sets;
use kiln::Classifier;

use crate::common::{self, example, scratch};

const READING: Grain = Grain::READING;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");

fn mnist10k() -> &'static Dataset {
    static DATA_SET: OnceLock<Dataset> = OnceLock::new();
    DATA_SET.get_or_init(|| Dataset::load(DatasetKind::Mnist10k, Some(Path::new(DATA))).expect("MNIST test files in ../shared/data/mnist"))
}

/// A field of white rectangles on black, one per box.
fn field(w: u32, h: u32, boxes: &[Bbox]) -> GrayImage {
    GrayImage::from_fn(w, h, |x, y| Luma([if boxes.iter().any(|b| (b.x0..=b.x1).contains(&x) && (b.y0..=b.y1).contains(&y)) { 255 } else { 0 }]))
}

fn bbox(x0: u32, y0: u32, x1: u32, y1: u32) -> Bbox {
    Bbox { x0, y0, x1, y1 }
}

/// The atoms and candidates of a field, and the candidates' boxes.
fn segmented(img: &GrayImage) -> (Vec<segment::Atom>, Vec<Candidate>, u32) {
    let f = segment::binarise(img).expect("ink");
    let pieces = segment::merge_overlapping(segment::components(&f));
    let h = segment::line_height(&pieces);
    let atoms = segment::atoms(pieces, f.flat.width(), h, READING);
    let candidates = segment::candidates(&atoms, h, READING.max_atoms);
    (atoms, candidates, h)
}

/// The best path when only the true boxes score well: the path must be the true boxes.
fn oracle_path(atoms: &[segment::Atom], candidates: &[Candidate], truth: &[Bbox]) -> Vec<Bbox> {
    let score: Vec<f64> = candidates.iter().map(|c| if truth.contains(&c.bbox) { 0.0 } else { -5.0 }).collect();
    let path = segment::best_path(atoms.len(), candidates, &score, |_| false).expect("a path");
    path.iter().map(|&k| candidates[k].bbox).collect()
}

#[test]
fn separate_digits_are_one_atom_each_and_their_boxes_are_found() {
    // three bars and a block, 20 px high, apart by 6-12 px
    let truth = [bbox(10, 10, 13, 29), bbox(20, 12, 31, 31), bbox(44, 10, 47, 29), bbox(56, 9, 68, 28)];
    let (atoms, candidates, h) = segmented(&field(80, 40, &truth));
    assert_eq!(h, 20);
    assert_eq!(atoms.iter().map(|a| a.bbox).collect::<Vec<_>>(), truth, "one atom per digit, left to right");
    assert_eq!(oracle_path(&atoms, &candidates, &truth), truth);
    // no candidate joins digits more than 0.4 heights apart (8 px): 20..31 and 44..47 are 12 apart
    assert!(candidates.iter().all(|c| !(c.first <= 1 && c.last >= 2)), "{candidates:?}");
}

#[test]
fn a_broken_digit_is_joined_and_touching_digits_are_cut() {
    // a bar broken by a 2 px gap (one digit, two pieces overlapping in x)
    let broken = [bbox(10, 10, 14, 18), bbox(10, 21, 14, 29)];
    let (atoms, _, _) = segmented(&field(40, 40, &broken));
    assert_eq!(atoms.len(), 1, "pieces overlapping in x are one digit");
    assert_eq!(atoms[0].bbox, bbox(10, 10, 14, 29));

    // two 12x20 rings joined by a 2 px bridge at mid height: one piece of ink, 28 px wide
    let mut img = GrayImage::new(60, 40);
    for (x0, x1) in [(10u32, 21u32), (26, 37)] {
        for y in 10..30u32 {
            for x in x0..=x1 {
                let edge = x < x0 + 3 || x > x1 - 3 || !(13..=26).contains(&y);
                img.put_pixel(x, y, Luma([if edge { 255 } else { 0 }]));
            }
        }
    }
    for y in 19..21 {
        for x in 22..26 {
            img.put_pixel(x, y, Luma([255]));
        }
    }
    let f = segment::binarise(&img).unwrap();
    let pieces = segment::components(&f);
    assert_eq!(pieces.len(), 1);
    let cuts = segment::cuts(&pieces[0], 60, 20, READING.step);
    assert!(cuts.iter().any(|&c| (22..=26).contains(&c)), "a cut at the bridge, where the projection is lowest: {cuts:?}");
    let (atoms, candidates, _) = segmented(&img);
    let left = candidates.iter().find(|c| c.first == 0 && atoms[c.last].bbox.x1 <= 25 && atoms.get(c.last + 1).is_some_and(|a| a.bbox.x0 >= 22));
    assert!(left.is_some_and(|c| c.bbox.x0 == 10 && (21..=25).contains(&c.bbox.x1)), "the left ring is a candidate: {candidates:?}");
}

#[test]
fn a_cut_leans_between_slanted_digits_that_no_straight_cut_separates() {
    // two strokes 3 px wide leaning one column every 5 rows, 5 px apart, 30 rows tall, joined
    // by a 3x2 bridge at mid height: one piece of ink, no empty column in it
    let stroke = |x0: u32, x: u32, y: u32| (4..34).contains(&y) && (0..3).contains(&(x as i64 - (x0 + (33 - y) / 5) as i64));
    let img = GrayImage::from_fn(60, 40, |x, y| {
        let ink = stroke(10, x, y) || stroke(15, x, y) || ((19..21).contains(&y) && (14..17).contains(&x));
        Luma([if ink { 255 } else { 0 }])
    });
    let f = segment::binarise(&img).unwrap();
    let pieces = segment::components(&f);
    assert_eq!(pieces.len(), 1);
    let piece = &pieces[0];
    let (w, top) = (60, piece.bbox.y0);
    let left = |i: u32| stroke(10, i % w, i / w);
    let right = |i: u32| stroke(15, i % w, i / w);
    // the columns on the right of a cut, per row: how many pixels of each stroke are on the wrong side
    let wrong = |s: &[u32]| piece.pixels.iter().filter(|&&i| if left(i) { i % w >= s[(i / w - top) as usize] } else { right(i) && i % w < s[(i / w - top) as usize] }).count();
    let rows = piece.bbox.height() as usize;
    for c in piece.bbox.x0 + 1..=piece.bbox.x1 {
        assert!(wrong(&vec![c; rows]) > 0, "a straight cut at {c} splits a stroke");
    }
    // from the middle column, leaning up to 6 columns: every stroke pixel on its own side
    let middle = (piece.bbox.x0 + piece.bbox.x1).div_ceil(2);
    let seam = segment::seam(piece, w, middle, 6);
    assert_eq!(seam.len(), rows);
    assert_eq!(wrong(&seam), 0, "{seam:?}");
    assert!(seam.windows(2).all(|p| p[0].abs_diff(p[1]) <= 1) && seam.iter().all(|&x| x.abs_diff(middle) <= 6));
    assert_eq!(segment::seam(piece, w, middle, 0), vec![middle; rows], "reach 0: the straight cut");
}

#[test]
fn the_best_path_leaves_specks_out_and_no_ink_is_no_field() {
    // atoms 0, 1, 2; candidates {0}, {0,1}, {1}, {2}; atom 1 may be skipped
    let c = |first, last| Candidate { first, last, bbox: bbox(0, 0, 0, 0) };
    let candidates = [c(0, 0), c(0, 1), c(1, 1), c(2, 2)];
    // {0,1} at ln 0.5 beats {0} + {1} at ln 0.9 + ln 0.1; skipping 1 costs SKIP (-3.9)
    let score = [0.9f64.ln(), 0.5f64.ln(), 0.1f64.ln(), 0.0];
    assert_eq!(segment::best_path(3, &candidates, &score, |_| false), Some(vec![1, 3]));
    let score = [0.9f64.ln(), 0.001f64.ln(), 0.001f64.ln(), 0.0];
    assert_eq!(segment::best_path(3, &candidates, &score, |a| a == 1), Some(vec![0, 3]), "the speck is skipped");
    assert_eq!(segment::best_path(3, &candidates, &score, |_| false), Some(vec![1, 3]), "atoms 0-1 at ln 0.001 beat atom 0 then atom 1 at ln 0.9 + ln 0.001");
    let unscored = [f64::NEG_INFINITY, f64::NEG_INFINITY, 0.0, 0.0];
    assert_eq!(segment::best_path(3, &candidates, &unscored, |_| false), None);
    assert!(segment::binarise(&GrayImage::from_pixel(30, 20, Luma([90]))).is_none());
}

#[test]
fn string_scores_by_hand() {
    assert_eq!(score::align(b"90210", b"90210").0, 0);
    assert_eq!(score::align(b"90210", b"9210").0, 1);
    let (d, pairs) = score::align(b"123", b"173");
    assert_eq!((d, pairs), (1, vec![(0, 0), (1, 1), (2, 2)]));
    let mut s = score::StringScores::default();
    s.add("123", "173", 0.2); // wrong digit
    s.add("45", "45", 0.9);
    s.add("6", "66", 0.5); // one digit too many
    s.add("780", "780", 0.8);
    assert_eq!((s.fields, s.exact, s.right_length, s.true_digits, s.edits), (4, 2, 3, 9, 2));
    assert!((s.string_accuracy() - 0.5).abs() < 1e-12);
    assert!((s.digit_accuracy() - (1.0 - 2.0 / 9.0)).abs() < 1e-12);
    assert_eq!(s.confusion.confusion[2][7], 1);
    assert_eq!(s.confusion.confusion[6][6], 1);
    // 4 fields: 0-2% reject none (2 of 4 wrong), 5% and 10% still none (round(0.4) = 0)
    let curve = s.rejection_curve();
    assert_eq!(curve.len(), 5);
    assert!(curve.iter().all(|&(_, t, e)| t == 0.2 && (e - 0.5).abs() < 1e-12), "{curve:?}");
    // 20 fields, the 2 least confident wrong: 10% rejected leaves no error
    let mut s = score::StringScores::default();
    for i in 0..20 {
        s.add("1", if i < 2 { "7" } else { "1" }, i as f32 / 20.0);
    }
    let curve = s.rejection_curve();
    assert!((curve[0].2 - 0.1).abs() < 1e-12 && (curve[3].2 - 1.0 / 19.0).abs() < 1e-12 && curve[4].2 == 0.0, "{curve:?}");
    let err = score::parse_string_labels("a.png 12x\n", Path::new("l.txt")).unwrap_err().to_string();
    assert!(err.contains("l.txt") && err.contains("line 1"), "{err}");
}

/// A field of five MNIST test digits that the trained CNN reads alone with at least 0.99,
/// 12 px apart: the reader must read the string and box each digit where it was put.
#[test]
fn a_field_of_mnist_digits_is_read() {
    let gpu = kiln::testing::gpu();
    let test = &mnist10k().test;
    let mut classifier = Classifier::load(gpu, &common::trained("cnn")).unwrap();
    let digits: Vec<GrayImage> = (0..60).map(|i| GrayImage::from_raw(28, 28, test.images.image(i).unwrap().to_vec()).unwrap()).collect();
    let probs = classifier.classify(&digits).unwrap();
    let sure: Vec<usize> = (0..60).filter(|&i| probs[i][test.labels[i] as usize] >= 0.99).take(5).collect();
    assert_eq!(sure.len(), 5);
    let mut img = GrayImage::new(8 + 5 * 40, 44);
    let mut placed = Vec::new();
    for (k, &i) in sure.iter().enumerate() {
        let x0 = 8 + 40 * k as u32;
        image::imageops::overlay(&mut img, &digits[i], x0 as i64, 8);
        placed.push(x0);
    }
    let truth: String = sure.iter().map(|&i| char::from(b'0' + test.labels[i])).collect();
    let mut reader = Reader::new(classifier, Options { reject: 0.5 });
    let reading = reader.read(&[img]).unwrap().remove(0);
    assert_eq!(reading.text, truth);
    assert!(reading.accepted && reading.confidence >= 0.5, "{}", reading.confidence);
    for (d, x0) in reading.digits.iter().zip(placed) {
        // MNIST's ink lies in the middle 20 of its 28 columns
        assert!(d.bbox.x0 >= x0 && d.bbox.x1 < x0 + 28, "{:?} outside {x0}..{}", d.bbox, x0 + 28);
        assert_eq!(d.input.dimensions(), (28, 28));
    }
}

/// `read`: an unreadable file, a blank image and a missing file each get an error line; the
/// good field and a huge photo are still read; the exit code is 2.
#[test]
fn read_survives_bad_images_and_reads_the_others() {
    let dir = scratch("read", "bad_images");
    let model = common::trained("cnn");
    let test = &mnist10k().test;
    // a photo-like field: dark digits on light paper
    let good = dir.join("good.png");
    let mut img = GrayImage::from_pixel(120, 44, Luma([0]));
    for (k, i) in [0usize, 1, 2].into_iter().enumerate() {
        let d = GrayImage::from_raw(28, 28, test.images.image(i).unwrap().to_vec()).unwrap();
        image::imageops::overlay(&mut img, &d, 8 + 36 * k as i64, 8);
    }
    image::imageops::invert(&mut img);
    img.save(&good).unwrap();
    let huge = dir.join("huge.png");
    let mut big = GrayImage::from_pixel(6000, 3000, Luma([230]));
    for x0 in [1000u32, 3000] {
        for y in 1000..2000 {
            for x in x0..x0 + 150 {
                big.put_pixel(x, y, Luma([20]));
            }
        }
    }
    big.save(&huge).unwrap();
    drop(big);
    let bad = dir.join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let blank = dir.join("blank.png");
    GrayImage::from_pixel(50, 30, Luma([200])).save(&blank).unwrap();
    let missing = dir.join("missing.png");
    let out = Command::new(example("read")).arg("--model").arg(&model).args([&good, &bad, &blank, &huge, &missing]).arg("--json").output().unwrap();
    let (code, stdout, stderr) = common::text(&out);
    assert_eq!(code, 2, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["image"], good.display().to_string());
    assert!(lines[0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{stdout}");
    assert_eq!(lines[1]["image"], huge.display().to_string());
    assert_eq!(lines[1]["digits"].as_array().map(Vec::len), Some(2), "two bars: {stdout}");
    assert_eq!(lines[1]["digits"][0]["bbox"]["x0"].as_u64().map(|x| x.abs_diff(1000) <= 3), Some(true), "boxes in the image's pixels: {stdout}");
    for name in ["bad.png", "blank.png", "missing.png"] {
        assert!(stderr.lines().any(|l| l.starts_with("error:") && l.contains(name)), "{name}: {stderr}");
    }
    assert!(stderr.contains("3 of 5 images could not be read"), "{stderr}");
}

#[test]
fn the_string_sets_are_frozen() {
    for kind in string_sets::ALL {
        let set = string_sets::generate(kind, &mnist10k().test, string_sets::SEED);
        assert_eq!(set.fields.len(), string_sets::FIELDS);
        assert!(set.fields.iter().all(|(_, text, _)| !text.is_empty() && text.len() <= 10));
        assert_eq!(set.checksum(), kind.frozen(), "{}: the generator changed: the frozen set and README's numbers no longer match it", kind.name());
    }
}

#[test]
fn frozen_sets_are_chosen_by_name_or_refused_naming_the_known_ones() {
    use kiln::digit_sets::{choose, SetKind};
    use kiln::string_sets::StringKind;
    assert_eq!(choose::<SetKind>(&[]).unwrap(), kiln::digit_sets::ALL.to_vec());
    assert_eq!(choose::<StringKind>(&["photo".into(), "zip".into()]).unwrap(), [StringKind::Photo, StringKind::Zip]);
    let e = choose::<StringKind>(&["zipp".into()]).expect_err("an unknown set chosen").to_string();
    assert!(e.contains("--sets") && e.contains("'zipp'") && e.contains("zip, touching, amount, photo"), "{e}");
}

/// MNIST training digit `i` of mnist10k, cropped to its ink.
fn training_digit(i: usize) -> (GrayImage, u8) {
    let train = &mnist10k().train;
    let img = GrayImage::from_raw(28, 28, train.images.image(i).unwrap().to_vec()).unwrap();
    let (mut x0, mut y0, mut x1, mut y1) = (28, 28, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p[0] > 0 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (image::imageops::crop_imm(&img, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image(), train.labels[i])
}

#[test]
fn the_reader_training_cuts_are_labelled_by_the_digits_they_take_ink_from() {
    use kiln::read::train_data::{cuts, label_candidates, NO_CLASS};
    use kiln::string_sets::Placed;
    // three training digits: the first two overlap by 3 px, the third stands 15 px apart
    let digits: Vec<(GrayImage, u8)> = [0, 1, 2].map(training_digit).into();
    let (w0, w1) = (digits[0].0.width() as i64, digits[1].0.width() as i64);
    let xs = [8, 8 + w0 - 3, 8 + w0 - 3 + w1 + 15];
    let placed: Vec<Placed> = digits.iter().zip(xs).map(|((d, l), x)| Placed { x, y: 8, digit: d.clone(), label: *l }).collect();
    let width = (xs[2] + digits[2].0.width() as i64 + 8) as u32;
    let field = GrayImage::from_fn(width, 44, |x, y| {
        Luma([placed.iter().map(|p| p.digit.get_pixel_checked((x as i64 - p.x) as u32, (y as i64 - p.y) as u32).map_or(0, |v| v[0])).max().unwrap()])
    });
    let boxes: Vec<(i64, i64)> = placed.iter().map(|p| (p.x, p.x + p.digit.width() as i64 - 1)).collect();
    let cut = label_candidates(&field, &placed, &Default::default());
    assert!(!cut.is_empty());
    for c in &cut {
        assert_eq!(c.image.dimensions(), (28, 28));
        let (x0, x1) = (c.bbox.x0 as i64, c.bbox.x1 as i64);
        let spans = |d: usize| x0 <= boxes[d].0 + 3 && x1 >= boxes[d].1 - 3; // covers digit d
        let inside = |d: usize| x0 >= boxes[d].0 - 1 && x1 <= boxes[d].1 + 1;
        match c.label {
            // a digit's label only for a box on that digit, covering it
            Some(l) if l != NO_CLASS => assert!((0..3).any(|d| placed[d].label == l && inside(d) && spans(d)), "{:?} labelled {l}", c.bbox),
            // a box that reaches well into two digits is never one digit
            _ if x0 < boxes[0].1 - 6 && x1 > boxes[1].0 + 6 => assert_eq!(c.label, Some(NO_CLASS), "{:?} covers parts of two digits", c.bbox),
            _ => {}
        }
    }
    // the separate digit is found whole (its faint edge may fall under the threshold) and
    // labelled; the first digit with half the next is not one digit
    assert!(cut.iter().any(|c| c.label == Some(placed[2].label) && (c.bbox.x0 as i64 - boxes[2].0).abs() <= 2), "the third digit, alone");
    assert!(cut.iter().any(|c| c.label == Some(NO_CLASS) && c.bbox.x0 as i64 <= boxes[0].0 + 1 && c.bbox.x1 as i64 >= boxes[1].0 + 6), "the first digit and half the next");

    // generated from a split: the counts asked for, the right labels, the same pixels for the same seed
    let train = &mnist10k().train;
    let a = cuts(train, 40, 20, 7, &Default::default());
    assert_eq!((a.len(), a.images.rows, a.images.cols), (60, 28, 28));
    assert!(a.labels[..40].iter().all(|&l| l == NO_CLASS) && a.labels[40..].iter().all(|&l| l < NO_CLASS));
    assert_eq!(a.images.pixels, cuts(train, 40, 20, 7, &Default::default()).images.pixels, "seeded: reproducible");
    assert_ne!(a.images.pixels, cuts(train, 40, 20, 8, &Default::default()).images.pixels, "another seed, other fields");
}

#[test]
fn the_segmentation_offers_the_true_reading_of_most_touching_fields() {
    use kiln::read::train_data::{offered, offered_touching};
    use kiln::string_sets::Placed;
    // two training digits side by side, 10 px apart: offered; the same two overlapping by
    // two thirds of the narrower one: no cut leaves either digit whole
    let digits: Vec<(GrayImage, u8)> = [3, 4].map(training_digit).into();
    let (w0, w1) = (digits[0].0.width() as i64, digits[1].0.width() as i64);
    let at = |overlap: i64| {
        let placed: Vec<Placed> = digits.iter().zip([8, 8 + w0 - overlap]).map(|((d, l), x)| Placed { x, y: 8, digit: d.clone(), label: *l }).collect();
        let width = (placed[1].x + w1 + 8) as u32;
        let field = GrayImage::from_fn(width, 44, |x, y| {
            Luma([placed.iter().map(|p| p.digit.get_pixel_checked((x as i64 - p.x) as u32, (y as i64 - p.y) as u32).map_or(0, |v| v[0])).max().unwrap()])
        });
        offered(&field, &placed)
    };
    assert!(at(-10), "separate digits are offered");
    assert!(!at(2 * w0.min(w1) / 3), "digits overlapping by two thirds are not");
    // 300 generated fields like the touching set (mnist10k's training digits): 70.0% offered
    // by the reader's grain (wide pieces cut every 0.2 line heights, the cuts leaning), 73.0%
    // with straight cuts, 52.0% with the earlier 0.4 everywhere (measured)
    let offered = offered_touching(&mnist10k().train, 300, 7);
    assert!(offered >= 200, "{offered} of 300 touching fields offered");
}

#[test]
fn a_model_trained_with_not_digits_rejects_the_wrong_cuts_more() {
    use kiln::read::train_data::{cuts, NO_CLASS};
    // the MLP fixture (one epoch of mnist10k) and the same run with 3,000 non-digits added
    let without = common::trained("mlp");
    let with = scratch("read", "not-digits").join("mlp.safetensors");
    let data = DATA;
    let out = Command::new(example("train_mnist"))
        .args(["--dataset", "mnist10k", "--data-dir", data, "--model", "mlp", "--epochs", "1", "--quiet", "--not-digits", "3000", "--save"])
        .arg(&with)
        .env("KILN_AUTOTUNE", "off")
        .output()
        .unwrap();
    let (code, stdout, stderr) = common::text(&out);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // the cuts of fields of test digits (never trained on): 300 that are not one digit, 300 that are
    let test = cuts(&mnist10k().test, 300, 300, 99, &Default::default());
    let images: Vec<GrayImage> = (0..test.len()).map(|i| GrayImage::from_raw(28, 28, test.images.image(i).unwrap().to_vec()).unwrap()).collect();
    let scores = |model: &Path| {
        let mut classifier = Classifier::load(kiln::testing::gpu(), model).unwrap();
        let probs = classifier.classify(&images).unwrap();
        let top = |p: &[f32; 10]| p.iter().copied().fold(0.0, f32::max);
        let rejected = (0..300).filter(|&i| top(&probs[i]) < 0.5).count() as f64 / 300.0;
        let right = (300..600).filter(|&i| (0..10).max_by(|&a, &b| probs[i][a].total_cmp(&probs[i][b])) == Some(test.labels[i] as usize)).count() as f64 / 300.0;
        (rejected, right)
    };
    assert!(test.labels[..300].iter().all(|&l| l == NO_CLASS));
    let ((rejected_without, right_without), (rejected_with, right_with)) = (scores(&without), scores(&with));
    eprintln!("wrong cuts rejected (top p < 0.5): {rejected_without:.3} -> {rejected_with:.3}; right cuts read right: {right_without:.3} -> {right_with:.3}");
    assert!(rejected_with > rejected_without + 0.3, "non-digits rejected: {rejected_without:.3} without, {rejected_with:.3} with");
    assert!(right_with > right_without - 0.03, "right cuts read right: {right_without:.3} without, {right_with:.3} with");
}
