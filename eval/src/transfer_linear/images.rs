//! A transfer dataset's images as evaluation views, in batches, decoded on worker threads with
//! the pipeline's decoder and [`EvalTransform`] (the run's `[augment]`: shorter side resized to
//! `eval_resize`, centre crop `image_size`, normalised with the run's mean/std; decoded to the
//! run's channel count, so a grayscale image becomes three equal RGB channels, as PIL's
//! `convert("RGB")`).

use crate::error::{EvalError, Result};
use dspnet_pipeline::augment::AugmentWorkspace;
use dspnet_pipeline::{AugmentConfig, EvalTransform};
use image::ImageDecoder;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Decodes files into batches of evaluation views.
pub struct ViewDecoder {
    transform: EvalTransform,
    channels: i64,
    size: i64,
    threads: usize,
}

/// True when the encoded image has no colour channels (grayscale, with or without alpha),
/// read from its header; `None` when the header cannot be read.
fn is_grayscale(bytes: &[u8]) -> Option<bool> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?;
    Some(!reader.into_decoder().ok()?.color_type().has_color())
}

impl ViewDecoder {
    /// A decoder for the run's `augment` section on `threads` threads (at least 1).
    ///
    /// Errors: an invalid augmentation config.
    pub fn new(augment: &AugmentConfig, threads: usize) -> Result<Self> {
        Ok(ViewDecoder {
            transform: EvalTransform::new(augment.clone())?,
            channels: augment.channels as i64,
            size: augment.image_size as i64,
            threads: threads.max(1),
        })
    }

    /// Calls `each` with the views of `files` in order, `batch` at a time: `[B, C, S, S]` f32
    /// (CPU). Memory: one batch of views (`4·C·S²` bytes each) plus each thread's scratch.
    /// Returns how many of the images were grayscale at the source.
    ///
    /// Errors: [`EvalError::TransferData`] naming (relative to `dir`) a file that cannot be read
    /// or decoded; those of `each`.
    pub fn for_each_batch(
        &self,
        dir: &Path,
        files: &[PathBuf],
        batch: usize,
        mut each: impl FnMut(Tensor) -> Result<()>,
    ) -> Result<usize> {
        let view = (self.channels * self.size * self.size) as usize;
        let mut grayscale = 0;
        for chunk in files.chunks(batch.max(1)) {
            let mut out = vec![0f32; chunk.len() * view];
            let per_thread = chunk.len().div_ceil(self.threads);
            let results: Vec<std::result::Result<usize, String>> = std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .chunks(per_thread)
                    .zip(out.chunks_mut(per_thread * view))
                    .map(|(paths, dst)| s.spawn(move || self.decode_into(dir, paths, dst, view)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("a decode thread panicked".into())))
                    .collect()
            });
            for r in results {
                grayscale += r.map_err(|m| EvalError::transfer_data(dir, m))?;
            }
            let x = Tensor::from_slice(&out).view([chunk.len() as i64, self.channels, self.size, self.size]);
            each(x)?;
        }
        Ok(grayscale)
    }

    /// Decodes `paths` into consecutive views of `dst`; returns the grayscale count or the
    /// message naming the file.
    fn decode_into(
        &self,
        dir: &Path,
        paths: &[PathBuf],
        dst: &mut [f32],
        view: usize,
    ) -> std::result::Result<usize, String> {
        let mut ws = AugmentWorkspace::new();
        let mut grayscale = 0;
        for (path, out) in paths.iter().zip(dst.chunks_mut(view)) {
            let rel = path.strip_prefix(dir).unwrap_or(path).display().to_string();
            let bytes = std::fs::read(path).map_err(|e| format!("cannot read {rel}: {e}"))?;
            self.transform.decode_apply_into(&bytes, &mut ws, out).map_err(|e| format!("{rel}: {e}"))?;
            grayscale += usize::from(is_grayscale(&bytes) == Some(true));
        }
        Ok(grayscale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, color: image::ExtendedColorType, data: &[u8]) {
        let mut bytes = Vec::new();
        image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut bytes), data, w, h, color).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn grayscale_becomes_three_equal_channels_in_ordered_batches() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = AugmentConfig::byol_224();
        (cfg.image_size, cfg.eval_resize) = (4, 4);
        (cfg.mean, cfg.std) = (vec![0.0; 3], vec![1.0; 3]);
        let mut files = Vec::new();
        for i in 0..5u8 {
            let p = d.path().join(format!("{i}.png"));
            if i % 2 == 0 {
                png(&p, 4, 4, image::ExtendedColorType::L8, &[i * 40; 16]);
            } else {
                png(&p, 4, 4, image::ExtendedColorType::Rgb8, &[10, 20, 30].repeat(16));
            }
            files.push(p);
        }
        let dec = ViewDecoder::new(&cfg, 2).unwrap();
        let mut batches = Vec::new();
        let gray = dec
            .for_each_batch(d.path(), &files, 2, |x| {
                batches.push(x);
                Ok(())
            })
            .unwrap();
        assert_eq!(gray, 3);
        assert_eq!(
            batches.iter().map(|b| b.size()).collect::<Vec<_>>(),
            vec![vec![2, 3, 4, 4], vec![2, 3, 4, 4], vec![1, 3, 4, 4]]
        );
        let all = Tensor::cat(&batches, 0);
        for i in [0i64, 2, 4] {
            // a grayscale level v: (v / 255 - 0) / 1 in all three channels
            let v = (i * 40) as f64 / 255.0;
            let img = all.get(i);
            assert!((img - v).abs().max().double_value(&[]) < 1e-6, "image {i}");
        }
        let rgb = all.get(1);
        let means: Vec<f64> = (0..3).map(|c| rgb.get(c).mean(tch::Kind::Float).double_value(&[])).collect();
        for (m, want) in means.iter().zip([10.0, 20.0, 30.0]) {
            assert!((m - want / 255.0).abs() < 1e-6, "{means:?}");
        }
        // an undecodable file is named relative to the dataset folder
        std::fs::write(d.path().join("bad.png"), b"not an image").unwrap();
        let e = dec.for_each_batch(d.path(), &[d.path().join("bad.png")], 2, |_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("bad.png") && e.starts_with("--transfer-data "), "{e}");
    }
}
