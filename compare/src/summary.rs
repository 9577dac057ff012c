//! Accuracy over seeds: per width and protocol, each side's mean and standard deviation, the
//! paired differences DSPNet − one-by-one (the same seed on both sides) with their mean and
//! standard error, and the verdict ([`VERDICT_RULE`]).

use dspnet_core::stats::{mean, sample_std, standard_error};
use serde::{Deserialize, Serialize};

/// The verdict rule, as the report states it.
pub const VERDICT_RULE: &str = "per width and protocol, d_i = DSPNet top-1 minus one-by-one top-1 of seed i (the same seed on both sides); \
mean d and its standard error SE = sd(d) / sqrt(n) (sample standard deviation, n - 1); \"ahead\" when mean d - 2 SE > 0, \
\"behind\" when mean d + 2 SE < 0, else \"within noise\"; with one seed SE is undefined and no verdict is given (\"one seed: no error bar\")";

/// The verdict on a paired difference (see [`VERDICT_RULE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "ahead")]
    Ahead,
    #[serde(rename = "within noise")]
    WithinNoise,
    #[serde(rename = "behind")]
    Behind,
    #[serde(rename = "one seed: no error bar")]
    OneSeed,
}

impl Verdict {
    /// The verdict of a mean difference and its standard error (`None`: one seed).
    pub fn of(mean: f64, standard_error: Option<f64>) -> Verdict {
        match standard_error {
            None => Verdict::OneSeed,
            Some(se) if mean - 2.0 * se > 0.0 => Verdict::Ahead,
            Some(se) if mean + 2.0 * se < 0.0 => Verdict::Behind,
            Some(_) => Verdict::WithinNoise,
        }
    }

    /// The words the report prints.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Ahead => "ahead",
            Verdict::WithinNoise => "within noise",
            Verdict::Behind => "behind",
            Verdict::OneSeed => "one seed: no error bar",
        }
    }
}

/// One side's top-1 (%) over the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Per seed, in the order of the row's `seeds`.
    pub values: Vec<f64>,
    pub mean: f64,
    /// Sample standard deviation (n − 1); `None` for one seed.
    pub std: Option<f64>,
}

impl Spread {
    /// The spread of `values` (at least one).
    pub fn of(values: Vec<f64>) -> Spread {
        Spread { mean: mean(&values).unwrap_or(f64::NAN), std: sample_std(&values), values }
    }
}

/// The paired differences DSPNet − other side over the seeds, points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Per seed, in the order of the row's `seeds`.
    pub values: Vec<f64>,
    pub mean: f64,
    /// `sd / sqrt(n)`; `None` for one seed.
    pub standard_error: Option<f64>,
    pub verdict: Verdict,
}

impl Paired {
    /// The paired differences `a_i − b_i` (equal lengths, at least one).
    pub fn of(a: &[f64], b: &[f64]) -> Paired {
        let values: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let m = mean(&values).unwrap_or(f64::NAN);
        let se = standard_error(&values);
        Paired { mean: m, standard_error: se, verdict: Verdict::of(m, se), values }
    }
}

/// One width and protocol over the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub protocol: String,
    pub width: f64,
    /// Backbone parameters and forward MFLOPs of the sub-network (as in the per-seed rows).
    pub params: i64,
    pub mflops: f64,
    /// The seeds with both sides evaluated, ascending.
    pub seeds: Vec<u64>,
    pub dspnet: Spread,
    pub one_by_one: Spread,
    /// DSPNet − one-by-one, paired by seed.
    pub difference: Paired,
    /// The same-budget one-by-one network and DSPNet − it, over the seeds that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_budget: Option<Spread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_budget_difference: Option<Paired>,
}

/// One seed's top-1 of one width and protocol: (seed, DSPNet, one-by-one, same-budget).
pub type SeedTop1 = (u64, f64, f64, Option<f64>);

