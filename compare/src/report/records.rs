//! The records of `compare.json`: each training's record ([`TrainRecord`]), the accuracy rows,
//! the cost lines with their means, sums and ratios, the same-budget section, the machine, the
//! measurement methods and the whole [`Comparison`] they make up. Plain serde data with the few
//! sums and means over them that the cost section needs; assembling them is `build.rs`'s job.

use crate::cost::{ratio, BudgetSplit};
use crate::curves::{MeanCurve, RunCurve};
use crate::plan::MonitorSection;
use crate::summary::SummaryRow;
use serde::{Deserialize, Serialize};

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
    /// Pieces the training took: 1 when trained in one go, more when `--resume` continued it
    /// from a checkpoint after an interruption (`seconds` then sums the pieces' kept steps; peak
    /// memory and `process_seconds` are the last piece's).
    #[serde(default = "crate::child::first_piece")]
    pub pieces: u32,
    /// The run configuration trained (TOML); a sub-run is kept on `--resume` only when it
    /// equals the one asked for.
    pub config_toml: String,
    /// The host that trained it and the wall-clock span of each piece's training process (Unix
    /// seconds: start, end), so a report can tell trainings that shared a machine at the same
    /// time (parallel `--only` jobs) from ones that ran one after another. Empty in records
    /// written before dspnet-compare kept them.
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub spans: Vec<(f64, f64)>,
    /// Set when `--baseline-from` copied this run from an earlier comparison: where it was
    /// trained. Kept in the copy's record, so every later report (after `--resume`, `--only`
    /// jobs, or a copy of the copy) still says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<CopiedFrom>,
}

/// The comparison a copied run was trained in (see [`TrainRecord::copied_from`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFrom {
    /// Its `--out` folder (absolute), where the run was trained.
    pub from: String,
    /// Its code version (from its compare.json; "unknown" when it has none).
    pub code_version: String,
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
    pub(super) fn of(r: &TrainRecord) -> Self {
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
pub(super) fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl Cost {
    /// DSPNet's cost line, the one-by-one lines, their sum and the ratios.
    pub(super) fn of(dspnet: CostLine, ones: Vec<CostLine>) -> Cost {
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
    pub(super) fn mean(costs: &[Cost]) -> Cost {
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
    /// `--baseline-from`: the runs copied from earlier comparisons (their costs were measured
    /// there, not in this run), one entry per comparison they came from. Absent when every run
    /// was trained here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reused: Vec<Reused>,
}

/// Runs copied from one earlier comparison by `--baseline-from`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reused {
    /// The earlier comparison's `--out` folder (absolute), where the runs were trained.
    pub from: String,
    /// Its code version (from its compare.json; "unknown" when it has none).
    pub code_version: String,
    /// Names of the copied runs, e.g. `byol-w0_25`.
    pub runs: Vec<String>,
}

impl Reused {
    /// The copied runs among `runs`, grouped by the comparison they came from (in order of
    /// first appearance).
    pub fn of(runs: &[TrainRecord]) -> Vec<Reused> {
        let mut out: Vec<Reused> = Vec::new();
        for r in runs {
            let Some(c) = &r.copied_from else { continue };
            match out.iter_mut().find(|u| u.from == c.from && u.code_version == c.code_version) {
                Some(u) => u.runs.push(r.name.clone()),
                None => out.push(Reused {
                    from: c.from.clone(),
                    code_version: c.code_version.clone(),
                    runs: vec![r.name.clone()],
                }),
            }
        }
        out
    }
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

/// How wall time is measured, before what is known of the trainings' order.
const TIME: &str = "wall time of each training loop (first batch to last step, checkpoints included) minus the seconds of the kNN monitor's evaluations (recorded in metrics.jsonl), each training in its own process";

impl TrainRecord {
    /// Whether this training and `other` ran on the same host at the same time (some piece of
    /// each overlapping the other's); false when either recorded no host or spans.
    pub fn overlaps(&self, other: &TrainRecord) -> bool {
        !self.host.is_empty()
            && self.host == other.host
            && self.spans.iter().any(|a| other.spans.iter().any(|b| a.0 < b.1 && b.0 < a.1))
    }
}

/// The pairs of `runs` (by name) that trained on the same host at the same time.
pub fn concurrent(runs: &[TrainRecord]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (i, a) in runs.iter().enumerate() {
        for b in &runs[i + 1..] {
            if a.overlaps(b) {
                pairs.push((a.name.clone(), b.name.clone()));
            }
        }
    }
    pairs
}

impl Methods {
    /// The methods of a comparison of `runs`: the wall-time line says whether they ran one
    /// after another, which of them shared a machine at the same time (their times then include
    /// that contention), or that their times were not recorded.
    pub fn of(runs: &[TrainRecord]) -> Self {
        let pairs = concurrent(runs);
        let unknown: Vec<&str> = runs.iter().filter(|r| r.spans.is_empty()).map(|r| r.name.as_str()).collect();
        let time = if !pairs.is_empty() {
            let list: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} with {b}")).collect();
            format!(
                "{TIME}; some trained at the same time on the same machine (parallel jobs): {}; their wall times include the slowdown of sharing it",
                list.join(", ")
            )
        } else if unknown.is_empty() {
            format!(
                "{TIME}, one after another (the recorded spans of their training processes do not overlap; evaluations and other work on the machine are not recorded)"
            )
        } else {
            format!(
                "{TIME}; start and end times not recorded for {} (an older dspnet-compare): whether they overlapped others is not known",
                unknown.join(", ")
            )
        };
        Methods { time, ..Methods::default() }
    }
}

impl Default for Methods {
    fn default() -> Self {
        Methods {
            flops: "counted multiply-accumulates (convolutions and the heads' linear layers): per image and step, both views through the momentum teacher once (forward) and through the online network at every width the sandwich rule chose that step (forward + backward = 3 x forward); steps per width read from metrics.jsonl; the optimiser and EMA updates, BN, ReLU and the loss are not counted".into(),
            memory: "peak resident set size (VmHWM of /proc/self/status) of each training's own child process, read when its training finished; each process trains once, so the peak is that training's alone (libtorch, loader, networks, optimiser state, activations)".into(),
            time: format!("{TIME}, one after another"),
            one_by_one: "plain BYOL (method.name = \"byol\", the same code path) on its own network of exactly that width: base_channels x w, heads.hidden x w, teacher at that width; same shards, augmentations, optimiser, schedule, epochs and seed".into(),
            same_budget: "DSPNet's training wall time split equally over the widths; each one-by-one run gets floor(share / its measured seconds per step) steps, with its schedules (cosine, warm-up) planned for that length".into(),
            seeds: "a seed sets train.seed and loader.seed of every sub-run of both sides (initial weights, the sandwich rule's draws, the data order); the data subset is the same for every seed; DSPNet and one-by-one are paired by seed".into(),
            monitor: "the trainer's kNN monitor (dspnet-eval's kNN protocol, eval-mode BN, centre views) at every epoch end and every compare.monitor.every_steps steps; bank = the first bank_images training images, classified = the first test_images test images; it changes no weight, and its seconds are left out of the wall time (its memory is in the peak); training FLOPs up to a point are the count of the FLOPs line cut at that step; a DSPNet point counts the whole DSPNet training, a one-by-one point that width's training".into(),
        }
    }
}
