//! Where shards come from, and the whole contract between a shard's location and the loader:
//! a [`ShardSource`] opens a shard URL as an async byte stream ([`ShardStream`]); an error it
//! returns is either fatal for the epoch ([`is_fatal`]) or makes the shard one to skip; a fatal
//! failure met while the stream is read is taken back out of the parser's I/O error by
//! `FatalTap`. Local paths (and `file://` URLs) are served by [`LocalSource`]; `s3://`, `gs://`,
//! `az://`, `http://` and `https://` by [`remote::RemoteSource`]. Shard patterns expand into
//! shard URLs ([`expand_pattern`]), and [`manifest_beside`] reads the `manifest.json` beside a
//! shard list, local or remote.
//!
//! | module | what it holds |
//! |---|---|
//! | `braces` | [`expand_braces`] (no filesystem access) |
//! | `pattern` | [`expand_pattern`]: braces, folders, files; remote URLs checked for form |
//! | `local` | [`LocalSource`] |
//! | [`remote`] | remote shards through `object_store`: URLs, stores, retries, read-ahead, [`remote::RemoteConfig`] |
mod braces;
mod local;
mod pattern;
pub mod remote;

pub use braces::expand_braces;
pub use local::LocalSource;
pub use pattern::expand_pattern;
pub(crate) use remote::FatalTap;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncRead;

use crate::shard::{read_manifest, Manifest, MANIFEST_NAME};
use crate::source::remote::{RemoteConfig, RemoteOptions, RemoteStats, SourceCache};
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

/// Whether an error of [`ShardSource::open`], or one taken from a `FatalTap`, ends the epoch: a
/// remote shard that failed for good ([`PipelineError::Remote`]), a remote store that cannot be
/// configured ([`PipelineError::RemoteConfig`]) or an internal failure. Any other error (e.g. a
/// local file that cannot be opened) makes the shard an unreadable one, skipped and counted.
pub fn is_fatal(e: &PipelineError) -> bool {
    matches!(e, PipelineError::Remote { .. } | PipelineError::RemoteConfig { .. } | PipelineError::Internal(_))
}

/// The [`ShardSource`] serving `url`: [`LocalSource`] for plain paths and `file://`, a
/// [`remote::RemoteSource`] with default [`RemoteOptions`] for remote URLs.
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

/// The `manifest.json` that `dspnet-shard` wrote beside the shards of `shards` (in the folder of
/// the first one): read from disk for local paths; for remote URLs fetched from the same folder
/// of the store with `remote`'s retry budget (`remote.max_retries`, `remote.max_retry_secs`),
/// see [`remote::read_remote_manifest`]. `Ok(None)` for an empty list and when there is no
/// manifest (no file; HTTP 404 or no such key).
///
/// Errors: [`PipelineError::Manifest`] when a manifest exists but is malformed or of a newer
/// format; [`PipelineError::Read`] when a local one cannot be read; [`PipelineError::Remote`]
/// when the store stays unreachable or refuses access; URL errors as in
/// [`remote::RemoteUrl::parse`].
pub fn manifest_beside(shards: &[String], remote: &RemoteConfig) -> Result<Option<Manifest>> {
    let Some(first) = shards.first() else { return Ok(None) };
    if is_remote(first) {
        return remote::read_remote_manifest(first, &RemoteOptions::from(remote));
    }
    let dir = Path::new(first).parent().unwrap_or(Path::new(""));
    match dir.join(MANIFEST_NAME).try_exists() {
        Ok(true) => Ok(Some(read_manifest(dir)?)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
