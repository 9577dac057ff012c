//! A transfer dataset of the transfer-linear protocol: an image folder with `train/` and `test/`
//! (and optionally `val/`) splits in the ImageFolder layout, checked before any work, and the
//! held-out validation part of `train/` when there is no `val/`.

use crate::error::{EvalError, Result};
use crate::semi::balanced_subset;
use dspnet_pipeline::dataset::{sanitize_key, scan_image_folder, ImageFolderList};
use dspnet_pipeline::PipelineError;
use std::path::{Path, PathBuf};

/// The layout, as error messages state it.
const LAYOUT: &str = "expected DIR/train/<class>/<image>, DIR/test/<class>/<image> and optionally DIR/val/<class>/<image> (jpg, jpeg, png, webp)";

/// The images of one split, sorted by class then file name.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitFiles {
    pub files: Vec<PathBuf>,
    /// Class index (into [`TransferDataset::classes`]) of each file.
    pub labels: Vec<i64>,
}

impl SplitFiles {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True without images.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// An opened transfer dataset.
#[derive(Clone, Debug)]
pub struct TransferDataset {
    /// The folder, absolute (symbolic links not resolved).
    pub dir: PathBuf,
    /// The folder's name as given (sanitised: ASCII letters, digits, `_`, `-`), which names the
    /// records.
    pub name: String,
    /// Class names: the sub-folders of `train/`, sorted (class index = position, as
    /// torchvision's `ImageFolder`).
    pub classes: Vec<String>,
    pub train: SplitFiles,
    pub val: Option<SplitFiles>,
    pub test: SplitFiles,
}

impl TransferDataset {
    /// Opens `dir` and checks it: `train/` and `test/` exist and hold images, every class of
    /// `test/` (and `val/`) is a class of `train/`, every class of `train/` holds an image, and
    /// without `val/` at least 2 (one goes to the held-out validation part).
    ///
    /// Errors: [`EvalError::TransferData`] naming the folder or class.
    pub fn open(dir: &Path) -> Result<Self> {
        let bad = |message: String| EvalError::transfer_data(dir, message);
        if !dir.is_dir() {
            return Err(bad(format!("no such folder; {LAYOUT}")));
        }
        let abs = std::path::absolute(dir).map_err(|e| bad(format!("cannot resolve the folder: {e}")))?;
        // the name as given (a symlink keeps its own name); `.`, `..` or `/` name the folder they
        // resolve to
        let named = match abs.components().next_back() {
            Some(std::path::Component::Normal(n)) => Some(n.to_os_string()),
            _ => dir.canonicalize().ok().and_then(|c| c.file_name().map(|n| n.to_os_string())),
        };
        let name = named.map(|n| sanitize_key(&n.to_string_lossy())).unwrap_or_else(|| "data".into());
        let (classes, train_items) = scan(dir, &abs, "train")?;
        let index = |split: &str, class: &str| -> Result<i64> {
            classes.iter().position(|c| c == class).map(|i| i as i64).ok_or_else(|| {
                bad(format!(
                    "class {split}/{class} is not a class of train/ ({} classes: {}); every test and validation class needs training images",
                    classes.len(),
                    preview(&classes)
                ))
            })
        };
        let remap = |split: &str, (names, items): ImageFolderList| -> Result<SplitFiles> {
            let to_train: Vec<i64> = names.iter().map(|c| index(split, c)).collect::<Result<_>>()?;
            let (files, labels) = items.into_iter().map(|(p, c)| (p, to_train[c as usize])).unzip();
            Ok(SplitFiles { files, labels })
        };
        let test = remap("test", scan(dir, &abs, "test")?)?;
        let val = if abs.join("val").exists() { Some(remap("val", scan(dir, &abs, "val")?)?) } else { None };
        let (files, labels) = train_items.into_iter().unzip();
        let train = SplitFiles { files, labels };
        let need = if val.is_some() { 1 } else { 2 };
        for (c, class) in classes.iter().enumerate() {
            let n = train.labels.iter().filter(|&&l| l == c as i64).count();
            if n < need {
                let why = if val.is_some() {
                    "every class of train/ needs an image".to_string()
                } else {
                    "without val/ a class-balanced part of train/ is held out for validation, so every class needs at least 2 images (or add DIR/val/)".to_string()
                };
                return Err(bad(format!("train/{class} holds {n} image(s); {why}")));
            }
        }
        Ok(TransferDataset { dir: abs, name, classes, train, val, test })
    }

    /// The records' protocol name: `transfer-linear-<name>`.
    pub fn protocol(&self) -> String {
        format!("transfer-linear-{}", self.name)
    }

