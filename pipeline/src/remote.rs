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
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ClientConfigKey, ClientOptions, GetOptions, GetRange, GetResult, ObjectStore, RetryConfig};
use rand::Rng;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::loader::LoaderConfig;
use crate::shard::{Manifest, FORMAT_VERSION, MANIFEST_NAME};
use crate::source::{OpenFuture, ShardSource, ShardStream};
use crate::{PipelineError, Result};

/// Which `object_store` backend serves a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Amazon S3 or an S3-compatible server (`s3://`, `s3a://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`, `azure://`, `abfs://`, `abfss://`, `adl://`).
    Azure,
    /// Any HTTP(S) server that answers `GET` with `Range` (`http://`, `https://`).
    Http,
}

impl Provider {
    /// The provider of `scheme` (lower case, without `://`), `None` when unknown.
    pub fn of_scheme(scheme: &str) -> Option<Provider> {
        match scheme {
            "s3" | "s3a" => Some(Provider::S3),
            "gs" => Some(Provider::Gcs),
            "az" | "azure" | "abfs" | "abfss" | "adl" => Some(Provider::Azure),
            "http" | "https" => Some(Provider::Http),
            _ => None,
        }
    }

    /// Environment variables that configure this provider (for error hints and the docs).
    pub fn env_hint(self) -> &'static str {
        match self {
            Provider::S3 => "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL (S3-compatible servers), AWS_ALLOW_HTTP",
            Provider::Gcs => "GOOGLE_SERVICE_ACCOUNT (key file path), GOOGLE_SERVICE_ACCOUNT_KEY or GOOGLE_APPLICATION_CREDENTIALS",
            Provider::Azure => "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY or AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_TENANT_ID",
            Provider::Http => "no credentials (plain GET with Range)",
        }
    }

    /// Prefix of the environment variables read for this provider (`None`: none are read).
    fn env_prefix(self) -> Option<&'static str> {
        match self {
            Provider::S3 => Some("AWS_"),
            Provider::Gcs => Some("GOOGLE_"),
            Provider::Azure => Some("AZURE_"),
            Provider::Http => None,
        }
    }

    fn reads_env(self, name: &str) -> bool {
        self.env_prefix().is_some_and(|p| name.starts_with(p))
    }
}

/// A parsed remote shard URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    /// Backend serving the URL.
    pub provider: Provider,
    /// Scheme as written, lower case (`s3`, `https`, …).
    pub scheme: String,
    /// Bucket, container or `host[:port]` (for `az://container@account.dfs.core.windows.net`
    /// the whole `container@account…`).
    pub authority: String,
    /// Object path inside the store, percent-decoded (`prefix/train-000000.tar`).
    pub path: StorePath,
}

