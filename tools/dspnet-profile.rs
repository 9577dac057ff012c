//! `dspnet-profile`: what every width of a DSPNet run costs on THIS machine.
//!
//! ```text
//! dspnet-profile RUN [--batch-sizes 1,64] [--repeats 20] [--warmup 3] [--threads T]
//!     [--widths 0.25,0.5] [--out FILE]
//! ```
//! Per width: parameters, MFLOPs (multiply-accumulates of one image at the run's image size),
//! fp32 weight size, and per batch size the median and p90 latency of repeated eval-mode
//! forward passes in the run's compute format, images/s and the peak memory the passes added
//! (method: `dspnet_deploy::profile` docs). Prints a markdown table, writes RUN/profile.json
//! (or FILE) atomically and, when RUN/results.json has accuracies, accuracy_vs_latency.png
//! beside it. Bad input: one line `error: ...`, exit code 2.

#[path = "deploy_cli.rs"]
mod deploy_cli;

use clap::Parser;
use dspnet_deploy::profile::{
    check_writable, markdown_table, plot, profile_run, write_profile, ProfileSettings, PLOT, PROFILE,
};
use dspnet_deploy::{load_run, DeployError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Measure params, FLOPs, latency, throughput and peak memory of every width of a DSPNet run on this machine"
)]
struct Args {
    /// Run directory written by dspnet-stream-train.
    run: PathBuf,
    /// Comma-separated batch sizes (images per forward pass).
    #[arg(long, value_delimiter = ',', default_value = "1,64", allow_negative_numbers = true)]
    batch_sizes: Vec<i64>,
    /// Timed forward passes per width and batch size.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Untimed warm-up passes before them.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// libtorch intra-op threads (default: the run's train.threads, or libtorch's default).
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<i32>,
    /// Comma-separated widths (default: every trained width).
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    widths: Option<Vec<f64>>,
    /// Where to write the profile JSON (default RUN/profile.json); the plot goes beside it.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn run(args: Args) -> Result<(), DeployError> {
    let settings = ProfileSettings {
        widths: args.widths,
        batch_sizes: args.batch_sizes,
        warmup: args.warmup,
        repeats: args.repeats,
        threads: args.threads,
    };
    let run = load_run(&args.run)?;
    let out = args.out.unwrap_or_else(|| args.run.join(PROFILE));
    check_writable(&out)?;
    let profile = profile_run(&run, &settings)?;
    write_profile(&profile, &out)?;
    let m = &profile.machine;
    println!(
        "{} ({} logical CPUs), libtorch threads: {}, {} {}, {}x{}x{} input, median/p90 of {} passes after {} warm-up{}",
        m.cpu_model,
        m.logical_cpus,
        profile.threads,
        profile.dtype,
        if profile.channels_last { "channels-last" } else { "contiguous" },
        profile.input.channels,
        profile.input.height,
        profile.input.width,
        profile.repeats,
        profile.warmup,
        profile.load_average_1min.map(|l| format!(", load average {l:.2} before")).unwrap_or_default()
    );
    println!();
    print!("{}", markdown_table(&profile, &run.results));
    println!();
    println!("profile: {}", out.display());
    let png = out.parent().filter(|p| !p.as_os_str().is_empty()).map(|p| p.join(PLOT)).unwrap_or_else(|| PLOT.into());
    let plot_batch = if settings.batch_sizes.contains(&1) {
        1
    } else {
        *settings.batch_sizes.iter().min().expect("validated non-empty")
    };
    if run.results.is_empty() {
        println!("no accuracy known ({} has no results.json; run dspnet-eval): plot skipped", args.run.display());
    } else if plot(&profile, &run.results, plot_batch, &png)? {
        println!("plot: {}", png.display());
    } else {
        println!("results.json has no result of a profiled width: plot skipped");
    }
    Ok(())
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    dspnet_core::cli::init_logging();
    match deploy_cli::parse_args::<Args>() {
        Ok(args) => deploy_cli::finish(run(args)),
        Err(code) => code,
    }
}
