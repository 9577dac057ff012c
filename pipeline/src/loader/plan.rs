//! The epoch plan, computed identically on every rank without communication: the shard order
//! of an epoch, the samples a rank receives under the shard split (see the loader's module
//! docs, "Splitting across ranks and readers") and the steps every rank can take.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::loader::config::{LoaderConfig, LoaderMode};
use crate::mix_seed;

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
