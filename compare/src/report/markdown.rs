//! `report.md`: the header (command, code version, machine, config, seeds, shards), the top-1
//! tables (one seed: its rows; several: means ± sd, paired differences ± SE and verdicts, then
//! every seed's rows), the cost table and ratios, the same-budget section, the kNN-curves section
//! (from `curves_section.rs`) and how everything was measured, with the small number formats
//! they share.

use crate::report::curves_section::curves_section;
use crate::report::records::{base_name, concurrent, Comparison, CostLine, Ratios};
use crate::summary::{Paired, Spread, VERDICT_RULE};
use dspnet_core::stats::{mean, sample_std};

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

/// The widths with a one-by-one network (`--one-by-one-widths`), when they are fewer than the
/// compared widths; `None` when every compared width has one.
fn one_by_one_subset(c: &Comparison) -> Option<Vec<f64>> {
    let ws: Vec<f64> = c.cost.one_by_one.iter().flat_map(|l| l.widths.iter().copied()).collect();
    (ws.len() < c.widths.len()).then_some(ws)
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
                    s += &same_budget_cells(r.same_budget_top1, r.same_budget_difference);
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
            s += &same_budget_cells(r.same_budget_top1, r.same_budget_difference);
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

/// The same-budget cells of one seed's row: its top-1 and difference, or `-` when not trained.
fn same_budget_cells(top1: Option<f64>, difference: Option<f64>) -> String {
    match (top1, difference) {
        (Some(t), Some(d)) => format!(" {t:.2} | {d:+.2} |"),
        _ => " - | - |".to_string(),
    }
}

/// `## Cost`: the (mean) cost table and ratios; with several seeds, each seed's ratios.
fn cost_section(c: &Comparison) -> String {
    let mut s = if c.seeds.len() < 2 {
        String::from("## Cost\n\n")
    } else {
        format!("## Cost\n\nEach training's mean over the {} seeds, and the ratios of those means.\n\n", c.seeds.len())
    };
    if let Some(ws) = one_by_one_subset(c) {
        s += &format!(
            "One-by-one networks were trained at widths {} only (of DSPNet's {}): their sum and the ratios below leave the other widths' one-by-one cost out, so they understate what training every width alone costs.\n\n",
            widths_text(&ws),
            widths_text(&c.widths)
        );
    }
    s += "| training | widths | wall time (s) | steps | training FLOPs (GMACs) | peak memory (MB) | peak above start-up (MB) |\n|---|---|---:|---:|---:|---:|---:|\n";
    let reused = |name: &str| c.reused.iter().any(|r| r.runs.iter().any(|n| n == name || base_name(n) == name));
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
    for u in &c.reused {
        s += &format!(
            "Reused: {} trained in the comparison in {} (code version `{}`) and copied here by `--baseline-from` \
             (from that folder or from a copy of it), not trained here; their wall time, FLOPs and memory were measured \
             when it ran, so the ratios compare runs from two sessions (same machine only if that comparison ran on this one).\n\n",
            u.runs.join(", "),
            u.from,
            u.code_version
        );
    }
    let pairs = concurrent(&c.runs);
    if !pairs.is_empty() {
        let list: Vec<String> = pairs.iter().map(|(a, b)| format!("{a} with {b}")).collect();
        s += &format!(
            "Trained at the same time on the same machine (parallel jobs, e.g. `--only`): {}. Their wall times include the \
             slowdown of sharing its cores, memory bandwidth or GPU, so the wall-time ratio is not the method's alone; \
             FLOPs and peak memory are not affected.\n\n",
            list.join(", ")
        );
    }
    let pieces: Vec<String> =
        c.runs.iter().filter(|r| r.pieces > 1).map(|r| format!("{} ({} pieces)", r.name, r.pieces)).collect();
    if !pieces.is_empty() {
        s += &format!(
            "Continued from a checkpoint after an interruption (`--resume`): {}. Their wall time sums each piece's training \
             up to the checkpoint the next one started from (steps trained again after it count once); their peak memory \
             is the last piece's.\n\n",
            pieces.join(", ")
        );
    }
    s += &format!(
        "Peak memory of DSPNet's training over the largest single one-by-one training (each in its own process): {}. \
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
    let one_by_one =
        one_by_one_subset(c).map_or(String::new(), |ws| format!(" (one-by-one at {} only)", widths_text(&ws)));
    s += &format!(
        "- Config: {}; widths {}{one_by_one}; protocols {}\n",
        c.config,
        widths_text(&c.widths),
        c.protocols.join(", ")
    );
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
