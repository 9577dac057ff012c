//! Line charts as PNG: the one place that draws with plotters and loads the font. Accuracy
//! against FLOPs (`dspnet-eval`), against latency (`dspnet-profile`), comparisons
//! (`dspnet-compare`) and training curves are all a [`LineChart`].

use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Font used for plot text (Debian package fonts-dejavu-core, installed by tools/setup.sh).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A chart that cannot be drawn; the message is one line naming the file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(pub String);

/// One line of a chart: `(x, y)` points joined in the given order, each marked by a dot and,
/// when `point_labels` is not empty, a label beside it (one per point).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub point_labels: Vec<String>,
    /// Colour: an index into the palette (`None`: the series' position in the chart), so
    /// several series can share one (a mean and its min/max band).
    pub colour: Option<usize>,
    /// Drawn as a thin line without dots (a band's edge, e.g. min or max over seeds).
    pub thin: bool,
}

/// Where the legend goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Legend {
    #[default]
    UpperLeft,
    LowerRight,
}

/// A line chart of several series on one pair of axes, 800 × 560 pixels.
#[derive(Clone, Debug, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic x axis (FLOPs, latency); the range is [0.8·min, 1.25·max].
    pub x_log: bool,
    /// y is a percentage: the range is [min − 2, max + 2] clipped to [0, 100]. Otherwise the
    /// data range widened by 5 % on each side.
    pub y_percent: bool,
    pub legend: Legend,
    pub series: Vec<Series>,
}

fn register_font() -> Result<(), PlotError> {
    static FONT_BYTES: OnceLock<Result<&'static [u8], String>> = OnceLock::new();
    let bytes = FONT_BYTES.get_or_init(|| {
        std::fs::read(FONT)
            .map(|b| &*Box::leak(b.into_boxed_slice()))
            .map_err(|e| format!("cannot read plot font {FONT}: {e}; apt-get install fonts-dejavu-core"))
    });
    let bytes = bytes.as_ref().map_err(|e| PlotError(e.clone()))?;
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    Ok(())
}

fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let pad = if hi > lo { 0.05 * (hi - lo) } else { lo.abs().max(1.0) * 0.05 };
    (lo - pad, hi + pad)
}

impl LineChart {
    /// Draws the chart to `path` (PNG), atomically (a temporary file beside it, then renamed).
    ///
    /// Errors: no point in any series, the font is missing (install fonts-dejavu-core), the PNG
    /// cannot be written; each names the file.
    pub fn write_png(&self, path: &Path) -> Result<(), PlotError> {
        register_font()?;
        let pts: Vec<(f64, f64)> = self.series.iter().flat_map(|s| s.points.iter().copied()).collect();
        if pts.is_empty() {
            return Err(PlotError(format!("cannot draw plot {}: no data points", path.display())));
        }
        let (xmin, xmax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (ymin, ymax) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let y = if self.y_percent { ((ymin - 2.0).max(0.0), (ymax + 2.0).min(100.0)) } else { padded(ymin, ymax) };
        let name = path.file_name().map_or_else(|| "plot.png".into(), |n| n.to_string_lossy().to_string());
        let tmp = path.parent().unwrap_or(Path::new(".")).join(format!(".{name}.tmp.png"));
        let drawn = if self.x_log {
            self.draw(&tmp, (xmin * 0.8..xmax * 1.25).log_scale(), y)
        } else {
            let (a, b) = padded(xmin, xmax);
            self.draw(&tmp, a..b, y)
        };
        if let Err(e) = drawn {
            let _ = std::fs::remove_file(&tmp);
            return Err(PlotError(format!("cannot draw plot {}: {e}", path.display())));
        }
        crate::fs::commit_file(&tmp, path).map_err(|e| PlotError(format!("cannot write plot: {e}")))
    }

    fn draw<X>(&self, file: &Path, x: X, (y0, y1): (f64, f64)) -> Result<(), Box<dyn std::error::Error>>
    where
        X: plotters::coord::ranged1d::AsRangedCoord<Value = f64>,
        X::CoordDescType: plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        let root = BitMapBackend::new(file, (800, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x, y0..y1)?;
        chart.configure_mesh().x_labels(6).x_desc(&self.x_label).y_desc(&self.y_label).draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let color = Palette99::pick(s.colour.unwrap_or(i)).to_rgba();
            let (width, color) = if s.thin { (1, color.mix(0.6)) } else { (2, color) };
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(width)))?
                .label(&s.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width)));
            if !s.thin {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
            if !s.point_labels.is_empty() {
                chart.draw_series(
                    s.points
                        .iter()
                        .zip(&s.point_labels)
                        .map(|(&p, l)| EmptyElement::at(p) + Text::new(l.clone(), (6, -18), ("sans-serif", 14))),
                )?;
            }
        }
        let position = match self.legend {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        };
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_and_refuses_an_empty_chart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let chart = LineChart {
            title: "t".into(),
            x_label: "MFLOPs".into(),
            y_label: "top-1 (%)".into(),
            x_log: true,
            y_percent: true,
            series: vec![Series { label: "knn".into(), points: vec![(1.0, 50.0), (4.0, 60.0)], ..Default::default() }],
            ..Default::default()
        };
        if !Path::new(FONT).exists() {
            assert!(chart.write_png(&path).unwrap_err().to_string().contains("fonts-dejavu-core"));
            return;
        }
        chart.write_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        let linear = LineChart { x_log: false, y_percent: false, ..chart.clone() };
        linear.write_png(&path).unwrap();
        let empty = LineChart { series: vec![], ..chart };
        let e = empty.write_png(&path).unwrap_err().to_string();
        assert!(e.contains("no data points") && e.contains("c.png"), "{e}");
    }
}
