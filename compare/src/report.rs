//! The comparison's outputs: `compare.json` (every record), `report.md` (accuracy per width and
//! protocol, over the seeds with error bars and verdicts when there are several; cost table and
//! ratios; the kNN monitor's curves; how it was measured, command, code version, machine),
//! `compare.png` (top-1 against MFLOPs, DSPNet and one-by-one curves per protocol, means over
//! the seeds) and `curves/*.png` (see `curves.rs`). All are written atomically (temporary file in
//! the same folder, fsync, rename).

use crate::cost::{ratio, BudgetSplit};
use crate::curves::{mean_curves, png_name, side, MeanCurve, RunCurve};
use crate::error::{CompareError, Result};
use crate::plan::MonitorSection;
use crate::summary::{summarise, Paired, SeedTop1, Spread, SummaryRow, VERDICT_RULE};
use dspnet_core::stats::{mean, sample_std};
use dspnet_run::EvalRecord;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One training of the comparison (`RUN/compare-train.json`; a finished sub-run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// Sub-run folder name: `dspnet`, `byol-w0_25`, `budget-w0_25`, ...
    pub name: String,
    /// "dspnet", "one-by-one" or "same-budget".
    pub kind: String,
    /// Width multipliers trained (of DSPNet's network; a one-by-one run is its own network of
    /// that width).
    pub widths: Vec<f64>,
    /// Training loop wall time without the kNN monitor's evaluations, seconds (see `child.rs`
    /// and `run.rs`).
    pub seconds: f64,
    /// Seconds the kNN monitor's evaluations took inside the training loop (their records in
    /// metrics.jsonl), subtracted from the loop's wall time to give `seconds`; 0 without it.
    #[serde(default)]
    pub monitor_seconds: f64,
    /// The child process's whole wall time, seconds.
    pub process_seconds: f64,
    /// Optimiser steps taken, planned, per epoch.
    pub steps: u64,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    /// Images trained on.
    pub images: u64,
    /// `seconds / steps`.
    pub step_seconds: f64,
    /// Training multiply-accumulates (see `cost.rs`).
    pub train_macs: u64,
    /// Forward MACs of one view: teacher, and online network per width.
    pub teacher_macs: u64,
    pub online_macs: Vec<(f64, u64)>,
    /// Steps that trained each width (from metrics.jsonl).
    pub width_steps: Vec<(f64, u64)>,
    /// Peak resident set size of the training process, and its size before training, bytes.
    pub peak_rss_bytes: u64,
    pub baseline_rss_bytes: u64,
    pub threads: i64,
    pub precision: String,
    pub data_wait_fraction: f64,
    pub skipped_nonfinite: u64,
    /// The run configuration trained (TOML); a sub-run is kept on `--resume` only when it
    /// equals the one asked for.
    pub config_toml: String,
}

/// One row of the accuracy table: one seed, width and protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The seed of both sides' sub-runs (`train.seed`).
    pub seed: u64,
    pub width: f64,
    /// Backbone parameters of the sub-network.
    pub params: i64,
    /// Forward MACs of the backbone for one image, millions.
    pub mflops: f64,
    pub protocol: String,
    /// Top-1 (%) of DSPNet's sub-network, of the one-by-one network, and DSPNet minus
    /// one-by-one (points).
    pub dspnet_top1: f64,
    pub one_by_one_top1: f64,
    pub difference: f64,
    /// Same-budget one-by-one network's top-1 and DSPNet minus it, when run.
    pub same_budget_top1: Option<f64>,
    pub same_budget_difference: Option<f64>,
}

/// Cost of one training (or of the sum over the one-by-one trainings).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostLine {
    pub name: String,
    pub widths: Vec<f64>,
    pub seconds: f64,
    pub steps: u64,
    pub train_macs: u64,
    pub peak_rss_bytes: u64,
    /// Peak resident size minus the resident size just before training (libtorch and the
    /// process start-up excluded), bytes.
    pub peak_above_start_bytes: u64,
}

impl CostLine {
    fn of(r: &TrainRecord) -> Self {
        CostLine {
            name: r.name.clone(),
            widths: r.widths.clone(),
            seconds: r.seconds,
            steps: r.steps,
            train_macs: r.train_macs,
            peak_rss_bytes: r.peak_rss_bytes,
            peak_above_start_bytes: r.peak_rss_bytes.saturating_sub(r.baseline_rss_bytes),
        }
    }

    /// The mean of `lines` (the same training over seeds), named `name`; counts rounded.
    fn mean(name: &str, lines: &[&CostLine]) -> Self {
        let n = lines.len().max(1) as f64;
        let avg = |f: fn(&CostLine) -> u64| (lines.iter().map(|l| f(l) as f64).sum::<f64>() / n).round() as u64;
        CostLine {
            name: name.into(),
            widths: lines.first().map(|l| l.widths.clone()).unwrap_or_default(),
            seconds: lines.iter().map(|l| l.seconds).sum::<f64>() / n,
            steps: avg(|l| l.steps),
            train_macs: avg(|l| l.train_macs),
            peak_rss_bytes: avg(|l| l.peak_rss_bytes),
            peak_above_start_bytes: avg(|l| l.peak_above_start_bytes),
        }
    }

    fn sum(name: &str, lines: &[CostLine]) -> Self {
        CostLine {
            name: name.into(),
            widths: lines.iter().flat_map(|l| l.widths.clone()).collect(),
            seconds: lines.iter().map(|l| l.seconds).sum(),
            steps: lines.iter().map(|l| l.steps).sum(),
            train_macs: lines.iter().map(|l| l.train_macs).sum(),
            peak_rss_bytes: lines.iter().map(|l| l.peak_rss_bytes).sum(),
            peak_above_start_bytes: lines.iter().map(|l| l.peak_above_start_bytes).sum(),
        }
    }
}

