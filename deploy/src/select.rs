//! `dspnet-select`'s logic: the width with the best evaluated accuracy that fits a budget.
//!
//! A slimmable network pretrained once (DSPNet, Wang et al., arXiv 2207.06075, §3) offers one
//! sub-network per width multiplier; deployment picks the one that is most accurate within the
//! target device's budget — the "choose a width at deploy time" use of Slimmable Networks (Yu et
//! al. 2019, §1). The budget is ONE of: latency (ms, measured on this machine), MFLOPs
//! (multiply-accumulates / 1e6 of one image at the run's resolution, as [`dspnet_model::SlimResNet::flops`])
//! or parameters (standalone sub-network, as [`dspnet_model::SlimResNet::num_params`]).
//!
//! Rules (tested below on hand-made tables):
//! - a width fits when its cost is `<=` the limit;
//! - among the widths that fit, the highest top-1 of the chosen metric (pretrained weights) wins;
//!   equal top-1 goes to the cheaper (smaller) width;
//! - a width that fits but has no result of the metric cannot be chosen;
//! - no width fits: [`DeployError::NoWidthFits`] naming what the cheapest width needs.

use crate::error::{DeployError, Result};

/// Evaluation protocol whose top-1 ranks the widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Linear probe top-1 (`protocol = "linear"` in results.json).
    Linear,
    /// Weighted kNN top-1 (`protocol = "knn"`).
    Knn,
}

impl Metric {
    /// The `protocol` string of results.json.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Linear => "linear",
            Metric::Knn => "knn",
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = DeployError;
    /// `linear` or `knn`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "linear" => Ok(Metric::Linear),
            "knn" => Ok(Metric::Knn),
            m => Err(DeployError::Usage(format!("--metric {m}: unknown metric; use linear or knn"))),
        }
    }
}

/// A budget: the most a deployed width may cost. Limits are positive and finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Median latency in milliseconds at the selection's batch size, measured on this machine.
    LatencyMs(f64),
    /// Millions of multiply-accumulates of one image at the run's image size.
    MFlops(f64),
    /// Parameters of the standalone sub-network (count).
    Params(f64),
}

impl Budget {
    /// Builds the one budget out of the three command-line options.
    ///
    /// # Errors
    /// [`DeployError::Usage`] when none or more than one is given, or the value is not a
    /// positive finite number (negative, zero, NaN, inf).
    pub fn from_options(latency_ms: Option<f64>, mflops: Option<f64>, params: Option<f64>) -> Result<Self> {
        let given: Vec<Budget> =
            [latency_ms.map(Budget::LatencyMs), mflops.map(Budget::MFlops), params.map(Budget::Params)]
                .into_iter()
                .flatten()
                .collect();
        let b = match given.as_slice() {
            [b] => *b,
            [] => {
                return Err(DeployError::Usage(
                    "no budget given: pass exactly one of --max-latency-ms, --max-mflops, --max-params".into(),
                ))
            }
            many => {
                let names: Vec<&str> = many.iter().map(|b| b.option()).collect();
                return Err(DeployError::Usage(format!(
                    "{} given: pass exactly one budget (--max-latency-ms, --max-mflops or --max-params)",
                    names.join(" and ")
                )));
            }
        };
        let v = b.limit();
        if !(v.is_finite() && v > 0.0) {
            return Err(DeployError::Usage(format!(
                "{} {v}: the budget must be a positive finite number ({})",
                b.option(),
                b.unit()
            )));
        }
        Ok(b)
    }

    /// The command-line option of this budget, e.g. `--max-mflops`.
    pub fn option(&self) -> &'static str {
        match self {
            Budget::LatencyMs(_) => "--max-latency-ms",
            Budget::MFlops(_) => "--max-mflops",
            Budget::Params(_) => "--max-params",
        }
    }

    /// The unit of the limit: `ms`, `MFLOPs` or `parameters`.
    pub fn unit(&self) -> &'static str {
        match self {
            Budget::LatencyMs(_) => "ms",
            Budget::MFlops(_) => "MFLOPs",
            Budget::Params(_) => "parameters",
        }
    }

    /// The limit in [`Self::unit`].
    pub fn limit(&self) -> f64 {
        match *self {
            Budget::LatencyMs(v) | Budget::MFlops(v) | Budget::Params(v) => v,
        }
    }

    /// What `row` costs in this budget's unit.
    pub fn cost(&self, row: &WidthRow) -> f64 {
        match self {
            Budget::LatencyMs(_) => row.latency_ms,
            Budget::MFlops(_) => row.flops as f64 / 1e6,
            Budget::Params(_) => row.params as f64,
        }
    }

    /// `cost` formatted in this budget's unit: `1.769 MFLOPs`, `0.412 ms`, `44220 parameters`.
    pub fn format_cost(&self, cost: f64) -> String {
        match self {
            Budget::Params(_) => format!("{cost:.0} parameters"),
            _ => format!("{} {}", short(cost), self.unit()),
        }
    }
}

