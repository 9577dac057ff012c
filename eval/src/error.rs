//! Errors of the evaluation protocols. Each variant names what it is about (option, width,
//! file, step); its `Display` is the one line `dspnet-eval` prints after `error: `.

use std::path::PathBuf;

/// Everything an evaluation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A command-line option or setting that cannot be used; `message` names it and the fix.
    #[error("{message}")]
    Option { option: String, message: String },
    /// A width the run did not train.
    #[error("--widths {width}: this run did not train width {width} (trained: {trained:?})")]
    WidthNotTrained { width: f64, trained: Vec<f64> },
    /// The feature protocols' shards gave no labelled image.
    #[error("the evaluation shards gave no labelled image")]
    NoLabelledImage,
    /// A subset of the semi-supervised protocol that cannot be used (a subset file's unknown
    /// key, too few images, ...).
    #[error("{message}")]
    Subset { file: Option<PathBuf>, message: String },
    /// A non-finite fine-tuning loss of the semi-supervised protocol.
    #[error("protocol semi: non-finite loss ({value}) at width {width} in fine-tuning step {step}; lower --semi-lr / --semi-head-lr")]
    NonFinite { width: f64, step: usize, value: f64 },
    /// A dataset of the transfer-linear protocol that cannot be used (missing split folder, a
    /// test class absent from train, an undecodable image, ...); `message` names the folder or
    /// file inside `dir`.
    #[error("--transfer-data {}: {message}", dir.display())]
    TransferData { dir: PathBuf, message: String },
    /// The Python transfer tool cannot run or failed (bad input: `usage`; a failed run:
    /// otherwise); `message` carries its own error line.
    #[error("{message}")]
    Transfer { usage: bool, message: String },
    /// The run directory (configuration, checkpoint, results).
    #[error(transparent)]
    Run(#[from] dspnet_run::RunError),
    /// Exporting a width for the transfer protocols.
    #[error(transparent)]
    Deploy(#[from] dspnet_deploy::DeployError),
    /// The data pipeline.
    #[error(transparent)]
    Pipeline(#[from] dspnet_pipeline::PipelineError),
    /// The model (e.g. a width the model was not built with).
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A file-system error with the path involved.
    #[error(transparent)]
    File(#[from] dspnet_core::PathError),
}

impl EvalError {
    /// An [`EvalError::Transfer`] for bad input (a missing venv package, the tool's usage error).
    pub fn transfer_usage(message: impl Into<String>) -> Self {
        EvalError::Transfer { usage: true, message: message.into() }
    }

    /// An [`EvalError::Transfer`] for a transfer run that failed.
    pub fn transfer_failed(message: impl Into<String>) -> Self {
        EvalError::Transfer { usage: false, message: message.into() }
    }

    /// An [`EvalError::File`] for an I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::File(dspnet_core::PathError::new(path, source))
    }

    /// An [`EvalError::TransferData`] about the dataset folder `dir`.
    pub fn transfer_data(dir: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EvalError::TransferData { dir: dir.into(), message: message.into() }
    }

    /// An [`EvalError::Option`] about `option`.
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        EvalError::Option { option: option.into(), message: message.into() }
    }
}

/// Result alias of this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
