//! Augmentation settings: one view's parameters ([`ViewAugment`], BYOL's table 6) and the whole
//! `[augment]` section ([`AugmentConfig`]: output size, channels, normalisation, both views,
//! evaluation resize), with their validation; the blur kernel size for an output size.
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
