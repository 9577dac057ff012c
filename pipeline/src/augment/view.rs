//! The fast view pipeline and its per-thread scratch ([`AugmentWorkspace`]): crop + antialiased
//! resize on u8 in one `fast_image_resize` call, then planar f32, one pass per op over
//! contiguous planes (colour ops, blur, solarize + normalise) straight into the caller's CHW
//! buffer.
//!
//! Every loop runs over contiguous slices so the compiler vectorises it; the whole pipeline is
//! compiled twice (baseline x86-64, and AVX2 + FMA chosen at run time). Arithmetic follows the
//! reference path (torchvision's formulas, same operation order; only the blur uses fused
//! multiply-adds on FMA CPUs), so the two paths agree to float rounding (test
//! `fast_path_matches_reference_views`).
use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::augment::blur::{blur_plane, gaussian_kernel};
use crate::augment::colour::{op_brightness, op_contrast, op_grayscale, op_hue, op_saturation};
use crate::augment::config::{blur_kernel_size, AugmentConfig};
use crate::augment::params::ViewParams;
use crate::image::Decoded;
use crate::{PipelineError, Result};

/// Per-thread scratch of decoding and augmenting (decoded pixels, resizer, 8-bit resize output,
/// float planes, blur buffers), reused across samples so a warm worker allocates nothing per
/// sample.
pub struct AugmentWorkspace {
    pub(super) resizer: Resizer,
    pub(super) rgb: Vec<u8>,
    pub(super) planes: Vec<f32>,
    pub(super) tmp: Vec<f32>,
    pub(super) row: Vec<f32>,
    pub(super) idx: Vec<usize>,
    pub(super) kernel: Vec<f32>,
    pub(super) decoded: Vec<u8>,
}

impl Default for AugmentWorkspace {
    fn default() -> Self {
        AugmentWorkspace {
            resizer: Resizer::new(),
            rgb: Vec::new(),
            planes: Vec::new(),
            tmp: Vec::new(),
            row: Vec::new(),
            idx: Vec::new(),
            kernel: Vec::new(),
            decoded: Vec::new(),
        }
    }
}

impl AugmentWorkspace {
    /// Empty workspace; buffers grow to the view size on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Crop `crop = (left, top, width, height)` (full-image pixels, may be fractional) of the image
/// whose window `img` starts at `origin`, and resize it to `out`×`out` (antialiased bilinear) into
/// `dst` (HWC u8). An integral crop already of the output size is copied.
pub(super) fn crop_resize_into(
    resizer: &mut Resizer,
    img: &Decoded,
    origin: (u32, u32),
    crop: (f64, f64, f64, f64),
    out: u32,
    dst: &mut Vec<u8>,
) -> Result<()> {
    let c = img.channels as usize;
    let (l, t, w, h) = (crop.0 - origin.0 as f64, crop.1 - origin.1 as f64, crop.2, crop.3);
    if l < 0.0 || t < 0.0 || l + w > img.width as f64 || t + h > img.height as f64 {
        return Err(PipelineError::ImageData(format!(
            "crop {crop:?} outside the decoded window at {origin:?} of {}x{}",
            img.width, img.height
        )));
    }
    let n = out as usize * out as usize * c;
    dst.resize(n, 0);
    let integral = l.fract() == 0.0 && t.fract() == 0.0;
    if integral && w == out as f64 && h == out as f64 {
        let (l, t, o) = (l as usize, t as usize, out as usize);
        for (y, d) in dst.chunks_exact_mut(o * c).enumerate() {
            let row = ((t + y) * img.width as usize + l) * c;
            d.copy_from_slice(&img.data[row..row + o * c]);
        }
        return Ok(());
    }
    let pt = if c == 1 { PixelType::U8 } else { PixelType::U8x3 };
    let src = ImageRef::new(img.width, img.height, &img.data, pt)
        .map_err(|e| PipelineError::ImageData(format!("resize source: {e}")))?;
    let mut d = Image::from_slice_u8(out, out, &mut dst[..n], pt)
        .map_err(|e| PipelineError::ImageData(format!("resize target: {e}")))?;
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(l, t, w, h);
    resizer.resize(&src, &mut d, &opts).map_err(|e| PipelineError::ImageData(format!("resize: {e}")))
}

/// `v / 255` for every 8-bit value.
static U8_TO_UNIT: [f32; 256] = {
    let mut t = [0f32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as f32 / 255.0;
        i += 1;
    }
    t
};

/// Everything a view needs after the resize.
pub(super) struct ViewJob<'a> {
    pub(super) rgb: &'a [u8],
    pub(super) s: usize,
    pub(super) c: usize,
    pub(super) params: &'a ViewParams,
    pub(super) ksize: usize,
    pub(super) mean: &'a [f32],
    pub(super) std: &'a [f32],
}

