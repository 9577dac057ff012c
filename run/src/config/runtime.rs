//! The runtime settings: what sets a run's speed, logging, checkpoints, remote reads and
//! evaluation, never its weights. A resumed run may change every one of them.

use crate::error::RunError;
use dspnet_pipeline::loader::LoaderThreads;
use dspnet_pipeline::RemoteConfig;
use serde::{Deserialize, Serialize};

/// What may change between invocations of one run: the `[train]` keys of
/// [`TrainRuntime`], the `[loader]` keys of [`LoaderThreads`], the `[remote]` and `[eval]`
/// sections. Everything else in the file is the [`super::Recipe`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    pub train: TrainRuntime,
    /// Worker threads and prefetch depth of the loader.
    pub loader: LoaderThreads,
    /// Remote shards: read-ahead and retry budget (absent from a file: the defaults).
    #[serde(default)]
    pub remote: RemoteConfig,
    pub eval: EvalConfig,
    /// The kNN monitor during pretraining (absent from a file: off).
    #[serde(default)]
    pub monitor: MonitorConfig,
}

/// The kNN monitor (`[monitor]`): kNN top-1 of every trained width during pretraining, with
/// `dspnet-eval`'s protocol (`eval.knn_k`, `eval.knn_t`, eval-mode BN, un-augmented centre
/// views), written to `metrics.jsonl`. Off while `test_shards` is empty. Its cost per
/// evaluation is one eval-mode forward pass of `bank_images + test_images` images at every
/// trained width; it changes no weight, BN statistic or random stream of the training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Labelled shards whose first `bank_images` images (in shard order) are the kNN bank, e.g.
    /// the training shards (a pattern, as `--shards`).
    #[serde(default)]
    pub train_shards: String,
    /// Labelled shards whose first `test_images` images are classified (empty: monitor off).
    #[serde(default)]
    pub test_shards: String,
    /// Also evaluate every this many optimiser steps (0: only at every epoch end).
    #[serde(default)]
    pub every_steps: u64,
    /// Cap of the bank, images.
    #[serde(default = "default_bank_images")]
    pub bank_images: usize,
    /// Cap of the images classified, images.
    #[serde(default = "default_test_images")]
    pub test_images: usize,
    /// DSPNet: every this many optimiser steps, measure the interference between widths (each
    /// width's gradient norm on the shared weights, the cosine between the full width's gradient
    /// and the narrow widths' sum) into `metrics.jsonl` (0: never). Independent of the kNN
    /// monitor; the step's update is bit-identical with and without it.
    #[serde(default)]
    pub interference_every_steps: u64,
}

fn default_bank_images() -> usize {
    5000
}

fn default_test_images() -> usize {
    2000
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            train_shards: String::new(),
            test_shards: String::new(),
            every_steps: 0,
            bank_images: default_bank_images(),
            test_images: default_test_images(),
            interference_every_steps: 0,
        }
    }
}

impl MonitorConfig {
    /// True when the monitor runs.
    pub fn enabled(&self) -> bool {
        !self.test_shards.trim().is_empty()
    }
}

/// The `[train]` keys that do not change the weights: threads, logging, checkpoints, timeouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRuntime {
    /// Save a checkpoint every this many optimiser steps, besides the ones at every epoch end
    /// and at the end of the run (0: only those).
    pub checkpoint_every: u64,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
    /// Intra-op threads for libtorch (0: libtorch's default). Speed only, but libtorch splits
    /// sums by thread, so byte-identical results (exact resume) need the same count (1 on CPU).
    pub threads: usize,
    /// Data parallel: timeout of the rendezvous and of every collective, seconds (a dead peer
    /// is usually reported at once; a hung one after this long).
    #[serde(default = "default_dist_timeout")]
    pub dist_timeout_sec: f64,
}

fn default_dist_timeout() -> f64 {
    300.0
}

/// Evaluation protocol settings (recorded in every result).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// kNN monitor: neighbours (Wu et al. 2018 / InstDisc: 200).
    pub knn_k: i64,
    /// kNN temperature for weighted votes (0.1).
    pub knn_t: f64,
    /// Linear probe epochs over the frozen, pre-computed features.
    pub linear_epochs: usize,
    /// Linear probe learning rate (Adam).
    pub linear_lr: f64,
    /// Linear probe batch size.
    pub linear_batch: i64,
    /// Batch size for feature extraction.
    pub batch_size: usize,
    /// Batches of clean training images used by `dspnet-eval --calibrate-bn` to re-estimate BN
    /// running statistics.
    pub bn_calibration_batches: usize,
}

impl Runtime {
    /// Checks every value; errors name the key and the fix.
    pub fn validate(&self) -> Result<(), RunError> {
        let t = self.train.dist_timeout_sec;
        if !(t > 0.0 && t <= 1e6) {
            return Err(RunError::config(
                "train.dist_timeout_sec",
                format!("train.dist_timeout_sec = {t} must be a number in (0, 1000000]"),
            ));
        }
        for (v, name) in [(self.eval.knn_t, "eval.knn_t"), (self.eval.linear_lr, "eval.linear_lr")] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(RunError::config(name, format!("{name} = {v} must be a finite number >= 0")));
            }
        }
        self.loader.validate().map_err(|e| RunError::config("loader", e.to_string()))?;
        let m = &self.monitor;
        if m.enabled() && m.train_shards.trim().is_empty() {
            return Err(RunError::config(
                "monitor.train_shards",
                "monitor.test_shards is set but monitor.train_shards is empty: the kNN monitor needs labelled shards for its bank (e.g. the training shards)",
            ));
        }
        if m.enabled() && (m.bank_images == 0 || m.test_images == 0) {
            return Err(RunError::config(
                "monitor.bank_images",
                "monitor.bank_images and monitor.test_images must be at least 1",
            ));
        }
        self.remote.validate().map_err(|e| RunError::config("remote", e.to_string()))
    }
}
