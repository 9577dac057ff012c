//! Checkpoints: weights as safetensors (`online.*`, `teacher.*`, `optim.*`) plus a JSON record of
//! the training state beside them (step, schedule, sandwich-rule RNG, stream position, ...).
//!
//! A checkpoint is complete exactly when its JSON exists: the JSON names the sha256 of the
//! weights it belongs to and is the last thing renamed into place. Saving, in order:
//! 1. weights → `.checkpoint.tmp.safetensors`, fsync, rename to `checkpoint.next.safetensors`;
//! 2. JSON → `.checkpoint.json.tmp`, fsync, rename to `checkpoint.json` (the commit point);
//! 3. rename `checkpoint.next.safetensors` over `checkpoint.safetensors`; fsync the folder.
//!
//! A crash before 2 leaves the previous pair intact (its weights were never touched); a crash
//! between 2 and 3 leaves a JSON whose sha256 matches `checkpoint.next.safetensors`, which
//! [`load`] accepts and the next [`save`] settles first. Damaged weights are caught by the sha256.

use crate::error::{Result, RunError};
use crate::layout::{NEXT_WEIGHTS, STATE, WEIGHTS};
use dspnet_core::fs::{sha256_hex, sync_dir, write_atomic};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Training state stored beside the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimiser steps done.
    pub step: u64,
    /// Planned optimiser steps of the run.
    pub total_steps: u64,
    /// Epoch the next step belongs to.
    pub epoch: u64,
    /// Samples consumed in the current epoch.
    pub samples_in_epoch: u64,
    /// True once the run reached its planned length (or its --max-steps).
    pub finished: bool,
    /// sha256 (hex) of the weights file.
    pub weights_sha256: String,
    /// dspnet version that wrote it.
    pub version: String,
    /// Compute format of the run ("fp32" / "bf16").
    pub precision: String,
    /// Position in the rank's epoch stream after the last consumed batch (see
    /// `dspnet_pipeline::loader`, "Positions and resuming"; counts skipped bad samples too).
    /// `None` in checkpoints written before exact resume existed: those cannot be resumed.
    #[serde(default)]
    pub position_in_epoch: Option<u64>,
    /// Batches (optimiser steps) taken in the current epoch.
    #[serde(default)]
    pub batches_in_epoch: u64,
    /// Shard order of the current epoch (indices into `shards`), checked on resume.
    #[serde(default)]
    pub shard_order: Vec<usize>,
    /// The run's shard list (as expanded from `--shards`).
    #[serde(default)]
    pub shards: Vec<String>,
    /// WORLD_SIZE of the run (the stream split depends on it).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Optimiser steps per epoch used by the schedules (and the per-epoch cap).
    #[serde(default)]
    pub steps_per_epoch: u64,
    /// Learning rate of the last step taken (schedule position = `step`).
    #[serde(default)]
    pub lr: f64,
    /// EMA rate of the momentum teacher used after the last step taken.
    #[serde(default)]
    pub ema_tau: f64,
    /// Word position of the sandwich rule's ChaCha8 generator (decimal u128; its seed is
    /// derived from `train.seed`). The step draws nothing from libtorch's generator.
    #[serde(default)]
    pub sandwich_rng_word_pos: String,
    /// Steps skipped because of a non-finite loss (`train.skip_nonfinite_steps`).
    #[serde(default)]
    pub skipped_nonfinite: u64,
    /// Images trained on since the start of the run.
    #[serde(default)]
    pub images: u64,
    /// sha256 of every shard in `shards` (same order), from their `manifest.json`; empty when
    /// the shards had no manifest (or the checkpoint predates the field). A resume checks the
    /// shards it is given against them.
    #[serde(default)]
    pub shard_sha256: Vec<String>,
}

fn one() -> usize {
    1
}

impl CheckpointState {
    /// A state with the given step counts and every resume field empty (tests, tools).
    pub fn basic(step: u64, total_steps: u64, precision: &str) -> Self {
        CheckpointState {
            step,
            total_steps,
            epoch: 0,
            samples_in_epoch: 0,
            finished: false,
            weights_sha256: String::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            precision: precision.to_string(),
            position_in_epoch: None,
            batches_in_epoch: 0,
            shard_order: Vec::new(),
            shards: Vec::new(),
            world_size: 1,
            steps_per_epoch: 0,
            lr: 0.0,
            ema_tau: 0.0,
            sandwich_rng_word_pos: String::new(),
            skipped_nonfinite: 0,
            images: 0,
            shard_sha256: Vec::new(),
        }
    }
}

