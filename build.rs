//! Shared build script (the root package and every crate point here):
//! - embeds libtorch's library folder as an RPATH so binaries and tests find libtorch at run
//!   time without LD_LIBRARY_PATH. torch-sys (links = "tch") reports the folder as
//!   `cargo:libtorch_lib`, which Cargo hands to direct dependents as DEP_TCH_LIBTORCH_LIB;
//! - when that libtorch has CUDA (the PyPI torch wheel does), links libtorch_cuda with
//!   --no-as-needed: nothing references its symbols directly, so the default --as-needed would
//!   drop it and `tch::Cuda::is_available()` would be false even on a GPU machine.
/// `pub`: pipeline/build.rs and model/build.rs run it before compiling their C/C++ shims.
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
}