/// The row of one width and protocol from its per-seed values (at least one; same-budget
/// statistics over the seeds that have it, when any does).
pub fn summarise(protocol: &str, width: f64, params: i64, mflops: f64, per_seed: &[SeedTop1]) -> SummaryRow {
    let mut v = per_seed.to_vec();
    v.sort_by_key(|x| x.0);
    let d: Vec<f64> = v.iter().map(|x| x.1).collect();
    let o: Vec<f64> = v.iter().map(|x| x.2).collect();
    let (bd, bs): (Vec<f64>, Vec<f64>) = v.iter().filter_map(|x| x.3.map(|s| (x.1, s))).unzip();
    SummaryRow {
        protocol: protocol.to_string(),
        width,
        params,
        mflops,
        seeds: v.iter().map(|x| x.0).collect(),
        difference: Paired::of(&d, &o),
        dspnet: Spread::of(d),
        one_by_one: Spread::of(o),
        same_budget: (!bs.is_empty()).then(|| Spread::of(bs.clone())),
        same_budget_difference: (!bs.is_empty()).then(|| Paired::of(&bd, &bs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_rule_on_hand_made_numbers() {
        // d = 1, 2, 3: mean 2, sd 1, SE 1/sqrt(3) = 0.577; 2 - 1.155 > 0: ahead
        let p = Paired::of(&[41.0, 42.0, 43.0], &[40.0, 40.0, 40.0]);
        assert_eq!(p.values, vec![1.0, 2.0, 3.0]);
        assert!((p.mean - 2.0).abs() < 1e-12 && (p.standard_error.unwrap() - 1.0 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(p.verdict, Verdict::Ahead);
        // d = -1, -2, -3: behind
        assert_eq!(Paired::of(&[39.0, 38.0, 37.0], &[40.0, 40.0, 40.0]).verdict, Verdict::Behind);
        // d = 1, -1, 3: mean 1, sd 2, SE 1.155; 1 - 2.31 < 0 < 1 + 2.31: within noise
        assert_eq!(Paired::of(&[41.0, 39.0, 43.0], &[40.0, 40.0, 40.0]).verdict, Verdict::WithinNoise);
        // the boundary: mean exactly 2 SE is not ahead (strict), a hair above is
        assert_eq!(Verdict::of(2.0, Some(1.0)), Verdict::WithinNoise);
        assert_eq!(Verdict::of(2.0 + 1e-9, Some(1.0)), Verdict::Ahead);
        assert_eq!(Verdict::of(-2.0, Some(1.0)), Verdict::WithinNoise);
        assert_eq!(Verdict::of(-2.0 - 1e-9, Some(1.0)), Verdict::Behind);
        // no spread at all: any non-zero mean is a verdict, zero is within noise
        assert_eq!(Paired::of(&[41.0, 41.0], &[40.0, 40.0]).verdict, Verdict::Ahead);
        assert_eq!(Paired::of(&[40.0, 40.0], &[40.0, 40.0]).verdict, Verdict::WithinNoise);
        // one seed: no error bar, no verdict, whatever the difference
        let one = Paired::of(&[50.0], &[40.0]);
        assert_eq!((one.mean, one.standard_error, one.verdict), (10.0, None, Verdict::OneSeed));
        assert_eq!(serde_json::to_value(Verdict::WithinNoise).unwrap(), "within noise");
        assert_eq!(serde_json::to_value(Verdict::OneSeed).unwrap(), Verdict::OneSeed.text());
    }

    #[test]
    fn summary_pairs_by_seed_and_spreads_by_hand() {
        // given out of order; DSPNet 30, 34 (mean 32, sd sqrt(8)); one-by-one 31, 33 (32, sqrt 2);
        // d = -1, 1: mean 0, sd sqrt(2), SE 1
        let r = summarise("knn", 0.5, 10, 2.0, &[(4, 34.0, 33.0, None), (1, 30.0, 31.0, Some(29.0))]);
        assert_eq!(r.seeds, vec![1, 4]);
        assert_eq!((r.dspnet.values.clone(), r.dspnet.mean), (vec![30.0, 34.0], 32.0));
        assert!((r.dspnet.std.unwrap() - 8f64.sqrt()).abs() < 1e-12);
        assert!((r.one_by_one.std.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(r.difference.values, vec![-1.0, 1.0]);
        assert!((r.difference.standard_error.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(r.difference.verdict, Verdict::WithinNoise);
        // same budget only where it ran: seed 1, d = 30 - 29
        let s = r.same_budget_difference.unwrap();
        assert_eq!((s.values, s.verdict), (vec![1.0], Verdict::OneSeed));
        assert_eq!(r.same_budget.unwrap().std, None);
    }
}