    /// The validation part held out of `train/` when there is no `val/`: indices (ascending)
    /// into `train`, `floor(fraction · n_c)` (at least 1) of each class's `n_c` images, drawn
    /// with `seed` by [`balanced_subset`] from the images' paths (so the draw depends on the file
    /// names, not on the order they were listed in). `fraction` in (0, 0.5] leaves every class at
    /// least one training image (each has 2 or more, [`TransferDataset::open`]).
    ///
    /// Errors: a fraction outside (0, 1].
    pub fn held_out(&self, fraction: f64, seed: u64) -> Result<Vec<usize>> {
        let keys: Vec<String> = self
            .train
            .files
            .iter()
            .map(|p| p.strip_prefix(&self.dir).unwrap_or(p).to_string_lossy().to_string())
            .collect();
        balanced_subset(&keys, &self.train.labels, fraction, seed)
    }
}

/// The first class names, for messages.
fn preview(classes: &[String]) -> String {
    let shown: Vec<&str> = classes.iter().take(8).map(String::as_str).collect();
    let more = if classes.len() > shown.len() { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// `abs/split` scanned as class folders (class names sorted, images sorted by class then name);
/// `dir` is the folder as given, for messages.
///
/// Errors: [`EvalError::TransferData`] for a missing, unreadable or image-less split folder.
fn scan(dir: &Path, abs: &Path, split: &str) -> Result<ImageFolderList> {
    let bad = |message: String| EvalError::transfer_data(dir, message);
    let path = abs.join(split);
    if !path.is_dir() {
        return Err(bad(format!("no {split}/ folder; {LAYOUT}")));
    }
    scan_image_folder(&path).map_err(|e| match e {
        PipelineError::NoImages { .. } => bad(format!("{split}/ holds no image in class folders; {LAYOUT}")),
        other => bad(format!("cannot read {split}/: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn classes_follow_train_and_splits_are_mapped_by_name() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("my data");
        for f in ["train/b/1.png", "train/b/2.png", "train/a/1.jpg", "train/a/2.jpg", "train/c/1.png", "train/c/2.png"]
        {
            touch(&root, f);
        }
        touch(&root, "test/c/9.png");
        touch(&root, "test/a/8.png");
        let ds = TransferDataset::open(&root).unwrap();
        assert_eq!(ds.classes, vec!["a", "b", "c"]);
        assert_eq!(ds.name, "my_data");
        assert_eq!(ds.protocol(), "transfer-linear-my_data");
        assert_eq!(ds.train.labels, vec![0, 0, 1, 1, 2, 2]);
        // test/ has only a and c: its own folder indices (0, 1) become train's (0, 2)
        assert_eq!(ds.test.labels, vec![0, 2]);
        assert!(ds.val.is_none());
        // held out: floor(0.5 · 2) = 1 image of each class
        let h = ds.held_out(0.5, 0).unwrap();
        assert_eq!(h.len(), 3);
        let classes: Vec<i64> = h.iter().map(|&i| ds.train.labels[i]).collect();
        assert_eq!(classes, vec![0, 1, 2]);
        assert_eq!(ds.held_out(0.5, 0).unwrap(), h, "seeded: the same draw again");
        // a symbolic link is named as given; `.` by the folder it is
        let link = d.path().join("linked");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert_eq!(TransferDataset::open(&link).unwrap().name, "linked");
        assert_eq!(TransferDataset::open(&root.join("train/..")).unwrap().name, "my_data");
    }

    #[test]
    fn bad_layouts_are_named() {
        let d = tempfile::tempdir().unwrap();
        let err = |p: &Path| TransferDataset::open(p).unwrap_err().to_string();
        let e = err(&d.path().join("missing"));
        assert!(e.starts_with("--transfer-data ") && e.contains("no such folder"), "{e}");
        let root = d.path().join("ds");
        touch(&root, "train/a/1.png");
        touch(&root, "train/a/2.png");
        let e = err(&root);
        assert!(e.contains("no test/ folder"), "{e}");
        touch(&root, "test/zebra/1.png");
        let e = err(&root);
        assert!(e.contains("test/zebra") && e.contains("not a class of train/"), "{e}");
        fs::remove_dir_all(root.join("test/zebra")).unwrap();
        fs::create_dir_all(root.join("test/a")).unwrap();
        let e = err(&root);
        assert!(e.contains("test/ holds no image"), "{e}");
        touch(&root, "test/a/1.png");
        touch(&root, "train/b/1.png");
        let e = err(&root);
        assert!(e.contains("train/b holds 1 image(s)") && e.contains("val/"), "{e}");
        // with val/ one training image per class is enough
        touch(&root, "val/b/1.png");
        let ds = TransferDataset::open(&root).unwrap();
        assert_eq!(ds.val.as_ref().map(|v| v.labels.clone()), Some(vec![1]));
        assert!(!e.contains('\n'));
    }
}
