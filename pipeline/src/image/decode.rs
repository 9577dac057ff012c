//! Decoding JPEG/PNG/WebP bytes to a [`Decoded`] image: libjpeg-turbo for JPEGs
//! ([`crate::image::jpeg`]), the `image` crate for the rest and as the reference decoder.
use crate::image::{jpeg, luma601_u8, Decoded};
use crate::{PipelineError, Result};

/// Decode JPEG/PNG/WebP bytes (format sniffed from content) to `channels` (1 → luma, 3 → RGB).
/// JPEGs go through libjpeg-turbo ([`crate::image::jpeg`]; within a few 8-bit levels of the `image`
/// crate, see there); other formats, and JPEGs libjpeg rejects or flags as corrupt (e.g. CMYK,
/// truncated data), through [`decode_image_with_image_crate`]. Errors: [`PipelineError::ImageData`]
/// for empty input, undecodable data or a zero-sized image.
pub fn decode_image(bytes: &[u8], channels: u32) -> Result<Decoded> {
    decode_image_into(bytes, channels, Vec::new())
}

/// [`decode_image`] reusing `buf`'s allocation for the pixels when libjpeg decodes the image.
pub fn decode_image_into(bytes: &[u8], channels: u32, buf: Vec<u8>) -> Result<Decoded> {
    if jpeg::is_jpeg(bytes) {
        if let Ok(w) = jpeg::decode_jpeg_window(bytes, channels, None, buf) {
            return Ok(w.img);
        }
    }
    decode_image_with_image_crate(bytes, channels)
}

/// Decode JPEG/PNG/WebP bytes with the `image` crate (JPEG: zune-jpeg) to `channels` (1 → ITU-R
/// 601 luma of the RGB decode, 3 → RGB): the reference decoder. Errors:
/// [`PipelineError::ImageData`] for empty input, undecodable data or a zero-sized image.
pub fn decode_image_with_image_crate(bytes: &[u8], channels: u32) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(PipelineError::ImageData("zero-byte image".into()));
    }
    let img =
        image::load_from_memory(bytes).map_err(|e| PipelineError::ImageData(format!("cannot decode image: {e}")))?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(PipelineError::ImageData("image has zero width or height".into()));
    }
    let data = if channels == 1 {
        match img {
            image::DynamicImage::ImageLuma8(b) => b.into_raw(),
            other => other.to_rgb8().pixels().map(|p| luma601_u8(p[0], p[1], p[2])).collect(),
        }
    } else {
        img.to_rgb8().into_raw()
    };
    Ok(Decoded { width, height, channels, data })
}
