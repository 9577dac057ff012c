//! The counters of a loader's remote sources ([`RemoteStats`]).
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
