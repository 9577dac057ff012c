//! Build script of dspnet-dist: the workspace's shared build script (libtorch RPATH, CUDA link;
//! `../build.rs`) and the C++ shim over c10d (`src/shim.cpp`), compiled like torch-sys compiles
//! its own wrapper (C++17, the C++11 ABI of the torch wheel, libtorch's include folders).
//!
//! Gloo: the torch wheel ships c10d's headers but not gloo's, which `ProcessGroupGloo.hpp`
//! includes. Debian's `libgloo-dev` (installed by tools/setup.sh) provides them; its gloo is
//! older than the commit torch 2.13 was built with, which is harmless here because
//! ProcessGroupGloo holds gloo objects only through shared_ptr/unique_ptr (its layout does not
//! depend on gloo's) and the shim calls no gloo function itself.
//!
//! NCCL: compiled in (`DSPNET_WITH_NCCL`) when libtorch has CUDA and the CUDA runtime and NCCL
//! headers of the wheel's nvidia-* packages are found next to it; otherwise asking for NCCL at
//! run time is an error naming the fix.

// The workspace's shared build script as a module (its `main` is `pub` for this).
#[path = "../build.rs"]
mod shared;

use std::path::{Path, PathBuf};

fn main() {
    shared::main();
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-env-changed=DSPNET_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=DSPNET_DIST_NCCL");
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(l) => PathBuf::from(l),
        Err(_) => panic!(
            "torch-sys did not report libtorch's folder (DEP_TCH_LIBTORCH_LIB); source tools/env.sh before cargo"
        ),
    };
    let torch = lib.parent().expect("libtorch lib folder has a parent").to_path_buf();
    let include = torch.join("include");
    let gloo =
        std::env::var("DSPNET_GLOO_INCLUDE").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/algorithm.h").exists() {
        panic!(
            "gloo's headers are missing ({}/gloo/algorithm.h): install Debian's libgloo-dev (tools/setup.sh does) or set DSPNET_GLOO_INCLUDE",
            gloo.display()
        );
    }
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
            .flag("-DGLOG_USE_GLOG_EXPORT");
        b
    };
    println!("cargo::rustc-check-cfg=cfg(dspnet_nccl)");
    println!("cargo:rerun-if-changed=src/shim_nccl.cpp");
    let mut nccl = false;
    if let Some(dirs) = nccl_includes(&lib, &torch) {
        let mut b = base();
        b.flag("-DUSE_C10D_NCCL").flag("-DUSE_CUDA").file("src/shim_nccl.cpp");
        for d in &dirs {
            b.include(d);
        }
        match b.try_compile("dspnet_dist_nccl") {
            Ok(()) => nccl = true,
            Err(e) => {
                println!("cargo:warning=dspnet-dist builds without NCCL: src/shim_nccl.cpp did not compile ({e})")
            }
        }
    }
    let mut b = base();
    b.include(&gloo).flag("-DUSE_C10D_GLOO").file("src/shim.cpp");
    if nccl {
        b.flag("-DDSPNET_WITH_NCCL");
        println!("cargo:rustc-cfg=dspnet_nccl");
    }
    b.compile("dspnet_dist_shim");
    // The shim calls c10d in libtorch_cpu (and ProcessGroupNCCL in libtorch_cuda, which the
    // shared build script links); torch-sys links them too, repeated here so they follow the
    // static shim on the link line.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// Include folders for shim_nccl.cpp when libtorch has CUDA: CUDA's full headers (a folder
/// with cuda_runtime_api.h AND crt/host_config.h: $CUDA_HOME/include, /usr/local/cuda/include
/// or the nvidia-* wheels beside torch) and NCCL's nccl.h (the nvidia-nccl wheel or those
/// folders). `DSPNET_DIST_NCCL=0` turns NCCL off.
fn nccl_includes(lib: &Path, torch: &Path) -> Option<Vec<PathBuf>> {
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if std::env::var("DSPNET_DIST_NCCL").map(|v| v == "0").unwrap_or(false) {
        return None;
    }
    if !lib.join("libtorch_cuda.so").exists() {
        return None;
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(h) = std::env::var("CUDA_HOME") {
        dirs.push(PathBuf::from(h).join("include"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    if let Ok(entries) = std::fs::read_dir(torch.parent()?.join("nvidia")) {
        for entry in entries.flatten() {
            let inc = entry.path().join("include");
            if inc.is_dir() {
                // headers installed later (tools/setup.sh) must re-run this script
                println!("cargo:rerun-if-changed={}", inc.display());
            }
            dirs.push(inc);
        }
    }
    dirs.retain(|d| d.is_dir());
    let has = |f: &str| dirs.iter().any(|d| d.join(f).exists());
    (has("cuda_runtime_api.h") && has("crt/host_config.h") && has("nccl.h")).then_some(dirs)
}
