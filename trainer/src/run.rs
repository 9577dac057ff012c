//! The training loop behind `dspnet-stream-train`: run directory, loader, DSPNet steps, progress,
//! metrics (JSON lines), checkpoints (every `train.checkpoint_every` steps, at every epoch end and
//! at the end), exact resume, non-finite losses, Ctrl-C.
//!
//! # Exact resume
//! A checkpoint holds everything the next step depends on: online and teacher weights with BN
//! running statistics, the optimiser's momentum buffers, the step (which fixes the learning rate
//! and EMA rate schedules), the sandwich rule's generator position, and the stream position
//! (epoch, the epoch's shard order, stream position and samples/batches consumed in the epoch).
//! The step draws nothing from libtorch's generator (no dropout; BN is deterministic), so seeding
//! it for the initial weights is all it needs. The loader's randomness is positional (see
//! `dspnet_pipeline::loader`), so `Loader::epoch_from` re-creates the rest of the epoch exactly.
//! With `train.threads` fixed (1 for bit-exactness on CPU), a run killed at any point and
//! resumed with `--resume RUN` ends with the same bytes as an uninterrupted run.
//!
//! # Equal steps per epoch on every rank
//! With a manifest beside the shards, every epoch stops after
//! `dspnet_pipeline::loader::steps_per_epoch` batches: the minimum over ranks of the batches the
//! shard split gives them, derived identically on every rank.

use crate::checkpoint::{self, Checkpoint, CheckpointState, CONFIG, METRICS};
use crate::config::RunConfig;
use crate::dspnet::DspnetTrainer;
use crate::error::TrainerError;
use dspnet_pipeline::loader::{Loader, LoaderMode, LoaderSettings};
use dspnet_pipeline::RemoteConfig;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// What the caller asks of one training run.
pub struct TrainRequest {
    pub config: RunConfig,
    /// Shard URLs (already brace-expanded). When resuming, empty means "the run's own shards"
    /// (recorded in its checkpoint); otherwise their file names must match the recorded ones.
    pub shards: Vec<String>,
    /// Run directory to create (or, with `resume`, to continue).
    pub run_dir: PathBuf,
    /// Stop after this many optimiser steps of the run (the schedules still use the planned
    /// length).
    pub max_steps: Option<u64>,
    pub device: Device,
    /// Replace an existing run directory's checkpoint.
    pub overwrite: bool,
    /// Continue the run in `run_dir` from its checkpoint (see the module docs). `config` must be
    /// the run's own (see [`RunConfig::for_resume`]).
    pub resume: bool,
    /// Set by a Ctrl-C handler: the current step finishes, then a checkpoint is saved.
    pub stop: Arc<AtomicBool>,
    /// Show an indicatif progress bar (on stderr).
    pub progress: bool,
}

/// Summary of a finished (or interrupted) run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Optimiser steps taken by this invocation (skipped non-finite steps included).
    pub steps: u64,
    /// Step the invocation started from (0, or the checkpoint's step when resuming).
    pub start_step: u64,
    /// Images trained on by this invocation.
    pub images: u64,
    pub seconds: f64,
    /// Images per second over the invocation (each image = two views).
    pub images_per_sec: f64,
    /// Fraction of wall time the trainer waited for the loader, in [0, 1].
    pub data_wait_fraction: f64,
    pub interrupted: bool,
    pub precision: String,
    /// Steps skipped because of a non-finite loss since the start of the run.
    pub skipped_nonfinite: u64,
}

/// Per-shard sample counts of the selected shards, from the `manifest.json` next to them
/// (written by `dspnet-shard`); `Ok(None)` when there is no manifest or it does not list every
/// selected shard. A remote manifest is fetched with `remote`'s retry budget
/// (`remote.max_retries`, `remote.max_retry_secs`); see [`dspnet_pipeline::source::manifest_beside`].
///
/// Errors: [`TrainerError::Pipeline`] when a remote store stays unreachable or refuses access
/// (a missing remote manifest is `Ok(None)`, as a missing local one is), or when a manifest
/// exists but is unreadable or malformed (the message names it and says to re-run
/// `dspnet-shard`).
pub fn manifest_shard_samples(shards: &[String], remote: &RemoteConfig) -> Result<Option<Vec<u64>>, TrainerError> {
    let Some(manifest) = dspnet_pipeline::source::manifest_beside(shards, remote)? else { return Ok(None) };
    Ok(shards
        .iter()
        .map(|s| {
            let name = Path::new(s).file_name()?.to_str()?;
            Some(manifest.shards.iter().find(|i| i.name == name)?.samples)
        })
        .collect())
}

/// Number of samples in the selected shards (sum of [`manifest_shard_samples`]); errors as there.
pub fn manifest_samples(shards: &[String], remote: &RemoteConfig) -> Result<Option<u64>, TrainerError> {
    Ok(manifest_shard_samples(shards, remote)?.map(|v| v.iter().sum()))
}

