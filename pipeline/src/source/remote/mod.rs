//! Remote shards: `s3://`, `gs://`, `az://`, `http://` and `https://` URLs streamed through the
//! [`object_store`] crate, with bounded read-ahead and retries that resume mid-shard.
//!
//! # URL forms and stores
//! | URL | store | bucket / container / host |
//! | --- | --- | --- |
//! | `s3://BUCKET/key` (also `s3a://`) | [`object_store::aws::AmazonS3`] | `BUCKET` |
//! | `gs://BUCKET/key` | [`object_store::gcp::GoogleCloudStorage`] | `BUCKET` |
//! | `az://CONTAINER/key` (also `azure://`, `abfs://`, `abfss://`, `adl://`) | [`object_store::azure::MicrosoftAzure`] | `CONTAINER` |
//! | `http://HOST[:PORT]/path`, `https://…` | [`object_store::http::HttpStore`] (plain GET with `Range`) | `HOST[:PORT]` |
//!
//! One store (one connection pool) is built per scheme + bucket/host. Credentials, region and
//! endpoint come from the environment exactly as the `from_env` builders of `object_store` read
//! them: every `AWS_*`, `GOOGLE_*` (plus `SERVICE_ACCOUNT`) and `AZURE_*` variable those builders
//! know, e.g. `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT` / `AWS_ENDPOINT_URL` (S3-compatible servers),
//! `AWS_ALLOW_HTTP=true` (plain-HTTP endpoints), `GOOGLE_SERVICE_ACCOUNT` /
//! `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
//! `AZURE_STORAGE_SAS_KEY`. Without explicit credentials S3 and GCS fall back to the cloud VM's
//! instance credentials (as the AWS / Google SDKs do).
//!
//! # Streaming and read-ahead
//! A shard is read as a byte stream (`GET` → body stream), never downloaded whole first. A pump
//! task per open shard moves body chunks into a byte-bounded buffer (a semaphore of
//! [`RemoteOptions::shard_buffer_bytes`] permits, released as the tar parser consumes the
//! bytes); when the buffer is full the pump stops reading the socket (TCP back-pressure). The
//! loader opens the next [`RemoteOptions::read_ahead`] shards of a reader stream while the current
//! one is parsed, so a reader stream holds at most `read_ahead_bytes` buffered bytes (plus one
//! network chunk per open shard).
//!
//! # Retries
//! A failed request, or a body that breaks or ends early, is retried with exponential backoff
//! and jitter (delay `n` drawn uniformly from `[b/2, b]`, `b = min(10 s, 200 ms · 2^(n-1))`).
//! After a mid-shard failure the shard is reopened with a `Range: bytes=OFFSET-` request from the
//! byte offset already delivered (and `If-Match` on the first response's ETag when it had one), so
//! the tar stream continues seamlessly. An outage ends after [`RemoteOptions::max_retries`]
//! retries or [`RemoteOptions::max_retry_time`] since its first failure, whichever comes first;
//! any delivered byte ends the outage (the next failure starts a new budget). Errors that
//! retrying cannot fix (404, 401/403, other 4xx, a changed object) are not retried. Every
//! failure ends with [`PipelineError::Remote`], one line naming the URL, the attempts, the time
//! spent and the last cause, and the loader's epoch ends with that `Err`.
//!
//! `object_store`'s own retries are switched off (`max_retries = 0`) so that this module is the
//! only retry layer and its counts are exact. Its 30 s whole-request timeout is disabled too (a
//! large shard on a slow link legitimately takes longer); a stalled connection is caught by a
//! 30 s read timeout instead (5 s connect timeout).
//!
//! # Modules
//! | module | what it holds |
//! |---|---|
//! | `url` | [`Provider`], [`RemoteUrl`] (URL forms) |
//! | `config` | [`RemoteConfig`] (the `[remote]` section), [`RemoteOptions`] |
//! | `store` | [`build_store`] from the environment ([`process_env`]) |
//! | `retry` | failure classification, outage budget, backoff with jitter |
//! | `pump` | the GET, the pump task with its byte budget, the read side |
//! | `fatal` | the fatal-error tap the loader's reader wraps around a shard stream |
//! | `stats` | [`RemoteStats`] |
//! | `manifest` | [`read_remote_manifest`] (`manifest.json` beside remote shards) |
mod config;
mod fatal;
mod manifest;
mod pump;
mod retry;
mod stats;
mod store;
mod url;

pub use config::{RemoteConfig, RemoteOptions};
pub(crate) use fatal::FatalTap;
pub use manifest::read_remote_manifest;
pub use stats::RemoteStats;
pub use store::{build_store, process_env};
pub use url::{Provider, RemoteUrl};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use object_store::ObjectStore;
use tokio::sync::{mpsc, Semaphore};