impl RemoteUrl {
    /// Parse `url`. Errors: [`PipelineError::UnsupportedScheme`] for an unknown scheme,
    /// [`PipelineError::RemoteConfig`] for a missing bucket/host or object path, glob characters
    /// (`*`, `?`, `[`) or an invalid path.
    pub fn parse(url: &str) -> Result<RemoteUrl> {
        let cfg = |reason: &str| PipelineError::RemoteConfig { url: url.to_string(), reason: reason.to_string() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| cfg("not a URL (expected SCHEME://BUCKET/PATH)"))?;
        let scheme = scheme.to_ascii_lowercase();
        let provider = Provider::of_scheme(&scheme)
            .ok_or_else(|| PipelineError::UnsupportedScheme { scheme: scheme.clone(), url: url.to_string() })?;
        if rest.contains(['*', '?', '[']) {
            return Err(cfg(
                "glob characters and query strings (* ? [) are not supported in remote shard URLs; list the shards with braces, e.g. train-{000000..000146}.tar",
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            let what = if provider == Provider::Http { "host" } else { "bucket or container" };
            return Err(cfg(&format!(
                "no {what} (expected {scheme}://{}/PATH/train-000000.tar)",
                what.replace(' ', "-").to_uppercase()
            )));
        }
        if path.is_empty() || path.ends_with('/') {
            return Err(cfg("no object name; remote folders are not listed, name the shards with braces, e.g. PREFIX/train-{000000..000146}.tar"));
        }
        let decoded = StorePath::from_url_path(path).map_err(|e| cfg(&format!("invalid object path: {e}")))?;
        Ok(RemoteUrl { provider, scheme, authority: authority.to_string(), path: decoded })
    }

    /// `scheme://authority`: one store (and connection pool) serves all URLs with the same key.
    pub fn store_key(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// Remote-read settings, from the `loader.remote_*` options ([`RemoteOptions::from_loader`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteOptions {
    /// Shards opened and buffered ahead of the one being parsed, per reader stream (0 = none).
    pub read_ahead: usize,
    /// Byte cap of the buffers of one reader stream (current shard + read-ahead shards), bytes.
    pub read_ahead_bytes: u64,
    /// Retries of one outage (a failed request or a broken body counts one each).
    pub max_retries: u32,
    /// Longest time an outage may last, measured from its first failure.
    pub max_retry_time: Duration,
    /// Backoff before the first retry (upper bound before jitter).
    pub init_backoff: Duration,
    /// Largest backoff between two retries (upper bound before jitter).
    pub max_backoff: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response body before it counts as a failure.
    pub read_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            read_ahead: 2,
            read_ahead_bytes: 64 << 20,
            max_retries: 8,
            max_retry_time: Duration::from_secs(60),
            init_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
        }
    }
}

impl RemoteOptions {
    /// The options a loader with `cfg` uses (`loader.remote_read_ahead`,
    /// `loader.remote_read_ahead_bytes`, `loader.remote_max_retries`,
    /// `loader.remote_max_retry_secs`; the rest at their defaults).
    pub fn from_loader(cfg: &LoaderConfig) -> RemoteOptions {
        RemoteOptions {
            read_ahead: cfg.remote_read_ahead,
            read_ahead_bytes: cfg.remote_read_ahead_bytes,
            max_retries: cfg.remote_max_retries,
            max_retry_time: Duration::from_secs_f64(cfg.remote_max_retry_secs.clamp(0.0, 1e9)),
            ..RemoteOptions::default()
        }
    }

    /// Buffer of one open shard: `read_ahead_bytes / (read_ahead + 1)`, at least 64 KiB, bytes.
    pub fn shard_buffer_bytes(&self) -> u64 {
        (self.read_ahead_bytes / (self.read_ahead as u64 + 1)).clamp(64 << 10, u32::MAX as u64)
    }

    /// Upper bound of the backoff before retry `n` (1-based): `min(max_backoff, init · 2^(n-1))`.
    pub fn backoff_cap(&self, n: u32) -> Duration {
        let f = 2f64.powi(n.saturating_sub(1).min(60) as i32);
        Duration::from_secs_f64((self.init_backoff.as_secs_f64() * f).min(self.max_backoff.as_secs_f64()))
    }
}

/// Counters of the remote sources of one loader (all shards, all epochs). Bytes are counted as
/// they leave the network, before decompression.
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// GET requests sent (first opens and range re-opens), successful or not.
    pub requests: AtomicU64,
    /// Failed attempts that were retried (opens and broken bodies).
    pub retries: AtomicU64,
    /// Successful mid-shard re-opens with a range request.
    pub resumed: AtomicU64,
    /// Body bytes received.
    pub bytes: AtomicU64,
    /// Shards opened.
    pub shards_opened: AtomicU64,
    /// Remote shards open right now (being parsed or read ahead).
    pub open_shards: AtomicUsize,
    /// Largest number of remote shards open at once.
    pub peak_open_shards: AtomicUsize,
    /// Bytes that had already arrived for a shard when the parser first read it (summed): the
    /// read-ahead that paid off.
    pub ahead_bytes: AtomicU64,
    /// Bytes received but not yet read by the parser, right now.
    pub buffered_bytes: AtomicU64,
    /// Largest `buffered_bytes` seen.
    pub peak_buffered_bytes: AtomicU64,
}

impl RemoteStats {
    /// One-line summary, e.g. `requests=12 retries=2 resumed=1 bytes=1048576 peak_open=3 ahead_bytes=65536`.
    pub fn summary(&self) -> String {
        format!(
            "requests={} retries={} resumed={} bytes={} shards={} peak_open={} ahead_bytes={} peak_buffered={}",
            self.requests.load(Ordering::Relaxed),
            self.retries.load(Ordering::Relaxed),
            self.resumed.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.shards_opened.load(Ordering::Relaxed),
            self.peak_open_shards.load(Ordering::Relaxed),
            self.ahead_bytes.load(Ordering::Relaxed),
            self.peak_buffered_bytes.load(Ordering::Relaxed),
        )
    }
}

