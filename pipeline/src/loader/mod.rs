//! The streaming loader: tokio shard streams → seeded shard shuffle, stream merge and shuffle
//! buffer → crossbeam pool of decode/augment workers → re-ordering by sequence number → batches
//! of `tch` tensors in a bounded prefetch queue.
//!
//! # Throughput
//! Each worker keeps one [`crate::augment::AugmentWorkspace`] and decodes only the window of a JPEG its two crops
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
//!
//! # Modules
//! | module | job |
//! |---|---|
//! | `config` | [`LoaderConfig`] (`[loader]`), [`LoaderMode`], [`LoaderSettings`] (the three sections) |
//! | `plan` | the epoch plan: [`epoch_shard_order`], [`rank_samples_in_epoch`], [`steps_per_epoch`] |
//! | `read` | reader streams (tokio): open shards through their source, parse tar / zstd / gzip |
//! | `merge` | round-robin merge of the streams, shuffle buffer, stream positions |
//! | `worker` | the CPU worker pool (decode + views) and the recycled view buffers |
//! | `batch` | re-ordering and batch tensors (huge pages / pinned memory): [`Batch`] |
//! | `stats` | [`LoaderStats`], [`SkipReason`] |
//! | `channel` | cancellable hand-offs between the loader's threads |
//!
//! Shards are opened only through [`crate::source`]'s contract: a [`ShardSource`] opens a shard
//! as a byte stream, and [`crate::source::is_fatal`] (for open errors) and `FatalTap` (for read
//! errors) tell a source failure that ends the epoch from a shard to skip.
mod batch;
mod channel;
mod config;
mod merge;
mod plan;
mod read;
mod stats;
mod worker;

pub use batch::Batch;
pub use config::{LoaderConfig, LoaderMode, LoaderSettings, LoaderThreads};
pub use plan::{epoch_shard_order, rank_samples_in_epoch, steps_per_epoch};
pub use stats::{LoaderStats, SkipReason};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Device;

use crate::augment::{EvalTransform, TwinViewTransform};
use crate::loader::batch::Assembler;
use crate::loader::channel::spawn_named;
use crate::loader::merge::{merge, WorkItem};
use crate::loader::read::{read_stream, StreamMsg, STREAM_QUEUE};
use crate::loader::worker::{worker, BufferPool, Outcome, WorkerCtx};
use crate::source::remote::RemoteOptions;
use crate::source::{sources_for, ShardSource};
use crate::{mix_seed, PipelineError, Result};

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
    threads: LoaderThreads,
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
    /// [`crate::source::expand_pattern`]) with the `[loader]`, `[augment]` and `[remote]`
    /// sections of `settings`.
    ///
    /// Errors: [`PipelineError::Config`] for an empty shard list, `rank >= world_size`, zero
    /// counts, an invalid remote setting or an invalid augmentation;
    /// [`PipelineError::UnsupportedScheme`] for a shard URL with no source;
    /// [`PipelineError::RemoteConfig`] when a remote store cannot be configured;
    /// [`PipelineError::Internal`] when the tokio runtime cannot start.
    pub fn new(
        shards: Vec<String>,
        settings: LoaderSettings,
        mode: LoaderMode,
        rank: usize,
        world_size: usize,
        device: Device,
    ) -> Result<Self> {
        let LoaderSettings { loader, threads, augment, remote } = settings;
        loader.validate()?;
        threads.validate()?;
        remote.validate()?;
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
        let sources = sources_for(&shards, &RemoteOptions::from(&remote), &stats.remote)?;
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
            threads,
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

        let workers = self.threads.workers;
        let (work_tx, work_rx) = bounded::<WorkItem>(workers * 4);
        let (res_tx, res_rx) = bounded::<(u64, Outcome)>(workers * 4);
        let (batch_tx, batch_rx) = bounded::<Result<Batch>>(self.threads.prefetch_batches);
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

#[cfg(test)]
mod tests;

#[cfg(test)]
mod throughput {
    use super::*;
    use crate::augment::AugmentConfig;
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
                readers: 2,
                drop_last: false,
                seed: 0,
                strict_data: true,
            };
            let l = Loader::new(
                shards.clone(),
                LoaderSettings::new(cfg, AugmentConfig::byol_small(32, 3)),
                mode,
                0,
                1,
                Device::Cpu,
            )
            .unwrap();
            let t = Instant::now();
            let n: usize = l.epoch(0).unwrap().map(|b| b.unwrap().keys.len()).sum();
            let s = t.elapsed().as_secs_f64();
            println!("{mode:?}: {n} images in {s:.2}s = {:.0} images/s; {}", n as f64 / s, l.stats().summary());
        }
    }
}