/// A number with 3 significant decimals, no trailing zeros (`1.769472 -> 1.769`, `2.0 -> 2`).
fn short(v: f64) -> String {
    let s = if v.abs() >= 1.0 { format!("{v:.3}") } else { format!("{v:.4}") };
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// `0.25 -> "0.25x"`, `1.0 -> "1.0x"` (the shortest decimal that reads back as the width).
pub fn width_label(width: f64) -> String {
    format!("{width:?}x")
}

/// One width's facts for selection.
#[derive(Clone, Debug, PartialEq)]
pub struct WidthRow {
    /// Width multiplier.
    pub width: f64,
    /// Parameters of the standalone sub-network.
    pub params: i64,
    /// Multiply-accumulates of one image at the run's image size.
    pub flops: u64,
    /// Median latency (ms) at the selection's batch size on this machine.
    pub latency_ms: f64,
    /// Top-1 (%) of the metric for the pretrained weights; `None` when not evaluated.
    pub top1: Option<f64>,
}

/// The verdict on one width.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub row: WidthRow,
    /// Cost in the budget's unit.
    pub cost: f64,
    /// `cost <= limit`.
    pub fits: bool,
    /// The selected width.
    pub chosen: bool,
}

/// Result of [`select`]: every width (ascending) with its verdict; exactly one is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub budget: Budget,
    pub metric: Metric,
    pub verdicts: Vec<Verdict>,
}

impl Selection {
    /// The chosen width's verdict.
    pub fn chosen(&self) -> &Verdict {
        self.verdicts.iter().find(|v| v.chosen).expect("a Selection always has a chosen width")
    }

    /// A plain-text table, one row per width (ascending): width, params, MFLOPs, latency (ms),
    /// top-1 of the metric, whether it fits and which is chosen. `latency_header` names the
    /// latency column (e.g. `latency ms (b1)`).
    pub fn table(&self, latency_header: &str) -> String {
        let acc = format!("{} top-1", self.metric.name());
        let mut out = format!(
            "| {:>6} | {:>10} | {:>9} | {:>14} | {:>12} | {:>4} | {:>6} |\n|{}|\n",
            "width",
            "params",
            "MFLOPs",
            latency_header,
            acc,
            "fits",
            "chosen",
            [
                "-".repeat(8),
                "-".repeat(12),
                "-".repeat(11),
                "-".repeat(16),
                "-".repeat(14),
                "-".repeat(6),
                "-".repeat(8)
            ]
            .join("|")
        );
        for v in &self.verdicts {
            let r = &v.row;
            let top1 = r.top1.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into());
            out += &format!(
                "| {:>6} | {:>10} | {:>9.3} | {:>14.3} | {:>12} | {:>4} | {:>6} |\n",
                width_label(r.width),
                r.params,
                r.flops as f64 / 1e6,
                r.latency_ms,
                top1,
                if v.fits { "yes" } else { "no" },
                if v.chosen { "<==" } else { "" }
            );
        }
        out
    }
}

