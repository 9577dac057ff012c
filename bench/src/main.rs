//! `dspnet-bench`: the performance figures of issue 6, every one measured in ONE run on the
//! machine where it runs, each printed beside its baseline (measured in the same run), the ratio
//! and the target.
//!
//! ```text
//! dspnet-bench [--quick] [--out FILE.json] [--skip loader,trainer,peer,e2e,shard] [--threads N]
//!              [--batch B] [--steps S]
//! ```
//!
//! * peaks: GEMM (square matmul) and 3x3 convolution (forward, ResNet-18 layer2/layer3 shapes)
//!   in fp32 and bf16, channels_last for the convolutions;
//! * trainer: images/s of the single-width BYOL step and of the all-widths DSPNet step (widths
//!   0.25/0.5/0.75/1.0, sandwich rule, one shared momentum teacher) on the small-image ResNet-18
//!   of `configs/cifar10-small.toml` (base 64, 32 px, heads 4096/256, LARS), batch 128 (32 with
//!   `--quick`), in fp32 and on the fast path (bf16 + channels_last, fp32 master weights, heads
//!   and loss); achieved GFLOP/s and peak memory;
//! * peer: `bench/peer/peer_step.py` (the same BYOL step from torchvision/PyTorch modules, fp32
//!   and bf16 autocast + channels_last) when `.venv` has torch;
//! * loader: the loader contributor's `bench/src/loader.rs` (twin views at 224 and 32 px, the
//!   decode-only ceiling, PyTorch DataLoader + torchvision as the peer);
//! * end to end: a real short `dspnet-stream-train` run (the library's run loop) from CIFAR-10
//!   shards with the fraction of step time the trainer waited for data;
//! * shard: `bench/src/shard.rs` (`dspnet-shard`'s library path on CIFAR-10 class folders and on
//!   an ILSVRC-layout archive of COCO photos, against Python webdataset's `ShardWriter`).
//!
//! FLOP convention: forward FLOPs = 2 x the backbone's convolution multiply-accumulates
//! (`SlimResNet::flops`; heads, BN, ReLU and additions not counted: < 1 % here); a training
//! pass of the online network = 3 x its forward FLOPs (forward + backward for activations and
//! weights), the momentum teacher = 1 x; per image both views: single-width BYOL step =
//! 2 x (3 + 1) x F(1.0) = 8.9 GFLOP at 32 px; all-widths step = 2 x (3 x sum_w F(w) + F(1.0)).
//!
//! Peak memory: the process's peak resident set size (`VmHWM` in /proc/self/status) over the
//! warm-up and timed steps of a freshly built trainer, after returning freed heap memory to the
//! kernel (glibc `malloc_trim`) and resetting the peak through /proc/self/clear_refs; it
//! includes libtorch, weights, teacher, optimiser state, activations and allocator caches.
//!
//! Exit codes: 0 (figures printed, whether or not targets pass), 2 on bad input (options, an
//! unwritable --out, missing shared data), 1 when a measurement fails.

mod cli;
mod e2e;
mod json;
mod loader;
mod machine;
mod measure;
mod peaks;
mod peer;
mod shard;
mod step;
mod step_shape;
mod table;
mod trainer;

use clap::Parser;
use cli::{check_out, Args, Part, Plan};
use dspnet_core::machine::{cpu_flags, cpu_has_native_bf16, cpu_model, process_cpu_seconds as cpu_seconds};
use dspnet_model::ComputeFormat;
use machine::{checkout_root, load_average};
use std::process::ExitCode;
use std::time::Instant;
use table::{print_table, Row};
use tch::Device;

// ---------------------------------------------------------------------------------------------

enum Failure {
    /// Bad input: exit code 2.
    Input(String),
    /// A measurement failed: exit code 1.
    Run(String),
}

