//! Continuing a run from its checkpoint exactly: the checkpoint is checked against what this
//! invocation would train (processes, schedule, shard order, length), then the trainer, the
//! counters and the stream position are restored and `metrics.jsonl` is cut back to the
//! checkpoint's step.

use super::{Cx, Hook, StreamPos};
use crate::error::{Result, TrainerError};
use dspnet_run::checkpoint::Checkpoint;
use dspnet_run::layout::STATE;
use std::path::PathBuf;

/// Restores the run from `ckpt` before the first step.
pub struct Resume {
    pub ckpt: Checkpoint,
    pub run_dir: PathBuf,
    /// WORLD_SIZE of this invocation.
    pub world_size: usize,
    /// `--max-steps` of this invocation.
    pub max_steps: Option<u64>,
    /// Rank 0 rewrites `metrics.jsonl`.
    pub write: bool,
}

impl Resume {
    fn refuse(&self, message: String) -> TrainerError {
        TrainerError::Resume { run: self.run_dir.clone(), message }
    }
}

impl Hook for Resume {
    fn on_start(&mut self, cx: &mut Cx) -> Result<()> {
        let st = &self.ckpt.state;
        let length = cx.trainer.base.length;
        let Some(position) = st.position_in_epoch else {
            return Err(self.refuse(format!(
                "{} was written by a dspnet without exact resume (no stream position); start a new run",
                self.run_dir.join(STATE).display()
            )));
        };
        if st.world_size != self.world_size {
            return Err(self.refuse(format!(
                "it was trained with WORLD_SIZE={} and this process has {}; resume with the same number of processes",
                st.world_size, self.world_size
            )));
        }
        if st.total_steps != length.total_steps || st.steps_per_epoch != length.steps_per_epoch {
            return Err(self.refuse(format!(
                "it planned {} steps of {} per epoch, the shards and config now give {} of {}; the shards or their manifest changed",
                st.total_steps, st.steps_per_epoch, length.total_steps, length.steps_per_epoch
            )));
        }
        if cx.loader.shard_order(st.epoch) != st.shard_order {
            return Err(self.refuse(format!(
                "the shard order of epoch {} differs from the recorded one; the shard list or loader seed changed",
                st.epoch
            )));
        }
        if st.step >= length.total_steps {
            return Err(self.refuse(format!(
                "it already finished all {} planned steps; evaluate it with dspnet-eval",
                length.total_steps
            )));
        }
        if self.max_steps.is_some_and(|m| m <= st.step) {
            return Err(self.refuse(format!(
                "its checkpoint is at step {} already; pass a --max-steps above it or none",
                st.step
            )));
        }
        cx.trainer.restore(&self.ckpt)?;
        let base = &cx.trainer.base;
        if st.step > 0 && (base.lr_at(st.step - 1) != st.lr || base.ema_rate_at(st.step - 1) != st.ema_tau) {
            return Err(self.refuse("the learning-rate or EMA schedule differs from the recorded one".into()));
        }
        let s = &mut *cx.state;
        s.pos = StreamPos { epoch: st.epoch, position, samples: st.samples_in_epoch, batches: st.batches_in_epoch };
        s.step = st.step;
        s.run_images = st.images;
        s.skipped = st.skipped_nonfinite;
        s.last_saved = Some(st.step);
        s.last_lr_tau = (st.lr, st.ema_tau);
        if self.write {
            dspnet_run::metrics::truncate_to_step(&self.run_dir, st.step)?;
        }
        tracing::info!(step = s.step, epoch = s.pos.epoch, position, samples_in_epoch = s.pos.samples, "resuming");
        Ok(())
    }
}
