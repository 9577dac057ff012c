//! Decoded images: the 8-bit pixel type every decoder returns ([`Decoded`]), crop-box geometry
//! ([`CropBox`], the window a resampling reads), decoding of JPEG/PNG/WebP bytes ([`decode`])
//! and libjpeg-turbo's window decoder ([`jpeg`]). A leaf: nothing here knows about
//! augmentations or the loader.
pub mod decode;
pub mod geometry;
pub mod jpeg;

pub use decode::{decode_image, decode_image_into, decode_image_with_image_crate};
pub use geometry::{resample_support, union_box, CropBox};

/// A decoded 8-bit image, HWC interleaved: `data.len() == width * height * channels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    /// 1 (L8) or 3 (RGB8).
    pub channels: u32,
    pub data: Vec<u8>,
}

/// ITU-R 601 luma of an RGB pixel (any scale: [0, 1] floats or 8-bit levels).
#[inline]
pub(crate) fn luma601(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// ITU-R 601 luma of an 8-bit RGB pixel, rounded to 8 bits.
#[inline]
pub(crate) fn luma601_u8(r: u8, g: u8, b: u8) -> u8 {
    luma601(r as f32, g as f32, b as f32).round().clamp(0.0, 255.0) as u8
}
