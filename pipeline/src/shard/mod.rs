//! WebDataset shards: a deterministic tar / tar.zst writer with a `manifest.json`, and a streaming
//! reader that groups adjacent tar members into samples exactly as Python `webdataset` does.
//!
//! Conventions (identical to Python `webdataset`):
//! * a member `dir/abc.def.jpg` belongs to the sample with key `dir/abc` and extension `def.jpg`
//!   (key = path up to the first dot of the basename); extensions are lower-cased;
//! * members of one sample are adjacent in the tar stream;
//! * members whose basename has no dot or starts with a dot, non-regular members and
//!   `__meta__`-style names are skipped.
//!
//! | module | what it holds |
//! |---|---|
//! | `writer` | [`ShardWriter`], [`ShardWriterConfig`]: deterministic tar / tar.zst shards (renamed into place one by one, or staged until the end), skipped input files, manifest last |
//! | `reader` | [`ShardReader`], [`open_shard_reader`], [`open_shard_file`], [`split_member_name`] |
mod reader;
mod writer;

pub use reader::{open_shard_file, open_shard_reader, split_member_name, ShardReader};
pub use writer::{ShardWriter, ShardWriterConfig};

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{PipelineError, Result};

/// File name of the manifest written next to the shards.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Version of the manifest / shard layout written by this crate.
pub const FORMAT_VERSION: u32 = 1;
const BLOCK: usize = 512;

/// One WebDataset sample: its key and its members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSample {
    /// Sample key (member path up to the first dot of the basename), e.g. `airplane_0001`.
    pub key: String,
    /// Lower-case extension (everything after the key's dot, e.g. `jpg`, `cls`, `seg.png`) → bytes.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl RawSample {
    /// New sample without members.
    pub fn new(key: impl Into<String>) -> Self {
        RawSample { key: key.into(), files: BTreeMap::new() }
    }
    /// Add a member (builder style); `ext` is lower-cased.
    pub fn with(mut self, ext: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.insert(ext.to_ascii_lowercase(), bytes.into());
        self
    }
    /// Bytes stored in the tar for this sample: a 512-byte header plus data padded to 512 per member.
    pub fn tar_size(&self) -> u64 {
        self.files.values().map(|b| (BLOCK + b.len().div_ceil(BLOCK) * BLOCK) as u64).sum()
    }
}

/// One shard listed in the manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    /// File name inside the output folder, e.g. `train-000000.tar`.
    pub name: String,
    /// Number of samples in the shard.
    pub samples: u64,
    /// File size in bytes (compressed size for `.tar.zst`).
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
}

/// An input file `dspnet-shard` left out because it is not a usable image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SkippedFile {
    /// Where it came from: the path relative to the input folder, or the member path inside an
    /// archive (e.g. `n01440764.tar/n01440764_10026.JPEG`).
    pub name: String,
    /// Why, in one line (e.g. `empty file (0 bytes)`, `truncated JPEG: ...`).
    pub reason: String,
}

/// Content of `manifest.json`, written last (atomically) by [`ShardWriter::finish`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Shard name prefix.
    pub prefix: String,
    /// `"none"` or `"zstd"`.
    pub compression: String,
    /// Class names; a sample's `.cls` is an index into this list.
    pub class_names: Vec<String>,
    /// Sum of `shards[i].samples`.
    pub total_samples: u64,
    /// Shards in write order.
    pub shards: Vec<ShardInfo>,
    /// Number of input files skipped as unusable images (written only when not 0; manifests
    /// without it read as 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_total: u64,
    /// The skipped files in input order, with the reason (written only when not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedFile>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Read `DIR/manifest.json`.
