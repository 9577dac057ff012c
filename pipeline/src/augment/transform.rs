//! The transforms the loader applies: [`TwinViewTransform`] (BYOL's two augmented views, with
//! the window-decoding fast path for JPEGs) and [`EvalTransform`] (shorter side resized, centre
//! crop, normalised).
use rand::Rng;

use crate::augment::config::{blur_kernel_size, AugmentConfig};
use crate::augment::params::{sample_view_params, ViewParams};
use crate::augment::view::{
    check_channels, check_out, crop_resize_into, run_view_dispatch, view_into, AugmentWorkspace, ViewJob,
};
use crate::image::jpeg::{decode_jpeg_window, jpeg_dimensions};
use crate::image::{decode_image_into, decode_image_with_image_crate, resample_support, union_box, CropBox, Decoded};
use crate::{PipelineError, Result};

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
    /// [`resample_support`]), which gives the views of the full decode ([`crate::image::jpeg`]). A JPEG
    /// libjpeg rejects (e.g. CMYK) and other formats are decoded whole by
    /// [`decode_image_with_image_crate`] / [`crate::image::decode_image`].
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
        if let Some((w, h)) = jpeg_dimensions(bytes) {
            let params = self.sample_params(w, h, rng);
            let win = union_box(resample_support(params[0].crop, s, w, h), resample_support(params[1].crop, s, w, h));
            return match decode_jpeg_window(bytes, c, Some(win), std::mem::take(&mut ws.decoded)) {
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
    /// Decode `bytes` ([`crate::image::decode_image`]) and write the evaluation view into `out`
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
