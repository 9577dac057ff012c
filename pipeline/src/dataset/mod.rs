//! Inputs of `dspnet-shard` and their conversion into WebDataset samples (`KEY.jpg|png|webp`,
//! `KEY.cls`, `KEY.json`): ImageNet-style class folders, Fashion-MNIST IDX files and the ImageNet
//! (ILSVRC2012) archives as they are downloaded, packed into shards by a pool of threads that
//! checks every image.
//!
//! | module | what it holds |
//! |---|---|
//! | `folder` | [`scan_image_folder`], [`load_folder_image`], [`FolderImages`] |
//! | `fashion_mnist` | [`fashion_mnist`], [`FASHION_MNIST_CLASSES`] |
//! | `tarindex` | [`index_tar`]: the members of a plain tar (or of a tar inside one) by seeking over their data |
//! | `ilsvrc` | [`ilsvrc_train`], [`ilsvrc_val`]: the training archive (a tar of per-synset tars) and the flat validation tar as an [`ArchiveImages`] |
//! | `labels` | [`read_val_labels`]: validation labels from the devkit, `LOC_val_solution.csv` or `filename wnid` lines |
//! | `matv5` | [`read_mat`]: the MATLAB v5 MAT-file reader for the devkit's `meta.mat` |
//! | `check` | [`check_image`], [`Verify`]: every image's header (or a full decode) before it is stored |
//! | `pack` | [`pack_images`]: check on worker threads, write in order; [`ImageList`], [`Progress`] |
mod check;
mod fashion_mnist;
mod folder;
mod ilsvrc;
mod labels;
mod matv5;
mod pack;
mod tarindex;

pub use check::{check_image, ImageFormat, Verify};
pub use fashion_mnist::{fashion_mnist, FASHION_MNIST_CLASSES};
pub use folder::{load_folder_image, scan_image_folder, FolderImages, ImageFolderList};
pub use ilsvrc::{ilsvrc_train, ilsvrc_val, ArchiveImages};
pub use labels::{is_wnid, read_val_labels, ValLabels};
pub use matv5::{read_mat, MatValue};
pub use pack::{pack_images, ImageList, ListedImage, NoProgress, PackOptions, Progress, MAX_IMAGE_BYTES};
pub use tarindex::{index_tar, TarMember};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::shard::RawSample;

/// Image extensions accepted in class folders (matched case-insensitively).
pub const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

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
        self.clone().into_sample()
    }

    /// [`SourceImage::to_sample`] without copying the image bytes.
    pub fn into_sample(self) -> RawSample {
        let meta = serde_json::json!({ "class": self.class_name, "source": self.source_path });
        RawSample::new(self.key)
            .with(&self.ext, self.bytes)
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

/// Shuffle in place with `ChaCha8Rng::seed_from_u64(seed)` (same seed → same order).
pub fn seeded_shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    items.shuffle(&mut rng);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_get_numbered_suffixes() {
        let mut u = UniqueKeys::default();
        let got: Vec<String> =
            ["a_b", "a_b", "c", "a_b", "a_b-1"].iter().map(|k| u.make_unique(k.to_string())).collect();
        // the last "a_b-1" was taken by the second "a_b", so it becomes "a_b-1-1"
        assert_eq!(got, ["a_b", "a_b-1", "c", "a_b-2", "a_b-1-1"]);
    }

    #[test]
    fn keys_are_sanitised() {
        assert_eq!(sanitize_key("cat_a.b c"), "cat_a_b_c");
    }
}
