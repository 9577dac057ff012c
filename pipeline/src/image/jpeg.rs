//! JPEG decoding with libjpeg-turbo (2.1, SIMD; Debian's libjpeg62-turbo-dev, linked
//! statically through the small C shim `src/image/jpeg_shim.c`), including **window decoding**: only
//! the rows and (iMCU-aligned) columns a random resized crop reads are decoded — rows above are
//! skipped without colour conversion (`jpeg_skip_scanlines`), rows below are never decoded,
//! columns outside are neither transformed nor colour-converted (`jpeg_crop_scanline`).
//!
//! Output equals libjpeg-turbo's full decode inside the window (test
//! `window_equals_full_decode_on_coco`), and the full decode equals the `image` crate's (zune-jpeg)
//! within one 8-bit level on 99.5% of values and 6 levels everywhere on the COCO128 and CIFAR-10
//! JPEGs (test `libjpeg_matches_image_crate_on_real_jpegs`; measured 99.8% and 5 levels); the two
//! decoders' integer IDCTs and chroma upsampling round differently.
use std::ffi::{c_char, c_int, c_uchar, c_ulong};

use crate::image::{luma601_u8, CropBox, Decoded};
use crate::{PipelineError, Result};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn dspnet_jpeg_decode_window(
        buf: *const c_uchar,
        len: c_ulong,
        gray: c_int,
        x0: u32,
        y0: u32,
        w0: u32,
        h0: u32,
        out: *mut c_uchar,
        out_cap: usize,
        full_w: *mut u32,
        full_h: *mut u32,
        out_x: *mut u32,
        out_w: *mut u32,
        warnings: *mut c_int,
        msg: *mut c_char,
        msg_cap: usize,
    ) -> c_int;
}

/// True when `bytes` start with the JPEG SOI marker followed by another marker.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF
}

/// (width, height) in pixels from the first SOF marker, without decoding; `None` when the
/// markers before it are malformed or the frame has a zero side.
pub fn jpeg_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    walk_markers(bytes, true).and_then(|(frame, _)| frame).map(|f| (f.width, f.height))
}

/// What the markers of a JPEG say before its first scan: the frame (size, colour components)
/// and where the first scan's entropy-coded data starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    /// Colour components of the frame: 1 (grayscale), 3 (YCbCr or RGB), 4 (CMYK or YCCK).
    pub components: u8,
    /// Byte offset of the first scan's entropy-coded data (just after its SOS segment).
    pub scan_data: usize,
}

/// [`JpegHeader`] of `bytes`, reading markers up to the first SOS without decoding; `None` when
/// the markers are malformed, the file ends before a scan, or no frame header precedes it.
pub fn jpeg_header(bytes: &[u8]) -> Option<JpegHeader> {
    let (frame, scan_data) = walk_markers(bytes, false)?;
    let f = frame.filter(|f| f.components > 0)?;
    Some(JpegHeader { width: f.width, height: f.height, components: f.components, scan_data: scan_data? })
}

struct Frame {
    width: u32,
    height: u32,
    components: u8,
}

/// Walks the marker segments from SOI: stops at the first frame header when `stop_at_frame`,
/// else at the first SOS, returning the frame (if seen) and the offset after the SOS segment.
/// `None` for malformed markers, a truncated segment, EOI before a scan, or a frame with a zero
/// side.
fn walk_markers(bytes: &[u8], stop_at_frame: bool) -> Option<(Option<Frame>, Option<usize>)> {
    if !is_jpeg(bytes) {
        return None;
    }
    let mut frame = None;
    let mut i = 2usize;
    loop {
        // skip fill bytes, then read the marker code
        while *bytes.get(i)? == 0xFF && *bytes.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        i += 2;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,  // markers without a length
            0xD9 => return None,                    // EOI before any scan
            0xDA if frame.is_none() => return None, // SOS before any frame header
            _ => {}
        }
        let len = u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]) as usize;
        if len < 2 {
            return None;
        }
        if marker == 0xDA {
            return (i + len <= bytes.len()).then_some((frame, Some(i + len)));
        }
        // SOF0-3, 5-7, 9-11, 13-15 (C4 = DHT, C8 = JPG, CC = DAC are not frame headers)
        if frame.is_none() && matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let height = u16::from_be_bytes([*bytes.get(i + 3)?, *bytes.get(i + 4)?]) as u32;
            let width = u16::from_be_bytes([*bytes.get(i + 5)?, *bytes.get(i + 6)?]) as u32;
            let components = bytes.get(i + 7).copied().unwrap_or(0);
            if width == 0 || height == 0 {
                return None;
            }
            frame = Some(Frame { width, height, components });
            if stop_at_frame {
                return Some((frame, None));
            }
        }
        i += len;
    }
}