/// RANK and WORLD_SIZE from the environment (as torchrun sets them); 0 and 1 when unset.
///
/// Errors: values that are not integers, WORLD_SIZE = 0, RANK >= WORLD_SIZE.
pub fn rank_and_world() -> Result<(usize, usize), TrainerError> {
    let read = |name: &str, default: usize| -> Result<usize, TrainerError> {
        match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => v.trim().parse().map_err(|_| {
                TrainerError::Config(format!(
                    "environment variable {name}={v} is not a whole number; unset it or fix the launcher"
                ))
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

/// Checks that files can be created in `dir`: creates a probe file, writes and fsyncs it, removes
/// it. Errors: one line naming the folder and the OS reason (read-only, permission denied, ...).
pub fn check_writable(dir: &Path) -> Result<(), TrainerError> {
    let probe = dir.join(".write-test");
    let result = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"ok")?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&probe);
        TrainerError::Config(format!("run directory {} is not writable: {e}; choose a writable --out", dir.display()))
    })
}

/// Creates the run directory (refusing one that already holds a checkpoint unless `overwrite`)
/// and checks it is writable ([`check_writable`]) before any training starts.
pub fn prepare_run_dir(dir: &Path, overwrite: bool) -> Result<(), TrainerError> {
    if dir.join(checkpoint::STATE).exists() && !overwrite {
        return Err(TrainerError::Config(format!(
            "run directory {} already holds a checkpoint; pass --resume {0} to continue it, --overwrite to replace it, or choose another --out",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        TrainerError::Config(format!("cannot create run directory {}: {e}; choose a writable --out", dir.display()))
    })?;
    check_writable(dir)?;
    for stale in [checkpoint::STATE, checkpoint::WEIGHTS, checkpoint::NEXT_WEIGHTS, METRICS, "results.json"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    Ok(())
}

/// Bytes available to this user on the file system holding `dir` (statvfs: `f_bavail · f_frsize`).
pub fn free_bytes(dir: &Path) -> Result<u64, TrainerError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| TrainerError::io(dir, std::io::Error::from(e)))?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Bytes of tensor data in `tensors` (elements × element size).
pub fn tensor_bytes(tensors: &[(String, Tensor)]) -> u64 {
    tensors.iter().map(|(_, t)| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64).sum()
}

/// Free space a run needs for its checkpoints, in bytes: one checkpoint is estimated at
/// `tensor_bytes · 1.1` (safetensors header, metrics and JSON are far smaller), and while a new
/// checkpoint replaces the old one both exist; `existing` bytes of an existing checkpoint
/// (when resuming) already hold one of the two.
pub fn required_space(tensor_bytes: u64, existing: u64) -> u64 {
    let one = (tensor_bytes as f64 * 1.1).ceil() as u64;
    (2 * one).saturating_sub(existing.min(one))
}

/// Errors (one line, exit code 2) when `free` bytes are fewer than `need`.
pub fn check_space(dir: &Path, need: u64, free: u64) -> Result<(), TrainerError> {
    if free >= need {
        return Ok(());
    }
    let mb = |b: u64| b as f64 / 1e6;
    Err(TrainerError::Config(format!(
        "output location {} has {:.1} MB free but the checkpoints need about {:.1} MB (two copies of {:.1} MB while one replaces the other); free space or choose another --out",
        dir.display(),
        mb(free),
        mb(need),
        mb(need.div_ceil(2))
    )))
}

/// Where the run is in its data stream (saved in every checkpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StreamPos {
    epoch: u64,
    position: u64,
    samples: u64,
    batches: u64,
}

/// The tensors a checkpoint holds: `online.*`, `teacher.*` (both with BN running statistics)
/// and `optim.*` (momentum buffers).
pub fn checkpoint_tensors(trainer: &DspnetTrainer) -> Vec<(String, Tensor)> {
    let mut tensors = checkpoint::prefixed(&trainer.online.vs, "online");
    tensors.extend(checkpoint::prefixed(&trainer.teacher.vs, "teacher"));
    tensors.extend(trainer.optimizer.state());
    tensors
}

/// Restores weights, teacher, optimiser state and the sandwich rule's generator from `ckpt`.
///
/// Errors: a missing or mis-shaped tensor, a malformed generator position.
pub fn restore_trainer(trainer: &mut DspnetTrainer, ckpt: &Checkpoint) -> Result<(), TrainerError> {
    checkpoint::restore_vars(&trainer.online.vs, ckpt, "online")?;
    checkpoint::restore_vars(&trainer.teacher.vs, ckpt, "teacher")?;
    trainer
        .optimizer
        .load_state(&ckpt.tensors)
        .map_err(|e| TrainerError::Checkpoint(format!("{}: {e}", ckpt.path.display())))?;
    let pos: u128 = ckpt.state.sandwich_rng_word_pos.parse().map_err(|_| {
        TrainerError::Checkpoint(format!(
            "{}: sandwich_rng_word_pos {:?} is not a number; the checkpoint cannot be resumed exactly",
            ckpt.path.display(),
            ckpt.state.sandwich_rng_word_pos
        ))
    })?;
    trainer.set_sandwich_rng_word_pos(pos);
    Ok(())
}

/// Name of the first floating-point tensor holding a NaN or inf, if any.
fn first_nonfinite(tensors: &[(String, Tensor)]) -> Option<String> {
    tch::no_grad(|| {
        tensors
            .iter()
            .find(|(_, t)| t.is_floating_point() && t.isfinite().all().int64_value(&[]) == 0)
            .map(|(n, _)| n.clone())
    })
}

/// Copies of the BN running statistics (the non-trainable variables) of both branches, which a
/// forward pass in training mode updates: restored when a non-finite step is skipped.
fn bn_snapshot(trainer: &DspnetTrainer) -> Vec<(Tensor, Tensor)> {
    [&trainer.online.vs, &trainer.teacher.vs]
        .iter()
        .flat_map(|vs| vs.variables().into_values())
        .filter(|t| !t.requires_grad())
        .map(|t| {
            let copy = t.copy();
            (t, copy)
        })
        .collect()
}

fn bn_restore(snapshot: &[(Tensor, Tensor)]) {
    tch::no_grad(|| {
        for (var, saved) in snapshot {
            var.shallow_clone().copy_(saved);
        }
    });
}

/// Appends `value` and a newline to `out` (RUN/metrics.jsonl, opened with O_APPEND) in one
/// `write` call, so a reader following the file never sees half a record and a run killed
/// mid-step leaves whole lines (`writeln!` on a `File` issues one `write` per formatted piece).
///
/// # Errors
/// The writer's I/O error (a short write is retried by `write_all`).
fn append_jsonl<W: Write>(out: &mut W, value: &serde_json::Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    out.write_all(&line)
}

/// Keeps the lines of RUN/metrics.jsonl up to step `step` (a resumed run rewrites the lines of
/// the steps after its checkpoint). Written atomically.
fn truncate_metrics(run_dir: &Path, step: u64) -> Result<(), TrainerError> {
    let path = run_dir.join(METRICS);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    checkpoint::write_atomic(run_dir, METRICS, kept.as_bytes())
}

/// The shard list of a resumed run: the recorded one, or `requested` when its file names equal
/// the recorded ones (the shards moved).
fn resume_shards(state: &CheckpointState, requested: &[String], run_dir: &Path) -> Result<Vec<String>, TrainerError> {
    if requested.is_empty() {
        return Ok(state.shards.clone());
    }
    let names = |v: &[String]| -> Vec<String> {
        v.iter().map(|s| Path::new(s).file_name().map_or(s.clone(), |n| n.to_string_lossy().to_string())).collect()
    };
    if names(requested) != names(&state.shards) {
        return Err(TrainerError::Config(format!(
            "--shards selects {} shards that differ from the {} the run in {} was trained on; omit --shards to use the run's own",
            requested.len(),
            state.shards.len(),
            run_dir.display()
        )));
    }
    Ok(requested.to_vec())
}

/// Runs DSPNet pretraining as requested; see the module docs.
///
/// Errors (each one line): bad shards (pattern, unreadable, strict-data violations), an output
/// location that is unwritable or lacks the space for the checkpoints (found before the first
/// step), a checkpoint that cannot be resumed exactly, a non-finite loss (names width and step;
/// the last good checkpoint is kept) unless `train.skip_nonfinite_steps`, libtorch errors.
pub fn train(req: TrainRequest) -> Result<TrainSummary, TrainerError> {
    let cfg = &req.config;
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
    let (rank, world) = rank_and_world()?;
    // The output location first: a run that could not save must not start.
    let device = crate::distributed::device_for_rank(req.device)?; // dist: cuda -> cuda:LOCAL_RANK
    if world > 1 && cfg.train.skip_nonfinite_steps {
        return Err(TrainerError::Config(
            "train.skip_nonfinite_steps is not supported with WORLD_SIZE > 1 yet (ranks would have to agree on every skip); unset it".into(),
        ));
    }
    // dist: only rank 0 writes the run directory; every rank reads the checkpoint on resume
    let resumed = if req.resume {
        if rank == 0 {
            check_writable(&req.run_dir)?;
        }
        Some(checkpoint::load(&req.run_dir)?)
    } else {
        if rank == 0 {
            prepare_run_dir(&req.run_dir, req.overwrite)?;
        }
        None
    };
    let shards = match &resumed {
        Some(ck) => resume_shards(&ck.state, &req.shards, &req.run_dir)?,
        None => req.shards.clone(),
    };
    // local paths recorded absolute, so a resume from another working directory finds them
    let shards: Vec<String> = shards
        .into_iter()
        .map(|s| match dspnet_pipeline::source::url_scheme(&s) {
            None => std::path::absolute(&s).map_or(s, |p| p.to_string_lossy().to_string()),
            Some(_) => s,
        })
        .collect();
    let shard_samples = manifest_shard_samples(&shards, &cfg.remote)?;
    let settings =
        LoaderSettings { loader: cfg.loader.clone(), augment: cfg.augment.clone(), remote: cfg.remote.clone() };
    let loader = Loader::new(shards.clone(), settings, LoaderMode::Train, rank, world, device)?;
    let no_full_batch = |epoch: u64| {
        TrainerError::Config(format!(
            "epoch {epoch} gave no full batch: the shards hold fewer than loader.batch_size = {} usable samples per rank; lower loader.batch_size or check the data",
            cfg.loader.batch_size
        ))
    };
    let batch = cfg.loader.batch_size;
    let steps_per_epoch = match (&shard_samples, &resumed) {
        (Some(counts), _) => match loader.steps_per_epoch(0, counts) {
            0 => return Err(no_full_batch(0)),
            n => n,
        },
        (None, Some(ck)) => ck.state.steps_per_epoch.max(1),
        (None, None) => req.max_steps.ok_or_else(|| {
            TrainerError::Config(
                "no manifest.json beside the shards, so the epoch length is unknown; pass --max-steps N".into(),
            )
        })?,
    };
    let total_steps = ((cfg.train.epochs * steps_per_epoch as f64).round() as u64).max(1);
    let mut trainer = DspnetTrainer::new(cfg, device, total_steps, steps_per_epoch, batch * world)?;
    // dist: join the process group (WORLD_SIZE > 1): weights broadcast from rank 0, gradients
    // averaged in DspnetTrainer::step, optional SyncBN
    let group = crate::distributed::join(&mut trainer, cfg)?;
    let precision = trainer.format.name().to_string();

    // Space for the checkpoints, before the first step.
    let existing = if resumed.is_some() {
        std::fs::metadata(req.run_dir.join(checkpoint::WEIGHTS)).map_or(0, |m| m.len())
    } else {
        0
    };
    let need = required_space(tensor_bytes(&checkpoint_tensors(&trainer)), existing);
    if rank == 0 {
        check_space(&req.run_dir, need, free_bytes(&req.run_dir)?)?;
    }

    let mut pos = StreamPos::default();
    let mut step: u64 = 0;
    let mut run_images: u64 = 0;
    let mut skipped: u64 = 0;
    let mut last_saved: Option<u64> = None;
    let mut last_lr_tau = (0.0, 0.0);
    if let Some(ck) = &resumed {
        let st = &ck.state;
        let state_path = req.run_dir.join(checkpoint::STATE);
        let refuse =
            |what: String| TrainerError::Checkpoint(format!("cannot resume {}: {what}", req.run_dir.display()));
        let Some(position) = st.position_in_epoch else {
            return Err(refuse(format!(
                "{} was written by a dspnet without exact resume (no stream position); start a new run",
                state_path.display()
            )));
        };
        if st.world_size != world {
            return Err(refuse(format!("it was trained with WORLD_SIZE={} and this process has {world}; resume with the same number of processes", st.world_size)));
        }
        if st.total_steps != total_steps || st.steps_per_epoch != steps_per_epoch {
            return Err(refuse(format!(
                "it planned {} steps of {} per epoch, the shards and config now give {total_steps} of {steps_per_epoch}; the shards or their manifest changed",
                st.total_steps, st.steps_per_epoch
            )));
        }
        if loader.shard_order(st.epoch) != st.shard_order {
            return Err(refuse(format!(
                "the shard order of epoch {} differs from the recorded one; the shard list or loader seed changed",
                st.epoch
            )));
        }
        if st.step >= total_steps {
            return Err(refuse(format!(
                "it already finished all {total_steps} planned steps; evaluate it with dspnet-eval"
            )));
        }
        if req.max_steps.is_some_and(|m| m <= st.step) {
            return Err(refuse(format!(
                "its checkpoint is at step {} already; pass a --max-steps above it or none",
                st.step
            )));
        }
        restore_trainer(&mut trainer, ck)?;
        if st.step > 0 && (trainer.lr_at(st.step - 1) != st.lr || trainer.ema_rate_at(st.step - 1) != st.ema_tau) {
            return Err(refuse("the learning-rate or EMA schedule differs from the recorded one".into()));
        }
        pos = StreamPos { epoch: st.epoch, position, samples: st.samples_in_epoch, batches: st.batches_in_epoch };
        step = st.step;
        run_images = st.images;
        skipped = st.skipped_nonfinite;
        last_saved = Some(st.step);
        last_lr_tau = (st.lr, st.ema_tau);
        if rank == 0 {
            truncate_metrics(&req.run_dir, step)?;
        }
        tracing::info!(step, epoch = pos.epoch, position, samples_in_epoch = pos.samples, "resuming");
    } else if rank == 0 {
        checkpoint::write_atomic(&req.run_dir, CONFIG, cfg.to_toml().as_bytes())?;
    }
    let start_step = step;
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
    bar.set_position(step);

    let ctx = SaveCtx { dir: &req.run_dir, shards: &shards, world, steps_per_epoch, loader: &loader };
    let started = Instant::now();
    let mut wait = Duration::ZERO;
    let mut images: u64 = 0;
    let mut interrupted = false;
    let mut window = (Instant::now(), 0u64, Duration::ZERO);
    'outer: while step < run_steps {
        let cap = shard_samples.as_ref().map(|c| loader.steps_per_epoch(pos.epoch, c));
        if cap == Some(0) {
            return Err(no_full_batch(pos.epoch));
        }
        if cap.is_none_or(|c| pos.batches < c) {
            let mut iter = loader.epoch_from(pos.epoch, pos.position)?;
            loop {
                if group.is_none() && req.stop.load(Ordering::SeqCst) {
                    interrupted = true;
                    break 'outer;
                }
                let t0 = Instant::now();
                let next = iter.next();
                let waited = t0.elapsed();
                let Some(batch) = next else {
                    if pos.batches == 0 {
                        return Err(no_full_batch(pos.epoch));
                    }
                    break;
                };
                let batch = batch?;
                wait += waited;
                window.2 += waited;
                let view_b = batch.view_b.as_ref().ok_or_else(|| {
                    TrainerError::Config("the loader returned an evaluation batch in training mode".into())
                })?;
                // dist: all ranks stop at the same step when any got Ctrl-C
                if group.is_some()
                    && crate::distributed::any_rank_stopping(group.as_deref(), req.stop.load(Ordering::SeqCst))?
                {
                    interrupted = true;
                    break 'outer;
                }
                let snapshot = cfg.train.skip_nonfinite_steps.then(|| bn_snapshot(&trainer));
                let outcome = trainer.step(&batch.view_a, view_b, step);
                let n = batch.keys.len() as u64;
                pos.position = batch.end_position;
                pos.samples += n;
                pos.batches += 1;
                step += 1;
                images += n;
                run_images += n;
                window.1 += n;
                match outcome {
                    Ok(stats) => {
                        last_lr_tau = (stats.lr, stats.tau);
                        if step % cfg.train.log_every.max(1) == 0 || step == run_steps {
                            let dt = window.0.elapsed().as_secs_f64();
                            let ips = window.1 as f64 / dt.max(1e-9);
                            let wait_frac = window.2.as_secs_f64() / dt.max(1e-9);
                            let line = json!({
                                "step": step, "epoch": pos.epoch, "lr": stats.lr, "ema_tau": stats.tau,
                                "loss": stats.losses.iter().map(|(w, l)| json!({"width": w, "loss": l})).collect::<Vec<_>>(),
                                "feature_std": stats.feature_std.iter().map(|(w, s)| json!({"width": w, "std": s})).collect::<Vec<_>>(),
                                "images_per_sec": ips, "data_wait_fraction": wait_frac,
                                "skipped_nonfinite": skipped,
                                "elapsed_sec": started.elapsed().as_secs_f64(),
                            });
                            if let Some(m) = metrics.as_mut() {
                                append_jsonl(m, &line).map_err(|e| TrainerError::io(&metrics_path, e))?;
                            }
                            if req.progress {
                                let losses: Vec<String> =
                                    stats.losses.iter().map(|(w, l)| format!("{w}:{l:.3}")).collect();
                                bar.set_message(format!(
                                    "{ips:.0} img/s  wait {:.0}%  loss {}",
                                    wait_frac * 100.0,
                                    losses.join(" ")
                                ));
                            }
                            window = (Instant::now(), 0, Duration::ZERO);
                        }
                    }
                    Err(TrainerError::NonFinite(msg)) => {
                        let Some(snapshot) = snapshot else {
                            let kept = match last_saved {
                                Some(s) => {
                                    format!("the last good checkpoint (step {s}) in {} is kept", req.run_dir.display())
                                }
                                None => "no checkpoint had been saved yet".to_string(),
                            };
                            return Err(TrainerError::NonFinite(format!(
                                "{msg}; training stopped, {kept}; --set train.skip_nonfinite_steps=true skips such steps"
                            )));
                        };
                        // skipped: no update, no EMA (the step returned before both), and the BN
                        // running statistics the forward passes touched are put back
                        bn_restore(&snapshot);
                        if let Some(name) = first_nonfinite(&checkpoint::prefixed(&trainer.online.vs, "online")) {
                            return Err(TrainerError::NonFinite(format!(
                                "{msg}, and the weights themselves are non-finite ({name}), so skipping cannot help; lower optim.lr and resume from the last checkpoint or start again"
                            )));
                        }
                        skipped += 1;
                        tracing::warn!(skipped_total = skipped, "skipping the step: {msg}");
                        let line =
                            json!({"step": step, "epoch": pos.epoch, "skipped_nonfinite": skipped, "skip_reason": msg});
                        if let Some(m) = metrics.as_mut() {
                            append_jsonl(m, &line).map_err(|e| TrainerError::io(&metrics_path, e))?;
                        }
                    }
                    Err(e) => return Err(e),
                }
                bar.set_position(step);
                let epoch_done = cap.is_some_and(|c| pos.batches >= c);
                if step >= run_steps {
                    break 'outer;
                }
                if epoch_done {
                    break;
                }
                if cfg.train.checkpoint_every > 0 && step % cfg.train.checkpoint_every == 0 {
                    if rank == 0 {
                        save(&ctx, &trainer, step, pos, last_lr_tau, skipped, run_images, false, last_saved)?;
                    }
                    last_saved = Some(step);
                }
            }
        }
        // end of the epoch: the next one starts at its first position
        pos = StreamPos { epoch: pos.epoch + 1, ..StreamPos::default() };
        if last_saved != Some(step) {
            if rank == 0 {
                save(&ctx, &trainer, step, pos, last_lr_tau, skipped, run_images, false, last_saved)?;
            }
            last_saved = Some(step);
        }
    }
    bar.finish_and_clear();
    if rank == 0 {
        save(&ctx, &trainer, step, pos, last_lr_tau, skipped, run_images, !interrupted, last_saved)?;
    }
    crate::distributed::finish(group)?; // dist: every rank waits for rank 0's checkpoint
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(loader = %loader.stats().summary(), "loader");
    Ok(TrainSummary {
        steps: step - start_step,
        start_step,
        images,
        seconds,
        images_per_sec: images as f64 / seconds.max(1e-9),
        data_wait_fraction: wait.as_secs_f64() / seconds.max(1e-9),
        interrupted,
        precision,
        skipped_nonfinite: skipped,
    })
}

