//! BYOL twin-view augmentations and the evaluation transform.
//!
//! Per view (BYOL / torchvision order): RandomResizedCrop (bilinear, antialiased, via
//! `fast_image_resize` in one crop+resize call) → horizontal flip → colour jitter (with
//! probability `jitter_p`; brightness, contrast, saturation, hue applied in a random order like
//! torchvision's `ColorJitter`) → grayscale (ITU-R 601 luma) → Gaussian blur → solarize
//! (threshold 0.5 on [0,1]) → normalise `(x - mean[c]) / std[c]`. Output is CHW `f32`,
//! `channels * S * S` values.
//!
//! Random draws happen in a fixed order per view ([`sample_view_params`]), view A before view B,
//! from the RNG handed to [`TwinViewTransform::apply`]; the loader seeds that RNG per sample from
//! (seed, epoch, rank, position), so results do not depend on thread scheduling.
//!
//! For 1-channel images saturation, hue and grayscale are no-ops (their draws still happen).
//!
//! # Fast path
//! The loader calls [`TwinViewTransform::decode_apply_into`]: the two views' parameters are drawn
//! from the JPEG frame header's size alone, libjpeg-turbo decodes only the window both crops read
//! ([`crate::jpeg`]), each crop is resized once on u8 (crop before resize), and every later op
//! runs on planar f32 (one contiguous pass per op, vectorised; AVX2 + FMA chosen at run time;
//! separable blur with a precomputed, blocked kernel) writing the normalised CHW view straight
//! into the caller's buffer, with the scratch of a per-thread [`AugmentWorkspace`] (no per-sample
//! allocation). The straightforward per-op implementation it replaced is kept (`reference`, in
//! tests) and the fast path is tested against it.
use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::{PipelineError, Result};

/// Augmentation parameters of one view (fields as in BYOL's table 6).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ViewAugment {
    /// RandomResizedCrop area fraction range, e.g. (0.08, 1.0).
    pub crop_scale: (f32, f32),
    /// RandomResizedCrop aspect-ratio (w/h) range, e.g. (3/4, 4/3).
    pub crop_ratio: (f32, f32),
    /// Horizontal flip probability (0.5).
    pub flip_p: f32,
    /// Probability of applying colour jitter (0.8).
    pub jitter_p: f32,
    /// Brightness factor drawn from [max(0,1-b), 1+b] (0.4).
    pub brightness: f32,
    /// Contrast factor drawn from [max(0,1-c), 1+c] (0.4).
    pub contrast: f32,
    /// Saturation factor drawn from [max(0,1-s), 1+s] (0.2).
    pub saturation: f32,
    /// Hue shift drawn from [-h, h] in turns, h <= 0.5 (0.1).
    pub hue: f32,
    /// Grayscale probability (0.2).
    pub grayscale_p: f32,
    /// Gaussian blur probability (1.0 view A, 0.1 view B in BYOL).
    pub blur_p: f32,
    /// Blur sigma range in pixels of the output image (0.1, 2.0).
    pub blur_sigma: (f32, f32),
    /// Solarize probability (0.0 view A, 0.2 view B in BYOL).
    pub solarize_p: f32,
}

impl ViewAugment {
    /// BYOL's view with the given blur and solarize probabilities.
    pub fn byol(blur_p: f32, solarize_p: f32) -> Self {
        ViewAugment {
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p,
            blur_sigma: (0.1, 2.0),
            solarize_p,
        }
    }

    fn validate(&self, name: &str) -> Result<()> {
        let opt = |f: &str| format!("augment.{name}.{f}");
        let prob = |v: f32, f: &str| -> Result<()> {
            if !(0.0..=1.0).contains(&v) {
                return Err(PipelineError::config(&opt(f), format!("{v} is not a probability in [0, 1]")));
            }
            Ok(())
        };
        prob(self.flip_p, "flip_p")?;
        prob(self.jitter_p, "jitter_p")?;
        prob(self.grayscale_p, "grayscale_p")?;
        prob(self.blur_p, "blur_p")?;
        prob(self.solarize_p, "solarize_p")?;
        let (a, b) = self.crop_scale;
        if !(a > 0.0 && a <= b && b <= 1.0) {
            return Err(PipelineError::config(
                &opt("crop_scale"),
                format!("({a}, {b}) must satisfy 0 < min <= max <= 1"),
            ));
        }
        let (a, b) = self.crop_ratio;
        if !(a > 0.0 && a <= b && b.is_finite()) {
            return Err(PipelineError::config(&opt("crop_ratio"), format!("({a}, {b}) must satisfy 0 < min <= max")));
        }
        for (v, f) in [(self.brightness, "brightness"), (self.contrast, "contrast"), (self.saturation, "saturation")] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(PipelineError::config(&opt(f), format!("{v} must be >= 0")));
            }
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(PipelineError::config(&opt("hue"), format!("{} must be in [0, 0.5]", self.hue)));
        }
        let (a, b) = self.blur_sigma;
        if !(a > 0.0 && a <= b && b.is_finite()) {
            return Err(PipelineError::config(&opt("blur_sigma"), format!("({a}, {b}) must satisfy 0 < min <= max")));
        }
        Ok(())
    }
}

/// Full augmentation / preprocessing configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Output side S in pixels (views and eval crops are S×S).
    pub image_size: u32,
    /// 1 (grayscale) or 3 (RGB); decoded images are converted to this.
    pub channels: u32,
    /// Per-channel mean on the [0,1] scale (len = channels).
    pub mean: Vec<f32>,
    /// Per-channel std on the [0,1] scale (len = channels, > 0).
    pub std: Vec<f32>,
    /// First (online) view.
    pub view_a: ViewAugment,
    /// Second (target) view.
    pub view_b: ViewAugment,
    /// Eval: shorter side resized to this, then a centre crop of `image_size` (>= image_size).
    pub eval_resize: u32,
}

impl AugmentConfig {
    /// BYOL's ImageNet preset: 224 px, ImageNet mean/std, blur 1.0/0.1, solarize 0.0/0.2,
    /// eval resize 256 → centre crop 224. Blur kernel 23 px (see [`blur_kernel_size`]).
    pub fn byol_224() -> Self {
        AugmentConfig {
            image_size: 224,
            channels: 3,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            view_a: ViewAugment::byol(1.0, 0.0),
            view_b: ViewAugment::byol(0.1, 0.2),
            eval_resize: 256,
        }
    }

    /// Small-image preset (28–32 px, CIFAR / Fashion-MNIST), following solo-learn's CIFAR BYOL
    /// recipe: Gaussian blur OFF in both views (`blur_p = 0`; at 32 px a 3-px kernel mostly destroys
    /// the image), solarize 0.0 / 0.2, crop scale (0.08, 1). If blur is switched on, the kernel is
    /// scaled to the image ([`blur_kernel_size`]: 3 px at 32 px). Mean/std: CIFAR-10 for 3 channels,
    /// Fashion-MNIST (0.2860 / 0.3530) for 1 channel. `eval_resize == image_size` (no crop).
    pub fn byol_small(image_size: u32, channels: u32) -> Self {
        let (mean, std) = if channels == 1 {
            (vec![0.2860], vec![0.3530])
        } else {
            (vec![0.4914, 0.4822, 0.4465], vec![0.2470, 0.2435, 0.2616])
        };
        AugmentConfig {
            image_size,
            channels,
            mean,
            std,
            view_a: ViewAugment::byol(0.0, 0.0),
            view_b: ViewAugment::byol(0.0, 0.2),
            eval_resize: image_size,
        }
    }

    /// Check every field. Errors: [`PipelineError::Config`] naming the option (`augment.…`).
    pub fn validate(&self) -> Result<()> {
        if !(1..=4096).contains(&self.image_size) {
            return Err(PipelineError::config(
                "augment.image_size",
                format!("{} must be in 1..=4096 pixels", self.image_size),
            ));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(PipelineError::config("augment.channels", format!("{} must be 1 or 3", self.channels)));
        }
        if self.mean.len() != self.channels as usize || self.std.len() != self.channels as usize {
            return Err(PipelineError::config(
                "augment.mean",
                format!("mean and std need {} values (one per channel)", self.channels),
            ));
        }
        if self.std.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(PipelineError::config("augment.std", "every std must be > 0"));
        }
        if self.eval_resize < self.image_size {
            return Err(PipelineError::config(
                "augment.eval_resize",
                format!("{} must be >= image_size {}", self.eval_resize, self.image_size),
            ));
        }
        self.view_a.validate("view_a")?;
        self.view_b.validate("view_b")
    }
}

