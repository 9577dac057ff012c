//! `dspnet-eval`: evaluate EVERY width of a DSPNet run (kNN monitor and linear probe on frozen
//! features), with parameters and FLOPs per width.
//!
//! ```text
//! dspnet-eval runs/fmnist --train-shards 'data/train-{000000..000005}.tar' \
//!     --test-shards 'data/test-{000000..000000}.tar' [--protocol knn,linear] [--random-init]
//! ```
//! Prints a table, writes RUN/results.json (one record per width, init and protocol) and
//! RUN/accuracy_vs_flops.png.

use clap::Parser;
use dspnet_pipeline::source::expand_pattern;
use dspnet_trainer::cli::{exit_with, init_logging, parse_device};
use dspnet_trainer::eval_run::{evaluate_run, EvalRequest, Protocol};
use dspnet_trainer::report::table;
use dspnet_trainer::TrainerError;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Evaluate every width of a DSPNet run: params, FLOPs, kNN and linear-probe top-1")]
struct Args {
    /// Run directory written by dspnet-stream-train.
    run: PathBuf,
    /// Shards whose un-augmented images train the kNN bank / linear probe.
    #[arg(long)]
    train_shards: String,
    /// Shards to measure top-1 on.
    #[arg(long)]
    test_shards: String,
    /// Comma-separated protocols: knn, linear.
    #[arg(long, default_value = "knn,linear")]
    protocol: String,
    /// Comma-separated widths (default: every trained width).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<f64>>,
    /// Also evaluate the same architecture at random initialisation (same seed).
    #[arg(long)]
    random_init: bool,
    /// Re-estimate every evaluated network's BN statistics on clean training images first.
    #[arg(long)]
    calibrate_bn: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn run(args: Args) -> Result<(), TrainerError> {
    let protocols = args.protocol.split(',').map(str::parse).collect::<Result<Vec<Protocol>, _>>()?;
    let req = EvalRequest {
        train_shards: expand_pattern(&args.train_shards)?,
        test_shards: expand_pattern(&args.test_shards)?,
        protocols,
        widths: args.widths,
        random_init: args.random_init,
        calibrate_bn: args.calibrate_bn,
        device: parse_device(&args.device)?,
        run_dir: args.run,
    };
    let records = evaluate_run(&req)?;
    print!("{}", table(&records));
    println!("results: {}", req.run_dir.join("results.json").display());
    Ok(())
}

fn main() -> ExitCode {
    init_logging();
    exit_with(run(Args::parse()))
}