/// DSPNet's cost over the sum of the one-by-one costs (`None` when the sum is 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    pub wall_time: Option<f64>,
    pub train_flops: Option<f64>,
    /// Peak memory of DSPNet's training over the SUM of the one-by-one trainings' peaks.
    pub peak_memory: Option<f64>,
    /// Peak memory of DSPNet's training over the LARGEST one-by-one peak (the trainings run one
    /// after another, so this is what a machine must hold).
    pub peak_memory_vs_largest: Option<f64>,
    /// The same as `peak_memory` for the peaks above each process's start-up size.
    pub peak_memory_above_start: Option<f64>,
}

/// Cost section of compare.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub dspnet: CostLine,
    pub one_by_one: Vec<CostLine>,
    pub one_by_one_sum: CostLine,
    pub ratios: Ratios,
}

/// A sub-run name without its seed folder (`seed1/byol-w0_25` → `byol-w0_25`).
fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl Cost {
    /// DSPNet's cost line, the one-by-one lines, their sum and the ratios.
    fn of(dspnet: CostLine, ones: Vec<CostLine>) -> Cost {
        let sum = CostLine::sum("one-by-one, sum", &ones);
        let largest = ones.iter().map(|l| l.peak_rss_bytes).max().unwrap_or(0);
        let ratios = Ratios {
            wall_time: ratio(dspnet.seconds, sum.seconds),
            train_flops: ratio(dspnet.train_macs as f64, sum.train_macs as f64),
            peak_memory: ratio(dspnet.peak_rss_bytes as f64, sum.peak_rss_bytes as f64),
            peak_memory_vs_largest: ratio(dspnet.peak_rss_bytes as f64, largest as f64),
            peak_memory_above_start: ratio(dspnet.peak_above_start_bytes as f64, sum.peak_above_start_bytes as f64),
        };
        Cost { dspnet, one_by_one: ones, one_by_one_sum: sum, ratios }
    }

    /// Every training's mean cost over `costs` (one per seed, the same trainings in the same
    /// order; names without the seed folder) and the ratios of those means. One cost: itself.
    fn mean(costs: &[Cost]) -> Cost {
        if let [one] = costs {
            return one.clone();
        }
        let line = |pick: &dyn Fn(&Cost) -> &CostLine| {
            let lines: Vec<&CostLine> = costs.iter().map(pick).collect();
            CostLine::mean(lines.first().map_or("", |l| base_name(&l.name)), &lines)
        };
        let n = costs.first().map_or(0, |c| c.one_by_one.len());
        Cost::of(line(&|c| &c.dspnet), (0..n).map(|i| line(&|c: &Cost| &c.one_by_one[i])).collect())
    }
}

/// One seed's cost and same-budget runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedCost {
    pub seed: u64,
    pub cost: Cost,
    pub same_budget: Option<SameBudget>,
}

/// Same-total-budget section of compare.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SameBudget {
    pub split: BudgetSplit,
    /// The same-budget trainings as measured.
    pub runs: Vec<CostLine>,
    /// Their summed measured wall time, seconds (the target is `split.budget_seconds`).
    pub summed_seconds: f64,
}

/// The machine and the moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub logical_cpus: usize,
    /// libtorch intra-op threads of the trainings.
    pub threads: Vec<i64>,
    /// /proc/loadavg (1, 5, 15 minutes) when the command started and when it ended.
    pub load_start: Vec<f64>,
    pub load_end: Vec<f64>,
}

impl Machine {
    /// CPU model and load average now (`threads` empty, `load_end` = `load_start`).
    pub fn now() -> Self {
        use dspnet_core::machine;
        let load = machine::load_average();
        Machine {
            cpu_model: machine::cpu_model(),
            logical_cpus: machine::logical_cpus(),
            threads: Vec::new(),
            load_start: load.clone(),
            load_end: load,
        }
    }
}

/// Everything `compare.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// The command as typed.
    pub command: String,
    /// `git describe --always --dirty` of the code that built the binary.
    pub code_version: String,
    pub machine: Machine,
    /// Config file or preset.
    pub config: String,
    pub widths: Vec<f64>,
    pub protocols: Vec<String>,
    pub train_shards: Vec<String>,
    pub test_shards: Vec<String>,
    /// The seeds the comparison ran with, ascending (without `--seeds`: the config's
    /// `train.seed`).
    pub seeds: Vec<u64>,
    /// Sub-runs in `OUT/seed{s}/` (`--seeds` or `compare.seeds`); false: one repetition with
    /// the config's own seeds, sub-runs in OUT.
    pub seed_folders: bool,
    /// Every training of every seed.
    pub runs: Vec<TrainRecord>,
    /// Top-1 per seed, width and protocol.
    pub results: Vec<ResultRow>,
    /// Per width and protocol over the seeds: means, standard deviations, the paired difference
    /// with its standard error and the verdict (`verdict_rule`).
    pub summary: Vec<SummaryRow>,
    pub verdict_rule: String,
    /// Each training's cost as the mean over the seeds (one seed: as measured), and the ratios
    /// of those means.
    pub cost: Cost,
    /// Each seed's own cost and same-budget runs.
    pub per_seed: Vec<SeedCost>,
    /// With one seed, its same-budget section (where it was before seeds existed); with
    /// several, `None` (each seed's is in `per_seed`).
    pub same_budget: Option<SameBudget>,
    /// The kNN monitor every sub-run trained with (`[compare.monitor]`).
    pub monitor: MonitorSection,
    /// The monitor's curve of every width of every DSPNet and one-by-one training, and their
    /// means over the seeds.
    pub curves: Vec<RunCurve>,
    pub mean_curves: Vec<MeanCurve>,
    /// How FLOPs, memory and time were measured.
    pub methods: Methods,
    /// `--baseline-from`: the runs copied from an earlier comparison (their costs were measured
    /// there, not in this run). Absent when every run was trained here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused: Option<Reused>,
}

