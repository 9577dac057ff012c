//! The random decisions of a view, drawn from the size of the source alone (no pixel needed):
//! torchvision's RandomResizedCrop box, flip, colour jitter (order and factors), grayscale,
//! blur sigma and solarize, in one fixed order per view.
use rand::Rng;

use crate::augment::config::ViewAugment;
use crate::image::CropBox;

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
