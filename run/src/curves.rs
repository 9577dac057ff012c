//! The training curves of a run as PNGs, drawn from `metrics.jsonl`: per-width loss against
//! step (`curves_loss.png`) and, when the run has monitor records, per-width kNN top-1 against
//! step (`curves_knn.png`). The trainer draws them at the end of every invocation.

use crate::error::Result;
use crate::layout::{KNN_CURVES, LOSS_CURVES};
use crate::metrics;
use dspnet_core::plot::{Legend, LineChart, Series};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Most points of one line: longer lines keep evenly spaced records and the last one (a dot
/// marks every point; thousands of them would hide the line).
pub const MAX_POINTS: usize = 400;

/// Draws the curves of the run in `run_dir` from its `metrics.jsonl` and returns the files
/// written: the loss chart when the records hold losses, the kNN chart when they hold kNN
/// monitor accuracies (a kNN chart of an earlier invocation is removed when they no longer do).
///
/// Errors: a damaged `metrics.jsonl` ([`crate::RunError::Records`]); a chart that cannot be
/// drawn or written ([`crate::RunError::Plot`], e.g. the font is missing), with the file.
pub fn write(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let records = metrics::read(run_dir)?;
    let run = run_dir.file_name().map_or_else(|| run_dir.display().to_string(), |n| n.to_string_lossy().to_string());
    let charts = [
        (LOSS_CURVES, "loss", format!("{run}: training loss per width"), "loss", false, Legend::UpperLeft),
        (KNN_CURVES, "knn", format!("{run}: kNN monitor top-1 per width"), "kNN top-1 (%)", true, Legend::LowerRight),
    ];
    let mut written = Vec::new();
    for (file, name, title, y_label, y_percent, legend) in charts {
        let path = run_dir.join(file);
        let series = series(&records, name);
        if series.is_empty() {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let chart = LineChart {
            title,
            x_label: "step".into(),
            y_label: y_label.into(),
            x_log: false,
            y_percent,
            legend,
            series,
        };
        chart.write_png(&path)?;
        written.push(path);
    }
    Ok(written)
}

/// One line per width of the per-width scalars called `name` ([`metrics::scalars`]: `loss`,
/// `feature_std`, `knn`), widest first, labelled `1.00x`, with `(step, value)` points in record
/// order, at most [`MAX_POINTS`] each.
pub fn series(records: &[Value], name: &str) -> Vec<Series> {
    let mut lines: Vec<(f64, Vec<(f64, f64)>)> = Vec::new();
    for r in records {
        let Some(step) = r["step"].as_u64() else { continue };
        for s in metrics::scalars(r).into_iter().filter(|s| s.name == name) {
            let Some(w) = s.width else { continue };
            let point = (step as f64, s.value);
            match lines.iter_mut().find(|(lw, _)| *lw == w) {
                Some((_, points)) => points.push(point),
                None => lines.push((w, vec![point])),
            }
        }
    }
    lines.sort_by(|a, b| b.0.total_cmp(&a.0));
    lines
        .into_iter()
        .map(|(w, points)| Series { label: format!("{w:.2}x"), points: thin(points, MAX_POINTS), ..Default::default() })
        .collect()
}

/// Every `ceil(len / max)`-th point from the first, and the last.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max.max(2) {
        return points;
    }
    let stride = points.len().div_ceil(max - 1);
    let last = points[points.len() - 1];
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(stride).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsLog;
    use serde_json::json;

    fn trained(step: u64, losses: &[(f64, f64)]) -> Value {
        json!({"step": step, "lr": 0.1, "loss": losses.iter().map(|(w, l)| json!({"width": w, "loss": l})).collect::<Vec<_>>()})
    }

    #[test]
    fn one_line_per_width_widest_first_in_step_order() {
        let records = vec![
            trained(1, &[(1.0, 4.0), (0.25, 4.5)]),
            trained(2, &[(1.0, 3.0), (0.5, 3.8), (0.25, 4.0)]),
            json!({"step": 3, "skipped_nonfinite": 1, "skip_reason": "nan"}),
            json!({"step": 3, "monitor": {"protocol": "knn", "top1": [{"width": 1.0, "top1": 35.2}, {"width": 0.25, "top1": 30.1}]}}),
            trained(4, &[(1.0, 2.0), (0.25, 3.5)]),
        ];
        let loss = series(&records, "loss");
        let labels: Vec<&str> = loss.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, vec!["1.00x", "0.50x", "0.25x"]);
        assert_eq!(loss[0].points, vec![(1.0, 4.0), (2.0, 3.0), (4.0, 2.0)]);
        assert_eq!(loss[1].points, vec![(2.0, 3.8)]);
        let knn = series(&records, "knn");
        assert_eq!(knn.len(), 2);
        assert_eq!(knn[1].points, vec![(3.0, 30.1)]);
        assert!(series(&records[..3], "knn").is_empty());
    }

    #[test]
    fn long_lines_are_thinned_keeping_the_ends() {
        let points: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, -(i as f64))).collect();
        let t = thin(points.clone(), MAX_POINTS);
        assert!(t.len() <= MAX_POINTS && t.len() > MAX_POINTS / 2, "{}", t.len());
        assert_eq!((t[0], t[t.len() - 1]), (points[0], points[999]));
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(thin(points[..10].to_vec(), MAX_POINTS), points[..10].to_vec());
    }

    #[test]
    fn the_charts_are_pngs_and_the_knn_chart_only_with_monitor_records() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(write(tmp.path()).unwrap().is_empty(), "no records, no chart");
        let mut log = MetricsLog::open(tmp.path()).unwrap();
        for step in 1..=5 {
            log.append(&trained(step, &[(1.0, 5.0 - step as f64), (0.25, 5.5 - step as f64)])).unwrap();
        }
        log.close().unwrap();
        std::fs::write(tmp.path().join(KNN_CURVES), b"from an earlier invocation").unwrap();
        if !Path::new(dspnet_core::plot::FONT).exists() {
            assert!(write(tmp.path()).unwrap_err().to_string().contains("fonts-dejavu-core"));
            return;
        }
        assert_eq!(write(tmp.path()).unwrap(), vec![tmp.path().join(LOSS_CURVES)]);
        assert!(!tmp.path().join(KNN_CURVES).exists(), "a kNN chart without kNN records is removed");
        let mut log = MetricsLog::open(tmp.path()).unwrap();
        log.append(&json!({"step": 5, "monitor": {"protocol": "knn", "top1": [{"width": 1.0, "top1": 35.2}]}}))
            .unwrap();
        log.close().unwrap();
        let written = write(tmp.path()).unwrap();
        assert_eq!(written, vec![tmp.path().join(LOSS_CURVES), tmp.path().join(KNN_CURVES)]);
        for p in written {
            assert_eq!(&std::fs::read(&p).unwrap()[..8], b"\x89PNG\r\n\x1a\n", "{}", p.display());
        }
    }
}
