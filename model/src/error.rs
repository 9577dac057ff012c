//! Typed errors of the model crate. Every message is one line that names the bad value and says
//! what to pass instead.

/// Errors returned by [`crate`] constructors and forward passes.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A width multiplier that is not in the model's [`crate::WidthList`].
    #[error("width {width} is not in this model's width list {list:?}; pass one of them")]
    WidthNotInList { width: f64, list: Vec<f64> },

    /// A width list that is empty, unsorted, has duplicates or values outside (0, 1].
    #[error("invalid width list {list:?}: {reason}")]
    InvalidWidthList { list: Vec<f64>, reason: String },

    /// A configuration value that cannot build a network (e.g. `base_channels = 0`).
    #[error("invalid model config: {0}")]
    InvalidConfig(String),

    /// An input tensor whose shape does not fit the layer/network at the requested width.
    #[error("input shape {got:?} does not fit {what}: expected {expected}")]
    BadInput { what: String, got: Vec<i64>, expected: String },

    /// CPU autocast could not be switched (see [`crate::autocast`]).
    #[error("CPU autocast: {0}")]
    Autocast(String),
    /// A cross-replica collective (synchronised batch norm) failed: a peer process died or hung.
    #[error("synchronised batch norm: {0}")]
    Distributed(String),

    /// A `--device` value that is malformed or names a device libtorch cannot see.
    #[error("{0}")]
    Device(String),

    /// An error raised by libtorch during a forward pass.
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
