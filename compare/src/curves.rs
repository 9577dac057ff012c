//! Learning curves: the kNN monitor's top-1 of every width during training (each sub-run's
//! `metrics.jsonl`, see `dspnet_trainer::fit::monitor`) against optimiser steps and against the
//! training FLOPs counted up to that step, DSPNet against one-by-one, the mean over seeds with
//! their minimum and maximum; drawn as `OUT/curves/steps-w0_25.png` and
//! `OUT/curves/flops-w0_25.png` per width.
//!
//! # Training FLOPs up to step s
//! The count of `cost.rs` cut at `s`: `N/S · 2 · (s·T + 3 · Σ_w n_w(s) · F_w)` MACs, where
//! `n_w(s)` is the number of steps up to `s` whose metrics line trained width `w`; at the last
//! step it is the run's `train_macs`. A DSPNet point is the whole DSPNet training's count (one
//! training gives every width); a one-by-one point is that width's own training's. FLOPs =
//! 2 × MACs.

use crate::error::{CompareError, Result};
use dspnet_core::plot::{LineChart, Series};
use dspnet_model::width_tag;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One monitor evaluation of one width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Optimiser steps taken.
    pub step: u64,
    /// Training multiply-accumulates counted up to this step (module docs).
    pub train_macs: u64,
    /// kNN top-1 (%).
    pub top1: f64,
}

/// The curve of one width of one sub-run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCurve {
    /// Sub-run name (`dspnet`, `seed1/byol-w0_25`, ...).
    pub run: String,
    /// "dspnet" or "one-by-one".
    pub kind: String,
    pub seed: u64,
    /// Nominal width.
    pub width: f64,
    pub points: Vec<CurvePoint>,
}

/// What [`read_curves`] needs of a training (from its `compare-train.json`).
pub struct CurveSource<'a> {
    pub run: &'a str,
    pub kind: &'a str,
    pub seed: u64,
    /// The run's trained widths as its config names them, ascending, and the widths they
    /// stand for (a one-by-one network's 1.0 is its nominal width).
    pub config_widths: &'a [f64],
    pub nominal: &'a [f64],
    /// Images trained on and steps taken, whole run.
    pub images: u64,
    pub steps: u64,
    /// Forward MACs of one view: teacher, and online network per NOMINAL width.
    pub teacher_macs: u64,
    pub online_macs: &'a [(f64, u64)],
}

fn position(widths: &[f64], w: f64) -> Option<usize> {
    widths.iter().position(|x| (x - w).abs() <= 1e-9)
}

/// The monitor curves of the run in `dir` (one per width with a monitor record; none when it
/// trained without the monitor), FLOPs counted as the module docs say.
///
/// Errors: unreadable or damaged `metrics.jsonl`; a width in it that the run does not train.
pub fn read_curves(dir: &Path, src: &CurveSource) -> Result<Vec<RunCurve>> {
    let records = dspnet_run::metrics::read(dir)?;
    let foreign = |w: f64| {
        let metrics = dir.join(dspnet_run::layout::METRICS);
        let message =
            format!("{}: width {w} is not one of the run's widths {:?}", metrics.display(), src.config_widths);
        CompareError::run_file(metrics, message)
    };
    // steps that trained each width, by step
    let mut trained: Vec<(u64, Vec<usize>)> = Vec::new();
    for r in &records {
        let (Some(step), Some(losses)) = (r["step"].as_u64(), r["loss"].as_array()) else { continue };
        let mut ws = Vec::new();
        for l in losses {
            let w = l["width"].as_f64().unwrap_or(f64::NAN);
            ws.push(position(src.config_widths, w).ok_or_else(|| foreign(w))?);
        }
        trained.push((step, ws));
    }
    trained.sort_by_key(|t| t.0);
    let online: Vec<u64> = src
        .nominal
        .iter()
        .map(|&w| src.online_macs.iter().find(|(x, _)| (x - w).abs() <= 1e-9).map_or(0, |p| p.1))
        .collect();
    let macs_at = |s: u64| -> u64 {
        if src.steps == 0 {
            return 0;
        }
        let online_sum: u128 =
            trained.iter().take_while(|t| t.0 <= s).flat_map(|t| t.1.iter()).map(|&i| online[i] as u128).sum();
        let per_image = 2 * (s as u128 * src.teacher_macs as u128 + 3 * online_sum);
        (src.images as u128 * per_image / src.steps as u128).min(u64::MAX as u128) as u64
    };
    let mut curves: Vec<RunCurve> = Vec::new();
    for r in &records {
        let (Some(step), Some(top1)) = (r["step"].as_u64(), r["monitor"]["top1"].as_array()) else { continue };
        let macs = macs_at(step);
        for e in top1 {
            let w = e["width"].as_f64().unwrap_or(f64::NAN);
            let i = position(src.config_widths, w).ok_or_else(|| foreign(w))?;
            let Some(t) = e["top1"].as_f64() else { continue };
            let nominal = src.nominal[i];
            let point = CurvePoint { step, train_macs: macs, top1: t };
            match curves.iter_mut().find(|c| (c.width - nominal).abs() <= 1e-9) {
                Some(c) => c.points.push(point),
                None => curves.push(RunCurve {
                    run: src.run.to_string(),
                    kind: src.kind.to_string(),
                    seed: src.seed,
                    width: nominal,
                    points: vec![point],
                }),
            }
        }
    }
    for c in &mut curves {
        c.points.sort_by_key(|p| p.step);
        c.points.dedup_by_key(|p| p.step);
    }
    curves.sort_by(|a, b| a.width.total_cmp(&b.width));
    Ok(curves)
}

