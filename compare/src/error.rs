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
    /// Errors from the trainer (config validation, training, evaluation).
    #[error(transparent)]
    Trainer(#[from] dspnet_trainer::TrainerError),
    /// Errors from the data pipeline (shards, image folders).
    #[error(transparent)]
    Pipeline(#[from] dspnet_pipeline::PipelineError),
    /// Errors from the model (a width the model was not built with, ...).
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// File-system errors with the path involved.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CompareError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        CompareError::Io { path: path.as_ref().display().to_string(), source }
    }
}

/// Result with [`CompareError`].
pub type Result<T> = std::result::Result<T, CompareError>;
