//! A training session behind `dspnet-stream-train`: the run directory, the shards and their
//! manifest, the loader, the epoch plan, the trainer (momentum base + method, data parallel),
//! then the training loop ([`crate::fit`]) with its hooks, and the summary.

use crate::error::{Result, TrainerError};
use crate::fit::checkpointing::Checkpointer;
use crate::fit::curves::Curves;
use crate::fit::logging::{MetricsLogger, MetricsSink};
use crate::fit::monitor::KnnMonitor;
use crate::fit::nonfinite::NonFiniteGuard;
use crate::fit::resume::Resume;
use crate::fit::stop::StopOnSignal;
use crate::fit::{EpochPlan, Hook, TrainLoop, Trainer};
use crate::momentum::RunLength;
use dspnet_core::cli::StopSignal;
use dspnet_pipeline::loader::{Loader, LoaderMode, LoaderSettings};
use dspnet_pipeline::shard::ShardInfo;
use dspnet_pipeline::RemoteConfig;
use dspnet_run::checkpoint::{self, CheckpointState};
use dspnet_run::layout::{self, RunDir, CONFIG, WEIGHTS};
use dspnet_run::RunConfig;
use std::path::{Path, PathBuf};
use tch::Device;

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
    /// Continue the run in `run_dir` from its checkpoint (see [`crate::fit`]). `config` must be
    /// the run's own (see [`RunConfig::for_resume`]).
    pub resume: bool,
    /// Set by SIGINT/SIGTERM (or a parent): the current step finishes, then a checkpoint is
    /// saved and the run returns with `interrupted`.
    pub stop: StopSignal,
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
    /// The signal that stopped an interrupted run (its own, or another rank's), if any.
    pub stopped_by: Option<i32>,
    pub precision: String,
    /// Steps skipped because of a non-finite loss since the start of the run.
    pub skipped_nonfinite: u64,
}

/// The `manifest.json` entries (name, samples, bytes, sha256) of the selected shards, in their
/// order, from the manifest beside them (written by `dspnet-shard`); `Ok(None)` when there is no
/// manifest or it does not list every selected shard. A remote manifest is fetched with
/// `remote`'s retry budget (`remote.max_retries`, `remote.max_retry_secs`); see
/// [`dspnet_pipeline::source::manifest_beside`].
///
/// Errors: [`TrainerError::Pipeline`] when a remote store stays unreachable or refuses access
/// (a missing remote manifest is `Ok(None)`, as a missing local one is), or when a manifest
/// exists but is unreadable or malformed (the message names it and says to re-run
/// `dspnet-shard`).
pub fn manifest_entries(shards: &[String], remote: &RemoteConfig) -> Result<Option<Vec<ShardInfo>>> {
    let Some(manifest) = dspnet_pipeline::source::manifest_beside(shards, remote)? else { return Ok(None) };
    Ok(shards
        .iter()
        .map(|s| {
            let name = Path::new(s).file_name()?.to_str()?;
            manifest.shards.iter().find(|i| i.name == name).cloned()
        })
        .collect())
}

/// Per-shard sample counts of the selected shards ([`manifest_entries`]); errors as there.
pub fn manifest_shard_samples(shards: &[String], remote: &RemoteConfig) -> Result<Option<Vec<u64>>> {
    Ok(manifest_entries(shards, remote)?.map(|v| v.iter().map(|i| i.samples).collect()))
}

/// Number of samples in the selected shards (sum of [`manifest_shard_samples`]); errors as there.
pub fn manifest_samples(shards: &[String], remote: &RemoteConfig) -> Result<Option<u64>> {
    Ok(manifest_shard_samples(shards, remote)?.map(|v| v.iter().sum()))
}