/// What every checkpoint of a run shares.
struct SaveCtx<'a> {
    dir: &'a Path,
    shards: &'a [String],
    world: usize,
    steps_per_epoch: u64,
    loader: &'a Loader,
}

/// Saves a checkpoint after `step` steps; refuses (keeping the last good checkpoint, saved after
/// step `last_saved`) when a tensor is non-finite.
#[allow(clippy::too_many_arguments)]
fn save(
    ctx: &SaveCtx,
    trainer: &DspnetTrainer,
    step: u64,
    pos: StreamPos,
    (lr, ema_tau): (f64, f64),
    skipped_nonfinite: u64,
    images: u64,
    finished: bool,
    last_saved: Option<u64>,
) -> Result<(), TrainerError> {
    let tensors = checkpoint_tensors(trainer);
    if let Some(name) = first_nonfinite(&tensors) {
        let kept = match last_saved {
            Some(s) => format!("the last good checkpoint (step {s}) in {} is kept", ctx.dir.display()),
            None => "no checkpoint had been saved yet".to_string(),
        };
        return Err(TrainerError::NonFinite(format!(
            "{name} is non-finite after step {step} although every loss was finite (weights or BN statistics overflowed); training stopped without saving it, {kept}; lower optim.lr or optim.weight_decay"
        )));
    }
    checkpoint::save(
        ctx.dir,
        &tensors,
        CheckpointState {
            step,
            total_steps: trainer.total_steps,
            epoch: pos.epoch,
            samples_in_epoch: pos.samples,
            finished,
            position_in_epoch: Some(pos.position),
            batches_in_epoch: pos.batches,
            shard_order: ctx.loader.shard_order(pos.epoch),
            shards: ctx.shards.to_vec(),
            world_size: ctx.world,
            steps_per_epoch: ctx.steps_per_epoch,
            lr,
            ema_tau,
            sandwich_rng_word_pos: trainer.sandwich_rng_word_pos().to_string(),
            skipped_nonfinite,
            images,
            ..CheckpointState::basic(step, trainer.total_steps, trainer.format.name())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn local_manifest_counts_and_a_malformed_one_is_an_error_not_none() {
        use dspnet_pipeline::shard::{Manifest, ShardInfo, MANIFEST_NAME};
        let dir = tempfile::tempdir().unwrap();
        let shard = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let shards = vec![shard("t-000001.tar"), shard("t-000000.tar")];
        let remote = RemoteConfig::default();
        // no manifest: unknown, not an error
        assert_eq!(manifest_shard_samples(&shards, &remote).unwrap(), None);
        let info = |name: &str, samples| ShardInfo { name: name.into(), samples, bytes: 1, sha256: String::new() };
        let m = Manifest {
            format_version: 1,
            prefix: "t".into(),
            compression: "none".into(),
            class_names: vec![],
            total_samples: 7,
            shards: vec![info("t-000000.tar", 3), info("t-000001.tar", 4)],
        };
        std::fs::write(dir.path().join(MANIFEST_NAME), serde_json::to_vec(&m).unwrap()).unwrap();
        // in the order of the selected shards
        assert_eq!(manifest_shard_samples(&shards, &remote).unwrap(), Some(vec![4, 3]));
        assert_eq!(manifest_samples(&shards[..1], &remote).unwrap(), Some(4));
        // a shard the manifest does not list: unknown
        assert_eq!(manifest_samples(&[shard("t-000002.tar")], &remote).unwrap(), None);
        // a truncated manifest is an error naming the file, not silently "no manifest"
        std::fs::write(dir.path().join(MANIFEST_NAME), b"{\"format_version\": 1, \"pre").unwrap();
        let e = manifest_samples(&shards, &remote).unwrap_err().to_string();
        assert!(e.contains(MANIFEST_NAME) && e.contains("re-run dspnet-shard") && !e.contains('\n'), "{e}");
    }

    fn tiny() -> RunConfig {
        let text = include_str!("../../configs/cpu-fashion-mnist.toml");
        let mut cfg = RunConfig::from_toml_str(text, "preset").unwrap();
        cfg.model.base_channels = 4;
        cfg.model.widths = vec![0.25, 0.5, 0.75, 1.0];
        cfg.method.random_widths = Some(1); // the sandwich rule draws: its generator matters
        cfg.heads.hidden = 16;
        cfg.heads.out_dim = 8;
        cfg.train.precision = "fp32".into();
        cfg.optim.warmup_epochs = 0.0;
        cfg
    }

    /// Two `[4, 1, 16, 16]` views from a ChaCha generator (not libtorch's global one, which
    /// tests running in parallel share).
    fn views(seed: u64) -> (Tensor, Tensor) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut v = || {
            let data: Vec<f32> = (0..4 * 16 * 16).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            Tensor::from_slice(&data).view([4, 1, 16, 16])
        };
        (v(), v())
    }

    fn bytes(t: &Tensor) -> Vec<u8> {
        let t = t.contiguous();
        let mut v = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut v, t.numel());
        v
    }

    #[test]
    fn trainer_state_round_trip_continues_bit_identically() {
        tch::set_num_threads(1);
        let cfg = tiny();
        // A: 5 steps in one go. B: 2 steps, checkpoint, a fresh trainer restored from it, 3 more.
        // B starts from A's initial weights, restored from a checkpoint (libtorch's generator is
        // shared with tests running in parallel, so two inits need not agree).
        let mut a = DspnetTrainer::new(&cfg, Device::Cpu, 10, 5, 4).unwrap();
        let init = tempfile::tempdir().unwrap();
        let state0 = CheckpointState { sandwich_rng_word_pos: "0".into(), ..CheckpointState::basic(0, 10, "fp32") };
        checkpoint::save(init.path(), &checkpoint_tensors(&a), state0).unwrap();
        let mut widths_a = Vec::new();
        for s in 0..5 {
            let (x, y) = views(100 + s);
            widths_a.push(a.step(&x, &y, s).unwrap().losses);
        }
        let mut b = DspnetTrainer::new(&cfg, Device::Cpu, 10, 5, 4).unwrap();
        restore_trainer(&mut b, &checkpoint::load(init.path()).unwrap()).unwrap();
        for s in 0..2 {
            let (x, y) = views(100 + s);
            b.step(&x, &y, s).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let state = CheckpointState {
            sandwich_rng_word_pos: b.sandwich_rng_word_pos().to_string(),
            ..CheckpointState::basic(2, 10, "fp32")
        };
        checkpoint::save(dir.path(), &checkpoint_tensors(&b), state).unwrap();
        drop(b);
        let mut c = DspnetTrainer::new(&cfg, Device::Cpu, 10, 5, 4).unwrap();
        // the fresh trainer differs (its momentum buffers are zero) until restored
        let ck = checkpoint::load(dir.path()).unwrap();
        restore_trainer(&mut c, &ck).unwrap();
        for s in 2..5 {
            let (x, y) = views(100 + s);
            let losses = c.step(&x, &y, s).unwrap().losses;
            // same widths drawn by the sandwich rule, same losses to the bit
            assert_eq!(losses, widths_a[s as usize], "step {s}");
        }
        let (ta, tc) = (checkpoint_tensors(&a), checkpoint_tensors(&c));
        assert_eq!(ta.len(), tc.len());
        assert!(ta.iter().any(|(n, _)| n.starts_with("optim.")) && ta.iter().any(|(n, _)| n.contains("running_var")));
        for ((na, xa), (nc, xc)) in ta.iter().zip(&tc) {
            assert_eq!(na, nc);
            assert_eq!(bytes(xa), bytes(xc), "{na}");
        }
        // the generator position is real state: a trainer restored without it would draw the
        // widths of steps 0, 1, 2 again instead of those of steps 2, 3, 4
        let drawn: Vec<Vec<f64>> = widths_a.iter().map(|l| l.iter().map(|(w, _)| *w).collect()).collect();
        assert!(drawn.iter().all(|ws| ws.len() == 3), "{drawn:?}");
        assert_ne!(drawn[2..5], drawn[0..3], "{drawn:?}");
    }

    #[test]
    fn narrow_warmup_resumes_with_the_widths_of_an_uninterrupted_run() {
        tch::set_num_threads(1);
        let mut cfg = tiny();
        // 5 steps per epoch: round(0.6 · 5) = 3 warm-up steps (0, 1, 2) of the largest width only
        cfg.method.narrow_warmup_epochs = 0.6;
        cfg.validate().unwrap();
        let mut a = DspnetTrainer::new(&cfg, Device::Cpu, 10, 5, 4).unwrap();
        let init = tempfile::tempdir().unwrap();
        let state0 = CheckpointState { sandwich_rng_word_pos: "0".into(), ..CheckpointState::basic(0, 10, "fp32") };
        checkpoint::save(init.path(), &checkpoint_tensors(&a), state0).unwrap();
        let mut uninterrupted = Vec::new();
        for s in 0..7 {
            let (x, y) = views(200 + s);
            uninterrupted.push(a.step(&x, &y, s).unwrap().losses);
        }
        let drawn: Vec<Vec<f64>> = uninterrupted.iter().map(|l| l.iter().map(|(w, _)| *w).collect()).collect();
        assert!(drawn[..3].iter().all(|ws| ws == &vec![1.0]), "{drawn:?}");
        assert!(drawn[3..].iter().all(|ws| ws.len() == 3 && ws[0] == 1.0 && ws[2] == 0.25), "{drawn:?}");
        // the sandwich draws after the warm-up are the generator's first ones: the same widths as
        // a run without warm-up draws from step 0 on
        let mut plain_cfg = tiny();
        plain_cfg.method.narrow_warmup_epochs = 0.0;
        let mut plain = DspnetTrainer::new(&plain_cfg, Device::Cpu, 10, 5, 4).unwrap();
        for s in 0..4 {
            let (x, y) = views(200 + s);
            let ws: Vec<f64> = plain.step(&x, &y, s).unwrap().losses.iter().map(|(w, _)| *w).collect();
            assert_eq!(ws, drawn[3 + s as usize], "draw {s}");
        }
        // interrupted inside the warm-up (after 2 steps) and after it (after 5 steps)
        for split in [2u64, 5] {
            let mut b = DspnetTrainer::new(&cfg, Device::Cpu, 10, 5, 4).unwrap();
            restore_trainer(&mut b, &checkpoint::load(init.path()).unwrap()).unwrap();
            for s in 0..split {
                let (x, y) = views(200 + s);
                b.step(&x, &y, s).unwrap();
            }
            let dir = tempfile::tempdir().unwrap();
            let state = CheckpointState {
                sandwich_rng_word_pos: b.sandwich_rng_word_pos().to_string(),
                ..CheckpointState::basic(split, 10, "fp32")
            };
            checkpoint::save(dir.path(), &checkpoint_tensors(&b), state).unwrap();
            drop(b);
            let mut c = DspnetTrainer::new(&cfg, Device::Cpu, 10, 5, 4).unwrap();
            restore_trainer(&mut c, &checkpoint::load(dir.path()).unwrap()).unwrap();
            for s in split..7 {
                let (x, y) = views(200 + s);
                assert_eq!(c.step(&x, &y, s).unwrap().losses, uninterrupted[s as usize], "split {split}, step {s}");
            }
        }
    }

    #[test]
    fn space_estimate_by_hand_and_injected_free_space() {
        // 1000 f32 + 10 i64: 4080 bytes; one checkpoint ≈ 4488; two while replacing: 8976
        let ts = vec![
            ("a".to_string(), Tensor::zeros([1000], (Kind::Float, Device::Cpu))),
            ("b".to_string(), Tensor::zeros([10], (Kind::Int64, Device::Cpu))),
        ];
        assert_eq!(tensor_bytes(&ts), 4080);
        assert_eq!(required_space(4080, 0), 8976);
        // resuming: the existing checkpoint is one of the two copies
        assert_eq!(required_space(4080, 4500), 4488);
        let dir = Path::new("/some/run");
        assert!(check_space(dir, 8976, 8976).is_ok());
        let e = check_space(dir, 8976, 8975).unwrap_err().to_string();
        assert!(e.contains("/some/run") && e.contains("MB free") && !e.contains('\n'), "{e}");
        // a full disk (an injected figure of 0 bytes) is refused with the same line
        assert!(check_space(dir, 1, 0).is_err());
        // the real statvfs of a real folder: positive, and no more than the file system's size
        let tmp = tempfile::tempdir().unwrap();
        let free = free_bytes(tmp.path()).unwrap();
        let st = nix::sys::statvfs::statvfs(tmp.path()).unwrap();
        assert!(free > 0 && free <= st.blocks() as u64 * st.fragment_size() as u64, "{free}");
        assert!(check_space(tmp.path(), 1 << 20, free).is_ok());
    }

    #[test]
    fn unwritable_locations_are_found_by_the_probe() {
        let tmp = tempfile::tempdir().unwrap();
        // a path under a regular file
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let e = prepare_run_dir(&file.join("run"), false).unwrap_err().to_string();
        assert!(e.contains("cannot create run directory") && e.contains("plain-file"), "{e}");
        // a writable folder passes and keeps no probe behind
        let ok = tmp.path().join("run");
        prepare_run_dir(&ok, false).unwrap();
        assert_eq!(std::fs::read_dir(&ok).unwrap().count(), 0);
    }

    #[test]
    fn a_metrics_record_is_one_write_call() {
        /// Records every `write` call it receives.
        struct Calls(Vec<Vec<u8>>);
        impl Write for Calls {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let v = serde_json::json!({"step": 5, "loss": [{"width": 0.25, "loss": 0.5}], "note": "a \"quoted\" string"});
        let mut w = Calls(Vec::new());
        append_jsonl(&mut w, &v).unwrap();
        assert_eq!(w.0.len(), 1, "{:?}", w.0);
        assert_eq!(
            String::from_utf8(w.0[0].clone()).unwrap(),
            "{\"loss\":[{\"loss\":0.5,\"width\":0.25}],\"note\":\"a \\\"quoted\\\" string\",\"step\":5}\n"
        );
    }

    #[test]
    fn metrics_are_cut_back_to_the_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(METRICS), "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4}\n").unwrap();
        truncate_metrics(tmp.path(), 2).unwrap();
        assert_eq!(std::fs::read_to_string(tmp.path().join(METRICS)).unwrap(), "{\"step\":1}\n{\"step\":2}\n");
    }
}
