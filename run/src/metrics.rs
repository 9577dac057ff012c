//! `metrics.jsonl`: one JSON record per logged training step (losses and feature spread per
//! width, learning rate, EMA rate, throughput, data wait, skipped steps, monitor accuracies).
//! [`MetricsLog`] is its one writer, and mirrors every record into a TensorBoard event file
//! ([`crate::tensorboard`]) as the [`scalars`] of the record; [`read`] is its reader.

use crate::error::{Result, RunError};
use crate::layout::METRICS;
use crate::tensorboard::EventWriter;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The run's metrics file, opened for appending, and this invocation's event file.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
    events: EventWriter,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` for appending (created when missing) and starts a new
    /// TensorBoard event file beside it with a session START one step after the last record
    /// already there (0 for none): TensorBoard then shows nothing an earlier invocation logged
    /// after that step (the records a resumed run cut back, see [`truncate_to_step`]).
    ///
    /// Errors: a file cannot be opened or written, with the path.
    pub fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(METRICS);
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| RunError::io(&path, e))?;
        let mut events = EventWriter::create(run_dir)?;
        let start = last_step(&path)?.map_or(0, |s| s + 1);
        events.write_session_start(i64::try_from(start).unwrap_or(i64::MAX))?;
        Ok(MetricsLog { path, file, events })
    }

    /// Appends one record, then its [`scalars`] to the event file at the record's `step`.
    ///
    /// Errors: the writes', with the path.
    pub fn append(&mut self, record: &Value) -> Result<()> {
        append_jsonl(&mut self.file, record).map_err(|e| RunError::io(&self.path, e))?;
        let Some(step) = record["step"].as_u64() else { return Ok(()) };
        let values: Vec<(String, f32)> = scalars(record).iter().map(|s| (s.tag(), s.value as f32)).collect();
        self.events.write_scalars(i64::try_from(step).unwrap_or(i64::MAX), &values)
    }

    /// The event file this log writes.
    pub fn events_path(&self) -> &Path {
        self.events.path()
    }

    /// Flushes the event file to disk (fsync) and closes both files.
    ///
    /// Errors: the fsync's, with the path.
    pub fn close(self) -> Result<()> {
        self.events.close()
    }
}

/// The largest `step` of the records in the metrics file at `path` (`None`: no file, or no
/// record with a step).
///
/// Errors: the file exists but cannot be read, with the path.
fn last_step(path: &Path) -> Result<Option<u64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RunError::io(path, e)),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?["step"].as_u64()).max())
}

/// One number of a metrics record, as TensorBoard and the training curves show it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The record's key (`lr`, `loss`, `feature_std`, ...) or a monitor's protocol (`knn`).
    pub name: String,
    /// The width multiplier of a per-width number.
    pub width: Option<f64>,
    pub value: f64,
}

impl Scalar {
    /// The TensorBoard tag: the name, with `/w<width, 2 decimals>` for a per-width number
    /// (`loss/w0.25`, `knn/w1.00`, `lr`).
    pub fn tag(&self) -> String {
        match self.width {
            Some(w) => format!("{}/w{w:.2}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Keys of a record whose value is one number.
const PLAIN: [&str; 5] = ["lr", "ema_tau", "images_per_sec", "data_wait_fraction", "skipped_nonfinite"];

/// Keys of a record whose value is a per-width list, with the key of the number in each item.
const PER_WIDTH: [(&str, &str); 2] = [("loss", "loss"), ("feature_std", "std")];

/// The numbers of one record: [`PLAIN`] keys, one per width of the `loss` and `feature_std`
/// lists, and one per width of a monitor record's `top1` list named by its protocol
/// (`{"monitor": {"protocol": "knn", "top1": [{"width": 1.0, "top1": 35.2}, ...]}}`), in that
/// order. Whatever is missing or not a number is left out (a record of a skipped step has
/// `skipped_nonfinite` only).
pub fn scalars(record: &Value) -> Vec<Scalar> {
    let mut out = Vec::new();
    for key in PLAIN {
        if let Some(value) = record[key].as_f64() {
            out.push(Scalar { name: key.into(), width: None, value });
        }
    }
    let mut per_width = |name: &str, items: &Value, value_key: &str| {
        for item in items.as_array().into_iter().flatten() {
            if let (Some(w), Some(value)) = (item["width"].as_f64(), item[value_key].as_f64()) {
                out.push(Scalar { name: name.into(), width: Some(w), value });
            }
        }
    };
    for (key, value_key) in PER_WIDTH {
        per_width(key, &record[key], value_key);
    }
    let monitor = &record["monitor"];
    if let Some(protocol) = monitor["protocol"].as_str() {
        per_width(protocol, &monitor["top1"], "top1");
    }
    out
}

/// Appends `value` and a newline to `out` (opened with O_APPEND) in one `write` call, so a
/// reader following the file never sees half a record and a run killed mid-step leaves whole
/// lines (`writeln!` on a `File` issues one `write` per formatted piece).
///
/// Errors: the writer's I/O error (a short write is retried by `write_all`).
pub fn append_jsonl<W: Write>(out: &mut W, value: &Value) -> std::io::Result<()> {
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
        .filter(|l| serde_json::from_str::<Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|s| s <= step))
        .flat_map(|l| [l, "\n"])
        .collect();
    dspnet_core::fs::write_atomic(&path, kept.as_bytes())?;
    Ok(())
}

/// Every record of `run_dir/metrics.jsonl` in file order (empty when there is none). A last
/// line without its newline (a run killed while writing it) is left out.
///
/// Errors: [`RunError::Records`] naming the line that is not JSON; unreadable file.
pub fn read(run_dir: &Path) -> Result<Vec<Value>> {
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
    fn records_become_tagged_scalars() {
        let trained = serde_json::json!({
            "step": 40, "epoch": 1, "lr": 0.25, "ema_tau": 0.996,
            "loss": [{"width": 1.0, "loss": 1.5}, {"width": 0.25, "loss": 2.0}],
            "feature_std": [{"width": 1.0, "std": 0.1}, {"width": 0.25, "std": 0.125}],
            "images_per_sec": 812.5, "data_wait_fraction": 0.0625, "skipped_nonfinite": 0, "elapsed_sec": 3.0,
        });
        let tags: Vec<(String, f64)> = scalars(&trained).iter().map(|s| (s.tag(), s.value)).collect();
        let want = [
            ("lr", 0.25),
            ("ema_tau", 0.996),
            ("images_per_sec", 812.5),
            ("data_wait_fraction", 0.0625),
            ("skipped_nonfinite", 0.0),
            ("loss/w1.00", 1.5),
            ("loss/w0.25", 2.0),
            ("feature_std/w1.00", 0.1),
            ("feature_std/w0.25", 0.125),
        ];
        assert_eq!(tags, want.iter().map(|(t, v)| (t.to_string(), *v)).collect::<Vec<_>>());
        // the kNN monitor's record, exactly as the trainer's monitor writes it
        let monitor = serde_json::json!({"step": 120, "epoch": 0, "monitor": {"protocol": "knn", "k": 200, "t": 0.1,
            "bank_images": 2000, "test_images": 1000, "seconds": 3.2,
            "top1": [{"width": 1.0, "top1": 35.2}, {"width": 0.25, "top1": 30.1}]}});
        let knn = scalars(&monitor);
        assert_eq!(knn.iter().map(Scalar::tag).collect::<Vec<_>>(), vec!["knn/w1.00", "knn/w0.25"]);
        assert_eq!(knn[1], Scalar { name: "knn".into(), width: Some(0.25), value: 30.1 });
        // a skipped step: its count only; the reason is text
        let skipped = serde_json::json!({"step": 3, "epoch": 0, "skipped_nonfinite": 2, "skip_reason": "nan"});
        assert_eq!(scalars(&skipped), vec![Scalar { name: "skipped_nonfinite".into(), width: None, value: 2.0 }]);
        // a non-finite loss is written as null in JSON: left out, not a zero
        let null = serde_json::json!({"step": 4, "loss": [{"width": 1.0, "loss": null}]});
        assert!(scalars(&null).is_empty());
    }

    #[test]
    fn a_reopened_log_starts_a_new_event_file_whose_start_follows_the_kept_records() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(tmp.path()).unwrap();
        let first = log.events_path().to_path_buf();
        for step in 1..=3 {
            log.append(&serde_json::json!({"step": step, "lr": 0.5})).unwrap();
        }
        log.close().unwrap();
        // a resume from the checkpoint of step 2: the record of step 3 goes
        truncate_to_step(tmp.path(), 2).unwrap();
        let log = MetricsLog::open(tmp.path()).unwrap();
        let second = log.events_path().to_path_buf();
        assert!(second.file_name() > first.file_name(), "{second:?} must sort after {first:?}");
        log.close().unwrap();
        // step (field 2) then SessionLog { status: START } (field 6)
        let start_at = |step: u8| [0x10, step, 0x3a, 0x02, 0x08, 0x01];
        let has =
            |path: &Path, pattern: &[u8]| std::fs::read(path).unwrap().windows(pattern.len()).any(|w| w == pattern);
        assert!(has(&first, &start_at(0)) && !has(&first, &start_at(3)));
        assert!(has(&second, &start_at(3)), "the start is one step after the last kept record");
        // three scalar events in the first file, at steps 1, 2 and 3, none in the second
        let lr_at = |step: u8| [0x10, step, 0x2a, 0x0b, 0x0a, 0x09, 0x0a, 0x02, b'l', b'r'];
        assert!((1..=3).all(|s| has(&first, &lr_at(s))));
        assert!(!has(&second, b"lr"));
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