/// Runs copied from an earlier comparison by `--baseline-from`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reused {
    /// The earlier comparison's `--out` folder, as given.
    pub from: String,
    /// Its code version (from its compare.json; "unknown" when it has none).
    pub code_version: String,
    /// Names of the copied runs, e.g. `byol-w0_25`.
    pub runs: Vec<String>,
}

/// The measurement methods, stated in compare.json and the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Methods {
    pub flops: String,
    pub memory: String,
    pub time: String,
    pub one_by_one: String,
    pub same_budget: String,
    pub seeds: String,
    pub monitor: String,
}

impl Default for Methods {
    fn default() -> Self {
        Methods {
            flops: "counted multiply-accumulates (convolutions and the heads' linear layers): per image and step, both views through the momentum teacher once (forward) and through the online network at every width the sandwich rule chose that step (forward + backward = 3 x forward); steps per width read from metrics.jsonl; the optimiser and EMA updates, BN, ReLU and the loss are not counted".into(),
            memory: "peak resident set size (VmHWM of /proc/self/status) of each training's own child process, read when its training finished; each process trains once, so the peak is that training's alone (libtorch, loader, networks, optimiser state, activations)".into(),
            time: "wall time of each training loop (first batch to last step, checkpoints included) minus the seconds of the kNN monitor's evaluations (recorded in metrics.jsonl), each training alone in its own process, one after another".into(),
            one_by_one: "plain BYOL (method.name = \"byol\", the same code path) on its own network of exactly that width: base_channels x w, heads.hidden x w, teacher at that width; same shards, augmentations, optimiser, schedule, epochs and seed".into(),
            same_budget: "DSPNet's training wall time split equally over the widths; each one-by-one run gets floor(share / its measured seconds per step) steps, with its schedules (cosine, warm-up) planned for that length".into(),
            seeds: "a seed sets train.seed and loader.seed of every sub-run of both sides (initial weights, the sandwich rule's draws, the data order); the data subset is the same for every seed; DSPNet and one-by-one are paired by seed".into(),
            monitor: "the trainer's kNN monitor (dspnet-eval's kNN protocol, eval-mode BN, centre views) at every epoch end and every compare.monitor.every_steps steps; bank = the first bank_images training images, classified = the first test_images test images; it changes no weight, and its seconds are left out of the wall time (its memory is in the peak); training FLOPs up to a point are the count of the FLOPs line cut at that step; a DSPNet point counts the whole DSPNet training, a one-by-one point that width's training".into(),
        }
    }
}

/// A finished sub-run: its training record and its evaluation records (widths already the
/// nominal ones).
#[derive(Clone, Debug)]
pub struct SubRun {
    pub train: TrainRecord,
    pub evals: Vec<EvalRecord>,
}

fn find<'a>(evals: &'a [EvalRecord], width: f64, protocol: &str) -> Option<&'a EvalRecord> {
    evals.iter().find(|r| (r.width - width).abs() <= 1e-9 && r.protocol == protocol)
}

/// One seed's finished sub-runs.
#[derive(Clone, Debug)]
pub struct SeedRuns {
    pub seed: u64,
    pub dspnet: SubRun,
    /// One per width, ascending.
    pub one: Vec<SubRun>,
    /// The same-budget split and runs (`--same-budget`).
    pub budget: Option<(BudgetSplit, Vec<SubRun>)>,
}

/// Context of a comparison that is not in its sub-runs.
pub struct Meta {
    pub command: String,
    pub code_version: String,
    pub machine: Machine,
    pub config: String,
    pub widths: Vec<f64>,
    pub protocols: Vec<String>,
    pub train_shards: Vec<String>,
    pub test_shards: Vec<String>,
    /// Sub-runs in seed folders (see [`Comparison::seed_folders`]).
    pub seed_folders: bool,
    pub monitor: MonitorSection,
    /// Runs copied by `--baseline-from` (`None` without it or when nothing was copied).
    pub reused: Option<Reused>,
}

/// The rows of one seed: one per (protocol, width) where both DSPNet and the one-by-one network
/// were evaluated.
fn seed_rows(widths: &[f64], s: &SeedRuns) -> Vec<ResultRow> {
    let mut protocols: Vec<String> = Vec::new();
    for r in &s.dspnet.evals {
        if !protocols.contains(&r.protocol) {
            protocols.push(r.protocol.clone());
        }
    }
    let mut results = Vec::new();
    for p in &protocols {
        for &w in widths {
            let Some(d) = find(&s.dspnet.evals, w, p) else { continue };
            let Some(o) = s.one.iter().find_map(|x| find(&x.evals, w, p)) else { continue };
            let b = s.budget.as_ref().and_then(|(_, runs)| runs.iter().find_map(|x| find(&x.evals, w, p)));
            results.push(ResultRow {
                seed: s.seed,
                width: w,
                params: d.params,
                mflops: d.macs as f64 / 1e6,
                protocol: p.clone(),
                dspnet_top1: d.top1,
                one_by_one_top1: o.top1,
                difference: d.top1 - o.top1,
                same_budget_top1: b.map(|b| b.top1),
                same_budget_difference: b.map(|b| d.top1 - b.top1),
            });
        }
    }
    results
}

