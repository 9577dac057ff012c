//! Errors of `dspnet-compare`. Each `Display` is one line naming the file or option and the fix;
//! the binary prints it after `error: ` and exits with code 2.

use thiserror::Error;

/// Everything a comparison can fail with.
#[derive(Debug, Error)]
pub enum CompareError {
    /// Bad configuration, command-line option or output folder.
    #[error("{0}")]
    Config(String),
    /// A training or evaluation sub-run that failed or was interrupted.
    #[error("{0}")]
    SubRun(String),
    /// Errors from the trainer (training a sub-run).
    #[error(transparent)]
    Trainer(#[from] dspnet_trainer::TrainerError),
    /// Errors of a run directory (configuration, checkpoint, results).
    #[error(transparent)]
    Run(#[from] dspnet_run::RunError),
    /// Errors of the evaluation of a sub-run.
    #[error(transparent)]
    Eval(#[from] dspnet_eval::EvalError),
    /// Errors from the data pipeline (shards, image folders).
    #[error(transparent)]
    Pipeline(#[from] dspnet_pipeline::PipelineError),
    /// Errors from the model (a width the model was not built with, ...).
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// File-system errors with the path involved.
    #[error(transparent)]
    File(#[from] dspnet_core::PathError),
}

impl CompareError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        CompareError::File(dspnet_core::PathError::new(path, source))
    }
}

/// Result with [`CompareError`].
pub type Result<T> = std::result::Result<T, CompareError>;
