//! `dspnet-select`: the width of a DSPNet run with the best evaluated accuracy that fits a
//! budget, explained in one table and exported.
//!
//! ```text
//! dspnet-select RUN (--max-latency-ms X | --max-mflops Y | --max-params Z)
//!     [--metric linear|knn] [--batch-size 1] [--threads T] [--repeats 20] [--remeasure]
//!     [--out DIR]
//! ```
//! Accuracy: the pretrained top-1 of `--metric` in RUN/results.json (dspnet-eval). Latency: the
//! median at `--batch-size` on this machine, taken from RUN/profile.json when dspnet-profile
//! measured it here with the same threads, batch size and compute format, else measured now
//! (the output says which). The chosen width is exported like `dspnet-export` does, to
//! DIR/<width_tag> (default RUN/export/<width_tag>).
//!
//! Exit codes: 0 chosen and exported; 1 no width fits the budget (one line saying what the
//! smallest width needs); 2 bad input (one line `error: ...`).

#[path = "deploy_cli.rs"]
mod deploy_cli;

use clap::Parser;
use dspnet_deploy::profile::{apply_threads, measure, run_format, Profile, PROFILE};
use dspnet_deploy::select::{check_any_fits, select, width_label, Budget, Metric, WidthRow};
use dspnet_deploy::{export_loaded, load_run, DeployError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Pick the most accurate width of a DSPNet run that fits a latency, MFLOPs or parameter budget, and export it"
)]
struct Args {
    /// Run directory written by dspnet-stream-train and evaluated by dspnet-eval.
    run: PathBuf,
    /// Budget: median latency in ms at --batch-size on this machine.
    #[arg(long, allow_negative_numbers = true)]
    max_latency_ms: Option<f64>,
    /// Budget: millions of multiply-accumulates of one image at the run's image size.
    #[arg(long, allow_negative_numbers = true)]
    max_mflops: Option<f64>,
    /// Budget: parameters of the standalone sub-network.
    #[arg(long, allow_negative_numbers = true)]
    max_params: Option<f64>,
    /// Accuracy that ranks the widths: linear (probe) or knn.
    #[arg(long, default_value = "linear")]
    metric: String,
    /// Images per forward pass for the latency.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    batch_size: i64,
    /// libtorch intra-op threads (default: the run's train.threads, or libtorch's default).
    #[arg(long, allow_negative_numbers = true)]
    threads: Option<i32>,
    /// Timed passes per width when latency is measured here.
    #[arg(long, default_value_t = 20)]
    repeats: usize,
    /// Measure latency now even if RUN/profile.json would do.
    #[arg(long)]
    remeasure: bool,
    /// Export folder; the chosen width goes to DIR/<width_tag> (default RUN/export).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn run(args: Args) -> Result<(), DeployError> {
    let budget = Budget::from_options(args.max_latency_ms, args.max_mflops, args.max_params)?;
    let metric: Metric = args.metric.parse()?;
    if args.batch_size < 1 {
        return Err(DeployError::Usage(format!("--batch-size {}: give at least 1 image", args.batch_size)));
    }
    if args.repeats < 1 {
        return Err(DeployError::Usage("--repeats 0: give at least 1 timed pass".into()));
    }
    let run = load_run(&args.run)?;
    let results = args.run.join(dspnet_run::layout::RESULTS);
    let widths = run.trained_widths.as_slice().to_vec();
    if !widths.iter().any(|&w| run.top1(w, metric.name()).is_some()) {
        let what = if run.results.is_empty() {
            "does not exist".to_string()
        } else {
            format!("has no {} result of the pretrained network", metric.name())
        };
        return Err(DeployError::NoResults(format!(
            "{} {what}; run dspnet-eval {} --protocol {} first (or pick another --metric)",
            results.display(),
            args.run.display(),
            metric.name()
        )));
    }
    let mut rows: Vec<WidthRow> = widths
        .iter()
        .map(|&w| WidthRow {
            width: w,
            params: run.params(w),
            flops: run.macs(w),
            latency_ms: f64::NAN,
            top1: run.top1(w, metric.name()),
        })
        .collect();
    if !matches!(budget, Budget::LatencyMs(_)) {
        // an MFLOPs or parameter budget nothing meets: say so before measuring anything
        check_any_fits(&rows, budget)?;
    }
    let threads = apply_threads(args.threads, &run)?;
    let format = run_format(&run);
    let profile_path = args.run.join(PROFILE);
    let reuse = if args.remeasure {
        Err("--remeasure".to_string())
    } else if profile_path.exists() {
        Profile::read(&profile_path)
            .map_err(|e| e.to_string())
            .and_then(|p| p.matches(&run, threads, args.batch_size, format).map(|()| p))
    } else {
        Err(format!("no {PROFILE}"))
    };
    match &reuse {
        Ok(p) => println!(
            "latency: from {} (measured on this machine; threads: {threads}, batch {}, {}{})",
            profile_path.display(),
            args.batch_size,
            format.name(),
            p.load_average_1min.map(|l| format!(", load average {l:.2}")).unwrap_or_default()
        ),
        Err(why) => println!(
            "latency: measured now ({why}): median of {} passes; threads: {threads}, batch {}, {}",
            args.repeats,
            args.batch_size,
            format.name()
        ),
    }
    for row in &mut rows {
        let w = row.width;
        row.latency_ms = match &reuse {
            Ok(p) => {
                p.width(w).and_then(|x| x.at_batch(args.batch_size)).expect("matches() checked every width").median_ms
            }
            Err(_) => measure(&run, w, args.batch_size, format, 3, args.repeats)?.median_ms,
        };
    }
    let sel = select(&rows, budget, metric, &results.display().to_string())?;
    println!();
    print!("{}", sel.table(&format!("ms (batch {})", args.batch_size)));
    println!();
    let c = sel.chosen();
    let out = args.out.unwrap_or_else(|| args.run.join("export"));
    let summary = export_loaded(&run, c.row.width, &out, false)?;
    println!(
        "chosen: {} ({} top-1 {:.2} %, needs {} <= {} {:?}); exported to {}",
        width_label(c.row.width),
        metric.name(),
        c.row.top1.expect("chosen widths have a result"),
        budget.format_cost(c.cost),
        budget.option(),
        budget.limit(),
        summary.dir.display()
    );
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
