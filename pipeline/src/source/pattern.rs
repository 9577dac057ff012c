//! Shard patterns: brace patterns, globs in the file name, folders and single files expanded
//! into shard URLs, with remote URLs checked for form only.
use std::path::Path;

use crate::source::braces::expand_braces;
use crate::source::is_remote;
use crate::source::remote::RemoteUrl;
use crate::{PipelineError, Result};

fn is_shard_name(name: &str) -> bool {
    name.ends_with(".tar") || name.ends_with(".tar.zst") || name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Expand a shard pattern into shard URLs (in pattern order).
///
/// * brace patterns: `dir/train-{000000..000146}.tar`, `{a,b}`, several braces;
/// * a glob in the last path component (`'dir/train-*.tar'`, `?`, `[0-4]`, as PyTorch users
///   type it quoted): the matching `*.tar`, `*.tar.zst`, `*.tar.gz` files of that folder,
///   sorted by name (a leading dot must be matched literally); braces are expanded first;
/// * a folder → all `*.tar`, `*.tar.zst`, `*.tar.gz` in it, sorted by name;
/// * a plain file path → itself (also when its name holds `*`, `?` or `[`);
/// * remote URLs (`s3://bucket/prefix/train-{000000..000146}.tar`, `gs://`, `az://`, `http(s)://`)
///   are brace-expanded and parsed but not checked against the store (no network access here).
///   Globs (`*`, `?`, `[`) and folder URLs are refused: remote prefixes are not listed.
///
/// Errors: [`PipelineError::NoShards`] when nothing exists (a glob matching nothing adds
/// nothing); [`PipelineError::Read`] naming the first missing shard when only some exist;
/// [`PipelineError::BadPattern`] for malformed braces or globs, and wildcards in a folder name;
/// [`PipelineError::UnsupportedScheme`] / [`PipelineError::RemoteConfig`] for bad remote URLs.
pub fn expand_pattern(pattern: &str) -> Result<Vec<String>> {
    let pattern_trim = pattern.trim();
    if pattern_trim.is_empty() {
        return Err(PipelineError::NoShards { pattern: pattern.to_string() });
    }
    let expanded = expand_braces(pattern_trim)?;
    if is_remote(pattern_trim) {
        for url in &expanded {
            RemoteUrl::parse(url)?;
        }
        return Ok(expanded);
    }
    let mut out = Vec::new();
    let mut missing = None;
    for url in expanded {
        let path_str = url.strip_prefix("file://").unwrap_or(&url).to_string();
        let path = Path::new(&path_str);
        if path.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(path)
                .map_err(|e| PipelineError::read(path, e))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| is_shard_name(n) && !n.starts_with('.'))
                .collect();
            names.sort();
            out.extend(names.into_iter().map(|n| path.join(n).to_string_lossy().to_string()));
        } else if path.is_file() {
            check_shard_file(path)?;
            out.push(url);
        } else if has_glob(&path_str) {
            out.extend(expand_glob(pattern, &path_str)?);
        } else if missing.is_none() {
            missing = Some(path_str);
        }
    }
    if out.is_empty() {
        return Err(PipelineError::NoShards { pattern: pattern.to_string() });
    }
    if let Some(m) = missing {
        return Err(PipelineError::read(
            m,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("shard listed by pattern {pattern} does not exist"),
            ),
        ));
    }
    Ok(out)
}

