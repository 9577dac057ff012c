//! ImageNet-style class folders (`DIR/<class>/<image>`): the scan, one image as a
//! [`SourceImage`], and the folder as an [`ImageList`] for [`crate::dataset::pack_images`].
use std::fs;
use std::path::{Path, PathBuf};

use crate::dataset::pack::{read_sized, ImageList, ListedImage};
use crate::dataset::{sanitize_key, SourceImage, IMAGE_EXTS};
use crate::{PipelineError, Result};

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

/// The images of a class folder in a given order (e.g. [`crate::dataset::seeded_shuffle`]d), read
/// by the packing workers: key `{class}_{stem}`, source path relative to the folder.
pub struct FolderImages {
    root: PathBuf,
    classes: Vec<String>,
    items: Vec<(PathBuf, i64)>,
}

impl FolderImages {
    /// `items` as [`scan_image_folder`] returns them (in any order), `classes` their class names.
    pub fn new(root: impl AsRef<Path>, classes: Vec<String>, items: Vec<(PathBuf, i64)>) -> Self {
        FolderImages { root: root.as_ref().to_path_buf(), classes, items }
    }
}

impl ImageList for FolderImages {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn read(&self, i: usize) -> Result<ListedImage> {
        let (path, class_index) = &self.items[i];
        let class_name = self.classes.get(*class_index as usize).map(String::as_str).unwrap_or_default();
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let source = path.strip_prefix(&self.root).unwrap_or(path).to_string_lossy().to_string();
        let file = fs::File::open(path).map_err(|e| PipelineError::read(path, e))?;
        let size = file.metadata().map_err(|e| PipelineError::read(path, e))?.len();
        let bytes = read_sized(file, size, path)?;
        Ok(ListedImage { key: format!("{class_name}_{stem}"), class_index: *class_index, source, bytes, size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
