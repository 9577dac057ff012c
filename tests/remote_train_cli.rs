//! End-to-end: `dspnet-stream-train` on shards served over HTTP by a loopback server that the
//! test starts (pipeline/tests/support/httpd.rs): CIFAR-10 photos → dspnet-shard → HTTP →
//! 2 training steps; and the same run with the server down: one clear error line, exit code 2,
//! within the configured retry budget.
#[path = "../pipeline/tests/support/httpd.rs"]
mod httpd;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");
const TRAIN: &str = env!("CARGO_BIN_EXE_dspnet-stream-train");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// 64 CIFAR-10 training photos (airplane, cat, ship, truck × 16) in 4 shards of 16, served at
/// `http://127.0.0.1:PORT/cifar/train-00000{0..3}.tar` (with the manifest).
fn served_shards(dir: &Path) -> Option<httpd::Httpd> {
    let cifar = root().join("../shared/data/cifar10-jpg/train");
    if !cifar.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI needs ../shared/data/cifar10-jpg");
        eprintln!("skipping: {} missing", cifar.display());
        return None;
    }
    for c in ["airplane", "cat", "ship", "truck"] {
        std::fs::create_dir_all(dir.join("src").join(c)).unwrap();
        for i in 0..16 {
            let name = format!("{i:04}.jpg");
            std::fs::copy(cifar.join(c).join(&name), dir.join("src").join(c).join(&name)).unwrap();
        }
    }
    let out = Command::new(SHARD)
        .args([
            "--input",
            dir.join("src").to_str().unwrap(),
            "--output",
            dir.join("shards").to_str().unwrap(),
            "--samples-per-shard",
            "16",
            "--split",
            "train",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let srv = httpd::Httpd::start();
    for e in std::fs::read_dir(dir.join("shards")).unwrap() {
        let p = e.unwrap().path();
        srv.put(&format!("cifar/{}", p.file_name().unwrap().to_str().unwrap()), std::fs::read(&p).unwrap());
    }
    Some(srv)
}

/// Added to `support::TINY_MODEL` in every run here: a small retry budget, so a dead server fails fast.
const RETRY: [&str; 2] = ["remote.max_retries=2", "remote.max_retry_secs=1.5"];

/// `dspnet-stream-train` for 2 steps on the small CIFAR preset (tiny model); the remote retry
/// options are given with --set (they are not in the preset file).
fn train(shards: &str, out: &Path) -> Output {
    let sets = support::TINY_MODEL.iter().chain(&RETRY).copied().chain(["train.log_every=1"]);
    let cfg = root().join("configs/cifar10-small.toml");
    let mut args: Vec<String> = vec![
        "--config".into(),
        cfg.to_str().unwrap().into(),
        "--shards".into(),
        shards.into(),
        "--out".into(),
        out.to_str().unwrap().into(),
        "--quiet".into(),
        "--max-steps".into(),
        "2".into(),
    ];
    for s in sets {
        args.push("--set".into());
        args.push(s.into());
    }
    Command::new(TRAIN).args(&args).output().unwrap()
}

#[test]
fn stream_train_reads_http_shards_and_fails_clearly_when_the_server_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = served_shards(dir.path()) else { return };
    let pattern = srv.url("cifar/train-{000000..000003}.tar");

    let run = dir.path().join("run");
    let out = train(&pattern, &run);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("trained 2 steps, 32 images"), "{stdout}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 2);
    assert!(srv.gets() >= 1 && srv.bytes_sent() > 0, "shards came from the server");

    // Server gone for good: one line naming the URL, the attempts and the budget set above,
    // exit code 2, and no checkpoint written.
    srv.stop();
    let run2 = dir.path().join("run-down");
    let t = Instant::now();
    let out = train(&pattern, &run2);
    let secs = t.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("server down: exit {:?} after {secs:.1} s: {stderr}", out.status.code());
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("remote shard http://127.0.0.1:") && errors[0].contains("attempt(s)"), "{stderr}");
    assert!(
        errors[0].contains("remote.max_retries (2)") && errors[0].contains("remote.max_retry_secs (1.5)"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!run2.join("checkpoint.json").exists());
    // the manifest request and the shard requests each give up within the 1.5 s budget (the
    // default budget, 8 retries over up to 60 s, would take 30 s or more)
    assert!(secs < 10.0, "gave up after {secs:.1} s");
}

/// The server goes away for good in the middle of a run: training stops with one error line
/// naming the remote shard, and the last checkpoint (written at the end of epoch 0) is intact:
/// its JSON still matches the weights file byte for byte (sha256) and resumable.
#[test]
fn server_gone_mid_run_keeps_the_last_checkpoint_intact() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let Some(srv) = served_shards(dir.path()) else { return };
    // slow enough that epoch 1 is still reading when the server stops (4 shards of ~40 KB)
    srv.throttle(40_000, std::time::Duration::from_millis(20));
    let pattern = srv.url("cifar/train-{000000..000003}.tar");
    let run = dir.path().join("run");
    let cfg = root().join("configs/cifar10-small.toml");
    let mut cmd = Command::new(TRAIN);
    cmd.args(["--config", cfg.to_str().unwrap(), "--shards", &pattern, "--out", run.to_str().unwrap(), "--quiet"]);
    for s in support::TINY_MODEL.iter().chain(&RETRY).copied().chain(["train.epochs=5"]) {
        cmd.args(["--set", s]);
    }
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let state_path = run.join("checkpoint.json");
    let t = Instant::now();
    let step_of = |p: &Path| -> Option<u64> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        v["step"].as_u64()
    };
    while step_of(&state_path).is_none_or(|s| s < 4) {
        assert!(t.elapsed().as_secs() < 120, "no epoch-end checkpoint within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    srv.stop();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("server gone mid-run: exit {:?}: {stderr}", out.status.code());
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("remote shard http://127.0.0.1:"), "{stderr}");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!((4..20).contains(&step), "checkpoint at step {step}");
    let weights = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let sha: String = Sha256::digest(&weights).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(state["weights_sha256"].as_str().unwrap(), sha, "checkpoint.json and weights agree");
}