fn install_crypto_provider() {
    // reqwest is built with rustls but no bundled provider; ring is ours. An already installed
    // process default (e.g. by an embedding application) is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Client options: no whole-request timeout, connect and read timeouts, then the provider's
/// client settings from the environment (e.g. `AWS_ALLOW_HTTP`) on top.
fn client_options(provider: Provider, scheme: &str, opts: &RemoteOptions, env: &[(String, String)]) -> ClientOptions {
    let mut c = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(opts.connect_timeout)
        .with_read_timeout(opts.read_timeout);
    if scheme == "http" {
        c = c.with_allow_http(true);
    }
    for (k, v) in env {
        if !provider.reads_env(k) {
            continue;
        }
        let key = k.to_ascii_lowercase();
        let client_key = match provider {
            Provider::S3 => match key.parse() {
                Ok(object_store::aws::AmazonS3ConfigKey::Client(c)) => Some(c),
                _ => None,
            },
            Provider::Gcs => match key.parse() {
                Ok(object_store::gcp::GoogleConfigKey::Client(c)) => Some(c),
                _ => None,
            },
            Provider::Azure => match key.parse() {
                Ok(object_store::azure::AzureConfigKey::Client(c)) => Some(c),
                _ => None,
            },
            Provider::Http => None,
        };
        if let Some(ck) = client_key {
            if !matches!(ck, ClientConfigKey::Timeout) {
                c = c.with_config(ck, v.clone());
            }
        }
    }
    c
}

/// Build the store serving `u`, configured from `env` (the process environment in production).
///
/// Errors: [`PipelineError::RemoteConfig`] naming the URL, what `object_store` rejected and the
/// environment variables to set.
pub fn build_store(u: &RemoteUrl, opts: &RemoteOptions, env: &[(String, String)]) -> Result<Arc<dyn ObjectStore>> {
    install_crypto_provider();
    let base = u.store_key();
    let client = client_options(u.provider, &u.scheme, opts, env);
    let retry = RetryConfig { max_retries: 0, ..RetryConfig::default() };
    let fail = |e: object_store::Error| PipelineError::RemoteConfig {
        url: base.clone(),
        reason: format!("{}; configure it with {}", one_line_error(&e), u.provider.env_hint()),
    };
    let apply_env = |f: &mut dyn FnMut(&str, &str)| {
        for (k, v) in env {
            if u.provider.reads_env(k) {
                f(&k.to_ascii_lowercase(), v);
            }
        }
    };
    let store: Arc<dyn ObjectStore> = match u.provider {
        Provider::S3 => {
            let mut b = object_store::aws::AmazonS3Builder::new();
            apply_env(&mut |k, v| {
                if let Ok(key) = k.parse() {
                    b = std::mem::take(&mut b).with_config(key, v);
                }
            });
            let url = if u.scheme == "s3a" { format!("s3://{}", u.authority) } else { base.clone() };
            Arc::new(b.with_url(url).with_client_options(client).with_retry(retry).build().map_err(fail)?)
        }
        Provider::Gcs => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new();
            if let Some((_, v)) = env.iter().find(|(k, _)| k == "SERVICE_ACCOUNT") {
                b = b.with_service_account_path(v);
            }
            apply_env(&mut |k, v| {
                if let Ok(key) = k.parse() {
                    b = std::mem::take(&mut b).with_config(key, v);
                }
            });
            Arc::new(b.with_url(base.clone()).with_client_options(client).with_retry(retry).build().map_err(fail)?)
        }
        Provider::Azure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::new();
            apply_env(&mut |k, v| {
                if let Ok(key) = k.parse() {
                    b = std::mem::take(&mut b).with_config(key, v);
                }
            });
            if let Some((_, v)) = env.iter().find(|(k, _)| k == "MSI_ENDPOINT") {
                b = b.with_msi_endpoint(v);
            }
            Arc::new(b.with_url(base.clone()).with_client_options(client).with_retry(retry).build().map_err(fail)?)
        }
        Provider::Http => Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(base.clone())
                .with_client_options(client)
                .with_retry(retry)
                .build()
                .map_err(fail)?,
        ),
    };
    Ok(store)
}

