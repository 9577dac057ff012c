//! WebDataset shards: a deterministic tar / tar.zst writer with a `manifest.json`, and a streaming
//! reader that groups adjacent tar members into samples exactly as Python `webdataset` does.
//!
//! Conventions (identical to Python `webdataset`):
//! * a member `dir/abc.def.jpg` belongs to the sample with key `dir/abc` and extension `def.jpg`
//!   (key = path up to the first dot of the basename); extensions are lower-cased;
//! * members of one sample are adjacent in the tar stream;
//! * members whose basename has no dot or starts with a dot, non-regular members and
//!   `__meta__`-style names are skipped.
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Where and how [`ShardWriter`] writes shards.
#[derive(Clone, Debug)]
pub struct ShardWriterConfig {
    /// Output folder (created if missing).
    pub output_dir: PathBuf,
    /// Shard name prefix: shards are `PREFIX-000000.tar` (or `.tar.zst`).
    pub prefix: String,
    /// Start a new shard after this many samples.
    pub samples_per_shard: Option<usize>,
    /// Start a new shard before the UNCOMPRESSED tar size would exceed this many bytes
    /// (a single sample larger than the limit still gets a shard of its own).
    pub max_shard_bytes: Option<u64>,
    /// Compress each shard with zstd (level 3): `PREFIX-000000.tar.zst`.
    pub zstd: bool,
    /// Delete the shards already in `output_dir` (every `*.tar`, `*.tar.zst`, `*.tar.gz` and
    /// `manifest.json`, whatever the prefix: one folder holds one dataset) before writing.
    pub overwrite: bool,
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

/// Content of `manifest.json`, written last (atomically) by [`ShardWriter::finish`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
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

/// Writer adaptor that hashes and counts the bytes going to the file.
struct HashCount<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}
impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type FileSink = HashCount<BufWriter<File>>;
enum Sink {
    Plain(tar::Builder<FileSink>),
    Zstd(tar::Builder<zstd::Encoder<'static, FileSink>>),
}

struct OpenShard {
    sink: Sink,
    tmp_path: PathBuf,
    final_path: PathBuf,
    name: String,
    samples: u64,
    tar_bytes: u64,
}

/// Writes samples into numbered shards `PREFIX-000000.tar[.zst]`.
///
/// Tar headers are deterministic (ustar, mtime 0, uid/gid 0, mode 0o644, empty user/group names,
/// members of a sample in extension order), so the same samples in the same order give
/// byte-identical shards. Each shard is written to `.NAME.tmp`, fsynced and renamed when
/// complete; `manifest.json` is written last, the same way.
pub struct ShardWriter {
    cfg: ShardWriterConfig,
    current: Option<OpenShard>,
    shards: Vec<ShardInfo>,
}

fn is_shard_file(name: &str) -> bool {
    name.ends_with(".tar") || name.ends_with(".tar.zst") || name.ends_with(".tar.gz") || name == MANIFEST_NAME
}

impl ShardWriter {
    /// Prepare `cfg.output_dir` (created if missing).
    ///
    /// Errors: [`PipelineError::Config`] for an empty/unsafe prefix, a zero limit or both limits
    /// set; [`PipelineError::OutputNotWritable`] when the folder cannot be created or written;
    /// [`PipelineError::OutputHasShards`] when it already holds `*.tar`, `*.tar.zst`, `*.tar.gz`
    /// or `manifest.json` and `overwrite` is false.
    pub fn new(cfg: ShardWriterConfig) -> Result<Self> {
        if cfg.prefix.is_empty() || cfg.prefix.contains(['/', '\\', '.']) {
            return Err(PipelineError::config(
                "prefix",
                format!("{:?} must be non-empty without '/', '\\' or '.'", cfg.prefix),
            ));
        }
        if cfg.samples_per_shard == Some(0) {
            return Err(PipelineError::config("samples_per_shard", "must be at least 1"));
        }
        if cfg.max_shard_bytes == Some(0) {
            return Err(PipelineError::config("max_shard_bytes", "must be at least 1"));
        }
        if cfg.samples_per_shard.is_some() && cfg.max_shard_bytes.is_some() {
            return Err(PipelineError::config(
                "samples_per_shard",
                "set either samples_per_shard or max_shard_bytes, not both",
            ));
        }
        let dir = &cfg.output_dir;
        if dir.exists() && !dir.is_dir() {
            return Err(PipelineError::OutputNotWritable { path: dir.clone(), reason: "it is a file".into() });
        }
        fs::create_dir_all(dir)
            .map_err(|e| PipelineError::OutputNotWritable { path: dir.clone(), reason: e.to_string() })?;
        let probe = dir.join(".dspnet-write-probe.tmp");
        File::create(&probe)
            .and_then(|mut f| f.write_all(b"probe"))
            .map_err(|e| PipelineError::OutputNotWritable { path: dir.clone(), reason: e.to_string() })?;
        let _ = fs::remove_file(&probe);
        let entries = fs::read_dir(dir).map_err(|e| PipelineError::read(dir, e))?;
        let mut existing = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| PipelineError::read(dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if is_shard_file(&name) {
                existing.push((entry.path(), name));
            }
        }
        if !existing.is_empty() {
            if !cfg.overwrite {
                return Err(PipelineError::OutputHasShards { path: dir.clone() });
            }
            // One folder = one dataset (one manifest): every old shard goes, whatever its prefix,
            // so a folder pattern never mixes old and new shards.
            for (path, _) in existing {
                fs::remove_file(&path).map_err(|e| PipelineError::write(&path, e))?;
            }
        }
        Ok(ShardWriter { cfg, current: None, shards: Vec::new() })
    }

