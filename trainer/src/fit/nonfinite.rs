//! A non-finite loss: stop the run with one line naming width and step (the last good
//! checkpoint stays), or, with `train.skip_nonfinite_steps`, skip the step.

use super::{Cx, Hook};
use crate::error::{KeptCheckpoint, NonFiniteLoss, Result, TrainerError};
use crate::momentum::MomentumBase;
use dspnet_run::checkpoint;
use std::path::PathBuf;
use tch::Tensor;

/// The non-finite-loss policy. With `skip`, a step whose loss is NaN or inf at any width is
/// skipped: the step returned before any update or EMA, and the BN running statistics its
/// forward passes touched are put back (from a snapshot taken before every step); skipping
/// stops anyway once the weights themselves are non-finite.
pub struct NonFiniteGuard {
    pub skip: bool,
    /// The run directory (named in the stop message).
    pub run_dir: PathBuf,
    snapshot: Option<Vec<(Tensor, Tensor)>>,
}

impl NonFiniteGuard {
    /// The policy of `train.skip_nonfinite_steps` for the run in `run_dir`.
    pub fn new(skip: bool, run_dir: PathBuf) -> Self {
        NonFiniteGuard { skip, run_dir, snapshot: None }
    }
}

impl Hook for NonFiniteGuard {
    fn before_step(&mut self, cx: &mut Cx) -> Result<()> {
        self.snapshot = self.skip.then(|| cx.trainer.base.bn_snapshot());
        Ok(())
    }

    fn on_nonfinite(&mut self, cx: &mut Cx, loss: &NonFiniteLoss) -> Result<bool> {
        let Some(snapshot) = self.snapshot.take() else {
            let kept = KeptCheckpoint { step: cx.state.last_saved, dir: self.run_dir.clone() };
            return Err(TrainerError::StoppedOnNonFinite { loss: loss.clone(), kept });
        };
        MomentumBase::restore_bn(&snapshot);
        if let Some(tensor) = first_nonfinite(&checkpoint::prefixed(&cx.trainer.base.online.vs, "online")) {
            return Err(TrainerError::SkipImpossible { loss: loss.clone(), tensor });
        }
        cx.state.skipped += 1;
        tracing::warn!(skipped_total = cx.state.skipped, "skipping the step: {loss}");
        Ok(true)
    }
}

/// Name of the first floating-point tensor holding a NaN or inf, if any.
pub fn first_nonfinite(tensors: &[(String, Tensor)]) -> Option<String> {
    tch::no_grad(|| {
        tensors
            .iter()
            .find(|(_, t)| t.is_floating_point() && t.isfinite().all().int64_value(&[]) == 0)
            .map(|(n, _)| n.clone())
    })
}
