//! The paths of a run directory, and the checks an output location passes before a run starts
//! (writable, room for two checkpoints).

use crate::config::RunConfig;
use crate::error::{Result, RunError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The resolved configuration of the run.
pub const CONFIG: &str = "config.toml";
/// Weights of the last complete checkpoint (`online.*`, `teacher.*`, `optim.*`).
pub const WEIGHTS: &str = "checkpoint.safetensors";
/// The training state beside the weights; a checkpoint is complete exactly when it exists.
pub const STATE: &str = "checkpoint.json";
/// Weights of a checkpoint being committed (see [`crate::checkpoint`]).
pub const NEXT_WEIGHTS: &str = "checkpoint.next.safetensors";
/// One JSON record per logged step.
pub const METRICS: &str = "metrics.jsonl";
/// Start of the TensorBoard event files' names (`events.out.tfevents.<seconds>.<host>`, one per
/// invocation; see [`crate::tensorboard`]).
pub const EVENTS_PREFIX: &str = "events.out.tfevents.";
/// Per-width loss against step, drawn at the end of every invocation.
pub const LOSS_CURVES: &str = "curves_loss.png";
/// Per-width kNN top-1 of the training monitor against step (when the run has monitor records).
pub const KNN_CURVES: &str = "curves_knn.png";
/// Evaluation records of every width, protocol and init.
pub const RESULTS: &str = "results.json";
/// Top-1 against multiply-accumulates, one line per protocol and init.
pub const ACCURACY_PLOT: &str = "accuracy_vs_flops.png";
/// Exported widths (`export/w0_50/...`).
pub const EXPORT_DIR: &str = "export";
/// Records of the detection and segmentation transfer runs.
pub const TRANSFER_DIR: &str = "transfer";

/// A run directory (the `--out` of `dspnet-stream-train`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root` (nothing is read or created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `root/name` for one of this module's file names.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// True when the folder holds a complete checkpoint (its `checkpoint.json`).
    pub fn has_checkpoint(&self) -> bool {
        self.file(STATE).exists()
    }

    /// The run's resolved `config.toml`.
    ///
    /// Errors: [`RunError::NotARun`] when the folder has no `config.toml` (names the folder and
    /// says what to pass); configuration errors of the file.
    pub fn read_config(&self) -> Result<RunConfig> {
        let path = self.file(CONFIG);
        if !path.exists() {
            return Err(RunError::NotARun {
                dir: self.root.clone(),
                message: format!(
                    "{} is not a dspnet run directory ({CONFIG} missing): cannot read config {}; give the --out of an earlier dspnet-stream-train",
                    self.root.display(),
                    path.display()
                ),
            });
        }
        RunConfig::load(&path, &[])
    }

    /// Creates the run directory for a new run: refuses one that already holds a checkpoint
    /// unless `overwrite`, checks it is writable ([`check_writable`]) and removes what an earlier
    /// run left there (checkpoint, metrics, event files, curves, results).
    ///
    /// Errors: [`RunError::Output`] naming the folder and the fix.
    pub fn prepare_new(&self, overwrite: bool) -> Result<()> {
        let dir = &self.root;
        if self.has_checkpoint() && !overwrite {
            return Err(RunError::Output {
                dir: dir.clone(),
                message: format!(
                    "run directory {} already holds a checkpoint; pass --resume {0} to continue it, --overwrite to replace it, or choose another --out",
                    dir.display()
                ),
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| RunError::Output {
            dir: dir.clone(),
            message: format!("cannot create run directory {}: {e}; choose a writable --out", dir.display()),
        })?;
        check_writable(dir)?;
        for stale in [STATE, WEIGHTS, NEXT_WEIGHTS, METRICS, LOSS_CURVES, KNN_CURVES, RESULTS] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let events = std::fs::read_dir(dir).map_err(|e| RunError::io(dir, e))?;
        for e in events.flatten() {
            if e.file_name().to_string_lossy().starts_with(EVENTS_PREFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

/// Checks that files can be created in `dir`: creates a probe file, writes and fsyncs it,
/// removes it.
///
/// Errors: [`RunError::Output`], one line naming the folder and the OS reason (read-only,
/// permission denied, ...).
pub fn check_writable(dir: &Path) -> Result<()> {
    // named per process: two processes checking one folder at once do not remove each other's
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(b"ok")?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&probe);
        RunError::Output {
            dir: dir.to_path_buf(),
            message: format!("run directory {} is not writable: {e}; choose a writable --out", dir.display()),
        }
    })
}

/// Bytes available to this user on the file system holding `dir` (statvfs: `f_bavail · f_frsize`).
///
/// Errors: statvfs fails (the folder does not exist), with the path.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| RunError::io(dir, std::io::Error::from(e)))?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Bytes of tensor data in `tensors` (elements × element size): what a checkpoint of them
/// holds, headers aside.
pub fn tensor_bytes(tensors: &[(String, tch::Tensor)]) -> u64 {
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

/// Checks that `free` bytes cover `need` ([`required_space`]).
///
/// Errors: [`RunError::Output`], one line with both figures in MB and the fix.
pub fn check_space(dir: &Path, need: u64, free: u64) -> Result<()> {
    if free >= need {
        return Ok(());
    }
    let mb = |b: u64| b as f64 / 1e6;
    Err(RunError::Output {
        dir: dir.to_path_buf(),
        message: format!(
            "output location {} has {:.1} MB free but the checkpoints need about {:.1} MB (two copies of {:.1} MB while one replaces the other); free space or choose another --out",
            dir.display(),
            mb(free),
            mb(need),
            mb(need.div_ceil(2))
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_estimate_by_hand_and_injected_free_space() {
        // 1000 f32 + 10 i64: 4080 bytes; one checkpoint ≈ 4488; two while replacing: 8976
        use tch::{Device, Kind, Tensor};
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
        let e = RunDir::new(file.join("run")).prepare_new(false).unwrap_err().to_string();
        assert!(e.contains("cannot create run directory") && e.contains("plain-file"), "{e}");
        // a writable folder passes and keeps no probe behind
        let ok = tmp.path().join("run");
        RunDir::new(&ok).prepare_new(false).unwrap();
        assert_eq!(std::fs::read_dir(&ok).unwrap().count(), 0);
        // what an earlier run without a checkpoint left goes, other files stay
        for f in [METRICS, "events.out.tfevents.1700000000.host", LOSS_CURVES, "notes.txt"] {
            std::fs::write(ok.join(f), b"x").unwrap();
        }
        RunDir::new(&ok).prepare_new(false).unwrap();
        let left: Vec<_> = std::fs::read_dir(&ok).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec!["notes.txt"]);
    }
}
