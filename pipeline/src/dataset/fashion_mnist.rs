//! Fashion-MNIST from its gzipped IDX files, each image encoded as a grayscale PNG.
use std::fs;
use std::io::Read;
use std::path::Path;

use crate::dataset::{SourceImage, Split};
use crate::{PipelineError, Result};

/// Fashion-MNIST class names, index = label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

fn read_gz(path: &Path) -> Result<Vec<u8>> {
    if !path.is_file() {
        return Err(PipelineError::MissingIdx { path: path.to_path_buf() });
    }
    let f = fs::File::open(path).map_err(|e| PipelineError::read(path, e))?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .map_err(|e| PipelineError::BadIdx { path: path.to_path_buf(), reason: format!("gzip: {e}") })?;
    Ok(out)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Read Fashion-MNIST from `dir` (`{train,t10k}-images-idx3-ubyte.gz`, `…-labels-idx1-ubyte.gz`).
///
/// Each 28×28 u8 image is encoded as a grayscale PNG; keys are `{split}_{index:08}`; class names
/// are [`FASHION_MNIST_CLASSES`]. Errors: [`PipelineError::MissingIdx`] for a missing file,
/// [`PipelineError::BadIdx`] for a bad magic number, size or label > 9.
pub fn fashion_mnist(dir: impl AsRef<Path>, split: Split) -> Result<(Vec<String>, Vec<SourceImage>)> {
    let dir = dir.as_ref();
    let stem = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_path = dir.join(format!("{stem}-images-idx3-ubyte.gz"));
    let lbl_path = dir.join(format!("{stem}-labels-idx1-ubyte.gz"));
    let imgs = read_gz(&img_path)?;
    let lbls = read_gz(&lbl_path)?;
    let bad = |p: &Path, r: String| PipelineError::BadIdx { path: p.to_path_buf(), reason: r };
    if imgs.len() < 16 || be_u32(&imgs, 0) != 0x0803 {
        return Err(bad(&img_path, "not an idx3 ubyte file (magic 0x00000803 expected)".into()));
    }
    if lbls.len() < 8 || be_u32(&lbls, 0) != 0x0801 {
        return Err(bad(&lbl_path, "not an idx1 ubyte file (magic 0x00000801 expected)".into()));
    }
    let (n, rows, cols) = (be_u32(&imgs, 4) as usize, be_u32(&imgs, 8) as usize, be_u32(&imgs, 12) as usize);
    let nl = be_u32(&lbls, 4) as usize;
    if imgs.len() != 16 + n * rows * cols {
        return Err(bad(&img_path, format!("{} bytes for {n} images of {rows}x{cols}", imgs.len())));
    }
    if nl != n || lbls.len() != 8 + n {
        return Err(bad(&lbl_path, format!("{nl} labels for {n} images")));
    }
    let classes: Vec<String> = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let label = lbls[8 + i] as usize;
        if label >= classes.len() {
            return Err(bad(&lbl_path, format!("label {label} at index {i} is not in 0..=9")));
        }
        let px = &imgs[16 + i * rows * cols..16 + (i + 1) * rows * cols];
        let mut png = Vec::with_capacity(rows * cols + 100);
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            px,
            cols as u32,
            rows as u32,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| PipelineError::Image { key: format!("{}_{i:08}", split.name()), reason: e.to_string() })?;
        out.push(SourceImage {
            key: format!("{}_{i:08}", split.name()),
            class_index: label as i64,
            class_name: classes[label].clone(),
            ext: "png".into(),
            bytes: png,
            source_path: format!(
                "{}#{i}",
                img_path.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
            ),
        });
    }
    Ok((classes, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fashion_mnist_test_split() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.exists() {
            eprintln!("skipping: {} missing", dir.display());
            return;
        }
        let (classes, imgs) = fashion_mnist(dir, Split::Test).unwrap();
        assert_eq!(classes.len(), 10);
        assert_eq!(imgs.len(), 10_000);
        assert_eq!(imgs[0].key, "test_00000000");
        // The first t10k label is 9 (Ankle boot) in the published data set.
        assert_eq!((imgs[0].class_index, imgs[0].class_name.as_str()), (9, "Ankle boot"));
        let dec = image::load_from_memory(&imgs[0].bytes).unwrap();
        assert_eq!((dec.width(), dec.height(), dec.color()), (28, 28, image::ColorType::L8));
        let missing = fashion_mnist("/nonexistent-dir", Split::Train).unwrap_err();
        assert!(matches!(missing, PipelineError::MissingIdx { .. }));
    }
}
