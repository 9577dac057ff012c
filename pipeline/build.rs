//! Build script of dspnet-pipeline: the shared libtorch RPATH logic (../build.rs), then the JPEG
//! window-decoding shim (src/image/jpeg_shim.c) linked against libjpeg-turbo's static libjpeg from
//! Debian's libjpeg62-turbo-dev (installed by tools/setup.sh), so binaries need no runtime libjpeg.
#[path = "../build.rs"]
mod shared;

fn main() {
    shared::main();
    println!("cargo:rerun-if-changed=src/image/jpeg_shim.c");
    println!("cargo:rerun-if-changed=../build.rs");
    let mut build = cc::Build::new();
    build.file("src/image/jpeg_shim.c").opt_level(2).warnings(true);
    // where the C compiler finds libjpeg.a (it prints the bare name when it does not)
    let found = build
        .get_compiler()
        .to_command()
        .arg("-print-file-name=libjpeg.a")
        .output()
        .ok()
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string()))
        .filter(|p| p.is_absolute() && p.is_file());
    let Some(lib) = found else {
        println!("cargo:warning=libjpeg.a not found: install Debian's libjpeg62-turbo-dev (tools/setup.sh does)");
        std::process::exit(1);
    };
    build.compile("dspnet_jpeg_shim");
    if let Some(dir) = lib.parent() {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    // after the shim in link order: static libjpeg (libjpeg-turbo 2.1 with SIMD)
    println!("cargo:rustc-link-lib=static=jpeg");
}
