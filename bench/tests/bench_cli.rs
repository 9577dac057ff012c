//! `dspnet-bench` on bad input: one `error:` line and exit code 2, before any measuring (the
//! figures themselves are the benchmark's business, not a test's).
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dspnet-bench")).args(args).output().expect("run dspnet-bench")
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_options_are_one_line_errors_with_exit_code_2() {
    let out = run(&["--quick", "--batch", "1"]);
    assert_one_line_error(&out, "--batch 1");
    let out = run(&["--quick", "--steps", "0"]);
    assert_one_line_error(&out, "--steps 0");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/folder/bench.json");
    let out = run(&["--quick", "--out", missing.to_str().unwrap()]);
    assert_one_line_error(&out, "not writable");
    let out = run(&["--quick", "--out", dir.path().to_str().unwrap()]);
    assert_one_line_error(&out, "is a folder");
    // clap's own errors (unknown part to skip) also exit with 2
    let out = run(&["--skip", "gpu"]);
    assert_eq!(out.status.code(), Some(2));
    // nothing was written
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