fn run(args: Args) -> Result<(), Failure> {
    let started = Instant::now();
    let plan = Plan::new(&args).map_err(Failure::Input)?;
    if let Some(out) = &args.out {
        check_out(out).map_err(Failure::Input)?;
    }
    let skip = |p: Part| args.skip.contains(&p);
    let data = if skip(Part::Loader) && skip(Part::E2e) && skip(Part::Shard) {
        None
    } else {
        Some(loader::shared_data_dir().map_err(Failure::Input)?)
    };
    if args.threads > 0 {
        tch::set_num_threads(args.threads as i32);
    }
    let root = checkout_root();
    let threads = tch::get_num_threads();
    let native_bf16 = cpu_has_native_bf16();
    let auto = ComputeFormat::resolve("auto", true, Device::Cpu);
    let load_start = load_average();
    eprintln!(
        "dspnet-bench{}: {} ({threads} libtorch threads), native bf16: {native_bf16}, load average {}",
        if plan.quick { " --quick" } else { "" },
        cpu_model(),
        load_start.as_deref().unwrap_or("?")
    );
    let mut rows: Vec<Row> = Vec::new();
    let run_err = Failure::Run;
    let mut sections: Vec<(&str, f64)> = Vec::new();
    let mut mark = Instant::now();
    let mut lap = |name: &'static str, sections: &mut Vec<(&str, f64)>| {
        sections.push((name, mark.elapsed().as_secs_f64()));
        mark = Instant::now();
    };

    // ---- peaks and trainer ----
    let mut fast_single = None;
    let mut fp32_single = None;
    let mut peaks_opt = None;
    if !skip(Part::Trainer) {
        eprintln!("peaks: GEMM and 3x3 convolution ...");
        let peaks = peaks::measure_peaks(&plan);
        peaks::figures(&plan, &peaks, &mut rows);
        let (fast, fp32) = trainer::figures(&plan, &peaks, auto, native_bf16, &mut rows).map_err(run_err)?;
        fast_single = fast;
        fp32_single = fp32;
        peaks_opt = Some(peaks);
        lap("peaks + trainer", &mut sections);
    }

    // ---- the PyTorch peer ----
    if !skip(Part::Peer) {
        peer::figures(&root, &plan, fast_single, fp32_single, peaks_opt.as_ref(), &mut rows).map_err(run_err)?;
        lap("peer", &mut sections);
    }

    // ---- loader ----
    if !skip(Part::Loader) {
        eprintln!("loader: twin views at 224 and 32 px, decode ceiling, PyTorch DataLoader peer ...");
        let figs = loader::run_loader_bench(plan.quick).map_err(run_err)?;
        rows.extend(figs.into_iter().map(Row::from));
        lap("loader", &mut sections);
    }

    // ---- end to end ----
    if let (false, Some(data)) = (skip(Part::E2e), data.as_ref()) {
        eprintln!("end to end: short training run from CIFAR-10 shards ...");
        e2e::figures(&plan, data, &mut rows).map_err(run_err)?;
        lap("end-to-end", &mut sections);
    }

    // ---- sharding ----
    if !skip(Part::Shard) {
        eprintln!("shard: dspnet-shard's library path against webdataset's ShardWriter ...");
        let figs = shard::run_shard_bench(plan.quick).map_err(run_err)?;
        rows.extend(figs.into_iter().map(Row::from));
        lap("shard", &mut sections);
    }

    let seconds = started.elapsed().as_secs_f64();
    let load_end = load_average();
    println!();
    print_table(&rows);
    let per_section: Vec<String> = sections.iter().map(|(n, t)| format!("{n} {t:.0} s")).collect();
    let cpu_total = cpu_seconds();
    println!(
        "\nmachine: {} | {threads} libtorch threads | flags: {} | precision auto = {} | load average {} at start, {} at end",
        cpu_model(),
        cpu_flags().join(" "),
        auto.name(),
        load_start.as_deref().unwrap_or("?"),
        load_end.as_deref().unwrap_or("?"),
    );
    println!(
        "time: {seconds:.0} s ({}){}{}",
        per_section.join(", "),
        cpu_total
            .map(|c| format!(", {c:.0} CPU s in this process (the Python peers not included)"))
            .unwrap_or_default(),
        if plan.quick { "; --quick: provisional figures" } else { "" }
    );
    if let Some(out) = &args.out {
        let facts = json::RunFacts {
            root: &root,
            plan: &plan,
            seconds,
            sections: &sections,
            threads,
            native_bf16,
            auto,
            load_start: &load_start,
            load_end: &load_end,
        };
        json::write(out, &facts, &rows).map_err(Failure::Run)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    dspnet_core::cli::init_logging_at("warn");
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // bad input: the usual one line and exit code 2
        Err(Failure::Input(e)) => dspnet_core::cli::exit_with(Err(e)),
        // a measurement that failed: one line and exit code 1
        Err(Failure::Run(e)) => {
            eprintln!("error: {}", dspnet_core::cli::error_line(&e));
            ExitCode::from(1)
        }
    }
}
