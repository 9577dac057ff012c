//! The tiny configuration the workspace's tests train on a CPU in seconds, in one place: as
//! `--set` values for the command-line tests and as a [`RunConfig`] for in-process tests.

use crate::config::RunConfig;

/// The preset the tiny configuration starts from (`configs/cpu-fashion-mnist.toml`).
pub const PRESET: &str = include_str!("../../configs/cpu-fashion-mnist.toml");

/// `--set` values of the tiny network: 4 base channels (widths 0.25x-1.0x of a small-image
/// ResNet-18 have 1-4 base channels), a 32-unit projector hidden layer with 16-d outputs,
/// batch 16, a 32-sample shuffle buffer and fp32 (exact arithmetic for the tests that compare
/// tensors).
pub const TINY_SETS: [&str; 6] = [
    "model.base_channels=4",
    "heads.hidden=32",
    "heads.out_dim=16",
    "loader.batch_size=16",
    "loader.shuffle_buffer=32",
    "train.precision=\"fp32\"",
];

/// The preset with [`TINY_SETS`] applied and `widths` as `model.widths`.
///
/// # Panics
/// Never for the shipped preset (a test helper: an invalid `widths` list panics with the
/// configuration error).
pub fn tiny_config(widths: &[f64]) -> RunConfig {
    let mut value: toml::Value = toml::from_str(PRESET).expect("the shipped preset is TOML");
    for set in TINY_SETS {
        crate::config::apply_override(&mut value, set).expect("a valid --set");
    }
    let mut cfg = RunConfig::from_toml_str(&toml::to_string(&value).expect("serialises"), "tiny").expect("valid");
    cfg.model.widths = widths.to_vec();
    cfg.validate().unwrap_or_else(|e| panic!("tiny config with widths {widths:?}: {e}"));
    cfg
}
