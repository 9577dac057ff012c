//! A binary whose standard output is closed early (`dspnet-... | head`) ends quietly, as C
//! tools do, instead of panicking on the broken pipe.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_closed_stdout_ends_the_binary_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src/cat");
    std::fs::create_dir_all(&src).unwrap();
    let cifar = root().join("../shared/data/cifar10-jpg/train/cat");
    for i in 0..4 {
        let name = format!("{i:04}.jpg");
        std::fs::copy(cifar.join(&name), src.join(&name)).unwrap();
    }
    let mut child = Command::new(SHARD)
        .args([
            "--input",
            dir.path().join("src").to_str().unwrap(),
            "--output",
            dir.path().join("out").to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the reader goes away before the binary prints its summary line
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    // ended by SIGPIPE (13), like `cat big | head`, or done before it noticed
    assert!(out.status.signal() == Some(13) || out.status.success(), "{:?}: {stderr}", out.status);
    // the shards were written all the same
    assert!(dir.path().join("out/manifest.json").exists());
}
