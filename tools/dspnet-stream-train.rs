//! `dspnet-stream-train`: pretrain one slimmable network with DSPNet from WebDataset shards.
//!
//! ```text
//! dspnet-stream-train --config configs/cpu-fashion-mnist.toml --shards 'data/train-{000000..000005}.tar' \
//!     --out runs/fmnist [--set key=value]... [--max-steps N] [--device cpu|cuda] [--overwrite]
//! ```
//! Writes RUN/config.toml (resolved), RUN/checkpoint.{safetensors,json} (periodic and final,
//! atomic) and RUN/metrics.jsonl. Ctrl-C finishes the current step and saves. Exit code 2 with
//! one line on bad input.

use clap::Parser;
use dspnet_pipeline::source::expand_pattern;
use dspnet_trainer::cli::{exit_with, init_logging, parse_device};
use dspnet_trainer::config::RunConfig;
use dspnet_trainer::run::{train, TrainRequest};
use dspnet_trainer::TrainerError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(version, about = "Pretrain one slimmable network with DSPNet (SSL + in-place distillation) from WebDataset shards")]
struct Args {
    /// TOML config (see configs/).
    #[arg(long)]
    config: PathBuf,
    /// Shard pattern, e.g. 'data/train-{000000..000005}.tar' or a folder of shards.
    #[arg(long)]
    shards: String,
    /// Run directory to create.
    #[arg(long)]
    out: PathBuf,
    /// Override a config value, e.g. --set optim.lr=0.5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Stop after N optimiser steps (schedules keep the configured length).
    #[arg(long)]
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

fn run(args: Args) -> Result<(), TrainerError> {
    let config = RunConfig::load(&args.config, &args.set)?;
    let device = parse_device(&args.device)?;
    let shards = expand_pattern(&args.shards)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing the current step and saving a checkpoint (Ctrl-C again to abort)");
    });
    let out = args.out.clone();
    let summary = train(TrainRequest {
        config,
        shards,
        run_dir: args.out,
        max_steps: args.max_steps,
        device,
        overwrite: args.overwrite,
        stop,
        progress: !args.quiet,
    })?;
    println!(
        "{} {} steps, {} images in {:.1} s ({:.1} images/s, {}), data wait {:.1}% -> {}",
        if summary.interrupted { "interrupted after" } else { "trained" },
        summary.steps,
        summary.images,
        summary.seconds,
        summary.images_per_sec,
        summary.precision,
        summary.data_wait_fraction * 100.0,
        out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    exit_with(run(args))
}
