//! Shared build script (the root package and every crate point here):
//! - embeds libtorch's library folder as an RPATH so binaries and tests find libtorch at run
//!   time without LD_LIBRARY_PATH. torch-sys (links = "tch") reports the folder as
//!   `cargo:libtorch_lib`, which Cargo hands to direct dependents as DEP_TCH_LIBTORCH_LIB;
//! - when that libtorch has CUDA (the PyPI torch wheel does), links libtorch_cuda with
//!   --no-as-needed: nothing references its symbols directly, so the default --as-needed would
//!   drop it and `tch::Cuda::is_available()` would be false even on a GPU machine;
//! - for `dspnet-deploy` and `dspnet-compare` only: sets DSPNET_GIT_DESCRIBE to `git describe --always --dirty` of the
//!   checkout (the code version recorded in exports), rerun when HEAD moves (a commit or a
//!   checkout; not on every `git add`, which would rebuild the crate each time, so `-dirty`
//!   is as of that build); unset when git or the repository is unavailable.
use std::process::Command;

/// `pub`: pipeline/build.rs, model/build.rs and dist/build.rs run it before compiling their
/// C/C++ shims.
pub fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
    }
    if matches!(std::env::var("CARGO_PKG_NAME").as_deref(), Ok("dspnet-deploy" | "dspnet-compare")) {
        git_describe();
    }
}

fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn git_describe() {
    if let Some(d) = git(&["describe", "--always", "--dirty"]) {
        println!("cargo:rustc-env=DSPNET_GIT_DESCRIBE={d}");
    }
    for f in ["logs/HEAD", "HEAD"] {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", f]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
