//! `dspnet-compare`: DSPNet once over a width list against plain BYOL trained separately at each
//! width, same shards and recipe, every network evaluated with the same protocols; accuracy per
//! width and the measured cost (wall time, training FLOPs, peak memory) side by side.
//!
//! ```text
//! dspnet-compare --preset cpu --out runs/compare-cpu            # shards a CIFAR-10 subset itself
//! dspnet-compare --config configs/compare-gpu.toml --train-shards 'data/train-{000000..000004}.tar' \
//!     --test-shards 'data/test-000000.tar' --out runs/compare [--widths 0.25,0.5,1.0] [--one-by-one-widths 0.25,1.0] \
//!     [--protocols knn,linear,transfer-linear --transfer-data DIR] [--same-budget] [--seeds 0,1,2] [--resume] [--baseline-from DIR] [--set key=value]... [--device cuda]
//!     [--only dspnet,byol-w1_00]   # just these sub-runs (parallel jobs sharing --out), no report
//! ```
//! Writes OUT/report.md, OUT/compare.json, OUT/compare.png and OUT/curves/*.png (atomically) and
//! one run directory per training (per seed in OUT/seed{s}/ with `--seeds`). `--resume` keeps
//! every finished sub-run. Exit code 2 with one line on bad input; 130 or 143 when SIGINT or SIGTERM
//! stopped it (the running training saves a checkpoint first, so `--resume` continues it).

use clap::Parser;
use dspnet_compare::plan::preset;
use dspnet_compare::{run_compare, CompareError, CompareRequest, Plan};
use dspnet_core::cli::{error_line, exit_with, init_logging, StopSignal};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "DSPNet once against plain BYOL per width: accuracy per width and measured cost, side by side"
)]
struct Args {
    /// Shipped comparison: cpu (CIFAR-10 subset, <= 90 min on 2 cores), gpu (full CIFAR-10,
    /// batch 512, 200 epochs), imagenet (ResNet-50, 224 px; needs --train-shards/--test-shards).
    #[arg(long, conflicts_with = "config", required_unless_present_any = ["config", "child_train"])]
    preset: Option<String>,
    /// Comparison config: a dspnet-stream-train config plus a [compare] section (see configs/compare-*.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training shards (pattern or folder). Default: the config's [compare.data] subset, sharded into OUT/data.
    #[arg(long)]
    train_shards: Option<String>,
    /// Test shards (pattern or folder).
    #[arg(long)]
    test_shards: Option<String>,
    /// Output folder.
    #[arg(long, required_unless_present = "child_train")]
    out: Option<PathBuf>,
    /// Comma-separated widths to compare (default: compare.widths, else model.widths); must include the largest.
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<f64>>,
    /// Comma-separated widths to train a one-by-one network at (default: compare.one_by_one_widths,
    /// else every compared width); a subset of the compared widths. DSPNet still trains all of them.
    #[arg(long, value_delimiter = ',')]
    one_by_one_widths: Option<Vec<f64>>,
    /// Comma-separated evaluation protocols, as dspnet-eval names them (default: compare.protocols).
    #[arg(long)]
    protocols: Option<String>,
    /// Image folder of the transfer-linear protocol (train/<class>/<image>, test/<class>/<image>,
    /// optionally val/); repeatable; replaces compare.transfer_data.
    #[arg(long, value_name = "DIR")]
    transfer_data: Vec<PathBuf>,
    /// Also train the one-by-one networks within DSPNet's measured wall time, split equally.
    #[arg(long)]
    same_budget: bool,
    /// Comma-separated seeds: both sides trained once per seed (train.seed and loader.seed), sub-runs
    /// in OUT/seed{s}/, means, error bars and a verdict per width (default: compare.seeds, else
    /// once with the config's own seeds, sub-runs in OUT).
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Continue the comparison in --out: finished sub-runs are kept, an interrupted training
    /// continues from its last checkpoint, the rest are run.
    #[arg(long)]
    resume: bool,
    /// Reuse (copy into --out) the finished one-by-one runs of the earlier comparison in DIR when
    /// their configs and shards match this one's, so that only DSPNet is trained (ablations).
    #[arg(long, value_name = "DIR")]
    baseline_from: Option<PathBuf>,
    /// Override a config value, e.g. --set train.epochs=10 or --set compare.data.train_per_class=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Comma-separated sub-runs to train and evaluate, of every seed, and nothing else (no
    /// report): dspnet, byol-w0_25, byol-w1_00, ... (the folder names in --out). For running the
    /// trainings as parallel jobs sharing --out (one per GPU or cluster job; implies --resume);
    /// then the same command without --only, with --resume, keeps them and writes the report.
    /// Same-budget runs are trained by that last run.
    #[arg(long, value_delimiter = ',', value_name = "RUNS")]
    only: Option<Vec<String>>,
    /// Internal: train one sub-run (RUN/compare-request.json) in this process.
    #[arg(long, hide = true, value_name = "RUN")]
    child_train: Option<PathBuf>,
}

