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

/// The digit a drawing becomes, as `predict` makes it from a photo: the canvas's RGBA
/// pixels (ink opaque, background transparent) flattened by [`kiln::predict::flatten_alpha`],
/// inverted to white ink on black if need be, cropped, scaled and centred in 28x28. `None`
/// when there is no ink yet.
pub fn prepare(rgba: Vec<u8>, width: u32, height: u32) -> kiln::Result<Option<image::GrayImage>> {
    let Some(rgba) = image::RgbaImage::from_raw(width, height, rgba) else {
        return Err(kiln::Error::shape("prepare", format!("{width}x{height} RGBA needs {} bytes", 4 * width * height)));
    };
    let gray = kiln::predict::load_gray_from(kiln::predict::flatten_alpha(&rgba));
    match kiln::predict::to_mnist(&gray, std::path::Path::new("the drawing")) {
        Ok(d) => Ok(Some(d)),
        // to_mnist's only file error: no ink (an empty canvas), nothing to classify yet
        Err(kiln::Error::File { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
