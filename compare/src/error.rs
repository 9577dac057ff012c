//! Errors of `dspnet-compare`. Each variant carries what it is about (option, config file,
//! sub-run, width, file) as data; its `Display` is the one line naming it and the fix, which the
//! binary prints after `error: ` and exits with code 2.

use std::path::PathBuf;
use thiserror::Error;

/// Everything a comparison can fail with.
#[derive(Debug, Error)]
pub enum CompareError {
    /// A command-line option or config key (`--preset`, `--seeds`, `--out`,
    /// `compare.data.per_class`, ...) that cannot be used; `message` names it and the fix.
    #[error("{message}")]
    Option { option: String, message: String },
    /// A comparison config file (`path`: as given, or the preset's file) that cannot be read, is
    /// not TOML or has the wrong shape; `message` names it.
    #[error("{message}")]
    ConfigFile { path: String, message: String },
    /// A compared width for which no one-by-one network exists; `message` says why and the fix.
    #[error("{message}")]
    Width { width: f64, message: String },
    /// A same-budget run of `steps` optimiser steps that cannot be planned.
    #[error("{message}")]
    SameBudget { steps: u64, message: String },
    /// A training or evaluation sub-run (`run`: its name, e.g. `byol-w0.25` or `seed1/dspnet`,
    /// or its folder) that failed or does not match what it should be.
    #[error("{message}")]
    SubRun { run: String, message: String },
    /// A file a sub-run reads or writes (`compare-request.json`, `metrics.jsonl`, its records)
    /// that is missing or does not hold what it should; `message` names it.
    #[error("{message}")]
    RunFile { path: PathBuf, message: String },
    /// The comparison was interrupted (SIGINT/SIGTERM); the finished sub-runs in `out` are kept.
    #[error("interrupted; finished sub-runs in {} are kept: rerun the same command with --resume to continue", out.display())]
    Interrupted { out: PathBuf },
    /// No evaluation result to draw in the plot `path`.
    #[error("no evaluation result to plot")]
    NothingToPlot { path: PathBuf },
    /// A plot that cannot be drawn (missing font, unwritable PNG; names the file).
    #[error(transparent)]
    Plot(#[from] dspnet_core::plot::PlotError),
    /// Something of the program itself that fails (e.g. its own binary cannot be located).
    #[error("{0}")]
    Internal(String),
    /// Errors from the trainer (training a sub-run).
    #[error(transparent)]
    Trainer(#[from] dspnet_trainer::TrainerError),
    /// Errors of a run directory (configuration, checkpoint, results).
    #[error(transparent)]
    Run(#[from] dspnet_run::RunError),
    /// Errors of the evaluation of a sub-run.
    #[error(transparent)]
    Eval(#[from] dspnet_eval::EvalError),
    /// Errors from the data pipeline (shards, image folders).
    #[error(transparent)]
    Pipeline(#[from] dspnet_pipeline::PipelineError),
    /// Errors from the model (a width the model was not built with, ...).
    #[error(transparent)]
    Model(#[from] dspnet_model::ModelError),
    /// File-system errors with the path involved.
    #[error(transparent)]
    File(#[from] dspnet_core::PathError),
}

impl CompareError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CompareError::File(dspnet_core::PathError::new(path, source))
    }

    /// A [`CompareError::Option`] about `option`.
    pub fn option(option: impl Into<String>, message: impl Into<String>) -> Self {
        CompareError::Option { option: option.into(), message: message.into() }
    }

    /// A [`CompareError::ConfigFile`] about the config file `path`.
    pub fn config_file(path: impl Into<String>, message: impl Into<String>) -> Self {
        CompareError::ConfigFile { path: path.into(), message: message.into() }
    }

    /// A [`CompareError::SubRun`] about the sub-run `run`.
    pub fn sub_run(run: impl Into<String>, message: impl Into<String>) -> Self {
        CompareError::SubRun { run: run.into(), message: message.into() }
    }

    /// A [`CompareError::RunFile`] about the file `path`.
    pub fn run_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        CompareError::RunFile { path: path.into(), message: message.into() }
    }
}

/// Result with [`CompareError`].
pub type Result<T> = std::result::Result<T, CompareError>;
