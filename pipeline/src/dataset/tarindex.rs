//! The members of a plain (uncompressed) tar, found by reading each header and seeking over the
//! data: indexing ImageNet's 1.28 M training images reads one 512-byte header per image, not the
//! 140 GB. A tar stored inside another tar is a byte range of the file and is indexed the same way.
//! Reads are positioned (`pread`), so several threads can index or read one open file at once.
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// A regular file inside a tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    /// Path as stored in the tar (GNU long names and PAX paths resolved).
    pub path: String,
    /// Offset of its data in the FILE (not in the range indexed).
    pub offset: u64,
    /// Size of its data in bytes.
    pub size: u64,
}

/// Bytes `start .. end` of a file, read with positioned reads.
pub(crate) struct FileRange<'a> {
    file: &'a File,
    start: u64,
    end: u64,
    pos: u64,
}

impl<'a> FileRange<'a> {
    pub(crate) fn new(file: &'a File, start: u64, len: u64) -> Self {
        FileRange { file, start, end: start.saturating_add(len), pos: 0 }
    }
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.start.saturating_add(self.pos);
        let left = self.end.saturating_sub(at);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], at)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for FileRange<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => (self.end - self.start).checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

/// The regular files of the tar occupying bytes `start .. start + len` of `file`, in tar order
/// (folders, links and other special members are left out).
///
/// Errors: a one-line reason when a header is corrupt (bad checksum, bad size field) or a
/// member's data runs past the end of the range (a truncated download).
pub fn index_tar(file: &File, start: u64, len: u64) -> Result<Vec<TarMember>, String> {
    let mut archive = tar::Archive::new(FileRange::new(file, start, len));
    let entries = archive.entries_with_seek().map_err(|e| format!("unreadable tar: {e}"))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| match out.last() {
            Some(TarMember { path, .. }) => format!("unreadable tar header after member {path}: {e}"),
            None => format!("unreadable tar header at its start: {e}"),
        })?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| format!("member with an unreadable name: {e}"))?;
        let path = path.to_string_lossy().into_owned();
        let (rel, size) = (entry.raw_file_position(), entry.size());
        if rel.checked_add(size).is_none_or(|e| e > len) {
            return Err(format!(
                "member {path} ({size} bytes at byte {rel}) runs past the end of the tar ({len} bytes): the file is truncated"
            ));
        }
        out.push(TarMember { path, offset: start + rel, size });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn members_of_a_tar_inside_a_tar() {
        let long = format!("d/{}.JPEG", "x".repeat(120));
        let inner = tar_of(&[("a_1.JPEG", vec![1u8; 700]), (long.as_str(), vec![2u8; 3])]);
        let outer = tar_of(&[("readme.txt", b"hi".to_vec()), ("n00000001.tar", inner.clone())]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outer.tar");
        std::fs::write(&path, &outer).unwrap();
        let f = File::open(&path).unwrap();
        let top = index_tar(&f, 0, outer.len() as u64).unwrap();
        assert_eq!(top.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(), ["readme.txt", "n00000001.tar"]);
        let t = &top[1];
        assert_eq!(&outer[t.offset as usize..(t.offset + t.size) as usize], inner.as_slice());
        let members = index_tar(&f, t.offset, t.size).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!((members[1].path.as_str(), members[1].size), (long.as_str(), 3));
        for (m, want) in members.iter().zip([vec![1u8; 700], vec![2u8; 3]]) {
            let mut got = vec![0u8; m.size as usize];
            f.read_exact_at(&mut got, m.offset).unwrap();
            assert_eq!(got, want);
        }
        // a download cut inside the second member's data
        let cut = outer.len() as u64 - 1024 - 200;
        let e = index_tar(&f, 0, cut).unwrap_err();
        assert!(e.contains("n00000001.tar") && e.contains("truncated"), "{e}");
        // a corrupt header checksum
        let mut bad = outer.clone();
        bad[1024 + 10] ^= 0xFF; // the second header's name (the first member's data is one block)
        std::fs::write(&path, &bad).unwrap();
        let f = File::open(&path).unwrap();
        let e = index_tar(&f, 0, bad.len() as u64).unwrap_err();
        assert!(e.contains("after member readme.txt"), "{e}");
    }
}
