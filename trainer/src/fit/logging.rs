//! `metrics.jsonl` records (rank 0) and the progress bar: per logged step the loss and the
//! collapse monitor of every trained width, learning rate, EMA rate, images/s and the fraction of
//! the time spent waiting for data since the last record; a record for every skipped step.
//! [`MetricsLog`] mirrors each record into this invocation's TensorBoard event file.

use super::{Cx, Hook, StepEvent, StepInfo};
use crate::error::Result;
use dspnet_run::metrics::MetricsLog;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The run's `metrics.jsonl`, shared by the hooks that write records (the logger, the kNN
/// monitor). Opened for appending at the first record (after a resume has cut the file back);
/// ranks other than 0 write nothing.
#[derive(Clone)]
pub struct MetricsSink(Rc<RefCell<(Option<PathBuf>, Option<MetricsLog>)>>);

impl MetricsSink {
    /// The sink of the run in `run_dir`; `write` is false on ranks other than 0.
    pub fn new(run_dir: &Path, write: bool) -> Self {
        MetricsSink(Rc::new(RefCell::new((write.then(|| run_dir.to_path_buf()), None))))
    }

    /// Appends a record (nothing on ranks that do not write).
    ///
    /// Errors: the file cannot be opened or written, with the path.
    pub fn append(&self, record: &serde_json::Value) -> Result<()> {
        let mut inner = self.0.borrow_mut();
        let (dir, log) = &mut *inner;
        let Some(dir) = dir else { return Ok(()) };
        if log.is_none() {
            *log = Some(MetricsLog::open(dir)?);
        }
        log.as_mut().expect("opened above").append(record)?;
        Ok(())
    }

    /// Flushes this invocation's TensorBoard event file to disk and closes the log (a later
    /// record would open a new one). Called once, after the last hook has written.
    ///
    /// Errors: the fsync's, with the path.
    pub fn close(&self) -> Result<()> {
        if let Some(log) = self.0.borrow_mut().1.take() {
            log.close()?;
        }
        Ok(())
    }

    /// True on the rank that writes.
    pub fn writes(&self) -> bool {
        self.0.borrow().0.is_some()
    }
}

/// Writes a metrics record every `log_every` steps and at the run's last step.
pub struct MetricsLogger {
    pub log_every: u64,
    /// Show a progress bar on stderr (on the rank that writes).
    pub progress: bool,
    sink: MetricsSink,
    bar: ProgressBar,
    /// Start of the run's timing, and of the window since the last record (images, data wait).
    started: Instant,
    window: (Instant, u64, Duration),
}

impl MetricsLogger {
    /// A logger writing into `sink`.
    pub fn new(sink: MetricsSink, log_every: u64, progress: bool) -> Self {
        let now = Instant::now();
        MetricsLogger {
            log_every,
            progress,
            sink,
            bar: ProgressBar::hidden(),
            started: now,
            window: (now, 0, Duration::ZERO),
        }
    }
}

impl Hook for MetricsLogger {
    fn on_start(&mut self, cx: &mut Cx) -> Result<()> {
        let run_steps = cx.plan.run_steps;
        self.bar =
            if self.progress && self.sink.writes() { ProgressBar::new(run_steps) } else { ProgressBar::hidden() };
        self.bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {elapsed_precise} eta {eta_precise}  {msg}")
                .expect("valid template"),
        );
        self.bar.set_position(cx.state.step);
        self.started = Instant::now();
        self.window = (self.started, 0, Duration::ZERO);
        Ok(())
    }

    fn after_step(&mut self, cx: &mut Cx, info: &StepInfo) -> Result<()> {
        self.window.1 += info.images;
        self.window.2 += info.waited;
        let (step, epoch) = (cx.state.step, cx.state.pos.epoch);
        match info.event {
            StepEvent::Trained(stats) => {
                if let Some(i) = &stats.interference {
                    let record = json!({
                        "step": step, "epoch": epoch,
                        "interference": {
                            "grad_norm": i.norms.iter().map(|(w, g)| json!({"width": w, "norm": g})).collect::<Vec<_>>(),
                            "cos_full_vs_narrow_sum": i.cosine_full_vs_narrow,
                            "cos_full": i.cosine_per_width.iter().map(|(w, c)| json!({"width": w, "cos": c})).collect::<Vec<_>>(),
                        },
                    });
                    self.sink.append(&record)?;
                }
                if step % self.log_every.max(1) == 0 || step == cx.plan.run_steps {
                    let dt = self.window.0.elapsed().as_secs_f64();
                    let ips = self.window.1 as f64 / dt.max(1e-9);
                    let wait_frac = self.window.2.as_secs_f64() / dt.max(1e-9);
                    let record = json!({
                        "step": step, "epoch": epoch, "lr": stats.lr, "ema_tau": stats.tau,
                        "loss": stats.losses.iter().map(|(w, l)| json!({"width": w, "loss": l})).collect::<Vec<_>>(),
                        "feature_std": stats.feature_std.iter().map(|(w, s)| json!({"width": w, "std": s})).collect::<Vec<_>>(),
                        "images_per_sec": ips, "data_wait_fraction": wait_frac,
                        "skipped_nonfinite": cx.state.skipped,
                        "elapsed_sec": self.started.elapsed().as_secs_f64(),
                    });
                    self.sink.append(&record)?;
                    if self.progress {
                        let losses: Vec<String> = stats.losses.iter().map(|(w, l)| format!("{w}:{l:.3}")).collect();
                        self.bar.set_message(format!(
                            "{ips:.0} img/s  wait {:.0}%  loss {}",
                            wait_frac * 100.0,
                            losses.join(" ")
                        ));
                    }
                    self.window = (Instant::now(), 0, Duration::ZERO);
                }
            }
            StepEvent::Skipped(loss) => {
                let record = json!({"step": step, "epoch": epoch, "skipped_nonfinite": cx.state.skipped, "skip_reason": loss.to_string()});
                self.sink.append(&record)?;
            }
        }
        self.bar.set_position(step);
        Ok(())
    }

    fn on_end(&mut self, _cx: &mut Cx, _interrupted: bool) -> Result<()> {
        self.bar.finish_and_clear();
        Ok(())
    }
}
