//! Errors of the deploy crate. Every `Display` is one line naming the file, folder or option and
//! the fix; binaries print it after `error: ` and exit with code 2.

use thiserror::Error;

/// Everything loading a run, exporting, profiling and selecting can fail with.
#[derive(Debug, Error)]
pub enum DeployError {
    /// A run directory or one of its files that is missing or unusable (names the path).
    #[error("{0}")]
    Run(String),
    /// A checkpoint that is corrupt, truncated, or written for another architecture than the
    /// run's `config.toml` describes.
    #[error("{0}")]
    Checkpoint(String),
    /// A width multiplier the run did not train; `message` names the option, the run and the
    /// trained widths.
    #[error("{message}")]
    Width { width: f64, message: String },
    /// An output folder or file that cannot be written.
    #[error("{0}")]
    Output(String),
    /// A sub-network that the target format cannot express (e.g. channel counts timm's
    /// `ResNet` cannot build).
    #[error("{0}")]
    Unsupported(String),
    /// A command-line value that cannot be used (names the option and the fix).
    #[error("{0}")]
    Usage(String),
    /// `results.json` lacks the evaluation a command needs (says to run dspnet-eval).
    #[error("{0}")]
    NoResults(String),
    /// No width fits the budget of `dspnet-select` (names what the smallest width needs). Not
    /// bad input: `dspnet-select` exits with code 1 on it.
    #[error("{0}")]
    NoWidthFits(String),
    /// Errors of the run directory (configuration, checkpoint, results).
    #[error(transparent)]
    RunDir(#[from] dspnet_run::RunError),
    /// Errors from the model crate.
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// libtorch errors.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// File-system errors with the path involved.
    #[error(transparent)]
    File(#[from] dspnet_core::PathError),
}

impl DeployError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        DeployError::File(dspnet_core::PathError::new(path, source))
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DeployError>;
