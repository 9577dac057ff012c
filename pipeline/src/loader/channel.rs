//! Hand-offs between the loader's threads: the polling tick at which a blocked thread checks
//! for cancellation, a send that gives up when the epoch is cancelled or the receiver is gone,
//! and named thread spawns.
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender};

use crate::{PipelineError, Result};

/// How long a blocked loader thread waits before it checks for cancellation again.
pub(super) const TICK: Duration = Duration::from_millis(50);

/// Send with a timeout loop that gives up when `cancel` is set or the receiver is gone.
pub(super) fn send_or_cancel<T>(tx: &Sender<T>, mut item: T, cancel: &AtomicBool) -> bool {
    loop {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        match tx.send_timeout(item, TICK) {
            Ok(()) => return true,
            Err(SendTimeoutError::Timeout(back)) => item = back,
            Err(SendTimeoutError::Disconnected(_)) => return false,
        }
    }
}

/// Spawn a thread named `name` (shown by debuggers and `top -H`).
pub(super) fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| PipelineError::Internal(format!("cannot spawn thread {name}: {e}")))
}
