//! Each training of a comparison runs in its own child process (the same `dspnet-compare`
//! binary with `--child-train RUN`), so its wall time and peak memory are its own.
//!
//! # Peak memory
//! The child reads its peak resident set size (`VmHWM` in `/proc/self/status`) when training
//! has finished. A process starts with a fresh address space at `exec`, so `VmHWM` is the peak
//! of that process alone over its whole life: libtorch, the loader's threads and buffers, the
//! networks, gradients, optimiser state, activations. No other training ever ran in it, so
//! nothing earlier can inflate it, and no reset (`/proc/self/clear_refs`, which would only
//! matter inside one long-lived process) is needed. The resident size just before training
//! (`VmRSS`: libtorch loaded, configuration read) is recorded as the start-up baseline.
//!
//! # Wall time
//! `seconds` is the training loop's own wall time (`TrainSummary::seconds`: first batch to last
//! step, checkpoints included); the parent also records the child's whole process time
//! (`process_seconds`: exec, libtorch start-up, network set-up, final checkpoint).
//!
//! # Stopping
//! The parent's standard input pipe to the child is its stop channel: on its first SIGINT or
//! SIGTERM the parent closes it, and the child then finishes its step, saves a checkpoint and
//! exits, as on a signal of its own (see [`stop_when_stdin_closes`]); the parent waits for it and
//! exits with 128 + the signal's number. So `kill PID` of `dspnet-compare` alone stops the
//! training too, a signal to the whole process group is still counted once, and a killed parent
//! (its end of the pipe closed by the kernel) stops the training as well.
//!
//! # Pieces
//! A training interrupted (Ctrl-C, a killed job, a preempted node) is continued from its last
//! checkpoint by `dspnet-compare --resume` (see `run.rs`): the child then resumes the run
//! exactly (as `dspnet-stream-train --resume` does) and counts the whole run: its steps and
//! images, and as wall time the earlier pieces' time up to the checkpoint (their steps after it
//! are trained again and counted once) plus this piece's. Peak memory and the process time are
//! the last piece's.

use crate::error::{CompareError, Result};
use dspnet_core::cli::StopSignal;
use dspnet_model::parse_device;
use dspnet_run::layout::STATE;
use dspnet_run::RunConfig;
use dspnet_trainer::{train, TrainRequest};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the parent asks the child to train (`RUN/compare-request.json`).
pub const REQUEST: &str = "compare-request.json";
/// What the child measured (`RUN/compare-child.json`), written once training has finished.
pub const CHILD_RECORD: &str = "compare-child.json";

/// A child's work order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChildRequest {
    /// The run configuration, TOML.
    pub config_toml: String,
    /// Training shards (expanded).
    pub shards: Vec<String>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Training-loop seconds of the earlier pieces up to the checkpoint this piece starts from
    /// (0 for a first piece).
    #[serde(default)]
    pub earlier_seconds: f64,
    /// The checkpoint's step this piece starts from (0 for a first piece).
    #[serde(default)]
    pub start_step: u64,
    /// Which piece this is: 1 for a training started from scratch, more for one that continues
    /// the run in RUN from its checkpoint (see "Pieces").
    #[serde(default = "first_piece")]
    pub piece: u32,
    /// When the parent started this piece's process, Unix seconds (0 in requests written before
    /// it was kept).
    #[serde(default)]
    pub started_unix: f64,
    /// The earlier pieces' process spans (start, end), Unix seconds; an interrupted piece ends
    /// at its run folder's last write.
    #[serde(default)]
    pub earlier_spans: Vec<(f64, f64)>,
}

impl ChildRequest {
    /// The first piece: the training started from scratch.
    pub fn first(config_toml: String, shards: Vec<String>, device: String) -> Self {
        ChildRequest {
            config_toml,
            shards,
            device,
            earlier_seconds: 0.0,
            start_step: 0,
            piece: 1,
            started_unix: 0.0,
            earlier_spans: Vec::new(),
        }
    }

    /// Whether this piece continues the run from its checkpoint.
    pub fn resumes(&self) -> bool {
        self.piece > 1
    }
}

/// Seconds since the Unix epoch now (0 on a clock set before it).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Serde default of a piece count: one (records written before pieces existed).
pub(crate) fn first_piece() -> u32 {
    1
}