///
/// Errors: [`PipelineError::Read`] when missing/unreadable, [`PipelineError::Manifest`] when the
/// JSON is malformed or its version is newer than this crate understands.
pub fn read_manifest(dir: impl AsRef<Path>) -> Result<Manifest> {
    let path = dir.as_ref().join(MANIFEST_NAME);
    let bytes = fs::read(&path).map_err(|e| PipelineError::read(&path, e))?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| PipelineError::Manifest { path: path.clone(), reason: e.to_string() })?;
    if m.format_version > FORMAT_VERSION {
        return Err(PipelineError::Manifest {
            path,
            reason: format!("format_version {} is newer than supported {FORMAT_VERSION}", m.format_version),
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{load_folder_image, scan_image_folder, seeded_shuffle};
    use crate::shard::reader::is_meta_name;
    use crate::testutil::writer_cfg;
    use std::collections::BTreeSet;
    use std::fs::File;

    const CIFAR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/cifar10-jpg/train");

    /// 3 classes x 40 images of CIFAR-10 (first 40 files of airplane, automobile, bird) in a
    /// class-folder layout made of symlinks (the originals are read in place).
    fn cifar_subset() -> Option<tempfile::TempDir> {
        assert!(
            Path::new(CIFAR).exists(),
            "{CIFAR} missing: the real photos live in ../shared/data beside the checkout"
        );
        let d = tempfile::tempdir().unwrap();
        for class in ["airplane", "automobile", "bird"] {
            fs::create_dir_all(d.path().join(class)).unwrap();
            for i in 0..40 {
                let name = format!("{i:04}.jpg");
                std::os::unix::fs::symlink(Path::new(CIFAR).join(class).join(&name), d.path().join(class).join(&name))
                    .unwrap();
            }
        }
        Some(d)
    }

    fn shard_folder(input: &Path, out: &Path, seed: u64, zstd: bool) -> Manifest {
        let (classes, mut items) = scan_image_folder(input).unwrap();
        seeded_shuffle(&mut items, seed);
        let mut cfg = writer_cfg(out, "train", 50);
        cfg.zstd = zstd;
        let mut w = ShardWriter::new(cfg).unwrap();
        for (p, c) in &items {
            w.write(&load_folder_image(input, p, *c, &classes).unwrap().to_sample()).unwrap();
        }
        w.finish(&classes).unwrap()
    }

    fn read_all(dir: &Path, m: &Manifest) -> Vec<RawSample> {
        m.shards.iter().flat_map(|s| open_shard_file(dir.join(&s.name)).unwrap().map(|r| r.unwrap())).collect()
    }

    #[test]
    fn cifar_roundtrip_plain_and_zstd() {
        let Some(input) = cifar_subset() else { return };
        for zstd in [false, true] {
            let out = tempfile::tempdir().unwrap();
            let m = shard_folder(input.path(), out.path(), 3, zstd);
            assert_eq!(m.total_samples, 120);
            assert_eq!(m.shards.iter().map(|s| s.samples).collect::<Vec<_>>(), vec![50, 50, 20]);
            assert_eq!(m.class_names, vec!["airplane", "automobile", "bird"]);
            assert_eq!(read_manifest(out.path()).unwrap(), m);
            let samples = read_all(out.path(), &m);
            assert_eq!(samples.len(), 120);
            let mut seen = BTreeSet::new();
            for s in &samples {
                let (class, stem) = s.key.rsplit_once('_').unwrap();
                let ci = ["airplane", "automobile", "bird"].iter().position(|c| *c == class).unwrap();
                let disk = fs::read(Path::new(CIFAR).join(class).join(format!("{stem}.jpg"))).unwrap();
                assert_eq!(s.files["jpg"], disk, "{}", s.key);
                assert_eq!(s.files["cls"], ci.to_string().into_bytes());
                let meta: serde_json::Value = serde_json::from_slice(&s.files["json"]).unwrap();
                assert_eq!(meta["class"], class);
                assert_eq!(meta["source"], format!("{class}/{stem}.jpg"));
                assert_eq!(s.files.len(), 3);
                seen.insert(s.key.clone());
            }
            assert_eq!(seen.len(), 120);
            for info in &m.shards {
                let bytes = fs::read(out.path().join(&info.name)).unwrap();
                assert_eq!(bytes.len() as u64, info.bytes);
                assert_eq!(dspnet_core::fs::sha256_hex(&bytes), info.sha256);
                assert_eq!(info.name.ends_with(".tar.zst"), zstd);
            }
            // no temp files left behind
            assert!(fs::read_dir(out.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")));
        }
    }

    #[test]
    fn deterministic_shards() {
        let Some(input) = cifar_subset() else { return };
        let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ma = shard_folder(input.path(), a.path(), 11, false);
        let mb = shard_folder(input.path(), b.path(), 11, false);
        let mc = shard_folder(input.path(), c.path(), 12, false);
        assert_eq!(ma, mb);
        for s in &ma.shards {
            assert_eq!(fs::read(a.path().join(&s.name)).unwrap(), fs::read(b.path().join(&s.name)).unwrap());
        }
        let keys = |d: &Path, m: &Manifest| read_all(d, m).into_iter().map(|s| s.key).collect::<Vec<_>>();
        let (ka, kc) = (keys(a.path(), &ma), keys(c.path(), &mc));
        assert_ne!(ka, kc);
        assert_eq!(ka.iter().collect::<BTreeSet<_>>(), kc.iter().collect::<BTreeSet<_>>());
    }

    #[test]
    fn headers_are_deterministic_and_readable_by_tar_crate() {
        let out = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(writer_cfg(out.path(), "x", 10)).unwrap();
        w.write(&RawSample::new("k1").with("txt", "hello").with("cls", "3")).unwrap();
        let long_key = format!("d/{}", "a".repeat(120));
        w.write(&RawSample::new(long_key.clone()).with("bin", vec![7u8; 600])).unwrap();
        w.finish(&[]).unwrap();
        let f = File::open(out.path().join("x-000000.tar")).unwrap();
        let mut ar = tar::Archive::new(f);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap()), (0, 0, 0, 0o644));
            assert_eq!(h.username().unwrap(), Some(""));
            names.push(e.path().unwrap().to_string_lossy().to_string());
        }
        assert_eq!(names, vec!["k1.cls".to_string(), "k1.txt".into(), format!("{long_key}.bin")]);
        let back: Vec<RawSample> =
            open_shard_file(out.path().join("x-000000.tar")).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(back[1].key, long_key);
        assert_eq!(back[1].files["bin"], vec![7u8; 600]);
    }

    #[test]
    fn skipped_files_in_the_manifest_and_manifests_without_them() {
        let out = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(writer_cfg(out.path(), "t", 10)).unwrap();
        w.write(&RawSample::new("k").with("txt", "x")).unwrap();
        w.skip(SkippedFile { name: "a/b.jpg".into(), reason: "empty file (0 bytes)".into() });
        let m = w.finish(&["a".into()]).unwrap();
        assert_eq!((m.skipped_total, m.skipped.len()), (1, 1));
        assert_eq!(read_manifest(out.path()).unwrap(), m);
        let json = fs::read_to_string(out.path().join(MANIFEST_NAME)).unwrap();
        assert!(
            json.contains("\"skipped_total\": 1") && json.contains("\"reason\": \"empty file (0 bytes)\""),
            "{json}"
        );
        // a manifest without the fields (older, or nothing skipped) reads as none skipped
        let old = r#"{"format_version": 1, "prefix": "t", "compression": "none", "class_names": [],
            "total_samples": 0, "shards": []}"#;
        fs::write(out.path().join(MANIFEST_NAME), old).unwrap();
        let m = read_manifest(out.path()).unwrap();
        assert_eq!((m.skipped_total, m.skipped.len()), (0, 0));
        assert!(!serde_json::to_string(&m).unwrap().contains("skipped"));
    }

    #[test]
    fn member_names_follow_webdataset() {
        assert_eq!(split_member_name("dir/abc.def.jpg"), Some(("dir/abc".into(), "def.jpg".into())));
        assert_eq!(split_member_name("a.b/c.JPG"), Some(("a.b/c".into(), "jpg".into())));
        assert_eq!(split_member_name("noext"), None);
        assert_eq!(split_member_name("d/.hidden.txt"), None);
        assert!(is_meta_name("__meta__"));
        assert!(!is_meta_name("__x"));
    }

    #[test]
    fn groups_adjacent_members_and_detects_truncation() {
        let mut buf = Vec::new();
        {
            let mut b = tar::Builder::new(&mut buf);
            for (name, data) in [
                ("a.jpg", &b"1"[..]),
                ("a.cls", b"0"),
                ("b.JPG", b"22"),
                ("b.cls", b"1"),
                ("a.jpg", b"3"),
                ("nodot", b"x"),
            ] {
                let mut h = tar::Header::new_ustar();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, data).unwrap();
            }
            b.finish().unwrap();
        }
        let got: Vec<RawSample> = ShardReader::new(&buf[..], "mem.tar").map(|r| r.unwrap()).collect();
        assert_eq!(got.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), vec!["a", "b", "a"]);
        assert_eq!(got[1].files["jpg"], b"22");
        // Truncated where the fifth member's data should start (byte 4*1024 + 512) → sample "a"
        // (complete) then an error naming the shard; the unfinished sample "b" is dropped.
        let cut = &buf[..4 * 1024 + 512];
        let items: Vec<_> = ShardReader::new(cut, "cut.tar").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().key, "a");
        let e = items[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("cut.tar") && e.contains("truncated") && e.contains("after sample a"), "{e}");
        // Cut at a member boundary (no end-of-archive block) is truncation too.
        let items: Vec<_> = ShardReader::new(&buf[..4 * 1024], "edge.tar").collect();
        assert!(items.last().unwrap().is_err());
        // Zero bytes: empty shard, no error.
        assert_eq!(ShardReader::new(&b""[..], "z.tar").count(), 0);
        // Corrupt header checksum
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(ShardReader::new(&bad[..], "bad.tar").next().unwrap().unwrap_err().to_string().contains("checksum"));
    }

    #[test]
    fn output_folder_rules() {
        let out = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(writer_cfg(out.path(), "p", 2)).unwrap();
        for i in 0..5 {
            w.write(&RawSample::new(format!("k{i}")).with("txt", vec![b'a'; 10])).unwrap();
        }
        assert_eq!(w.finish(&[]).unwrap().shards.len(), 3);
        let e = ShardWriter::new(writer_cfg(out.path(), "p", 2)).err().unwrap().to_string();
        assert!(e.contains("already holds shards; pass --overwrite"), "{e}");
        fs::write(out.path().join("other-000000.tar.zst"), b"old").unwrap();
        let mut cfg = writer_cfg(out.path(), "p", 10);
        cfg.overwrite = true;
        let mut w = ShardWriter::new(cfg).unwrap();
        w.write(&RawSample::new("only").with("txt", "x")).unwrap();
        w.finish(&[]).unwrap();
        let names: BTreeSet<String> =
            fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        assert_eq!(names, ["manifest.json", "p-000000.tar"].iter().map(|s| s.to_string()).collect());
        // max_shard_bytes: each sample is 512 + 512 = 1024 tar bytes → 3 per 3500-byte shard
        let out2 = tempfile::tempdir().unwrap();
        let mut cfg = writer_cfg(out2.path(), "m", 1);
        cfg.samples_per_shard = None;
        cfg.max_shard_bytes = Some(3500);
        let mut w = ShardWriter::new(cfg).unwrap();
        for i in 0..7 {
            w.write(&RawSample::new(format!("k{i}")).with("txt", vec![b'a'; 100])).unwrap();
        }
        assert_eq!(w.finish(&[]).unwrap().shards.iter().map(|s| s.samples).collect::<Vec<_>>(), vec![3, 3, 1]);
        // unwritable: a path below a regular file
        let file = out2.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let e = ShardWriter::new(writer_cfg(&file.join("sub"), "p", 2)).err().unwrap();
        assert!(matches!(e, PipelineError::OutputNotWritable { .. }), "{e}");
    }
}
