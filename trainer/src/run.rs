//! The training loop behind `dspnet-stream-train`: run directory, loader, DSPNet steps, progress,
//! metrics (JSON lines), checkpoints, Ctrl-C.

use crate::checkpoint::{self, CheckpointState, CONFIG, METRICS};
use crate::config::RunConfig;
use crate::dspnet::DspnetTrainer;
use crate::error::TrainerError;
use dspnet_pipeline::loader::{Loader, LoaderMode};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Device;

/// What the caller asks of one training run.
pub struct TrainRequest {
    pub config: RunConfig,
    /// Shard URLs (already brace-expanded).
    pub shards: Vec<String>,
    /// Run directory to create.
    pub run_dir: PathBuf,
    /// Stop after this many optimiser steps (the schedules still use the planned length).
    pub max_steps: Option<u64>,
    pub device: Device,
    /// Replace an existing run directory's checkpoint.
    pub overwrite: bool,
    /// Set by a Ctrl-C handler: the current step finishes, then a checkpoint is saved.
    pub stop: Arc<AtomicBool>,
    /// Show an indicatif progress bar (on stderr).
    pub progress: bool,
}

/// Summary of a finished (or interrupted) run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: u64,
    pub images: u64,
    pub seconds: f64,
    /// Images per second over the run (each image = two views).
    pub images_per_sec: f64,
    /// Fraction of wall time the trainer waited for the loader, in [0, 1].
    pub data_wait_fraction: f64,
    pub interrupted: bool,
    pub precision: String,
}

/// Number of samples in the selected shards, from the `manifest.json` next to them (written by
/// `dspnet-shard`); `None` when there is no manifest or it does not list every selected shard.
pub fn manifest_samples(shards: &[String]) -> Option<u64> {
    let dir = Path::new(shards.first()?).parent()?;
    let manifest = dspnet_pipeline::shard::read_manifest(dir).ok()?;
    let mut total = 0;
    for s in shards {
        let name = Path::new(s).file_name()?.to_str()?;
        total += manifest.shards.iter().find(|i| i.name == name)?.samples;
    }
    Some(total)
}

/// RANK and WORLD_SIZE from the environment (as torchrun sets them); 0 and 1 when unset.
///
/// Errors: values that are not integers, WORLD_SIZE = 0, RANK >= WORLD_SIZE.
pub fn rank_and_world() -> Result<(usize, usize), TrainerError> {
    let read = |name: &str, default: usize| -> Result<usize, TrainerError> {
        match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => v.trim().parse().map_err(|_| {
                TrainerError::Config(format!("environment variable {name}={v} is not a whole number; unset it or fix the launcher"))
            }),
        }
    };
    let (rank, world) = (read("RANK", 0)?, read("WORLD_SIZE", 1)?);
    if world == 0 || rank >= world {
        return Err(TrainerError::Config(format!(
            "RANK={rank} WORLD_SIZE={world}: need WORLD_SIZE >= 1 and RANK < WORLD_SIZE; unset them for one process"
        )));
    }
    Ok((rank, world))
}