/// Checks that the local file at `path` starts like a shard: a zstd frame, a gzip member, or a
/// tar header (`ustar` magic at byte 257, or, for a pre-POSIX tar, a header whose checksum
/// field matches its bytes, counted as POSIX.1 defines it: the field itself as 8 spaces).
///
/// Errors: [`PipelineError::NotAShard`] naming the file and what was found;
/// [`PipelineError::Read`] when it cannot be read.
pub fn check_shard_file(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| PipelineError::read(path, e))?;
    let not = |reason: &str| Err(PipelineError::NotAShard { path: path.to_path_buf(), reason: reason.into() });
    if head.is_empty() {
        return not("the file is empty");
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || head.starts_with(&[0x1f, 0x8b]) {
        return Ok(());
    }
    if head.len() < 512 {
        return not("it is shorter than one 512-byte tar header");
    }
    if &head[257..262] == b"ustar" {
        return Ok(());
    }
    let field = std::str::from_utf8(&head[148..156]).unwrap_or("").trim_matches(|c: char| c == ' ' || c == '\0');
    let stored = u32::from_str_radix(field, 8).ok();
    let sum: u32 = head.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
    if stored == Some(sum) {
        return Ok(());
    }
    not("it has no tar header and no zstd or gzip frame")
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The shard files of the folder of `path` whose names match its last component, sorted.
fn expand_glob(pattern: &str, path: &str) -> Result<Vec<String>> {
    let (dir, name) = match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => (".", path),
    };
    if has_glob(dir) {
        return Err(PipelineError::BadPattern {
            pattern: pattern.to_string(),
            reason: "wildcards (* ? [) are allowed in the file name only, not in folder names".into(),
        });
    }
    let glob = glob::Pattern::new(name).map_err(|e| PipelineError::BadPattern {
        pattern: pattern.to_string(),
        reason: format!("glob {name}: {}", e.msg),
    })?;
    let opts =
        glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true };
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| is_shard_name(n) && glob.matches_with(n, opts))
        .collect();
    names.sort();
    let join = |n: String| if path.contains('/') { Path::new(dir).join(n).to_string_lossy().to_string() } else { n };
    Ok(names.into_iter().map(join).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-member tar as the `tar` crate writes it (GNU header, `ustar` magic).
    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        b.append_data(&mut h, "a.cls", &b"1"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_plain_file_must_start_like_a_shard() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        // a GNU/POSIX tar, a pre-POSIX (v7) tar recognised by its checksum, zstd and gzip frames
        let gnu = write("a.tar", &tar_bytes());
        let mut v7 = tar::Header::new_old();
        v7.set_path("b.cls").unwrap();
        v7.set_size(0);
        v7.set_cksum();
        let v7 = write("b.tar", v7.as_bytes());
        let zst = write("c.tar.zst", &zstd::encode_all(&tar_bytes()[..], 1).unwrap());
        let gz = write("d.tar.gz", &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
        for p in [&gnu, &v7, &zst, &gz] {
            check_shard_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        // a v7 header with one byte changed after its checksum was set is not a header
        let mut bad = std::fs::read(&v7).unwrap();
        bad[0] ^= 1;
        let bad = write("e.tar", &bad);
        let text = write("labels.txt", &b"hello\n".repeat(200));
        let empty = write("f.tar", b"");
        let short = write("g.tar", b"hello");
        for (p, reason) in [
            (&bad, "no tar header"),
            (&text, "no tar header"),
            (&empty, "empty"),
            (&short, "shorter than one 512-byte tar header"),
        ] {
            match check_shard_file(p) {
                Err(e @ PipelineError::NotAShard { .. }) => {
                    let m = e.to_string();
                    assert!(m.contains(&p.display().to_string()) && m.contains(reason), "{m}");
                }
                other => panic!("{}: {other:?}", p.display()),
            }
        }
        // expand_pattern checks a file it is given by name
        let err = expand_pattern(&text.to_string_lossy()).unwrap_err();
        assert!(matches!(err, PipelineError::NotAShard { .. }), "{err}");
        assert_eq!(expand_pattern(&gnu.to_string_lossy()).unwrap(), [gnu.to_string_lossy().to_string()]);
    }

    #[test]
    fn pattern_against_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["s-000000.tar", "s-000001.tar.zst", "s-000002.tar", "notes.txt"] {
            std::fs::write(dir.path().join(n), tar_bytes()).unwrap();
        }
        let d = dir.path().to_string_lossy().to_string();
        let all = expand_pattern(&d).unwrap();
        assert_eq!(
            all,
            vec![format!("{d}/s-000000.tar"), format!("{d}/s-000001.tar.zst"), format!("{d}/s-000002.tar")]
        );
        assert!(expand_pattern(&format!("{d}/s-{{000000..000002}}.tar"))
            .unwrap_err()
            .to_string()
            .contains("s-000001.tar"));
        assert_eq!(expand_pattern(&format!("{d}/s-{{000000,000002}}.tar")).unwrap().len(), 2);
        let err = expand_pattern(&format!("{d}/zz-{{000000..000009}}.tar")).unwrap_err();
        assert!(matches!(err, PipelineError::NoShards { .. }));
        assert!(err.to_string().contains("matches no shard"));
        assert_eq!(
            expand_pattern("s3://bucket/a-{0..1}.tar").unwrap(),
            vec!["s3://bucket/a-0.tar", "s3://bucket/a-1.tar"]
        );
        assert_eq!(expand_pattern("http://127.0.0.1:8/{a,b}/t-{8..10}.tar").unwrap().len(), 6);
        let e = expand_pattern("s3://bucket/train-*.tar").unwrap_err().to_string();
        assert!(e.contains("glob") && e.contains("braces"), "{e}");
        assert!(expand_pattern("s3://bucket/prefix/").unwrap_err().to_string().contains("not listed"));
        assert!(matches!(expand_pattern("ftp://h/a-{0..1}.tar").unwrap_err(), PipelineError::UnsupportedScheme { .. }));
    }

    #[test]
    fn globs_in_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        for n in
            ["train-000000.tar", "train-000001.tar", "train-000002.tar.zst", "val-000000.tar", ".train-000003.tar.tmp"]
        {
            std::fs::write(dir.path().join(n), tar_bytes()).unwrap();
        }
        std::fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("odd[1].tar"), tar_bytes()).unwrap();
        let d = dir.path().to_string_lossy().to_string();
        let names = |p: &str| -> Vec<String> {
            expand_pattern(p).unwrap().iter().map(|u| u.rsplit('/').next().unwrap().to_string()).collect()
        };
        assert_eq!(names(&format!("{d}/train-*.tar")), ["train-000000.tar", "train-000001.tar"]);
        assert_eq!(names(&format!("{d}/train-*")), ["train-000000.tar", "train-000001.tar", "train-000002.tar.zst"]);
        assert_eq!(names(&format!("{d}/*")).len(), 5, "manifest.json and hidden files are not shards");
        assert_eq!(names(&format!("{d}/train-00000[02].tar*")), ["train-000000.tar", "train-000002.tar.zst"]);
        assert_eq!(names(&format!("{d}/?al-*.tar")), ["val-000000.tar"]);
        assert_eq!(names(&format!("{d}/{{train,val}}-000000.tar")), ["train-000000.tar", "val-000000.tar"]);
        assert_eq!(
            names(&format!("{d}/{{train,val}}-*.tar")),
            ["train-000000.tar", "train-000001.tar", "val-000000.tar"]
        );
        // a file whose name holds glob characters is itself
        assert_eq!(names(&format!("{d}/odd[1].tar")), ["odd[1].tar"]);
        // full path of each match, in the pattern's folder
        assert_eq!(expand_pattern(&format!("{d}/val-*.tar")).unwrap(), [format!("{d}/val-000000.tar")]);
        // matching nothing: the usual one-line error
        let e = expand_pattern(&format!("{d}/test-*.tar")).unwrap_err();
        assert!(matches!(e, PipelineError::NoShards { .. }) && e.to_string().contains("matches no shard"), "{e}");
        assert!(matches!(expand_pattern("/no/such/dir/train-*.tar").unwrap_err(), PipelineError::NoShards { .. }));
        let e = expand_pattern(&format!("{d}/*/train-*.tar")).unwrap_err().to_string();
        assert!(e.contains("file name only"), "{e}");
        let e = expand_pattern(&format!("{d}/train-[.tar")).unwrap_err();
        assert!(matches!(e, PipelineError::BadPattern { .. }), "{e}");
        // remote globs stay refused (stores are not listed)
        assert!(expand_pattern("s3://bucket/train-*.tar").unwrap_err().to_string().contains("glob"));
    }
}
