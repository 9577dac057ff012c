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
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../build.rs");
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => panic!(
            "torch-sys did not report libtorch's folder (DEP_TCH_LIBTORCH_LIB); build with the venv \
             first on PATH and LIBTORCH_USE_PYTORCH=1 (source tools/env.sh)"
        ),
    };
    let include = lib.join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/autocast_cpu.cpp")
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
