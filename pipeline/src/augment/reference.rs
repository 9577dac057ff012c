//! The straightforward per-op HWC implementation the fast path replaced, kept as the reference
//! the fast path is tested against.
use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::augment::blur::{gaussian_kernel, reflect};
use crate::augment::colour::{hsv_to_rgb, rgb_to_hsv};
use crate::augment::config::{blur_kernel_size, AugmentConfig};
use crate::augment::params::ViewParams;
use crate::image::{luma601, Decoded};
use crate::{PipelineError, Result};

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