    fn open_next(&mut self) -> Result<OpenShard> {
        let ext = if self.cfg.zstd { "tar.zst" } else { "tar" };
        let name = format!("{}-{:06}.{ext}", self.cfg.prefix, self.shards.len());
        let final_path = self.cfg.output_dir.join(&name);
        let tmp_path = self.cfg.output_dir.join(format!(".{name}.tmp"));
        let file = File::create(&tmp_path).map_err(|e| PipelineError::write(&tmp_path, e))?;
        let hc = HashCount { inner: BufWriter::with_capacity(1 << 20, file), hasher: Sha256::new(), bytes: 0 };
        let sink = if self.cfg.zstd {
            let enc = zstd::Encoder::new(hc, 3).map_err(|e| PipelineError::write(&tmp_path, e))?;
            Sink::Zstd(tar::Builder::new(enc))
        } else {
            Sink::Plain(tar::Builder::new(hc))
        };
        Ok(OpenShard { sink, tmp_path, final_path, name, samples: 0, tar_bytes: 0 })
    }

    fn close_current(&mut self) -> Result<()> {
        let Some(open) = self.current.take() else { return Ok(()) };
        let tmp = open.tmp_path.clone();
        let werr = |e: io::Error| PipelineError::write(&tmp, e);
        let hc = match open.sink {
            Sink::Plain(b) => b.into_inner().map_err(werr)?,
            Sink::Zstd(b) => b.into_inner().map_err(werr)?.finish().map_err(werr)?,
        };
        let HashCount { inner, hasher, bytes } = hc;
        let file = inner.into_inner().map_err(|e| werr(e.into_error()))?;
        file.sync_all().map_err(werr)?;
        drop(file);
        fs::rename(&open.tmp_path, &open.final_path).map_err(|e| PipelineError::write(&open.final_path, e))?;
        dspnet_core::fs::sync_dir(&self.cfg.output_dir);
        self.shards.push(ShardInfo {
            name: open.name,
            samples: open.samples,
            bytes,
            sha256: dspnet_core::fs::hex(&hasher.finalize()),
        });
        Ok(())
    }

    /// Append one sample. Its members are written as `KEY.EXT` in extension order.
    ///
    /// Names longer than 100 bytes use a GNU long-name member (read by Python's tarfile).
    /// Errors: [`PipelineError::Config`] when the key is empty or its basename contains a dot, or the
    /// sample has no member; [`PipelineError::Write`] on I/O failure.
    pub fn write(&mut self, sample: &RawSample) -> Result<()> {
        if sample.key.is_empty() || sample.key.rsplit('/').next().unwrap_or("").contains('.') {
            return Err(PipelineError::config(
                "sample key",
                format!("{:?} must be non-empty and its basename free of dots", sample.key),
            ));
        }
        if sample.files.is_empty() {
            return Err(PipelineError::config("sample", format!("{} has no member", sample.key)));
        }
        let size = sample.tar_size();
        let roll = match &self.current {
            None => false,
            Some(cur) => {
                self.cfg.samples_per_shard.is_some_and(|n| cur.samples >= n as u64)
                    || self.cfg.max_shard_bytes.is_some_and(|m| cur.samples > 0 && cur.tar_bytes + size > m)
            }
        };
        if roll {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.current = Some(self.open_next()?);
        }
        let cur = self.current.as_mut().expect("shard opened above");
        for (ext, bytes) in &sample.files {
            let path = format!("{}.{}", sample.key, ext);
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            let _ = header.set_username("");
            let _ = header.set_groupname("");
            // append_data sets the path (GNU long-name member, deterministic, for > 100 bytes)
            // and the checksum.
            let res = match &mut cur.sink {
                Sink::Plain(b) => b.append_data(&mut header, &path, bytes.as_slice()),
                Sink::Zstd(b) => b.append_data(&mut header, &path, bytes.as_slice()),
            };
            res.map_err(|e| PipelineError::write(&cur.tmp_path, e))?;
        }
        cur.samples += 1;
        cur.tar_bytes += size;
        Ok(())
    }

