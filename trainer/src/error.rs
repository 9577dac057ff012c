//! Trainer errors. Each variant carries what it is about (option, width, step, run, tensor) as
//! data; its `Display` is the one line the binaries print after `error: ` (exit code 2).

use std::path::PathBuf;

/// A non-finite loss: at which width and optimiser step (1-based, as in `metrics.jsonl`).
#[derive(Clone, Debug, PartialEq)]
pub struct NonFiniteLoss {
    pub width: f64,
    pub step: u64,
    pub value: f64,
}

impl std::fmt::Display for NonFiniteLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "non-finite loss ({}) at width {} in step {} (1-based, as in metrics.jsonl); lower optim.lr or optim.weight_decay, or use train.precision=\"fp32\"",
            self.value, self.width, self.step
        )
    }
}

/// Which checkpoint a run that stopped keeps: the last one saved (after `step`), or none.
#[derive(Clone, Debug, PartialEq)]
pub struct KeptCheckpoint {
    pub step: Option<u64>,
    pub dir: PathBuf,
}

impl std::fmt::Display for KeptCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(s) => write!(f, "the last good checkpoint (step {s}) in {} is kept", self.dir.display()),
            None => write!(f, "no checkpoint had been saved yet"),
        }
    }
}

/// Everything training can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A setting or command-line option that cannot be used; `message` names it and the fix.
    #[error("{message}")]
    Option { option: String, message: String },
    /// A launcher environment variable (RANK, WORLD_SIZE, ...) that cannot be used.
    #[error("{message}")]
    Env { name: String, message: String },
    /// A run that cannot be resumed exactly; `message` says why and what to do.
    #[error("cannot resume {}: {message}", run.display())]
    Resume { run: PathBuf, message: String },
    /// An epoch that gave no full batch.
    #[error("epoch {epoch} gave no full batch: the shards hold fewer than loader.batch_size = {batch_size} usable samples per rank; lower loader.batch_size or check the data")]
    NoFullBatch { epoch: u64, batch_size: usize },
    /// A non-finite loss, returned by the step before any update (see [`NonFiniteLoss`]).
    #[error("{0}")]
    NonFinite(NonFiniteLoss),
    /// A non-finite loss stopped the run (`train.skip_nonfinite_steps` off).
    #[error("{loss}; training stopped, {kept}; --set train.skip_nonfinite_steps=true skips such steps")]
    StoppedOnNonFinite { loss: NonFiniteLoss, kept: KeptCheckpoint },
    /// A non-finite loss could not be skipped: the weights themselves are non-finite.
    #[error("{loss}, and the weights themselves are non-finite ({tensor}), so skipping cannot help; lower optim.lr and resume from the last checkpoint or start again")]
    SkipImpossible { loss: NonFiniteLoss, tensor: String },
    /// A tensor became non-finite although every loss was finite; the checkpoint is not saved.
    #[error("{tensor} is non-finite after step {step} although every loss was finite (weights or BN statistics overflowed); training stopped without saving it, {kept}; lower optim.lr or optim.weight_decay")]
    NonFiniteTensor { tensor: String, step: u64, kept: KeptCheckpoint },
    /// The run directory (configuration, checkpoint, metrics, output location).
    #[error(transparent)]
    Run(#[from] dspnet_run::RunError),
    /// The kNN monitor's evaluation.
    #[error(transparent)]
    Eval(#[from] dspnet_eval::EvalError),
    /// The data pipeline.
    #[error(transparent)]
    Pipeline(#[from] dspnet_pipeline::PipelineError),
    /// The model (e.g. a width the model was not built with).
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// Data parallel (launcher variables, rendezvous, a dead or hung peer).
    #[error(transparent)]
    Distributed(#[from] dspnet_dist::DistError),
    /// libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A file-system error with the path involved.
    #[error(transparent)]
    File(#[from] dspnet_core::PathError),
}

impl TrainerError {
    /// A [`TrainerError::Option`] about `option`.
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        TrainerError::Option { option: option.into(), message: message.into() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = TrainerError> = std::result::Result<T, E>;
