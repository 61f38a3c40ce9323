//! The training curve: training loss at every metrics read, test loss and accuracy per
//! epoch, as a PNG drawn with plotters. Text needs a TTF font: `KILN_FONT`, else DejaVu Sans where Debian's
//! fonts-dejavu-core puts it.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::digits::calibrate::{Calibration, Rejection};
use crate::digits::train::EpochReport;
use crate::{Error, Result};

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

fn register_font(path: &Path) -> Result<()> {
    let font = std::env::var_os("KILN_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from))
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::file(path, "drawing text needs a TTF font: set KILN_FONT=<file.ttf> or `apt-get install fonts-dejavu-core`")
        })?;
    let bytes = std::fs::read(&font).map_err(|e| Error::file(&font, e))?;
    // plotters keeps registered fonts for the life of the process
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| Error::file(&font, "not a usable TTF/OTF font"))
}

/// Refuses a plot path that is not a PNG before any work is done.
pub fn check_path(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("png") => Ok(()),
        _ => Err(Error::file(path, "the plot is a PNG image; give a path ending in .png")),
    }
}

const SIZE: (u32, u32) = (1000, 400);

/// Draws the training loss at each metrics read (`loss_curve`, see
/// [`crate::digits::train::TrainReport::loss_curve`]), the test loss and the test accuracy per epoch
/// to `path` (PNG, 1000x400, written atomically).
pub fn plot_curve(path: &Path, epochs: &[EpochReport], loss_curve: &[(f64, f32)]) -> Result<()> {
    check_path(path)?;
    register_font(path)?;
    let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    draw(&mut pixels, epochs, loss_curve).map_err(|e| Error::file(path, format!("cannot draw the plot: {e}")))?;
    crate::base::files::write_png(path, &pixels, SIZE, image::ExtendedColorType::Rgb8)
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(pixels: &mut [u8], epochs: &[EpochReport], loss_curve: &[(f64, f32)]) -> DrawResult {
    let root = BitMapBackend::with_buffer(pixels, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let n = epochs.last().map_or(0, |e| e.epoch) as f64;
    // x is epochs done: the training loss has a point at every metrics read, so a
    // one-epoch run still draws a curve
    let x_range = 0.0..n + 0.05;
    // epochs that were not evaluated (--eval-every) carry NaN test figures: no point
    let epochs: Vec<&EpochReport> = epochs.iter().filter(|e| e.test_accuracy.is_finite()).collect();
    let test_loss: Vec<(f64, f64)> = epochs.iter().map(|e| (e.epoch as f64, e.test_loss as f64)).collect();
    let train_loss: Vec<(f64, f64)> = loss_curve.iter().map(|&(x, l)| (x, l as f64)).collect();
    let max_loss = train_loss.iter().chain(&test_loss).map(|p| p.1).filter(|l| l.is_finite()).fold(0.0, f64::max) * 1.1;
    let mut loss = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range.clone(), 0.0..max_loss.max(1e-3))?;
    loss.configure_mesh().x_desc("epochs").draw()?;
    loss.draw_series(LineSeries::new(train_loss, BLUE.stroke_width(2)))?
        .label("train")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    loss.draw_series(LineSeries::new(test_loss.clone(), RED.stroke_width(2)))?
        .label("test")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    loss.draw_series(test_loss.into_iter().map(|p| Circle::new(p, 4, RED.filled())))?;
    loss.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;

    let accuracy: Vec<(f64, f64)> = epochs.iter().map(|e| (e.epoch as f64, 100.0 * e.test_accuracy as f64)).collect();
    let lo = accuracy.iter().map(|p| p.1).fold(100.0, f64::min);
    let mut acc = ChartBuilder::on(&right)
        .caption("test accuracy (%)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range, (lo - 1.0).max(0.0)..100.0)?;
    acc.configure_mesh().x_desc("epochs").draw()?;
    acc.draw_series(LineSeries::new(accuracy.clone(), GREEN.stroke_width(2)))?;
    acc.draw_series(accuracy.into_iter().map(|p| Circle::new(p, 4, GREEN.filled())))?;
    root.present()?;
    Ok(())
}

/// One point of a learning curve: test accuracy (a fraction) after training on `labels`
/// labelled images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Labelled training images.
    pub labels: usize,
    /// Test accuracy, in [0, 1].
    pub accuracy: f64,
}

/// Draws test accuracy against labelled training images (log x) to `path` (PNG, 700x450,
/// written atomically): kiln's points, and `reference` points (another framework's, for
/// comparison; may be empty) as a dashed series named `reference_name`.
pub fn plot_learning_curve(path: &Path, points: &[CurvePoint], reference: &[CurvePoint], reference_name: &str) -> Result<()> {
    check_path(path)?;
    if points.is_empty() || points.iter().chain(reference).any(|p| p.labels == 0 || !(0.0..=1.0).contains(&p.accuracy)) {
        return Err(Error::file(path, "a learning curve needs points with labels >= 1 and accuracy in [0, 1]"));
    }
    register_font(path)?;
    let mut pixels = vec![0u8; (CURVE_SIZE.0 * CURVE_SIZE.1 * 3) as usize];
    draw_learning_curve(&mut pixels, points, reference, reference_name)
        .map_err(|e| Error::file(path, format!("cannot draw the plot: {e}")))?;
    crate::base::files::write_png(path, &pixels, CURVE_SIZE, image::ExtendedColorType::Rgb8)
}

const CURVE_SIZE: (u32, u32) = (700, 450);

fn draw_learning_curve(pixels: &mut [u8], points: &[CurvePoint], reference: &[CurvePoint], reference_name: &str) -> DrawResult {
    let root = BitMapBackend::with_buffer(pixels, CURVE_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let xy = |p: &[CurvePoint]| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = p.iter().map(|p| (p.labels as f64, 100.0 * p.accuracy)).collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let (ours, theirs) = (xy(points), xy(reference));
    let all = || ours.iter().chain(&theirs);
    let (x_lo, x_hi) = all().fold((f64::MAX, 0.0f64), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let y_lo = all().map(|p| p.1).fold(100.0, f64::min);
    let mut chart = ChartBuilder::on(&root)
        .caption("test accuracy vs labelled training images", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((x_lo / 1.5..x_hi * 2.5).log_scale(), (y_lo - 1.0).floor().max(0.0)..100.0)?;
    chart
        .configure_mesh()
        .x_desc("labelled training images (log scale)")
        .y_desc("test accuracy (%)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    chart
        .draw_series(LineSeries::new(ours.clone(), BLUE.stroke_width(2)))?
        .label("kiln")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(ours.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    chart.draw_series(ours.iter().map(|&(x, y)| {
        EmptyElement::at((x, y))
            + Text::new(format!("{y:.2}%"), (6, 6), ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Top)))
    }))?;
    if !theirs.is_empty() {
        chart
            .draw_series(DashedLineSeries::new(theirs.clone(), 6, 4, RED.stroke_width(2)))?
            .label(reference_name.to_string())
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart.draw_series(theirs.iter().map(|&p| TriangleMarker::new(p, 5, RED.filled())))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

/// Draws a reliability diagram (accuracy against confidence per bin, the diagonal being
/// perfect calibration) of the plain softmax and of the checkpoint's temperature to `path`
/// (PNG, 700x450, written atomically), with each one's expected calibration error.
pub fn plot_reliability(path: &Path, c: &Calibration) -> Result<()> {
    check_path(path)?;
    register_font(path)?;
    let mut pixels = vec![0u8; (CURVE_SIZE.0 * CURVE_SIZE.1 * 3) as usize];
    draw_reliability(&mut pixels, c).map_err(|e| Error::file(path, format!("cannot draw the plot: {e}")))?;
    crate::base::files::write_png(path, &pixels, CURVE_SIZE, image::ExtendedColorType::Rgb8)
}

fn draw_reliability(pixels: &mut [u8], c: &Calibration) -> DrawResult {
    let root = BitMapBackend::with_buffer(pixels, CURVE_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("reliability (T = {:.3})", c.temperature), ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    chart.configure_mesh().x_desc("confidence (top probability)").y_desc("accuracy").draw()?;
    chart.draw_series(DashedLineSeries::new([(0.0, 0.0), (1.0, 1.0)], 6, 4, BLACK.stroke_width(1)))?;
    for (r, name, color) in [(&c.before, "T = 1", RED), (&c.after, "calibrated", BLUE)] {
        let points: Vec<(f64, f64)> = r.bins.iter().filter(|b| b.count > 0).map(|b| (b.confidence, b.accuracy)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{name}: ECE {:.2}%", 100.0 * r.ece))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

/// Draws the error–rejection curve (error rate among accepted answers, in %, against the
/// fraction rejected) to `path` (PNG, 700x450, written atomically).
pub fn plot_rejection(path: &Path, curve: &[Rejection]) -> Result<()> {
    check_path(path)?;
    if curve.is_empty() {
        return Err(Error::file(path, "an error-rejection curve needs at least one point"));
    }
    register_font(path)?;
    let mut pixels = vec![0u8; (CURVE_SIZE.0 * CURVE_SIZE.1 * 3) as usize];
    draw_rejection(&mut pixels, curve).map_err(|e| Error::file(path, format!("cannot draw the plot: {e}")))?;
    crate::base::files::write_png(path, &pixels, CURVE_SIZE, image::ExtendedColorType::Rgb8)
}

fn draw_rejection(pixels: &mut [u8], curve: &[Rejection]) -> DrawResult {
    let root = BitMapBackend::with_buffer(pixels, CURVE_SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = curve.iter().map(|r| (100.0 * r.rejected, 100.0 * r.error_rate)).collect();
    let x_hi = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let y_hi = points.iter().map(|p| p.1).fold(0.1, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("error among accepted vs rejected", ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_hi, 0.0..y_hi)?;
    chart.configure_mesh().x_desc("rejected, least confident first (%)").y_desc("error among accepted (%)").draw()?;
    chart.draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?;
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))?;
    chart.draw_series(points.iter().map(|&(x, y)| {
        EmptyElement::at((x, y)) + Text::new(format!("{y:.2}%"), (6, -18), ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Top)))
    }))?;
    root.present()?;
    Ok(())
}
