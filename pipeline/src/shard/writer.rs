//! The shard writer: samples into numbered, deterministic tar (or tar.zst) shards, each written
//! to a temporary name, fsynced and renamed (when complete, or all at once at the end for a
//! staged writer); `manifest.json` written last, atomically.
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::shard::{Manifest, RawSample, ShardInfo, SkippedFile, FORMAT_VERSION, MANIFEST_NAME};
use crate::{PipelineError, Result};

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
/// complete ([`ShardWriter::new`]) or, for a staged writer ([`ShardWriter::new_staged`]), all at
/// once by [`ShardWriter::finish`]; `manifest.json` is written last, the same way.
pub struct ShardWriter {
    cfg: ShardWriterConfig,
    current: Option<OpenShard>,
    shards: Vec<ShardInfo>,
    skipped: Vec<SkippedFile>,
    /// `Some` for a staged writer: (temporary, final) paths of the closed shards, and the shard
    /// files the folder held before (removed by `finish`).
    staged: Option<Staged>,
}

#[derive(Default)]
struct Staged {
    closed: Vec<(PathBuf, PathBuf)>,
    old: Vec<PathBuf>,
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
        let old = Self::prepare(&cfg)?;
        // One folder = one dataset (one manifest): every old shard goes, whatever its prefix,
        // so a folder pattern never mixes old and new shards.
        for path in old {
            fs::remove_file(&path).map_err(|e| PipelineError::write(&path, e))?;
        }
        Ok(ShardWriter { cfg, current: None, shards: Vec::new(), skipped: Vec::new(), staged: None })
    }

    /// A writer that leaves the output folder as it was until [`ShardWriter::finish`]: every
    /// shard stays under its temporary name `.NAME.tmp`; `finish` then removes the folder's old
    /// shards (allowed by `overwrite`), renames the new ones into place and writes the manifest.
    /// Dropping it before `finish` (an error, a bad image under `--strict-data`) removes the
    /// temporary files, so no shard is ever written. Costs the disk space of old and new shards
    /// together until `finish`.
    ///
    /// Errors: as [`ShardWriter::new`].
    pub fn new_staged(cfg: ShardWriterConfig) -> Result<Self> {
        let old = Self::prepare(&cfg)?;
        let staged = Some(Staged { closed: Vec::new(), old });
        Ok(ShardWriter { cfg, current: None, shards: Vec::new(), skipped: Vec::new(), staged })
    }

    /// Checks the settings and the folder (created if missing, writable); returns the shard files
    /// it already holds. Errors: as [`ShardWriter::new`].
    fn prepare(cfg: &ShardWriterConfig) -> Result<Vec<PathBuf>> {
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
        if !existing.is_empty() && !cfg.overwrite {
            return Err(PipelineError::OutputHasShards { path: dir.clone() });
        }
        Ok(existing.into_iter().map(|(path, _)| path).collect())
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
        match &mut self.staged {
            Some(staged) => staged.closed.push((open.tmp_path, open.final_path)),
            None => {
                fs::rename(&open.tmp_path, &open.final_path).map_err(|e| PipelineError::write(&open.final_path, e))?;
                dspnet_core::fs::sync_dir(&self.cfg.output_dir);
            }
        }
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

    /// Record an input file left out as an unusable image: listed in the manifest's `skipped`
    /// (in the order recorded) and counted in `skipped_total`.
    pub fn skip(&mut self, file: SkippedFile) {
        self.skipped.push(file);
    }

    /// The files recorded by [`ShardWriter::skip`] so far.
    pub fn skipped_files(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// Close the last shard and write `manifest.json` (atomically, last). Returns the manifest.
    /// A staged writer first removes the folder's old shards and old manifest and renames its
    /// shards into place.
    pub fn finish(mut self, class_names: &[String]) -> Result<Manifest> {
        self.close_current()?;
        if let Some(staged) = self.staged.take() {
            let manifest = self.cfg.output_dir.join(MANIFEST_NAME);
            if staged.old.contains(&manifest) {
                fs::remove_file(&manifest).map_err(|e| PipelineError::write(&manifest, e))?;
            }
            for (tmp, done) in &staged.closed {
                fs::rename(tmp, done).map_err(|e| PipelineError::write(done, e))?;
            }
            let new: Vec<&PathBuf> = staged.closed.iter().map(|(_, done)| done).collect();
            for old in staged.old.iter().filter(|p| **p != manifest && !new.contains(p)) {
                fs::remove_file(old).map_err(|e| PipelineError::write(old, e))?;
            }
            dspnet_core::fs::sync_dir(&self.cfg.output_dir);
        }
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            prefix: self.cfg.prefix.clone(),
            compression: if self.cfg.zstd { "zstd".into() } else { "none".into() },
            class_names: class_names.to_vec(),
            total_samples: self.shards.iter().map(|s| s.samples).sum(),
            shards: std::mem::take(&mut self.shards),
            skipped_total: self.skipped.len() as u64,
            skipped: std::mem::take(&mut self.skipped),
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
        // An unfinished shard is never renamed into place: remove its temp file, and a staged
        // writer's closed ones too.
        if let Some(open) = self.current.take() {
            let path = open.tmp_path.clone();
            drop(open);
            let _ = fs::remove_file(path);
        }
        if let Some(staged) = self.staged.take() {
            for (tmp, _) in staged.closed {
                let _ = fs::remove_file(tmp);
            }
        }
    }
}
