//! The comparison's outputs: `compare.json` (every record), `report.md` (accuracy per width and
//! protocol, cost table and ratios, how it was measured, command, code version, machine) and
//! `compare.png` (top-1 against MFLOPs, DSPNet and one-by-one curves per protocol). All three are
//! written atomically (temporary file in the same folder, fsync, rename).

use crate::cost::{ratio, BudgetSplit};
use crate::error::{CompareError, Result};
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
    /// Training loop wall time, seconds (see `child.rs`).
    pub seconds: f64,
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

/// One row of the accuracy table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
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
    pub runs: Vec<TrainRecord>,
    pub results: Vec<ResultRow>,
    pub cost: Cost,
    pub same_budget: Option<SameBudget>,
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
}

impl Default for Methods {
    fn default() -> Self {
        Methods {
            flops: "counted multiply-accumulates (convolutions and the heads' linear layers): per image and step, both views through the momentum teacher once (forward) and through the online network at every width the sandwich rule chose that step (forward + backward = 3 x forward); steps per width read from metrics.jsonl; the optimiser and EMA updates, BN, ReLU and the loss are not counted".into(),
            memory: "peak resident set size (VmHWM of /proc/self/status) of each training's own child process, read when its training finished; each process trains once, so the peak is that training's alone (libtorch, loader, networks, optimiser state, activations)".into(),
            time: "wall time of each training loop (first batch to last step, checkpoints included), each training alone in its own process, one after another".into(),
            one_by_one: "plain BYOL (method.name = \"byol\", the same code path) on its own network of exactly that width: base_channels x w, heads.hidden x w, teacher at that width; same shards, augmentations, optimiser, schedule, epochs and seed".into(),
            same_budget: "DSPNet's training wall time split equally over the widths; each one-by-one run gets floor(share / its measured seconds per step) steps, with its schedules (cosine, warm-up) planned for that length".into(),
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
    /// Runs copied by `--baseline-from` (`None` without it or when nothing was copied).
    pub reused: Option<Reused>,
}

/// Assembles the comparison: one row per (protocol, width) where both DSPNet and the
/// one-by-one network were evaluated; costs and ratios.
pub fn build(meta: Meta, dspnet: &SubRun, one: &[SubRun], budget: Option<(BudgetSplit, &[SubRun])>) -> Comparison {
    let mut protocols: Vec<String> = Vec::new();
    for r in &dspnet.evals {
        if !protocols.contains(&r.protocol) {
            protocols.push(r.protocol.clone());
        }
    }
    let mut results = Vec::new();
    for p in &protocols {
        for &w in &meta.widths {
            let Some(d) = find(&dspnet.evals, w, p) else { continue };
            let Some(o) = one.iter().find_map(|s| find(&s.evals, w, p)) else { continue };
            let s = budget.as_ref().and_then(|(_, runs)| runs.iter().find_map(|s| find(&s.evals, w, p)));
            results.push(ResultRow {
                width: w,
                params: d.params,
                mflops: d.macs as f64 / 1e6,
                protocol: p.clone(),
                dspnet_top1: d.top1,
                one_by_one_top1: o.top1,
                difference: d.top1 - o.top1,
                same_budget_top1: s.map(|s| s.top1),
                same_budget_difference: s.map(|s| d.top1 - s.top1),
            });
        }
    }
    let d = CostLine::of(&dspnet.train);
    let ones: Vec<CostLine> = one.iter().map(|s| CostLine::of(&s.train)).collect();
    let sum = CostLine::sum("one-by-one, sum", &ones);
    let largest = ones.iter().map(|l| l.peak_rss_bytes).max().unwrap_or(0);
    let ratios = Ratios {
        wall_time: ratio(d.seconds, sum.seconds),
        train_flops: ratio(d.train_macs as f64, sum.train_macs as f64),
        peak_memory: ratio(d.peak_rss_bytes as f64, sum.peak_rss_bytes as f64),
        peak_memory_vs_largest: ratio(d.peak_rss_bytes as f64, largest as f64),
        peak_memory_above_start: ratio(d.peak_above_start_bytes as f64, sum.peak_above_start_bytes as f64),
    };
    let mut runs: Vec<TrainRecord> = std::iter::once(dspnet).chain(one).map(|s| s.train.clone()).collect();
    let same_budget = budget.map(|(split, rs)| {
        runs.extend(rs.iter().map(|s| s.train.clone()));
        let lines: Vec<CostLine> = rs.iter().map(|s| CostLine::of(&s.train)).collect();
        SameBudget { summed_seconds: lines.iter().map(|l| l.seconds).sum(), split, runs: lines }
    });
    let mut machine = meta.machine;
    machine.threads = runs.iter().map(|r| r.threads).collect();
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
        runs,
        results,
        cost: Cost { dspnet: d, one_by_one: ones, one_by_one_sum: sum, ratios },
        same_budget,
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
    s += &format!(
        "- Shards: {} training, {} test ({} / {})\n\n",
        c.train_shards.len(),
        c.test_shards.len(),
        c.train_shards.first().map_or("-", |s| s.as_str()),
        c.test_shards.first().map_or("-", |s| s.as_str())
    );
    let budget = c.same_budget.is_some();
    let mut protocols: Vec<&str> = Vec::new();
    for r in &c.results {
        if !protocols.contains(&r.protocol.as_str()) {
            protocols.push(&r.protocol);
        }
    }
    s += "## Top-1 per width\n\nDifference = DSPNet minus one-by-one, in points.\n\n";
    for p in protocols {
        s += &format!("### {p}\n\n| width | params | MFLOPs | DSPNet top-1 (%) | one-by-one top-1 (%) | difference |");
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
    s += "## Cost\n\n| training | widths | wall time (s) | steps | training FLOPs (GMACs) | peak memory (MB) | peak above start-up (MB) |\n|---|---|---:|---:|---:|---:|---:|\n";
    let reused = |name: &str| c.reused.as_ref().is_some_and(|r| r.runs.iter().any(|n| n == name));
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
    if let Some(b) = &c.same_budget {
        s += &format!(
            "## Same total budget\n\nDSPNet's training wall time, {:.1} s, split equally: {:.1} s per width.\n\n\
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
    s += "## How it was measured\n\n";
    s += &format!("- FLOPs: {}.\n", c.methods.flops);
    s += &format!("- Peak memory: {}.\n", c.methods.memory);
    s += &format!("- Wall time: {}.\n", c.methods.time);
    s += &format!("- One-by-one: {}.\n", c.methods.one_by_one);
    s += &format!("- Same budget: {}.\n", c.methods.same_budget);
    s
}

/// Draws compare.png: top-1 against MFLOPs, one curve per (training, protocol).
///
/// Errors: the plot font is missing or the PNG cannot be written.
pub fn plot(c: &Comparison, path: &Path) -> Result<()> {
    let mut recs = Vec::new();
    for r in &c.results {
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
        push("DSPNet", r.dspnet_top1);
        push("one-by-one", r.one_by_one_top1);
        if let Some(t) = r.same_budget_top1 {
            push("one-by-one, same budget", t);
        }
    }
    if recs.is_empty() {
        return Err(CompareError::SubRun("no evaluation result to plot".into()));
    }
    dspnet_eval::report::plot(&recs, path, "DSPNet vs one-by-one BYOL: top-1 against MFLOPs")
        .map_err(|e| CompareError::SubRun(e.to_string()))?;
    Ok(())
}

/// Writes compare.json, report.md and compare.png into `out`, each atomically.
pub fn write_all(c: &Comparison, out: &Path) -> Result<()> {
    dspnet_core::fs::write_atomic(
        &out.join("compare.json"),
        &serde_json::to_vec_pretty(c).expect("comparison serialises"),
    )?;
    dspnet_core::fs::write_atomic(&out.join("report.md"), markdown(c).as_bytes())?;
    plot(c, &out.join("compare.png"))
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
        let meta = Meta {
            command: "dspnet-compare --preset cpu".into(),
            code_version: "v0".into(),
            machine: Machine::now(),
            config: "preset cpu".into(),
            widths: vec![0.5, 1.0],
            protocols: vec!["knn".into()],
            train_shards: vec!["a".into()],
            test_shards: vec!["b".into()],
            reused: None,
        };
        let c = build(meta, &dsp, &one, None);
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
        assert!(md.contains("**0.500**") && md.contains("**0.600**") && md.contains("**1.000**"), "{md}");
        // compare.json round-trips
        let back: Comparison = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