/// Saves named tensors and the state into `run_dir` in the order of the module docs, so that
/// whatever instant a crash (or SIGKILL, or a full disk) interrupts it, `run_dir` holds either the
/// previous complete checkpoint or the new one.
///
/// Errors: file-system errors naming the path (the previous checkpoint is kept); libtorch
/// errors writing the safetensors file.
pub fn save(run_dir: &Path, tensors: &[(String, Tensor)], mut state: CheckpointState) -> Result<()> {
    settle(run_dir)?;
    let tmp = run_dir.join(".checkpoint.tmp.safetensors");
    let named: Vec<(&str, Tensor)> =
        tensors.iter().map(|(n, t)| (n.as_str(), t.to_device(tch::Device::Cpu).contiguous())).collect();
    let written = (|| -> Result<String> {
        Tensor::write_safetensors(&named, &tmp)?;
        let bytes = std::fs::read(&tmp).map_err(|e| RunError::io(&tmp, e))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| RunError::io(&tmp, e))?;
        Ok(sha256_hex(&bytes))
    })();
    state.weights_sha256 = match written {
        Ok(sha) => sha,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let next = run_dir.join(NEXT_WEIGHTS);
    std::fs::rename(&tmp, &next).map_err(|e| RunError::io(&next, e))?;
    sync_dir(run_dir);
    let json = serde_json::to_vec_pretty(&state).expect("state serialises");
    write_atomic(&run_dir.join(STATE), &json)?; // the commit point
    let dst = run_dir.join(WEIGHTS);
    std::fs::rename(&next, &dst).map_err(|e| RunError::io(&dst, e))?;
    sync_dir(run_dir);
    Ok(())
}

/// Finishes a save interrupted between its commit point and the final rename: when the JSON's
/// sha256 matches `checkpoint.next.safetensors`, that file becomes `checkpoint.safetensors`.
/// A stale `checkpoint.next.safetensors` (from a save interrupted before its commit) is removed.
pub fn settle(run_dir: &Path) -> Result<()> {
    let next = run_dir.join(NEXT_WEIGHTS);
    if !next.exists() {
        return Ok(());
    }
    let committed = std::fs::read_to_string(run_dir.join(STATE))
        .ok()
        .and_then(|t| serde_json::from_str::<CheckpointState>(&t).ok())
        .map(|s| s.weights_sha256);
    let bytes = std::fs::read(&next).map_err(|e| RunError::io(&next, e))?;
    if committed.as_deref() == Some(sha256_hex(&bytes).as_str()) {
        let dst = run_dir.join(WEIGHTS);
        std::fs::rename(&next, &dst).map_err(|e| RunError::io(&dst, e))?;
    } else {
        std::fs::remove_file(&next).map_err(|e| RunError::io(&next, e))?;
    }
    sync_dir(run_dir);
    Ok(())
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub state: CheckpointState,
    pub tensors: HashMap<String, Tensor>,
    pub path: PathBuf,
}

/// Loads and verifies the checkpoint of `run_dir`.
///
/// Errors (one line each): no checkpoint (the run never saved one), unreadable or invalid JSON,
/// weights whose sha256 differs from the record (truncated or corrupt), unreadable safetensors.
pub fn load(run_dir: &Path) -> Result<Checkpoint> {
    let state_path = run_dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|_| {
        RunError::checkpoint(
            &state_path,
            format!(
                "{} has no checkpoint ({} missing); train it with dspnet-stream-train first",
                run_dir.display(),
                STATE
            ),
        )
    })?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        RunError::checkpoint(&state_path, format!("{} is corrupt ({e}); retrain or restore it", state_path.display()))
    })?;
    let mut path = run_dir.join(WEIGHTS);
    let mut bytes = std::fs::read(&path).map_err(|e| RunError::io(&path, e))?;
    if sha256_hex(&bytes) != state.weights_sha256 {
        // a save interrupted after its commit point: the committed weights are still `next`
        let next = run_dir.join(NEXT_WEIGHTS);
        match std::fs::read(&next) {
            Ok(b) if sha256_hex(&b) == state.weights_sha256 => {
                path = next;
                bytes = b;
            }
            _ => {
                let message = format!(
                    "{} is corrupt or truncated (sha256 differs from {}); retrain or restore it",
                    path.display(),
                    STATE
                );
                return Err(RunError::checkpoint(path, message));
            }
        }
    }
    drop(bytes);
    let list = Tensor::read_safetensors(&path).map_err(|e| {
        RunError::checkpoint(&path, format!("{} is not a readable safetensors file: {e}", path.display()))
    })?;
    Ok(Checkpoint { state, tensors: list.into_iter().collect(), path })
}

