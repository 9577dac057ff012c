//! The bottom crate of the dspnet workspace: small helpers that several crates need, each
//! written once. No libtorch here, so it builds in seconds and every crate can depend on it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`fs`] | atomic writes (temp file, fsync, rename, fsync of the folder), sha256 |
//! | [`stats`] | median, percentiles (numpy's default), mean and sample standard deviation |
//! | [`schedule`] | the warm-up + cosine learning rate and BYOL's cosine EMA ramp |
//! | [`machine`] | CPU model, bf16 support, load average, process CPU time |
//! | [`memory`] | resident memory from `/proc/self/status`, peak-RSS measurements |
//! | [`version`] | the code version recorded in results (`code_version!`) |
//! | [`plot`] | line charts as PNG (the one place that touches plotters and the font) |
//! | [`cli`] | the binaries' edge: logging, Ctrl-C, exit codes, shell quoting, quiet broken pipes |

pub mod cli;
pub mod fs;
pub mod machine;
pub mod memory;
pub mod plot;
pub mod schedule;
pub mod stats;
pub mod version;

pub use fs::PathError;
