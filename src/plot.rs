//! The training curve: loss (train and test) and test accuracy per epoch, as a PNG drawn
//! with plotters. Text needs a TTF font: `KILN_FONT`, else DejaVu Sans where Debian's
//! fonts-dejavu-core puts it.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::train::EpochReport;
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

/// Draws loss and accuracy per epoch to `path` (PNG, 1000x400).
pub fn plot_curve(path: &Path, epochs: &[EpochReport]) -> Result<()> {
    register_font(path)?;
    let err = |e: &dyn std::fmt::Display| Error::file(path, format!("cannot draw the plot: {e}"));
    let root = BitMapBackend::new(path, (1000, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(500);
    let n = epochs.len() as f64;
    let x_range = 0.5..n + 0.5;

    let max_loss = epochs.iter().flat_map(|e| [e.train_loss, e.test_loss]).fold(0f32, f32::max) as f64 * 1.1;
    let mut loss = ChartBuilder::on(&left)
        .caption("loss", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range.clone(), 0.0..max_loss.max(1e-3))
        .map_err(|e| err(&e))?;
    loss.configure_mesh().x_desc("epoch").x_labels(epochs.len().min(10)).draw().map_err(|e| err(&e))?;
    let series = |f: fn(&EpochReport) -> f32| epochs.iter().map(move |e| (e.epoch as f64, f(e) as f64)).collect::<Vec<_>>();
    loss.draw_series(LineSeries::new(series(|e| e.train_loss), BLUE.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("train")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    loss.draw_series(LineSeries::new(series(|e| e.test_loss), RED.stroke_width(2)))
        .map_err(|e| err(&e))?
        .label("test")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    loss.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| err(&e))?;

    let accuracy = series(|e| 100.0 * e.test_accuracy);
    let lo = accuracy.iter().map(|p| p.1).fold(100.0, f64::min);
    let mut acc = ChartBuilder::on(&right)
        .caption("test accuracy (%)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(x_range, (lo - 1.0).max(0.0)..100.0)
        .map_err(|e| err(&e))?;
    acc.configure_mesh().x_desc("epoch").x_labels(epochs.len().min(10)).draw().map_err(|e| err(&e))?;
    acc.draw_series(LineSeries::new(accuracy.clone(), GREEN.stroke_width(2))).map_err(|e| err(&e))?;
    acc.draw_series(accuracy.into_iter().map(|p| Circle::new(p, 4, GREEN.filled())))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
