//! The code version recorded in checkpoints, exports and reports.
//!
//! The git part comes from `DSPNET_GIT_DESCRIBE`, which the workspace's build.rs sets for the
//! crates that record versions (`git describe --always --dirty` of the checkout at build time).
//! The macro expands in the calling crate, so only those crates rebuild when HEAD moves.

/// `"NAME VERSION (GIT)"`, or `"NAME VERSION"` when the calling crate was built without git
/// information, e.g. `code_version!("dspnet-deploy")` → `dspnet-deploy 0.1.0 (3e21c25-dirty)`.
#[macro_export]
macro_rules! code_version {
    ($name:expr) => {
        $crate::version::format_version($name, env!("CARGO_PKG_VERSION"), option_env!("DSPNET_GIT_DESCRIBE"))
    };
}

/// The text of [`code_version!`] from its parts.
pub fn format_version(name: &str, version: &str, git: Option<&str>) -> String {
    match git {
        Some(g) if !g.is_empty() => format!("{name} {version} ({g})"),
        _ => format!("{name} {version}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_text() {
        assert_eq!(super::format_version("dspnet-x", "1.2.3", Some("abc1234")), "dspnet-x 1.2.3 (abc1234)");
        assert_eq!(super::format_version("dspnet-x", "1.2.3", Some("")), "dspnet-x 1.2.3");
        assert_eq!(super::format_version("dspnet-x", "1.2.3", None), "dspnet-x 1.2.3");
        assert!(crate::code_version!("dspnet-core").starts_with(&format!("dspnet-core {}", env!("CARGO_PKG_VERSION"))));
    }
}
