//! Result tables and the accuracy-against-FLOPs plot of `dspnet-eval`.

use crate::error::TrainerError;
use crate::eval::EvalRecord;
use plotters::prelude::*;
use std::path::Path;

/// Font used for plot text (Debian package fonts-dejavu-core, installed by the README set-up).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

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
        out += &format!("{:>6.3} {:>11} {:>9.1}", w, any.params, any.flops as f64 / 1e6);
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

/// Draws top-1 against MFLOPs (log scale), one line per (init, protocol), as a PNG.
///
/// Errors: the font file is missing (install fonts-dejavu-core) or the PNG cannot be written.
pub fn plot(records: &[EvalRecord], path: &Path, title: &str) -> Result<(), TrainerError> {
    let bytes = std::fs::read(FONT).map_err(|e| {
        TrainerError::Config(format!("cannot read plot font {FONT}: {e}; apt-get install fonts-dejavu-core"))
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let fl: Vec<f64> = records.iter().map(|r| r.flops as f64 / 1e6).collect();
        let (xmin, xmax) = fl.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let (ymin, ymax) = records.iter().fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.top1), b.max(r.top1)));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(
                (xmin * 0.8..xmax * 1.25).log_scale(),
                (ymin - 2.0).max(0.0)..(ymax + 2.0).min(100.0),
            )?;
        chart.configure_mesh().x_desc("MFLOPs (multiply-accumulates, log scale)").y_desc("top-1 (%)").draw()?;
        let mut series: Vec<(String, String)> = Vec::new();
        for r in records {
            let s = (r.init.clone(), r.protocol.clone());
            if !series.contains(&s) {
                series.push(s);
            }
        }
        for (i, (init, proto)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut pts: Vec<(f64, f64)> = records
                .iter()
                .filter(|r| &r.init == init && &r.protocol == proto)
                .map(|r| (r.flops as f64 / 1e6, r.top1))
                .collect();
            pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(format!("{proto} ({init})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainerError::Config(format!("cannot draw plot {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(width: f64, protocol: &str, init: &str, top1: f64) -> EvalRecord {
        EvalRecord {
            width,
            params: (width * 1000.0) as i64,
            flops: (width * width * 4e6) as u64,
            protocol: protocol.into(),
            top1,
            init: init.into(),
            settings: serde_json::json!({}),
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