/// One step of a curve over the seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanPoint {
    pub step: u64,
    /// Training MACs up to this step, mean over the seeds (equal across seeds unless the
    /// sandwich rule draws random widths).
    pub train_macs: f64,
    /// kNN top-1 (%): mean, lowest and highest over the seeds.
    pub top1_mean: f64,
    pub top1_min: f64,
    pub top1_max: f64,
}

/// The curve of one side at one width over the seeds: the steps every seed evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanCurve {
    /// "dspnet" or "one-by-one".
    pub kind: String,
    pub width: f64,
    /// Seeds averaged, ascending.
    pub seeds: Vec<u64>,
    pub points: Vec<MeanPoint>,
}

/// Averages `curves` over seeds per (kind, width), keeping the steps present in every seed's
/// curve; ordered by width, then DSPNet before one-by-one.
pub fn mean_curves(curves: &[RunCurve]) -> Vec<MeanCurve> {
    let mut keys: Vec<(&str, f64)> = Vec::new();
    for c in curves {
        if !keys.iter().any(|(k, w)| *k == c.kind && (w - c.width).abs() <= 1e-9) {
            keys.push((&c.kind, c.width));
        }
    }
    keys.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| (a.0 != "dspnet").cmp(&(b.0 != "dspnet"))));
    keys.into_iter()
        .map(|(kind, width)| {
            let mut group: Vec<&RunCurve> =
                curves.iter().filter(|c| c.kind == kind && (c.width - width).abs() <= 1e-9).collect();
            group.sort_by_key(|c| c.seed);
            let steps: Vec<u64> = group[0]
                .points
                .iter()
                .map(|p| p.step)
                .filter(|s| group.iter().all(|c| c.points.iter().any(|p| p.step == *s)))
                .collect();
            let points = steps
                .into_iter()
                .map(|s| {
                    let at: Vec<&CurvePoint> =
                        group.iter().filter_map(|c| c.points.iter().find(|p| p.step == s)).collect();
                    let top1: Vec<f64> = at.iter().map(|p| p.top1).collect();
                    let n = at.len() as f64;
                    MeanPoint {
                        step: s,
                        train_macs: at.iter().map(|p| p.train_macs as f64).sum::<f64>() / n,
                        top1_mean: top1.iter().sum::<f64>() / n,
                        top1_min: top1.iter().copied().fold(f64::INFINITY, f64::min),
                        top1_max: top1.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    }
                })
                .collect();
            MeanCurve { kind: kind.to_string(), width, seeds: group.iter().map(|c| c.seed).collect(), points }
        })
        .collect()
}

/// "DSPNet" or "one-by-one" for a kind.
pub fn side(kind: &str) -> &str {
    if kind == "dspnet" {
        "DSPNet"
    } else {
        kind
    }
}

/// The PNG of `width`'s curves against `axis` ("steps" or "flops"), relative to OUT.
pub fn png_name(axis: &str, width: f64) -> String {
    format!("curves/{axis}-{}.png", width_tag(width))
}