fn quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn run(args: Args, stop: StopSignal) -> Result<(), CompareError> {
    if let Some(run) = &args.child_train {
        return dspnet_compare::child::child_train(run, stop);
    }
    let mut plan = match (&args.preset, &args.config) {
        (Some(name), _) => {
            let (file, text) = preset(name)?;
            Plan::parse(
                text,
                &format!("preset {name} ({file})"),
                &args.set,
                args.widths.clone(),
                args.protocols.as_deref(),
                args.same_budget,
            )?
        }
        (None, Some(path)) => {
            Plan::load(path, &args.set, args.widths.clone(), args.protocols.as_deref(), args.same_budget)?
        }
        (None, None) => unreachable!("clap requires --preset or --config"),
    };
    if !args.transfer_data.is_empty() {
        plan.compare.transfer_data = args.transfer_data.iter().map(|d| d.to_string_lossy().to_string()).collect();
    }
    let plan = plan.with_seeds(args.seeds.clone())?.with_one_by_one_widths(args.one_by_one_widths.clone())?;
    let exe = std::env::current_exe().map_err(|e| {
        CompareError::Internal(format!("cannot locate the dspnet-compare binary to run the trainings: {e}"))
    })?;
    let command = std::iter::once("dspnet-compare".to_string())
        .chain(std::env::args().skip(1).map(|a| quote(&a)))
        .collect::<Vec<_>>()
        .join(" ");
    let out = args.out.clone().expect("clap requires --out");
    let outcome = run_compare(&CompareRequest {
        plan,
        train_shards: args.train_shards,
        test_shards: args.test_shards,
        out: out.clone(),
        resume: args.resume,
        baseline_from: args.baseline_from,
        device: args.device,
        exe,
        command,
        stop,
        only: args.only,
    })?;
    println!("kept: {}", if outcome.kept.is_empty() { "-".into() } else { outcome.kept.join(" ") });
    println!("trained: {}", if outcome.trained.is_empty() { "-".into() } else { outcome.trained.join(" ") });
    if !outcome.reused.is_empty() {
        println!("reused: {}", outcome.reused.join(" "));
    }
    let Some(c) = &outcome.comparison else {
        println!("--only: no report; once every sub-run is done, rerun without --only (with --resume) to write it");
        return Ok(());
    };
    if c.seeds.len() < 2 {
        for r in &c.results {
            println!(
                "{:<8} width {:<5} {:>8.1} MFLOPs  DSPNet {:6.2}  one-by-one {:6.2}  difference {:+6.2}",
                r.protocol, r.width, r.mflops, r.dspnet_top1, r.one_by_one_top1, r.difference
            );
        }
    } else {
        let sd = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
        for r in &c.summary {
            println!(
                "{:<8} width {:<5} {:>8.1} MFLOPs  DSPNet {:6.2} ± {}  one-by-one {:6.2} ± {}  difference {:+6.2} ± {} (SE, {} seeds): {}",
                r.protocol,
                r.width,
                r.mflops,
                r.dspnet.mean,
                sd(r.dspnet.std),
                r.one_by_one.mean,
                sd(r.one_by_one.std),
                r.difference.mean,
                sd(r.difference.standard_error),
                r.seeds.len(),
                r.difference.verdict.text()
            );
        }
    }
    let f = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}"));
    let ratios = &c.cost.ratios;
    println!(
        "DSPNet / one-by-one sum: wall time {}, training FLOPs {}, peak memory {} ({} of the largest one)",
        f(ratios.wall_time),
        f(ratios.train_flops),
        f(ratios.peak_memory),
        f(ratios.peak_memory_vs_largest)
    );
    println!("report: {}", out.join("report.md").display());
    Ok(())
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    init_logging();
    let args = Args::parse();
    let first = "interrupt: the running training saves a checkpoint and stops; rerun with --resume to continue (Ctrl-C again to abort)";
    match StopSignal::install(if args.child_train.is_some() { None } else { Some(first) }) {
        // interrupted: the shell's code for the signal (130, 143), as dspnet-stream-train
        Ok(stop) => match run(args, stop.clone()) {
            Err(e @ CompareError::Interrupted { .. }) => {
                eprintln!("error: {}", error_line(&e));
                ExitCode::from(stop.exit_code())
            }
            result => exit_with(result),
        },
        Err(e) => exit_with(Err(format!("cannot handle SIGINT/SIGTERM: {e}"))),
    }
}
