//! Remote-read settings: the `[remote]` config section ([`RemoteConfig`]) and the options a
//! remote source runs with ([`RemoteOptions`]: the section plus backoff and timeouts).
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{PipelineError, Result};

/// Remote shards (`s3://`, `gs://`, `az://`, `http(s)://`): read-ahead and retry budget
/// (TOML/JSON section `remote`). Every field may be left out (its default applies); local
/// shards ignore the section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Shards opened and buffered ahead of the one being parsed, per reader stream (0 = none).
    /// Default 2.
    #[serde(default = "default_read_ahead")]
    pub read_ahead: usize,
    /// Byte cap of the buffers of one reader stream, shared evenly by the shard being parsed and
    /// the read-ahead shards (bytes, >= 65536). Default 64 MiB.
    #[serde(default = "default_read_ahead_bytes")]
    pub read_ahead_bytes: u64,
    /// Retries of one outage (failed request or connection dropped mid-shard, resumed with a
    /// range request) before the epoch ends with an error. Default 8.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Longest outage in seconds, from its first failure, before the epoch ends with an error.
    /// Default 60.
    #[serde(default = "default_max_retry_secs")]
    pub max_retry_secs: f64,
}

fn default_read_ahead() -> usize {
    RemoteOptions::default().read_ahead
}
fn default_read_ahead_bytes() -> u64 {
    RemoteOptions::default().read_ahead_bytes
}
fn default_max_retries() -> u32 {
    RemoteOptions::default().max_retries
}
fn default_max_retry_secs() -> f64 {
    RemoteOptions::default().max_retry_time.as_secs_f64()
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            read_ahead: default_read_ahead(),
            read_ahead_bytes: default_read_ahead_bytes(),
            max_retries: default_max_retries(),
            max_retry_secs: default_max_retry_secs(),
        }
    }
}

impl RemoteConfig {
    /// Errors: [`PipelineError::Config`] naming `remote.read_ahead_bytes` below 65536 bytes or
    /// `remote.max_retry_secs` negative or not finite.
    pub fn validate(&self) -> Result<()> {
        if self.read_ahead_bytes < 1 << 16 {
            return Err(PipelineError::config("remote.read_ahead_bytes", "must be at least 65536 (bytes)"));
        }
        if !(self.max_retry_secs >= 0.0 && self.max_retry_secs.is_finite()) {
            return Err(PipelineError::config("remote.max_retry_secs", "must be a finite number of seconds >= 0"));
        }
        Ok(())
    }
}

/// Remote-read settings: the `[remote]` section ([`RemoteConfig`], converted with `From`) plus
/// backoff and timeouts.
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

impl From<&RemoteConfig> for RemoteOptions {
    /// The options of the `[remote]` section (`read_ahead`, `read_ahead_bytes`, `max_retries`,
    /// `max_retry_secs`); the rest at their defaults.
    fn from(cfg: &RemoteConfig) -> RemoteOptions {
        RemoteOptions {
            read_ahead: cfg.read_ahead,
            read_ahead_bytes: cfg.read_ahead_bytes,
            max_retries: cfg.max_retries,
            max_retry_time: Duration::from_secs_f64(cfg.max_retry_secs.clamp(0.0, 1e9)),
            ..RemoteOptions::default()
        }
    }
}

impl RemoteOptions {
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
