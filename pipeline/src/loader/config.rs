//! The loader's settings: the `[loader]` section ([`LoaderConfig`]), what it produces
//! ([`LoaderMode`]) and the three config sections a [`crate::loader::Loader`] is built from
//! ([`LoaderSettings`]: `[loader]`, `[augment]`, `[remote]`).
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;
use crate::source::remote::RemoteConfig;
use crate::{PipelineError, Result};

/// Loader settings (TOML/JSON section `loader`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// Samples per batch (per rank).
    pub batch_size: usize,
    /// Shuffle-buffer size in samples (e.g. 2000); 0 = off. Ignored in Eval mode.
    pub shuffle_buffer: usize,
    /// Shuffle the shard order each epoch (seeded by (seed, epoch)). Ignored in Eval mode.
    pub shard_shuffle: bool,
    /// Decode/augment worker threads.
    pub workers: usize,
    /// Concurrent shard streams per rank.
    pub readers: usize,
    /// Batches prepared ahead of the consumer (bounded queue, >= 1).
    pub prefetch_batches: usize,
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
            workers: 2,
            readers: 2,
            prefetch_batches: 4,
            drop_last: true,
            seed: 0,
            strict_data: false,
        }
    }
}

impl LoaderConfig {
    /// Errors: [`PipelineError::Config`] naming `loader.<field>` when a count is zero.
    pub fn validate(&self) -> Result<()> {
        for (v, name) in [
            (self.batch_size, "loader.batch_size"),
            (self.workers, "loader.workers"),
            (self.readers, "loader.readers"),
            (self.prefetch_batches, "loader.prefetch_batches"),
        ] {
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
/// threads, seed), `[augment]` (the views) and `[remote]` (read-ahead and retries of remote
/// shards; unused for local shards).
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderSettings {
    /// Batching, shuffling, threads and seed.
    pub loader: LoaderConfig,
    /// Twin views (Train mode) and the evaluation transform (Eval mode).
    pub augment: AugmentConfig,
    /// Remote shards: read-ahead and retry budget.
    pub remote: RemoteConfig,
}

impl LoaderSettings {
    /// `loader` and `augment` with the default [`RemoteConfig`].
    pub fn new(loader: LoaderConfig, augment: AugmentConfig) -> Self {
        LoaderSettings { loader, augment, remote: RemoteConfig::default() }
    }

    /// The same settings with `remote` as the `[remote]` section.
    pub fn with_remote(self, remote: RemoteConfig) -> Self {
        LoaderSettings { remote, ..self }
    }
}
