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
            return Err(PipelineError::config(&opt("crop_scale"), format!("({a}, {b}) must satisfy 0 < min <= max <= 1")));
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
            return Err(PipelineError::config("augment.image_size", format!("{} must be in 1..=4096 pixels", self.image_size)));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(PipelineError::config("augment.channels", format!("{} must be 1 or 3", self.channels)));
        }
        if self.mean.len() != self.channels as usize || self.std.len() != self.channels as usize {
            return Err(PipelineError::config("augment.mean", format!("mean and std need {} values (one per channel)", self.channels)));
        }
        if self.std.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(PipelineError::config("augment.std", "every std must be > 0"));
        }
        if self.eval_resize < self.image_size {
            return Err(PipelineError::config("augment.eval_resize", format!("{} must be >= image_size {}", self.eval_resize, self.image_size)));
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
pub fn random_resized_crop_box<R: Rng + ?Sized>(w: u32, h: u32, scale: (f32, f32), ratio: (f32, f32), rng: &mut R) -> CropBox {
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
    let blur_sigma = if bernoulli(rng, v.blur_p) { Some(uniform(rng, v.blur_sigma.0 as f64, v.blur_sigma.1 as f64) as f32) } else { None };
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

/// Decode JPEG/PNG/WebP bytes (format sniffed from content) to `channels` (1 → ITU-R 601 luma,
/// 3 → RGB). Errors: [`PipelineError::ImageData`] for empty input, undecodable data or a
/// zero-sized image.
pub fn decode_image(bytes: &[u8], channels: u32) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(PipelineError::ImageData("zero-byte image".into()));
    }
    let img = image::load_from_memory(bytes).map_err(|e| PipelineError::ImageData(format!("cannot decode image: {e}")))?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(PipelineError::ImageData("image has zero width or height".into()));
    }
    let data = if channels == 1 {
        match img {
            image::DynamicImage::ImageLuma8(b) => b.into_raw(),
            other => other.to_rgb8().pixels().map(|p| luma601(p[0] as f32, p[1] as f32, p[2] as f32).round().clamp(0.0, 255.0) as u8).collect(),
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

/// Crop `(left, top, width, height)` (source pixels, may be fractional) and resize to `out`×`out`
/// with an antialiased bilinear filter. An integral crop already of the output size is copied.
fn crop_resize(img: &Decoded, crop: (f64, f64, f64, f64), out: u32) -> Result<Vec<u8>> {
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
    let src = ImageRef::new(img.width, img.height, &img.data, pt).map_err(|e| PipelineError::ImageData(format!("resize source: {e}")))?;
    let mut dst = Image::new(out, out, pt);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(l, t, w, h);
    Resizer::new().resize(&src, &mut dst, &opts).map_err(|e| PipelineError::ImageData(format!("resize: {e}")))?;
    Ok(dst.into_vec())
}

/// Working image: HWC f32 in [0, 1].
struct Work {
    s: usize,
    c: usize,
    px: Vec<f32>,
}

impl Work {
    fn from_u8(bytes: &[u8], s: usize, c: usize) -> Self {
        Work { s, c, px: bytes.iter().map(|&b| b as f32 / 255.0).collect() }
    }
    fn flip(&mut self) {
        let (s, c) = (self.s, self.c);
        for y in 0..s {
            for x in 0..s / 2 {
                for k in 0..c {
                    self.px.swap((y * s + x) * c + k, (y * s + (s - 1 - x)) * c + k);
                }
            }
        }
    }
    fn gray(&self) -> Vec<f32> {
        if self.c == 1 {
            return self.px.clone();
        }
        self.px.chunks_exact(3).map(|p| luma601(p[0], p[1], p[2])).collect()
    }
    fn brightness(&mut self, f: f32) {
        self.px.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
    }
    fn contrast(&mut self, f: f32) {
        let g = self.gray();
        let mean = g.iter().map(|&v| v as f64).sum::<f64>() as f32 / g.len().max(1) as f32;
        self.px.iter_mut().for_each(|v| *v = (f * *v + (1.0 - f) * mean).clamp(0.0, 1.0));
    }
    fn saturation(&mut self, f: f32) {
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
    fn hue(&mut self, shift: f32) {
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
    fn grayscale(&mut self) {
        if self.c != 3 {
            return;
        }
        for p in self.px.chunks_exact_mut(3) {
            let g = luma601(p[0], p[1], p[2]);
            p.fill(g);
        }
    }
    fn blur(&mut self, sigma: f32, ksize: usize) {
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
    fn solarize(&mut self) {
        self.px.iter_mut().for_each(|v| {
            if *v >= 0.5 {
                *v = 1.0 - *v
            }
        });
    }
    /// Normalise to CHW.
    fn normalise(&self, mean: &[f32], std: &[f32]) -> Vec<f32> {
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

fn apply_view(cfg: &AugmentConfig, img: &Decoded, p: &ViewParams) -> Result<Vec<f32>> {
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

fn check_channels(cfg: &AugmentConfig, img: &Decoded) -> Result<()> {
    if img.channels != cfg.channels || img.data.len() != (img.width * img.height * img.channels) as usize {
        return Err(PipelineError::ImageData(format!("decoded image has {} channels / {} bytes, expected {} channels", img.channels, img.data.len(), cfg.channels)));
    }
    Ok(())
}

/// BYOL twin-view transform. `apply` returns (view A, view B), each CHW `f32` normalised, length
/// `channels * image_size * image_size`.
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
    /// Draw both views' parameters (A then B) and apply them. Errors: [`PipelineError::ImageData`]
    /// when the image's channel count differs from the config or resizing fails.
    pub fn apply<R: Rng + ?Sized>(&self, img: &Decoded, rng: &mut R) -> Result<(Vec<f32>, Vec<f32>)> {
        check_channels(&self.cfg, img)?;
        let pa = sample_view_params(&self.cfg.view_a, img.width, img.height, rng);
        let pb = sample_view_params(&self.cfg.view_b, img.width, img.height, rng);
        Ok((apply_view(&self.cfg, img, &pa)?, apply_view(&self.cfg, img, &pb)?))
    }
    /// Apply given parameters to one view (for tests and visualisation).
    pub fn apply_params(&self, img: &Decoded, params: &ViewParams) -> Result<Vec<f32>> {
        check_channels(&self.cfg, img)?;
        apply_view(&self.cfg, img, params)
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
        check_channels(&self.cfg, img)?;
        let (w, h) = (img.width as f64, img.height as f64);
        let scale = self.cfg.eval_resize as f64 / w.min(h);
        let side = self.cfg.image_size as f64 / scale;
        let (cw, ch) = (side.min(w), side.min(h));
        let (l, t) = ((w - cw) / 2.0, (h - ch) / 2.0);
        let bytes = crop_resize(img, (l, t, cw, ch), self.cfg.image_size)?;
        let work = Work::from_u8(&bytes, self.cfg.image_size as usize, img.channels as usize);
        Ok(work.normalise(&self.cfg.mean, &self.cfg.std))
    }
}

#[cfg(test)]
mod tests {
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
                assert!(b.width >= 1 && b.height >= 1 && b.left + b.width <= w && b.top + b.height <= h, "{b:?} in {w}x{h}");
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
        let (r, g, b) = { let (h, s, v) = rgb_to_hsv(1.0, 0.0, 0.0); hsv_to_rgb(h + 1.0 / 3.0, s, v) };
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
        let base = ViewParams { crop: full, flip: false, jitter: None, grayscale: false, blur_sigma: None, solarize: false };
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
}
