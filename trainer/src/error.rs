//! Trainer errors. Each `Display` is one line naming the file or option and the fix; binaries
//! print it after `error: ` and exit with code 2.

use thiserror::Error;

/// Everything the trainer and the evaluation can fail with.
#[derive(Debug, Error)]
pub enum TrainerError {
    /// Bad configuration or command-line option.
    #[error("{0}")]
    Config(String),
    /// A checkpoint or run directory that cannot be used.
    #[error("{0}")]
    Checkpoint(String),
    /// A non-finite loss (names width and step).
    #[error("{0}")]
    NonFinite(String),
    /// Errors from the data pipeline.
    #[error(transparent)]
    Pipeline(#[from] dspnet_pipeline::PipelineError),
    /// Errors from the model (e.g. a width the model was not built with).
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// Data-parallel errors (launcher variables, rendezvous, a dead or hung peer).
    #[error(transparent)]
    Distributed(#[from] dspnet_dist::DistError),
    /// libtorch errors.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// File-system errors with the path involved.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl TrainerError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        TrainerError::Io { path: path.as_ref().display().to_string(), source }
    }
}
