//! The ImageNet (ILSVRC2012) archives as they are downloaded, read in place (nothing is
//! unpacked to disk):
//! * `ILSVRC2012_img_train.tar`: a tar of 1,000 per-synset tars `nXXXXXXXX.tar`, each holding
//!   `nXXXXXXXX_N.JPEG` files;
//! * `ILSVRC2012_img_val.tar`: the 50,000 files `ILSVRC2012_val_000NNNNN.JPEG`, labelled from a
//!   [`ValLabels`] file.
//!
//! Both are indexed first ([`index_tar`]: one header read per image, the per-synset tars on
//! several threads), then read by positioned reads from the packing workers, so images can be
//! written in any (seeded) order with every core busy and only the index (about 70 bytes an
//! image) in memory. The class index is the WNID's position in sorted order, as torchvision's
//! ImageFolder numbers the unpacked folders; the sample key is the original file stem
//! (`n01440764_10026`, `ILSVRC2012_val_00000001`), so the public 1 % / 10 % subset lists match keys
//! directly.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::dataset::labels::{is_wnid, stem_of, ValLabels};
use crate::dataset::pack::{read_sized, ImageList, ListedImage};
use crate::dataset::seeded_shuffle;
use crate::dataset::tarindex::{index_tar, FileRange, TarMember};
use crate::{PipelineError, Result};

/// Image file name endings recognised inside the archives (any case); other members are still
/// packed and checked, these only tell the two archives apart.
const IMAGE_SUFFIXES: [&str; 4] = [".jpeg", ".jpg", ".png", ".webp"];

/// One image of an archive: where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// The original file name (`n01440764_10026.JPEG`).
    name: String,
    class: u32,
    offset: u64,
    size: u64,
}

/// The images of an ImageNet archive, in sorted order until [`ArchiveImages::shuffled`].
pub struct ArchiveImages {
    path: PathBuf,
    file: File,
    classes: Vec<String>,
    entries: Vec<Entry>,
}

impl ArchiveImages {
    /// The same images in the order of [`seeded_shuffle`] with `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        seeded_shuffle(&mut self.entries, seed);
        self
    }

    /// Number of images.
    pub fn images(&self) -> usize {
        self.entries.len()
    }
}

impl ImageList for ArchiveImages {
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn class_names(&self) -> &[String] {
        &self.classes
    }
    fn read(&self, i: usize) -> Result<ListedImage> {
        let e = &self.entries[i];
        let bytes = read_sized(FileRange::new(&self.file, e.offset, e.size), e.size, &self.path)?;
        if bytes.len() as u64 != e.size && e.size <= crate::dataset::pack::MAX_IMAGE_BYTES {
            return Err(PipelineError::BadArchive {
                path: self.path.clone(),
                reason: format!(
                    "{} ended after {} of its {} bytes: the file changed while being read",
                    e.name,
                    bytes.len(),
                    e.size
                ),
            });
        }
        Ok(ListedImage {
            key: stem_of(&e.name).to_string(),
            class_index: e.class as i64,
            source: e.name.clone(),
            bytes,
            size: e.size,
        })
    }
}

