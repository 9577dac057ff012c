//! The kNN monitor: during pretraining, kNN top-1 of every trained width with `dspnet-eval`'s
//! protocol (eval-mode BN, un-augmented centre views, `eval.knn_k`, `eval.knn_t`), at every
//! epoch end (the run's end included) and every `monitor.every_steps` steps, written to
//! `metrics.jsonl` as
//!
//! ```json
//! {"step": 120, "epoch": 0, "monitor": {"protocol": "knn", "k": 200, "t": 0.1,
//!  "bank_images": 2000, "test_images": 1000, "seconds": 3.2,
//!  "top1": [{"width": 1.0, "top1": 35.2}, {"width": 0.25, "top1": 30.1}]}}
//! ```
//!
//! It reads the online backbone without changing it (no gradient, eval-mode BN, no random
//! number drawn; its loaders are positional like the training one), so the training and its
//! checkpoints are the same with or without it, and a resumed run writes the records an
//! uninterrupted one does (they depend on the weights of their step alone; no record is
//! written at an interruption). Cost per evaluation: one eval-mode forward pass of
//! `bank_images + test_images` images at every trained width, plus the kNN search.

use super::logging::MetricsSink;
use super::{Cx, Hook, StepInfo};
use crate::error::Result;
use dspnet_eval::features::extract_features;
use dspnet_eval::knn::knn_top1;
use dspnet_pipeline::loader::Loader;
use dspnet_run::config::MonitorConfig;
use serde_json::json;
use std::time::Instant;

/// The kNN monitor hook (rank 0 only).
pub struct KnnMonitor {
    pub cfg: MonitorConfig,
    /// Neighbours and temperature (`eval.knn_k`, `eval.knn_t`).
    pub k: i64,
    pub t: f64,
    /// The bank's and the test images' Eval-mode loaders.
    pub bank: Loader,
    pub test: Loader,
    pub sink: MetricsSink,
    /// Step of the last evaluation (one record per step at most).
    pub last: Option<u64>,
}

impl KnnMonitor {
    /// Evaluates every trained width (widest first) and appends the record of step
    /// `cx.state.step` in `epoch`.
    fn evaluate(&mut self, cx: &mut Cx, epoch: u64) -> Result<()> {
        if self.last == Some(cx.state.step) {
            return Ok(());
        }
        self.last = Some(cx.state.step);
        let started = Instant::now();
        let base = &cx.trainer.base;
        let widths: Vec<f64> = cx.trainer.method.widths().iter().rev().copied().collect();
        let (net, device, format) = (&base.online.backbone, base.device(), base.format);
        let (bank, bank_y) = extract_features(net, device, &widths, &self.bank, format, Some(self.cfg.bank_images))?;
        let (test, test_y) = extract_features(net, device, &widths, &self.test, format, Some(self.cfg.test_images))?;
        let classes = bank_y.max().int64_value(&[]).max(test_y.max().int64_value(&[])) + 1;
        let top1: Vec<serde_json::Value> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                json!({"width": w, "top1": knn_top1(&bank[i], &bank_y, &test[i], &test_y, self.k, self.t, classes)})
            })
            .collect();
        let record = json!({
            "step": cx.state.step,
            "epoch": epoch,
            "monitor": {
                "protocol": "knn", "k": self.k, "t": self.t,
                "bank_images": bank_y.size()[0], "test_images": test_y.size()[0],
                "seconds": started.elapsed().as_secs_f64(),
                "top1": top1,
            },
        });
        tracing::info!(step = cx.state.step, "kNN monitor: {}", record["monitor"]["top1"]);
        self.sink.append(&record)
    }
}

impl Hook for KnnMonitor {
    fn after_step(&mut self, cx: &mut Cx, info: &StepInfo) -> Result<()> {
        let every = self.cfg.every_steps;
        // an epoch's end has its own evaluation
        if every > 0 && cx.state.step.is_multiple_of(every) && !info.epoch_done {
            let epoch = cx.state.pos.epoch;
            self.evaluate(cx, epoch)?;
        }
        Ok(())
    }

    fn after_epoch(&mut self, cx: &mut Cx) -> Result<()> {
        // the stream position already points at the next epoch
        let epoch = cx.state.pos.epoch.saturating_sub(1);
        self.evaluate(cx, epoch)
    }

    fn on_end(&mut self, cx: &mut Cx, interrupted: bool) -> Result<()> {
        // the run's planned end is its last epoch's end (the loop ends there without an
        // epoch-end call); an interruption or --max-steps writes nothing a whole run would not
        if !interrupted && cx.state.step >= cx.trainer.base.length.total_steps {
            let epoch = cx.state.pos.epoch;
            self.evaluate(cx, epoch)?;
        }
        Ok(())
    }
}
