//! Shared by the end-to-end tests in tests/ (each file includes it with `mod support;`).

/// `--set` values of the tiny network the CLI tests train on CPU in seconds: 4 base channels
/// (widths 0.25x-1.0x of a small-image ResNet-18 have 1-4 base channels), a 32-unit projector
/// hidden layer with 16-d outputs, batch 16, a 32-sample shuffle buffer and fp32 (exact
/// arithmetic for the tests that compare tensors).
pub const TINY_MODEL: [&str; 6] = [
    "model.base_channels=4",
    "heads.hidden=32",
    "heads.out_dim=16",
    "loader.batch_size=16",
    "loader.shuffle_buffer=32",
    "train.precision=\"fp32\"",
];