/// The rows over the seeds, one per (protocol, width) in the order of `results`.
fn summary_rows(results: &[ResultRow]) -> Vec<SummaryRow> {
    let mut keys: Vec<(&str, f64)> = Vec::new();
    for r in results {
        if !keys.iter().any(|(p, w)| *p == r.protocol && (w - r.width).abs() <= 1e-9) {
            keys.push((&r.protocol, r.width));
        }
    }
    keys.into_iter()
        .map(|(p, w)| {
            let rows: Vec<&ResultRow> =
                results.iter().filter(|r| r.protocol == p && (r.width - w).abs() <= 1e-9).collect();
            let per_seed: Vec<SeedTop1> =
                rows.iter().map(|r| (r.seed, r.dspnet_top1, r.one_by_one_top1, r.same_budget_top1)).collect();
            summarise(p, w, rows[0].params, rows[0].mflops, &per_seed)
        })
        .collect()
}

/// Assembles the comparison of `seeds` (at least one): the rows of every seed, their summary over
/// the seeds, each seed's costs and their means, and the monitor `curves` with their means.
pub fn build(meta: Meta, seeds: &[SeedRuns], curves: Vec<RunCurve>) -> Comparison {
    let mut results = Vec::new();
    let mut runs: Vec<TrainRecord> = Vec::new();
    let mut per_seed = Vec::new();
    for s in seeds {
        results.extend(seed_rows(&meta.widths, s));
        runs.extend(std::iter::once(&s.dspnet).chain(&s.one).map(|x| x.train.clone()));
        let cost = Cost::of(CostLine::of(&s.dspnet.train), s.one.iter().map(|x| CostLine::of(&x.train)).collect());
        let same_budget = s.budget.as_ref().map(|(split, rs)| {
            runs.extend(rs.iter().map(|x| x.train.clone()));
            let lines: Vec<CostLine> = rs.iter().map(|x| CostLine::of(&x.train)).collect();
            SameBudget { summed_seconds: lines.iter().map(|l| l.seconds).sum(), split: split.clone(), runs: lines }
        });
        per_seed.push(SeedCost { seed: s.seed, cost, same_budget });
    }
    let cost = Cost::mean(&per_seed.iter().map(|s| s.cost.clone()).collect::<Vec<_>>());
    let mut machine = meta.machine;
    machine.threads = runs.iter().map(|r| r.threads).collect();
    machine.threads.sort_unstable();
    machine.threads.dedup();
    Comparison {
        command: meta.command,
        code_version: meta.code_version,
        machine,
        config: meta.config,
        widths: meta.widths,
        protocols: meta.protocols,
        train_shards: meta.train_shards,
        test_shards: meta.test_shards,
        seeds: seeds.iter().map(|s| s.seed).collect(),
        seed_folders: meta.seed_folders,
        runs,
        summary: summary_rows(&results),
        verdict_rule: VERDICT_RULE.to_string(),
        results,
        cost,
        same_budget: match per_seed.as_slice() {
            [one] => one.same_budget.clone(),
            _ => None,
        },
        per_seed,
        monitor: meta.monitor,
        mean_curves: mean_curves(&curves),
        curves,
        methods: Methods::default(),
        reused: meta.reused,
    }
}

fn opt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.3}"))
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn widths_text(ws: &[f64]) -> String {
    ws.iter().map(|w| format!("{w}")).collect::<Vec<_>>().join(", ")
}

fn mean_sd(x: &Spread) -> String {
    match x.std {
        Some(sd) => format!("{:.2} ± {sd:.2}", x.mean),
        None => format!("{:.2}", x.mean),
    }
}

fn mean_se(x: &Paired) -> String {
    match x.standard_error {
        Some(se) => format!("{:+.2} ± {se:.2}", x.mean),
        None => format!("{:+.2}", x.mean),
    }
}

fn seeds_text(seeds: &[u64]) -> String {
    seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
}

