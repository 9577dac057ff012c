//! The streaming shard reader: tar members grouped into samples as Python `webdataset` does,
//! decompressed by name (zstd, gzip), with truncation and corruption reported as errors.
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::shard::{RawSample, BLOCK};
use crate::{PipelineError, Result};

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

pub(super) fn is_meta_name(path: &str) -> bool {
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
