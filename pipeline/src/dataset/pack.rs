//! Packing a list of images into shards with every core: worker threads read and check the
//! images ([`check_image`]) in any order, the calling thread writes them in list order. The
//! shards are therefore the same bytes whatever the number of threads, and at most a bounded
//! window of images (`8 × threads`, at least 32) is in memory at once, however long the list.
//!
//! ```text
//! list ──(index i, one credit per image in flight)──► workers: read i, check ──► (i, outcome)
//!      ──► writer (calling thread): reorder, key, write sample i / record a skipped file ──► credit back
//! ```
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::dataset::check::{check_image, ImageFormat, Verify};
use crate::dataset::{sanitize_key, SourceImage, UniqueKeys};
use crate::shard::{Manifest, ShardWriter, SkippedFile};
use crate::{PipelineError, Result};

/// Largest image file accepted, in bytes (256 MiB); a larger one is skipped as unusable without
/// being read (the largest ImageNet photo is about 15 MB).
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// One image of an [`ImageList`], read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedImage {
    /// Sample key before sanitising and de-duplication (e.g. `airplane_0001`, `n01440764_10026`).
    pub key: String,
    /// Index into [`ImageList::class_names`].
    pub class_index: i64,
    /// Where it came from, for `.json` and the skipped-file list (a relative path or archive member).
    pub source: String,
    /// The file's bytes; empty when `size` exceeds [`MAX_IMAGE_BYTES`] (not read).
    pub bytes: Vec<u8>,
    /// The file's size in bytes.
    pub size: u64,
}

/// Images in the order they are to be written, readable from several threads at once.
pub trait ImageList: Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// True when there is no image.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names; [`ListedImage::class_index`] indexes this list.
    fn class_names(&self) -> &[String];
    /// Image `i` (`i < len()`). Errors: [`PipelineError::Read`] (or another variant naming the
    /// file) when it cannot be read: this ends the packing, unlike an unusable image.
    fn read(&self, i: usize) -> Result<ListedImage>;
}

/// Reads `size` bytes from `r` unless `size` exceeds [`MAX_IMAGE_BYTES`] (then nothing is read
/// and the bytes are empty). Errors: [`PipelineError::Read`] naming `path`.
pub(crate) fn read_sized(r: impl Read, size: u64, path: &Path) -> Result<Vec<u8>> {
    if size > MAX_IMAGE_BYTES {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::with_capacity(size as usize);
    r.take(size).read_to_end(&mut bytes).map_err(|e| PipelineError::read(path, e))?;
    Ok(bytes)
}

/// Receives the progress of [`pack_images`] (called on the writing thread; each call should be
/// cheap).
pub trait Progress: Sync {
    /// Packing starts: `total` images.
    fn start(&self, _total: u64) {}
    /// `done` images have been written or skipped.
    fn advance(&self, _done: u64) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// How [`pack_images`] checks and which threads it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackOptions {
    /// How much of each image is checked.
    pub verify: Verify,
    /// Stop at the first unusable image (in list order) with [`PipelineError::BadImage`] instead
    /// of skipping it; pair it with [`ShardWriter::new_staged`] so that no shard is written.
    pub strict: bool,
    /// Worker threads that read and check images (at least 1); the calling thread writes.
    pub threads: usize,
}

impl Default for PackOptions {
    /// Header check, skip unusable images, one worker per core.
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        PackOptions { verify: Verify::Header, strict: false, threads }
    }
}

enum Outcome {
    Good(ListedImage, ImageFormat),
    Bad(SkippedFile),
}

fn check_listed(img: ListedImage, verify: Verify) -> Outcome {
    let checked = if img.size > MAX_IMAGE_BYTES {
        Err(format!("{} bytes: larger than the {} MiB accepted for one image", img.size, MAX_IMAGE_BYTES >> 20))
    } else {
        check_image(&img.bytes, verify)
    };
    match checked {
        Ok(format) => Outcome::Good(img, format),
        Err(reason) => Outcome::Bad(SkippedFile { name: img.source, reason }),
    }
}

