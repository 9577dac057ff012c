//! The training curves as PNGs at the end of every invocation, on rank 0: per-width loss and,
//! when the run has monitor records, per-width kNN top-1 against step
//! ([`dspnet_run::curves::write`]). Registered last, so it draws what every other hook logged.
//! A chart that cannot be drawn (no font, say) is a warning: it never fails a training run.

use super::{Cx, Hook};
use crate::error::Result;
use std::path::PathBuf;

/// Draws `curves_loss.png` and `curves_knn.png` in the run directory when the loop ends.
pub struct Curves {
    pub run_dir: PathBuf,
    /// Only rank 0 draws (it writes `metrics.jsonl`).
    pub write: bool,
}

impl Hook for Curves {
    fn on_end(&mut self, _cx: &mut Cx, _interrupted: bool) -> Result<()> {
        if self.write {
            if let Err(e) = dspnet_run::curves::write(&self.run_dir) {
                tracing::warn!("training curves not drawn: {e}");
            }
        }
        Ok(())
    }
}
