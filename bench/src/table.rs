//! The figures of a run: one [`Row`] per figure (value, unit, the baseline measured in the same
//! run, the ratio, the target and whether it passes), its JSON record, the conversion of the
//! loader and shard parts' figures, and the table printed at the end with its number formats.

use crate::loader;
use serde_json::{json, Value};

/// One line of the table / one record of the JSON.
#[derive(Clone, Debug)]
pub struct Row {
    pub section: String,
    pub figure: String,
    pub value: f64,
    pub unit: String,
    /// What the value is compared with, and its value (measured in this run).
    pub baseline: Option<(String, f64)>,
    pub ratio: Option<f64>,
    /// "x" (value / baseline), "%" (of a peak) or "x time" (step-time ratio).
    pub ratio_unit: &'static str,
    pub target: Option<String>,
    pub pass: Option<bool>,
    pub note: String,
}

impl Row {
    pub fn new(section: &str, figure: impl Into<String>, value: f64, unit: &str, note: impl Into<String>) -> Self {
        Row {
            section: section.into(),
            figure: figure.into(),
            value,
            unit: unit.into(),
            baseline: None,
            ratio: None,
            ratio_unit: "x",
            target: None,
            pass: None,
            note: note.into(),
        }
    }

    /// value / baseline.
    pub fn against(mut self, name: impl Into<String>, base: f64) -> Self {
        self.ratio = Some(self.value / base);
        self.baseline = Some((name.into(), base));
        self
    }

    /// value as a percentage of a peak.
    pub fn of_peak(mut self, name: impl Into<String>, peak: f64) -> Self {
        self.ratio = Some(100.0 * self.value / peak);
        self.ratio_unit = "%";
        self.baseline = Some((name.into(), peak));
        self
    }

    /// Target on the ratio: `at_least` (true) or at most.
    pub fn target(mut self, text: &str, at_least: bool, bound: f64) -> Self {
        self.target = Some(text.into());
        self.pass = self.ratio.filter(|r| r.is_finite()).map(|r| if at_least { r >= bound } else { r <= bound });
        self
    }

    pub fn json(&self) -> Value {
        json!({
            "section": self.section, "figure": self.figure, "value": finite(self.value), "unit": self.unit,
            "baseline": self.baseline.as_ref().map(|(n, _)| n.clone()),
            "baseline_value": self.baseline.as_ref().map(|(_, v)| finite(*v)),
            "ratio": self.ratio.map(finite), "ratio_unit": self.ratio_unit,
            "target": self.target, "pass": self.pass, "note": self.note,
        })
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

impl From<loader::Figure> for Row {
    fn from(f: loader::Figure) -> Self {
        let target = f.note.starts_with("target").then(|| f.note.clone());
        Row {
            section: f.section,
            figure: f.name,
            value: f.value,
            unit: f.unit,
            baseline: None,
            ratio: None,
            ratio_unit: "x",
            pass: f.pass,
            note: if target.is_some() { String::new() } else { f.note },
            target,
        }
    }
}

pub fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if unit == "bytes" {
        return format!("{v:.0}");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<62} {:>12} {:<9} {:>12} {:>9} {:<8} pass/fail",
        "figure", "value", "unit", "baseline", "ratio", "target"
    );
    let mut section = "";
    for r in rows {
        if r.section != section {
            section = &r.section;
            println!("-- {section} {}", "-".repeat(100usize.saturating_sub(section.len())));
        }
        let base = r.baseline.as_ref().map(|(_, v)| fmt_value(*v, &r.unit)).unwrap_or_default();
        let ratio = match r.ratio {
            Some(x) if x.is_finite() && r.ratio_unit == "%" => format!("{x:.1}%"),
            Some(x) if x.is_finite() => format!("{x:.2}x"),
            Some(_) => "n/a".into(),
            None => String::new(),
        };
        let pass = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None if r.target.is_some() => "n/a",
            None => "",
        };
        println!(
            "{:<62} {:>12} {:<9} {:>12} {:>9} {:<8} {}",
            r.figure,
            fmt_value(r.value, &r.unit),
            r.unit,
            base,
            ratio,
            r.target.as_deref().unwrap_or(""),
            pass
        );
        let mut note = r.note.clone();
        if let Some((name, _)) = &r.baseline {
            note = if note.is_empty() { format!("baseline: {name}") } else { format!("baseline: {name}; {note}") };
        }
        if !note.is_empty() {
            println!("    {note}");
        }
    }
}