/// Largest image, in pixels, this decoder accepts (PIL's `Image.MAX_IMAGE_PIXELS`, 89.5 M):
/// the frame header alone sizes the decode buffer (3 bytes per pixel of a full-width window),
/// so a corrupt or hostile header claiming 65535x65535 must not allocate 12 GiB.
pub const MAX_JPEG_PIXELS: u64 = 89_478_485;

/// A decoded window of a JPEG image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JpegWindow {
    /// The decoded pixels (HWC, 1 or 3 channels): columns `origin.0 .. origin.0 + img.width`,
    /// rows `origin.1 .. origin.1 + img.height` of the full image.
    pub img: Decoded,
    /// Top-left pixel of the window in the full image.
    pub origin: (u32, u32),
    /// Full image (width, height).
    pub full: (u32, u32),
}

/// Decode `window` (full-image pixels; `None` = the whole image) of a JPEG to `channels` (3 =
/// RGB, 1 = ITU-R 601 luma of the RGB decode, rounded, as [`crate::image::decode_image`]
/// computes it for every decoder) with libjpeg-turbo, reusing `buf`'s allocation for the
/// pixels. The decoded window may be wider than asked (iMCU-aligned columns); it always
/// contains the request.
///
/// Errors: [`PipelineError::ImageData`] when libjpeg fails (not a JPEG, truncated headers,
/// unsupported colour space such as CMYK), when it reports corrupt data (warnings; the caller
/// may fall back to another decoder), when the window lies outside the image, or when the
/// image has more than [`MAX_JPEG_PIXELS`] pixels.
pub fn decode_jpeg_window(
    bytes: &[u8],
    channels: u32,
    window: Option<CropBox>,
    mut buf: Vec<u8>,
) -> Result<JpegWindow> {
    if channels != 1 && channels != 3 {
        return Err(PipelineError::ImageData(format!("{channels} channels requested, 1 or 3 supported")));
    }
    let (full_w, full_h) =
        jpeg_dimensions(bytes).ok_or_else(|| PipelineError::ImageData("not a JPEG (no frame header)".into()))?;
    if full_w as u64 * full_h as u64 > MAX_JPEG_PIXELS {
        return Err(PipelineError::ImageData(format!(
            "{full_w}x{full_h} JPEG exceeds the decoder's limit of {MAX_JPEG_PIXELS} pixels (PIL's MAX_IMAGE_PIXELS); resize it before sharding"
        )));
    }
    let win = window.unwrap_or(CropBox { left: 0, top: 0, width: full_w, height: full_h });
    if win.width == 0
        || win.height == 0
        || win.left as u64 + win.width as u64 > full_w as u64
        || win.top as u64 + win.height as u64 > full_h as u64
    {
        return Err(PipelineError::ImageData(format!("window {win:?} outside the {full_w}x{full_h} image")));
    }
    // columns may widen to the iMCU grid (<= 32 px each side): the full width always fits
    let cap = full_w as usize * win.height as usize * 3;
    if buf.len() < cap {
        buf.resize(cap, 0); // grows once per worker; never re-zeroed (libjpeg overwrites it)
    }
    let (mut fw, mut fh, mut ox, mut ow, mut warnings) = (0u32, 0u32, 0u32, 0u32, 0 as c_int);
    let mut msg = [0 as c_char; 200];
    // SAFETY: every pointer is valid for the stated length for the whole call (`bytes` and
    // `buf` are live slices, the out-parameters are locals); the shim writes at most `cap`
    // bytes into `buf` and a NUL-terminated string of at most `msg.len()` bytes into `msg`, and
    // keeps no pointer after returning. libjpeg's longjmp never crosses a Rust frame.
    let rc = unsafe {
        dspnet_jpeg_decode_window(
            bytes.as_ptr(),
            bytes.len() as c_ulong,
            0, // RGB; luma is computed below
            win.left,
            win.top,
            win.width,
            win.height,
            buf.as_mut_ptr(),
            cap,
            &mut fw,
            &mut fh,
            &mut ox,
            &mut ow,
            &mut warnings,
            msg.as_mut_ptr(),
            msg.len(),
        )
    };
    let text = || {
        let bytes: Vec<u8> = msg.iter().take_while(|c| **c != 0).map(|c| *c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    if rc != 0 {
        return Err(PipelineError::ImageData(format!("cannot decode JPEG: {}", text())));
    }
    if warnings > 0 {
        return Err(PipelineError::ImageData(format!("corrupt JPEG data: {}", text())));
    }
    if (fw, fh) != (full_w, full_h) {
        return Err(PipelineError::ImageData(format!("JPEG frame header says {full_w}x{full_h}, decoder {fw}x{fh}")));
    }
    if ox > win.left || ox + ow < win.left + win.width {
        return Err(PipelineError::Internal(format!("libjpeg window {ox}+{ow} misses the requested {win:?}")));
    }
    let n = ow as usize * win.height as usize;
    if channels == 1 {
        for i in 0..n {
            let p = &buf[3 * i..3 * i + 3];
            buf[i] = luma601_u8(p[0], p[1], p[2]);
        }
    }
    buf.truncate(n * channels as usize);
    Ok(JpegWindow {
        img: Decoded { width: ow, height: win.height, channels, data: buf },
        origin: (ox, win.top),
        full: (full_w, full_h),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::decode_image_with_image_crate;
    use std::path::{Path, PathBuf};

    /// ../shared/data, relative to the checkout (fails, not skips, when missing under CI).
    fn shared(sub: &str) -> Option<PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data").join(sub);
        if p.is_dir() {
            return Some(p);
        }
        assert!(std::env::var_os("CI").is_none(), "shared data {} missing under CI", p.display());
        eprintln!("skipping: {} not found", p.display());
        None
    }

    fn jpgs(dir: &Path, limit: usize) -> Vec<Vec<u8>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        v.sort();
        v.into_iter().take(limit).map(|p| std::fs::read(p).unwrap()).collect()
    }

    #[test]
    fn dimensions_from_the_frame_header() {
        // hand-built: SOI, APP0 of length 4 (2 payload bytes), SOF0 with height 0x01E0 = 480 and
        // width 0x0280 = 640
        let b = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0xE0, 0x02, 0x80, 0x03,
        ];
        assert_eq!(jpeg_dimensions(&b), Some((640, 480)));
        // DHT (C4) is not a frame header: skipped
        let b = [0xFF, 0xD8, 0xFF, 0xC4, 0x00, 0x03, 0x00, 0xFF, 0xC2, 0x00, 0x11, 0x08, 0x00, 0x20, 0x00, 0x30, 0x03];
        assert_eq!(jpeg_dimensions(&b), Some((48, 32)));
        assert_eq!(jpeg_dimensions(b"\x89PNG\r\n\x1a\n"), None);
        assert_eq!(jpeg_dimensions(&[0xFF, 0xD8, 0xFF, 0xDA, 0x00]), None);
        assert_eq!(jpeg_dimensions(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00]), None);
    }

    #[test]
    fn header_reaches_the_first_scan_and_grayscale_jpegs_decode_to_rgb() {
        let Some(coco) = shared("coco128/images") else { return };
        let photo = jpgs(&coco.join("val2017"), 1).remove(0);
        let h = jpeg_header(&photo).unwrap();
        assert_eq!((Some((h.width, h.height)), h.components), (jpeg_dimensions(&photo), 3));
        assert!(h.scan_data > 100 && h.scan_data < photo.len() / 10, "{h:?}");
        assert_eq!(jpeg_header(&photo[..h.scan_data - 1]), None, "ends inside the SOS segment");
        // a grayscale JPEG (ImageNet holds some): one component, decoded to equal R, G and B
        let luma = crate::image::decode_image(&photo, 1).unwrap();
        let mut gray = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut gray, 90)
            .encode(&luma.data, luma.width, luma.height, image::ExtendedColorType::L8)
            .unwrap();
        assert_eq!(jpeg_header(&gray).unwrap().components, 1);
        let rgb = crate::image::decode_image(&gray, 3).unwrap();
        let reference = decode_image_with_image_crate(&gray, 1).unwrap();
        assert_eq!((rgb.width, rgb.height, rgb.channels), (h.width, h.height, 3));
        for (px, r) in rgb.data.chunks_exact(3).zip(&reference.data) {
            assert!(px[0] == px[1] && px[1] == px[2] && (px[0] as i32 - *r as i32).abs() <= 6);
        }
    }

    #[test]
    fn a_header_claiming_a_huge_image_is_refused_before_allocating() {
        // SOF0 claiming 60000 x 60000 = 3.6e9 pixels (> 89,478,485) and nothing after it
        let b = [0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xEA, 0x60, 0xEA, 0x60, 0x03];
        assert_eq!(jpeg_dimensions(&b), Some((60000, 60000)));
        let e = decode_jpeg_window(&b, 3, None, Vec::new()).unwrap_err().to_string();
        assert!(e.contains("60000x60000") && e.contains("limit"), "{e}");
    }

    #[test]
    fn errors_are_reported_not_printed() {
        let e = decode_jpeg_window(b"\xff\xd8\xff\xe0 not a jpeg at all", 3, None, Vec::new()).unwrap_err().to_string();
        assert!(e.contains("JPEG"), "{e}");
        assert!(decode_jpeg_window(b"", 3, None, Vec::new()).is_err());
    }

    #[test]
    fn libjpeg_matches_image_crate_on_real_jpegs() {
        // Every COCO128 photo (mostly 640x480, 4:2:0) and 300 CIFAR-10 images (32x32), RGB and
        // luma: libjpeg-turbo and the image crate (zune-jpeg) differ by <= 6 levels everywhere and
        // by <= 1 level on >= 99.5% of the values (integer IDCT / upsampling rounding; measured:
        // at most 5 levels, 99.8% within 1).
        let (Some(coco), Some(cifar)) = (shared("coco128/images"), shared("cifar10-jpg/train")) else { return };
        let mut files = jpgs(&coco.join("train2017"), 128);
        files.extend(jpgs(&coco.join("val2017"), 128));
        for class in ["airplane", "cat", "truck"] {
            files.extend(jpgs(&cifar.join(class), 100));
        }
        for channels in [3u32, 1] {
            let (mut within1, mut total, mut worst) = (0usize, 0usize, 0i32);
            for f in files.iter().step_by(if channels == 1 { 4 } else { 1 }) {
                let ours = decode_jpeg_window(f, channels, None, Vec::new()).unwrap();
                let theirs = decode_image_with_image_crate(f, channels).unwrap();
                assert_eq!((ours.img.width, ours.img.height), (theirs.width, theirs.height));
                assert_eq!(ours.origin, (0, 0));
                for (a, b) in ours.img.data.iter().zip(&theirs.data) {
                    let d = (*a as i32 - *b as i32).abs();
                    worst = worst.max(d);
                    within1 += (d <= 1) as usize;
                }
                total += theirs.data.len();
            }
            assert!(worst <= 6, "channels {channels}: max difference {worst}");
            assert!(within1 as f64 >= 0.995 * total as f64, "channels {channels}: {within1} of {total} within 1");
        }
    }

    #[test]
    fn window_equals_full_decode_on_coco() {
        // Windows at odd offsets (not on the 16-px iMCU grid) of real photos decode to exactly the
        // full decode's pixels, in RGB and luma; the returned window contains the request.
        let Some(coco) = shared("coco128/images") else { return };
        let files = jpgs(&coco.join("val2017"), 40);
        let mut buf = Vec::new();
        for (i, f) in files.iter().enumerate() {
            for channels in [3u32, 1] {
                let full = decode_jpeg_window(f, channels, None, Vec::new()).unwrap();
                let (w, h) = full.full;
                let k = i as u32;
                let win = CropBox {
                    left: (37 * k + 5) % (w / 2),
                    top: (53 * k + 3) % (h / 2),
                    width: w / 3 + k,
                    height: h / 3 + 2 * k,
                };
                let got = decode_jpeg_window(f, channels, Some(win), std::mem::take(&mut buf)).unwrap();
                let (ox, oy) = got.origin;
                assert!(
                    ox <= win.left
                        && ox + got.img.width >= win.left + win.width
                        && oy == win.top
                        && got.img.height == win.height
                );
                let c = channels as usize;
                for y in 0..got.img.height as usize {
                    let a = &got.img.data[y * got.img.width as usize * c..(y + 1) * got.img.width as usize * c];
                    let row = (oy as usize + y) * w as usize + ox as usize;
                    let b = &full.img.data[row * c..(row + got.img.width as usize) * c];
                    assert!(
                        a == b,
                        "file {i} channels {channels}: row {y} of window {win:?} differs from the full decode"
                    );
                }
                buf = got.img.data;
            }
        }
    }
}
