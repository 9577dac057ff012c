//! Loading a finished (or checkpointed) DSPNet run for deployment: its resolved configuration,
//! the verified checkpoint, the ONLINE network's slimmable backbone (the network `dspnet-eval`
//! evaluates) and the evaluation records of `results.json`. Shared by `dspnet-export`,
//! `dspnet-profile` and `dspnet-select`.

use crate::error::{DeployError, Result};
use dspnet_model::{SlimResNet, WidthList};
use dspnet_trainer::checkpoint::{self, CheckpointState, CONFIG};
use dspnet_trainer::config::RunConfig;
use dspnet_trainer::eval::EvalRecord;
use dspnet_trainer::TrainerError;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tch::{nn, Device};

/// File name of the evaluation records `dspnet-eval` writes into a run directory.
pub const RESULTS: &str = "results.json";

/// Checkpoint prefix of the online network's backbone (`online.backbone.conv1.weight`, ...).
pub const BACKBONE_PREFIX: &str = "online";

/// A run loaded for deployment. The backbone lives on the CPU in fp32 (the checkpoint's master
/// weights), with every trained width's switchable BN statistics.
pub struct LoadedRun {
    /// The run directory as given.
    pub run_dir: PathBuf,
    /// The run's resolved `config.toml`.
    pub config: RunConfig,
    /// `checkpoint.json`: step, sha256 of the weights, version of the trainer that wrote them.
    pub state: CheckpointState,
    /// Path of `checkpoint.safetensors`.
    pub checkpoint_path: PathBuf,
    /// The store holding the backbone's variables under `backbone.*` (fp32, CPU).
    pub vs: nn::VarStore,
    /// The online network's slimmable backbone, loaded from `online.backbone.*`.
    pub backbone: SlimResNet,
    /// Widths the run trained (`method.train_widths`, default `model.widths`); only these have
    /// trained switchable-BN statistics and can be deployed.
    pub trained_widths: WidthList,
    /// Records of `results.json` (empty when the run was not evaluated).
    pub results: Vec<EvalRecord>,
}

impl std::fmt::Debug for LoadedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedRun")
            .field("run_dir", &self.run_dir)
            .field("step", &self.state.step)
            .field("trained_widths", &self.trained_widths)
            .field("results", &self.results.len())
            .finish()
    }
}

impl LoadedRun {
    /// Checks that the run trained `width`.
    ///
    /// # Errors
    /// [`DeployError::Width`] naming the width and the trained ones.
    pub fn check_width(&self, width: f64) -> Result<()> {
        self.trained_widths.index_of(width).map(|_| ()).map_err(|_| {
            DeployError::Width(format!(
                "--width {width}: the run {} did not train width {width} (trained: {:?}); pass one of those",
                self.run_dir.display(),
                self.trained_widths.as_slice()
            ))
        })
    }

    /// Side of the square training/evaluation input in pixels (`augment.image_size`).
    pub fn image_size(&self) -> i64 {
        self.config.augment.image_size as i64
    }

    /// Parameters of the standalone sub-network at `width` (conv weights + BN affine; no fc).
    pub fn params(&self, width: f64) -> i64 {
        self.backbone.num_params(width)
    }

    /// Convolution multiply-accumulates of one image at the run's image size
    /// ([`SlimResNet::flops`]; the FLOPs column of `results.json`).
    pub fn flops(&self, width: f64) -> u64 {
        let s = self.image_size();
        self.backbone.flops(width, s, s)
    }

    /// Evaluation records of the PRETRAINED network at `width` (random-init baselines left
    /// out), in `results.json` order.
    pub fn results_for(&self, width: f64) -> Vec<&EvalRecord> {
        self.results
            .iter()
            .filter(|r| r.init == "pretrained" && (r.width - width).abs() <= dspnet_model::slimmable::WIDTH_TOLERANCE)
            .collect()
    }

    /// Top-1 (percent) of the pretrained network at `width` under `protocol` ("knn" or
    /// "linear"), if `results.json` has it.
    pub fn top1(&self, width: f64, protocol: &str) -> Option<f64> {
        self.results_for(width).into_iter().find(|r| r.protocol == protocol).map(|r| r.top1)
    }
}

fn describe_arch(cfg: &RunConfig) -> String {
    let m = &cfg.model;
    format!(
        "{} with {:?} stem, {} input channels, base_channels {}, widths {:?}",
        m.depth, m.stem, m.in_channels, m.base_channels, m.widths
    )
    .replace("Imagenet", "imagenet")
    .replace("Small", "small")
}