/// Picks the width with the best top-1 that fits `budget` (see the module docs for the rules).
///
/// `rows` in any order (the selection lists them by ascending width). `results` names where
/// the accuracies came from, for messages (e.g. `runs/x/results.json`).
///
/// # Errors
/// - [`DeployError::NoResults`] when no width has a result of `metric` (the user must run
///   dspnet-eval), or when every fitting width lacks one;
/// - [`DeployError::NoWidthFits`] when every width costs more than the limit: the message names
///   the cheapest width and what it needs;
/// - [`DeployError::Run`] when `rows` is empty or a latency is not a positive finite number.
pub fn select(rows: &[WidthRow], budget: Budget, metric: Metric, results: &str) -> Result<Selection> {
    if rows.is_empty() {
        return Err(DeployError::Run("the run has no width to select from".into()));
    }
    if let Some(r) = rows.iter().find(|r| !(r.latency_ms.is_finite() && r.latency_ms > 0.0)) {
        return Err(DeployError::Run(format!(
            "width {}: latency {} ms is not a positive number; re-run dspnet-profile",
            width_label(r.width),
            r.latency_ms
        )));
    }
    if rows.iter().all(|r| r.top1.is_none()) {
        return Err(DeployError::NoResults(format!(
            "{results} has no {m} result of the pretrained network; run dspnet-eval RUN --protocol {m} first (or pick another --metric)",
            m = metric.name()
        )));
    }
    let mut sorted = rows.to_vec();
    sorted.sort_by(|a, b| a.width.total_cmp(&b.width));
    let mut verdicts: Vec<Verdict> = sorted
        .into_iter()
        .map(|row| {
            let cost = budget.cost(&row);
            Verdict { fits: cost <= budget.limit(), cost, row, chosen: false }
        })
        .collect();
    check_any_fits(rows, budget)?;
    // best top-1 among the fitting widths; ties to the cheaper, then the narrower width
    let best = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.fits)
        .filter_map(|(i, v)| v.row.top1.map(|t| (i, t, v.cost, v.row.width)))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2)).then(b.3.total_cmp(&a.3)))
        .map(|(i, ..)| i);
    let Some(best) = best else {
        let fitting: Vec<String> = verdicts.iter().filter(|v| v.fits).map(|v| width_label(v.row.width)).collect();
        return Err(DeployError::NoResults(format!(
            "{} fit {} {} but {results} has no {m} result for them; run dspnet-eval RUN --protocol {m} on every width",
            fitting.join(", "),
            budget.option(),
            short_budget(budget.limit()),
            m = metric.name()
        )));
    };
    verdicts[best].chosen = true;
    Ok(Selection { budget, metric, verdicts })
}

/// Checks that at least one of `rows` fits `budget`, reading only the quantity the budget
/// limits (so an MFLOPs or parameter budget can be checked before any latency is measured).
///
/// # Errors
/// [`DeployError::NoWidthFits`]: `no width fits --max-mflops 1.0: the smallest, 0.25x, needs
/// 1.8 MFLOPs` (the cheapest width by that quantity, ties to the narrower);
/// [`DeployError::Run`] when `rows` is empty.
pub fn check_any_fits(rows: &[WidthRow], budget: Budget) -> Result<()> {
    let cheapest = rows
        .iter()
        .map(|r| (budget.cost(r), r.width))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .ok_or_else(|| DeployError::Run("the run has no width to select from".into()))?;
    if cheapest.0 <= budget.limit() {
        return Ok(());
    }
    Err(DeployError::NoWidthFits(format!(
        "no width fits {} {}: the smallest, {}, needs {}",
        budget.option(),
        short_budget(budget.limit()),
        width_label(cheapest.1),
        budget.format_cost(cheapest.0)
    )))
}