fn open(path: &Path) -> Result<(File, u64)> {
    let file = File::open(path).map_err(|e| PipelineError::read(path, e))?;
    let meta = file.metadata().map_err(|e| PipelineError::read(path, e))?;
    if meta.is_dir() {
        return Err(PipelineError::BadArchive {
            path: path.to_path_buf(),
            reason: "is a folder; --format ilsvrc reads the archive file as downloaded (use --format imagefolder for class folders)".into(),
        });
    }
    Ok((file, meta.len()))
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    IMAGE_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Where an indexing thread leaves the members of one per-synset tar (or why it could not).
type Slot = Mutex<Option<std::result::Result<Vec<TarMember>, String>>>;

/// The training archive: a tar of per-synset tars `nXXXXXXXX.tar` (in any order), indexed with
/// `threads` threads. `indexed(done, total)` is called as per-synset tars are indexed.
///
/// Errors: [`PipelineError::Read`] when the file cannot be opened; [`PipelineError::BadArchive`]
/// for a folder, a member that is not a per-synset tar (e.g. the validation archive given with
/// `--split train`), a repeated WNID, no synset, or a corrupt or truncated tar (naming the member).
pub fn ilsvrc_train(path: &Path, threads: usize, indexed: &(dyn Fn(u64, u64) + Sync)) -> Result<ArchiveImages> {
    let bad = |reason: String| PipelineError::BadArchive { path: path.to_path_buf(), reason };
    let (file, len) = open(path)?;
    let top = index_tar(&file, 0, len).map_err(bad)?;
    let mut synsets: Vec<(String, TarMember)> = Vec::with_capacity(top.len());
    for m in top {
        let name = base_name(&m.path);
        match name.strip_suffix(".tar") {
            Some(wnid) if is_wnid(wnid) => synsets.push((wnid.to_string(), m)),
            _ if is_image_name(name) => {
                return Err(bad(format!(
                    "holds image files ({}), not per-synset tars: for the validation archive pass --split val --labels FILE",
                    m.path
                )))
            }
            _ => return Err(bad(format!("member {} is not a per-synset tar nXXXXXXXX.tar", m.path))),
        }
    }
    synsets.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = synsets.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(bad(format!("holds {}.tar twice", w[0].0)));
    }
    if synsets.is_empty() {
        return Err(bad("holds no per-synset tar nXXXXXXXX.tar: is it ILSVRC2012_img_train.tar?".into()));
    }
    // index the per-synset tars on `threads` threads; results land in their sorted slot
    let n = synsets.len();
    let slots: Vec<Slot> = (0..n).map(|_| Mutex::new(None)).collect();
    let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let m = &synsets[i].1;
                let r = index_tar(&file, m.offset, m.size);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
                indexed(done.fetch_add(1, Ordering::Relaxed) as u64 + 1, n as u64);
            });
        }
    });
    let mut entries = Vec::new();
    for (class, ((wnid, m), slot)) in synsets.iter().zip(slots).enumerate() {
        let members = slot
            .into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| PipelineError::Internal(format!("{wnid}.tar was not indexed")))?
            .map_err(|e| bad(format!("member {}: {e}", m.path)))?;
        let start = entries.len();
        entries.extend(members.into_iter().map(|t| Entry {
            name: base_name(&t.path).to_string(),
            class: class as u32,
            offset: t.offset,
            size: t.size,
        }));
        entries[start..].sort_by(|a, b| a.name.cmp(&b.name));
    }
    if entries.is_empty() {
        return Err(bad("its per-synset tars hold no file".into()));
    }
    let classes = synsets.into_iter().map(|(wnid, _)| wnid).collect();
    Ok(ArchiveImages { path: path.to_path_buf(), file, classes, entries })
}

/// The validation archive (flat image files), each image labelled by `labels` through its file
/// stem; sorted by file name.
///
/// Errors: [`PipelineError::Read`] when the file cannot be opened; [`PipelineError::BadArchive`]
/// for a folder, a tar of tars (the training archive given with `--split val`), no image, or a
/// corrupt or truncated tar; [`PipelineError::BadLabels`] when images have no label (naming the
/// first and the count).
pub fn ilsvrc_val(path: &Path, labels: &ValLabels, labels_path: &Path) -> Result<ArchiveImages> {
    let bad = |reason: String| PipelineError::BadArchive { path: path.to_path_buf(), reason };
    let (file, len) = open(path)?;
    let members = index_tar(&file, 0, len).map_err(bad)?;
    if members.is_empty() {
        return Err(bad("holds no file: is it ILSVRC2012_img_val.tar?".into()));
    }
    if let Some(m) = members.iter().find(|m| m.path.ends_with(".tar")) {
        return Err(bad(format!(
            "holds tars ({}): for the training archive (a tar of per-synset tars) pass --split train",
            m.path
        )));
    }
    let mut entries = Vec::with_capacity(members.len());
    let mut unlabelled: Vec<&str> = Vec::new();
    for m in &members {
        let name = base_name(&m.path);
        match labels.class_of(stem_of(name)) {
            Some(class) => {
                entries.push(Entry { name: name.to_string(), class: class as u32, offset: m.offset, size: m.size })
            }
            None => unlabelled.push(name),
        }
    }
    if let Some(first) = unlabelled.first() {
        return Err(PipelineError::BadLabels {
            path: labels_path.to_path_buf(),
            reason: format!(
                "no label for {first} ({} of the {} files of {} have none); give the labels of this archive",
                unlabelled.len(),
                members.len(),
                path.display()
            ),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ArchiveImages { path: path.to_path_buf(), file, classes: labels.classes.clone(), entries })
}
