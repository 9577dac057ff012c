//! Result tables and the accuracy-against-MACs plot of `dspnet-eval` (and `dspnet-compare`).

use dspnet_core::plot::{LineChart, PlotError, Series};
use dspnet_run::EvalRecord;
use std::path::Path;

/// A plain-text table: one row per width, one column per (init, protocol) pair, top-1 in %.
pub fn table(records: &[EvalRecord]) -> String {
    let mut widths: Vec<f64> = records.iter().map(|r| r.width).collect();
    widths.sort_by(|a, b| b.partial_cmp(a).unwrap());
    widths.dedup();
    let mut cols: Vec<(String, String)> = Vec::new();
    for r in records {
        let c = (r.init.clone(), r.protocol.clone());
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    let mut out = format!("{:>6} {:>11} {:>9}", "width", "params", "MFLOPs");
    for (init, proto) in &cols {
        out += &format!(" {:>16}", format!("{proto} ({init})"));
    }
    out.push('\n');
    for w in widths {
        let any = records.iter().find(|r| r.width == w).expect("width from records");
        out += &format!("{:>6.3} {:>11} {:>9.1}", w, any.params, any.macs as f64 / 1e6);
        for (init, proto) in &cols {
            match records.iter().find(|r| r.width == w && &r.init == init && &r.protocol == proto) {
                Some(r) => out += &format!(" {:>16.2}", r.top1),
                None => out += &format!(" {:>16}", "-"),
            }
        }
        out.push('\n');
    }
    out
}

/// Draws top-1 against MFLOPs (multiply-accumulates, log scale), one line per (init, protocol)
/// in the order they first appear, as a PNG written atomically to `path`.
///
/// Errors: no record, the font file is missing (install fonts-dejavu-core) or the PNG cannot be
/// written.
pub fn plot(records: &[EvalRecord], path: &Path, title: &str) -> Result<(), PlotError> {
    let mut series: Vec<Series> = Vec::new();
    for r in records {
        let label = format!("{} ({})", r.protocol, r.init);
        let point = (r.macs as f64 / 1e6, r.top1);
        match series.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(point),
            None => series.push(Series { label, points: vec![point], ..Default::default() }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let chart = LineChart {
        title: title.to_string(),
        x_label: "MFLOPs (multiply-accumulates, log scale)".into(),
        y_label: "top-1 (%)".into(),
        x_log: true,
        y_percent: true,
        series,
        ..Default::default()
    };
    chart.write_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(width: f64, protocol: &str, init: &str, top1: f64) -> EvalRecord {
        EvalRecord {
            width,
            params: (width * 1000.0) as i64,
            macs: (width * width * 4e6) as u64,
            protocol: protocol.into(),
            top1,
            init: init.into(),
            settings: serde_json::json!({}),
            extra: Default::default(),
        }
    }

    #[test]
    fn table_has_a_row_per_width_and_a_column_per_series() {
        let rs = vec![
            rec(1.0, "knn", "pretrained", 80.0),
            rec(0.5, "knn", "pretrained", 70.0),
            rec(0.5, "knn", "random", 60.5),
        ];
        let t = table(&rs);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("knn (pretrained)") && lines[0].contains("knn (random)"));
        assert!(
            lines[1].trim_start().starts_with("1.000")
                && lines[1].contains("80.00")
                && lines[1].trim_end().ends_with('-')
        );
        assert!(lines[2].contains("70.00") && lines[2].contains("60.50"));
    }
}