/// Checks that the shards a run resumes on hold what it was trained on: the sha256 recorded
/// in its checkpoint against the one their manifest gives now (shard for shard). Nothing to
/// check when the run recorded none.
///
/// Errors: [`TrainerError::Resume`] naming the first shard whose content changed, or saying
/// that the manifest to check them against is gone.
fn check_shard_content(state: &CheckpointState, now: Option<&[ShardInfo]>, run_dir: &Path) -> Result<()> {
    if state.shard_sha256.is_empty() {
        return Ok(());
    }
    let refuse = |message: String| TrainerError::Resume { run: run_dir.to_path_buf(), message };
    let Some(now) = now else {
        return Err(refuse(
            "the shards have no manifest.json to check them against the ones the run was trained on; restore it (dspnet-shard writes it) or pass --shards where the run's shards are".into(),
        ));
    };
    for ((recorded, info), path) in state.shard_sha256.iter().zip(now).zip(&state.shards) {
        if *recorded != info.sha256 {
            return Err(refuse(format!(
                "shard {} differs from the one the run was trained on (sha256 {} recorded, {} in the manifest now): the shards were re-made; resume with the run's own shards ({path}) or start a new run",
                info.name,
                &recorded[..recorded.len().min(12)],
                &info.sha256[..info.sha256.len().min(12)],
            )));
        }
    }
    Ok(())
}

/// RANK and WORLD_SIZE from the environment (as torchrun sets them); 0 and 1 when unset.
///
/// Errors: values that are not integers, WORLD_SIZE = 0, RANK >= WORLD_SIZE.
pub fn rank_and_world() -> Result<(usize, usize)> {
    let read = |name: &str, default: usize| -> Result<usize> {
        match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => v.trim().parse().map_err(|_| TrainerError::Env {
                name: name.to_string(),
                message: format!("environment variable {name}={v} is not a whole number; unset it or fix the launcher"),
            }),
        }
    };
    let (rank, world) = (read("RANK", 0)?, read("WORLD_SIZE", 1)?);
    if world == 0 || rank >= world {
        return Err(TrainerError::Env {
            name: "WORLD_SIZE".into(),
            message: format!(
                "RANK={rank} WORLD_SIZE={world}: need WORLD_SIZE >= 1 and RANK < WORLD_SIZE; unset them for one process"
            ),
        });
    }
    Ok((rank, world))
}

/// The shard list of a resumed run: the recorded one, or `requested` when its file names equal
/// the recorded ones (the shards moved).
fn resume_shards(state: &CheckpointState, requested: &[String], run_dir: &Path) -> Result<Vec<String>> {
    if requested.is_empty() {
        let missing =
            state.shards.iter().find(|s| dspnet_pipeline::source::url_scheme(s).is_none() && !Path::new(s).exists());
        if let Some(m) = missing {
            return Err(TrainerError::option(
                "--shards",
                format!(
                    "the shards of the run in {} are not where it read them any more ({m} is missing); pass --shards NEW_LOCATION (the folder or pattern where they are now)",
                    run_dir.display()
                ),
            ));
        }
        return Ok(state.shards.clone());
    }
    let names = |v: &[String]| -> Vec<String> {
        v.iter().map(|s| Path::new(s).file_name().map_or(s.clone(), |n| n.to_string_lossy().to_string())).collect()
    };
    if names(requested) != names(&state.shards) {
        return Err(TrainerError::option(
            "--shards",
            format!(
                "--shards selects {} shards that differ from the {} the run in {} was trained on; omit --shards to use the run's own",
                requested.len(),
                state.shards.len(),
                run_dir.display()
            ),
        ));
    }
    Ok(requested.to_vec())
}

/// The kNN monitor `[monitor]` asks for (rank 0 only), its loaders over its shards.
///
/// Errors: shard patterns that match nothing, a malformed manifest, loader errors.
fn knn_monitor(cfg: &RunConfig, device: Device, rank: usize, sink: MetricsSink) -> Result<Option<KnnMonitor>> {
    let m = &cfg.runtime.monitor;
    if !m.enabled() || rank != 0 {
        return Ok(None);
    }
    let bank = dspnet_pipeline::source::expand_pattern(&m.train_shards)?;
    let test = dspnet_pipeline::source::expand_pattern(&m.test_shards)?;
    Ok(Some(KnnMonitor {
        cfg: m.clone(),
        k: cfg.runtime.eval.knn_k,
        t: cfg.runtime.eval.knn_t,
        bank: dspnet_eval::evaluate::eval_loader(cfg, &bank, "monitor.train_shards", device)?,
        test: dspnet_eval::evaluate::eval_loader(cfg, &test, "monitor.test_shards", device)?,
        sink,
        last: None,
    }))
}

