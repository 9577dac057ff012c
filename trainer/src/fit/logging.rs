//! `metrics.jsonl` records (rank 0) and the progress bar: per logged step the loss and the
//! collapse monitor of every trained width, learning rate, EMA rate, images/s and the fraction of
//! the time spent waiting for data since the last record; a record for every skipped step.
//! [`MetricsLog`] mirrors each record into this invocation's TensorBoard event file.

use super::{Cx, Hook, StepEvent, StepInfo};
use crate::error::Result;
use dspnet_run::metrics::MetricsLog;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Writes a metrics record every `log_every` steps and at the run's last step.
pub struct MetricsLogger {
    pub run_dir: PathBuf,
    pub log_every: u64,
    /// Only rank 0 writes `metrics.jsonl` (its local losses).
    pub write: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    log: Option<MetricsLog>,
    bar: ProgressBar,
    /// Start of the run's timing, and of the window since the last record (images, data wait).
    started: Instant,
    window: (Instant, u64, Duration),
}

impl MetricsLogger {
    /// A logger for the run in `run_dir`.
    pub fn new(run_dir: PathBuf, log_every: u64, write: bool, progress: bool) -> Self {
        let now = Instant::now();
        MetricsLogger {
            run_dir,
            log_every,
            write,
            progress,
            log: None,
            bar: ProgressBar::hidden(),
            started: now,
            window: (now, 0, Duration::ZERO),
        }
    }
}

impl Hook for MetricsLogger {
    fn on_start(&mut self, cx: &mut Cx) -> Result<()> {
        if self.write {
            self.log = Some(MetricsLog::open(&self.run_dir)?);
        }
        let run_steps = cx.plan.run_steps;
        self.bar = if self.progress && self.write { ProgressBar::new(run_steps) } else { ProgressBar::hidden() };
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
                    if let Some(log) = self.log.as_mut() {
                        log.append(&record)?;
                    }
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
                if let Some(log) = self.log.as_mut() {
                    log.append(&record)?;
                }
            }
        }
        self.bar.set_position(step);
        Ok(())
    }

    fn on_end(&mut self, _cx: &mut Cx, _interrupted: bool) -> Result<()> {
        self.bar.finish_and_clear();
        if let Some(log) = self.log.take() {
            log.close()?;
        }
        Ok(())
    }
}
