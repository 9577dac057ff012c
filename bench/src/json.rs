//! The `--out` JSON document: the command, commit, timings per section, the machine
//! description, the trainer workload and its conventions, and every figure; written atomically.

use crate::cli::Plan;
use crate::machine::git_commit;
use crate::step::{IMAGE, PRESET_NAME, WIDTHS};
use crate::table::Row;
use dspnet_core::machine::{cpu_flags, cpu_model};
use dspnet_model::ComputeFormat;
use serde_json::json;
use std::path::Path;

/// What the document says besides the figures.
pub struct RunFacts<'a> {
    pub root: &'a Path,
    pub plan: &'a Plan,
    pub seconds: f64,
    pub sections: &'a [(&'a str, f64)],
    pub threads: i32,
    pub native_bf16: bool,
    pub auto: ComputeFormat,
    pub load_start: &'a Option<String>,
    pub load_end: &'a Option<String>,
}

/// Writes the document to `out` and says so.
pub fn write(out: &Path, facts: &RunFacts, rows: &[Row]) -> Result<(), String> {
    let RunFacts { root, plan, seconds, sections, threads, native_bf16, auto, load_start, load_end } = facts;
    let doc = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "commit": git_commit(root),
        "quick": plan.quick,
        "seconds": seconds,
        "section_seconds": sections.iter().map(|(n, t)| json!({"section": n, "seconds": t})).collect::<Vec<_>>(),
        "machine": {
            "cpu_model": cpu_model(),
            "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "libtorch_threads": threads,
            "cpu_flags": cpu_flags(),
            "native_bf16": native_bf16,
            "precision_auto": auto.name(),
            "load_average_start": load_start,
            "load_average_end": load_end,
        },
        "trainer_workload": {
            "preset": PRESET_NAME, "batch": plan.batch, "image_px": IMAGE, "warmup_steps": plan.warmup,
            "timed_steps": plan.steps, "widths_all": WIDTHS,
            "flop_convention": "forward FLOPs = 2 x backbone conv MACs; training = 3 x forward (online) + 1 x forward (teacher), both views",
            "memory_method": "peak RSS: VmHWM of /proc/self/status over warm-up and timed steps of a fresh trainer, after malloc_trim(0) and writing 5 to /proc/self/clear_refs",
        },
        "figures": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    dspnet_core::fs::write_atomic(out, text.as_bytes()).map_err(|e| format!("cannot write {}", e))?;
    println!("wrote {}", out.display());
    Ok(())
}
