//! Shared build script (the root package and every crate point here): embed libtorch's library
//! folder as an RPATH so binaries and tests find libtorch at run time without LD_LIBRARY_PATH.
//! torch-sys (links = "tch") reports the folder as `cargo:libtorch_lib`, which Cargo hands to
//! direct dependents as DEP_TCH_LIBTORCH_LIB.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
