//! Errors of the run directory. Every variant carries what it is about (the key, the file, the
//! run) as data; its `Display` is the one line the binaries print after `error: `.

use std::path::PathBuf;

/// Everything reading or writing a run directory can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration value or key that cannot be used. `key` is the dotted config key (or the
    /// command-line option) concerned; `message` says what is wrong and what to do.
    #[error("{message}")]
    Config { key: String, message: String },
    /// A folder that is not (or not yet) a run directory, or a run directory missing a file.
    #[error("{message}")]
    NotARun { dir: PathBuf, message: String },
    /// A checkpoint that cannot be used: missing, corrupt, or of another architecture.
    #[error("{message}")]
    Checkpoint { path: PathBuf, message: String },
    /// An output location that cannot take the run: unwritable or too full.
    #[error("{message}")]
    Output { dir: PathBuf, message: String },
    /// A `results.json` or `metrics.jsonl` that is not what dspnet writes.
    #[error("{message}")]
    Records { path: PathBuf, message: String },
    /// A file-system error with the path involved.
    #[error(transparent)]
    File(#[from] dspnet_core::PathError),
    /// The model cannot be built from the configuration.
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// A chart that cannot be drawn (the font missing, the PNG unwritable); names the file.
    #[error(transparent)]
    Plot(#[from] dspnet_core::plot::PlotError),
    /// libtorch failed (reading or writing tensors).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl RunError {
    /// A [`RunError::Config`] about `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        RunError::Config { key: key.into(), message: message.into() }
    }

    /// A [`RunError::Checkpoint`] about the file at `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        RunError::Checkpoint { path: path.into(), message: message.into() }
    }

    /// A [`RunError::File`] for an I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RunError::File(dspnet_core::PathError::new(path, source))
    }
}

/// Result alias of this crate.
pub type Result<T, E = RunError> = std::result::Result<T, E>;