/// The budget as the user would type it (`1.0`, `0.5`, `250000.0`).
fn short_budget(v: f64) -> String {
    format!("{v:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slimmable ResNet-18-like table (params and MACs of the main job's preset).
    fn table(top1: [Option<f64>; 4]) -> Vec<WidthRow> {
        let widths = [0.25, 0.5, 0.75, 1.0];
        let params = [44_220, 175_608, 394_164, 699_888];
        let flops = [1_800_000, 7_200_000, 16_100_000, 28_600_000];
        let lat = [0.4, 0.9, 1.7, 2.9];
        (0..4)
            .map(|i| WidthRow {
                width: widths[i],
                params: params[i],
                flops: flops[i],
                latency_ms: lat[i],
                top1: top1[i],
            })
            .collect()
    }

    fn chosen(rows: &[WidthRow], b: Budget, m: Metric) -> f64 {
        select(rows, b, m, "results.json").unwrap().chosen().row.width
    }

    #[test]
    fn each_budget_kind_picks_the_best_fitting_width() {
        // accuracy rises with width except 0.75 > 1.0
        let rows = table([Some(70.0), Some(72.9), Some(75.2), Some(75.0)]);
        // latency: 1.0 ms admits 0.25 (0.4) and 0.5 (0.9) -> 0.5
        assert_eq!(chosen(&rows, Budget::LatencyMs(1.0), Metric::Linear), 0.5);
        // 3.0 ms admits all -> best is 0.75 (75.2), not the widest
        assert_eq!(chosen(&rows, Budget::LatencyMs(3.0), Metric::Linear), 0.75);
        // MFLOPs: 16.1 admits 0.75 exactly (cost <= limit)
        assert_eq!(chosen(&rows, Budget::MFlops(16.1), Metric::Linear), 0.75);
        assert_eq!(chosen(&rows, Budget::MFlops(16.09), Metric::Linear), 0.5);
        // params: 200k admits 0.25 and 0.5
        assert_eq!(chosen(&rows, Budget::Params(200_000.0), Metric::Linear), 0.5);
        assert_eq!(chosen(&rows, Budget::Params(44_220.0), Metric::Linear), 0.25);
        let s = select(&rows, Budget::Params(200_000.0), Metric::Linear, "r").unwrap();
        let fits: Vec<bool> = s.verdicts.iter().map(|v| v.fits).collect();
        assert_eq!(fits, vec![true, true, false, false]);
        assert_eq!(s.verdicts.iter().filter(|v| v.chosen).count(), 1);
    }

    #[test]
    fn ties_go_to_the_cheaper_width() {
        let rows = table([Some(70.0), Some(74.0), Some(74.0), Some(74.0)]);
        assert_eq!(chosen(&rows, Budget::MFlops(100.0), Metric::Knn), 0.5);
        // order of the input does not matter
        let mut rev = rows.clone();
        rev.reverse();
        assert_eq!(chosen(&rev, Budget::MFlops(100.0), Metric::Knn), 0.5);
        let s = select(&rev, Budget::MFlops(100.0), Metric::Knn, "r").unwrap();
        let ws: Vec<f64> = s.verdicts.iter().map(|v| v.row.width).collect();
        assert_eq!(ws, vec![0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn none_fits_names_what_the_smallest_needs() {
        let rows = table([Some(70.0), Some(72.9), Some(75.2), Some(75.0)]);
        let e = select(&rows, Budget::MFlops(1.0), Metric::Linear, "r").unwrap_err();
        assert!(matches!(e, DeployError::NoWidthFits(_)));
        assert_eq!(e.to_string(), "no width fits --max-mflops 1.0: the smallest, 0.25x, needs 1.8 MFLOPs");
        let e = select(&rows, Budget::Params(1000.0), Metric::Linear, "r").unwrap_err().to_string();
        assert_eq!(e, "no width fits --max-params 1000.0: the smallest, 0.25x, needs 44220 parameters");
        let e = select(&rows, Budget::LatencyMs(0.25), Metric::Linear, "r").unwrap_err().to_string();
        assert_eq!(e, "no width fits --max-latency-ms 0.25: the smallest, 0.25x, needs 0.4 ms");
        // by latency the cheapest need not be the narrowest (noise): the message names the cheapest
        let mut rows = rows;
        rows[1].latency_ms = 0.3;
        let e = select(&rows, Budget::LatencyMs(0.25), Metric::Linear, "r").unwrap_err().to_string();
        assert_eq!(e, "no width fits --max-latency-ms 0.25: the smallest, 0.5x, needs 0.3 ms");
    }

    #[test]
    fn missing_metric_is_a_clear_error() {
        let rows = table([None, None, None, None]);
        let e = select(&rows, Budget::MFlops(100.0), Metric::Knn, "runs/x/results.json").unwrap_err();
        assert!(matches!(e, DeployError::NoResults(_)));
        let e = e.to_string();
        assert!(e.contains("runs/x/results.json has no knn result") && e.contains("dspnet-eval"), "{e}");
        // only the too-expensive widths were evaluated
        let rows = table([None, None, Some(75.0), Some(76.0)]);
        let e = select(&rows, Budget::MFlops(10.0), Metric::Linear, "r").unwrap_err().to_string();
        assert!(e.starts_with("0.25x, 0.5x fit --max-mflops 10.0 but r has no linear result"), "{e}");
        // an unevaluated width that fits is skipped, an evaluated one chosen
        let rows = table([Some(60.0), None, Some(75.0), Some(76.0)]);
        assert_eq!(chosen(&rows, Budget::MFlops(10.0), Metric::Linear), 0.25);
    }

    #[test]
    fn budget_options_are_validated() {
        assert_eq!(Budget::from_options(None, Some(2.5), None).unwrap(), Budget::MFlops(2.5));
        let e = Budget::from_options(None, None, None).unwrap_err().to_string();
        assert!(e.contains("no budget"), "{e}");
        let e = Budget::from_options(Some(1.0), Some(2.0), None).unwrap_err().to_string();
        assert!(e.starts_with("--max-latency-ms and --max-mflops given"), "{e}");
        for bad in [-1.0, 0.0, f64::NAN, f64::INFINITY] {
            let e = Budget::from_options(None, None, Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with("--max-params") && e.contains("positive finite"), "{e}");
        }
        assert!("svm".parse::<Metric>().is_err());
        assert_eq!("knn".parse::<Metric>().unwrap(), Metric::Knn);
    }
}