/// The whole view after the resize: u8 HWC (flip folded in) → planes → jitter ops → grayscale →
/// blur → solarize + normalise into `out` (CHW).
#[inline(always)]
fn run_view<const FMA: bool>(
    job: &ViewJob,
    planes: &mut Vec<f32>,
    tmp: &mut Vec<f32>,
    row: &mut Vec<f32>,
    idx: &mut Vec<usize>,
    kernel: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (s, c, p) = (job.s, job.c, job.params);
    let n = s * s;
    planes.resize(c * n, 0.0);
    // u8 → [0,1] planes (v / 255 from a table: same values, no division), mirrored when
    // flipped; one pass over the interleaved rows
    let lut = &U8_TO_UNIT;
    if c == 3 {
        let (r, rest) = planes.split_at_mut(n);
        let (g, b) = rest.split_at_mut(n);
        for y in 0..s {
            let src = &job.rgb[y * s * 3..(y + 1) * s * 3];
            let (r, g, b) = (&mut r[y * s..(y + 1) * s], &mut g[y * s..(y + 1) * s], &mut b[y * s..(y + 1) * s]);
            for (x, px) in src.chunks_exact(3).enumerate() {
                let xx = if p.flip { s - 1 - x } else { x };
                r[xx] = lut[px[0] as usize];
                g[xx] = lut[px[1] as usize];
                b[xx] = lut[px[2] as usize];
            }
        }
    } else {
        for y in 0..s {
            let src = &job.rgb[y * s..(y + 1) * s];
            let dst = &mut planes[y * s..(y + 1) * s];
            for (x, v) in src.iter().enumerate() {
                dst[if p.flip { s - 1 - x } else { x }] = lut[*v as usize];
            }
        }
    }
    let px = &mut planes[..c * n];
    if let Some(j) = p.jitter {
        for op in j.order {
            match op {
                0 => op_brightness(px, j.brightness),
                1 => op_contrast(px, n, c, j.contrast),
                2 if c == 3 => op_saturation(px, n, j.saturation),
                3 if c == 3 && j.hue != 0.0 => op_hue(px, n, j.hue),
                _ => {}
            }
        }
    }
    if p.grayscale && c == 3 {
        op_grayscale(px, n);
    }
    if let Some(sigma) = p.blur_sigma {
        let full = gaussian_kernel(job.ksize, sigma);
        let mut lo = 0;
        while lo < full.len() / 2 && full[lo] < 1e-9 {
            lo += 1;
        }
        kernel.clear();
        kernel.extend_from_slice(&full[lo..full.len() - lo]);
        tmp.resize(n, 0.0);
        let gray = p.grayscale && c == 3;
        for k in 0..c {
            if gray && k > 0 {
                // three equal planes: blur once, copy
                let (a, b) = px.split_at_mut(k * n);
                b[..n].copy_from_slice(&a[..n]);
                continue;
            }
            blur_plane::<FMA>(&mut px[k * n..(k + 1) * n], s, kernel, tmp, row, idx);
        }
    }
    for k in 0..c {
        let (m, sd) = (job.mean[k], job.std[k]);
        let src = &px[k * n..(k + 1) * n];
        let dst = &mut out[k * n..(k + 1) * n];
        if p.solarize {
            for i in 0..n {
                let v = src[i];
                let v = if v >= 0.5 { 1.0 - v } else { v };
                dst[i] = (v - m) / sd;
            }
        } else {
            for i in 0..n {
                dst[i] = (src[i] - m) / sd;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_view_avx2(
    job: &ViewJob,
    planes: &mut Vec<f32>,
    tmp: &mut Vec<f32>,
    row: &mut Vec<f32>,
    idx: &mut Vec<usize>,
    kernel: &mut Vec<f32>,
    out: &mut [f32],
) {
    run_view::<true>(job, planes, tmp, row, idx, kernel, out)
}

pub(super) fn run_view_dispatch(job: &ViewJob, ws: &mut AugmentWorkspace, out: &mut [f32]) {
    let AugmentWorkspace { planes, tmp, row, idx, kernel, .. } = ws;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above); the function has no
            // other precondition.
            unsafe { run_view_avx2(job, planes, tmp, row, idx, kernel, out) };
            return;
        }
    }
    run_view::<false>(job, planes, tmp, row, idx, kernel, out)
}

/// One view of `img` (a window of the full image starting at `origin`) into `out`.
pub(super) fn view_into(
    cfg: &AugmentConfig,
    img: &Decoded,
    origin: (u32, u32),
    p: &ViewParams,
    ws: &mut AugmentWorkspace,
    out: &mut [f32],
) -> Result<()> {
    let s = cfg.image_size;
    let cb = p.crop;
    let mut rgb = std::mem::take(&mut ws.rgb);
    let res = crop_resize_into(
        &mut ws.resizer,
        img,
        origin,
        (cb.left as f64, cb.top as f64, cb.width as f64, cb.height as f64),
        s,
        &mut rgb,
    );
    if res.is_ok() {
        let job = ViewJob {
            rgb: &rgb,
            s: s as usize,
            c: img.channels as usize,
            params: p,
            ksize: blur_kernel_size(s),
            mean: &cfg.mean,
            std: &cfg.std,
        };
        run_view_dispatch(&job, ws, out);
    }
    ws.rgb = rgb;
    res
}

pub(super) fn check_channels(cfg: &AugmentConfig, img: &Decoded) -> Result<()> {
    if img.channels != cfg.channels || img.data.len() != (img.width * img.height * img.channels) as usize {
        return Err(PipelineError::ImageData(format!(
            "decoded image has {} channels / {} bytes, expected {} channels",
            img.channels,
            img.data.len(),
            cfg.channels
        )));
    }
    Ok(())
}

pub(super) fn check_out(cfg: &AugmentConfig, out: &[f32]) -> Result<()> {
    let n = (cfg.channels * cfg.image_size * cfg.image_size) as usize;
    if out.len() != n {
        return Err(PipelineError::ImageData(format!("output buffer holds {} values, a view needs {n}", out.len())));
    }
    Ok(())
}
