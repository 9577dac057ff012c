//! Shared by the end-to-end tests in tests/ (each file includes it with `mod support;`).

/// `--set` values of the tiny network the CLI tests train on CPU in seconds (one definition for
/// the whole workspace: [`dspnet_run::testing::TINY_SETS`]).
pub use dspnet_run::testing::TINY_SETS as TINY_MODEL;