/// The chart lines of `width` against `axis` ("steps": optimiser steps; otherwise training
/// GFLOPs): per side (DSPNet, one-by-one) its mean over the seeds, bold with dots, and with two
/// or more seeds its minimum and maximum, thin, all three in that side's colour.
fn width_series(curves: &[MeanCurve], width: f64, axis: &str) -> Vec<Series> {
    let x = |p: &MeanPoint| if axis == "steps" { p.step as f64 } else { 2.0 * p.train_macs / 1e9 };
    let mut series = Vec::new();
    for (colour, c) in curves.iter().filter(|c| (c.width - width).abs() <= 1e-9 && !c.points.is_empty()).enumerate() {
        let who = side(&c.kind);
        let mean_label = match c.seeds.as_slice() {
            [s] => format!("{who}, seed {s}"),
            s => format!("{who}, mean of {} seeds", s.len()),
        };
        let line = |label: String, y: fn(&MeanPoint) -> f64, thin: bool| Series {
            label,
            points: c.points.iter().map(|p| (x(p), y(p))).collect(),
            point_labels: Vec::new(),
            colour: Some(colour),
            thin,
        };
        series.push(line(mean_label, |p| p.top1_mean, false));
        if c.seeds.len() > 1 {
            series.push(line(format!("{who}, min over seeds"), |p| p.top1_min, true));
            series.push(line(format!("{who}, max over seeds"), |p| p.top1_max, true));
        }
    }
    series
}