/// The process environment as (name, value) pairs (non-UTF-8 entries skipped).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// An error and its sources on one line, repeated texts left out.
fn one_line_error(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The cause of a failed request without `object_store`'s "Error performing GET URL in 1.2ms - "
/// (the URL is already in our message);
/// An S3-style XML error body is shortened to its code and message.
fn tidy_cause(text: &str) -> String {
    let mut t = text.to_string();
    if let Some(i) = t.find("Error performing ") {
        if let Some(j) = t[i..].find(" - ") {
            t = format!("{}{}", &t[..i], &t[i + j + 3..]);
        }
    }
    let tag = |s: &str, name: &str| -> Option<String> {
        let a = s.find(&format!("<{name}>"))? + name.len() + 2;
        let b = a + s[a..].find(&format!("</{name}>"))?;
        Some(s[a..b].to_string())
    };
    if let Some(x) = t.find("<?xml").or_else(|| t.find("<Error>")) {
        if let (Some(code), Some(msg)) = (tag(&t[x..], "Code"), tag(&t[x..], "Message")) {
            t = format!("{}{code}: {msg}", &t[..x]);
        }
    }
    t
}

/// The HTTP status named in an `object_store` error text ("… status code: 503 …"), if any.
fn http_status(text: &str) -> Option<u16> {
    let i = text.find("status code: ")? + "status code: ".len();
    text.get(i..i + 3)?.parse().ok()
}

/// Whether retrying can help: server errors, 408/429, transport errors and broken bodies yes;
/// not found, auth, precondition (object changed), invalid path and other 4xx no.
fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::AlreadyExists { .. }
        | E::UnknownConfigurationKey { .. } => false,
        other => {
            !matches!(http_status(&one_line_error(other)), Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
        }
    }
}

/// Whether the store answered that the object does not exist (`NotFound`, or HTTP 404 in the
/// text of an error the store did not classify).
fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || http_status(&one_line_error(e)) == Some(404)
}

/// Why a fetch gave up, which chooses the error's hint.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Failure {
    /// Retried until the budget ran out.
    Transient,
    /// The object does not exist.
    NotFound,
    /// Not retried: access denied, object changed, bad request.
    Fatal,
}

impl Failure {
    fn of(e: &object_store::Error) -> Failure {
        if is_not_found(e) {
            Failure::NotFound
        } else if is_transient(e) {
            Failure::Transient
        } else {
            Failure::Fatal
        }
    }
}

/// State of one outage: failures since the last delivered byte.
#[derive(Default)]
struct Outage {
    /// Failed attempts so far (of this outage).
    failures: u32,
    started: Option<Instant>,
}

impl Outage {
    fn reset(&mut self) {
        self.failures = 0;
        self.started = None;
    }
    fn elapsed(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }
    /// Record a failure; the backoff before the next attempt, or `None` when the failure is not
    /// retried (anything but [`Failure::Transient`]) or the budget is spent.
    fn fail(&mut self, opts: &RemoteOptions, failure: Failure) -> Option<Duration> {
        self.failures += 1;
        let started = *self.started.get_or_insert_with(Instant::now);
        if failure != Failure::Transient || self.failures > opts.max_retries {
            return None;
        }
        let cap = opts.backoff_cap(self.failures).as_secs_f64();
        let delay = Duration::from_secs_f64(rand::thread_rng().gen_range(cap * 0.5..=cap.max(1e-9)));
        if started.elapsed() + delay > opts.max_retry_time {
            return None;
        }
        Some(delay)
    }
}

/// One shard being fetched: the store, the object, the settings and the counters.
struct Fetch {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    url: Arc<str>,
    opts: Arc<RemoteOptions>,
    stats: Arc<RemoteStats>,
}

impl Fetch {
    fn give_up(&self, outage: &Outage, offset: u64, cause: String, failure: Failure) -> PipelineError {
        let hint = match failure {
            Failure::Transient => format!(
                "the server stayed unreachable; check the network and the server, or raise loader.remote_max_retries ({}) / loader.remote_max_retry_secs ({})",
                self.opts.max_retries,
                self.opts.max_retry_time.as_secs_f64()
            ),
            Failure::NotFound => "the object does not exist; check the shard pattern".to_string(),
            Failure::Fatal => "this is not retried; check the URL and the credentials (see README, Remote shards)".to_string(),
        };
        PipelineError::Remote {
            url: self.url.to_string(),
            attempts: outage.failures.max(1),
            secs: outage.elapsed().as_secs_f64(),
            offset,
            cause,
            hint,
            not_found: failure == Failure::NotFound,
        }
    }

