//! `dspnet-stream-train`: pretrain one slimmable network with DSPNet from WebDataset shards.
//!
//! ```text
//! dspnet-stream-train --config configs/cpu-fashion-mnist.toml --shards 'data/train-{000000..000005}.tar' \
//!     --out runs/fmnist [--set key=value]... [--max-steps N] [--device cpu|cuda] [--overwrite]
//! dspnet-stream-train --resume runs/fmnist [--max-steps N] [--device cpu|cuda]
//! dspnet-stream-train --config C --shards S --out runs/fmnist --resume-if-exists   # one command for
//!     # the first start and every requeue of a cluster job
//! ```
//! Writes RUN/config.toml (resolved), RUN/checkpoint.{safetensors,json} (every
//! `train.checkpoint_every` steps, at every epoch end and at the end; atomic) and
//! RUN/metrics.jsonl. `--resume RUN` continues a run from its checkpoint exactly as if it had not
//! stopped, with the run's own config and shards. SIGINT (Ctrl-C) or SIGTERM (what SLURM,
//! Kubernetes and spot instances send before SIGKILL) finishes the current step, saves a
//! checkpoint and exits with 130 or 143. Exit code 2 with one line on bad input.

use clap::Parser;
use dspnet_core::cli::{exit_with, init_logging, shell_word, StopSignal};
use dspnet_model::parse_device;
use dspnet_pipeline::source::expand_pattern;
use dspnet_run::layout::CONFIG;
use dspnet_run::{RunConfig, RunDir};
use dspnet_trainer::{train, TrainRequest, TrainerError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Pretrain one slimmable network with DSPNet (SSL + in-place distillation) from WebDataset shards"
)]
struct Args {
    /// TOML config (see configs/). With --resume: optional, and it must equal the run's
    /// config.toml except for thread counts, logging, checkpoint frequency and eval settings.
    #[arg(long, required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Shard pattern, e.g. 'data/train-{000000..000005}.tar' or a folder of shards. With
    /// --resume: optional (default: the run's own shards; only their location may change).
    #[arg(long, required_unless_present = "resume")]
    shards: Option<String>,
    /// Run directory to create.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// With --out: continue the run there from its checkpoint when it has one (as --resume
    /// would, checking that --config/--set give the same recipe), else start it. One command
    /// line for the first start of a cluster job and every requeue after a preemption.
    #[arg(long, requires = "out", conflicts_with = "overwrite")]
    resume_if_exists: bool,
    /// Continue the run in this directory from its last checkpoint, exactly (same config, shards,
    /// stream position, optimiser and random state).
    #[arg(long, value_name = "RUN", conflicts_with = "overwrite")]
    resume: Option<PathBuf>,
    /// Override a config value, e.g. --set optim.lr=0.5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Stop once the run has taken N optimiser steps in all (counted from the start of the run,
    /// also when resuming); the schedules keep the configured length.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_steps: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Replace the checkpoint of an existing run directory.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar (logs only).
    #[arg(long)]
    quiet: bool,
}

/// The run's own config, with harmless changes from --config/--set (see `RunConfig::for_resume`).
fn resume_config(run: &std::path::Path, config: Option<&PathBuf>, sets: &[String]) -> Result<RunConfig, TrainerError> {
    let dir = RunDir::new(run);
    if !dir.file(CONFIG).exists() {
        return Err(TrainerError::option(
            "--resume",
            format!(
                "--resume {}: not a dspnet run directory ({CONFIG} missing); give the --out of an earlier dspnet-stream-train",
                run.display()
            ),
        ));
    }
    let own = dir.read_config()?;
    if config.is_none() && sets.is_empty() {
        return Ok(own);
    }
    let path = dir.file(CONFIG);
    let requested = RunConfig::load(config.unwrap_or(&path), sets)?;
    Ok(RunConfig::for_resume(&own, &requested, &path)?)
}

/// What an invocation did.
enum Outcome {
    /// Trained to its end or to --max-steps.
    Trained,
    /// Stopped by a signal after saving; the exit code is 128 + its number.
    Stopped(u8),
    /// --resume-if-exists found the run finished: nothing to do.
    AlreadyFinished,
}

/// Trains as asked.
fn run(args: Args) -> Result<Outcome, TrainerError> {
    let found = args.out.as_ref().filter(|o| args.resume_if_exists && RunDir::new(o).has_checkpoint());
    let resume = args.resume.clone().or_else(|| found.cloned());
    if let Some(run) = &found {
        let state = dspnet_run::checkpoint::load(run)?.state;
        // a requeue after the job's end: the planned length, or the --max-steps it was given
        if state.step >= state.total_steps || args.max_steps.is_some_and(|m| state.step >= m) {
            println!("{} is finished ({} steps); nothing to do", run.display(), state.step);
            return Ok(Outcome::AlreadyFinished);
        }
        eprintln!("resuming {} from its checkpoint at step {} (--resume-if-exists)", run.display(), state.step);
    }
    let config = match &resume {
        Some(run) => resume_config(run, args.config.as_ref(), &args.set)?,
        None => RunConfig::load(args.config.as_ref().expect("clap requires --config"), &args.set)?,
    };
    let device = parse_device(&args.device)?;
    let shards = match &args.shards {
        Some(p) => expand_pattern(p).map_err(|e| TrainerError::option("--shards", format!("--shards: {e}")))?,
        None => Vec::new(), // --resume: the run's own
    };
    let out = match (&resume, &args.out) {
        (Some(run), _) => run.clone(),
        (None, Some(out)) => out.clone(),
        (None, None) => unreachable!("clap requires --out without --resume"),
    };
    let stop = StopSignal::install(Some(
        "interrupt: finishing the current step and saving a checkpoint (Ctrl-C again to abort)",
    ))
    .map_err(|e| TrainerError::option("signals", format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    let summary = train(TrainRequest {
        config,
        shards,
        run_dir: out.clone(),
        max_steps: args.max_steps,
        device,
        overwrite: args.overwrite,
        resume: resume.is_some(),
        stop: stop.clone(),
        progress: !args.quiet,
    })?;
    let resumed =
        if summary.start_step > 0 { format!("resumed at step {}, ", summary.start_step) } else { String::new() };
    let skipped = if summary.skipped_nonfinite > 0 {
        format!(", {} non-finite steps skipped", summary.skipped_nonfinite)
    } else {
        String::new()
    };
    println!(
        "{resumed}{} {} steps, {} images in {:.1} s ({:.1} images/s, {}), data wait {:.1}%{skipped} -> {}",
        if summary.interrupted { "interrupted after" } else { "trained" },
        summary.steps,
        summary.images,
        summary.seconds,
        summary.images_per_sec,
        summary.precision,
        summary.data_wait_fraction * 100.0,
        out.display()
    );
    if !summary.interrupted {
        return Ok(Outcome::Trained);
    }
    // the program as it was invoked (it may not be on PATH), and the run folder as one shell word
    let program = std::env::args().next().unwrap_or_else(|| "dspnet-stream-train".into());
    let how = match summary.stopped_by {
        Some(15) => "stopped by SIGTERM",
        _ => "interrupted",
    };
    eprintln!(
        "{how}: checkpoint saved; continue with: {} --resume {}",
        shell_word(&program),
        shell_word(&out.to_string_lossy())
    );
    Ok(Outcome::Stopped(stop.exit_code()))
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    init_logging();
    let args = Args::parse();
    match run(args) {
        // 128 + the signal: the shell's code for a command stopped by it (130 SIGINT, 143 SIGTERM)
        Ok(Outcome::Stopped(code)) => ExitCode::from(code),
        other => exit_with(other.map(|_| ())),
    }
}
