//! The loader's settings: the `[loader]` section, split into what fixes the stream of samples
//! ([`LoaderConfig`]: batching, shuffling, readers, seed) and what only sets its speed
//! ([`LoaderThreads`]: worker threads, prefetch depth), what it produces ([`LoaderMode`]), and
//! everything a [`crate::loader::Loader`] is built from ([`LoaderSettings`]).
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::source::remote::RemoteConfig;
use crate::{PipelineError, Result};

/// What fixes the loader's stream of samples and augmentations (the `[loader]` keys besides
/// [`LoaderThreads`]'): the same values give the same batches, whatever the thread counts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// Samples per batch (per rank).
    pub batch_size: usize,
    /// Shuffle-buffer size in samples (e.g. 2000); 0 = off. Ignored in Eval mode.
    pub shuffle_buffer: usize,
    /// Shuffle the shard order each epoch (seeded by (seed, epoch)). Ignored in Eval mode.
    pub shard_shuffle: bool,
    /// Concurrent shard streams per rank.
    pub readers: usize,
    /// Drop the last incomplete batch of an epoch.
    pub drop_last: bool,
    /// Seed of shard shuffle, shuffle buffer and augmentations.
    pub seed: u64,
    /// Turn the first bad sample/shard into an error instead of skipping it.
    pub strict_data: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 256,
            shuffle_buffer: 2000,
            shard_shuffle: true,
            readers: 2,
            drop_last: true,
            seed: 0,
            strict_data: false,
        }
    }
}

impl LoaderConfig {
    /// Errors: [`PipelineError::Config`] naming `loader.<field>` when a count is zero.
    pub fn validate(&self) -> Result<()> {
        for (v, name) in [(self.batch_size, "loader.batch_size"), (self.readers, "loader.readers")] {
            if v == 0 {
                return Err(PipelineError::config(name, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// How fast the loader works, not what it delivers (the `[loader]` keys `workers` and
/// `prefetch_batches`): any values give the same batches in the same order, so they may change
/// when a run is resumed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderThreads {
    /// Decode/augment worker threads.
    pub workers: usize,
    /// Batches prepared ahead of the consumer (bounded queue, >= 1).
    pub prefetch_batches: usize,
}

impl Default for LoaderThreads {
    fn default() -> Self {
        LoaderThreads { workers: 2, prefetch_batches: 4 }
    }
}

impl LoaderThreads {
    /// Errors: [`PipelineError::Config`] naming `loader.<field>` when a count is zero.
    pub fn validate(&self) -> Result<()> {
        for (v, name) in [(self.workers, "loader.workers"), (self.prefetch_batches, "loader.prefetch_batches")] {
            if v == 0 {
                return Err(PipelineError::config(name, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// What the loader produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderMode {
    /// Two augmented views per sample, shuffled; samples without label get -1.
    Train,
    /// One centre view + label per sample, no shuffling; samples without label are skipped.
    Eval,
}

/// The config sections a [`crate::loader::Loader`] reads: `[loader]` (batching, shuffling,
/// seed; threads), `[augment]` (the views) and `[remote]` (read-ahead and retries of remote
/// shards; unused for local shards).
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderSettings {
    /// Batching, shuffling, readers and seed.
    pub loader: LoaderConfig,
    /// Worker threads and prefetch depth.
    pub threads: LoaderThreads,
    /// Twin views (Train mode) and the evaluation transform (Eval mode).
    pub augment: AugmentConfig,
    /// Remote shards: read-ahead and retry budget.
    pub remote: RemoteConfig,
}

impl LoaderSettings {
    /// `loader` and `augment` with the default [`LoaderThreads`] and [`RemoteConfig`].
    pub fn new(loader: LoaderConfig, augment: AugmentConfig) -> Self {
        LoaderSettings { loader, threads: LoaderThreads::default(), augment, remote: RemoteConfig::default() }
    }

    /// The same settings with `threads` as the worker threads and prefetch depth.
    pub fn with_threads(self, threads: LoaderThreads) -> Self {
        LoaderSettings { threads, ..self }
    }

    /// The same settings with `remote` as the `[remote]` section.
    pub fn with_remote(self, remote: RemoteConfig) -> Self {
        LoaderSettings { remote, ..self }
    }
}