/// Copies `prefix.*` tensors of a checkpoint into a VarStore's variables of the same name
/// without the prefix. Every variable must be present with the same shape.
pub fn restore_vars(vs: &tch::nn::VarStore, ckpt: &Checkpoint, prefix: &str) -> Result<()> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let key = format!("{prefix}.{name}");
            let src = ckpt.tensors.get(&key).ok_or_else(|| {
                RunError::checkpoint(
                    &ckpt.path,
                    format!("{} lacks {key}: it was written for another architecture or config", ckpt.path.display()),
                )
            })?;
            if src.size() != var.size() {
                let message = format!(
                    "{}: {key} has shape {:?}, the model expects {:?} (another architecture or config)",
                    ckpt.path.display(),
                    src.size(),
                    var.size()
                );
                return Err(RunError::checkpoint(&ckpt.path, message));
            }
            var.copy_(src);
        }
        Ok(())
    })
}

/// The VarStore's variables as `prefix.name` tensors (for [`save`]).
pub fn prefixed(vs: &tch::nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    /// Exact resume compares the recorded learning rate and EMA rate with the schedule's value
    /// bit for bit, so checkpoint.json must give back exactly the f64 it was written with. These
    /// are the values of a real run that could not be resumed (0.5·40/390 and BYOL's tau at step
    /// 39 of 2340, both printed by Python's repr): serde_json's default float parser may be 1 ULP
    /// off; its `float_roundtrip` feature is exact.
    #[test]
    fn recorded_schedule_values_survive_the_json_round_trip_bit_for_bit() {
        let t = 39.0 / 2340.0;
        let values = [
            0.5 * 40.0 / 390.0,
            1.0 - (1.0 - 0.99) * ((std::f64::consts::PI * t).cos() + 1.0) / 2.0,
            0.1 + 0.2,
            std::f64::consts::PI / 3.0,
        ];
        for v in values {
            let text = serde_json::to_string(&v).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:?} written as {text} read back as {back:?}");
        }
        // many more: every value of the two schedules of that run
        for step in 0..2340u64 {
            for v in [
                dspnet_core::schedule::warmup_cosine(step, 2340, 390, 0.5),
                dspnet_core::schedule::cosine_ramp(step, 2340, 0.99, 1.0),
            ] {
                let back: f64 = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
                assert_eq!(back.to_bits(), v.to_bits(), "step {step}: {v:?} read back as {back:?}");
            }
        }
    }

    use super::*;

    fn state() -> CheckpointState {
        CheckpointState { samples_in_epoch: 24, ..CheckpointState::basic(3, 10, "fp32") }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    fn value(dir: &Path) -> Vec<f32> {
        load(dir).unwrap().tensors["online.x"].shallow_clone().try_into().unwrap()
    }

    #[test]
    fn every_crash_point_of_a_save_leaves_one_complete_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let one = Tensor::from_slice(&[1.0f32]);
        let two = Tensor::from_slice(&[2.0f32]);
        save(d, &[("online.x".into(), one.shallow_clone())], state()).unwrap();
        assert_eq!(names(d), vec![STATE, WEIGHTS]);
        // the files of checkpoint 1 and of a second save of [2.0], taken apart by hand
        let w1 = std::fs::read(d.join(WEIGHTS)).unwrap();
        let j1 = std::fs::read(d.join(STATE)).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        save(d2.path(), &[("online.x".into(), two.shallow_clone())], CheckpointState { step: 5, ..state() }).unwrap();
        let w2 = std::fs::read(d2.path().join(WEIGHTS)).unwrap();
        let j2 = std::fs::read(d2.path().join(STATE)).unwrap();
        // crash after step 1 (next written, JSON not yet): the old checkpoint
        std::fs::write(d.join(NEXT_WEIGHTS), &w2).unwrap();
        assert_eq!(value(d), vec![1.0]);
        assert_eq!(load(d).unwrap().state.step, 3);
        // crash after step 2 (JSON committed, rename not done): the new checkpoint
        std::fs::write(d.join(STATE), &j2).unwrap();
        assert_eq!(value(d), vec![2.0]);
        assert_eq!(load(d).unwrap().state.step, 5);
        // the next save settles it first, then commits its own
        save(d, &[("online.x".into(), Tensor::from_slice(&[3.0f32]))], CheckpointState { step: 7, ..state() }).unwrap();
        assert_eq!(value(d), vec![3.0]);
        assert_eq!(names(d), vec![STATE, WEIGHTS]);
        // a stale next (crash before the commit) is removed by settle, the checkpoint kept
        std::fs::write(d.join(WEIGHTS), &w1).unwrap();
        std::fs::write(d.join(STATE), &j1).unwrap();
        std::fs::write(d.join(NEXT_WEIGHTS), &w2).unwrap();
        settle(d).unwrap();
        assert_eq!(names(d), vec![STATE, WEIGHTS]);
        assert_eq!(value(d), vec![1.0]);
    }

    #[test]
    fn a_failed_save_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save(d, &[("online.x".into(), Tensor::from_slice(&[1.0f32]))], state()).unwrap();
        // the temporary name is taken by a directory: writing the weights fails
        std::fs::create_dir(d.join(".checkpoint.tmp.safetensors")).unwrap();
        assert!(save(d, &[("online.x".into(), Tensor::from_slice(&[2.0f32]))], state()).is_err());
        std::fs::remove_dir(d.join(".checkpoint.tmp.safetensors")).unwrap();
        assert_eq!(value(d), vec![1.0]);
        // the JSON's temporary name is taken: the weights went to `next`, nothing was committed
        std::fs::create_dir(d.join(format!(".{STATE}.tmp"))).unwrap();
        assert!(save(d, &[("online.x".into(), Tensor::from_slice(&[2.0f32]))], state()).is_err());
        assert_eq!(value(d), vec![1.0]);
    }

    #[test]
    fn state_round_trips_every_resume_field_and_reads_old_records() {
        let dir = tempfile::tempdir().unwrap();
        let full = CheckpointState {
            epoch: 2,
            position_in_epoch: Some(77),
            batches_in_epoch: 4,
            shard_order: vec![2, 0, 1],
            shards: vec!["a/t-000000.tar".into(), "a/t-000001.tar".into(), "a/t-000002.tar".into()],
            world_size: 2,
            steps_per_epoch: 6,
            lr: 0.0125,
            ema_tau: 0.9925,
            sandwich_rng_word_pos: u128::MAX.to_string(),
            skipped_nonfinite: 1,
            images: 160,
            ..state()
        };
        save(dir.path(), &[("online.x".into(), Tensor::from_slice(&[1.0f32]))], full.clone()).unwrap();
        let got = load(dir.path()).unwrap().state;
        let (a, mut b) = (serde_json::to_value(&got).unwrap(), serde_json::to_value(&full).unwrap());
        b["weights_sha256"] = a["weights_sha256"].clone();
        assert_eq!(a, b);
        assert_eq!(got.sandwich_rng_word_pos.parse::<u128>().unwrap(), u128::MAX);
        // a record from before exact resume: defaults, and no stream position
        let old = r#"{"step":3,"total_steps":10,"epoch":0,"samples_in_epoch":24,"finished":false,
            "weights_sha256":"x","version":"0.1.0","precision":"fp32"}"#;
        let s: CheckpointState = serde_json::from_str(old).unwrap();
        assert_eq!((s.position_in_epoch, s.world_size, s.skipped_nonfinite), (None, 1, 0));
    }

    #[test]
    fn round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        save(dir.path(), &[("online.x".into(), t.shallow_clone())], state()).unwrap();
        let ck = load(dir.path()).unwrap();
        assert_eq!(ck.state.step, 3);
        let got: Vec<f32> = ck.tensors["online.x"].shallow_clone().try_into().unwrap();
        assert_eq!(got, vec![1.0, 2.0, 3.0]);
        // no temporary files left behind
        assert_eq!(names(dir.path()), vec![STATE, WEIGHTS]);
        // truncate the weights: a one-line error naming the file
        let w = dir.path().join(WEIGHTS);
        let bytes = std::fs::read(&w).unwrap();
        std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
        let e = load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("corrupt or truncated") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn missing_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("has no checkpoint"), "{e}");
    }
}
