//! The check every image passes before `dspnet-shard` stores it: the format is sniffed from the
//! content (not the file name, so a PNG named `.JPEG` is stored as `.png`), its header must give
//! a non-empty frame, and its structure must reach the end (a JPEG's end-of-image marker after
//! the scan data, a PNG's chunks up to IEND, a WebP's RIFF size), which catches empty and
//! truncated files without decoding. [`Verify::Full`] also decodes the image completely with the
//! loader's decoder ([`crate::image::decode_image`]).
use std::io::Cursor;

use crate::image::jpeg::{is_jpeg, jpeg_header};

/// How much of each image is checked while sharding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verify {
    /// Format, header and structure (fast: no pixel is decoded).
    #[default]
    Header,
    /// The header checks, then a complete decode with the loader's decoder.
    Full,
}

/// Image format found in the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
}

impl ImageFormat {
    /// The extension a sample stores the image under: `jpg`, `png` or `webp`.
    pub fn ext(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
        }
    }
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Checks one image's bytes ([module docs](self)). Returns its format, or the reason it cannot be
/// used (one line, e.g. `truncated JPEG: no end-of-image marker after the scan data`).
pub fn check_image(bytes: &[u8], verify: Verify) -> Result<ImageFormat, String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    let (format, size) = if is_jpeg(bytes) {
        (ImageFormat::Jpeg, check_jpeg(bytes)?)
    } else if bytes.starts_with(PNG_SIGNATURE) {
        (ImageFormat::Png, check_png(bytes)?)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        (ImageFormat::Webp, check_webp(bytes)?)
    } else {
        let head: Vec<String> = bytes.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(format!("not a JPEG, PNG or WebP image (it starts with bytes {})", head.join(" ")));
    };
    if verify == Verify::Full {
        let img = crate::image::decode_image(bytes, 3).map_err(|e| format!("cannot decode: {e}"))?;
        if (img.width, img.height) != size {
            return Err(format!(
                "header says {}x{}, the image decodes to {}x{}",
                size.0, size.1, img.width, img.height
            ));
        }
    }
    Ok(format)
}