    /// GET the object from byte `offset` (a range request when > 0), retrying transient failures
    /// within the outage budget.
    async fn get_from(&self, offset: u64, etag: Option<&str>, outage: &mut Outage) -> Result<GetResult> {
        loop {
            let options = GetOptions {
                range: (offset > 0).then_some(GetRange::Offset(offset)),
                if_match: etag.map(str::to_string),
                ..GetOptions::default()
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let err = match self.store.get_opts(&self.path, options).await {
                Ok(r) if r.range.start == offset => return Ok(r),
                Ok(r) => {
                    let cause =
                        format!("asked for bytes from {offset}, the server sent {}..{}", r.range.start, r.range.end);
                    outage.fail(&self.opts, Failure::Fatal);
                    return Err(self.give_up(outage, offset, cause, Failure::Fatal));
                }
                Err(e) => e,
            };
            let cause = tidy_cause(&one_line_error(&err));
            let failure = Failure::of(&err);
            let Some(delay) = outage.fail(&self.opts, failure) else {
                return Err(self.give_up(outage, offset, cause, failure));
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %self.url, offset, attempt = outage.failures, delay_ms = delay.as_millis() as u64, "remote shard request failed, retrying: {cause}");
            tokio::time::sleep(delay).await;
        }
    }
}

/// A chunk in a shard's buffer; its permits (one per byte) go back to the pump when dropped.
struct Chunk {
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
    stats: Arc<RemoteStats>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // `bytes` has been consumed (or the reader is gone): the chunk is no longer buffered.
        self.stats.buffered_bytes.fetch_sub(self.len0(), Ordering::Relaxed);
    }
}

impl Chunk {
    fn len0(&self) -> u64 {
        // Length at creation; `bytes` is advanced by Buf::advance so we keep it in the permit.
        self._permit.num_permits() as u64
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }
    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }
    fn advance(&mut self, cnt: usize) {
        self.bytes.advance(cnt)
    }
}

/// Error carried through the byte stream when a shard cannot be read: downcast by
/// [`FatalTap`] in the loader so that the epoch ends with the [`PipelineError`] itself.
#[derive(Debug)]
struct FatalRemote(PipelineError);
impl std::fmt::Display for FatalRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for FatalRemote {}

/// Move the body of `first` (and of any range re-open) into the shard buffer.
async fn pump(
    fetch: Fetch,
    first: GetResult,
    tx: mpsc::UnboundedSender<io::Result<Chunk>>,
    sem: Arc<Semaphore>,
    cap: u32,
    received: Arc<AtomicU64>,
) {
    let size = first.meta.size;
    let etag = first.meta.e_tag.clone();
    let mut offset = first.range.start;
    let mut body: BoxStream<'static, object_store::Result<Bytes>> = first.into_stream();
    let mut outage = Outage::default();
    let stats = fetch.stats.clone();
    loop {
        let (cause, failure) = match body.next().await {
            Some(Ok(mut bytes)) => {
                if bytes.is_empty() {
                    continue;
                }
                outage.reset();
                while !bytes.is_empty() {
                    let n = bytes.len().min(cap as usize);
                    let part = bytes.split_to(n);
                    let Ok(permit) = sem.clone().acquire_many_owned(n as u32).await else { return };
                    let len = part.len() as u64;
                    offset += len;
                    received.fetch_add(len, Ordering::Relaxed);
                    stats.bytes.fetch_add(len, Ordering::Relaxed);
                    let now = stats.buffered_bytes.fetch_add(len, Ordering::Relaxed) + len;
                    stats.peak_buffered_bytes.fetch_max(now, Ordering::Relaxed);
                    if tx.send(Ok(Chunk { bytes: part, _permit: permit, stats: stats.clone() })).is_err() {
                        return; // reader gone
                    }
                }
                continue;
            }
            None if offset >= size => return, // complete: dropping tx ends the stream
            Some(Err(_)) if offset >= size => return,
            None => (format!("connection closed after byte {offset} of {size}"), Failure::Transient),
            Some(Err(e)) => (tidy_cause(&one_line_error(&e)), Failure::of(&e)),
        };
        let Some(delay) = outage.fail(&fetch.opts, failure) else {
            let err = fetch.give_up(&outage, offset, cause, failure);
            let _ = tx.send(Err(io::Error::other(FatalRemote(err))));
            return;
        };
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(url = %fetch.url, offset, attempt = outage.failures, delay_ms = delay.as_millis() as u64, "remote shard stream broke, resuming with a range request: {cause}");
        tokio::time::sleep(delay).await;
        match fetch.get_from(offset, etag.as_deref(), &mut outage).await {
            Ok(r) => {
                stats.resumed.fetch_add(1, Ordering::Relaxed);
                body = r.into_stream();
            }
            Err(err) => {
                let _ = tx.send(Err(io::Error::other(FatalRemote(err))));
                return;
            }
        }
    }
}

