//! Which libtorch a binary was built for and which one it found at run time.
//!
//! A binary built against a PyTorch wheel (torch-sys, `LIBTORCH_USE_PYTORCH=1`) records that
//! wheel's `torch/lib` as its RPATH. It also runs against another `torch/lib` of the SAME
//! version, found first through `LD_LIBRARY_PATH` (a cluster's own PyTorch, or the device
//! bundle's `run.sh`); a different version breaks libtorch's C++ ABI, usually as a missing
//! symbol before `main` runs, otherwise as wrong results. [`mismatch_line`] says so in one line.

use std::path::{Path, PathBuf};

/// The libtorch of the build and the one this process loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Libtorch {
    /// `torch.__version__` of the wheel built against (e.g. "2.11.0+cu130"; empty when its
    /// `version.py` was not found).
    pub built_version: String,
    /// Its CUDA version (`torch.version.cuda`, e.g. "13.0"; empty for a CPU build).
    pub built_cuda: String,
    /// The `torch/lib` folder built against (the RPATH).
    pub built_lib: PathBuf,
    /// The `torch/lib` folder of the libtorch_cpu.so this process mapped (None: not found in
    /// /proc/self/maps, e.g. not Linux).
    pub found_lib: Option<PathBuf>,
    /// `__version__` of the `version.py` beside [`Libtorch::found_lib`] (None: no such file, a
    /// standalone libtorch).
    pub found_version: Option<String>,
}

/// `__version__` (or another `key`) of a wheel's `torch/version.py`.
fn version_field(text: &str, key: &str) -> Option<String> {
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split('\'').nth(1)).map(str::to_string)
}

/// The folder of the libtorch_cpu.so mapped into this process.
fn mapped_lib() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| Path::new(p).file_name().is_some_and(|n| n == "libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent().map(Path::to_path_buf))
}

/// The built-for and found libtorch of this process. Touches libtorch first so it is mapped.
pub fn libtorch() -> Libtorch {
    let _ = tch::utils::has_mkl();
    let found_lib = mapped_lib();
    let found_version = found_lib
        .as_ref()
        .and_then(|l| std::fs::read_to_string(l.join("../version.py")).ok())
        .and_then(|t| version_field(&t, "__version__"));
    Libtorch {
        built_version: env!("DSPNET_LIBTORCH_BUILT_VERSION").to_string(),
        built_cuda: env!("DSPNET_LIBTORCH_BUILT_CUDA").to_string(),
        built_lib: PathBuf::from(env!("DSPNET_LIBTORCH_BUILT_LIB")),
        found_lib,
        found_version,
    }
}

impl Libtorch {
    /// One line when the found libtorch's version differs from the built-for one (None when
    /// they agree, or when either version is unknown).
    pub fn mismatch_line(&self) -> Option<String> {
        let found = self.found_version.as_deref()?;
        if self.built_version.is_empty() || found == self.built_version {
            return None;
        }
        let plain = self.built_version.split('+').next().unwrap_or(&self.built_version);
        Some(format!(
            "libtorch: built for {} ({}), found {} ({}); run where a torch {plain} torch/lib comes first on \
             LD_LIBRARY_PATH, or rebuild with `bash tools/setup.sh --torch {}`",
            self.built_version,
            self.built_lib.display(),
            found,
            self.found_lib.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
            found.split('+').next().unwrap_or(found),
        ))
    }

    /// One line describing both, for logs: `built for V (lib); found V (lib)`.
    pub fn describe(&self) -> String {
        format!(
            "built for {} ({}); found {} ({})",
            if self.built_version.is_empty() { "?" } else { &self.built_version },
            self.built_lib.display(),
            self.found_version.as_deref().unwrap_or("?"),
            self.found_lib.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "?".into()),
        )
    }
}

/// Prints [`Libtorch::mismatch_line`] to stderr when the versions differ (every binary calls
/// this first).
pub fn warn_if_mismatch() {
    if let Some(line) = libtorch().mismatch_line() {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_found_the_libtorch_it_was_built_for() {
        let l = libtorch();
        assert!(!l.built_version.is_empty(), "{l:?}");
        assert_eq!(l.found_version.as_deref(), Some(l.built_version.as_str()), "{l:?}");
        assert_eq!(l.mismatch_line(), None);
    }

    #[test]
    fn a_different_version_is_one_line_naming_both() {
        let l = Libtorch {
            built_version: "2.11.0+cu130".into(),
            built_cuda: "13.0".into(),
            built_lib: "/a/torch/lib".into(),
            found_lib: Some("/b/torch/lib".into()),
            found_version: Some("2.13.0+cu130".into()),
        };
        let line = l.mismatch_line().unwrap();
        assert!(!line.contains('\n'));
        for s in ["2.11.0+cu130", "/a/torch/lib", "2.13.0+cu130", "/b/torch/lib", "--torch 2.13.0"] {
            assert!(line.contains(s), "{line}");
        }
        assert_eq!(version_field("__version__ = '2.13.0+cpu'\n", "__version__").as_deref(), Some("2.13.0+cpu"));
    }
}