fn check_jpeg(bytes: &[u8]) -> Result<(u32, u32), String> {
    let h = jpeg_header(bytes).ok_or("JPEG header is malformed or ends before the first scan")?;
    if !matches!(h.components, 1 | 3 | 4) {
        return Err(format!("JPEG with {} colour components (1, 3 or 4 expected)", h.components));
    }
    // Inside entropy-coded data a 0xFF byte is followed by 0x00 or a restart marker, so the only
    // FF D9 after the first scan is the end-of-image marker (an EXIF thumbnail's comes before).
    let tail = &bytes[h.scan_data..];
    if !tail.windows(2).rev().any(|w| w == [0xFF, 0xD9]) {
        return Err(format!("truncated JPEG: no end-of-image marker after the scan data ({} bytes)", bytes.len()));
    }
    Ok((h.width, h.height))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn check_png(bytes: &[u8]) -> Result<(u32, u32), String> {
    let mut at = PNG_SIGNATURE.len();
    let mut size = None;
    loop {
        if at + 8 > bytes.len() {
            return Err(format!("truncated PNG: the file ends at byte {} before the IEND chunk", bytes.len()));
        }
        let len = be32(bytes, at) as usize;
        let kind = &bytes[at + 4..at + 8];
        let end = (at + 12).checked_add(len).ok_or("PNG chunk length overflows")?;
        if end > bytes.len() {
            return Err(format!(
                "truncated PNG: chunk {} runs past the end of the file ({} bytes)",
                String::from_utf8_lossy(kind),
                bytes.len()
            ));
        }
        if size.is_none() {
            if kind != b"IHDR" || len != 13 {
                return Err("PNG without an IHDR chunk first".into());
            }
            let (w, h) = (be32(bytes, at + 8), be32(bytes, at + 12));
            if w == 0 || h == 0 {
                return Err(format!("PNG of {w}x{h} pixels"));
            }
            size = Some((w, h));
        }
        if kind == b"IEND" {
            return size.ok_or_else(|| "PNG without an IHDR chunk first".into());
        }
        at = end;
    }
}

fn check_webp(bytes: &[u8]) -> Result<(u32, u32), String> {
    let riff = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as u64;
    if riff + 8 > bytes.len() as u64 {
        return Err(format!(
            "truncated WebP: its RIFF header announces {} bytes, the file holds {}",
            riff + 8,
            bytes.len()
        ));
    }
    let (w, h) = image::ImageReader::with_format(Cursor::new(bytes), image::ImageFormat::WebP)
        .into_dimensions()
        .map_err(|e| format!("WebP header: {e}"))?;
    if w == 0 || h == 0 {
        return Err(format!("WebP of {w}x{h} pixels"));
    }
    Ok((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn photo() -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/coco128/images/val2017");
        let mut files: Vec<_> = std::fs::read_dir(&p)
            .unwrap_or_else(|e| panic!("{}: {e}; the real photos live in ../shared/data", p.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::read(&files[0]).unwrap()
    }

    #[test]
    fn real_photos_pass_and_broken_ones_are_named() {
        let jpg = photo();
        for v in [Verify::Header, Verify::Full] {
            assert_eq!(check_image(&jpg, v), Ok(ImageFormat::Jpeg));
        }
        // trailing bytes after the end-of-image marker are accepted (some cameras append data)
        let mut padded = jpg.clone();
        padded.extend_from_slice(&[0u8; 100]);
        assert_eq!(check_image(&padded, Verify::Full), Ok(ImageFormat::Jpeg));
        let e = check_image(&jpg[..jpg.len() * 6 / 10], Verify::Header).unwrap_err();
        assert!(e.starts_with("truncated JPEG"), "{e}");
        let e = check_image(&jpg[..300], Verify::Header).unwrap_err();
        assert!(e.contains("JPEG header"), "{e}");
        assert_eq!(check_image(b"", Verify::Header).unwrap_err(), "empty file (0 bytes)");
        let e = check_image(b"<html>not found</html>", Verify::Header).unwrap_err();
        assert_eq!(e, "not a JPEG, PNG or WebP image (it starts with bytes 3c 68 74 6d)");

        let png = crate::testutil::png(20, 10, 7);
        assert_eq!(check_image(&png, Verify::Full), Ok(ImageFormat::Png));
        let e = check_image(&png[..png.len() - 20], Verify::Header).unwrap_err();
        assert!(e.starts_with("truncated PNG"), "{e}");
        let e = check_image(&png[..8], Verify::Header).unwrap_err();
        assert!(e.starts_with("truncated PNG"), "{e}");

        let img = image::RgbImage::from_fn(9, 5, |x, y| image::Rgb([x as u8 * 20, y as u8 * 40, 100]));
        let mut webp = Vec::new();
        image::DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut webp), image::ImageFormat::WebP).unwrap();
        assert_eq!(check_image(&webp, Verify::Full), Ok(ImageFormat::Webp));
        let e = check_image(&webp[..webp.len() - 4], Verify::Header).unwrap_err();
        assert!(e.starts_with("truncated WebP"), "{e}");
    }

    #[test]
    fn full_verification_decodes_what_the_header_check_cannot_see() {
        // chunk structure intact, compressed pixels inside IDAT overwritten: only a decode notices
        let mut png = crate::testutil::png(32, 32, 9);
        let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
        for b in &mut png[idat + 6..idat + 30] {
            *b ^= 0x5A;
        }
        assert_eq!(check_image(&png, Verify::Header), Ok(ImageFormat::Png));
        let e = check_image(&png, Verify::Full).unwrap_err();
        assert!(e.starts_with("cannot decode"), "{e}");
    }
}
