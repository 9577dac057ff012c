//! Shard locations: brace-pattern expansion and the [`ShardSource`] trait that opens a shard URL
//! as an async byte stream. Local paths (and `file://` URLs) are served by [`LocalSource`];
//! `s3://`, `gs://`, `az://`, `http://` and `https://` by [`crate::remote::RemoteSource`].
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncRead;

use crate::remote::{RemoteOptions, RemoteStats, RemoteUrl, SourceCache};
use crate::{PipelineError, Result};

/// An open shard: an async byte stream (tar, or compressed tar as named by its URL).
pub type ShardStream = Box<dyn AsyncRead + Send + Unpin>;
/// Future returned by [`ShardSource::open`].
pub type OpenFuture<'a> = Pin<Box<dyn Future<Output = Result<ShardStream>> + Send + 'a>>;

/// Opens shard URLs of one scheme as async byte streams.
pub trait ShardSource: Send + Sync {
    /// Open `url` for streaming. Errors: [`PipelineError::Read`] (or a source-specific variant)
    /// naming the URL when it cannot be opened.
    fn open<'a>(&'a self, url: &'a str) -> OpenFuture<'a>;

    /// How many shards after the current one a reader stream should open (and start buffering)
    /// while the current one is parsed. 0 (the default) opens each shard when it is needed.
    fn read_ahead(&self) -> usize {
        0
    }
}

/// Local files, opened with `tokio::fs::File` (accepts plain paths and `file://` URLs).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalSource;

impl ShardSource for LocalSource {
    fn open<'a>(&'a self, url: &'a str) -> OpenFuture<'a> {
        Box::pin(async move {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let f = tokio::fs::File::open(path).await.map_err(|e| PipelineError::read(path, e))?;
            Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 18, f)) as ShardStream)
        })
    }
}

/// Scheme of a URL (`"s3"` for `s3://bucket/x.tar`), `None` for plain paths.
pub fn url_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
        Some(scheme)
    } else {
        None
    }
}

/// True for URLs served by a remote source (any scheme but `file://`).
pub fn is_remote(url: &str) -> bool {
    matches!(url_scheme(url), Some(s) if s != "file")
}

/// The [`ShardSource`] serving `url`: [`LocalSource`] for plain paths and `file://`, a
/// [`crate::remote::RemoteSource`] with default [`RemoteOptions`] for remote URLs.
///
/// Errors: [`PipelineError::UnsupportedScheme`] for an unknown scheme (e.g. `ftp://`),
/// [`PipelineError::RemoteConfig`] when the remote store cannot be configured.
pub fn source_for(url: &str) -> Result<Arc<dyn ShardSource>> {
    Ok(sources_for(&[url.to_string()], &RemoteOptions::default(), &Arc::default())?.remove(0))
}

/// One [`ShardSource`] per URL of `urls`; remote URLs of the same scheme + bucket/host share one
/// source (one store and connection pool) built with `remote` and counting into `stats`.
///
/// Errors: as [`source_for`].
pub fn sources_for(
    urls: &[String],
    remote: &RemoteOptions,
    stats: &Arc<RemoteStats>,
) -> Result<Vec<Arc<dyn ShardSource>>> {
    let local: Arc<dyn ShardSource> = Arc::new(LocalSource);
    let mut cache = SourceCache::default();
    urls.iter()
        .map(
            |u| if is_remote(u) { Ok(cache.get(u, remote, stats)? as Arc<dyn ShardSource>) } else { Ok(local.clone()) },
        )
        .collect()
}

fn bad(pattern: &str, reason: &str) -> PipelineError {
    PipelineError::BadPattern { pattern: pattern.to_string(), reason: reason.to_string() }
}