/// Blur kernel side for an output of `image_size` px: odd, ~10% of the side (BYOL: 23 at 224),
/// i.e. `2 * floor(0.05 * S) + 1`, at least 3.
pub fn blur_kernel_size(image_size: u32) -> usize {
    (2 * ((image_size as f32 * 0.05).floor() as usize) + 1).max(3)
}

/// A crop rectangle in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 tries of (area ~ U(scale)·w·h,
/// log-aspect ~ U(log ratio)), widths/heights rounded; the first that fits is placed uniformly;
/// otherwise a centre crop of the whole image clamped to the ratio range.
/// `w`, `h` in pixels (>= 1); the result always lies inside the image.
pub fn random_resized_crop_box<R: Rng + ?Sized>(
    w: u32,
    h: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut R,
) -> CropBox {
    let area = w as f64 * h as f64;
    let (lr0, lr1) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0 as f64, scale.1 as f64);
        let ar = uniform(rng, lr0, lr1).exp();
        let cw = (target * ar).sqrt().round() as i64;
        let ch = (target / ar).sqrt().round() as i64;
        if cw > 0 && cw <= w as i64 && ch > 0 && ch <= h as i64 {
            let top = rng.gen_range(0..=(h as i64 - ch)) as u32;
            let left = rng.gen_range(0..=(w as i64 - cw)) as u32;
            return CropBox { left, top, width: cw as u32, height: ch as u32 };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 as f64 {
        (w, ((w as f64 / ratio.0 as f64).round() as u32).clamp(1, h))
    } else if in_ratio > ratio.1 as f64 {
        (((h as f64 * ratio.1 as f64).round() as u32).clamp(1, w), h)
    } else {
        (w, h)
    };
    CropBox { left: (w - cw) / 2, top: (h - ch) / 2, width: cw, height: ch }
}

/// Colour-jitter draws of one view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterParams {
    /// Order of the ops: 0 brightness, 1 contrast, 2 saturation, 3 hue.
    pub order: [usize; 4],
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

/// All random decisions of one view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewParams {
    pub crop: CropBox,
    pub flip: bool,
    pub jitter: Option<JitterParams>,
    pub grayscale: bool,
    pub blur_sigma: Option<f32>,
    pub solarize: bool,
}

fn bernoulli<R: Rng + ?Sized>(rng: &mut R, p: f32) -> bool {
    rng.gen::<f32>() < p
}

/// Draw a view's parameters for a `w`×`h` source, in this fixed order: crop, flip, jitter
/// (apply?, then permutation and the four factors), grayscale, blur (apply?, sigma), solarize.
pub fn sample_view_params<R: Rng + ?Sized>(v: &ViewAugment, w: u32, h: u32, rng: &mut R) -> ViewParams {
    let crop = random_resized_crop_box(w, h, v.crop_scale, v.crop_ratio, rng);
    let flip = bernoulli(rng, v.flip_p);
    let jitter = if bernoulli(rng, v.jitter_p) {
        let mut order = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            let j = rng.gen_range(0..=i);
            order.swap(i, j);
        }
        let f = |rng: &mut R, s: f32| uniform(rng, (1.0 - s as f64).max(0.0), 1.0 + s as f64) as f32;
        let brightness = f(rng, v.brightness);
        let contrast = f(rng, v.contrast);
        let saturation = f(rng, v.saturation);
        let hue = uniform(rng, -v.hue as f64, v.hue as f64) as f32;
        Some(JitterParams { order, brightness, contrast, saturation, hue })
    } else {
        None
    };
    let grayscale = bernoulli(rng, v.grayscale_p);
    let blur_sigma = if bernoulli(rng, v.blur_p) {
        Some(uniform(rng, v.blur_sigma.0 as f64, v.blur_sigma.1 as f64) as f32)
    } else {
        None
    };
    let solarize = bernoulli(rng, v.solarize_p);
    ViewParams { crop, flip, jitter, grayscale, blur_sigma, solarize }
}

/// A decoded 8-bit image, HWC interleaved: `data.len() == width * height * channels`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    /// 1 (L8) or 3 (RGB8).
    pub channels: u32,
    pub data: Vec<u8>,
}

/// Decode JPEG/PNG/WebP bytes (format sniffed from content) to `channels` (1 → luma, 3 → RGB).
/// JPEGs go through libjpeg-turbo ([`crate::jpeg`]; within a few 8-bit levels of the `image`
/// crate, see there); other formats, and JPEGs libjpeg rejects or flags as corrupt (e.g. CMYK,
/// truncated data), through [`decode_image_with_image_crate`]. Errors: [`PipelineError::ImageData`]
/// for empty input, undecodable data or a zero-sized image.
pub fn decode_image(bytes: &[u8], channels: u32) -> Result<Decoded> {
    decode_image_into(bytes, channels, Vec::new())
}

