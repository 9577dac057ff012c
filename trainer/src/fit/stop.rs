//! Stopping at a step boundary on request (SIGINT or SIGTERM): the step in flight finishes, the
//! end hooks save a checkpoint, and the run can be resumed exactly.

use super::{Cx, Hook};
use crate::error::Result;
use dspnet_core::cli::StopSignal;

/// Stops the run when `stop` records a signal. A single process checks before waiting for each
/// batch; in a data-parallel run the ranks decide together once a batch has arrived (one small
/// all-reduce per step), so every rank stops after the same step and none waits in a
/// collective for a rank that left. A rank stopped by another's signal records that signal in
/// its own `stop`, so every rank reports the same exit code.
pub struct StopOnSignal {
    pub stop: StopSignal,
}

impl Hook for StopOnSignal {
    fn stop_before_batch(&mut self, cx: &mut Cx) -> Result<bool> {
        Ok(cx.trainer.base.data_parallel().is_none() && self.stop.signal().is_some())
    }

    fn stop_before_step(&mut self, cx: &mut Cx) -> Result<bool> {
        let Some(dp) = cx.trainer.base.data_parallel() else { return Ok(false) };
        match crate::data_parallel::any_rank_stopping(Some(&dp.group), self.stop.signal())? {
            Some(sig) => {
                self.stop.request(sig);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
