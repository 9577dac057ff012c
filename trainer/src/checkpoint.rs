//! Checkpoints: weights as safetensors (`online.*`, `teacher.*`, `optim.*`) plus a JSON record of
//! the training state beside them. Both are written to a temporary name in the run directory,
//! fsynced and renamed, the JSON last: a checkpoint is complete exactly when its JSON exists, and
//! the JSON holds the sha256 of the tensors so a damaged file is caught before use.

use crate::error::TrainerError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// File names inside a run directory.
pub const WEIGHTS: &str = "checkpoint.safetensors";
pub const STATE: &str = "checkpoint.json";
pub const CONFIG: &str = "config.toml";
pub const METRICS: &str = "metrics.jsonl";

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
}

/// Writes `bytes` to `dir/name` atomically (temporary file in the same folder, fsync, rename,
/// fsync of the folder).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TrainerError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| TrainerError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| TrainerError::io(&tmp, e))?;
        f.sync_all().map_err(|e| TrainerError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| TrainerError::io(&dst, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Saves named tensors and the state into `run_dir` (weights first, then the JSON).
pub fn save(run_dir: &Path, tensors: &[(String, Tensor)], mut state: CheckpointState) -> Result<(), TrainerError> {
    let tmp = run_dir.join(".checkpoint.tmp.safetensors");
    let named: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&named, &tmp)?;
    let bytes = std::fs::read(&tmp).map_err(|e| TrainerError::io(&tmp, e))?;
    state.weights_sha256 = sha256_hex(&bytes);
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| TrainerError::io(&tmp, e))?;
    let dst = run_dir.join(WEIGHTS);
    std::fs::rename(&tmp, &dst).map_err(|e| TrainerError::io(&dst, e))?;
    let json = serde_json::to_vec_pretty(&state).expect("state serialises");
    write_atomic(run_dir, STATE, &json)
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
pub fn load(run_dir: &Path) -> Result<Checkpoint, TrainerError> {
    let state_path = run_dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|_| {
        TrainerError::Checkpoint(format!(
            "{} has no checkpoint ({} missing); train it with dspnet-stream-train first",
            run_dir.display(),
            STATE
        ))
    })?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        TrainerError::Checkpoint(format!("{} is corrupt ({e}); retrain or restore it", state_path.display()))
    })?;
    let path = run_dir.join(WEIGHTS);
    let bytes = std::fs::read(&path).map_err(|e| TrainerError::io(&path, e))?;
    if sha256_hex(&bytes) != state.weights_sha256 {
        return Err(TrainerError::Checkpoint(format!(
            "{} is corrupt or truncated (sha256 differs from {}); retrain or restore it",
            path.display(),
            STATE
        )));
    }
    let list = Tensor::read_safetensors(&path).map_err(|e| {
        TrainerError::Checkpoint(format!("{} is not a readable safetensors file: {e}", path.display()))
    })?;
    Ok(Checkpoint { state, tensors: list.into_iter().collect(), path })
}

/// Copies `prefix.*` tensors of a checkpoint into a VarStore's variables of the same name
/// without the prefix. Every variable must be present with the same shape.
pub fn restore_vars(vs: &tch::nn::VarStore, ckpt: &Checkpoint, prefix: &str) -> Result<(), TrainerError> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            let key = format!("{prefix}.{name}");
            let src = ckpt.tensors.get(&key).ok_or_else(|| {
                TrainerError::Checkpoint(format!(
                    "{} lacks {key}: it was written for another architecture or config",
                    ckpt.path.display()
                ))
            })?;
            if src.size() != var.size() {
                return Err(TrainerError::Checkpoint(format!(
                    "{}: {key} has shape {:?}, the model expects {:?} (another architecture or config)",
                    ckpt.path.display(),
                    src.size(),
                    var.size()
                )));
            }
            var.copy_(src);
        }
        Ok(())
    })
}

/// The VarStore's variables as `prefix.name` tensors (for [`save`]).
pub fn prefixed(vs: &tch::nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> CheckpointState {
        CheckpointState {
            step: 3,
            total_steps: 10,
            epoch: 0,
            samples_in_epoch: 24,
            finished: false,
            weights_sha256: String::new(),
            version: "test".into(),
            precision: "fp32".into(),
        }
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
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
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
