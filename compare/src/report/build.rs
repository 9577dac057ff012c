//! Assembling a [`Comparison`] from the finished sub-runs of every seed: one accuracy row per
//! seed, width and protocol where both sides were evaluated, their summary over the seeds, each
//! seed's costs and same-budget runs, the means of the costs, and the monitor curves with their
//! means. The inputs ([`SubRun`], [`SeedRuns`], [`Meta`]) are defined here too.

use crate::cost::BudgetSplit;
use crate::curves::{mean_curves, RunCurve};
use crate::plan::MonitorSection;
use crate::report::records::{
    Comparison, Cost, CostLine, Machine, Methods, ResultRow, Reused, SameBudget, SeedCost, TrainRecord,
};
use crate::summary::{summarise, SeedTop1, SummaryRow, VERDICT_RULE};
use dspnet_run::EvalRecord;

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
    let (methods, reused) = (Methods::of(&runs), Reused::of(&runs));
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
        methods,
        reused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::markdown::markdown;
    use crate::report::records::{concurrent, CopiedFrom};

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
            pieces: 1,
            config_toml: String::new(),
            host: "h".into(),
            spans: Vec::new(),
            copied_from: None,
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

    fn at(name: &str, host: &str, spans: &[(f64, f64)]) -> TrainRecord {
        TrainRecord { host: host.into(), spans: spans.to_vec(), ..rec(name, "one-by-one", vec![1.0], 1.0, 1, 1) }
    }

    /// Overlap by hand: a piece of each inside the other's on one host; touching ends, another
    /// host, or one piece of a two-piece run before and one after do not count.
    #[test]
    fn the_wall_time_method_names_trainings_that_shared_a_machine() {
        let a = at("a", "h", &[(0.0, 10.0)]);
        let b = at("b", "h", &[(5.0, 20.0)]);
        let other_host = at("c", "g", &[(0.0, 10.0)]);
        let after_b = at("d", "h", &[(20.0, 30.0)]);
        let two_pieces = at("e", "h", &[(30.0, 35.0), (50.0, 60.0)]);
        let inside_gap = at("f", "h", &[(36.0, 49.0)]);
        let late = at("g", "h", &[(55.0, 70.0)]);
        let runs = [a.clone(), b.clone(), other_host, after_b.clone(), two_pieces, inside_gap, late];
        let pairs = concurrent(&runs);
        assert_eq!(pairs, vec![("a".into(), "b".into()), ("e".into(), "g".into())]);
        let t = Methods::of(&runs).time;
        assert!(t.contains("at the same time on the same machine (parallel jobs): a with b, e with g"), "{t}");
        let t = Methods::of(&[a.clone(), after_b]).time;
        assert!(t.contains("one after another (the recorded spans of their training processes do not overlap;"), "{t}");
        let unrecorded = at("old", "", &[]);
        let t = Methods::of(&[a, unrecorded]).time;
        assert!(t.contains("not recorded for old"), "{t}");
    }

    /// Copied runs are grouped by the comparison they came from, in order, whatever seed
    /// folder they are in; the report marks them and names the trainings that overlapped.
    #[test]
    fn reused_runs_and_overlaps_come_from_the_records() {
        let from = |dir: &str| Some(CopiedFrom { from: dir.into(), code_version: "v1".into() });
        let runs = [
            TrainRecord { copied_from: from("x"), ..rec("seed0/byol-w0_50", "one-by-one", vec![0.5], 1.0, 1, 1) },
            rec("seed0/dspnet", "dspnet", vec![0.5, 1.0], 1.0, 1, 1),
            TrainRecord { copied_from: from("y"), ..rec("seed1/byol-w0_50", "one-by-one", vec![0.5], 1.0, 1, 1) },
            TrainRecord { copied_from: from("x"), ..rec("seed1/byol-w1_00", "one-by-one", vec![1.0], 1.0, 1, 1) },
        ];
        let r = Reused::of(&runs);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].from.as_str(), r[0].runs.clone()),
            ("x", vec!["seed0/byol-w0_50".into(), "seed1/byol-w1_00".into()])
        );
        assert_eq!((r[1].from.as_str(), r[1].runs.clone()), ("y", vec!["seed1/byol-w0_50".to_string()]));

        let dsp = SubRun {
            train: TrainRecord {
                spans: vec![(100.0, 200.0)],
                ..rec("dspnet", "dspnet", vec![0.5, 1.0], 30.0, 900, 600)
            },
            evals: vec![ev(0.5, "knn", 40.0), ev(1.0, "knn", 50.0)],
        };
        let one = vec![
            SubRun {
                train: TrainRecord {
                    spans: vec![(150.0, 160.0)],
                    copied_from: from("base"),
                    ..rec("byol-w0_50", "one-by-one", vec![0.5], 10.0, 300, 200)
                },
                evals: vec![ev(0.5, "knn", 41.5)],
            },
            SubRun {
                train: TrainRecord {
                    spans: vec![(200.0, 260.0)],
                    ..rec("byol-w1_00", "one-by-one", vec![1.0], 50.0, 1200, 400)
                },
                evals: vec![ev(1.0, "knn", 45.0)],
            },
        ];
        let c = build(meta(false), &[SeedRuns { seed: 0, dspnet: dsp, one, budget: None }], Vec::new());
        let md = markdown(&c);
        for want in [
            "| byol-w0_50 (reused) |",
            "| byol-w1_00 |",
            "Reused: byol-w0_50 trained in the comparison in base (code version `v1`) and copied here by `--baseline-from`",
            "Trained at the same time on the same machine (parallel jobs, e.g. `--only`): dspnet with byol-w0_50.",
            "- Wall time: wall time of each training loop",
        ] {
            assert!(md.contains(want), "{want} not in\n{md}");
        }
    }
}