/// Runs pretraining as requested; see [`crate::fit`] for exact resume and the per-epoch cap.
///
/// Errors (each one line): bad shards (pattern, unreadable, strict-data violations), an output
/// location that is unwritable or lacks the space for the checkpoints (found before the first
/// step), a checkpoint that cannot be resumed exactly, a non-finite loss (names width and step;
/// the last good checkpoint is kept) unless `train.skip_nonfinite_steps`, libtorch errors.
pub fn train(req: TrainRequest) -> Result<TrainSummary> {
    let cfg = &req.config;
    if cfg.runtime.train.threads > 0 {
        tch::set_num_threads(cfg.runtime.train.threads as i32);
    }
    let (rank, world) = rank_and_world()?;
    // The output location first: a run that could not save must not start.
    let device = crate::data_parallel::device_for_rank(req.device)?; // dist: cuda -> cuda:LOCAL_RANK
    if world > 1 && cfg.train.skip_nonfinite_steps {
        return Err(TrainerError::option(
            "train.skip_nonfinite_steps",
            "train.skip_nonfinite_steps is not supported with WORLD_SIZE > 1 yet (ranks would have to agree on every skip); unset it",
        ));
    }
    let run = RunDir::new(&req.run_dir);
    // dist: only rank 0 writes the run directory; every rank reads the checkpoint on resume
    let resumed = if req.resume {
        if rank == 0 {
            layout::check_writable(run.path())?;
        }
        Some(checkpoint::load(run.path())?)
    } else {
        if rank == 0 {
            run.prepare_new(req.overwrite)?;
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
    let entries = manifest_entries(&shards, &cfg.runtime.remote)?;
    if let Some(ck) = &resumed {
        check_shard_content(&ck.state, entries.as_deref(), &req.run_dir)?;
    }
    let shard_samples: Option<Vec<u64>> = entries.as_ref().map(|v| v.iter().map(|i| i.samples).collect());
    let shard_sha256: Vec<String> = entries.iter().flatten().map(|i| i.sha256.clone()).collect();
    let settings = LoaderSettings {
        loader: cfg.loader.clone(),
        threads: cfg.runtime.loader,
        augment: cfg.augment.clone(),
        remote: cfg.runtime.remote.clone(),
    };
    let loader = Loader::new(shards.clone(), settings, LoaderMode::Train, rank, world, device)?;
    let batch = cfg.loader.batch_size;
    let steps_per_epoch = match (&shard_samples, &resumed) {
        (Some(counts), _) => match loader.steps_per_epoch(0, counts) {
            0 => return Err(TrainerError::NoFullBatch { epoch: 0, batch_size: batch }),
            n => n,
        },
        (None, Some(ck)) => ck.state.steps_per_epoch.max(1),
        (None, None) => req.max_steps.ok_or_else(|| {
            TrainerError::option(
                "--max-steps",
                "no manifest.json beside the shards, so the epoch length is unknown; pass --max-steps N",
            )
        })?,
    };
    let total_steps = ((cfg.train.epochs * steps_per_epoch as f64).round() as u64).max(1);
    let length = RunLength { total_steps, steps_per_epoch, global_batch: batch * world };
    let mut trainer = Trainer::new(cfg, device, length)?;
    // dist: join the process group (WORLD_SIZE > 1): weights broadcast from rank 0, gradients
    // averaged in MomentumBase::update, optional SyncBN
    trainer.base.join_data_parallel(cfg)?;
    let precision = trainer.base.format.name().to_string();

    // Space for the checkpoints, before the first step.
    let existing = if resumed.is_some() { std::fs::metadata(run.file(WEIGHTS)).map_or(0, |m| m.len()) } else { 0 };
    let need = layout::required_space(layout::tensor_bytes(&trainer.base.checkpoint_tensors()), existing);
    if rank == 0 {
        layout::check_space(run.path(), need, layout::free_bytes(run.path())?)?;
    }
    if resumed.is_none() && rank == 0 {
        dspnet_core::fs::write_atomic(&run.file(CONFIG), cfg.to_toml().as_bytes())?;
    }
    let run_steps = req.max_steps.map_or(total_steps, |m| m.min(total_steps));
    tracing::info!(
        steps = run_steps,
        total_steps,
        steps_per_epoch,
        widths = ?trainer.method.widths(),
        method = trainer.method.name(),
        precision = %precision,
        "training"
    );

    // The hooks, in order: resume sets the state the others start from; the logger writes a
    // step's record before a checkpoint may follow it.
    let mut hooks: Vec<Box<dyn Hook>> = Vec::new();
    if let Some(ckpt) = resumed {
        hooks.push(Box::new(Resume {
            ckpt,
            run_dir: req.run_dir.clone(),
            world_size: world,
            max_steps: req.max_steps,
            write: rank == 0,
        }));
    }
    hooks.push(Box::new(StopOnSignal { stop: req.stop.clone() }));
    hooks.push(Box::new(NonFiniteGuard::new(cfg.train.skip_nonfinite_steps, req.run_dir.clone())));
    let sink = MetricsSink::new(&req.run_dir, rank == 0);
    hooks.push(Box::new(MetricsLogger::new(sink.clone(), cfg.runtime.train.log_every, req.progress)));
    if let Some(monitor) = knn_monitor(cfg, device, rank, sink.clone())? {
        hooks.push(Box::new(monitor));
    }
    hooks.push(Box::new(Checkpointer {
        run_dir: req.run_dir.clone(),
        every: cfg.runtime.train.checkpoint_every,
        shards,
        shard_sha256,
        world_size: world,
        write: rank == 0,
    }));
    hooks.push(Box::new(Curves { run_dir: req.run_dir.clone(), write: rank == 0 }));
    let plan = EpochPlan { shard_samples, batch_size: batch, run_steps };
    let out = TrainLoop { trainer: &mut trainer, loader: &loader, plan, hooks }.run()?;
    sink.close()?;
    // dist: every rank waits for rank 0's checkpoint (it also hosts the store)
    crate::data_parallel::finish(trainer.base.data_parallel().map(|dp| dp.group.clone()))?;
    tracing::info!(loader = %loader.stats().summary(), "loader");
    let seconds = out.seconds;
    Ok(TrainSummary {
        steps: out.state.step - out.start_step,
        start_step: out.start_step,
        images: out.images,
        seconds,
        images_per_sec: out.images as f64 / seconds.max(1e-9),
        data_wait_fraction: out.wait.as_secs_f64() / seconds.max(1e-9),
        interrupted: out.interrupted,
        stopped_by: req.stop.signal().filter(|_| out.interrupted),
        precision,
        skipped_nonfinite: out.state.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_manifest_counts_and_a_malformed_one_is_an_error_not_none() {
        use dspnet_pipeline::shard::{Manifest, ShardInfo, MANIFEST_NAME};
        let dir = tempfile::tempdir().unwrap();
        let shard = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let shards = vec![shard("t-000001.tar"), shard("t-000000.tar")];
        let loader = RemoteConfig::default();
        // no manifest: unknown, not an error
        assert_eq!(manifest_shard_samples(&shards, &loader).unwrap(), None);
        let info = |name: &str, samples| ShardInfo { name: name.into(), samples, bytes: 1, sha256: String::new() };
        let m = Manifest {
            format_version: 1,
            prefix: "t".into(),
            compression: "none".into(),
            class_names: vec![],
            total_samples: 7,
            shards: vec![info("t-000000.tar", 3), info("t-000001.tar", 4)],
            ..Default::default()
        };
        std::fs::write(dir.path().join(MANIFEST_NAME), serde_json::to_vec(&m).unwrap()).unwrap();
        // in the order of the selected shards
        assert_eq!(manifest_shard_samples(&shards, &loader).unwrap(), Some(vec![4, 3]));
        assert_eq!(manifest_samples(&shards[..1], &loader).unwrap(), Some(4));
        // a shard the manifest does not list: unknown
        assert_eq!(manifest_samples(&[shard("t-000002.tar")], &loader).unwrap(), None);
        // a truncated manifest is an error naming the file, not silently "no manifest"
        std::fs::write(dir.path().join(MANIFEST_NAME), b"{\"format_version\": 1, \"pre").unwrap();
        let e = manifest_samples(&shards, &loader).unwrap_err().to_string();
        assert!(e.contains(MANIFEST_NAME) && e.contains("re-run dspnet-shard") && !e.contains('\n'), "{e}");
    }
}