/// Creates the run directory (refusing one that already holds a checkpoint unless `overwrite`)
/// and checks it is writable before any training starts.
pub fn prepare_run_dir(dir: &Path, overwrite: bool) -> Result<(), TrainerError> {
    if dir.join(checkpoint::STATE).exists() && !overwrite {
        return Err(TrainerError::Config(format!(
            "run directory {} already holds a checkpoint; pass --overwrite or choose another --out",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        TrainerError::Config(format!("cannot create run directory {}: {e}; choose a writable --out", dir.display()))
    })?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| {
        TrainerError::Config(format!("run directory {} is not writable: {e}; choose a writable --out", dir.display()))
    })?;
    let _ = std::fs::remove_file(probe);
    for stale in [checkpoint::STATE, checkpoint::WEIGHTS, METRICS, "results.json"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    Ok(())
}

/// Runs DSPNet pretraining as requested; see the module docs.
///
/// Errors: bad shards (pattern, unreadable, strict-data violations), run directory problems,
/// non-finite loss (the last good checkpoint is kept), libtorch errors.
pub fn train(req: TrainRequest) -> Result<TrainSummary, TrainerError> {
    let cfg = &req.config;
    if req.config.train.threads > 0 {
        tch::set_num_threads(req.config.train.threads as i32);
    }
    let (rank, world) = rank_and_world()?;
    let device = crate::distributed::device_for_rank(req.device)?; // dist: cuda -> cuda:LOCAL_RANK
    let samples = manifest_samples(&req.shards);
    let batch = cfg.loader.batch_size;
    let steps_per_epoch = match samples {
        Some(n) => (n / (batch * world) as u64).max(1),
        None => req.max_steps.ok_or_else(|| {
            TrainerError::Config(
                "no manifest.json beside the shards, so the epoch length is unknown; pass --max-steps N".into(),
            )
        })?,
    };
    let total_steps = ((cfg.train.epochs * steps_per_epoch as f64).round() as u64).max(1);
    if rank == 0 {
        // dist: only rank 0 writes the run directory
        prepare_run_dir(&req.run_dir, req.overwrite)?;
        checkpoint::write_atomic(&req.run_dir, CONFIG, cfg.to_toml().as_bytes())?;
    }

    let loader = Loader::new(
        req.shards.clone(),
        cfg.loader.clone(),
        cfg.augment.clone(),
        LoaderMode::Train,
        rank,
        world,
        device,
    )?;
    let mut trainer = DspnetTrainer::new(cfg, device, total_steps, steps_per_epoch, batch * world)?;
    // dist: join the process group (WORLD_SIZE > 1): weights broadcast from rank 0, gradients
    // averaged in DspnetTrainer::step, optional SyncBN
    let group = crate::distributed::join(&mut trainer, cfg)?;
    let precision = trainer.format.name().to_string();
    let run_steps = req.max_steps.map_or(total_steps, |m| m.min(total_steps));
    tracing::info!(
        steps = run_steps,
        total_steps,
        steps_per_epoch,
        widths = ?trainer.widths,
        precision = %precision,
        "training"
    );
    let metrics_path = req.run_dir.join(METRICS);
    let mut metrics = if rank == 0 {
        // dist: metrics from rank 0 only (its local losses)
        Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .map_err(|e| TrainerError::io(&metrics_path, e))?,
        )
    } else {
        None
    };

    let bar = if req.progress && rank == 0 { ProgressBar::new(run_steps) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed_precise} eta {eta_precise}  {msg}")
            .expect("valid template"),
    );

    let started = Instant::now();
    let mut wait = Duration::ZERO;
    let mut step: u64 = 0;
    let mut images: u64 = 0;
    let mut epoch: u64 = 0;
    let mut samples_in_epoch: u64 = 0;
    let mut interrupted = false;
    let mut window = (Instant::now(), 0u64, Duration::ZERO);
    'outer: while step < run_steps {
        let mut iter = loader.epoch(epoch)?;
        samples_in_epoch = 0;
        let mut batches_in_epoch = 0u64;
        loop {
            if group.is_none() && req.stop.load(Ordering::SeqCst) {
                interrupted = true;
                break 'outer;
            }
            let t0 = Instant::now();
            let next = iter.next();
            let waited = t0.elapsed();
            let Some(batch) = next else {
                if batches_in_epoch == 0 {
                    return Err(TrainerError::Config(format!(
                        "epoch {epoch} gave no full batch: the shards hold fewer than loader.batch_size = {} usable samples per rank; lower loader.batch_size or check the data",
                        cfg.loader.batch_size
                    )));
                }
                break;
            };
            let batch = batch?;
            batches_in_epoch += 1;
            wait += waited;
            window.2 += waited;
            let view_b = batch.view_b.as_ref().ok_or_else(|| {
                TrainerError::Config("the loader returned an evaluation batch in training mode".into())
            })?;
            // dist: all ranks stop at the same step when any got Ctrl-C
            if group.is_some() && crate::distributed::any_rank_stopping(group.as_deref(), req.stop.load(Ordering::SeqCst))? {
                interrupted = true;
                break 'outer;
            }
            let stats = match trainer.step(&batch.view_a, view_b, step) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("{e}; no checkpoint is written for this step (the last periodic one, if any, in {} is kept)", req.run_dir.display());
                    return Err(e);
                }
            };
            let n = batch.keys.len() as u64;
            step += 1;
            images += n;
            samples_in_epoch += n;
            window.1 += n;
            if step % cfg.train.log_every.max(1) == 0 || step == run_steps {
                let dt = window.0.elapsed().as_secs_f64();
                let ips = window.1 as f64 / dt.max(1e-9);
                let wait_frac = window.2.as_secs_f64() / dt.max(1e-9);
                let line = json!({
                    "step": step, "epoch": epoch, "lr": stats.lr, "ema_tau": stats.tau,
                    "loss": stats.losses.iter().map(|(w, l)| json!({"width": w, "loss": l})).collect::<Vec<_>>(),
                    "feature_std": stats.feature_std.iter().map(|(w, s)| json!({"width": w, "std": s})).collect::<Vec<_>>(),
                    "images_per_sec": ips, "data_wait_fraction": wait_frac,
                    "elapsed_sec": started.elapsed().as_secs_f64(),
                });
                if let Some(m) = metrics.as_mut() {
                    writeln!(m, "{line}").map_err(|e| TrainerError::io(&metrics_path, e))?;
                }
                let losses: Vec<String> = stats.losses.iter().map(|(w, l)| format!("{w}:{l:.3}")).collect();
                bar.set_message(format!("{ips:.0} img/s  wait {:.0}%  loss {}", wait_frac * 100.0, losses.join(" ")));
                window = (Instant::now(), 0, Duration::ZERO);
            }
            bar.set_position(step);
            if rank == 0 && cfg.train.checkpoint_every > 0 && step % cfg.train.checkpoint_every == 0 && step < run_steps {
                save(&trainer, &req.run_dir, step, epoch, samples_in_epoch, false)?;
            }
            if step >= run_steps {
                break 'outer;
            }
        }
        epoch += 1;
    }
    bar.finish_and_clear();
    if rank == 0 {
        save(&trainer, &req.run_dir, step, epoch, samples_in_epoch, !interrupted)?;
    }
    crate::distributed::finish(group)?; // dist: every rank waits for rank 0's checkpoint
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(loader = %loader.stats().summary(), "loader");
    Ok(TrainSummary {
        steps: step,
        images,
        seconds,
        images_per_sec: images as f64 / seconds.max(1e-9),
        data_wait_fraction: wait.as_secs_f64() / seconds.max(1e-9),
        interrupted,
        precision,
    })
}

fn save(
    trainer: &DspnetTrainer,
    dir: &Path,
    step: u64,
    epoch: u64,
    samples_in_epoch: u64,
    finished: bool,
) -> Result<(), TrainerError> {
    let mut tensors = checkpoint::prefixed(&trainer.online.vs, "online");
    tensors.extend(checkpoint::prefixed(&trainer.teacher.vs, "teacher"));
    tensors.extend(trainer.optimizer.state());
    checkpoint::save(
        dir,
        &tensors,
        CheckpointState {
            step,
            total_steps: trainer.total_steps,
            epoch,
            samples_in_epoch,
            finished,
            weights_sha256: String::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            precision: trainer.format.name().to_string(),
        },
    )
}