/// Split `s` at top-level commas (commas not inside nested braces).
fn split_top_commas(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Expand braces only (no filesystem access): `a-{000..002}.tar` → `a-000.tar, a-001.tar, a-002.tar`;
/// `{x,y}` lists; several and nested braces. Zero-padded ranges keep their width.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(bad(pattern, "unmatched '}'"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let mut depth = 0i32;
    let mut close = None;
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| bad(pattern, "unmatched '{'"))?;
    let (head, body, tail) = (&pattern[..open], &pattern[open + 1..close], &pattern[close + 1..]);
    let mut alternatives = Vec::new();
    let range = body.split_once("..").filter(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit())
    });
    if let Some((a, b)) = range {
        let lo: u64 = a.parse().map_err(|_| bad(pattern, "range bound too large"))?;
        let hi: u64 = b.parse().map_err(|_| bad(pattern, "range bound too large"))?;
        let width = if (a.len() > 1 && a.starts_with('0')) || (b.len() > 1 && b.starts_with('0')) {
            a.len().max(b.len())
        } else {
            0
        };
        if hi.abs_diff(lo) > 10_000_000 {
            return Err(bad(pattern, "range longer than 10 million"));
        }
        let nums: Vec<u64> = if lo <= hi { (lo..=hi).collect() } else { (hi..=lo).rev().collect() };
        for n in nums {
            alternatives.push(format!("{n:0width$}"));
        }
    } else {
        let parts = split_top_commas(body);
        if parts.len() < 2 {
            return Err(bad(pattern, "braces need a range {000..009} or a list {a,b}"));
        }
        for p in parts {
            alternatives.extend(expand_braces(p)?);
        }
    }
    let tails = expand_braces(tail)?;
    let mut out = Vec::with_capacity(alternatives.len() * tails.len());
    for alt in &alternatives {
        for t in &tails {
            out.push(format!("{head}{alt}{t}"));
        }
    }
    Ok(out)
}

fn is_shard_name(name: &str) -> bool {
    name.ends_with(".tar") || name.ends_with(".tar.zst") || name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Expand a shard pattern into shard URLs (in pattern order).
///
/// * brace patterns: `dir/train-{000000..000146}.tar`, `{a,b}`, several braces;
/// * a folder → all `*.tar`, `*.tar.zst`, `*.tar.gz` in it, sorted by name;
/// * a plain file path → itself;
/// * remote URLs (`s3://bucket/prefix/train-{000000..000146}.tar`, `gs://`, `az://`, `http(s)://`)
///   are brace-expanded and parsed but not checked against the store (no network access here).
///   Globs (`*`, `?`, `[`) and folder URLs are refused: remote prefixes are not listed.
///
/// Errors: [`PipelineError::NoShards`] when nothing exists; [`PipelineError::Read`] naming the
/// first missing shard when only some exist; [`PipelineError::BadPattern`] for malformed braces;
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
            out.push(url);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_ranges_and_lists() {
        assert_eq!(
            expand_braces("d/t-{000008..000011}.tar").unwrap(),
            vec!["d/t-000008.tar", "d/t-000009.tar", "d/t-000010.tar", "d/t-000011.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}/x-{1..2}.tar").unwrap(),
            vec!["a/x-1.tar", "a/x-2.tar", "b/x-1.tar", "b/x-2.tar"]
        );
        assert_eq!(expand_braces("{9..11}").unwrap(), vec!["9", "10", "11"]);
        assert_eq!(expand_braces("{a,{b,c}d}").unwrap(), vec!["a", "bd", "cd"]);
        assert_eq!(expand_braces("plain.tar").unwrap(), vec!["plain.tar"]);
        assert!(matches!(expand_braces("x-{000..").unwrap_err(), PipelineError::BadPattern { .. }));
        assert!(matches!(expand_braces("x-{abc}").unwrap_err(), PipelineError::BadPattern { .. }));
    }

    #[test]
    fn pattern_against_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["s-000000.tar", "s-000001.tar.zst", "s-000002.tar", "notes.txt"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
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
    fn scheme_selection() {
        assert!(source_for("/tmp/a.tar").is_ok());
        assert!(source_for("file:///tmp/a.tar").is_ok());
        assert!(!is_remote("/tmp/a.tar") && !is_remote("file:///a.tar") && is_remote("s3://b/a.tar"));
        let e = source_for("ftp://b/a.tar").err().unwrap().to_string();
        assert!(e.contains("scheme ftp:// is not supported") && e.contains("s3://"), "{e}");
        // remote URLs of one bucket/host share one source; local paths get LocalSource
        let urls: Vec<String> =
            ["http://127.0.0.1:9/a.tar", "/tmp/x.tar", "http://127.0.0.1:9/b.tar", "http://127.0.0.1:10/c.tar"]
                .map(String::from)
                .to_vec();
        let s = sources_for(&urls, &RemoteOptions::default(), &Arc::default()).unwrap();
        assert!(Arc::ptr_eq(&s[0], &s[2]) && !Arc::ptr_eq(&s[0], &s[3]));
        assert_eq!((s[0].read_ahead(), s[1].read_ahead()), (2, 0));
    }
}