/// [`decode_image`] reusing `buf`'s allocation for the pixels when libjpeg decodes the image.
pub fn decode_image_into(bytes: &[u8], channels: u32, buf: Vec<u8>) -> Result<Decoded> {
    if crate::jpeg::is_jpeg(bytes) {
        if let Ok(w) = crate::jpeg::decode_jpeg_window(bytes, channels, None, buf) {
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

#[inline]
fn luma601(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// ITU-R 601 luma of an 8-bit RGB pixel, rounded to 8 bits.
#[inline]
pub(crate) fn luma601_u8(r: u8, g: u8, b: u8) -> u8 {
    luma601(r as f32, g as f32, b as f32).round().clamp(0.0, 255.0) as u8
}

/// Source rectangle (clamped to the `full_w`×`full_h` image) whose pixels the antialiased
/// bilinear resampling of `crop` to `out`×`out` reads, plus one pixel of safety on each side:
/// a decoded window that contains it gives the same view as the full image (see
/// [`TwinViewTransform::apply_params_into`]). Filter radius = max(crop / out, 1) source pixels
/// (`fast_image_resize`'s convolution with its bilinear filter of support 1).
pub fn resample_support(crop: CropBox, out: u32, full_w: u32, full_h: u32) -> CropBox {
    let axis = |c0: u32, cs: u32, full: u32| -> (u32, u32) {
        if cs == out {
            return (c0, c0 + cs); // integral crop of the output size: copied, no resampling
        }
        let scale = cs as f64 / out as f64;
        let radius = scale.max(1.0);
        let lo = (c0 as f64 + 0.5 * scale - radius).floor() - 1.0;
        let hi = (c0 as f64 + cs as f64 - 0.5 * scale + radius).ceil() + 1.0;
        (lo.max(0.0) as u32, (hi.min(full as f64) as u32).max(c0 + cs))
    };
    let (x0, x1) = axis(crop.left, crop.width, full_w);
    let (y0, y1) = axis(crop.top, crop.height, full_h);
    CropBox { left: x0, top: y0, width: x1 - x0, height: y1 - y0 }
}

/// Smallest box holding both boxes.
pub fn union_box(a: CropBox, b: CropBox) -> CropBox {
    let (x0, y0) = (a.left.min(b.left), a.top.min(b.top));
    let (x1, y1) = ((a.left + a.width).max(b.left + b.width), (a.top + a.height).max(b.top + b.height));
    CropBox { left: x0, top: y0, width: x1 - x0, height: y1 - y0 }
}

/// Per-thread scratch of decoding and augmenting (decoded pixels, resizer, 8-bit resize output,
/// float planes, blur buffers), reused across samples so a warm worker allocates nothing per
/// sample.
pub struct AugmentWorkspace {
    resizer: Resizer,
    rgb: Vec<u8>,
    planes: Vec<f32>,
    tmp: Vec<f32>,
    row: Vec<f32>,
    idx: Vec<usize>,
    kernel: Vec<f32>,
    decoded: Vec<u8>,
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
fn crop_resize_into(
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

// ---- the fast view pipeline: planar f32, one pass per op over contiguous planes ------------
//
// Every loop below runs over contiguous slices so the compiler vectorises it; the whole pipeline
// is compiled twice (baseline x86-64, and AVX2 + FMA chosen at run time). Arithmetic follows the
// reference path (torchvision's formulas, same operation order; only the blur uses fused
// multiply-adds on FMA CPUs), so the two paths agree to float rounding (test
// `fast_path_matches_reference_views`).

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
struct ViewJob<'a> {
    rgb: &'a [u8],
    s: usize,
    c: usize,
    params: &'a ViewParams,
    ksize: usize,
    mean: &'a [f32],
    std: &'a [f32],
}

#[inline(always)]
fn luma_planes(r: &[f32], g: &[f32], b: &[f32], i: usize) -> f32 {
    luma601(r[i], g[i], b[i])
}

#[inline(always)]
fn clamp01(v: f32) -> f32 {
    v.clamp(0.0, 1.0)
}

#[inline(always)]
fn op_brightness(px: &mut [f32], f: f32) {
    px.iter_mut().for_each(|v| *v = clamp01(*v * f));
}

#[inline(always)]
fn op_contrast(px: &mut [f32], n: usize, c: usize, f: f32) {
    // mean luma of the current image, summed in f64 (8 partial sums)
    let mut acc = [0f64; 8];
    if c == 3 {
        let (r, rest) = px.split_at(n);
        let (g, b) = rest.split_at(n);
        let (r8, g8, b8) = (r.chunks_exact(8), g.chunks_exact(8), b.chunks_exact(8));
        let (rr, gr, br) = (r8.remainder(), g8.remainder(), b8.remainder());
        for ((r, g), b) in r8.zip(g8).zip(b8) {
            for k in 0..8 {
                acc[k] += luma601(r[k], g[k], b[k]) as f64;
            }
        }
        for k in 0..rr.len() {
            acc[k] += luma601(rr[k], gr[k], br[k]) as f64;
        }
    } else {
        let p8 = px[..n].chunks_exact(8);
        let pr = p8.remainder();
        for p in p8 {
            for k in 0..8 {
                acc[k] += p[k] as f64;
            }
        }
        for (k, v) in pr.iter().enumerate() {
            acc[k] += *v as f64;
        }
    }
    let mean = acc.iter().sum::<f64>() as f32 / n.max(1) as f32;
    let m = (1.0 - f) * mean;
    px.iter_mut().for_each(|v| *v = clamp01(f * *v + m));
}

#[inline(always)]
fn op_saturation(px: &mut [f32], n: usize, f: f32) {
    let (r, rest) = px.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    let g1 = 1.0 - f;
    for i in 0..n {
        let y = luma_planes(r, g, b, i);
        r[i] = clamp01(f * r[i] + g1 * y);
        g[i] = clamp01(f * g[i] + g1 * y);
        b[i] = clamp01(f * b[i] + g1 * y);
    }
}

/// torchvision's `_rgb2hsv` → hue shift → `_hsv2rgb`, branch-free (selects) so it vectorises.
#[inline(always)]
fn op_hue(px: &mut [f32], n: usize, shift: f32) {
    let (r, rest) = px.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let (rv, gv, bv) = (r[i], g[i], b[i]);
        let maxc = rv.max(gv).max(bv);
        let minc = rv.min(gv).min(bv);
        let eqc = maxc == minc;
        let cr = maxc - minc;
        let s = cr / if eqc { 1.0 } else { maxc };
        let d = if eqc { 1.0 } else { cr };
        let (rc, gc, bc) = ((maxc - rv) / d, (maxc - gv) / d, (maxc - bv) / d);
        let h = if maxc == rv {
            bc - gc
        } else if maxc == gv {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let h = h / 6.0 + 1.0;
        let h = if eqc { 0.0 } else { h - h.floor() };
        let h = h + shift;
        let h = h - h.floor();
        // hsv → rgb
        let h6 = h * 6.0;
        let fl = h6.floor();
        let f = h6 - fl;
        let sector = if fl >= 6.0 { fl - 6.0 } else { fl };
        let v = maxc;
        let p = clamp01(v * (1.0 - s));
        let q = clamp01(v * (1.0 - s * f));
        let t = clamp01(v * (1.0 - s * (1.0 - f)));
        let (nr, ng, nb) = if sector == 0.0 {
            (v, t, p)
        } else if sector == 1.0 {
            (q, v, p)
        } else if sector == 2.0 {
            (p, v, t)
        } else if sector == 3.0 {
            (p, q, v)
        } else if sector == 4.0 {
            (t, p, v)
        } else {
            (v, p, q)
        };
        r[i] = nr;
        g[i] = ng;
        b[i] = nb;
    }
}

#[inline(always)]
fn op_grayscale(px: &mut [f32], n: usize) {
    let (r, rest) = px.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let y = luma_planes(r, g, b, i);
        r[i] = y;
        g[i] = y;
        b[i] = y;
    }
}

/// `dst[x0 .. x0 + B] = Σ_i kernel[i] · src(i)[x0 .. x0 + B]`, `B` outputs kept in registers.
#[inline(always)]
fn taps_block<'a, const B: usize, const FMA: bool>(
    dst: &mut [f32],
    x0: usize,
    kernel: &[f32],
    src: &impl Fn(usize) -> &'a [f32],
) {
    let mut acc = [0f32; B];
    for (i, w) in kernel.iter().enumerate() {
        let v = &src(i)[x0..x0 + B];
        for j in 0..B {
            acc[j] = if FMA { w.mul_add(v[j], acc[j]) } else { acc[j] + w * v[j] };
        }
    }
    dst[x0..x0 + B].copy_from_slice(&acc);
}

/// `dst[x] = Σ_i kernel[i] · src(i)[x]` for `x` in `0..dst.len()`, taps in ascending order (the
/// reference's summation order). 64 outputs at a time (8 AVX registers: enough independent
/// chains to hide the add latency), then 8, then one; with `FMA` (CPUs with FMA only) each tap
/// is one fused multiply-add (rounding differs by ~1e-7).
#[inline(always)]
fn taps_into<'a, const FMA: bool>(dst: &mut [f32], kernel: &[f32], src: impl Fn(usize) -> &'a [f32]) {
    let s = dst.len();
    let mut x = 0;
    while x + 64 <= s {
        taps_block::<64, FMA>(dst, x, kernel, &src);
        x += 64;
    }
    while x + 8 <= s {
        taps_block::<8, FMA>(dst, x, kernel, &src);
        x += 8;
    }
    while x < s {
        taps_block::<1, FMA>(dst, x, kernel, &src);
        x += 1;
    }
}

/// Separable Gaussian blur of one `s`×`s` plane with reflect padding. `kernel` taps below 1e-9
/// at both ends are dropped by the caller (they change no value by more than ~2e-8).
#[inline(always)]
fn blur_plane<const FMA: bool>(
    plane: &mut [f32],
    s: usize,
    kernel: &[f32],
    tmp: &mut [f32],
    row: &mut Vec<f32>,
    idx: &mut Vec<usize>,
) {
    let k = kernel.len();
    let h = k / 2;
    // padded index j (0 .. s + k - 1) → source index reflect(j - h), computed once
    idx.clear();
    idx.extend((0..s + k - 1).map(|j| reflect(j as i64 - h as i64, s)));
    let refl: &[usize] = idx;
    row.clear();
    row.resize(s + k, 0.0);
    // horizontal: padded row, out[x] = Σ_i w[i] · padded[x + i]
    for y in 0..s {
        let src = &plane[y * s..(y + 1) * s];
        row[h..h + s].copy_from_slice(src);
        for j in (0..h).chain(h + s..s + k - 1) {
            row[j] = src[refl[j]];
        }
        let padded: &[f32] = row;
        taps_into::<FMA>(&mut tmp[y * s..(y + 1) * s], kernel, |i| &padded[i..i + s]);
    }
    // vertical: out row y = Σ_i w[i] · tmp row reflect(y + i - h)
    let tmp: &[f32] = tmp;
    for y in 0..s {
        let rows = &refl[y..y + k];
        taps_into::<FMA>(&mut plane[y * s..(y + 1) * s], kernel, |i| &tmp[rows[i] * s..rows[i] * s + s]);
    }
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

fn run_view_dispatch(job: &ViewJob, ws: &mut AugmentWorkspace, out: &mut [f32]) {
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
fn view_into(
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

/// Reflect an index into 0..n like numpy/torch `reflect` padding (edge not repeated).
fn reflect(i: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as i64 - 1);
    let m = i.rem_euclid(period);
    (if m < n as i64 { m } else { period - m }) as usize
}

/// Normalised 1-D Gaussian of `ksize` taps (torchvision's `_get_gaussian_kernel1d`).
pub fn gaussian_kernel(ksize: usize, sigma: f32) -> Vec<f32> {
    let half = (ksize as f32 - 1.0) / 2.0;
    let k: Vec<f32> = (0..ksize).map(|i| (-0.5 * ((i as f32 - half) / sigma).powi(2)).exp()).collect();
    let sum: f32 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}

/// RGB in [0,1] → (h in [0,1), s, v) as torchvision's `_rgb2hsv`.
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let d = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / d, (maxc - g) / d, (maxc - b) / d);
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = if eqc { 0.0 } else { (h / 6.0 + 1.0).rem_euclid(1.0) };
    (h, s, maxc)
}

/// (h, s, v) → RGB as torchvision's `_hsv2rgb`.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = (h6.floor() as i64).rem_euclid(6);
    let f = h6 - h6.floor();
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

fn check_channels(cfg: &AugmentConfig, img: &Decoded) -> Result<()> {
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

fn check_out(cfg: &AugmentConfig, out: &[f32]) -> Result<()> {
    let n = (cfg.channels * cfg.image_size * cfg.image_size) as usize;
    if out.len() != n {
        return Err(PipelineError::ImageData(format!("output buffer holds {} values, a view needs {n}", out.len())));
    }
    Ok(())
}

/// BYOL twin-view transform (BYOL, Grill et al. 2020, appendix B / table 6). Each view is CHW
/// `f32` normalised, [`TwinViewTransform::view_len`] = `channels * image_size²` values.
#[derive(Clone, Debug)]
pub struct TwinViewTransform {
    cfg: AugmentConfig,
}

impl TwinViewTransform {
    /// Errors: [`PipelineError::Config`] from [`AugmentConfig::validate`].
    pub fn new(cfg: AugmentConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(TwinViewTransform { cfg })
    }
    /// The configuration.
    pub fn config(&self) -> &AugmentConfig {
        &self.cfg
    }
    /// Values per view: `channels * image_size * image_size`.
    pub fn view_len(&self) -> usize {
        (self.cfg.channels * self.cfg.image_size * self.cfg.image_size) as usize
    }
    /// Draw both views' parameters (A then B) for a `w`×`h` source (no pixel needed, so the
    /// loader can decode only the part of the photo the two crops read).
    pub fn sample_params<R: Rng + ?Sized>(&self, w: u32, h: u32, rng: &mut R) -> [ViewParams; 2] {
        let pa = sample_view_params(&self.cfg.view_a, w, h, rng);
        let pb = sample_view_params(&self.cfg.view_b, w, h, rng);
        [pa, pb]
    }
    /// Draw both views' parameters (A then B) and apply them; allocates the two outputs.
    /// Errors: [`PipelineError::ImageData`] when the image's channel count differs from the
    /// config or resizing fails.
    pub fn apply<R: Rng + ?Sized>(&self, img: &Decoded, rng: &mut R) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut a, mut b) = (vec![0f32; self.view_len()], vec![0f32; self.view_len()]);
        self.apply_into(img, rng, &mut AugmentWorkspace::new(), &mut a, &mut b)?;
        Ok((a, b))
    }
    /// [`TwinViewTransform::apply`] writing into `out_a` / `out_b` (each `view_len()` values)
    /// with the scratch buffers of `ws`. Errors as `apply`, plus a wrong output length.
    pub fn apply_into<R: Rng + ?Sized>(
        &self,
        img: &Decoded,
        rng: &mut R,
        ws: &mut AugmentWorkspace,
        out_a: &mut [f32],
        out_b: &mut [f32],
    ) -> Result<()> {
        let params = self.sample_params(img.width, img.height, rng);
        self.apply_params_into(img, (0, 0), &params, ws, out_a, out_b)
    }
    /// Apply drawn parameters (crop boxes in full-image pixels) to `img`, a window of the full
    /// image whose top-left pixel is `origin`; the window must contain each view's
    /// [`resample_support`], then the views equal those computed from the full image (up to
    /// the resampler's float rounding of shifted coordinates, <= 1/255 before normalisation).
    /// Errors: [`PipelineError::ImageData`] for a channel mismatch, a crop outside the window, a
    /// wrong output length or a resize failure.
    pub fn apply_params_into(
        &self,
        img: &Decoded,
        origin: (u32, u32),
        params: &[ViewParams; 2],
        ws: &mut AugmentWorkspace,
        out_a: &mut [f32],
        out_b: &mut [f32],
    ) -> Result<()> {
        check_channels(&self.cfg, img)?;
        check_out(&self.cfg, out_a)?;
        check_out(&self.cfg, out_b)?;
        view_into(&self.cfg, img, origin, &params[0], ws, out_a)?;
        view_into(&self.cfg, img, origin, &params[1], ws, out_b)
    }
    /// Decode `bytes` and write both views into `out_a` / `out_b` (each `view_len()` values),
    /// drawing the views' parameters from `rng` exactly as [`TwinViewTransform::apply`] would on
    /// the decoded image. JPEGs: the size is read from the frame header, the parameters are
    /// drawn, and libjpeg-turbo decodes only the window both crops read ([`union_box`] of their
    /// [`resample_support`]), which gives the views of the full decode ([`crate::jpeg`]). A JPEG
    /// libjpeg rejects (e.g. CMYK) and other formats are decoded whole by
    /// [`decode_image_with_image_crate`] / [`decode_image`].
    ///
    /// Errors: [`PipelineError::ImageData`] for undecodable bytes, a channel mismatch, a wrong
    /// output length or a resize failure.
    pub fn decode_apply_into<R: Rng + ?Sized>(
        &self,
        bytes: &[u8],
        rng: &mut R,
        ws: &mut AugmentWorkspace,
        out_a: &mut [f32],
        out_b: &mut [f32],
    ) -> Result<()> {
        let (s, c) = (self.cfg.image_size, self.cfg.channels);
        if let Some((w, h)) = crate::jpeg::jpeg_dimensions(bytes) {
            let params = self.sample_params(w, h, rng);
            let win = union_box(resample_support(params[0].crop, s, w, h), resample_support(params[1].crop, s, w, h));
            return match crate::jpeg::decode_jpeg_window(bytes, c, Some(win), std::mem::take(&mut ws.decoded)) {
                Ok(jw) => {
                    let res = self.apply_params_into(&jw.img, jw.origin, &params, ws, out_a, out_b);
                    ws.decoded = jw.img.data;
                    res
                }
                Err(_) => {
                    let img = decode_image_with_image_crate(bytes, c)?;
                    if (img.width, img.height) != (w, h) {
                        return Err(PipelineError::ImageData(format!(
                            "JPEG frame header says {w}x{h}, the image decodes to {}x{}",
                            img.width, img.height
                        )));
                    }
                    self.apply_params_into(&img, (0, 0), &params, ws, out_a, out_b)
                }
            };
        }
        let img = decode_image_into(bytes, c, std::mem::take(&mut ws.decoded))?;
        let res = self.apply_into(&img, rng, ws, out_a, out_b);
        ws.decoded = img.data;
        res
    }
    /// Apply given parameters to one view (for tests and visualisation).
    pub fn apply_params(&self, img: &Decoded, params: &ViewParams) -> Result<Vec<f32>> {
        check_channels(&self.cfg, img)?;
        let mut out = vec![0f32; self.view_len()];
        view_into(&self.cfg, img, (0, 0), params, &mut AugmentWorkspace::new(), &mut out)?;
        Ok(out)
    }
}

/// Evaluation transform: resize the shorter side to `eval_resize` (aspect kept), centre-crop
/// `image_size`, normalise. Output CHW `f32`, `channels * image_size²` values.
#[derive(Clone, Debug)]
pub struct EvalTransform {
    cfg: AugmentConfig,
}

impl EvalTransform {
    /// Errors: [`PipelineError::Config`] from [`AugmentConfig::validate`].
    pub fn new(cfg: AugmentConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(EvalTransform { cfg })
    }
    /// Resize+crop in one resampling step: the centre crop is mapped back to source coordinates.
    /// Errors: [`PipelineError::ImageData`] on a channel mismatch or a resize failure.
    pub fn apply(&self, img: &Decoded) -> Result<Vec<f32>> {
        let mut out = vec![0f32; (self.cfg.channels * self.cfg.image_size * self.cfg.image_size) as usize];
        self.apply_into(img, &mut AugmentWorkspace::new(), &mut out)?;
        Ok(out)
    }
    /// Decode `bytes` ([`decode_image`]) and write the evaluation view into `out`
    /// (`channels * image_size²` values). Errors: [`PipelineError::ImageData`] for undecodable
    /// bytes, plus those of [`EvalTransform::apply_into`].
    pub fn decode_apply_into(&self, bytes: &[u8], ws: &mut AugmentWorkspace, out: &mut [f32]) -> Result<()> {
        let img = decode_image_into(bytes, self.cfg.channels, std::mem::take(&mut ws.decoded))?;
        let res = self.apply_into(&img, ws, out);
        ws.decoded = img.data;
        res
    }
    /// [`EvalTransform::apply`] into `out` (`channels * image_size²` values) with the scratch of
    /// `ws`. Errors as `apply`, plus a wrong output length.
    pub fn apply_into(&self, img: &Decoded, ws: &mut AugmentWorkspace, out: &mut [f32]) -> Result<()> {
        check_channels(&self.cfg, img)?;
        check_out(&self.cfg, out)?;
        let (w, h) = (img.width as f64, img.height as f64);
        let scale = self.cfg.eval_resize as f64 / w.min(h);
        let side = self.cfg.image_size as f64 / scale;
        let (cw, ch) = (side.min(w), side.min(h));
        let (l, t) = ((w - cw) / 2.0, (h - ch) / 2.0);
        let s = self.cfg.image_size;
        let mut rgb = std::mem::take(&mut ws.rgb);
        let res = crop_resize_into(&mut ws.resizer, img, (0, 0), (l, t, cw, ch), s, &mut rgb);
        if res.is_ok() {
            let plain = ViewParams {
                crop: CropBox { left: 0, top: 0, width: s, height: s },
                flip: false,
                jitter: None,
                grayscale: false,
                blur_sigma: None,
                solarize: false,
            };
            let job = ViewJob {
                rgb: &rgb,
                s: s as usize,
                c: img.channels as usize,
                params: &plain,
                ksize: blur_kernel_size(s),
                mean: &self.cfg.mean,
                std: &self.cfg.std,
            };
            run_view_dispatch(&job, ws, out);
        }
        ws.rgb = rgb;
        res
    }
}

/// The straightforward per-op HWC implementation the fast path replaced, kept as the reference
/// the fast path is tested against.
#[cfg(test)]
pub(crate) mod reference {
    use super::*;

    /// Crop `(left, top, width, height)` (source pixels, may be fractional) and resize to `out`×`out`
    /// with an antialiased bilinear filter. An integral crop already of the output size is copied.
    pub fn crop_resize(img: &Decoded, crop: (f64, f64, f64, f64), out: u32) -> Result<Vec<u8>> {
        let c = img.channels as usize;
        let (l, t, w, h) = crop;
        let integral = l.fract() == 0.0 && t.fract() == 0.0;
        if integral && w == out as f64 && h == out as f64 {
            let (l, t) = (l as usize, t as usize);
            let mut dst = Vec::with_capacity(out as usize * out as usize * c);
            for y in 0..out as usize {
                let row = ((t + y) * img.width as usize + l) * c;
                dst.extend_from_slice(&img.data[row..row + out as usize * c]);
            }
            return Ok(dst);
        }
        let pt = if c == 1 { PixelType::U8 } else { PixelType::U8x3 };
        let src = ImageRef::new(img.width, img.height, &img.data, pt)
            .map_err(|e| PipelineError::ImageData(format!("resize source: {e}")))?;
        let mut dst = Image::new(out, out, pt);
        let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(l, t, w, h);
        Resizer::new().resize(&src, &mut dst, &opts).map_err(|e| PipelineError::ImageData(format!("resize: {e}")))?;
        Ok(dst.into_vec())
    }

    /// Working image: HWC f32 in [0, 1].
    pub struct Work {
        pub s: usize,
        pub c: usize,
        pub px: Vec<f32>,
    }

    impl Work {
        pub fn from_u8(bytes: &[u8], s: usize, c: usize) -> Self {
            Work { s, c, px: bytes.iter().map(|&b| b as f32 / 255.0).collect() }
        }
        pub fn flip(&mut self) {
            let (s, c) = (self.s, self.c);
            for y in 0..s {
                for x in 0..s / 2 {
                    for k in 0..c {
                        self.px.swap((y * s + x) * c + k, (y * s + (s - 1 - x)) * c + k);
                    }
                }
            }
        }
        pub fn gray(&self) -> Vec<f32> {
            if self.c == 1 {
                return self.px.clone();
            }
            self.px.chunks_exact(3).map(|p| luma601(p[0], p[1], p[2])).collect()
        }
        pub fn brightness(&mut self, f: f32) {
            self.px.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
        }
        pub fn contrast(&mut self, f: f32) {
            let g = self.gray();
            let mean = g.iter().map(|&v| v as f64).sum::<f64>() as f32 / g.len().max(1) as f32;
            self.px.iter_mut().for_each(|v| *v = (f * *v + (1.0 - f) * mean).clamp(0.0, 1.0));
        }
        pub fn saturation(&mut self, f: f32) {
            if self.c != 3 {
                return;
            }
            for p in self.px.chunks_exact_mut(3) {
                let g = luma601(p[0], p[1], p[2]);
                for v in p.iter_mut() {
                    *v = (f * *v + (1.0 - f) * g).clamp(0.0, 1.0);
                }
            }
        }
        pub fn hue(&mut self, shift: f32) {
            if self.c != 3 || shift == 0.0 {
                return;
            }
            for p in self.px.chunks_exact_mut(3) {
                let (h, s, v) = rgb_to_hsv(p[0], p[1], p[2]);
                let h = (h + shift).rem_euclid(1.0);
                let (r, g, b) = hsv_to_rgb(h, s, v);
                p[0] = r;
                p[1] = g;
                p[2] = b;
            }
        }
        pub fn grayscale(&mut self) {
            if self.c != 3 {
                return;
            }
            for p in self.px.chunks_exact_mut(3) {
                let g = luma601(p[0], p[1], p[2]);
                p.fill(g);
            }
        }
        pub fn blur(&mut self, sigma: f32, ksize: usize) {
            let kernel = gaussian_kernel(ksize, sigma);
            let (s, c) = (self.s, self.c);
            let half = (ksize / 2) as i64;
            let mut tmp = vec![0f32; self.px.len()];
            // horizontal
            for y in 0..s {
                for x in 0..s {
                    for k in 0..c {
                        let mut acc = 0f32;
                        for (i, w) in kernel.iter().enumerate() {
                            let xx = reflect(x as i64 + i as i64 - half, s);
                            acc += w * self.px[(y * s + xx) * c + k];
                        }
                        tmp[(y * s + x) * c + k] = acc;
                    }
                }
            }
            // vertical
            for y in 0..s {
                for x in 0..s {
                    for k in 0..c {
                        let mut acc = 0f32;
                        for (i, w) in kernel.iter().enumerate() {
                            let yy = reflect(y as i64 + i as i64 - half, s);
                            acc += w * tmp[(yy * s + x) * c + k];
                        }
                        self.px[(y * s + x) * c + k] = acc;
                    }
                }
            }
        }
        pub fn solarize(&mut self) {
            self.px.iter_mut().for_each(|v| {
                if *v >= 0.5 {
                    *v = 1.0 - *v
                }
            });
        }
        /// Normalise to CHW.
        pub fn normalise(&self, mean: &[f32], std: &[f32]) -> Vec<f32> {
            let (s, c) = (self.s, self.c);
            let mut out = vec![0f32; c * s * s];
            for k in 0..c {
                let (m, sd) = (mean[k], std[k]);
                let plane = &mut out[k * s * s..(k + 1) * s * s];
                for (i, o) in plane.iter_mut().enumerate() {
                    *o = (self.px[i * c + k] - m) / sd;
                }
            }
            out
        }
    }

    pub fn apply_view(cfg: &AugmentConfig, img: &Decoded, p: &ViewParams) -> Result<Vec<f32>> {
        let s = cfg.image_size;
        let cb = p.crop;
        let bytes = crop_resize(img, (cb.left as f64, cb.top as f64, cb.width as f64, cb.height as f64), s)?;
        let mut w = Work::from_u8(&bytes, s as usize, img.channels as usize);
        if p.flip {
            w.flip();
        }
        if let Some(j) = p.jitter {
            for op in j.order {
                match op {
                    0 => w.brightness(j.brightness),
                    1 => w.contrast(j.contrast),
                    2 => w.saturation(j.saturation),
                    _ => w.hue(j.hue),
                }
            }
        }
        if p.grayscale {
            w.grayscale();
        }
        if let Some(sigma) = p.blur_sigma {
            w.blur(sigma, blur_kernel_size(s));
        }
        if p.solarize {
            w.solarize();
        }
        Ok(w.normalise(&cfg.mean, &cfg.std))
    }

    /// The old eval transform.
    pub fn eval(cfg: &AugmentConfig, img: &Decoded) -> Result<Vec<f32>> {
        let (w, h) = (img.width as f64, img.height as f64);
        let scale = cfg.eval_resize as f64 / w.min(h);
        let side = cfg.image_size as f64 / scale;
        let (cw, ch) = (side.min(w), side.min(h));
        let (l, t) = ((w - cw) / 2.0, (h - ch) / 2.0);
        let bytes = crop_resize(img, (l, t, cw, ch), cfg.image_size)?;
        Ok(Work::from_u8(&bytes, cfg.image_size as usize, img.channels as usize).normalise(&cfg.mean, &cfg.std))
    }
}

#[cfg(test)]
mod tests {
    use super::reference::Work;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn cfg_small(s: u32, c: u32) -> AugmentConfig {
        AugmentConfig::byol_small(s, c)
    }

    #[test]
    fn crop_boxes_respect_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (scale, ratio) = ((0.08f32, 1.0f32), (0.75f32, 4.0f32 / 3.0));
        let mut fallbacks = 0;
        for &(w, h) in &[(224u32, 224u32), (32, 32), (500, 375), (375, 500), (28, 28)] {
            let area = (w * h) as f64;
            for _ in 0..3000 {
                let b = random_resized_crop_box(w, h, scale, ratio, &mut rng);
                assert!(
                    b.width >= 1 && b.height >= 1 && b.left + b.width <= w && b.top + b.height <= h,
                    "{b:?} in {w}x{h}"
                );
                let (bw, bh) = (b.width as f64, b.height as f64);
                if b.width == w && b.height == h {
                    fallbacks += 1;
                    continue; // the centre fallback of a within-ratio image is the full image
                }
                // Unrounded w', h' satisfy w'h' in [s0 A, s1 A] and w'/h' in [r0, r1]; each is
                // within 0.5 of the rounded value.
                assert!((bw + 0.5) * (bh + 0.5) >= scale.0 as f64 * area, "{b:?} too small in {w}x{h}");
                assert!((bw - 0.5) * (bh - 0.5) <= scale.1 as f64 * area);
                assert!((bw + 0.5) / (bh - 0.5) >= ratio.0 as f64 - 1e-9, "{b:?} ratio");
                assert!((bw - 0.5) / (bh + 0.5) <= ratio.1 as f64 + 1e-9, "{b:?} ratio");
            }
        }
        assert!(fallbacks < 15_000);
    }

    #[test]
    fn crop_fallback_is_centre_clamped() {
        // Area must be the whole image but aspect >= 2: no try fits a 100x100 image, so the
        // fallback takes w = 100, h = round(100 / 2) = 50, centred: top = 25.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let b = random_resized_crop_box(100, 100, (1.0, 1.0), (2.0, 3.0), &mut rng);
        assert_eq!(b, CropBox { left: 0, top: 25, width: 100, height: 50 });
        // Tall image 40x100 with ratio (0.75, 1.33): in_ratio 0.4 < 0.75 → w = 40, h = round(40/0.75) = 53.
        let b = random_resized_crop_box(40, 100, (1.0, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!(b, CropBox { left: 0, top: 23, width: 40, height: 53 });
    }

    #[test]
    fn flip_rate_near_half() {
        let v = ViewAugment::byol(0.0, 0.0);
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let n = 4000;
        let flips = (0..n).filter(|_| sample_view_params(&v, 32, 32, &mut rng).flip).count() as f64;
        // Binomial(4000, 0.5): mean 2000, sd sqrt(4000 * 0.25) = 31.6; 5 sigma = 158.
        assert!((flips - 2000.0).abs() < 158.0, "flips = {flips}");
    }

    #[test]
    fn eval_normalisation_exact() {
        // 2x2 RGB image, eval_resize == image_size == 2 → no resampling; values hand-computed:
        // (p / 255 - mean) / std with mean 0.5, std 0.25: 0 → -2, 255 → 2, 51 → (0.2-0.5)/0.25 = -1.2.
        let mut cfg = cfg_small(2, 3);
        cfg.mean = vec![0.5; 3];
        cfg.std = vec![0.25; 3];
        let img = Decoded { width: 2, height: 2, channels: 3, data: vec![0, 255, 51, 255, 0, 51, 51, 51, 51, 0, 0, 0] };
        let out = EvalTransform::new(cfg).unwrap().apply(&img).unwrap();
        // CHW: R plane = [0,255,51,0], G = [255,0,51,0], B = [51,51,51,0]
        let expect = [-2.0, 2.0, -1.2, -2.0, 2.0, -2.0, -1.2, -2.0, -1.2, -1.2, -1.2, -2.0];
        for (a, b) in out.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn eval_centre_crop() {
        // 6x4 gray image, values = x + 10*y. eval_resize 4 == shorter side → scale 1; crop 2x2
        // centred: left = (6-2)/2 = 2, top = (4-2)/2 = 1 → pixels (2,1),(3,1),(2,2),(3,2).
        let mut cfg = cfg_small(2, 1);
        cfg.eval_resize = 4;
        cfg.mean = vec![0.0];
        cfg.std = vec![1.0];
        let data: Vec<u8> = (0..4).flat_map(|y| (0..6).map(move |x| (x + 10 * y) as u8)).collect();
        let img = Decoded { width: 6, height: 4, channels: 1, data };
        let out = EvalTransform::new(cfg).unwrap().apply(&img).unwrap();
        let got: Vec<u8> = out.iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(got, vec![12, 13, 22, 23]);
    }

    #[test]
    fn eval_resizes_shorter_side() {
        let mut cfg = cfg_small(8, 3);
        cfg.eval_resize = 10;
        let img = Decoded { width: 40, height: 20, channels: 3, data: vec![128; 40 * 20 * 3] };
        let out = EvalTransform::new(cfg.clone()).unwrap().apply(&img).unwrap();
        assert_eq!(out.len(), 3 * 8 * 8);
        // a constant image stays constant through resampling
        let v = (128.0 / 255.0 - cfg.mean[0]) / cfg.std[0];
        assert!((out[0] - v).abs() < 1e-5);
    }

    #[test]
    fn colour_ops_known_values() {
        let mut w = Work { s: 1, c: 3, px: vec![1.0, 0.5, 0.0] };
        w.grayscale();
        let g = 0.299 + 0.587 * 0.5;
        assert!(w.px.iter().all(|v| (v - g).abs() < 1e-6));
        let mut w = Work { s: 1, c: 3, px: vec![0.2, 0.6, 0.8] };
        w.brightness(1.5);
        assert!((w.px[0] - 0.3).abs() < 1e-6 && (w.px[1] - 0.9).abs() < 1e-6 && w.px[2] == 1.0);
        let mut w = Work { s: 1, c: 3, px: vec![0.75, 0.6, 0.2] };
        w.solarize();
        assert!((w.px[0] - 0.25).abs() < 1e-6 && (w.px[1] - 0.4).abs() < 1e-6 && (w.px[2] - 0.2).abs() < 1e-6);
        // pure red shifted by 1/3 turn is pure green
        let (r, g, b) = {
            let (h, s, v) = rgb_to_hsv(1.0, 0.0, 0.0);
            hsv_to_rgb(h + 1.0 / 3.0, s, v)
        };
        assert!(r.abs() < 1e-5 && (g - 1.0).abs() < 1e-5 && b.abs() < 1e-5);
        // contrast 0 → every pixel becomes the image's mean luma
        let mut w = Work { s: 1, c: 3, px: vec![1.0, 0.0, 0.0] };
        w.contrast(0.0);
        assert!(w.px.iter().all(|v| (v - 0.299).abs() < 1e-6));
        // saturation 0 on one channel input is a no-op
        let mut w = Work { s: 1, c: 1, px: vec![0.3] };
        w.saturation(0.0);
        w.hue(0.2);
        w.grayscale();
        assert_eq!(w.px, vec![0.3]);
        // blur keeps a constant image constant; kernel sums to 1 and has 23 taps at 224
        let mut w = Work { s: 5, c: 1, px: vec![0.4; 25] };
        w.blur(1.5, 3);
        assert!(w.px.iter().all(|v| (v - 0.4).abs() < 1e-6));
        assert_eq!(blur_kernel_size(224), 23);
        assert_eq!(blur_kernel_size(32), 3);
        assert!((gaussian_kernel(23, 1.0).iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn flip_mirrors_and_twin_views_are_seeded() {
        let cfg = cfg_small(4, 1);
        let t = TwinViewTransform::new(cfg.clone()).unwrap();
        let data: Vec<u8> = (0..16).map(|i| (i * 10) as u8).collect();
        let img = Decoded { width: 4, height: 4, channels: 1, data };
        let full = CropBox { left: 0, top: 0, width: 4, height: 4 };
        let base =
            ViewParams { crop: full, flip: false, jitter: None, grayscale: false, blur_sigma: None, solarize: false };
        let a = t.apply_params(&img, &base).unwrap();
        let b = t.apply_params(&img, &ViewParams { flip: true, ..base }).unwrap();
        for y in 0..4 {
            for x in 0..4 {
                assert_eq!(a[y * 4 + x], b[y * 4 + 3 - x]);
            }
        }
        let (a1, b1) = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
        let (a2, b2) = t.apply(&img, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
        assert_eq!((a1.len(), b1.len()), (16, 16));
        assert_eq!((&a1, &b1), (&a2, &b2));
        let rgb = Decoded { width: 4, height: 4, channels: 3, data: vec![1; 48] };
        assert!(t.apply(&rgb, &mut ChaCha8Rng::seed_from_u64(5)).is_err());
    }

    #[test]
    fn config_validation_and_serde() {
        assert!(AugmentConfig::byol_224().validate().is_ok());
        let mut c = AugmentConfig::byol_small(32, 3);
        c.view_b.flip_p = 1.5;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("augment.view_b.flip_p"), "{e}");
        let mut c = AugmentConfig::byol_small(32, 3);
        c.mean = vec![0.5];
        assert!(c.validate().is_err());
        let json = serde_json::to_string(&AugmentConfig::byol_small(28, 1)).unwrap();
        let back: AugmentConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, AugmentConfig::byol_small(28, 1));
        assert!(serde_json::from_str::<ViewAugment>(r#"{"nope": 1}"#).is_err());
    }

    /// A `w`×`h` image with smooth colour gradients plus a seeded texture (every op has work to
    /// do: saturated and grey pixels, edges, values near 0.5 for solarize).
    fn textured(w: u32, h: u32, c: u32, seed: u64) -> Decoded {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut data = Vec::with_capacity((w * h * c) as usize);
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    let base = (x * 255 / w.max(1)) as i32 * (k as i32 % 2)
                        + (y * 255 / h.max(1)) as i32 * ((k as i32 + 1) % 2);
                    let noise: i32 = rng.gen_range(-40..=40);
                    data.push((base + noise).clamp(0, 255) as u8);
                }
            }
        }
        Decoded { width: w, height: h, channels: c, data }
    }

    /// A config where every op fires often: jitter always, grayscale / blur / solarize half the time.
    fn busy(mut cfg: AugmentConfig) -> AugmentConfig {
        for v in [&mut cfg.view_a, &mut cfg.view_b] {
            v.jitter_p = 1.0;
            v.grayscale_p = 0.3;
            v.blur_p = 0.6;
            v.solarize_p = 0.5;
        }
        cfg
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn fast_path_matches_reference_views() {
        // The fast planar path against the per-op reference on 160 random views of 3- and
        // 1-channel images at 32 and 48 px (blur kernels 3 and 5 taps) and at 224 px (23 taps).
        // Same formulas and order: only the contrast mean's summation order and dropped blur taps
        // below 1e-9 differ: outputs agree to 1e-5 in normalised units (measured: 7e-7).
        for (s, c, w, h, n) in
            [(32u32, 3u32, 45u32, 37u32, 60usize), (48, 1, 50, 64, 40), (224, 3, 320, 240, 12), (32, 3, 32, 32, 48)]
        {
            let cfg = busy(if s == 224 { AugmentConfig::byol_224() } else { AugmentConfig::byol_small(s, c) });
            let t = TwinViewTransform::new(cfg.clone()).unwrap();
            let img = textured(w, h, c, s as u64 + c as u64);
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let mut ws = AugmentWorkspace::new();
            let (mut a, mut b) = (vec![0f32; t.view_len()], vec![0f32; t.view_len()]);
            for _ in 0..n / 2 {
                let params = t.sample_params(w, h, &mut rng);
                t.apply_params_into(&img, (0, 0), &params, &mut ws, &mut a, &mut b).unwrap();
                for (p, got) in params.iter().zip([&a, &b]) {
                    let want = reference::apply_view(&cfg, &img, p).unwrap();
                    let d = max_abs_diff(got, &want);
                    assert!(d < 1e-5, "{s}px c={c}: diff {d} for {p:?}");
                }
            }
        }
    }

    #[test]
    fn fast_eval_matches_reference() {
        for (s, c, w, h) in [(32u32, 3u32, 40u32, 33u32), (8, 1, 12, 10), (224, 3, 500, 375)] {
            let mut cfg = AugmentConfig::byol_small(s, c);
            cfg.eval_resize = s + s / 7;
            let img = textured(w, h, c, 3);
            let got = EvalTransform::new(cfg.clone()).unwrap().apply(&img).unwrap();
            let want = reference::eval(&cfg, &img).unwrap();
            assert_eq!(got, want, "{s}px c={c}");
        }
    }

    #[test]
    fn fast_ops_known_values() {
        // planar layout: [R plane | G plane | B plane], one pixel per plane here
        let mut px = vec![1.0f32, 0.5, 0.0];
        op_grayscale(&mut px, 1);
        let g = 0.299 + 0.587 * 0.5;
        assert!(px.iter().all(|v| (v - g).abs() < 1e-6));
        let mut px = vec![0.2f32, 0.6, 0.8];
        op_brightness(&mut px, 1.5);
        assert!((px[0] - 0.3).abs() < 1e-6 && (px[1] - 0.9).abs() < 1e-6 && px[2] == 1.0);
        // contrast 0 → every pixel becomes the image's mean luma; two pixels (1,0,0), (0,0,1):
        // mean luma = (0.299 + 0.114) / 2
        let mut px = vec![1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0];
        op_contrast(&mut px, 2, 3, 0.0);
        assert!(px.iter().all(|v| (v - 0.2065).abs() < 1e-6), "{px:?}");
        // saturation 0 → luma; saturation 2 on (0.5, 0.25, 0.25): y = 0.299*0.5 + 0.701*0.25 =
        // 0.32475 → r = 2*0.5 - 0.32475 = 0.67525, g = b = 0.5 - 0.32475 = 0.17525
        let mut px = vec![0.5f32, 0.25, 0.25];
        op_saturation(&mut px, 1, 2.0);
        assert!(
            (px[0] - 0.67525).abs() < 1e-6 && (px[1] - 0.17525).abs() < 1e-6 && (px[2] - 0.17525).abs() < 1e-6,
            "{px:?}"
        );
        // hue: red + 1/3 turn = green, green + 1/3 = blue, (0.6, 0.3, 0.3) - 1/6 turn =
        // (0.6, 0.3, 0.6) (hue 0 → 5/6: magenta side, v = 0.6, s = 0.5)
        let mut px = vec![1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0]; // pixel 0 red, pixel 1 green
        op_hue(&mut px, 2, 1.0 / 3.0);
        let want = [0.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        assert!(max_abs_diff(&px, &want) < 1e-5, "{px:?}");
        let mut px = vec![0.6f32, 0.3, 0.3];
        op_hue(&mut px, 1, -1.0 / 6.0);
        assert!(max_abs_diff(&px, &[0.6, 0.3, 0.6]) < 1e-5, "{px:?}");
        // blur keeps a constant plane constant; a 1-pixel impulse spreads as the kernel's outer
        // product: centre weight k[1]^2 with k = normalised exp(-x²/2σ²), σ = 1, x = -1, 0, 1
        let mut plane = vec![0.4f32; 25];
        let (mut tmp, mut row) = (vec![0f32; 25], Vec::new());
        blur_plane::<false>(&mut plane, 5, &gaussian_kernel(3, 1.0), &mut tmp, &mut row, &mut Vec::new());
        assert!(plane.iter().all(|v| (v - 0.4).abs() < 1e-6));
        let mut plane = vec![0f32; 25];
        plane[12] = 1.0;
        blur_plane::<false>(&mut plane, 5, &gaussian_kernel(3, 1.0), &mut tmp, &mut row, &mut Vec::new());
        let e = (-0.5f32).exp();
        let k1 = 1.0 / (1.0 + 2.0 * e);
        assert!(
            (plane[12] - k1 * k1).abs() < 1e-6 && (plane[11] - k1 * k1 * e).abs() < 1e-6 && plane[0] == 0.0,
            "{plane:?}"
        );
        // reflect padding at the edge: impulse at (0, 0) of a 3x3 plane with k = (a, b, a)
        // horizontally gives row 0 = (b, 2a, 0)... reflect(-1) = 1 so x=0 gets k[0]*p[1] + k[1]*p[0]
        let mut plane = vec![0f32; 9];
        plane[0] = 1.0;
        let (mut tmp, mut row) = (vec![0f32; 9], Vec::new());
        blur_plane::<false>(&mut plane, 3, &[0.25, 0.5, 0.25], &mut tmp, &mut row, &mut Vec::new());
        // x: (0.5, 0.25, 0) on row 0; then y weights (0.5, 0.25, 0): (0,0) = 0.25, (1,0) = 0.125, (0,1) = 0.125
        assert_eq!(&plane[..], &[0.25, 0.125, 0.0, 0.125, 0.0625, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn window_gives_the_same_views() {
        // Decoding only the union of both crops' resampling supports gives the same views as the
        // full image: identical up to the resampler's rounding of shifted coordinates (at most one
        // 8-bit level before normalisation; measured: every value identical).
        let cfg = busy(AugmentConfig::byol_224());
        let t = TwinViewTransform::new(cfg.clone()).unwrap();
        let (w, h) = (640u32, 480u32);
        let img = textured(w, h, 3, 9);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut ws = AugmentWorkspace::new();
        let n = t.view_len();
        let (mut fa, mut fb, mut wa, mut wb) = (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let (mut exact, mut total) = (0usize, 0usize);
        for _ in 0..12 {
            let params = t.sample_params(w, h, &mut rng);
            t.apply_params_into(&img, (0, 0), &params, &mut ws, &mut fa, &mut fb).unwrap();
            let win =
                union_box(resample_support(params[0].crop, 224, w, h), resample_support(params[1].crop, 224, w, h));
            let mut data = Vec::new();
            for y in win.top..win.top + win.height {
                let row = ((y * w + win.left) * 3) as usize;
                data.extend_from_slice(&img.data[row..row + (win.width * 3) as usize]);
            }
            let sub = Decoded { width: win.width, height: win.height, channels: 3, data };
            t.apply_params_into(&sub, (win.left, win.top), &params, &mut ws, &mut wa, &mut wb).unwrap();
            for (x, y) in [(&fa, &wa), (&fb, &wb)] {
                let d = max_abs_diff(x, y);
                assert!(d <= 1.01 / 255.0 / 0.224, "window differs by {d}");
                exact += x.iter().zip(y.iter()).filter(|(a, b)| a == b).count();
                total += n;
            }
        }
        assert!(exact as f64 >= 0.999 * total as f64, "{exact} of {total} values identical");
        // a window that misses a crop is refused
        let params = t.sample_params(w, h, &mut rng);
        let tiny = Decoded { width: 4, height: 4, channels: 3, data: vec![0; 48] };
        assert!(t.apply_params_into(&tiny, (0, 0), &params, &mut ws, &mut wa, &mut wb).is_err());
    }

    #[test]
    fn decode_apply_matches_full_decode_and_reference_on_coco() {
        // Real photos through the loader's path (frame-header size, window decode with
        // libjpeg-turbo, fast views) against (a) libjpeg's full decode + the same views: equal
        // (the window holds every pixel the resampler reads), and (b) the image crate's decode +
        // the reference per-op path: the decoders differ by a few 8-bit levels on some pixels
        // (see crate::jpeg), so views differ by at most 8 levels (8/255/std) and on average by
        // less than 0.1 level (measured: 0.02).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/coco128/images/train2017");
        if !dir.is_dir() {
            assert!(std::env::var_os("CI").is_none(), "{} missing under CI", dir.display());
            return;
        }
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let cfg = busy(AugmentConfig::byol_224());
        let t = TwinViewTransform::new(cfg.clone()).unwrap();
        let mut ws = AugmentWorkspace::new();
        let n = t.view_len();
        let (mut a, mut b, mut fa, mut fb) = (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let min_std = cfg.std.iter().cloned().fold(f32::MAX, f32::min);
        let (mut sum, mut count) = (0f64, 0usize);
        for (i, f) in files.iter().take(12).enumerate() {
            let bytes = std::fs::read(f).unwrap();
            t.decode_apply_into(&bytes, &mut ChaCha8Rng::seed_from_u64(i as u64), &mut ws, &mut a, &mut b).unwrap();
            let full = crate::jpeg::decode_jpeg_window(&bytes, 3, None, Vec::new()).unwrap().img;
            t.apply_into(&full, &mut ChaCha8Rng::seed_from_u64(i as u64), &mut ws, &mut fa, &mut fb).unwrap();
            assert!(a == fa && b == fb, "file {i}: window decode changed the views");
            let img = decode_image_with_image_crate(&bytes, 3).unwrap();
            let params = t.sample_params(img.width, img.height, &mut ChaCha8Rng::seed_from_u64(i as u64));
            for (p, got) in params.iter().zip([&a, &b]) {
                let want = reference::apply_view(&cfg, &img, p).unwrap();
                let d = max_abs_diff(got, &want);
                assert!(d <= 8.0 / 255.0 / min_std, "file {i}: {d}");
                sum += got.iter().zip(&want).map(|(x, y)| (x - y).abs() as f64).sum::<f64>();
                count += n;
            }
        }
        let mean = sum / count as f64;
        assert!(mean < 0.1 / 255.0 / min_std as f64, "mean difference {mean}");
    }
}
