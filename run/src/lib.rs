//! # dspnet-run
//!
//! The run directory: one home for the files a training run writes and everything downstream
//! (evaluation, export, profiling, comparisons) reads. Each file has one owner module here,
//! with one writer and one reader:
//!
//! | file | module | written by |
//! |---|---|---|
//! | `config.toml` | [`config`]: [`RunConfig`] = [`Recipe`] (what determines the weights) + [`Runtime`] (what may change on resume) | the trainer, once |
//! | `checkpoint.safetensors` + `checkpoint.json` | [`checkpoint`] (atomic, sha256-checked) | the trainer |
//! | `metrics.jsonl` + `events.out.tfevents.*` | [`metrics`] (one record per write, mirrored as TensorBoard scalars by [`tensorboard`]) | the trainer |
//! | `curves_loss.png`, `curves_knn.png` | [`curves`] (drawn from `metrics.jsonl`) | the trainer, at the end of every invocation |
//! | `results.json` | [`results`] ([`EvalRecord`], merged by width, protocol and init) | `dspnet-eval` |
//!
//! [`RunDir`] names every path of a run directory and checks an output location before a run
//! starts; [`backbone`] loads the trained online backbone with strict names and shapes.

pub mod backbone;
pub mod checkpoint;
pub mod config;
pub mod curves;
pub mod error;
pub mod layout;
pub mod metrics;
pub mod results;
pub mod tensorboard;
pub mod testing;

pub use config::RunConfig;
pub use error::{Result, RunError};
pub use layout::RunDir;
pub use results::EvalRecord;
