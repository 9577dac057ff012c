//! What the loader counts: why a sample or shard was skipped ([`SkipReason`]) and the counters
//! of a loader over all its epochs ([`LoaderStats`]), with their one-line summary.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::source::remote::RemoteStats;

/// Why a sample or shard was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Image bytes could not be decoded.
    CorruptImage,
    /// Image member has zero bytes.
    EmptyImage,
    /// No jpg/jpeg/png/webp member.
    NoImage,
    /// No `.cls` member (Eval mode only).
    MissingLabel,
    /// `.cls` is not an ASCII integer.
    BadLabel,
    /// Shard truncated or corrupt mid-stream.
    TruncatedShard,
    /// Shard holds no sample.
    EmptyShard,
    /// Shard could not be opened.
    UnreadableShard,
}

impl SkipReason {
    /// All reasons, in counter order.
    pub const ALL: [SkipReason; 8] = [
        SkipReason::CorruptImage,
        SkipReason::EmptyImage,
        SkipReason::NoImage,
        SkipReason::MissingLabel,
        SkipReason::BadLabel,
        SkipReason::TruncatedShard,
        SkipReason::EmptyShard,
        SkipReason::UnreadableShard,
    ];
    /// Short snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::CorruptImage => "corrupt_image",
            SkipReason::EmptyImage => "empty_image",
            SkipReason::NoImage => "no_image",
            SkipReason::MissingLabel => "missing_label",
            SkipReason::BadLabel => "bad_label",
            SkipReason::TruncatedShard => "truncated_shard",
            SkipReason::EmptyShard => "empty_shard",
            SkipReason::UnreadableShard => "unreadable_shard",
        }
    }
    fn index(self) -> usize {
        SkipReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
    pub(super) fn is_shard_level(self) -> bool {
        matches!(self, SkipReason::TruncatedShard | SkipReason::EmptyShard | SkipReason::UnreadableShard)
    }
}

/// Loader counters, cumulative over all epochs of a [`crate::loader::Loader`]. Updated by the loader's threads.
#[derive(Debug, Default)]
pub struct LoaderStats {
    /// Samples delivered in batches.
    pub images: AtomicU64,
    /// Batches delivered.
    pub batches: AtomicU64,
    /// Total time (ns) the consumer waited in `EpochIter::next`.
    pub consumer_wait_ns: AtomicU64,
    /// Batches waiting in the prefetch queue at the last `next()`.
    pub queue_depth: AtomicUsize,
    skipped: [AtomicU64; 8],
    /// Counters of the remote shard sources (requests, retries, read-ahead); zero for local shards.
    pub remote: Arc<RemoteStats>,
}

impl LoaderStats {
    /// Skips (samples or shards) for one reason.
    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.skipped[reason.index()].load(Ordering::Relaxed)
    }
    /// Skips for all reasons.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
    pub(super) fn add_skip(&self, reason: SkipReason) {
        self.skipped[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
    /// One-line summary, e.g. `images=1000 batches=8 skipped=2 (corrupt_image=1 no_image=1) consumer_wait=0.12s queue_depth=3`
    /// (followed by ` remote(...)`, see [`RemoteStats::summary`], when shards were read remotely).
    pub fn summary(&self) -> String {
        let reasons: Vec<String> = SkipReason::ALL
            .iter()
            .filter(|r| self.skipped(**r) > 0)
            .map(|r| format!("{}={}", r.as_str(), self.skipped(*r)))
            .collect();
        format!(
            "images={} batches={} skipped={}{} consumer_wait={:.2}s queue_depth={}",
            self.images.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
            self.skipped_total(),
            if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(" ")) },
            self.consumer_wait_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            self.queue_depth.load(Ordering::Relaxed),
        ) + &if self.remote.requests.load(Ordering::Relaxed) > 0 {
            format!(" remote({})", self.remote.summary())
        } else {
            String::new()
        }
    }
}