/// Draws, for every width of `curves`, its curves against optimiser steps and against training
/// GFLOPs (log axis) into `out/curves/`: each side's mean over the seeds and, with two or more
/// seeds, their minimum and maximum at each step. Returns the files written (relative to `out`).
///
/// Errors: the folder cannot be created, the plot font is missing, a PNG cannot be written.
pub fn plot_curves(curves: &[MeanCurve], out: &Path) -> Result<Vec<PathBuf>> {
    let mut widths: Vec<f64> = curves.iter().map(|c| c.width).collect();
    widths.dedup_by(|a, b| (*a - *b).abs() <= 1e-9);
    if widths.is_empty() {
        return Ok(Vec::new());
    }
    let dir = out.join("curves");
    std::fs::create_dir_all(&dir).map_err(|e| CompareError::io(&dir, e))?;
    let mut written = Vec::new();
    for &w in &widths {
        for (axis, x_label, x_log) in
            [("steps", "optimiser steps", false), ("flops", "training GFLOPs (2 x counted MACs)", true)]
        {
            let series = width_series(curves, w, axis);
            if series.is_empty() {
                continue;
            }
            let name = png_name(axis, w);
            LineChart {
                title: format!("kNN top-1 during training, width {w}: DSPNet vs one-by-one"),
                x_label: x_label.into(),
                y_label: "kNN top-1 (%)".into(),
                x_log,
                y_percent: true,
                legend: dspnet_core::plot::Legend::LowerRight,
                series,
            }
            .write_png(&out.join(&name))?;
            written.push(PathBuf::from(name));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_up_to_each_monitored_step_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        // widths 0.5 and 1.0; step 1 trains both, step 2 only 1.0, step 3 is skipped (no loss)
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"step\":1,\"loss\":[{\"width\":1.0,\"loss\":1},{\"width\":0.5,\"loss\":1}]}\n\
             {\"step\":1,\"monitor\":{\"top1\":[{\"width\":1.0,\"top1\":30.0},{\"width\":0.5,\"top1\":20.0}]}}\n\
             {\"step\":2,\"loss\":[{\"width\":1.0,\"loss\":1}]}\n\
             {\"step\":3,\"skipped_nonfinite\":1}\n\
             {\"step\":3,\"monitor\":{\"top1\":[{\"width\":1.0,\"top1\":31.0},{\"width\":0.5,\"top1\":22.0}]}}\n",
        )
        .unwrap();
        let online = [(0.5, 20), (1.0, 110)];
        let src = CurveSource {
            run: "seed0/dspnet",
            kind: "dspnet",
            seed: 0,
            config_widths: &[0.5, 1.0],
            nominal: &[0.5, 1.0],
            images: 48,
            steps: 3,
            teacher_macs: 100,
            online_macs: &online,
        };
        let c = read_curves(dir.path(), &src).unwrap();
        assert_eq!(c.iter().map(|c| c.width).collect::<Vec<_>>(), vec![0.5, 1.0]);
        // 16 images per step; step 1: 16 · 2 · (100 + 3 · 130) = 15680;
        // step 3: 16 · 2 · (300 + 3 · (130 + 110)) = 32640 = train_macs of the whole run
        let at: Vec<(u64, u64, f64)> = c[1].points.iter().map(|p| (p.step, p.train_macs, p.top1)).collect();
        assert_eq!(at, vec![(1, 15_680, 30.0), (3, 32_640, 31.0)]);
        assert_eq!(crate::cost::train_macs(48, 3, 100, &online, &[(0.5, 1), (1.0, 2)]), 32_640);
        assert_eq!((c[0].points[1].top1, c[0].run.as_str()), (22.0, "seed0/dspnet"));
        // a one-by-one run's config width 1.0 stands for its nominal width
        let one = CurveSource { kind: "one-by-one", config_widths: &[1.0], nominal: &[0.5], ..src };
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"step\":1,\"loss\":[{\"width\":1.0,\"loss\":1}]}\n{\"step\":1,\"monitor\":{\"top1\":[{\"width\":1.0,\"top1\":25.0}]}}\n",
        )
        .unwrap();
        let c = read_curves(dir.path(), &one).unwrap();
        assert_eq!((c.len(), c[0].width, c[0].kind.as_str()), (1, 0.5, "one-by-one"));
        // no metrics at all: no curve; a width the run does not train: an error naming the file
        assert!(read_curves(tempfile::tempdir().unwrap().path(), &one).unwrap().is_empty());
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"step\":1,\"monitor\":{\"top1\":[{\"width\":0.3,\"top1\":1}]}}\n",
        )
        .unwrap();
        let e = read_curves(dir.path(), &one).unwrap_err();
        assert!(matches!(&e, CompareError::RunFile { path, .. } if path.ends_with("metrics.jsonl")), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("metrics.jsonl") && e.contains("0.3"), "{e}");
    }

    fn curve(kind: &str, seed: u64, width: f64, pts: &[(u64, f64)]) -> RunCurve {
        RunCurve {
            run: format!("seed{seed}/{kind}"),
            kind: kind.into(),
            seed,
            width,
            points: pts.iter().map(|&(step, top1)| CurvePoint { step, train_macs: step * 10 + seed, top1 }).collect(),
        }
    }

    #[test]
    fn mean_over_seeds_keeps_common_steps() {
        let c = vec![
            curve("one-by-one", 1, 0.5, &[(1, 10.0), (2, 14.0)]),
            curve("dspnet", 1, 0.5, &[(1, 12.0), (2, 16.0), (3, 18.0)]),
            curve("dspnet", 0, 0.5, &[(2, 20.0), (3, 30.0)]),
            curve("one-by-one", 0, 0.5, &[(1, 11.0), (2, 13.0)]),
        ];
        let m = mean_curves(&c);
        assert_eq!(m.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>(), ["dspnet", "one-by-one"]);
        assert_eq!(m[0].seeds, vec![0, 1]);
        // DSPNet: steps 2 and 3 are in both seeds; step 2: 16 and 20
        let p = &m[0].points;
        assert_eq!(p.iter().map(|p| p.step).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!((p[0].top1_mean, p[0].top1_min, p[0].top1_max, p[0].train_macs), (18.0, 16.0, 20.0, 20.5));
        assert_eq!((p[1].top1_mean, p[1].top1_min, p[1].top1_max), (24.0, 18.0, 30.0));
        assert_eq!(m[1].points.len(), 2);
        assert_eq!(m[1].points[0].top1_mean, 10.5);
    }

    #[test]
    fn curves_are_drawn_per_width_and_axis() {
        if !Path::new(dspnet_core::plot::FONT).exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let c = vec![
            curve("dspnet", 0, 0.5, &[(1, 12.0), (2, 16.0)]),
            curve("dspnet", 1, 0.5, &[(1, 14.0), (2, 15.0)]),
            curve("one-by-one", 0, 0.5, &[(1, 11.0), (2, 13.0)]),
            curve("one-by-one", 1, 0.5, &[(1, 10.0), (2, 17.0)]),
        ];
        // each side one colour: its mean bold, its min and max thin
        let lines: Vec<(String, Option<usize>, bool)> =
            width_series(&mean_curves(&c), 0.5, "steps").into_iter().map(|s| (s.label, s.colour, s.thin)).collect();
        let want = [
            ("DSPNet, mean of 2 seeds", 0, false),
            ("DSPNet, min over seeds", 0, true),
            ("DSPNet, max over seeds", 0, true),
            ("one-by-one, mean of 2 seeds", 1, false),
            ("one-by-one, min over seeds", 1, true),
            ("one-by-one, max over seeds", 1, true),
        ];
        assert_eq!(lines, want.map(|(l, c, t)| (l.to_string(), Some(c), t)));
        let written = plot_curves(&mean_curves(&c), dir.path()).unwrap();
        assert_eq!(written, vec![PathBuf::from("curves/steps-w0_50.png"), PathBuf::from("curves/flops-w0_50.png")]);
        for f in &written {
            assert_eq!(&std::fs::read(dir.path().join(f)).unwrap()[..4], b"\x89PNG");
        }
        assert!(plot_curves(&[], dir.path()).unwrap().is_empty());
    }
}