use crate::source::remote::fatal::take_fatal;
use crate::source::remote::pump::{pump, Fetch, RemoteReader};
use crate::source::remote::retry::Outage;
use crate::source::{OpenFuture, ShardSource, ShardStream};
use crate::{PipelineError, Result};

/// Serves the shards of one bucket / container / HTTP host through `object_store`.
pub struct RemoteSource {
    key: String,
    provider: Provider,
    store: Arc<dyn ObjectStore>,
    opts: Arc<RemoteOptions>,
    stats: Arc<RemoteStats>,
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSource").field("key", &self.key).field("provider", &self.provider).finish()
    }
}

impl RemoteSource {
    /// A source for the store of `url` (any URL of the same scheme + bucket/host works),
    /// configured from the process environment.
    ///
    /// Errors: see [`RemoteUrl::parse`] and [`build_store`].
    pub fn new(url: &str, opts: RemoteOptions, stats: Arc<RemoteStats>) -> Result<RemoteSource> {
        Self::with_env(url, opts, stats, &process_env())
    }

    /// As [`RemoteSource::new`] with an explicit environment (tests).
    pub fn with_env(
        url: &str,
        opts: RemoteOptions,
        stats: Arc<RemoteStats>,
        env: &[(String, String)],
    ) -> Result<RemoteSource> {
        let u = RemoteUrl::parse(url)?;
        let store = build_store(&u, &opts, env)?;
        Ok(RemoteSource { key: u.store_key(), provider: u.provider, store, opts: Arc::new(opts), stats })
    }

    /// The backend serving this source.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// `scheme://bucket-or-host` of this source.
    pub fn store_key(&self) -> &str {
        &self.key
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<RemoteStats> {
        self.stats.clone()
    }

    fn fetch(&self, url: &str) -> Result<Fetch> {
        let u = RemoteUrl::parse(url)?;
        if u.store_key() != self.key {
            return Err(PipelineError::Internal(format!("shard {url} given to the source of {}", self.key)));
        }
        Ok(Fetch {
            store: self.store.clone(),
            path: u.path,
            url: Arc::from(url),
            opts: self.opts.clone(),
            stats: self.stats.clone(),
        })
    }

    async fn open_stream(&self, url: &str) -> Result<ShardStream> {
        let fetch = self.fetch(url)?;
        let first = fetch.get_from(0, None, &mut Outage::default()).await?;
        let cap = self.opts.shard_buffer_bytes() as u32;
        let sem = Arc::new(Semaphore::new(cap as usize));
        let (tx, rx) = mpsc::unbounded_channel();
        let received = Arc::new(AtomicU64::new(0));
        let pump = tokio::spawn(pump(fetch, first, tx, sem, cap, received.clone())).abort_handle();
        let stats = &self.stats;
        stats.shards_opened.fetch_add(1, Ordering::Relaxed);
        let open = stats.open_shards.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_open_shards.fetch_max(open, Ordering::Relaxed);
        Ok(Box::new(RemoteReader {
            rx,
            cur: None,
            done: false,
            pump,
            received,
            first_read: false,
            stats: stats.clone(),
        }))
    }

    /// Read a whole (small) object, e.g. `manifest.json`, with the same retries.
    pub async fn read_all(&self, url: &str) -> Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut s = self.open_stream(url).await?;
        let mut out = Vec::new();
        if let Err(e) = s.read_to_end(&mut out).await {
            return Err(take_fatal(e).unwrap_or_else(|e| PipelineError::Remote {
                url: url.to_string(),
                attempts: 1,
                secs: 0.0,
                offset: out.len() as u64,
                cause: e.to_string(),
                hint: "check the server".into(),
                not_found: false,
            }));
        }
        Ok(out)
    }
}

impl ShardSource for RemoteSource {
    fn open<'a>(&'a self, url: &'a str) -> OpenFuture<'a> {
        Box::pin(self.open_stream(url))
    }
    fn read_ahead(&self) -> usize {
        self.opts.read_ahead
    }
}

/// One [`RemoteSource`] per store key, shared by all shards of that bucket/host.
#[derive(Default)]
pub(crate) struct SourceCache {
    sources: HashMap<String, Arc<RemoteSource>>,
}

impl SourceCache {
    pub(crate) fn get(
        &mut self,
        url: &str,
        opts: &RemoteOptions,
        stats: &Arc<RemoteStats>,
    ) -> Result<Arc<RemoteSource>> {
        let key = RemoteUrl::parse(url)?.store_key();
        if let Some(s) = self.sources.get(&key) {
            return Ok(s.clone());
        }
        let s = Arc::new(RemoteSource::new(url, opts.clone(), stats.clone())?);
        self.sources.insert(key, s.clone());
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