/// The protocols of `rows`, in order of appearance.
fn protocols_of<'a>(rows: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for p in rows {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// `## Top-1 per width`: one seed, the table of that seed; several, the summary with error bars
/// and verdicts, then every seed's rows.
fn accuracy_section(c: &Comparison) -> String {
    let budget = c.per_seed.iter().any(|s| s.same_budget.is_some());
    let mut s = String::from("## Top-1 per width\n\nDifference = DSPNet minus one-by-one, in points.\n\n");
    if c.seeds.len() < 2 {
        for p in protocols_of(c.results.iter().map(|r| r.protocol.as_str())) {
            s += &format!(
                "### {p}\n\n| width | params | MFLOPs | DSPNet top-1 (%) | one-by-one top-1 (%) | difference |"
            );
            s += if budget {
                " same-budget top-1 (%) | difference |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            } else {
                "\n|---:|---:|---:|---:|---:|---:|\n"
            };
            for r in c.results.iter().filter(|r| r.protocol == p) {
                s += &format!(
                    "| {} | {} | {:.1} | {:.2} | {:.2} | {:+.2} |",
                    r.width, r.params, r.mflops, r.dspnet_top1, r.one_by_one_top1, r.difference
                );
                if budget {
                    match (r.same_budget_top1, r.same_budget_difference) {
                        (Some(t), Some(d)) => s += &format!(" {t:.2} | {d:+.2} |"),
                        _ => s += " - | - |",
                    }
                }
                s.push('\n');
            }
            s.push('\n');
        }
        s += &format!(
            "One seed ({}): no error bar, so no verdict; repeat the comparison over seeds with `--seeds 0,1,2` for means, \
             standard deviations and a verdict per width.\n\n",
            seeds_text(&c.seeds)
        );
        return s;
    }
    s += &format!(
        "Over {} seeds ({}): each side's mean ± standard deviation, the mean paired difference ± its standard error, \
         and the verdict. Rule: {VERDICT_RULE}.\n\n",
        c.seeds.len(),
        seeds_text(&c.seeds)
    );
    for p in protocols_of(c.summary.iter().map(|r| r.protocol.as_str())) {
        s += &format!(
            "### {p}\n\n| width | params | MFLOPs | seeds | DSPNet top-1 (%) | one-by-one top-1 (%) | difference | verdict |"
        );
        s += if budget {
            " same-budget top-1 (%) | difference | verdict |\n|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n"
        } else {
            "\n|---:|---:|---:|---:|---:|---:|---:|---|\n"
        };
        for r in c.summary.iter().filter(|r| r.protocol == p) {
            s += &format!(
                "| {} | {} | {:.1} | {} | {} | {} | {} | {} |",
                r.width,
                r.params,
                r.mflops,
                r.seeds.len(),
                mean_sd(&r.dspnet),
                mean_sd(&r.one_by_one),
                mean_se(&r.difference),
                r.difference.verdict.text()
            );
            if budget {
                match (&r.same_budget, &r.same_budget_difference) {
                    (Some(b), Some(d)) => s += &format!(" {} | {} | {} |", mean_sd(b), mean_se(d), d.verdict.text()),
                    _ => s += " - | - | - |",
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s += "### Per seed\n\n| seed | protocol | width | DSPNet top-1 (%) | one-by-one top-1 (%) | difference |";
    s += if budget {
        " same-budget top-1 (%) | difference |\n|---:|---|---:|---:|---:|---:|---:|---:|\n"
    } else {
        "\n|---:|---|---:|---:|---:|---:|\n"
    };
    for r in &c.results {
        s += &format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:+.2} |",
            r.seed, r.protocol, r.width, r.dspnet_top1, r.one_by_one_top1, r.difference
        );
        if budget {
            match (r.same_budget_top1, r.same_budget_difference) {
                (Some(t), Some(d)) => s += &format!(" {t:.2} | {d:+.2} |"),
                _ => s += " - | - |",
            }
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

/// `## Cost`: the (mean) cost table and ratios; with several seeds, each seed's ratios.
fn cost_section(c: &Comparison) -> String {
    let mut s = if c.seeds.len() < 2 {
        String::from("## Cost\n\n")
    } else {
        format!("## Cost\n\nEach training's mean over the {} seeds, and the ratios of those means.\n\n", c.seeds.len())
    };
    s += "| training | widths | wall time (s) | steps | training FLOPs (GMACs) | peak memory (MB) | peak above start-up (MB) |\n|---|---|---:|---:|---:|---:|---:|\n";
    let reused =
        |name: &str| c.reused.as_ref().is_some_and(|r| r.runs.iter().any(|n| n == name || base_name(n) == name));
    let line = |l: &CostLine| {
        format!(
            "| {}{} | {} | {:.1} | {} | {:.3} | {:.0} | {:.0} |\n",
            l.name,
            if reused(&l.name) { " (reused)" } else { "" },
            widths_text(&l.widths),
            l.seconds,
            l.steps,
            l.train_macs as f64 / 1e9,
            mb(l.peak_rss_bytes),
            mb(l.peak_above_start_bytes)
        )
    };
    s += &line(&c.cost.dspnet);
    for l in &c.cost.one_by_one {
        s += &line(l);
    }
    s += &line(&c.cost.one_by_one_sum);
    let r = &c.cost.ratios;
    s += &format!(
        "| **DSPNet / one-by-one sum** | | **{}** | | **{}** | **{}** | **{}** |\n\n",
        opt_ratio(r.wall_time),
        opt_ratio(r.train_flops),
        opt_ratio(r.peak_memory),
        opt_ratio(r.peak_memory_above_start)
    );
    if c.seeds.len() >= 2 {
        s += "DSPNet / one-by-one sum per seed:\n\n| seed | wall time | training FLOPs | peak memory | peak memory vs the largest one |\n|---:|---:|---:|---:|---:|\n";
        for p in &c.per_seed {
            let q = &p.cost.ratios;
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                p.seed,
                opt_ratio(q.wall_time),
                opt_ratio(q.train_flops),
                opt_ratio(q.peak_memory),
                opt_ratio(q.peak_memory_vs_largest)
            );
        }
        let spread = |f: fn(&Ratios) -> Option<f64>| {
            let v: Vec<f64> = c.per_seed.iter().filter_map(|p| f(&p.cost.ratios)).collect();
            match (mean(&v), sample_std(&v)) {
                (Some(m), Some(sd)) => format!("{m:.3} ± {sd:.3}"),
                _ => "-".into(),
            }
        };
        s += &format!(
            "| mean ± sd | {} | {} | {} | {} |\n\n",
            spread(|q| q.wall_time),
            spread(|q| q.train_flops),
            spread(|q| q.peak_memory),
            spread(|q| q.peak_memory_vs_largest)
        );
    }
    if let Some(u) = &c.reused {
        s += &format!(
            "Reused (`--baseline-from {}`): {} copied from that comparison (code version `{}`), not trained here; \
             their wall time, FLOPs and memory were measured when it ran, so the ratios compare runs from two sessions \
             (same machine only if that comparison ran on this one).\n\n",
            u.from,
            u.runs.join(", "),
            u.code_version
        );
    }
    s += &format!(
        "Peak memory of DSPNet's training over the largest single one-by-one training (they run one after another): {}. \
         Every training process holds libtorch and the loader from its start-up (the first memory column counts it once per training), \
         the second memory column leaves it out.\n\n",
        opt_ratio(r.peak_memory_vs_largest)
    );
    s
}

/// `## Same total budget`: each seed's split and runs.
fn budget_section(c: &Comparison) -> String {
    let mut s = String::new();
    let several = c.seeds.len() >= 2;
    for p in &c.per_seed {
        let Some(b) = &p.same_budget else { continue };
        if s.is_empty() {
            s += "## Same total budget\n\n";
        }
        if several {
            s += &format!("### Seed {}\n\n", p.seed);
        }
        s += &format!(
            "DSPNet's training wall time, {:.1} s, split equally: {:.1} s per width.\n\n\
             | width | measured s/step (full run) | steps given | wall time (s) |\n|---:|---:|---:|---:|\n",
            b.split.budget_seconds, b.split.per_width_seconds
        );
        for ((w, sps, steps), run) in b.split.widths.iter().zip(&b.runs) {
            s += &format!("| {w} | {sps:.4} | {steps} | {:.1} |\n", run.seconds);
        }
        s += &format!(
            "\nSummed wall time of the same-budget runs: {:.1} s (target {:.1} s).\n\n",
            b.summed_seconds, b.split.budget_seconds
        );
    }
    s
}

fn top1_cell(p: Option<&crate::curves::MeanPoint>, seeds: usize) -> String {
    match p {
        None => "-".into(),
        Some(p) if seeds < 2 => format!("{:.2}", p.top1_mean),
        Some(p) => format!("{:.2} [{:.2}, {:.2}]", p.top1_mean, p.top1_min, p.top1_max),
    }
}

/// `## kNN top-1 during training`: per width, both sides' monitor curves against steps and
/// training FLOPs, with the plots.
fn curves_section(c: &Comparison) -> String {
    let mut s = String::from("## kNN top-1 during training\n\n");
    let m = &c.monitor;
    if !m.enabled {
        return s + "The kNN monitor was off (`compare.monitor.enabled = false`): no curves.\n\n";
    }
    let trained: Vec<&str> = c
        .runs
        .iter()
        .filter(|r| r.kind != "same-budget" && !c.curves.iter().any(|k| k.run == r.name))
        .map(|r| r.name.as_str())
        .collect();
    s += &format!(
        "The kNN monitor's top-1 (k = {} as in the kNN protocol; bank: the first {} training images, or all if fewer; classified: the first {} test images, or all) \
         at every epoch end and every {} steps, against optimiser steps and against the training FLOPs counted up to that step \
         (2 x MACs; DSPNet: its whole training, which gives every width; one-by-one: that width's own training). ",
        c.runs.iter().find_map(|r| knn_k(&r.config_toml)).map_or("eval.knn_k".into(), |k| k.to_string()),
        m.bank_images,
        m.test_images,
        m.every_steps
    );
    s += if c.seeds.len() < 2 {
        "One seed: its values.\n\n"
    } else {
        "Top-1: mean over the seeds [min, max]; GFLOPs: mean over the seeds.\n\n"
    };
    if !trained.is_empty() {
        s += &format!(
            "No monitor records (trained without the monitor, e.g. kept from an earlier version): {}.\n\n",
            trained.join(", ")
        );
    }
    let mut widths: Vec<f64> = c.mean_curves.iter().map(|k| k.width).collect();
    widths.dedup_by(|a, b| (*a - *b).abs() <= 1e-9);
    for w in widths {
        let of = |kind: &str| c.mean_curves.iter().find(|k| k.kind == kind && (k.width - w).abs() <= 1e-9);
        let (d, o) = (of("dspnet"), of("one-by-one"));
        let mut steps: Vec<u64> = d.iter().chain(o.iter()).flat_map(|k| k.points.iter().map(|p| p.step)).collect();
        steps.sort_unstable();
        steps.dedup();
        s += &format!(
            "### width {w}\n\n![kNN top-1 against steps, width {w}]({}) ![kNN top-1 against training FLOPs, width {w}]({})\n\n\
             | step | {} GFLOPs | {} kNN top-1 (%) | {} GFLOPs | {} kNN top-1 (%) |\n|---:|---:|---:|---:|---:|\n",
            png_name("steps", w),
            png_name("flops", w),
            side("dspnet"),
            side("dspnet"),
            side("one-by-one"),
            side("one-by-one")
        );
        let gflops =
            |p: Option<&crate::curves::MeanPoint>| p.map_or("-".into(), |p| format!("{:.3}", 2.0 * p.train_macs / 1e9));
        for step in steps {
            let (pd, po) = (point_at(d, step), point_at(o, step));
            s += &format!(
                "| {step} | {} | {} | {} | {} |\n",
                gflops(pd),
                top1_cell(pd, d.map_or(0, |k| k.seeds.len())),
                gflops(po),
                top1_cell(po, o.map_or(0, |k| k.seeds.len()))
            );
        }
        s.push('\n');
    }
    s
}

fn point_at(k: Option<&MeanCurve>, step: u64) -> Option<&crate::curves::MeanPoint> {
    k.and_then(|k| k.points.iter().find(|p| p.step == step))
}

/// `eval.knn_k` of a recorded configuration.
fn knn_k(config_toml: &str) -> Option<i64> {
    toml::from_str::<toml::Value>(config_toml).ok()?.get("eval")?.get("knn_k")?.as_integer()
}

/// The markdown report (see the module docs).
pub fn markdown(c: &Comparison) -> String {
    let mut s = String::from("# DSPNet against one-by-one BYOL\n\n");
    s += "One DSPNet pretraining over the width list against plain BYOL pretrained separately at each width \
          (same shards, augmentations, optimiser, epochs and seed), every network evaluated with the same protocols.\n\n";
    s += &format!("- Command: `{}`\n", c.command);
    s += &format!("- Code version: `{}`\n", c.code_version);
    s += &format!(
        "- Machine: {}, {} logical CPUs, libtorch threads {:?}; load average (1/5/15 min) {:?} at the start, {:?} at the end\n",
        c.machine.cpu_model, c.machine.logical_cpus, c.machine.threads, c.machine.load_start, c.machine.load_end
    );
    s += &format!("- Config: {}; widths {}; protocols {}\n", c.config, widths_text(&c.widths), c.protocols.join(", "));
    s += &if c.seed_folders {
        format!(
            "- Seeds: {} (each sets train.seed and loader.seed of every sub-run of both sides; sub-runs in seed{{s}}/)\n",
            seeds_text(&c.seeds)
        )
    } else {
        format!("- Seed: the config's own (train.seed = {}), sub-runs in the output folder\n", seeds_text(&c.seeds))
    };
    s += &format!(
        "- Shards: {} training, {} test ({} / {})\n\n",
        c.train_shards.len(),
        c.test_shards.len(),
        c.train_shards.first().map_or("-", |s| s.as_str()),
        c.test_shards.first().map_or("-", |s| s.as_str())
    );
    s += &accuracy_section(c);
    s += &cost_section(c);
    s += &budget_section(c);
    s += &curves_section(c);
    s += "## How it was measured\n\n";
    s += &format!("- FLOPs: {}.\n", c.methods.flops);
    s += &format!("- Peak memory: {}.\n", c.methods.memory);
    s += &format!("- Wall time: {}.\n", c.methods.time);
    s += &format!("- One-by-one: {}.\n", c.methods.one_by_one);
    s += &format!("- Same budget: {}.\n", c.methods.same_budget);
    s += &format!("- Seeds: {}.\n", c.methods.seeds);
    s += &format!("- kNN monitor: {}.\n", c.methods.monitor);
    s
}

/// Draws compare.png: top-1 against MFLOPs, one curve per (training, protocol), each point
/// the mean over the seeds.
///
/// Errors: the plot font is missing or the PNG cannot be written.
pub fn plot(c: &Comparison, path: &Path) -> Result<()> {
    let mut recs = Vec::new();
    for r in &c.summary {
        let mut push = |init: &str, top1: f64| {
            recs.push(EvalRecord {
                width: r.width,
                params: r.params,
                macs: (r.mflops * 1e6).round() as u64,
                protocol: r.protocol.clone(),
                top1,
                init: init.into(),
                settings: serde_json::Value::Null,
                extra: Default::default(),
            })
        };
        push("DSPNet", r.dspnet.mean);
        push("one-by-one", r.one_by_one.mean);
        if let Some(b) = &r.same_budget {
            push("one-by-one, same budget", b.mean);
        }
    }
    if recs.is_empty() {
        return Err(CompareError::NothingToPlot { path: path.to_path_buf() });
    }
    let title = match c.seeds.len() {
        n if n >= 2 => format!("DSPNet vs one-by-one BYOL: top-1 against MFLOPs, mean of {n} seeds"),
        _ => "DSPNet vs one-by-one BYOL: top-1 against MFLOPs".to_string(),
    };
    dspnet_eval::report::plot(&recs, path, &title)?;
    Ok(())
}

/// Writes compare.json, report.md, compare.png and the curves' PNGs (`curves/`) into `out`,
/// each atomically.
pub fn write_all(c: &Comparison, out: &Path) -> Result<()> {
    dspnet_core::fs::write_atomic(
        &out.join("compare.json"),
        &serde_json::to_vec_pretty(c).expect("comparison serialises"),
    )?;
    dspnet_core::fs::write_atomic(&out.join("report.md"), markdown(c).as_bytes())?;
    plot(c, &out.join("compare.png"))?;
    crate::curves::plot_curves(&c.mean_curves, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, kind: &str, widths: Vec<f64>, seconds: f64, macs: u64, peak: u64) -> TrainRecord {
        TrainRecord {
            name: name.into(),
            kind: kind.into(),
            widths,
            seconds,
            monitor_seconds: 0.0,
            process_seconds: seconds + 1.0,
            steps: 10,
            total_steps: 10,
            steps_per_epoch: 5,
            images: 80,
            step_seconds: seconds / 10.0,
            train_macs: macs,
            teacher_macs: 1,
            online_macs: vec![],
            width_steps: vec![],
            peak_rss_bytes: peak,
            baseline_rss_bytes: 0,
            threads: 2,
            precision: "fp32".into(),
            data_wait_fraction: 0.0,
            skipped_nonfinite: 0,
            config_toml: String::new(),
        }
    }

    fn ev(width: f64, protocol: &str, top1: f64) -> EvalRecord {
        EvalRecord {
            width,
            params: (width * 100.0) as i64,
            macs: (width * 2e6) as u64,
            protocol: protocol.into(),
            top1,
            init: "pretrained".into(),
            settings: serde_json::json!({}),
            extra: Default::default(),
        }
    }

    fn meta(seed_folders: bool) -> Meta {
        Meta {
            command: "dspnet-compare --preset cpu".into(),
            code_version: "v0".into(),
            machine: Machine::now(),
            config: "preset cpu".into(),
            widths: vec![0.5, 1.0],
            protocols: vec!["knn".into()],
            train_shards: vec!["a".into()],
            test_shards: vec!["b".into()],
            seed_folders,
            monitor: MonitorSection::default(),
            reused: None,
        }
    }

    #[test]
    fn rows_costs_and_ratios_by_hand() {
        let dsp = SubRun {
            train: rec("dspnet", "dspnet", vec![0.5, 1.0], 30.0, 900, 600),
            evals: vec![ev(0.5, "knn", 40.0), ev(1.0, "knn", 50.0)],
        };
        let one = vec![
            SubRun {
                train: rec("byol-w0_50", "one-by-one", vec![0.5], 10.0, 300, 200),
                evals: vec![ev(0.5, "knn", 41.5)],
            },
            SubRun {
                train: rec("byol-w1_00", "one-by-one", vec![1.0], 50.0, 1200, 400),
                evals: vec![ev(1.0, "knn", 45.0)],
            },
        ];
        let c = build(meta(false), &[SeedRuns { seed: 0, dspnet: dsp, one, budget: None }], Vec::new());
        assert_eq!(c.results.len(), 2);
        assert_eq!((c.results[0].width, c.results[0].dspnet_top1, c.results[0].one_by_one_top1), (0.5, 40.0, 41.5));
        assert!((c.results[0].difference + 1.5).abs() < 1e-12 && (c.results[1].difference - 5.0).abs() < 1e-12);
        assert_eq!(c.results[1].mflops, 2.0);
        // 30 / (10 + 50) = 0.5; 900 / 1500 = 0.6; 600 / 600 = 1.0; 600 / 400 = 1.5
        let r = &c.cost.ratios;
        assert_eq!(
            (r.wall_time, r.train_flops, r.peak_memory, r.peak_memory_vs_largest),
            (Some(0.5), Some(0.6), Some(1.0), Some(1.5))
        );
        let md = markdown(&c);
        assert!(md.contains("| 0.5 | 50 | 1.0 | 40.00 | 41.50 | -1.50 |"), "{md}");
        assert!(md.contains("One seed (0): no error bar") && !md.contains("verdict |"), "{md}");
        assert_eq!(c.summary[0].difference.verdict, crate::summary::Verdict::OneSeed);
        assert!(md.contains("**0.500**") && md.contains("**0.600**") && md.contains("**1.000**"), "{md}");
        // compare.json round-trips
        let back: Comparison = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn two_seeds_means_spreads_verdicts_and_mean_costs_by_hand() {
        let seed = |seed: u64, d: [f64; 2], o: [f64; 2], secs: f64| SeedRuns {
            seed,
            dspnet: SubRun {
                train: rec(&format!("seed{seed}/dspnet"), "dspnet", vec![0.5, 1.0], secs, 900, 600),
                evals: vec![ev(0.5, "knn", d[0]), ev(1.0, "knn", d[1])],
            },
            one: vec![
                SubRun {
                    train: rec(&format!("seed{seed}/byol-w0_50"), "one-by-one", vec![0.5], 10.0, 300, 200),
                    evals: vec![ev(0.5, "knn", o[0])],
                },
                SubRun {
                    train: rec(&format!("seed{seed}/byol-w1_00"), "one-by-one", vec![1.0], 50.0, 1200, 400),
                    evals: vec![ev(1.0, "knn", o[1])],
                },
            ],
            budget: None,
        };
        // width 0.5: DSPNet 40, 44 (mean 42, sd 2.83); one-by-one 38, 39; d = 2, 5: mean 3.5,
        // sd 2.12, SE 1.5; 3.5 - 3 > 0: ahead. Width 1.0: d = -1, +1: within noise
        let c = build(
            meta(true),
            &[seed(0, [40.0, 50.0], [38.0, 51.0], 30.0), seed(1, [44.0, 52.0], [39.0, 51.0], 36.0)],
            Vec::new(),
        );
        assert_eq!((c.seeds.clone(), c.results.len(), c.summary.len()), (vec![0, 1], 4, 2));
        let r = &c.summary[0];
        assert_eq!((r.width, r.seeds.clone(), r.dspnet.mean, r.one_by_one.mean), (0.5, vec![0, 1], 42.0, 38.5));
        assert!((r.dspnet.std.unwrap() - 8f64.sqrt()).abs() < 1e-12);
        assert!((r.difference.mean - 3.5).abs() < 1e-12 && (r.difference.standard_error.unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(r.difference.verdict, crate::summary::Verdict::Ahead);
        assert_eq!(c.summary[1].difference.verdict, crate::summary::Verdict::WithinNoise);
        // mean costs: DSPNet 33 s; ratios of the means: 33 / 60; per seed 0.5 and 0.6
        assert_eq!((c.cost.dspnet.name.as_str(), c.cost.dspnet.seconds), ("dspnet", 33.0));
        assert_eq!(c.cost.one_by_one[0].name, "byol-w0_50");
        assert!((c.cost.ratios.wall_time.unwrap() - 0.55).abs() < 1e-12);
        assert_eq!(c.per_seed.iter().map(|p| p.cost.ratios.wall_time.unwrap()).collect::<Vec<_>>(), vec![0.5, 0.6]);
        assert_eq!(c.runs.len(), 6);
        let md = markdown(&c);
        for want in [
            "| 0.5 | 50 | 1.0 | 2 | 42.00 ± 2.83 | 38.50 ± 0.71 | +3.50 ± 1.50 | ahead |",
            "| 1 | 100 | 2.0 | 2 | 51.00 ± 1.41 | 51.00 ± 0.00 | +0.00 ± 1.00 | within noise |",
            "| 1 | knn | 0.5 | 44.00 | 39.00 | +5.00 |",
            "| mean ± sd | 0.550 ± 0.071 |",
            "- Seeds: 0, 1 (each sets train.seed and loader.seed",
            VERDICT_RULE,
        ] {
            assert!(md.contains(want), "{want} not in\n{md}");
        }
        let back: Comparison = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
