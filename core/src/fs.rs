//! Files the user keeps are written atomically: a temporary file in the same folder, fsync,
//! rename over the destination, fsync of the folder. A crash or a full disk leaves the old file
//! or the new one, never a mix.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// An I/O error and the path it concerns; displays as `PATH: REASON`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PathError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathError {
    /// Wraps `source` with `path`.
    pub fn new(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PathError { path: path.into(), source }
    }
}

/// Writes `bytes` to `path` atomically through `.NAME.tmp` beside it (see the module docs). On
/// failure the temporary file is removed and `path` is untouched.
///
/// Errors: the file system's, with the path involved.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    let dir = parent_dir(path);
    let name = path.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().to_string());
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(PathError::new(tmp, e));
    }
    rename_synced(&tmp, path)
}

/// Renames `from` (a finished, fsynced file) over `to` and fsyncs the folder; on failure `from`
/// is removed.
///
/// Errors: the rename's, naming `to`.
pub fn rename_synced(from: &Path, to: &Path) -> Result<(), PathError> {
    if let Err(e) = std::fs::rename(from, to) {
        let _ = std::fs::remove_file(from);
        return Err(PathError::new(to, e));
    }
    sync_dir(parent_dir(to));
    Ok(())
}

/// Fsyncs a finished file, then renames it over `to` ([`rename_synced`]): for files written by
/// other code (a PNG from the plotting library, safetensors from libtorch).
///
/// Errors: the fsync's or the rename's, with the path; `from` is removed on failure.
pub fn commit_file(from: &Path, to: &Path) -> Result<(), PathError> {
    if let Err(e) = std::fs::File::open(from).and_then(|f| f.sync_all()) {
        let _ = std::fs::remove_file(from);
        return Err(PathError::new(from, e));
    }
    rename_synced(from, to)
}

/// Fsyncs a folder (makes a rename inside it durable); errors are ignored (some file systems
/// refuse to open folders for syncing).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 of `bytes`, lower-case hex (64 characters).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file's content, lower-case hex, read in 1 MiB blocks.
///
/// Errors: the file cannot be read (named).
pub fn sha256_file(path: &Path) -> Result<String, PathError> {
    let mut f = std::fs::File::open(path).map_err(|e| PathError::new(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| PathError::new(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_inputs() {
        // FIPS 180-2 appendix B.1 and the empty message
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert_eq!(names, vec!["a.json".to_string()]);
        // a destination inside a missing folder: an error naming the temporary file, nothing left
        let e = write_atomic(&dir.path().join("no/such/b.json"), b"x").unwrap_err().to_string();
        assert!(e.contains(".b.json.tmp"), "{e}");
    }
}
