//! `compare.png`: top-1 against MFLOPs, one curve per (training, protocol), each point the mean
//! over the seeds, drawn with dspnet-eval's plotter.

use crate::error::{CompareError, Result};
use crate::report::records::Comparison;
use dspnet_run::EvalRecord;
use std::path::Path;

/// Draws compare.png: top-1 against MFLOPs, one curve per (training, protocol), each point
/// the mean over the seeds.
///
/// Errors: the plot font is missing or the PNG cannot be written.
pub fn plot(c: &Comparison, path: &Path) -> Result<()> {
    let mut recs = Vec::new();
    for r in &c.summary {
        let mut push = |init: &str, top1: f64| {
            recs.push(EvalRecord {
                width: r.width,
                params: r.params,
                macs: (r.mflops * 1e6).round() as u64,
                protocol: r.protocol.clone(),
                top1,
                init: init.into(),
                settings: serde_json::Value::Null,
                extra: Default::default(),
            })
        };
        push("DSPNet", r.dspnet.mean);
        push("one-by-one", r.one_by_one.mean);
        if let Some(b) = &r.same_budget {
            push("one-by-one, same budget", b.mean);
        }
    }
    if recs.is_empty() {
        return Err(CompareError::NothingToPlot { path: path.to_path_buf() });
    }
    let title = match c.seeds.len() {
        n if n >= 2 => format!("DSPNet vs one-by-one BYOL: top-1 against MFLOPs, mean of {n} seeds"),
        _ => "DSPNet vs one-by-one BYOL: top-1 against MFLOPs".to_string(),
    };
    dspnet_eval::report::plot(&recs, path, &title)?;
    Ok(())
}