/// The read side of an open remote shard. A chunk is dropped (its bytes leave the buffer budget)
/// as soon as it is fully read, before waiting for the next one.
struct RemoteReader {
    rx: mpsc::UnboundedReceiver<io::Result<Chunk>>,
    cur: Option<Chunk>,
    done: bool,
    pump: tokio::task::AbortHandle,
    received: Arc<AtomicU64>,
    first_read: bool,
    stats: Arc<RemoteStats>,
}

impl AsyncRead for RemoteReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.first_read {
            self.first_read = true;
            let ahead = self.received.load(Ordering::Relaxed);
            self.stats.ahead_bytes.fetch_add(ahead, Ordering::Relaxed);
        }
        loop {
            if let Some(c) = self.cur.as_mut() {
                let n = c.remaining().min(buf.remaining());
                buf.put_slice(&c.chunk()[..n]);
                c.advance(n);
                if !c.has_remaining() {
                    self.cur = None;
                }
                return Poll::Ready(Ok(()));
            }
            if self.done || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(c))) => {
                    if c.has_remaining() {
                        self.cur = Some(c);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl Drop for RemoteReader {
    fn drop(&mut self) {
        self.pump.abort();
        self.stats.open_shards.fetch_sub(1, Ordering::Relaxed);
    }
}

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

/// The [`PipelineError`] carried by a remote stream's read error, or the error back.
fn take_fatal(e: io::Error) -> std::result::Result<PipelineError, io::Error> {
    if e.get_ref().is_some_and(|i| i.is::<FatalRemote>()) {
        let inner = e.into_inner().expect("checked above");
        match inner.downcast::<FatalRemote>() {
            Ok(f) => Ok(f.0),
            Err(other) => Err(io::Error::other(other)),
        }
    } else {
        Err(e)
    }
}

/// Where [`FatalTap`] leaves the error that ended a remote stream.
pub(crate) type FatalSlot = Arc<Mutex<Option<PipelineError>>>;

/// Wraps a shard stream; a read error carrying a remote-shard failure is stored in the slot (and
/// passed on as a plain I/O error with the same text), so the loader can end the epoch with it
/// instead of counting a truncated shard.
pub(crate) struct FatalTap {
    inner: ShardStream,
    slot: FatalSlot,
}

impl FatalTap {
    /// Wrap `inner`; returns the wrapped stream and its slot.
    pub(crate) fn wrap(inner: ShardStream) -> (ShardStream, FatalSlot) {
        let slot: FatalSlot = Arc::default();
        (Box::new(FatalTap { inner, slot: slot.clone() }), slot)
    }
}

impl AsyncRead for FatalTap {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => match take_fatal(e) {
                Ok(fatal) => {
                    let text = fatal.to_string();
                    *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(fatal);
                    Poll::Ready(Err(io::Error::other(text)))
                }
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
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
/// the same `loader.remote_max_retries` / `loader.remote_max_retry_secs` the shards use).
///
/// Returns `Ok(None)` when the store answers that there is no manifest (HTTP 404, no such key).
///
/// Errors: [`PipelineError::Remote`] (unreachable after the retries, access denied),
/// [`PipelineError::Manifest`] (malformed JSON or a newer format), URL errors as in
/// [`RemoteUrl::parse`].
pub fn read_remote_manifest(shard: &str, opts: &RemoteOptions) -> Result<Option<Manifest>> {
    let first = crate::source::expand_braces(shard.trim())?.into_iter().next().unwrap_or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn url_parsing_and_provider_selection() {
        let u = RemoteUrl::parse("s3://bucket/prefix/train-000001.tar").unwrap();
        assert_eq!(
            (u.provider, u.authority.as_str(), u.path.as_ref()),
            (Provider::S3, "bucket", "prefix/train-000001.tar")
        );
        assert_eq!(u.store_key(), "s3://bucket");
        assert_eq!(RemoteUrl::parse("gs://b/x.tar").unwrap().provider, Provider::Gcs);
        assert_eq!(RemoteUrl::parse("az://container/d/x.tar.zst").unwrap().provider, Provider::Azure);
        assert_eq!(RemoteUrl::parse("AZURE://container/x.tar").unwrap().scheme, "azure");
        let h = RemoteUrl::parse("http://127.0.0.1:8080/data/train%20a-000000.tar").unwrap();
        assert_eq!(
            (h.provider, h.authority.as_str(), h.path.as_ref()),
            (Provider::Http, "127.0.0.1:8080", "data/train a-000000.tar")
        );
        assert_eq!(RemoteUrl::parse("https://example.org/x.tar").unwrap().store_key(), "https://example.org");

        let e = RemoteUrl::parse("ftp://host/x.tar").unwrap_err();
        assert!(matches!(e, PipelineError::UnsupportedScheme { .. }), "{e}");
        for (bad, needle) in [
            ("s3:///x.tar", "no bucket or container"),
            ("http:///x.tar", "no host"),
            ("s3://bucket", "no object name"),
            ("s3://bucket/prefix/", "no object name"),
            ("s3://bucket/train-*.tar", "glob"),
            ("https://h/x.tar?sig=1", "query strings"),
        ] {
            let e = RemoteUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(bad.split('?').next().unwrap()), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn builders_from_an_explicit_environment() {
        let o = RemoteOptions::default();
        // S3 with keys and a loopback endpoint builds without any network access.
        let s3 = env(&[
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("AWS_ALLOW_HTTP", "true"),
        ]);
        let s = RemoteSource::with_env("s3://bkt/a/x.tar", o.clone(), Arc::default(), &s3).unwrap();
        assert_eq!((s.provider(), s.store_key()), (Provider::S3, "s3://bkt"));
        assert!(s.store.to_string().contains("bkt"), "{}", s.store);
        // GCS: a service-account file that does not exist is a clear, one-line error naming it.
        let e = RemoteSource::with_env(
            "gs://bkt/x.tar",
            o.clone(),
            Arc::default(),
            &env(&[("GOOGLE_SERVICE_ACCOUNT", "/nonexistent/sa.json")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gs://bkt") && e.contains("GOOGLE_SERVICE_ACCOUNT") && !e.contains('\n'), "{e}");
        // Azure without an account name: clear error naming the variables to set.
        let e = RemoteSource::with_env("az://container/x.tar", o.clone(), Arc::default(), &[]).unwrap_err().to_string();
        assert!(e.contains("az://container") && e.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
        // Azure with an account and key builds (key must be base64).
        let az = env(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct"), ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")]);
        let s = RemoteSource::with_env("az://container/x.tar", o.clone(), Arc::default(), &az).unwrap();
        assert_eq!(s.provider(), Provider::Azure);
        assert!(s.store.to_string().contains("container"), "{}", s.store);
        // HTTP needs no environment.
        let s = RemoteSource::with_env("http://127.0.0.1:9/x.tar", o, Arc::default(), &[]).unwrap();
        assert_eq!(s.provider(), Provider::Http);
    }

    #[test]
    fn client_options_keep_our_timeouts_and_take_env_client_keys() {
        let o = RemoteOptions::default();
        let c = client_options(
            Provider::S3,
            "s3",
            &o,
            &env(&[("AWS_ALLOW_HTTP", "true"), ("AWS_TIMEOUT", "1s"), ("GOOGLE_ALLOW_HTTP", "false")]),
        );
        assert_eq!(c.get_config_value(&ClientConfigKey::AllowHttp).as_deref(), Some("true"));
        assert_eq!(c.get_config_value(&ClientConfigKey::Timeout), None, "whole-request timeout stays off");
        assert_eq!(c.get_config_value(&ClientConfigKey::ReadTimeout).as_deref(), Some("30s"));
        let h = client_options(Provider::Http, "http", &o, &[]);
        assert_eq!(h.get_config_value(&ClientConfigKey::AllowHttp).as_deref(), Some("true"));
        let hs = client_options(Provider::Http, "https", &o, &[]);
        assert_ne!(hs.get_config_value(&ClientConfigKey::AllowHttp).as_deref(), Some("true"));
    }

    #[test]
    fn backoff_grows_exponentially_within_the_budget() {
        let o = RemoteOptions { max_retries: 8, max_retry_time: Duration::from_secs(60), ..RemoteOptions::default() };
        // caps: 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10 s
        let caps: Vec<f64> = (1..=8).map(|n| o.backoff_cap(n).as_secs_f64()).collect();
        assert_eq!(caps, vec![0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]);
        let mut out = Outage::default();
        for n in 1..=8 {
            let d = out.fail(&o, Failure::Transient).unwrap().as_secs_f64();
            let cap = caps[n - 1];
            assert!(d >= cap * 0.5 - 1e-9 && d <= cap + 1e-9, "retry {n}: {d} not in [{}, {cap}]", cap * 0.5);
        }
        assert!(out.fail(&o, Failure::Transient).is_none(), "9th failure exceeds max_retries = 8");
        out.reset();
        assert!(out.fail(&o, Failure::Transient).is_some());
        // a failure that is not retried ends the outage at once, and still counts as an attempt
        assert!(out.fail(&o, Failure::NotFound).is_none() && out.fail(&o, Failure::Fatal).is_none());
        assert_eq!(out.failures, 3);
        // time budget: with 0.3 s allowed the third backoff (>= 0.4 s) cannot fit.
        let tight = RemoteOptions { max_retry_time: Duration::from_millis(300), ..o.clone() };
        let mut out = Outage::default();
        let mut n = 0;
        while out.fail(&tight, Failure::Transient).is_some() {
            n += 1;
        }
        assert!(n <= 2, "{n} retries fitted in 0.3 s");
    }

    #[test]
    fn status_classification() {
        assert_eq!(
            http_status(
                "Error performing GET x in 1ms - Server returned non-2xx status code: 503 Service Unavailable: "
            ),
            Some(503)
        );
        assert_eq!(http_status("HTTP error: error sending request"), None);
        assert_eq!(
            tidy_cause(
                "Generic HTTP error: Error performing GET http://h/x.tar in 297µs - HTTP error: error sending request"
            ),
            "Generic HTTP error: HTTP error: error sending request"
        );
        assert_eq!(
            tidy_cause("not found: Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?> <Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>k</Key></Error>"),
            "not found: Server returned non-2xx status code: 404 Not Found: NoSuchKey: The specified key does not exist."
        );
        let generic = |s: &str| object_store::Error::Generic { store: "HTTP", source: s.to_string().into() };
        assert!(is_transient(&generic("Server returned non-2xx status code: 503 Service Unavailable")));
        assert!(is_transient(&generic("Server returned non-2xx status code: 429 Too Many Requests")));
        assert!(is_transient(&generic("HTTP error: error sending request")));
        assert!(!is_transient(&generic("Server returned non-2xx status code: 400 Bad Request")));
        assert!(!is_transient(&object_store::Error::NotFound { path: "x".into(), source: "404".into() }));
        assert!(!is_transient(&object_store::Error::Precondition { path: "x".into(), source: "412".into() }));
        // not found: the store's own variant, or a 404 in an error it did not classify
        assert_eq!(
            Failure::of(&object_store::Error::NotFound { path: "x".into(), source: "404".into() }),
            Failure::NotFound
        );
        assert_eq!(Failure::of(&generic("Server returned non-2xx status code: 404 Not Found")), Failure::NotFound);
        assert_eq!(Failure::of(&generic("Server returned non-2xx status code: 403 Forbidden")), Failure::Fatal);
        assert_eq!(
            Failure::of(&generic("Server returned non-2xx status code: 503 Service Unavailable")),
            Failure::Transient
        );
    }

    #[test]
    fn buffer_split_between_open_shards() {
        let o = RemoteOptions { read_ahead: 2, read_ahead_bytes: 60 << 20, ..RemoteOptions::default() };
        assert_eq!(o.shard_buffer_bytes(), 20 << 20);
        let o = RemoteOptions { read_ahead: 0, read_ahead_bytes: 1000, ..RemoteOptions::default() };
        assert_eq!(o.shard_buffer_bytes(), 64 << 10, "at least 64 KiB");
    }
}
