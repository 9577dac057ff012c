//! The streaming loader: tokio shard streams → seeded shard shuffle, stream merge and shuffle
//! buffer → crossbeam pool of decode/augment workers → re-ordering by sequence number → batches
//! of `tch` tensors in a bounded prefetch queue.
//!
//! # Throughput
//! Each worker keeps one [`AugmentWorkspace`] and decodes only the window of a JPEG its two crops
//! read ([`TwinViewTransform::decode_apply_into`]); views are written into recycled buffers that
//! the batch thread copies once into the batch tensors (allocated per batch: the consumer owns
//! them; on the CPU with transparent-huge-page advice, for CUDA in pinned memory from PyTorch's
//! caching host allocator, which reuses pinned blocks only after their copies completed).
//! `dspnet-bench` measures it against the decode-only ceiling and the PyTorch DataLoader.
//!
//! # Determinism
//! Every random choice is seeded from [`LoaderConfig::seed`]:
//! * shard order of an epoch: `ChaCha8Rng(mix(seed, epoch))` — identical on every rank;
//! * the shuffle buffer of a rank: `ChaCha8Rng(mix(seed, epoch, rank, 1))`;
//! * the augmentation of the sample at position `p` of the rank's epoch stream:
//!   `ChaCha8Rng(mix(seed, epoch, rank, p))`.
//!
//! Streams are merged round-robin (stream 0, 1, …, skipping finished ones) and workers' results
//! are re-ordered by position, so the same seed gives the same batches whatever the thread timing.
//!
//! # Splitting across ranks and readers
//! There are `n = world_size * readers` streams; stream `g = rank * readers + r`.
//! * `#shards >= n`: after the epoch's shard shuffle, shard `i` goes to stream `i % n`.
//! * `#shards < n`: every stream reads all shards (in the epoch order) and keeps sample `j`
//!   (counting every sample of the concatenated shards) when `j % n == g`; shard-level problems
//!   (truncated/empty/unreadable shard) are reported only by stream `i % n` for shard `i`.
//!
//! Either way each sample is seen exactly once per epoch across all ranks. Ranks can receive
//! slightly different sample counts (shards differ in size); a trainer that needs equal batch
//! counts per rank caps the steps per epoch at [`steps_per_epoch`], which every rank derives
//! identically from the manifest's per-shard counts and this split (no communication).
//!
//! # Positions and resuming
//! Every item of a rank's epoch stream (a sample, or a skipped bad sample/shard) takes one
//! position `p = 0, 1, …` in merge order, after the shuffle buffer. [`Batch::end_position`] is
//! the position after the batch's last sample. [`Loader::epoch_from`]`(epoch, p)` re-creates the
//! epoch's stream (same shard order, the shuffle buffer sees the same sequence) but neither
//! decodes nor augments positions `< p`, so a resumed run gets exactly the batches that followed.
//!
//! # Bad data
//! Corrupt / zero-byte images, samples without an image member, samples without a label (Eval
//! mode; Train mode uses label -1), unparsable labels, truncated, empty or unreadable shards are
//! skipped, counted in [`LoaderStats`] and logged with `tracing::warn!` naming shard and key. With
//! `strict_data` the first such problem ends the epoch with an `Err` naming shard and key.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::augment::{AugmentConfig, AugmentWorkspace, EvalTransform, TwinViewTransform};
use crate::remote::{FatalTap, RemoteOptions, RemoteStats};
use crate::shard::{open_shard_reader, RawSample};
use crate::source::{sources_for, ShardSource};
use crate::{mix_seed, PipelineError, Result};

const TICK: Duration = Duration::from_millis(50);
const STREAM_QUEUE: usize = 64;

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
    /// Remote shards (s3://, gs://, az://, http(s)://): shards opened and buffered ahead of the
    /// one being parsed, per reader stream (0 = none). Default 2.
    #[serde(default = "default_remote_read_ahead")]
    pub remote_read_ahead: usize,
    /// Remote shards: byte cap of the buffers of one reader stream, shared evenly by the shard
    /// being parsed and the read-ahead shards (bytes, >= 65536). Default 64 MiB.
    #[serde(default = "default_remote_read_ahead_bytes")]
    pub remote_read_ahead_bytes: u64,
    /// Remote shards: retries of one outage (failed request or connection dropped mid-shard,
    /// resumed with a range request) before the epoch ends with an error. Default 8.
    #[serde(default = "default_remote_max_retries")]
    pub remote_max_retries: u32,
    /// Remote shards: longest outage in seconds, from its first failure, before the epoch ends
    /// with an error. Default 60.
    #[serde(default = "default_remote_max_retry_secs")]
    pub remote_max_retry_secs: f64,
}