/// What a child measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChildRecord {
    /// Training loop wall time of the whole run, seconds (all pieces: see "Pieces").
    pub seconds: f64,
    /// Optimiser steps of the whole run.
    pub steps: u64,
    /// Images trained on by the whole run (each image = two views).
    pub images: u64,
    /// Images per second of the last piece.
    pub images_per_sec: f64,
    /// Fraction of the last piece's wall time spent waiting for the loader, in [0, 1].
    pub data_wait_fraction: f64,
    /// "fp32" or "bf16".
    pub precision: String,
    pub skipped_nonfinite: u64,
    /// libtorch intra-op threads during training.
    pub threads: i64,
    /// Peak resident set size of the child process (`VmHWM`), bytes.
    pub peak_rss_bytes: u64,
    /// Resident set size just before training (`VmRSS`), bytes.
    pub baseline_rss_bytes: u64,
    /// Planned steps and steps per epoch (from the run's checkpoint.json).
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    /// Pieces the training took (1: trained in one go; see "Pieces").
    #[serde(default = "first_piece")]
    pub pieces: u32,
}

/// Stops the training (as SIGTERM would) once the child's standard input reaches its end: the
/// parent closes that pipe to forward a SIGINT/SIGTERM it received alone (`kill PID`, a
/// container's PID 1), and the kernel closes it when the parent dies however it dies (even
/// SIGKILL, or before this thread started), so a training child never outlives a killed
/// `dspnet-compare` and keeps writing into its run folder. A pipe, not a forwarded signal, so a
/// signal sent to the whole process group (Ctrl-C, a cluster scheduler) that reaches the child
/// directly too is not counted twice (a second signal aborts without the final checkpoint).
fn stop_when_stdin_closes(stop: &StopSignal) {
    let stop = stop.clone();
    let watch = move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        // bytes the parent never writes are ignored; end of file or an error asks to stop
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        stop.request(libc::SIGTERM);
    };
    if let Err(e) = std::thread::Builder::new().name("dspnet-parent-watch".into()).spawn(watch) {
        tracing::warn!("cannot watch the parent's stop requests: {e}; only signals stop this training");
    }
}

/// The child's side: trains as `RUN/compare-request.json` asks (a fresh run in `RUN`, or the
/// run there continued from its checkpoint), then writes `RUN/compare-child.json`. `stop`
/// records SIGINT/SIGTERM, the end of standard input (the parent's stop request) and the
/// parent's death.
///
/// Errors: a missing or bad request, training errors, an interrupted run.
pub fn child_train(run_dir: &Path, stop: StopSignal) -> Result<()> {
    stop_when_stdin_closes(&stop);
    let req_path = run_dir.join(REQUEST);
    let bytes = std::fs::read(&req_path).map_err(|e| CompareError::io(&req_path, e))?;
    let req: ChildRequest = serde_json::from_slice(&bytes).map_err(|e| {
        CompareError::run_file(&req_path, format!("{}: not a compare request: {e}", req_path.display()))
    })?;
    let config = RunConfig::from_toml_str(&req.config_toml, &req_path.display().to_string())?;
    let device = parse_device(&req.device)?;
    let _ = std::fs::remove_file(run_dir.join(CHILD_RECORD));
    let baseline = dspnet_core::memory::status_bytes("VmRSS").unwrap_or(0);
    use std::io::IsTerminal;
    let resume = req.resumes();
    let summary = train(TrainRequest {
        config,
        shards: req.shards,
        run_dir: run_dir.to_path_buf(),
        max_steps: None,
        device,
        overwrite: !resume,
        resume,
        stop,
        progress: std::io::stderr().is_terminal(),
    })?;
    if summary.interrupted {
        return Err(CompareError::sub_run(
            run_dir.display().to_string(),
            format!("training in {} was interrupted", run_dir.display()),
        ));
    }
    let peak = dspnet_core::memory::status_bytes("VmHWM").unwrap_or(0);
    let state_path = run_dir.join(STATE);
    let state: serde_json::Value =
        std::fs::read(&state_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| {
            CompareError::run_file(
                &state_path,
                format!("{} is missing or unreadable after training", state_path.display()),
            )
        })?;
    let record = ChildRecord {
        seconds: req.earlier_seconds + summary.seconds,
        steps: summary.start_step + summary.steps,
        images: state["images"].as_u64().unwrap_or(summary.images),
        images_per_sec: summary.images_per_sec,
        data_wait_fraction: summary.data_wait_fraction,
        precision: summary.precision,
        skipped_nonfinite: summary.skipped_nonfinite,
        threads: tch::get_num_threads() as i64,
        peak_rss_bytes: peak,
        baseline_rss_bytes: baseline,
        total_steps: state["total_steps"].as_u64().unwrap_or(0),
        steps_per_epoch: state["steps_per_epoch"].as_u64().unwrap_or(0),
        pieces: req.piece,
    };
    dspnet_core::fs::write_atomic(&run_dir.join(CHILD_RECORD), &serde_json::to_vec_pretty(&record).expect("json"))?;
    Ok(())
}
