//! Loading a finished (or checkpointed) DSPNet run for deployment: its resolved configuration,
//! the verified checkpoint, the ONLINE network's slimmable backbone (the network `dspnet-eval`
//! evaluates) and the evaluation records of `results.json`. Shared by `dspnet-export`,
//! `dspnet-profile` and `dspnet-select`.

use crate::error::{DeployError, Result};
use dspnet_model::{SlimResNet, WidthList};
use dspnet_run::backbone::Backbone;
use dspnet_run::checkpoint::{self, CheckpointState};
use dspnet_run::layout::CONFIG;
use dspnet_run::{EvalRecord, RunConfig};
use std::path::{Path, PathBuf};
use tch::{nn, Device};

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
        self.trained_widths.index_of(width).map(|_| ()).map_err(|_| DeployError::Width {
            width,
            message: format!(
                "--width {width}: the run {} did not train width {width} (trained: {:?}); pass one of those",
                self.run_dir.display(),
                self.trained_widths.as_slice()
            ),
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
    /// ([`SlimResNet::macs`]; the `flops` column of `results.json`).
    pub fn macs(&self, width: f64) -> u64 {
        let s = self.image_size();
        self.backbone.macs(width, s, s)
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

/// Loads `run_dir` for deployment: `config.toml`, the checkpoint (sha256 verified against
/// `checkpoint.json`), the online backbone restored with STRICT names and shapes
/// ([`Backbone::trained`]), and `results.json` when present.
///
/// # Errors
/// One line each: [`DeployError::Run`] for a missing run directory, `config.toml`, or weights
/// file; [`DeployError::RunDir`] for an invalid `config.toml`, a missing `checkpoint.json`,
/// corrupt or truncated weights (sha256 mismatch), a checkpoint of another architecture
/// (missing, extra or differently shaped backbone tensors) and an unreadable `results.json`.
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
        dspnet_run::RunError::File(e) => {
            DeployError::Run(format!("{e}; the run's checkpoint is incomplete, retrain or restore it"))
        }
        e => DeployError::RunDir(e),
    })?;
    let Backbone { vs, net: backbone } = Backbone::trained(&config, &ckpt, Device::Cpu)?;
    let results = dspnet_run::results::read(run_dir)?;
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
