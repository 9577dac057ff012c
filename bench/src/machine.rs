//! The machine and the checkout the figures come from: the load average as printed, the git
//! commit of the checkout (marked when it has uncommitted changes) and where the checkout is
//! (for the Python peers' scripts and `.venv`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The three load averages of /proc/loadavg as one string (`None` when unreadable).
pub fn load_average() -> Option<String> {
    let l = dspnet_core::machine::load_average();
    (!l.is_empty()).then(|| l.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" "))
}

pub fn git_commit(root: &Path) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(root).args(["rev-parse", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if commit.is_empty() {
        return None;
    }
    let dirty = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Some(if dirty { format!("{commit}+uncommitted") } else { commit })
}

/// The checkout: the working directory when it holds bench/peer, else the one this binary was
/// built from.
pub fn checkout_root() -> PathBuf {
    if Path::new("bench/peer/peer_step.py").exists() {
        return PathBuf::from(".");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
