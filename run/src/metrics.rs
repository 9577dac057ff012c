//! `metrics.jsonl`: one JSON record per logged training step (losses and feature spread per
//! width, learning rate, EMA rate, throughput, data wait, skipped steps, monitor accuracies).
//! [`MetricsLog`] is its one writer; [`read`] its reader.

use crate::error::{Result, RunError};
use crate::layout::METRICS;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The run's metrics file, opened for appending.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` for appending (created when missing).
    ///
    /// Errors: the file cannot be opened, with the path.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS);
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| RunError::io(&path, e))?;
        Ok(MetricsLog { path, file })
    }

    /// Appends one record.
    ///
    /// Errors: the write's, with the path.
    pub fn append(&mut self, record: &serde_json::Value) -> Result<()> {
        append_jsonl(&mut self.file, record).map_err(|e| RunError::io(&self.path, e))
    }
}

/// Appends `value` and a newline to `out` (opened with O_APPEND) in one `write` call, so a
/// reader following the file never sees half a record and a run killed mid-step leaves whole
/// lines (`writeln!` on a `File` issues one `write` per formatted piece).
///
/// Errors: the writer's I/O error (a short write is retried by `write_all`).
pub fn append_jsonl<W: Write>(out: &mut W, value: &serde_json::Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    out.write_all(&line)
}

/// Keeps the records of `run_dir/metrics.jsonl` up to step `step` (a resumed run rewrites the
/// records of the steps after its checkpoint). Written atomically; no file, nothing to do.
///
/// Errors: the write's, with the path.
pub fn truncate_to_step(run_dir: &Path, step: u64) -> Result<()> {
    let path = run_dir.join(METRICS);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    dspnet_core::fs::write_atomic(&path, kept.as_bytes())?;
    Ok(())
}

/// Every record of `run_dir/metrics.jsonl` in file order (empty when there is none). A last
/// line without its newline (a run killed while writing it) is left out.
///
/// Errors: [`RunError::Records`] naming the line that is not JSON; unreadable file.
pub fn read(run_dir: &Path) -> Result<Vec<serde_json::Value>> {
    let path = run_dir.join(METRICS);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RunError::io(&path, e)),
    };
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| RunError::Records {
                message: format!(
                    "{} line {} is not a JSON record ({e}); the run's metrics are damaged",
                    path.display(),
                    i + 1
                ),
                path: path.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_record_is_one_write_call() {
        /// Records every `write` call it receives.
        struct Calls(Vec<Vec<u8>>);
        impl Write for Calls {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let v = serde_json::json!({"step": 5, "loss": [{"width": 0.25, "loss": 0.5}], "note": "a \"quoted\" string"});
        let mut w = Calls(Vec::new());
        append_jsonl(&mut w, &v).unwrap();
        assert_eq!(w.0.len(), 1, "{:?}", w.0);
        assert_eq!(
            String::from_utf8(w.0[0].clone()).unwrap(),
            "{\"loss\":[{\"loss\":0.5,\"width\":0.25}],\"note\":\"a \\\"quoted\\\" string\",\"step\":5}\n"
        );
    }

    #[test]
    fn metrics_are_cut_back_to_the_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(METRICS), "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n{\"step\":4}\n").unwrap();
        truncate_to_step(tmp.path(), 2).unwrap();
        assert_eq!(std::fs::read_to_string(tmp.path().join(METRICS)).unwrap(), "{\"step\":1}\n{\"step\":2}\n");
    }

    #[test]
    fn the_log_appends_and_the_reader_skips_a_torn_last_line() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(read(tmp.path()).unwrap().is_empty());
        let mut log = MetricsLog::open(tmp.path()).unwrap();
        log.append(&serde_json::json!({"step": 1})).unwrap();
        log.append(&serde_json::json!({"step": 2})).unwrap();
        let mut f = std::fs::OpenOptions::new().append(true).open(tmp.path().join(METRICS)).unwrap();
        f.write_all(b"{\"step\": 3, \"lo").unwrap();
        let steps: Vec<u64> = read(tmp.path()).unwrap().iter().map(|v| v["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2]);
        std::fs::write(tmp.path().join(METRICS), "{\"step\":1}\nnot json\n").unwrap();
        let e = read(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
