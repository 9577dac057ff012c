//! The comparison's outputs: `compare.json` (every record), `report.md` (accuracy per width and
//! protocol, over the seeds with error bars and verdicts when there are several; cost table and
//! ratios; the kNN monitor's curves; how it was measured, command, code version, machine),
//! `compare.png` (top-1 against MFLOPs, DSPNet and one-by-one curves per protocol, means over
//! the seeds) and `curves/*.png` (see `curves.rs`). All are written atomically (temporary file in
//! the same folder, fsync, rename).
//!
//! This folder owns them in parts: [`records`] (the records `compare.json` holds), [`build`]
//! (assembling a [`Comparison`] from finished sub-runs), [`markdown`](mod@markdown) (report.md),
//! [`curves_section`] (report.md's kNN-curves section), [`plot`](mod@plot) (compare.png); this
//! file writes them all ([`write_all`]) and re-exports the public names, so `crate::report::X`
//! keeps working.

pub mod build;
pub mod curves_section;
pub mod markdown;
pub mod plot;
pub mod records;

pub use build::{build, Meta, SeedRuns, SubRun};
pub use markdown::markdown;
pub use plot::plot;
pub use records::{
    Comparison, CopiedFrom, Cost, CostLine, Machine, Methods, Ratios, ResultRow, Reused, SameBudget, SeedCost,
    TrainRecord,
};

use crate::error::Result;
use std::path::Path;

/// Writes compare.json, report.md, compare.png and the curves' PNGs (`curves/`) into `out`,
/// each atomically.
pub fn write_all(c: &Comparison, out: &Path) -> Result<()> {
    dspnet_core::fs::write_atomic(
        &out.join("compare.json"),
        &serde_json::to_vec_pretty(c).expect("comparison serialises"),
    )?;
    dspnet_core::fs::write_atomic(&out.join("report.md"), markdown(c).as_bytes())?;
    plot(c, &out.join("compare.png"))?;
    crate::curves::plot_curves(&c.mean_curves, out)?;
    Ok(())
}