/// Loads `run_dir` for deployment: `config.toml`, the checkpoint (sha256 verified against
/// `checkpoint.json`), the online backbone restored with STRICT names and shapes (every
/// `online.backbone.*` tensor of the checkpoint must match a variable of the architecture the
/// config describes, and vice versa), and `results.json` when present.
///
/// # Errors
/// One line each: [`DeployError::Run`] for a missing run directory, `config.toml`, or weights
/// file; [`DeployError::Trainer`] for an invalid `config.toml`; [`DeployError::Checkpoint`] for a
/// missing `checkpoint.json`, corrupt or truncated weights (sha256 mismatch), and a checkpoint of
/// another architecture (missing, extra or differently shaped backbone tensors);
/// [`DeployError::Run`] for an unreadable `results.json`.
pub fn load_run(run_dir: &Path) -> Result<LoadedRun> {
    if !run_dir.is_dir() {
        return Err(DeployError::Run(format!(
            "run directory {} does not exist; pass the folder dspnet-stream-train --out wrote",
            run_dir.display()
        )));
    }
    let cfg_path = run_dir.join(CONFIG);
    if !cfg_path.is_file() {
        return Err(DeployError::Run(format!(
            "{} is not a dspnet run directory ({CONFIG} missing); pass the folder dspnet-stream-train --out wrote",
            run_dir.display()
        )));
    }
    let config = RunConfig::load(&cfg_path, &[])?;
    let trained_widths = config.train_widths()?;
    let ckpt = checkpoint::load(run_dir).map_err(|e| match e {
        TrainerError::Checkpoint(m) => DeployError::Checkpoint(m),
        TrainerError::Io { path, source } => {
            DeployError::Run(format!("{path}: {source}; the run's checkpoint is incomplete, retrain or restore it"))
        }
        e => DeployError::Trainer(e),
    })?;
    let vs = nn::VarStore::new(Device::Cpu);
    let backbone = SlimResNet::new(&(vs.root() / "backbone"), &config.model)?;
    restore_strict(&vs, &ckpt, &config)?;
    let results = read_results(run_dir)?;
    Ok(LoadedRun {
        run_dir: run_dir.to_path_buf(),
        config,
        state: ckpt.state,
        checkpoint_path: ckpt.path,
        vs,
        backbone,
        trained_widths,
        results,
    })
}

/// Copies `online.backbone.*` into the store; the name sets must be equal and shapes identical.
fn restore_strict(vs: &nn::VarStore, ckpt: &checkpoint::Checkpoint, cfg: &RunConfig) -> Result<()> {
    let arch = || describe_arch(cfg);
    let other = |detail: String| {
        DeployError::Checkpoint(format!(
            "{}: {detail}, but config.toml describes {}: the checkpoint was written for another architecture; export from the run directory that wrote it",
            ckpt.path.display(),
            arch()
        ))
    };
    let vars = vs.variables();
    let wanted: BTreeSet<String> = vars.keys().map(|n| format!("{BACKBONE_PREFIX}.{n}")).collect();
    let backbone_prefix = format!("{BACKBONE_PREFIX}.backbone.");
    let mut present: Vec<&String> = ckpt.tensors.keys().filter(|k| k.starts_with(&backbone_prefix)).collect();
    present.sort();
    if present.is_empty() {
        return Err(DeployError::Checkpoint(format!(
            "{} holds no {backbone_prefix}* tensors: it is not a dspnet training checkpoint",
            ckpt.path.display()
        )));
    }
    if let Some(extra) = present.iter().find(|k| !wanted.contains(k.as_str())) {
        return Err(other(format!("it holds {extra}")));
    }
    tch::no_grad(|| {
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let key = format!("{BACKBONE_PREFIX}.{name}");
            let mut var = vars[name].shallow_clone();
            let src = ckpt.tensors.get(&key).ok_or_else(|| other(format!("it lacks {key}")))?;
            if src.size() != var.size() {
                return Err(other(format!("{key} has shape {:?} where {:?} is expected", src.size(), var.size())));
            }
            if !src.is_floating_point() {
                return Err(other(format!("{key} has dtype {:?}", src.kind())));
            }
            var.f_copy_(&src.to_kind(var.kind()))?;
        }
        Ok(())
    })
}

fn read_results(run_dir: &Path) -> Result<Vec<EvalRecord>> {
    let path = run_dir.join(RESULTS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| DeployError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        DeployError::Run(format!(
            "{} is not a dspnet-eval results file ({e}); delete it or rerun dspnet-eval",
            path.display()
        ))
    })
}