    /// Close the last shard and write `manifest.json` (atomically, last). Returns the manifest.
    pub fn finish(mut self, class_names: &[String]) -> Result<Manifest> {
        self.close_current()?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            prefix: self.cfg.prefix.clone(),
            compression: if self.cfg.zstd { "zstd".into() } else { "none".into() },
            class_names: class_names.to_vec(),
            total_samples: self.shards.iter().map(|s| s.samples).sum(),
            shards: std::mem::take(&mut self.shards),
        };
        let mut json = serde_json::to_vec_pretty(&manifest).map_err(|e| PipelineError::Internal(e.to_string()))?;
        json.push(b'\n');
        dspnet_core::fs::write_atomic(&self.cfg.output_dir.join(MANIFEST_NAME), &json)
            .map_err(|e| PipelineError::write(e.path, e.source))?;
        Ok(manifest)
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // An unfinished shard is never renamed into place: remove its temp file.
        if let Some(open) = self.current.take() {
            let path = open.tmp_path.clone();
            drop(open);
            let _ = fs::remove_file(path);
        }
    }
}

/// Split a member path into (key, lower-case extension) like Python webdataset's `base_plus_ext`
/// (`^((?:.*/|)[^.]+)[.]([^/]*)$`). `None` for names to skip.
pub fn split_member_name(path: &str) -> Option<(String, String)> {
    let slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    let base = &path[slash..];
    let dot = base.find('.')?;
    if dot == 0 {
        return None;
    }
    let key = &path[..slash + dot];
    let ext = &base[dot + 1..];
    Some((key.to_string(), ext.to_ascii_lowercase()))
}

fn is_meta_name(path: &str) -> bool {
    // Python webdataset's skip_meta `__[^/]*__($|/)` anchored at the start.
    if let Some(rest) = path.strip_prefix("__") {
        let first = rest.split('/').next().unwrap_or("");
        return first.len() >= 2 && first.ends_with("__");
    }
    false
}

/// Streaming reader of one tar shard: an iterator of [`RawSample`]s grouped by key.
///
/// Errors (then the iterator ends): [`PipelineError::BadShard`] naming the shard and the last good
/// key when the stream is truncated (mid-member, or missing the end-of-archive zero block),
/// a header checksum is wrong, or the underlying reader fails (e.g. broken zstd stream).
/// A zero-byte stream is an empty shard (no sample, no error).
/// A member whose extension already occurs in the current sample starts a new sample with the
/// same key (Python webdataset raises instead).
pub struct ShardReader<R: Read> {
    reader: R,
    name: String,
    current: Option<RawSample>,
    last_key: String,
    done: bool,
    samples: u64,
    any_bytes: bool,
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> ShardReader<R> {
    /// Read tar from `reader`; `name` is used in errors (shard URL or file name).
    pub fn new(reader: R, name: &str) -> Self {
        ShardReader {
            reader,
            name: name.to_string(),
            current: None,
            last_key: "<none>".into(),
            done: false,
            samples: 0,
            any_bytes: false,
        }
    }

    /// Number of samples yielded so far.
    pub fn samples_read(&self) -> u64 {
        self.samples
    }

    /// Shard name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn bad(&self, reason: impl Into<String>) -> PipelineError {
        PipelineError::BadShard { shard: self.name.clone(), key: self.last_key.clone(), reason: reason.into() }
    }

    fn read_data(&mut self, size: u64) -> Result<Vec<u8>> {
        let mut data = Vec::with_capacity(size.min(64 << 20) as usize);
        let got =
            (&mut self.reader).take(size).read_to_end(&mut data).map_err(|e| self.bad(format!("read error: {e}")))?;
        if (got as u64) < size {
            return Err(self.bad(format!("truncated tar: member needs {size} bytes, only {got} left")));
        }
        let pad = (BLOCK - (size as usize % BLOCK)) % BLOCK;
        if pad > 0 {
            let mut p = [0u8; BLOCK];
            let got = read_full(&mut self.reader, &mut p[..pad]).map_err(|e| self.bad(format!("read error: {e}")))?;
            if got < pad {
                return Err(self.bad("truncated tar: member padding missing"));
            }
        }
        Ok(data)
    }

