//! Checkpoints every `train.checkpoint_every` optimiser steps, at the end of every epoch and at
//! the end of the invocation (rank 0 writes; see `dspnet_run::checkpoint` for the atomic
//! commit). A checkpoint is never written with a non-finite tensor.

use super::nonfinite::first_nonfinite;
use super::{Cx, Hook, StepInfo};
use crate::error::{KeptCheckpoint, Result, TrainerError};
use dspnet_run::checkpoint::{self, CheckpointState};
use std::path::PathBuf;

/// Saves the run's checkpoints.
pub struct Checkpointer {
    pub run_dir: PathBuf,
    /// Save every this many optimiser steps besides epoch ends and the end (0: only those).
    pub every: u64,
    /// The run's shard list (recorded for resuming).
    pub shards: Vec<String>,
    /// Their sha256 from the manifest (checked when resuming; empty when unknown).
    pub shard_sha256: Vec<String>,
    pub world_size: usize,
    /// Only rank 0 writes.
    pub write: bool,
}

impl Checkpointer {
    /// Saves a checkpoint after the current step; refuses (keeping the last good checkpoint)
    /// when a tensor is non-finite. Every rank records the step as saved.
    fn save(&self, cx: &mut Cx, finished: bool) -> Result<()> {
        let step = cx.state.step;
        if self.write {
            let trainer = &cx.trainer;
            let tensors = trainer.base.checkpoint_tensors();
            if let Some(tensor) = first_nonfinite(&tensors) {
                let kept = KeptCheckpoint { step: cx.state.last_saved, dir: self.run_dir.clone() };
                return Err(TrainerError::NonFiniteTensor { tensor, step, kept });
            }
            let (pos, length) = (cx.state.pos, trainer.base.length);
            checkpoint::save(
                &self.run_dir,
                &tensors,
                CheckpointState {
                    step,
                    total_steps: length.total_steps,
                    epoch: pos.epoch,
                    samples_in_epoch: pos.samples,
                    finished,
                    position_in_epoch: Some(pos.position),
                    batches_in_epoch: pos.batches,
                    shard_order: cx.loader.shard_order(pos.epoch),
                    shards: self.shards.clone(),
                    world_size: self.world_size,
                    steps_per_epoch: length.steps_per_epoch,
                    lr: cx.state.last_lr_tau.0,
                    ema_tau: cx.state.last_lr_tau.1,
                    sandwich_rng_word_pos: trainer.method.rng_word_pos().to_string(),
                    skipped_nonfinite: cx.state.skipped,
                    images: cx.state.run_images,
                    shard_sha256: self.shard_sha256.clone(),
                    ..CheckpointState::basic(step, length.total_steps, trainer.base.format.name())
                },
            )?;
        }
        cx.state.last_saved = Some(step);
        Ok(())
    }
}

impl Hook for Checkpointer {
    fn after_step(&mut self, cx: &mut Cx, info: &StepInfo) -> Result<()> {
        // epoch ends and the run's end have saves of their own
        if !info.run_done && !info.epoch_done && self.every > 0 && cx.state.step.is_multiple_of(self.every) {
            self.save(cx, false)?;
        }
        Ok(())
    }

    fn after_epoch(&mut self, cx: &mut Cx) -> Result<()> {
        if cx.state.last_saved != Some(cx.state.step) {
            self.save(cx, false)?;
        }
        Ok(())
    }

    fn on_end(&mut self, cx: &mut Cx, interrupted: bool) -> Result<()> {
        self.save(cx, !interrupted)
    }
}
