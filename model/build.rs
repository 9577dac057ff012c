//! Build script of dspnet-model: the shared libtorch RPATH logic (`../build.rs`), then
//! `csrc/autocast_cpu.cpp`, the CPU autocast switches of `src/autocast.rs`, compiled against the
//! headers of the libtorch torch-sys linked (`DEP_TCH_LIBTORCH_LIB/../include`, the layout of
//! both the PyPI wheel and the standalone libtorch archive).
#[path = "../build.rs"]
mod shared;

use std::path::PathBuf;

fn main() {
    shared::main();
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=csrc/autocast_cpu.cpp");
    println!("cargo:rerun-if-changed=csrc/cuda_settings.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build.rs");
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => panic!(
            "torch-sys did not report libtorch's folder (DEP_TCH_LIBTORCH_LIB); build with the venv \
             first on PATH and LIBTORCH_USE_PYTORCH=1 (source tools/env.sh)"
        ),
    };
    libtorch_version(&lib);
    let include = lib.join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/autocast_cpu.cpp")
        .file("csrc/cuda_settings.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into()).as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .warnings(false);
    // libtorch 2.x headers use C++20 bit-field initialisers (C++17 compiles them with warnings).
    if build.is_flag_supported("-std=c++20").unwrap_or(false) {
        build.flag("-std=c++20");
    } else {
        build.flag("-std=c++17").flag_if_supported("-Wno-c++20-extensions");
    }
    build.compile("dspnet_autocast_cpu");
}

/// Records the libtorch this build links (`src/libtorch.rs` compares it with the one found at
/// run time): DSPNET_LIBTORCH_BUILT_LIB (the folder), DSPNET_LIBTORCH_BUILT_VERSION and
/// DSPNET_LIBTORCH_BUILT_CUDA (`__version__` and `cuda` of the wheel's `torch/version.py`
/// beside it; empty for a standalone libtorch without one, or a CPU wheel's CUDA).
fn libtorch_version(lib: &std::path::Path) {
    let py = lib.join("../version.py");
    println!("cargo:rerun-if-changed={}", py.display());
    let text = std::fs::read_to_string(&py).unwrap_or_default();
    let field = |key: &str| {
        text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split('\'').nth(1)).unwrap_or("").to_string()
    };
    println!("cargo:rustc-env=DSPNET_LIBTORCH_BUILT_LIB={}", lib.display());
    println!("cargo:rustc-env=DSPNET_LIBTORCH_BUILT_VERSION={}", field("__version__"));
    println!("cargo:rustc-env=DSPNET_LIBTORCH_BUILT_CUDA={}", field("cuda"));
}