fn default_remote_read_ahead() -> usize {
    RemoteOptions::default().read_ahead
}
fn default_remote_read_ahead_bytes() -> u64 {
    RemoteOptions::default().read_ahead_bytes
}
fn default_remote_max_retries() -> u32 {
    RemoteOptions::default().max_retries
}
fn default_remote_max_retry_secs() -> f64 {
    RemoteOptions::default().max_retry_time.as_secs_f64()
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
            remote_read_ahead: default_remote_read_ahead(),
            remote_read_ahead_bytes: default_remote_read_ahead_bytes(),
            remote_max_retries: default_remote_max_retries(),
            remote_max_retry_secs: default_remote_max_retry_secs(),
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
        if self.remote_read_ahead_bytes < 1 << 16 {
            return Err(PipelineError::config("loader.remote_read_ahead_bytes", "must be at least 65536 (bytes)"));
        }
        if !(self.remote_max_retry_secs >= 0.0 && self.remote_max_retry_secs.is_finite()) {
            return Err(PipelineError::config(
                "loader.remote_max_retry_secs",
                "must be a finite number of seconds >= 0",
            ));
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

/// One batch. Tensors are on the CPU (pinned memory when the loader's device is CUDA, so the
/// trainer can `to_device_(.., non_blocking = true)`).
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, H, W]` f32, normalised (view A in Train mode, the centre view in Eval mode).
    pub view_a: Tensor,
    /// `[B, C, H, W]` f32 view B in Train mode; `None` in Eval mode.
    pub view_b: Option<Tensor>,
    /// `[B]` i64 class indices (-1 for unlabelled samples in Train mode).
    pub labels: Tensor,
    /// Sample keys, in batch order.
    pub keys: Vec<String>,
    /// Position in the rank's epoch stream after this batch's last sample (see the module docs,
    /// "Positions and resuming"): pass it to [`Loader::epoch_from`] to continue after this batch.
    pub end_position: u64,
}

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
    fn is_shard_level(self) -> bool {
        matches!(self, SkipReason::TruncatedShard | SkipReason::EmptyShard | SkipReason::UnreadableShard)
    }
}

/// Loader counters, cumulative over all epochs of a [`Loader`]. Updated by the loader's threads.
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
    fn add_skip(&self, reason: SkipReason) {
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

/// Runtime holder that shuts the runtime down without blocking when the last owner goes.
struct Rt(Option<tokio::runtime::Runtime>);
impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
impl Rt {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("runtime present until drop").handle().clone()
    }
}

/// Streaming loader over WebDataset shards for one rank. See the module docs.
pub struct Loader {
    shards: Vec<String>,
    sources: Vec<Arc<dyn ShardSource>>,
    cfg: LoaderConfig,
    mode: LoaderMode,
    rank: usize,
    world_size: usize,
    device: Device,
    twin: Arc<TwinViewTransform>,
    eval: Arc<EvalTransform>,
    stats: Arc<LoaderStats>,
    rt: Arc<Rt>,
}

impl Loader {
    /// Create a loader for `rank` of `world_size` over `shards` (URLs/paths, e.g. from
    /// [`crate::source::expand_pattern`]).
    ///
    /// Errors: [`PipelineError::Config`] for an empty shard list, `rank >= world_size`, zero
    /// counts or an invalid augmentation; [`PipelineError::UnsupportedScheme`] for a shard URL
    /// with no source; [`PipelineError::RemoteConfig`] when a remote store cannot be configured;
    /// [`PipelineError::Internal`] when the tokio runtime cannot start.
    pub fn new(
        shards: Vec<String>,
        loader: LoaderConfig,
        augment: AugmentConfig,
        mode: LoaderMode,
        rank: usize,
        world_size: usize,
        device: Device,
    ) -> Result<Self> {
        loader.validate()?;
        if shards.is_empty() {
            return Err(PipelineError::config(
                "shards",
                "no shard given; pass a pattern like data/train-{000000..000009}.tar",
            ));
        }
        if world_size == 0 || rank >= world_size {
            return Err(PipelineError::config(
                "rank",
                format!("rank {rank} must be < world_size {world_size} (world_size >= 1)"),
            ));
        }
        let stats = Arc::new(LoaderStats::default());
        let sources = sources_for(&shards, &RemoteOptions::from_loader(&loader), &stats.remote)?;
        let twin = Arc::new(TwinViewTransform::new(augment.clone())?);
        let eval = Arc::new(EvalTransform::new(augment)?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(loader.readers.clamp(1, 4))
            .thread_name("dspnet-shard-io")
            .enable_all()
            .build()
            .map_err(|e| PipelineError::Internal(format!("cannot start tokio runtime: {e}")))?;
        Ok(Loader {
            shards,
            sources,
            cfg: loader,
            mode,
            rank,
            world_size,
            device,
            twin,
            eval,
            stats,
            rt: Arc::new(Rt(Some(rt))),
        })
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<LoaderStats> {
        self.stats.clone()
    }

    /// Shard indices in the order of `epoch` (seeded by (seed, epoch) only: same on every rank).
    pub fn shard_order(&self, epoch: u64) -> Vec<usize> {
        epoch_shard_order(self.shards.len(), &self.cfg, self.mode, epoch)
    }

    /// Optimiser steps (batches) every rank can take in `epoch`: see [`steps_per_epoch`].
    /// `shard_samples[i]` is the sample count of shard `i` of this loader's shard list.
    pub fn steps_per_epoch(&self, epoch: u64, shard_samples: &[u64]) -> u64 {
        steps_per_epoch(shard_samples, &self.cfg, self.mode, self.world_size, epoch)
    }

    /// Start streaming `epoch`. The returned iterator yields batches until the rank's share of
    /// the shards is exhausted; dropping it early stops all threads (no hang, no panic).
    pub fn epoch(&self, epoch: u64) -> Result<EpochIter> {
        self.epoch_from(epoch, 0)
    }

    /// Like [`Loader::epoch`], but the first batch starts at stream position `start` (a
    /// [`Batch::end_position`] of the same epoch, seed, shards and world size): positions before
    /// it are read and pass through the shuffle buffer as usual but are not decoded, augmented or
    /// counted, so the batches are exactly those that followed position `start` in a full epoch.
    pub fn epoch_from(&self, epoch: u64, start: u64) -> Result<EpochIter> {
        let order = self.shard_order(epoch);
        let n_streams = self.world_size * self.cfg.readers;
        let split_by_shard = self.shards.len() >= n_streams;
        let cancel = Arc::new(AtomicBool::new(false));
        let handle = self.rt.handle();

        // Reader streams of this rank.
        let mut stream_rxs = Vec::with_capacity(self.cfg.readers);
        for r in 0..self.cfg.readers {
            let g = self.rank * self.cfg.readers + r;
            let plan: Vec<(usize, String, Arc<dyn ShardSource>)> = order
                .iter()
                .enumerate()
                .filter(|(i, _)| !split_by_shard || i % n_streams == g)
                .map(|(i, &s)| (i, self.shards[s].clone(), self.sources[s].clone()))
                .collect();
            let (tx, rx) = tokio::sync::mpsc::channel::<StreamMsg>(STREAM_QUEUE);
            let filter = if split_by_shard { None } else { Some((n_streams, g)) };
            handle.spawn(read_stream(plan, filter, tx));
            stream_rxs.push(rx);
        }

        let workers = self.cfg.workers;
        let (work_tx, work_rx) = bounded::<WorkItem>(workers * 4);
        let (res_tx, res_rx) = bounded::<(u64, Outcome)>(workers * 4);
        let (batch_tx, batch_rx) = bounded::<Result<Batch>>(self.cfg.prefetch_batches);
        let mut threads = Vec::new();

        // Merger: round-robin over streams, shuffle buffer, sequence numbers.
        {
            let cancel = cancel.clone();
            let shuffle = if self.mode == LoaderMode::Train { self.cfg.shuffle_buffer } else { 0 };
            let rng = ChaCha8Rng::seed_from_u64(mix_seed(&[self.cfg.seed, epoch, self.rank as u64, 1]));
            let handle = handle.clone();
            threads.push(spawn_named("dspnet-merge", move || {
                merge(stream_rxs, handle, shuffle, rng, start, work_tx, cancel)
            })?);
        }
        // Workers: decode + augment into recycled view buffers.
        let pool = BufferPool::new(workers * 8 + 8, self.twin.view_len());
        for w in 0..workers {
            let ctx = WorkerCtx {
                mode: self.mode,
                seed: self.cfg.seed,
                epoch,
                rank: self.rank as u64,
                twin: self.twin.clone(),
                eval: self.eval.clone(),
                pool: pool.clone(),
            };
            let (rx, tx, cancel) = (work_rx.clone(), res_tx.clone(), cancel.clone());
            threads.push(spawn_named(&format!("dspnet-decode-{w}"), move || worker(ctx, rx, tx, cancel))?);
        }
        drop(work_rx);
        drop(res_tx);
        // Assembler: re-order, batch, tensors.
        {
            let asm = Assembler {
                mode: self.mode,
                pool,
                batch_size: self.cfg.batch_size,
                drop_last: self.cfg.drop_last,
                strict: self.cfg.strict_data,
                channels: self.twin.config().channels as i64,
                size: self.twin.config().image_size as i64,
                device: self.device,
                stats: self.stats.clone(),
                epoch,
                rank: self.rank,
                start,
            };
            let cancel = cancel.clone();
            threads.push(spawn_named("dspnet-batch", move || asm.run(res_rx, batch_tx, cancel))?);
        }
        Ok(EpochIter {
            rx: Some(batch_rx),
            threads,
            cancel,
            stats: self.stats.clone(),
            done: false,
            _rt: self.rt.clone(),
            epoch,
        })
    }
}

/// Shard indices in the order of `epoch` for `n_shards` shards: shuffled with
/// `ChaCha8Rng(mix(seed, epoch))` in Train mode when `shard_shuffle`, else `0..n_shards`.
/// The same on every rank.
pub fn epoch_shard_order(n_shards: usize, cfg: &LoaderConfig, mode: LoaderMode, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n_shards).collect();
    if cfg.shard_shuffle && mode == LoaderMode::Train {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(&[cfg.seed, epoch])));
    }
    order
}

/// Samples (manifest counts, bad samples included) that `rank` of `world_size` receives in
/// `epoch`, following the split in the module docs: `shard_samples[i]` is the count of shard `i`
/// of the loader's shard list.
pub fn rank_samples_in_epoch(
    shard_samples: &[u64],
    cfg: &LoaderConfig,
    mode: LoaderMode,
    world_size: usize,
    rank: usize,
    epoch: u64,
) -> u64 {
    let n = (world_size * cfg.readers.max(1)) as u64;
    let streams = (rank * cfg.readers.max(1)) as u64..((rank + 1) * cfg.readers.max(1)) as u64;
    if shard_samples.len() as u64 >= n {
        let order = epoch_shard_order(shard_samples.len(), cfg, mode, epoch);
        order
            .iter()
            .enumerate()
            .filter(|(i, _)| streams.contains(&(*i as u64 % n)))
            .map(|(_, &s)| shard_samples[s])
            .sum()
    } else {
        // every stream reads all shards and keeps sample j when j % n == g
        let total: u64 = shard_samples.iter().sum();
        streams.map(|g| total / n + u64::from(g < total % n)).sum()
    }
}

/// Batches (optimiser steps) per epoch that EVERY rank can deliver: the minimum over ranks of
/// `samples / batch_size` (rounded up when `drop_last` is false), from the manifest counts and the
/// shard split of `epoch`. Identical on every rank without communication, so a data-parallel
/// trainer that stops each epoch after this many batches keeps all ranks in step. Samples the
/// loader skips as bad make a rank deliver fewer batches than its manifest count promises.
pub fn steps_per_epoch(
    shard_samples: &[u64],
    cfg: &LoaderConfig,
    mode: LoaderMode,
    world_size: usize,
    epoch: u64,
) -> u64 {
    let b = cfg.batch_size.max(1) as u64;
    (0..world_size.max(1))
        .map(|r| {
            let n = rank_samples_in_epoch(shard_samples, cfg, mode, world_size.max(1), r, epoch);
            if cfg.drop_last {
                n / b
            } else {
                n.div_ceil(b)
            }
        })
        .min()
        .unwrap_or(0)
}

fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| PipelineError::Internal(format!("cannot spawn thread {name}: {e}")))
}

/// Iterator over one epoch's batches. Dropping it mid-epoch stops and joins the loader threads.
pub struct EpochIter {
    rx: Option<Receiver<Result<Batch>>>,
    threads: Vec<JoinHandle<()>>,
    cancel: Arc<AtomicBool>,
    stats: Arc<LoaderStats>,
    done: bool,
    _rt: Arc<Rt>,
    epoch: u64,
}

impl EpochIter {
    fn shutdown(&mut self) -> bool {
        self.cancel.store(true, Ordering::SeqCst);
        self.rx = None;
        let mut panicked = false;
        for t in self.threads.drain(..) {
            panicked |= t.join().is_err();
        }
        panicked
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rx = self.rx.as_ref()?;
        let start = Instant::now();
        let got = rx.recv();
        let waited = start.elapsed();
        self.stats.consumer_wait_ns.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        self.stats.queue_depth.store(rx.len(), Ordering::Relaxed);
        match got {
            Ok(Ok(batch)) => {
                tracing::debug!(
                    epoch = self.epoch,
                    wait_ms = waited.as_secs_f64() * 1e3,
                    queue_depth = rx.len(),
                    "batch"
                );
                Some(Ok(batch))
            }
            Ok(Err(e)) => {
                self.done = true;
                self.shutdown();
                Some(Err(e))
            }
            Err(_) => {
                self.done = true;
                if self.shutdown() {
                    return Some(Err(PipelineError::Internal("a loader thread panicked".into())));
                }
                None
            }
        }
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------

enum StreamMsg {
    Sample {
        shard: Arc<str>,
        sample: RawSample,
    },
    Problem {
        shard: Arc<str>,
        key: String,
        reason: SkipReason,
        detail: String,
    },
    /// A remote shard failed for good: the epoch ends with this error after the samples before it.
    Fatal {
        shard: Arc<str>,
        error: PipelineError,
    },
}

/// A shard being opened ahead of use; aborted when dropped (epoch stopped).
struct Opening(tokio::task::JoinHandle<Result<crate::source::ShardStream>>);
impl Drop for Opening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One reader stream: open each planned shard through its source (the next
/// [`ShardSource::read_ahead`] shards are opened while the current one is parsed), parse it on a
/// blocking thread, send samples (filtered by `j % n == g` when every stream reads all shards).
async fn read_stream(
    plan: Vec<(usize, String, Arc<dyn ShardSource>)>,
    filter: Option<(usize, usize)>,
    tx: tokio::sync::mpsc::Sender<StreamMsg>,
) {
    let mut j: u64 = 0;
    let mut plan = plan.into_iter().peekable();
    let mut opening: std::collections::VecDeque<(usize, String, Opening)> = std::collections::VecDeque::new();
    loop {
        while let Some((_, _, source)) = plan.peek() {
            if opening.len() > source.read_ahead() {
                break;
            }
            let Some((i, url, source)) = plan.next() else { break };
            let u = url.clone();
            opening.push_back((i, url, Opening(tokio::spawn(async move { source.open(&u).await }))));
        }
        let Some((i, url, mut task)) = opening.pop_front() else { return };
        let opened = match (&mut task.0).await {
            Ok(r) => r,
            Err(e) => Err(PipelineError::Internal(format!("shard open task failed: {e}"))),
        };
        let report = filter.is_none_or(|(n, g)| i % n == g);
        let shard: Arc<str> = Arc::from(url.as_str());
        let stream = match opened {
            Ok(s) => s,
            Err(
                error
                @ (PipelineError::Remote { .. } | PipelineError::RemoteConfig { .. } | PipelineError::Internal(_)),
            ) => {
                let _ = tx.send(StreamMsg::Fatal { shard, error }).await;
                return;
            }
            Err(e) => {
                if report {
                    let msg = StreamMsg::Problem {
                        shard,
                        key: "<none>".into(),
                        reason: SkipReason::UnreadableShard,
                        detail: e.to_string(),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let tx2 = tx.clone();
        let start = j;
        let res = tokio::task::spawn_blocking(move || parse_shard(stream, shard, start, filter, report, tx2)).await;
        match res {
            Ok(Some(next_j)) => j = next_j,
            _ => return, // consumer gone (or parse thread failed)
        }
    }
}

/// Parse one shard; returns the next global sample counter, `None` when the consumer is gone.
fn parse_shard(
    stream: crate::source::ShardStream,
    shard: Arc<str>,
    mut j: u64,
    filter: Option<(usize, usize)>,
    report: bool,
    tx: tokio::sync::mpsc::Sender<StreamMsg>,
) -> Option<u64> {
    let (stream, fatal) = FatalTap::wrap(stream);
    let fatal_error = || fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
    let bridge = tokio_util::io::SyncIoBridge::new(stream);
    let reader = match open_shard_reader(Box::new(bridge), &shard) {
        Ok(r) => r,
        Err(e) => {
            if let Some(error) = fatal_error() {
                let _ = tx.blocking_send(StreamMsg::Fatal { shard, error });
                return None;
            }
            if report {
                let msg = StreamMsg::Problem {
                    shard,
                    key: "<none>".into(),
                    reason: SkipReason::UnreadableShard,
                    detail: e.to_string(),
                };
                tx.blocking_send(msg).ok()?;
            }
            return Some(j);
        }
    };
    let mut count = 0u64;
    for item in reader {
        match item {
            Ok(sample) => {
                count += 1;
                let keep = filter.is_none_or(|(n, g)| j % n as u64 == g as u64);
                j += 1;
                if keep {
                    tx.blocking_send(StreamMsg::Sample { shard: shard.clone(), sample }).ok()?;
                }
            }
            Err(e) => {
                if let Some(error) = fatal_error() {
                    let _ = tx.blocking_send(StreamMsg::Fatal { shard, error });
                    return None;
                }
                if report {
                    let (key, detail) = match &e {
                        PipelineError::BadShard { key, reason, .. } => (key.clone(), reason.clone()),
                        other => ("<none>".to_string(), other.to_string()),
                    };
                    let msg =
                        StreamMsg::Problem { shard: shard.clone(), key, reason: SkipReason::TruncatedShard, detail };
                    tx.blocking_send(msg).ok()?;
                }
                return Some(j);
            }
        }
    }
    if count == 0 && report {
        let msg = StreamMsg::Problem {
            shard,
            key: "<none>".into(),
            reason: SkipReason::EmptyShard,
            detail: "shard holds no sample".into(),
        };
        tx.blocking_send(msg).ok()?;
    }
    Some(j)
}

enum WorkBody {
    Sample(RawSample),
    Problem { key: String, reason: SkipReason, detail: String },
    Fatal(PipelineError),
}

struct WorkItem {
    seq: u64,
    shard: Arc<str>,
    body: WorkBody,
}

/// Send with a timeout loop that gives up when `cancel` is set or the receiver is gone.
fn send_or_cancel<T>(tx: &Sender<T>, mut item: T, cancel: &AtomicBool) -> bool {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        match tx.send_timeout(item, TICK) {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(back)) => item = back,
            Err(SendTimeoutError::Disconnected(_)) => return false,
        }
    }
}

fn merge(
    mut rxs: Vec<tokio::sync::mpsc::Receiver<StreamMsg>>,
    handle: tokio::runtime::Handle,
    shuffle: usize,
    mut rng: ChaCha8Rng,
    start: u64,
    tx: Sender<WorkItem>,
    cancel: Arc<AtomicBool>,
) {
    let mut live: Vec<bool> = vec![true; rxs.len()];
    let mut buffer: Vec<(Arc<str>, RawSample)> = Vec::with_capacity(shuffle);
    let mut seq = 0u64;
    let emit = |shard: Arc<str>, body: WorkBody, seq: &mut u64| -> bool {
        if *seq < start {
            // before the resume position: consumed (so the positions and the shuffle buffer's
            // draws stay those of the full epoch) but neither decoded nor augmented
            *seq += 1;
            return true;
        }
        let ok = send_or_cancel(&tx, WorkItem { seq: *seq, shard, body }, &cancel);
        *seq += 1;
        ok
    };
    while live.iter().any(|l| *l) {
        for s in 0..rxs.len() {
            if !live[s] {
                continue;
            }
            // Wait for stream s (deterministic round-robin), checking for cancellation.
            let msg = loop {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let rx = &mut rxs[s];
                match handle.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
                    Ok(m) => break m,
                    Err(_) => continue,
                }
            };
            match msg {
                None => live[s] = false,
                Some(StreamMsg::Problem { shard, key, reason, detail }) => {
                    if !emit(shard, WorkBody::Problem { key, reason, detail }, &mut seq) {
                        return;
                    }
                }
                Some(StreamMsg::Fatal { shard, error }) => {
                    live[s] = false;
                    if !emit(shard, WorkBody::Fatal(error), &mut seq) {
                        return;
                    }
                }
                Some(StreamMsg::Sample { shard, sample }) => {
                    if shuffle == 0 {
                        if !emit(shard, WorkBody::Sample(sample), &mut seq) {
                            return;
                        }
                    } else if buffer.len() < shuffle {
                        buffer.push((shard, sample));
                    } else {
                        let i = rng.gen_range(0..buffer.len());
                        let (sh, sa) = std::mem::replace(&mut buffer[i], (shard, sample));
                        if !emit(sh, WorkBody::Sample(sa), &mut seq) {
                            return;
                        }
                    }
                }
            }
        }
    }
    while !buffer.is_empty() {
        let i = rng.gen_range(0..buffer.len());
        let (sh, sa) = buffer.swap_remove(i);
        if !emit(sh, WorkBody::Sample(sa), &mut seq) {
            return;
        }
    }
}

struct WorkerCtx {
    mode: LoaderMode,
    seed: u64,
    epoch: u64,
    rank: u64,
    twin: Arc<TwinViewTransform>,
    eval: Arc<EvalTransform>,
    pool: BufferPool,
}

/// View buffers (`view_len` f32 each) recycled from the assembler back to the workers, so a
/// warm loader allocates no per-sample output buffer.
#[derive(Clone)]
struct BufferPool {
    tx: Sender<Vec<f32>>,
    rx: Receiver<Vec<f32>>,
    len: usize,
}

impl BufferPool {
    fn new(capacity: usize, len: usize) -> Self {
        let (tx, rx) = bounded(capacity);
        BufferPool { tx, rx, len }
    }
    fn get(&self) -> Vec<f32> {
        match self.rx.try_recv() {
            Ok(v) => v,
            Err(_) => vec![0f32; self.len],
        }
    }
    fn put(&self, v: Vec<f32>) {
        if v.len() == self.len {
            let _ = self.tx.try_send(v);
        }
    }
}

enum Outcome {
    Ok { key: String, a: Vec<f32>, b: Option<Vec<f32>>, label: i64 },
    Bad { shard: Arc<str>, key: String, reason: SkipReason, detail: String },
    Fatal(PipelineError),
}

const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

fn process(ctx: &WorkerCtx, ws: &mut AugmentWorkspace, seq: u64, shard: Arc<str>, sample: RawSample) -> Outcome {
    let bad = |reason: SkipReason, detail: String| Outcome::Bad {
        shard: shard.clone(),
        key: sample.key.clone(),
        reason,
        detail,
    };
    let Some(bytes) = IMAGE_EXTS.iter().find_map(|e| sample.files.get(*e)) else {
        let have: Vec<&str> = sample.files.keys().map(|s| s.as_str()).collect();
        return bad(SkipReason::NoImage, format!("no jpg/jpeg/png/webp member (members: {})", have.join(", ")));
    };
    let label = match sample.files.get("cls") {
        Some(b) => match std::str::from_utf8(b).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(l) => l,
            None => return bad(SkipReason::BadLabel, format!(".cls is not an ASCII integer ({} bytes)", b.len())),
        },
        None if ctx.mode == LoaderMode::Train => -1,
        None => return bad(SkipReason::MissingLabel, "no .cls member (labels are required in eval mode)".into()),
    };
    if bytes.is_empty() {
        return bad(SkipReason::EmptyImage, "zero-byte image".into());
    }
    let msg = |e: PipelineError| match e {
        PipelineError::ImageData(m) => m,
        other => other.to_string(),
    };
    match ctx.mode {
        LoaderMode::Train => {
            let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[ctx.seed, ctx.epoch, ctx.rank, seq]));
            let (mut a, mut b) = (ctx.pool.get(), ctx.pool.get());
            match ctx.twin.decode_apply_into(bytes, &mut rng, ws, &mut a, &mut b) {
                Ok(()) => Outcome::Ok { key: sample.key.clone(), a, b: Some(b), label },
                Err(e) => {
                    ctx.pool.put(a);
                    ctx.pool.put(b);
                    bad(SkipReason::CorruptImage, msg(e))
                }
            }
        }
        LoaderMode::Eval => {
            let mut a = ctx.pool.get();
            match ctx.eval.decode_apply_into(bytes, ws, &mut a) {
                Ok(()) => Outcome::Ok { key: sample.key.clone(), a, b: None, label },
                Err(e) => {
                    ctx.pool.put(a);
                    bad(SkipReason::CorruptImage, msg(e))
                }
            }
        }
    }
}

fn worker(ctx: WorkerCtx, rx: Receiver<WorkItem>, tx: Sender<(u64, Outcome)>, cancel: Arc<AtomicBool>) {
    let mut ws = AugmentWorkspace::new();
    loop {
        let item = match rx.recv_timeout(TICK) {
            Ok(i) => i,
            Err(RecvTimeoutError::Timeout) => {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let out = match item.body {
            WorkBody::Problem { key, reason, detail } => Outcome::Bad { shard: item.shard, key, reason, detail },
            WorkBody::Fatal(e) => Outcome::Fatal(e),
            WorkBody::Sample(s) => process(&ctx, &mut ws, item.seq, item.shard, s),
        };
        if !send_or_cancel(&tx, (item.seq, out), &cancel) {
            return;
        }
    }
}

struct Assembler {
    mode: LoaderMode,
    pool: BufferPool,
    batch_size: usize,
    drop_last: bool,
    strict: bool,
    channels: i64,
    size: i64,
    device: Device,
    stats: Arc<LoaderStats>,
    epoch: u64,
    rank: usize,
    /// First stream position to assemble (see [`Loader::epoch_from`]).
    start: u64,
}

/// The batch being filled: samples are copied straight into the batch tensors (pinned when the
/// device is CUDA), one copy per view.
#[derive(Default)]
struct Pending {
    a: Option<Tensor>,
    b: Option<Tensor>,
    labels: Vec<i64>,
    keys: Vec<String>,
}

/// Ask Linux for transparent huge pages on the 2 MiB-aligned interior of a fresh buffer at
/// `addr` of `len` bytes, before it is first written: a large batch tensor is a fresh mapping
/// each time, and faulting it in 4 KiB pages costs ~0.4 ms per 224-px sample; 2 MiB pages cut
/// the faults 512-fold. Advice only: a refusal (THP off, other OS) changes nothing.
fn advise_huge_pages(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (addr + HUGE - 1) & !(HUGE - 1);
        let end = (addr + len) & !(HUGE - 1);
        if end > start {
            // SAFETY: madvise only attaches advice to pages of [start, end), a sub-range of the
            // buffer's own allocation; it does not touch or change their contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

/// Copy `src` into sample `slot` of the contiguous f32 CPU tensor `t` (`[B, C, S, S]`).
fn write_slot(t: &Tensor, slot: usize, src: &[f32]) -> Result<()> {
    let numel = t.numel();
    if t.kind() != tch::Kind::Float || t.device() != Device::Cpu || !t.is_contiguous() || (slot + 1) * src.len() > numel
    {
        return Err(PipelineError::Internal(format!("batch tensor cannot hold sample {slot} ({} values)", src.len())));
    }
    // SAFETY: `t` is a contiguous CPU f32 tensor of `numel` elements that this thread allocated
    // and alone references until the batch is sent; the destination range
    // [slot * len, (slot + 1) * len) lies inside it (checked above) and cannot overlap `src`.
    unsafe {
        let dst = (t.data_ptr() as *mut f32).add(slot * src.len());
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
    }
    Ok(())
}

impl Assembler {
    /// A new uninitialised `[batch_size, C, S, S]` f32 batch tensor (pinned for CUDA).
    fn new_tensor(&self) -> Result<Tensor> {
        let t = Tensor::f_empty(
            [self.batch_size as i64, self.channels, self.size, self.size],
            (tch::Kind::Float, Device::Cpu),
        )
        .map_err(|e| PipelineError::Tensor(e.to_string()))?;
        if self.device.is_cuda() {
            return self.pin(t);
        }
        advise_huge_pages(t.data_ptr() as usize, t.numel() * 4);
        Ok(t)
    }
    fn pin(&self, t: Tensor) -> Result<Tensor> {
        if self.device.is_cuda() {
            t.f_pin_memory(self.device).map_err(|e| PipelineError::Tensor(format!("pin_memory: {e}")))
        } else {
            Ok(t)
        }
    }
    /// Copy one sample into the pending batch and recycle its buffers.
    fn push(&self, cur: &mut Pending, a: Vec<f32>, b: Option<Vec<f32>>) -> Result<()> {
        let slot = cur.keys.len();
        if cur.a.is_none() {
            cur.a = Some(self.new_tensor()?);
            if self.mode == LoaderMode::Train {
                cur.b = Some(self.new_tensor()?);
            }
        }
        if let Some(t) = &cur.a {
            write_slot(t, slot, &a)?;
        }
        self.pool.put(a);
        if let Some(b) = b {
            if let Some(t) = &cur.b {
                write_slot(t, slot, &b)?;
            }
            self.pool.put(b);
        }
        Ok(())
    }
    fn build(&self, p: Pending) -> Result<Batch> {
        let n = p.keys.len() as i64;
        let cut = |t: Option<Tensor>| -> Result<Option<Tensor>> {
            match t {
                Some(t) if n < self.batch_size as i64 => {
                    t.f_narrow(0, 0, n).map(Some).map_err(|e| PipelineError::Tensor(e.to_string()))
                }
                other => Ok(other),
            }
        };
        let view_a = cut(p.a)?.ok_or_else(|| PipelineError::Internal("empty batch".into()))?;
        let view_b = cut(p.b)?;
        let labels = self.pin(Tensor::f_from_slice(&p.labels).map_err(|e| PipelineError::Tensor(e.to_string()))?)?;
        Ok(Batch { view_a, view_b, labels, keys: p.keys, end_position: 0 })
    }

    fn run(self, rx: Receiver<(u64, Outcome)>, tx: Sender<Result<Batch>>, cancel: Arc<AtomicBool>) {
        let start = Instant::now();
        let (mut images, mut batches, mut skipped) = (0u64, 0u64, 0u64);
        let mut next = self.start;
        let mut reorder: BTreeMap<u64, Outcome> = BTreeMap::new();
        let mut cur = Pending::default();
        'outer: loop {
            match rx.recv_timeout(TICK) {
                Ok((seq, out)) => {
                    reorder.insert(seq, out);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Some(out) = reorder.remove(&next) {
                next += 1;
                match out {
                    Outcome::Ok { key, a, b, label } => {
                        if let Err(e) = self.push(&mut cur, a, b) {
                            cancel.store(true, Ordering::SeqCst);
                            let _ = tx.send_timeout(Err(e), Duration::from_secs(3600));
                            return;
                        }
                        cur.labels.push(label);
                        cur.keys.push(key);
                        if cur.keys.len() == self.batch_size {
                            let n = cur.keys.len() as u64;
                            let batch = self.build(std::mem::take(&mut cur)).map(|b| Batch { end_position: next, ..b });
                            let ok = batch.is_ok();
                            if !send_or_cancel(&tx, batch, &cancel) || !ok {
                                return;
                            }
                            images += n;
                            batches += 1;
                            self.stats.images.fetch_add(n, Ordering::Relaxed);
                            self.stats.batches.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Outcome::Fatal(err) => {
                        cancel.store(true, Ordering::SeqCst);
                        let _ = tx.send_timeout(Err(err), Duration::from_secs(3600));
                        break 'outer;
                    }
                    Outcome::Bad { shard, key, reason, detail } => {
                        self.stats.add_skip(reason);
                        skipped += 1;
                        tracing::warn!(shard = %shard, key = %key, reason = reason.as_str(), "skipping bad data: {detail}");
                        if self.strict {
                            let err = if reason.is_shard_level() {
                                PipelineError::BadShard { shard: shard.to_string(), key, reason: detail }
                            } else {
                                PipelineError::BadSample { shard: shard.to_string(), key, reason: detail }
                            };
                            cancel.store(true, Ordering::SeqCst);
                            let _ = tx.send_timeout(Err(err), Duration::from_secs(3600));
                            break 'outer;
                        }
                    }
                }
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        if !reorder.is_empty() {
            let _ = tx.send(Err(PipelineError::Internal(format!(
                "{} results missing before sequence {next}",
                reorder.len()
            ))));
            return;
        }
        if !cur.keys.is_empty() && !self.drop_last {
            let n = cur.keys.len() as u64;
            let batch = self.build(cur).map(|b| Batch { end_position: next, ..b });
            if !send_or_cancel(&tx, batch, &cancel) {
                return;
            }
            images += n;
            batches += 1;
            self.stats.images.fetch_add(n, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        let secs = start.elapsed().as_secs_f64();
        tracing::info!(
            epoch = self.epoch,
            rank = self.rank,
            images,
            batches,
            skipped,
            images_per_s = images as f64 / secs.max(1e-9),
            "loader epoch done: {}",
            self.stats.summary()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{RawSample, ShardWriter};
    use crate::testutil::{image_shards, png, writer_cfg};
    use std::collections::BTreeSet;
    use std::path::Path;

    fn lcfg(readers: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size: 4,
            shuffle_buffer: 5,
            shard_shuffle: true,
            workers: 2,
            readers,
            prefetch_batches: 2,
            drop_last: false,
            seed,
            strict_data: false,
            ..LoaderConfig::default()
        }
    }

    fn aug() -> AugmentConfig {
        AugmentConfig::byol_small(8, 3)
    }

    fn keys_of(loader: &Loader, epoch: u64) -> Vec<String> {
        loader.epoch(epoch).unwrap().flat_map(|b| b.unwrap().keys).collect()
    }

    #[test]
    fn exactly_once_across_ranks_and_readers() {
        // 7 shards x 9 samples: split by shard for every n = world*readers <= 6;
        // 2 shards x 9 samples: fewer shards than streams whenever n > 2.
        for (n_shards, per) in [(7usize, 9usize), (2, 9)] {
            let dir = tempfile::tempdir().unwrap();
            let shards = image_shards(dir.path(), n_shards * per, per);
            assert_eq!(shards.len(), n_shards);
            let all: BTreeSet<String> = (0..n_shards * per).map(|i| format!("s{i:05}")).collect();
            for world in 1..=3 {
                for readers in 1..=2 {
                    for epoch in 0..2 {
                        let mut seen = Vec::new();
                        for rank in 0..world {
                            let l = Loader::new(
                                shards.clone(),
                                lcfg(readers, 3),
                                aug(),
                                LoaderMode::Train,
                                rank,
                                world,
                                Device::Cpu,
                            )
                            .unwrap();
                            seen.extend(keys_of(&l, epoch));
                        }
                        let set: BTreeSet<String> = seen.iter().cloned().collect();
                        assert_eq!(
                            seen.len(),
                            set.len(),
                            "duplicates: shards={n_shards} world={world} readers={readers}"
                        );
                        assert_eq!(set, all, "missing: shards={n_shards} world={world} readers={readers}");
                    }
                }
            }
        }
    }

    fn batches(shards: &[String], seed: u64, epoch: u64) -> Vec<Batch> {
        let l = Loader::new(shards.to_vec(), lcfg(2, seed), aug(), LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
        let out: Vec<Batch> = l.epoch(epoch).unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(l.stats().images.load(Ordering::Relaxed), 30);
        out
    }

    fn same(a: &[Batch], b: &[Batch]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.keys == y.keys
                    && x.view_a.equal(&y.view_a)
                    && x.view_b.as_ref().unwrap().equal(y.view_b.as_ref().unwrap())
                    && x.labels.equal(&y.labels)
            })
    }

    #[test]
    fn same_seed_same_batches() {
        let dir = tempfile::tempdir().unwrap();
        let shards = image_shards(dir.path(), 30, 7);
        let a = batches(&shards, 42, 0);
        let b = batches(&shards, 42, 0);
        assert_eq!(a.len(), 8); // 30 samples, batch 4, drop_last false
        assert!(same(&a, &b));
        assert_eq!(a[0].view_a.size(), vec![4, 3, 8, 8]);
        assert_eq!(a[0].view_a.kind(), tch::Kind::Float);
        assert_eq!(a[0].labels.kind(), tch::Kind::Int64);
        assert_eq!(a[7].keys.len(), 2);
        // labels follow the keys: label = index % 10
        for batch in &a {
            let labels = Vec::<i64>::try_from(&batch.labels).unwrap();
            for (k, l) in batch.keys.iter().zip(labels) {
                assert_eq!(k[1..].parse::<i64>().unwrap() % 10, l);
            }
        }
        assert!(!same(&a, &batches(&shards, 43, 0)));
        assert!(!same(&a, &batches(&shards, 42, 1)));
    }

    #[test]
    fn eval_mode_centre_crop_with_label() {
        let dir = tempfile::tempdir().unwrap();
        // 12x10 RGB image with pixel (x, y) = (10x, 10y, 7); eval_resize 10 = shorter side,
        // image_size 8 → crop left (12-8)/2 = 2, top (10-8)/2 = 1, no resampling.
        let (w, h) = (12u32, 10u32);
        let data: Vec<u8> =
            (0..h).flat_map(|y| (0..w).flat_map(move |x| [(10 * x) as u8, (10 * y) as u8, 7])).collect();
        let mut bytes = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut bytes),
            &data,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        let mut wr = ShardWriter::new(writer_cfg(dir.path(), "e", 10)).unwrap();
        wr.write(&RawSample::new("img0").with("png", bytes.clone()).with("cls", "7")).unwrap();
        wr.write(&RawSample::new("img1").with("png", bytes).with("cls", "2")).unwrap();
        wr.finish(&[]).unwrap();
        let mut a = aug();
        a.eval_resize = 10;
        a.mean = vec![0.0; 3];
        a.std = vec![1.0; 3];
        let shards = vec![dir.path().join("e-000000.tar").to_string_lossy().to_string()];
        let l = Loader::new(shards, lcfg(1, 0), a, LoaderMode::Eval, 0, 1, Device::Cpu).unwrap();
        let got: Vec<Batch> = l.epoch(0).unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(got.len(), 1);
        let b = &got[0];
        assert!(b.view_b.is_none());
        assert_eq!(b.keys, vec!["img0", "img1"]);
        assert_eq!(Vec::<i64>::try_from(&b.labels).unwrap(), vec![7, 2]);
        let v = Vec::<f32>::try_from(&b.view_a.get(0).flatten(0, -1)).unwrap();
        for y in 0..8usize {
            for x in 0..8usize {
                let (sx, sy) = (x + 2, y + 1);
                assert_eq!(v[y * 8 + x], (10 * sx) as f32 / 255.0);
                assert_eq!(v[64 + y * 8 + x], (10 * sy) as f32 / 255.0);
                assert_eq!(v[128 + y * 8 + x], 7.0 / 255.0);
            }
        }
    }

    /// One shard with a good sample then the bad case; returns shard paths.
    fn bad_case(dir: &Path, case: &str) -> Vec<String> {
        let good = RawSample::new("good0").with("png", png(8, 8, 1)).with("cls", "1");
        let path = dir.join(format!("{case}.tar"));
        let write = |samples: Vec<RawSample>| {
            let sub = dir.join(format!("w-{case}"));
            let mut w = ShardWriter::new(writer_cfg(&sub, "x", 100)).unwrap();
            for s in &samples {
                w.write(s).unwrap();
            }
            w.finish(&[]).unwrap();
            std::fs::read(sub.join("x-000000.tar")).unwrap()
        };
        let bytes = match case {
            "corrupt" => write(vec![
                good,
                RawSample::new("bad").with("jpg", b"\xff\xd8\xff\xe0 not a jpeg at all".to_vec()).with("cls", "0"),
            ]),
            "zero" => write(vec![good, RawSample::new("bad").with("png", Vec::new()).with("cls", "0")]),
            "unknown" => write(vec![good, RawSample::new("bad").with("bmpx", png(8, 8, 2)).with("cls", "0")]),
            "nolabel" => write(vec![good, RawSample::new("bad").with("png", png(8, 8, 3))]),
            "truncated" => {
                let full = write(vec![good, RawSample::new("bad").with("png", png(8, 8, 4)).with("cls", "0")]);
                full[..full.len() - 1024 - 300].to_vec()
            }
            "empty" => Vec::new(),
            _ => unreachable!(),
        };
        std::fs::write(&path, bytes).unwrap();
        let mut out = vec![path.to_string_lossy().to_string()];
        if case == "empty" {
            let ok = dir.join("ok.tar");
            std::fs::write(&ok, write(vec![good_clone()])).unwrap();
            out.push(ok.to_string_lossy().to_string());
        }
        out
    }

    fn good_clone() -> RawSample {
        RawSample::new("good0").with("png", png(8, 8, 1)).with("cls", "1")
    }

    #[test]
    fn bad_data_skipped_or_strict_error() {
        let cases = [
            ("corrupt", SkipReason::CorruptImage, "bad"),
            ("zero", SkipReason::EmptyImage, "bad"),
            ("unknown", SkipReason::NoImage, "bad"),
            ("nolabel", SkipReason::MissingLabel, "bad"),
            ("truncated", SkipReason::TruncatedShard, "good0"),
            ("empty", SkipReason::EmptyShard, "<none>"),
        ];
        for (case, reason, key) in cases {
            let dir = tempfile::tempdir().unwrap();
            let shards = bad_case(dir.path(), case);
            let mut cfg = lcfg(1, 0);
            cfg.shard_shuffle = false;
            for mode in [LoaderMode::Eval, LoaderMode::Train] {
                let l = Loader::new(shards.clone(), cfg.clone(), aug(), mode, 0, 1, Device::Cpu).unwrap();
                let keys: Vec<String> = l.epoch(0).unwrap().flat_map(|b| b.unwrap().keys).collect();
                let st = l.stats();
                if case == "nolabel" && mode == LoaderMode::Train {
                    // Train mode keeps unlabelled samples with label -1.
                    assert_eq!(keys, vec!["good0", "bad"]);
                    assert_eq!(st.skipped_total(), 0);
                    continue;
                }
                assert_eq!(keys, vec!["good0"], "{case} {mode:?}");
                assert_eq!(st.skipped(reason), 1, "{case}: {}", st.summary());
                assert_eq!(st.skipped_total(), 1, "{case}: {}", st.summary());
                assert!(st.summary().contains(reason.as_str()));
            }
            let mut strict = cfg.clone();
            strict.strict_data = true;
            let l = Loader::new(shards.clone(), strict, aug(), LoaderMode::Eval, 0, 1, Device::Cpu).unwrap();
            let items: Vec<Result<Batch>> = l.epoch(0).unwrap().collect();
            let err = items.last().unwrap().as_ref().err().unwrap_or_else(|| panic!("{case}: no error")).to_string();
            assert!(err.contains(&format!("{case}.tar")) && err.contains(key), "{case}: {err}");
            assert!(items[..items.len() - 1].iter().all(|i| i.is_ok()));
        }
    }

    #[test]
    fn dropping_mid_epoch_stops_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let shards = image_shards(dir.path(), 120, 30);
        let mut cfg = lcfg(2, 1);
        cfg.batch_size = 2;
        cfg.prefetch_batches = 1;
        let l = Loader::new(shards, cfg, aug(), LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            let mut it = l.epoch(0).unwrap();
            assert!(it.next().unwrap().is_ok());
            drop(it);
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        // the loader is still usable afterwards
        assert_eq!(keys_of(&l, 1).len(), 120);
    }

    #[test]
    fn epoch_from_a_batch_end_continues_exactly() {
        // 3 shards (9, 9, 4 samples) with a corrupt and a zero-byte image among them: positions
        // count the skipped samples too, so resuming after any batch must give the same rest.
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(writer_cfg(dir.path(), "r", 9)).unwrap();
        for i in 0..22usize {
            let s = match i {
                5 => RawSample::new(format!("s{i:05}")).with("jpg", b"\xff\xd8 not a jpeg".to_vec()).with("cls", "0"),
                13 => RawSample::new(format!("s{i:05}")).with("png", Vec::new()).with("cls", "0"),
                _ => RawSample::new(format!("s{i:05}")).with("png", png(8, 8, i as u8)).with("cls", "1"),
            };
            w.write(&s).unwrap();
        }
        let m = w.finish(&[]).unwrap();
        let shards: Vec<String> =
            m.shards.iter().map(|s| dir.path().join(&s.name).to_string_lossy().to_string()).collect();
        assert_eq!(m.shards.iter().map(|s| s.samples).collect::<Vec<_>>(), vec![9, 9, 4]);
        let l = Loader::new(shards.clone(), lcfg(2, 11), aug(), LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
        let full: Vec<Batch> = l.epoch(1).unwrap().map(|b| b.unwrap()).collect();
        // 20 good samples in batches of 4 (drop_last false): 5 batches; the last one ends after
        // all 22 positions (the two bad samples took positions too).
        assert_eq!(full.len(), 5);
        assert_eq!(full.last().unwrap().end_position, 22);
        assert!(full.windows(2).all(|p| p[0].end_position < p[1].end_position));
        for k in 0..full.len() {
            let l = Loader::new(shards.clone(), lcfg(2, 11), aug(), LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
            let rest: Vec<Batch> = l.epoch_from(1, full[k].end_position).unwrap().map(|b| b.unwrap()).collect();
            assert!(same(&rest, &full[k + 1..]), "resume after batch {k}");
            assert!(rest.iter().zip(&full[k + 1..]).all(|(a, b)| a.end_position == b.end_position));
            // skipped positions were not decoded: only the delivered images are counted, and a
            // bad sample before the start position is not reported again
            let delivered: usize = full[k + 1..].iter().map(|b| b.keys.len()).sum();
            assert_eq!(l.stats().images.load(Ordering::Relaxed), delivered as u64);
        }
        // the two bad samples are reported by a full epoch and by a start at 0, never by a start
        // after the end of the epoch
        assert_eq!(l.stats().skipped_total(), 2);
        let l = Loader::new(shards.clone(), lcfg(2, 11), aug(), LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
        let from0: Vec<Batch> = l.epoch_from(1, 0).unwrap().map(|b| b.unwrap()).collect();
        assert!(same(&from0, &full));
        assert_eq!(l.stats().skipped_total(), 2);
        let l = Loader::new(shards, lcfg(2, 11), aug(), LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
        assert_eq!(l.epoch_from(1, 22).unwrap().count(), 0);
        assert_eq!(l.stats().skipped_total(), 0);
    }

    #[test]
    fn steps_per_epoch_by_hand_and_against_the_loader() {
        let mut cfg = lcfg(1, 5);
        cfg.shard_shuffle = false;
        cfg.drop_last = true;
        // split by shard: 2 streams, shards [9, 9, 4] → stream 0 gets shards 0 and 2 (13 samples),
        // stream 1 gets shard 1 (9): 3 and 2 batches of 4 → every rank can take 2 steps.
        let counts = [9u64, 9, 4];
        assert_eq!(rank_samples_in_epoch(&counts, &cfg, LoaderMode::Train, 2, 0, 0), 13);
        assert_eq!(rank_samples_in_epoch(&counts, &cfg, LoaderMode::Train, 2, 1, 0), 9);
        assert_eq!(steps_per_epoch(&counts, &cfg, LoaderMode::Train, 2, 0), 2);
        assert_eq!(steps_per_epoch(&counts, &cfg, LoaderMode::Train, 1, 0), 22 / 4);
        // every stream reads the one shard of 9: 2 ranks x 2 readers = 4 streams keep samples
        // j % 4 == g → 3, 2, 2, 2; rank 0 (streams 0, 1) 5, rank 1 (streams 2, 3) 4.
        cfg.readers = 2;
        assert_eq!(rank_samples_in_epoch(&[9], &cfg, LoaderMode::Train, 2, 0, 0), 5);
        assert_eq!(rank_samples_in_epoch(&[9], &cfg, LoaderMode::Train, 2, 1, 0), 4);
        assert_eq!(steps_per_epoch(&[9], &cfg, LoaderMode::Train, 2, 0), 1);
        cfg.drop_last = false;
        assert_eq!(steps_per_epoch(&[9], &cfg, LoaderMode::Train, 2, 0), 1); // ceil(5/4)=2, ceil(4/4)=1
        cfg.batch_size = 2;
        assert_eq!(steps_per_epoch(&[9], &cfg, LoaderMode::Train, 2, 0), 2); // ceil(5/2)=3, ceil(4/2)=2

        // against real loaders: shuffled shards of unequal size, several epochs and world sizes
        let dir = tempfile::tempdir().unwrap();
        let shards = image_shards(dir.path(), 41, 7); // 7 x 5 + 6
        let counts: Vec<u64> = vec![7, 7, 7, 7, 7, 6];
        for world in 1..=3 {
            for readers in 1..=2 {
                for epoch in 0..3 {
                    let c = lcfg(readers, 9); // drop_last = false: every sample is delivered
                    let (mut partial, mut full) = (Vec::new(), Vec::new());
                    for rank in 0..world {
                        let l =
                            Loader::new(shards.clone(), c.clone(), aug(), LoaderMode::Train, rank, world, Device::Cpu)
                                .unwrap();
                        assert_eq!(
                            l.steps_per_epoch(epoch, &counts),
                            steps_per_epoch(&counts, &c, LoaderMode::Train, world, epoch)
                        );
                        let got: Vec<usize> = l.epoch(epoch).unwrap().map(|b| b.unwrap().keys.len()).collect();
                        let n: usize = got.iter().sum();
                        assert_eq!(n as u64, rank_samples_in_epoch(&counts, &c, LoaderMode::Train, world, rank, epoch));
                        partial.push(got.len() as u64);
                        full.push(got.iter().filter(|k| **k == c.batch_size).count() as u64);
                    }
                    let what = format!("world {world} readers {readers} epoch {epoch}: {partial:?} {full:?}");
                    assert_eq!(
                        *partial.iter().min().unwrap(),
                        steps_per_epoch(&counts, &c, LoaderMode::Train, world, epoch),
                        "{what}"
                    );
                    let dl = LoaderConfig { drop_last: true, ..c.clone() };
                    assert_eq!(
                        *full.iter().min().unwrap(),
                        steps_per_epoch(&counts, &dl, LoaderMode::Train, world, epoch),
                        "{what}"
                    );
                }
            }
        }
    }

    #[test]
    fn config_errors() {
        let e = Loader::new(vec!["ftp://b/x.tar".into()], lcfg(1, 0), aug(), LoaderMode::Train, 0, 1, Device::Cpu)
            .err()
            .unwrap();
        assert!(e.to_string().contains("ftp:// is not supported"));
        let mut c = lcfg(1, 0);
        c.remote_max_retry_secs = f64::NAN;
        let e = Loader::new(vec!["/x.tar".into()], c, aug(), LoaderMode::Train, 0, 1, Device::Cpu).err().unwrap();
        assert!(e.to_string().contains("loader.remote_max_retry_secs"));
        let mut c = lcfg(1, 0);
        c.batch_size = 0;
        let e = Loader::new(vec!["/x.tar".into()], c, aug(), LoaderMode::Train, 0, 1, Device::Cpu).err().unwrap();
        assert!(e.to_string().contains("loader.batch_size"));
        let e =
            Loader::new(vec!["/x.tar".into()], lcfg(1, 0), aug(), LoaderMode::Train, 2, 2, Device::Cpu).err().unwrap();
        assert!(e.to_string().contains("rank 2"));
        // a missing shard file is an unreadable shard, counted
        let l = Loader::new(vec!["/nonexistent/x.tar".into()], lcfg(1, 0), aug(), LoaderMode::Train, 0, 1, Device::Cpu)
            .unwrap();
        assert_eq!(l.epoch(0).unwrap().count(), 0);
        assert_eq!(l.stats().skipped(SkipReason::UnreadableShard), 1);
    }
}

#[cfg(test)]
mod throughput {
    use super::*;
    use crate::dataset::{load_folder_image, scan_image_folder};
    use crate::shard::ShardWriter;
    use crate::testutil::writer_cfg;

    /// Manual benchmark: `cargo test --release -p dspnet-pipeline throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_cifar() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar10-jpg/test");
        let (classes, items) = scan_image_folder(&root).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(writer_cfg(dir.path(), "b", 1000)).unwrap();
        for (p, c) in items.iter().take(5000) {
            w.write(&load_folder_image(&root, p, *c, &classes).unwrap().to_sample()).unwrap();
        }
        let m = w.finish(&classes).unwrap();
        let shards: Vec<String> =
            m.shards.iter().map(|s| dir.path().join(&s.name).to_string_lossy().to_string()).collect();
        for mode in [LoaderMode::Train, LoaderMode::Eval] {
            let cfg = LoaderConfig {
                batch_size: 256,
                shuffle_buffer: 1000,
                shard_shuffle: true,
                workers: 2,
                readers: 2,
                prefetch_batches: 4,
                drop_last: false,
                seed: 0,
                strict_data: true,
                ..LoaderConfig::default()
            };
            let l =
                Loader::new(shards.clone(), cfg, AugmentConfig::byol_small(32, 3), mode, 0, 1, Device::Cpu).unwrap();
            let t = Instant::now();
            let n: usize = l.epoch(0).unwrap().map(|b| b.unwrap().keys.len()).sum();
            let s = t.elapsed().as_secs_f64();
            println!("{mode:?}: {n} images in {s:.2}s = {:.0} images/s; {}", n as f64 / s, l.stats().summary());
        }
    }
}
