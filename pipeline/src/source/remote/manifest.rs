//! Reading the `manifest.json` that `dspnet-shard` wrote beside remote shards, from synchronous
//! code, with the shards' retry budget.
use std::sync::Arc;

use crate::shard::{Manifest, FORMAT_VERSION, MANIFEST_NAME};
use crate::source::braces::expand_braces;
use crate::source::remote::config::RemoteOptions;
use crate::source::remote::RemoteSource;
use crate::{PipelineError, Result};

/// Run `fut` to completion on a private current-thread runtime in a scoped thread (callable from
/// synchronous code, inside or outside another tokio runtime).
fn block_on_private<T: Send, F: std::future::Future<Output = Result<T>> + Send>(fut: F) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| PipelineError::Internal(format!("cannot start tokio runtime: {e}")))?;
            rt.block_on(fut)
        })
        .join()
        .unwrap_or_else(|_| Err(PipelineError::Internal("remote manifest reader panicked".into())))
    })
}

/// Read the `manifest.json` that `dspnet-shard` wrote next to remote shards: `shard` is a shard
/// URL or a brace pattern (the folder of its first shard is used), e.g.
/// `s3://bucket/cifar/train-{000000..000146}.tar` → `s3://bucket/cifar/manifest.json`.
/// The request is retried within `opts`' outage budget (`max_retries`, `max_retry_time`:
/// the same `remote.max_retries` / `remote.max_retry_secs` the shards use).
///
/// Returns `Ok(None)` when the store answers that there is no manifest (HTTP 404, no such key).
///
/// Errors: [`PipelineError::Remote`] (unreachable after the retries, access denied),
/// [`PipelineError::Manifest`] (malformed JSON or a newer format), URL errors as in
/// [`crate::source::remote::RemoteUrl::parse`].
pub fn read_remote_manifest(shard: &str, opts: &RemoteOptions) -> Result<Option<Manifest>> {
    let first = expand_braces(shard.trim())?.into_iter().next().unwrap_or_default();
    let dir = first.rsplit_once('/').map(|(d, _)| d).unwrap_or(&first);
    let url = format!("{dir}/{MANIFEST_NAME}");
    let src = RemoteSource::new(&url, RemoteOptions { read_ahead: 0, ..opts.clone() }, Arc::default())?;
    let bytes = match block_on_private(src.read_all(&url)) {
        Ok(b) => b,
        Err(PipelineError::Remote { not_found: true, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |reason: String| PipelineError::Manifest { path: url.clone().into(), reason };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if m.format_version > FORMAT_VERSION {
        return Err(bad(format!("format_version {} is newer than supported {FORMAT_VERSION}", m.format_version)));
    }
    Ok(Some(m))
}
