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
//! ([`crate::image::jpeg`]), each crop is resized once on u8 (crop before resize), and every later op
//! runs on planar f32 (one contiguous pass per op, vectorised; AVX2 + FMA chosen at run time;
//! separable blur with a precomputed, blocked kernel) writing the normalised CHW view straight
//! into the caller's buffer, with the scratch of a per-thread [`AugmentWorkspace`] (no per-sample
//! allocation). The straightforward per-op implementation it replaced is kept (`reference`, in
//! tests) and the fast path is tested against it.
//!
//! | module | what it holds |
//! |---|---|
//! | `config` | [`AugmentConfig`], [`ViewAugment`], [`blur_kernel_size`] |
//! | `params` | the random draws of a view: [`sample_view_params`], [`random_resized_crop_box`] |
//! | `colour` | brightness, contrast, saturation, hue, grayscale on planar f32; [`rgb_to_hsv`] |
//! | `blur` | [`gaussian_kernel`] and the separable, blocked plane blur |
//! | `view` | the fast view pipeline and its scratch, [`AugmentWorkspace`] |
//! | `transform` | [`TwinViewTransform`], [`EvalTransform`] |
//! | `reference` | (tests only) the per-op reference the fast path is tested against |
//!
//! Decoding and crop-box geometry live below, in [`crate::image`].
mod blur;
mod colour;
mod config;
mod params;
mod transform;
mod view;

pub use blur::gaussian_kernel;
pub use colour::{hsv_to_rgb, rgb_to_hsv};
pub use config::{blur_kernel_size, AugmentConfig, ViewAugment};
pub use params::{random_resized_crop_box, sample_view_params, JitterParams, ViewParams};
pub use transform::{EvalTransform, TwinViewTransform};
pub use view::AugmentWorkspace;

#[cfg(test)]
pub(crate) mod reference;
#[cfg(test)]
mod tests;
