//! kiln in the browser: the page in `web/static/` calls these bindings. The engine is the
//! same crate as natively (kernels, graph, executor, checkpoints, `predict`'s preprocessing),
//! on wgpu's WebGPU backend. Nothing here blocks: every GPU read is awaited
//! (`Classifier::classify_async`, `Executor::read_metrics_async`), and training runs a few
//! steps per call so the page can draw between them.
//!
//! Calls that touch the GPU return promises; the page makes one such call at a time per
//! object (a second while one runs is an error saying so, not a panic).

#[cfg(target_arch = "wasm32")]
mod bindings;
#[cfg(target_arch = "wasm32")]
pub use bindings::*;

/// A drawing as the reader and `predict` see a photo: the canvas's RGBA pixels (ink opaque,
/// background transparent) flattened by [`kiln::predict::flatten_alpha`] and inverted to
/// white ink on black if need be ([`kiln::predict::load_gray_from`]), at the canvas's size.
pub fn field(rgba: Vec<u8>, width: u32, height: u32) -> kiln::Result<image::GrayImage> {
    let Some(rgba) = image::RgbaImage::from_raw(width, height, rgba) else {
        return Err(kiln::Error::shape("the drawing", format!("{width}x{height} RGBA needs {} bytes", 4 * width * height)));
    };
    Ok(kiln::predict::load_gray_from(kiln::predict::flatten_alpha(&rgba)))
}

/// How many times smaller a written number is read than it is drawn: the page's pen writes
/// digits some 120-170 px tall, and the reader's work (components, cuts, each candidate's
/// preparation) grows with the pixels while a digit 40-60 px tall reads as well.
pub const READ_SHRINK: u32 = 3;

/// A written number as the reader reads it: the [`field`], [`READ_SHRINK`] times smaller
/// (a box of the reading times `READ_SHRINK` is in canvas pixels: [`to_canvas`]).
pub fn number_field(rgba: Vec<u8>, width: u32, height: u32) -> kiln::Result<image::GrayImage> {
    let field = field(rgba, width, height)?;
    Ok(kiln::morphology::resize(&field, width.div_ceil(READ_SHRINK), height.div_ceil(READ_SHRINK)))
}

/// A box of a [`number_field`]'s reading in the canvas's pixels.
pub fn to_canvas(b: kiln::read::segment::Bbox) -> kiln::read::segment::Bbox {
    let s = READ_SHRINK;
    kiln::read::segment::Bbox { x0: b.x0 * s, y0: b.y0 * s, x1: b.x1 * s + s - 1, y1: b.y1 * s + s - 1 }
}

/// The digit a drawing becomes, as `predict` makes it from a photo for the model loaded
/// (`preparation`: `Preparation::of` its checkpoint): the [`field`], cropped, scaled and
/// centred in 28x28. `None` when there is no ink yet.
pub fn prepare(rgba: Vec<u8>, width: u32, height: u32, preparation: &kiln::predict::Preparation) -> kiln::Result<Option<image::GrayImage>> {
    match kiln::predict::to_mnist_with(&field(rgba, width, height)?, std::path::Path::new("the drawing"), preparation) {
        Ok(d) => Ok(Some(d)),
        // to_mnist's only file error: no ink (an empty canvas), nothing to classify yet
        Err(kiln::Error::File { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
