//! End-to-end data parallel: two processes of dspnet-stream-train on real CIFAR-10 shards over
//! Gloo on loopback, launched by torchrun (its agent hosts the store) and by hand (rank 0 hosts
//! it). Only rank 0 writes the run directory; both ranks exit 0. SIGTERM to one rank stops both
//! at the same step with a checkpoint and exit code 143.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");
const TRAIN: &str = env!("CARGO_BIN_EXE_dspnet-stream-train");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// 96 CIFAR-10 training photos (3 classes × 32) in 3 shards of 32 under `dir/train`.
fn shards(dir: &Path) -> String {
    let cifar = root().join("../shared/data/cifar10-jpg/train");
    assert!(cifar.is_dir(), "real data missing: {} (see the developers' guide)", cifar.display());
    for c in ["airplane", "cat", "ship"] {
        let d = dir.join("src").join(c);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..32 {
            let name = format!("{i:04}.jpg");
            std::fs::copy(cifar.join(c).join(&name), d.join(&name)).unwrap();
        }
    }
    let out = Command::new(SHARD)
        .args(["--input", dir.join("src").to_str().unwrap(), "--output", dir.join("train").to_str().unwrap()])
        .args(["--samples-per-shard", "32", "--seed", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir.join("train").to_str().unwrap().to_string()
}

fn train_args(shards: &str, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "--config",
        root().join("configs/cifar10-small.toml").to_str().unwrap(),
        "--shards",
        shards,
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--max-steps",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for s in [
        "model.base_channels=4",
        "heads.hidden=32",
        "heads.out_dim=16",
        "loader.batch_size=8",
        "loader.shuffle_buffer=16",
        "train.precision=\"fp32\"",
        "train.log_every=1",
        "train.sync_bn=true",
        "train.dist_timeout_sec=60",
    ] {
        a.push("--set".into());
        a.push(s.into());
    }
    a
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn checkpoint_step(run: &Path) -> u64 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoint.json")).unwrap()).unwrap();
    state["step"].as_u64().unwrap()
}

#[test]
fn two_processes_under_torchrun_train_and_only_rank_0_writes() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards(dir.path());
    let run = dir.path().join("run");
    let torchrun = root().join(".venv/bin/torchrun");
    assert!(torchrun.exists(), "{} missing: run tools/setup.sh", torchrun.display());
    let port = free_port().to_string();
    let out = Command::new(&torchrun)
        .args(["--no-python", "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", &port, TRAIN])
        .args(train_args(&shards, &run))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "torchrun failed:\n{t}");
    // each rank trained 2 steps of its 8 images (global batch 16)
    assert_eq!(t.matches("trained 2 steps, 16 images").count(), 2, "{t}");
    assert!(t.contains("data parallel: weights broadcast from rank 0"), "{t}");
    assert_eq!(checkpoint_step(&run), 2);
    // metrics from rank 0 only: one line per step, not two
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
}

#[test]
fn two_processes_launched_by_hand_rank_1_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards(dir.path());
    let port = free_port().to_string();
    // different --out per rank, to see that rank 1 writes nothing (normally both get the same)
    let runs = [dir.path().join("run0"), dir.path().join("run1")];
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(TRAIN)
                .args(train_args(&shards, &runs[rank]))
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for (rank, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "rank {rank} failed:\n{}", text(o));
    }
    assert_eq!(checkpoint_step(&runs[0]), 2);
    assert!(runs[0].join("metrics.jsonl").exists() && runs[0].join("config.toml").exists());
    for f in ["checkpoint.json", "checkpoint.safetensors", "metrics.jsonl", "config.toml"] {
        assert!(!runs[1].join(f).exists(), "rank 1 wrote {f}");
    }
}

#[test]
fn sigterm_to_one_rank_stops_every_rank_at_the_same_step_with_143() {
    let dir = tempfile::tempdir().unwrap();
    let shards = shards(dir.path());
    let port = free_port().to_string();
    let run = dir.path().join("run");
    let mut args = train_args(&shards, &run);
    // many steps planned, so SIGTERM lands long before the end
    let at = args.iter().position(|a| a == "--max-steps").unwrap();
    args[at + 1] = "500".into();
    args.extend(["--set".into(), "train.epochs=100".into()]);
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(TRAIN)
                .args(&args)
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("OMP_NUM_THREADS", "1")
                .env_remove("TORCHELASTIC_USE_AGENT_STORE")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 3 {
        assert!(std::time::Instant::now() < deadline, "the ranks made no progress");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // the scheduler's signal reaches rank 1 only
    assert!(Command::new("kill").args(["-TERM", &children[1].id().to_string()]).status().unwrap().success());
    let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let steps: Vec<u64> = outs
        .iter()
        .enumerate()
        .map(|(rank, o)| {
            assert_eq!(o.status.code(), Some(143), "rank {rank}:\n{}", text(o));
            let t = String::from_utf8_lossy(&o.stdout).to_string();
            t.split("interrupted after ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("rank {rank}: no 'interrupted after N steps' in {t}"))
        })
        .collect();
    assert_eq!(steps[0], steps[1], "the ranks stopped at different steps");
    assert!(steps[0] >= 3 && steps[0] < 500, "{steps:?}");
    assert_eq!(checkpoint_step(&run), steps[0], "rank 0 saved the step every rank stopped at");
}