    /// Next regular member `(path, bytes)`, `Ok(None)` at the end-of-archive marker.
    fn next_member(&mut self) -> Result<Option<(String, Vec<u8>)>> {
        let mut long_name: Option<String> = None;
        loop {
            let mut block = [0u8; BLOCK];
            let got = read_full(&mut self.reader, &mut block).map_err(|e| self.bad(format!("read error: {e}")))?;
            if got == 0 && !self.any_bytes {
                return Ok(None); // zero-byte shard: empty
            }
            self.any_bytes = true;
            if got == 0 {
                return Err(self.bad("truncated tar: stream ends without the end-of-archive block"));
            }
            if got < BLOCK {
                return Err(self.bad(format!("truncated tar: partial header of {got} bytes")));
            }
            if block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let stored = header.cksum().map_err(|e| self.bad(format!("corrupt tar header: {e}")))?;
            let computed: u32 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| if (148..156).contains(&i) { b' ' as u32 } else { b as u32 })
                .sum();
            if stored != computed {
                return Err(self.bad("corrupt tar header (checksum mismatch)"));
            }
            let size = header.entry_size().map_err(|e| self.bad(format!("corrupt tar header: {e}")))?;
            let kind = header.entry_type();
            let path_in_header = String::from_utf8_lossy(&header.path_bytes()).to_string();
            let data = self.read_data(size)?;
            if kind.is_pax_local_extensions() {
                for ext in tar::PaxExtensions::new(&data).flatten() {
                    if ext.key() == Ok("path") {
                        long_name = Some(String::from_utf8_lossy(ext.value_bytes()).to_string());
                    }
                }
                continue;
            }
            if kind.is_gnu_longname() {
                let trimmed: Vec<u8> = data.into_iter().take_while(|&b| b != 0).collect();
                long_name = Some(String::from_utf8_lossy(&trimmed).to_string());
                continue;
            }
            let path = long_name.take().unwrap_or(path_in_header);
            if kind.is_file() || kind == tar::EntryType::Continuous {
                return Ok(Some((path, data)));
            }
            // directories, links, global pax headers ...: skipped
        }
    }
}

impl<R: Read> Iterator for ShardReader<R> {
    type Item = Result<RawSample>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.next_member() {
                Err(e) => {
                    self.done = true;
                    self.current = None;
                    return Some(Err(e));
                }
                Ok(None) => {
                    self.done = true;
                    let s = self.current.take()?;
                    self.samples += 1;
                    return Some(Ok(s));
                }
                Ok(Some((path, data))) => {
                    if is_meta_name(&path) {
                        continue;
                    }
                    let Some((key, ext)) = split_member_name(&path) else { continue };
                    let same = self.current.as_ref().is_some_and(|c| c.key == key && !c.files.contains_key(&ext));
                    if same {
                        self.current.as_mut().expect("checked").files.insert(ext, data);
                        continue;
                    }
                    let mut fresh = RawSample::new(key.clone());
                    fresh.files.insert(ext, data);
                    let prev = self.current.replace(fresh);
                    if let Some(prev) = prev {
                        self.last_key = prev.key.clone();
                        self.samples += 1;
                        return Some(Ok(prev));
                    }
                }
            }
        }
    }
}

/// Wrap a byte stream in a [`ShardReader`], decompressing by name: `*.zst` → zstd,
/// `*.gz` / `*.tgz` → gzip, anything else → plain tar.
///
/// Errors: [`PipelineError::BadShard`] if the zstd decoder cannot be created.
pub fn open_shard_reader(bytes_source: Box<dyn Read + Send>, name: &str) -> Result<ShardReader<Box<dyn Read + Send>>> {
    let reader: Box<dyn Read + Send> = if name.ends_with(".zst") {
        let dec = zstd::Decoder::new(bytes_source).map_err(|e| PipelineError::BadShard {
            shard: name.to_string(),
            key: "<none>".into(),
            reason: format!("cannot start zstd decoder: {e}"),
        })?;
        Box::new(BufReader::with_capacity(1 << 16, dec))
    } else if name.ends_with(".gz") || name.ends_with(".tgz") {
        Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(BufReader::new(bytes_source))))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, bytes_source))
    };
    Ok(ShardReader::new(reader, name))
}

/// Open a local shard file and read it (convenience for tools and tests).
pub fn open_shard_file(path: impl AsRef<Path>) -> Result<ShardReader<Box<dyn Read + Send>>> {
    let path = path.as_ref();
    let f = File::open(path).map_err(|e| PipelineError::read(path, e))?;
    open_shard_reader(Box::new(f), &path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{load_folder_image, scan_image_folder, seeded_shuffle};
    use crate::testutil::writer_cfg;
    use std::collections::BTreeSet;

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