/// Writes every usable image of `list`, in list order, into `writer`'s shards as samples
/// `KEY.jpg|png|webp` (the format found in the bytes), `KEY.cls`, `KEY.json`
/// ([`SourceImage::into_sample`]); keys are [`ListedImage::key`] sanitised and made unique in that
/// order. Unusable images ([`check_image`]) are recorded in the manifest's `skipped` list, or
/// with `opts.strict` end the packing. Returns the manifest written by [`ShardWriter::finish`].
///
/// Errors: [`PipelineError::BadImage`] for the first unusable image with `opts.strict`;
/// [`PipelineError::NoUsableImage`] when every image is unusable; the first error of
/// [`ImageList::read`] in list order; the writer's errors. On error no manifest is written and
/// the writer is dropped (a staged writer then leaves no shard).
pub fn pack_images(
    list: &dyn ImageList,
    mut writer: ShardWriter,
    opts: &PackOptions,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let n = list.len();
    let threads = opts.threads.max(1);
    let window = (8 * threads).max(32);
    let (credit_tx, credit_rx) = bounded::<()>(window);
    for _ in 0..window {
        credit_tx.send(()).map_err(|_| PipelineError::Internal("credit channel closed".into()))?;
    }
    let (done_tx, done_rx) = unbounded::<(usize, Result<Outcome>)>();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    progress.start(n as u64);
    let written = std::thread::scope(|s| {
        for _ in 0..threads {
            let (credit_rx, done_tx, next, stop) = (credit_rx.clone(), done_tx.clone(), &next, &stop);
            s.spawn(move || {
                // one credit per image taken: at most `window` images are between here and the writer
                while credit_rx.recv().is_ok() && !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let outcome = list.read(i).map(|img| check_listed(img, opts.verify));
                    if done_tx.send((i, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((credit_rx, done_tx));
        let result = write_in_order(list, &mut writer, opts, progress, done_rx, credit_tx);
        // the channels are closed now; workers finish the image in hand and stop
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    if written == 0 {
        let first = writer_first_skipped(&writer);
        return Err(PipelineError::NoUsableImage { total: n as u64, first: first.0, reason: first.1 });
    }
    writer.finish(list.class_names())
}

fn writer_first_skipped(writer: &ShardWriter) -> (String, String) {
    writer.skipped_files().first().map(|f| (f.name.clone(), f.reason.clone())).unwrap_or_default()
}

/// The writer's loop: takes outcomes as they come, writes them in index order, returns a
/// credit per image done. Returns the number of samples written.
fn write_in_order(
    list: &dyn ImageList,
    writer: &mut ShardWriter,
    opts: &PackOptions,
    progress: &dyn Progress,
    done_rx: Receiver<(usize, Result<Outcome>)>,
    credit_tx: Sender<()>,
) -> Result<u64> {
    let n = list.len();
    let classes = list.class_names();
    let mut pending: BTreeMap<usize, Result<Outcome>> = BTreeMap::new();
    let mut keys = UniqueKeys::default();
    let (mut next, mut written) = (0usize, 0u64);
    while next < n {
        let (i, outcome) =
            done_rx.recv().map_err(|_| PipelineError::Internal("packing workers stopped early".into()))?;
        pending.insert(i, outcome);
        while let Some(outcome) = pending.remove(&next) {
            match outcome? {
                Outcome::Good(img, format) => {
                    let class_name =
                        usize::try_from(img.class_index).ok().and_then(|c| classes.get(c)).cloned().ok_or_else(
                            || PipelineError::Internal(format!("class index {} of {}", img.class_index, img.source)),
                        )?;
                    let sample = SourceImage {
                        key: keys.make_unique(sanitize_key(&img.key)),
                        class_index: img.class_index,
                        class_name,
                        ext: format.ext().to_string(),
                        bytes: img.bytes,
                        source_path: img.source,
                    };
                    writer.write(&sample.into_sample())?;
                    written += 1;
                }
                Outcome::Bad(file) if opts.strict => {
                    return Err(PipelineError::BadImage { file: file.name, reason: file.reason })
                }
                Outcome::Bad(file) => writer.skip(file),
            }
            next += 1;
            // never blocks: at most `window` credits exist and this one was taken
            let _ = credit_tx.try_send(());
            progress.advance(next as u64);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{scan_image_folder, seeded_shuffle, FolderImages};
    use crate::shard::open_shard_file;
    use crate::testutil::writer_cfg;
    use std::fs;
    use std::sync::atomic::AtomicU64;

    const CIFAR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/cifar10-jpg/train");
    const BAD: [&str; 3] = ["bird/empty.jpg", "bird/garbage.png", "cat/truncated.jpg"];

    /// 3 classes x 30 CIFAR-10 JPEGs (symlinks) plus an empty, a garbage and a truncated file.
    fn folder_with_bad_files() -> tempfile::TempDir {
        assert!(Path::new(CIFAR).exists(), "{CIFAR} missing: the real photos live in ../shared/data");
        let d = tempfile::tempdir().unwrap();
        for class in ["airplane", "bird", "cat"] {
            fs::create_dir_all(d.path().join(class)).unwrap();
            for i in 0..30 {
                let name = format!("{i:04}.jpg");
                std::os::unix::fs::symlink(Path::new(CIFAR).join(class).join(&name), d.path().join(class).join(&name))
                    .unwrap();
            }
        }
        let photo = fs::read(Path::new(CIFAR).join("cat/0100.jpg")).unwrap();
        fs::write(d.path().join(BAD[0]), b"").unwrap();
        fs::write(d.path().join(BAD[1]), b"GIF89a not a png").unwrap();
        fs::write(d.path().join(BAD[2]), &photo[..photo.len() - 50]).unwrap();
        d
    }

    fn list(input: &Path, seed: u64) -> FolderImages {
        let (classes, mut items) = scan_image_folder(input).unwrap();
        seeded_shuffle(&mut items, seed);
        FolderImages::new(input, classes, items)
    }

    fn opts(threads: usize, strict: bool) -> PackOptions {
        PackOptions { verify: Verify::Full, strict, threads }
    }

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().to_string(), fs::read(e.path()).unwrap()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn same_bytes_whatever_the_thread_count_and_bad_files_listed() {
        let input = folder_with_bad_files();
        let list = list(input.path(), 4);
        let mut outs = Vec::new();
        for threads in [1, 2, 7] {
            let out = tempfile::tempdir().unwrap();
            let w = ShardWriter::new(writer_cfg(out.path(), "train", 25)).unwrap();
            let m = pack_images(&list, w, &opts(threads, false), &NoProgress).unwrap();
            assert_eq!(m.total_samples, 90);
            assert_eq!(m.skipped_total, 3);
            let mut names: Vec<&str> = m.skipped.iter().map(|s| s.name.as_str()).collect();
            names.sort();
            assert_eq!(names, BAD);
            outs.push((files(out.path()), out));
        }
        assert!(outs.iter().all(|(f, _)| *f == outs[0].0), "shards differ between thread counts");
        // the skipped files are listed in list order, with their reasons
        let m = crate::shard::read_manifest(outs[0].1.path()).unwrap();
        let order: Vec<usize> = m
            .skipped
            .iter()
            .map(|s| (0..list.len()).find(|&i| list.read(i).unwrap().source == s.name).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        let reason = |n: &str| m.skipped.iter().find(|s| s.name == n).unwrap().reason.clone();
        assert_eq!(reason("bird/empty.jpg"), "empty file (0 bytes)");
        assert!(reason("bird/garbage.png").starts_with("not a JPEG, PNG or WebP"));
        assert!(reason("cat/truncated.jpg").starts_with("truncated JPEG"));
        // samples keep the folder keys and are written in list order
        let keys: Vec<String> = m
            .shards
            .iter()
            .flat_map(|s| open_shard_file(outs[0].1.path().join(&s.name)).unwrap().map(|r| r.unwrap().key))
            .collect();
        let want: Vec<String> = (0..list.len())
            .map(|i| list.read(i).unwrap())
            .filter(|img| !BAD.contains(&img.source.as_str()))
            .map(|img| sanitize_key(&img.key))
            .collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn strict_stops_at_the_first_bad_image_and_leaves_the_folder_as_it_was() {
        let input = folder_with_bad_files();
        let list = list(input.path(), 9);
        let out = tempfile::tempdir().unwrap();
        // an earlier run's shards
        let w = ShardWriter::new(writer_cfg(out.path(), "old", 40)).unwrap();
        pack_images(&list, w, &opts(2, false), &NoProgress).unwrap();
        let before = files(out.path());
        let first_bad =
            (0..list.len()).map(|i| list.read(i).unwrap().source).find(|s| BAD.contains(&s.as_str())).unwrap();
        for threads in [1, 3] {
            let mut cfg = writer_cfg(out.path(), "new", 10);
            cfg.overwrite = true;
            let w = ShardWriter::new_staged(cfg).unwrap();
            let e = pack_images(&list, w, &opts(threads, true), &NoProgress).unwrap_err();
            assert!(matches!(&e, PipelineError::BadImage { file, .. } if *file == first_bad), "{e}");
            assert!(e.to_string().contains("no shard was written"), "{e}");
            assert_eq!(files(out.path()), before, "the folder changed");
        }
        // without bad images the staged writer replaces the old shards at the end
        let clean = tempfile::tempdir().unwrap();
        for class in ["a", "b"] {
            fs::create_dir_all(clean.path().join(class)).unwrap();
            fs::write(clean.path().join(class).join("x.png"), crate::testutil::png(4, 4, 1)).unwrap();
        }
        let mut cfg = writer_cfg(out.path(), "new", 1);
        cfg.overwrite = true;
        let w = ShardWriter::new_staged(cfg).unwrap();
        pack_images(&list_of(clean.path()), w, &opts(2, true), &NoProgress).unwrap();
        let names: Vec<String> = files(out.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["manifest.json", "new-000000.tar", "new-000001.tar"]);
    }

    fn list_of(input: &Path) -> FolderImages {
        let (classes, items) = scan_image_folder(input).unwrap();
        FolderImages::new(input, classes, items)
    }

    #[test]
    fn every_image_unusable_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a")).unwrap();
        fs::write(d.path().join("a/x.jpg"), b"").unwrap();
        let out = tempfile::tempdir().unwrap();
        let w = ShardWriter::new(writer_cfg(out.path(), "t", 5)).unwrap();
        let e = pack_images(&list_of(d.path()), w, &opts(2, false), &NoProgress).unwrap_err().to_string();
        assert!(e.contains("none of the 1 input images is usable") && e.contains("a/x.jpg"), "{e}");
        assert!(!out.path().join("manifest.json").exists());
    }

    /// A list whose first image is slow: the others may not run more than the window ahead.
    struct Slow {
        classes: Vec<String>,
        done: AtomicU64,
        ahead: AtomicU64,
    }
    impl ImageList for Slow {
        fn len(&self) -> usize {
            2000
        }
        fn class_names(&self) -> &[String] {
            &self.classes
        }
        fn read(&self, i: usize) -> Result<ListedImage> {
            if i == 0 {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            let ahead = i as u64 - self.done.load(Ordering::SeqCst).min(i as u64);
            self.ahead.fetch_max(ahead, Ordering::SeqCst);
            let bytes = crate::testutil::png(2, 2, i as u8);
            Ok(ListedImage {
                key: format!("k{i}"),
                class_index: 0,
                source: format!("{i}"),
                size: bytes.len() as u64,
                bytes,
            })
        }
    }
    impl Progress for Slow {
        fn advance(&self, done: u64) {
            self.done.store(done, Ordering::SeqCst);
        }
    }

    #[test]
    fn images_in_flight_stay_within_the_window() {
        let slow = Slow { classes: vec!["c".into()], done: AtomicU64::new(0), ahead: AtomicU64::new(0) };
        let out = tempfile::tempdir().unwrap();
        let w = ShardWriter::new(writer_cfg(out.path(), "t", 500)).unwrap();
        let m = pack_images(&slow, w, &opts(4, false), &slow).unwrap();
        assert_eq!(m.total_samples, 2000);
        let ahead = slow.ahead.load(Ordering::SeqCst);
        assert!((20..=32).contains(&ahead), "{ahead} images read ahead of the writer (window 32)");
    }
}
