//! Inputs of `dspnet-shard`: ImageNet-style class folders and Fashion-MNIST IDX files, and their
//! conversion into WebDataset samples (`KEY.jpg|png|webp`, `KEY.cls`, `KEY.json`).
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::shard::RawSample;
use crate::{PipelineError, Result};

/// Image extensions accepted in class folders (matched case-insensitively).
pub const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Fashion-MNIST class names, index = label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// One source image ready to be written as a WebDataset sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceImage {
    /// Unique, WebDataset-safe key (ASCII letters, digits, `_`, `-`; no dots).
    pub key: String,
    /// Class index into the class-name list.
    pub class_index: i64,
    /// Class name.
    pub class_name: String,
    /// Stored extension: `"jpg"` (for .jpg/.jpeg), `"png"` or `"webp"`.
    pub ext: String,
    /// Original encoded bytes (not re-encoded).
    pub bytes: Vec<u8>,
    /// Where it came from, relative to the input folder (e.g. `airplane/0001.jpg`).
    pub source_path: String,
}

impl SourceImage {
    /// The WebDataset sample: `KEY.<ext>` (original bytes), `KEY.cls` (ASCII decimal class index)
    /// and `KEY.json` (`{"class": name, "source": relative path}`).
    pub fn to_sample(&self) -> RawSample {
        let meta = serde_json::json!({ "class": self.class_name, "source": self.source_path });
        RawSample::new(self.key.clone())
            .with(&self.ext, self.bytes.clone())
            .with("cls", self.class_index.to_string().into_bytes())
            .with("json", meta.to_string().into_bytes())
    }
}

/// Which Fashion-MNIST files to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `train-*-ubyte.gz` (60 000 images).
    Train,
    /// `t10k-*-ubyte.gz` (10 000 images).
    Test,
}

impl Split {
    /// `"train"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Replace every character that is not an ASCII letter, digit, `_` or `-` by `_`.
pub fn sanitize_key(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn image_ext(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    IMAGE_EXTS.contains(&ext.as_str()).then_some(ext)
}

/// Result of [`scan_image_folder`]: (class names sorted, `(image path, class index)` list).
pub type ImageFolderList = (Vec<String>, Vec<(PathBuf, i64)>);

/// Scan `DIR/<class>/<image>` (one level; `.jpg .jpeg .png .webp` in any case).
///
/// Returns the class names (sub-folder names, sorted) and `(path, class_index)` for every image,
/// sorted by class then file name. Errors: [`PipelineError::Read`] when `dir` is unreadable,
/// [`PipelineError::NoImages`] when it holds no image.
pub fn scan_image_folder(dir: impl AsRef<Path>) -> Result<ImageFolderList> {
    let dir = dir.as_ref();
    let mut classes: Vec<String> = fs::read_dir(dir)
        .map_err(|e| PipelineError::read(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    classes.sort();
    let mut items = Vec::new();
    for (ci, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        let mut files: Vec<PathBuf> = fs::read_dir(&cdir)
            .map_err(|e| PipelineError::read(&cdir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file() && image_ext(p).is_some())
            .collect();
        files.sort();
        items.extend(files.into_iter().map(|p| (p, ci as i64)));
    }
    if items.is_empty() {
        return Err(PipelineError::NoImages { path: dir.to_path_buf() });
    }
    Ok((classes, items))
}

/// Makes sample keys unique: `{class}_{stem}` keys can collide after sanitising (e.g. `a.b.jpg`
/// and `a_b.png`), so a repeated key gets `-1`, `-2`, ... in the order images are written, which
/// is deterministic when the image order is.
#[derive(Debug, Default)]
pub struct UniqueKeys(std::collections::HashSet<String>);

impl UniqueKeys {
    /// `key` itself the first time, else `key-N` with the smallest N not taken yet.
    pub fn make_unique(&mut self, key: String) -> String {
        let mut candidate = key.clone();
        let mut n = 1;
        while !self.0.insert(candidate.clone()) {
            candidate = format!("{key}-{n}");
            n += 1;
        }
        candidate
    }
}

/// Read one image of a class folder as a [`SourceImage`] with key `{class}_{stem}` (sanitised).
pub fn load_folder_image(
    root: impl AsRef<Path>,
    path: &Path,
    class_index: i64,
    class_names: &[String],
) -> Result<SourceImage> {
    let bytes = fs::read(path).map_err(|e| PipelineError::read(path, e))?;
    let ext = match image_ext(path).as_deref() {
        Some("jpeg") | Some("jpg") => "jpg".to_string(),
        Some(e) => e.to_string(),
        None => {
            return Err(PipelineError::config("input image", format!("{} is not jpg/jpeg/png/webp", path.display())))
        }
    };
    let class_name = class_names.get(class_index as usize).cloned().unwrap_or_default();
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let rel = path.strip_prefix(root.as_ref()).unwrap_or(path).to_string_lossy().to_string();
    Ok(SourceImage {
        key: sanitize_key(&format!("{class_name}_{stem}")),
        class_index,
        class_name,
        ext,
        bytes,
        source_path: rel,
    })
}

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

/// Shuffle in place with `ChaCha8Rng::seed_from_u64(seed)` (same seed → same order).
pub fn seeded_shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    items.shuffle(&mut rng);
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_keys_get_numbered_suffixes() {
        let mut u = super::UniqueKeys::default();
        let got: Vec<String> =
            ["a_b", "a_b", "c", "a_b", "a_b-1"].iter().map(|k| u.make_unique(k.to_string())).collect();
        // the last "a_b-1" was taken by the second "a_b", so it becomes "a_b-1-1"
        assert_eq!(got, ["a_b", "a_b-1", "c", "a_b-2", "a_b-1-1"]);
    }

    use super::*;

    #[test]
    fn keys_are_sanitised() {
        assert_eq!(sanitize_key("cat_a.b c"), "cat_a_b_c");
    }

    #[test]
    fn scan_finds_classes_case_insensitive() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("b")).unwrap();
        fs::create_dir_all(d.path().join("a")).unwrap();
        fs::write(d.path().join("b/x.JPEG"), b"1").unwrap();
        fs::write(d.path().join("a/y.png"), b"2").unwrap();
        fs::write(d.path().join("a/z.txt"), b"3").unwrap();
        let (classes, items) = scan_image_folder(d.path()).unwrap();
        assert_eq!(classes, vec!["a", "b"]);
        assert_eq!(items, vec![(d.path().join("a/y.png"), 0), (d.path().join("b/x.JPEG"), 1)]);
        let img = load_folder_image(d.path(), &d.path().join("b/x.JPEG"), 1, &classes).unwrap();
        assert_eq!((img.key.as_str(), img.ext.as_str(), img.source_path.as_str()), ("b_x", "jpg", "b/x.JPEG"));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(scan_image_folder(empty.path()).unwrap_err(), PipelineError::NoImages { .. }));
    }

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
