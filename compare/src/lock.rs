//! Folder locks for comparisons that share an output folder: several `dspnet-compare --only`
//! jobs (one per sub-run, e.g. one per GPU or cluster job) and the final `--resume` that writes
//! the report. A training or evaluation holds its sub-run folder's lock, so no two processes
//! train (or evaluate) the same sub-run at once; OUT is set up (the data subset sharded, the
//! plan recorded) under OUT's own lock, so the first job does it and the others wait and reuse
//! it.
//!
//! The lock is flock(2) (std's `File::lock`) on `FOLDER/.compare.lock`: advisory, held by the
//! process until the guard drops, and released by the kernel however the process ends (a killed
//! or preempted job leaves no stale lock behind). The file itself stays.

use crate::error::{CompareError, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The lock file inside a locked folder.
pub const LOCK_FILE: &str = ".compare.lock";

/// A held folder lock; released when dropped.
#[derive(Debug)]
pub struct FolderLock {
    _file: File,
}

fn open(dir: &Path) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(|e| CompareError::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| CompareError::io(&path, e))
}

impl FolderLock {
    /// Takes the lock of `dir` (created if missing) if no other process holds it; `Ok(None)`
    /// when one does.
    ///
    /// Errors: the folder or its lock file cannot be created or locked (file-system error,
    /// naming the path).
    pub fn try_take(dir: &Path) -> Result<Option<FolderLock>> {
        let file = open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FolderLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(CompareError::io(dir.join(LOCK_FILE), e)),
        }
    }

    /// Takes the lock of `dir` (created if missing), waiting while another process holds it.
    ///
    /// Errors: as [`FolderLock::try_take`].
    pub fn wait(dir: &Path) -> Result<FolderLock> {
        let file = open(dir)?;
        file.lock().map_err(|e| CompareError::io(dir.join(LOCK_FILE), e))?;
        Ok(FolderLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("seed0/dspnet");
        let held = FolderLock::try_take(&run).unwrap().expect("free at first");
        assert!(run.join(LOCK_FILE).is_file());
        // flock locks belong to the open file: a second open, as another process makes, is refused
        assert!(FolderLock::try_take(&run).unwrap().is_none());
        drop(held);
        let again = FolderLock::try_take(&run).unwrap();
        assert!(again.is_some(), "free once the holder dropped it");
        drop(again);
        FolderLock::wait(&run).unwrap();
    }
}
