//! Stopping at a step boundary on request (Ctrl-C): the step in flight finishes, the end hooks
//! save a checkpoint, and the run can be resumed exactly.

use super::{Cx, Hook};
use crate::error::Result;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Stops the run when `flag` is set (by a signal handler). A single process checks before
/// waiting for each batch; in a data-parallel run the ranks decide together once a batch has
/// arrived (one 1-element all-reduce per step), so every rank stops after the same step and
/// none waits in a collective for a rank that left.
pub struct StopOnSignal {
    pub flag: Arc<AtomicBool>,
}

impl Hook for StopOnSignal {
    fn stop_before_batch(&mut self, cx: &mut Cx) -> Result<bool> {
        Ok(cx.trainer.base.data_parallel().is_none() && self.flag.load(Ordering::SeqCst))
    }

    fn stop_before_step(&mut self, cx: &mut Cx) -> Result<bool> {
        match cx.trainer.base.data_parallel() {
            Some(dp) => crate::data_parallel::any_rank_stopping(Some(&dp.group), self.flag.load(Ordering::SeqCst)),
            None => Ok(false),
        }
    }
}
