//! TensorBoard event files and training curves, end to end: a run on real CIFAR-10 photos,
//! killed (SIGKILL) after its checkpoint and some later steps and then resumed, read back by
//! TensorBoard's own reader (`tests/python/tensorboard_check.py` with `.venv/bin/python`): the
//! same tags, steps and values as `metrics.jsonl`, each step once; kNN monitor records as
//! `knn/w*` scalars; the curves as PNGs. The tags expected from a record are spelled out here,
//! apart from the writer's mapping. Skipped (with a message) when the venv or `tensorboard` is
//! missing, except under CI.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");
const TRAIN: &str = env!("CARGO_BIN_EXE_dspnet-stream-train");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Option<PathBuf> {
    let py = root().join(".venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import tensorboard.backend.event_processing.event_accumulator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI runs the TensorBoard cross-check: tools/setup.sh installs it");
        eprintln!("skipping: {} cannot import tensorboard (bash tools/setup.sh installs it)", py.display());
        return None;
    }
    Some(py)
}

/// What TensorBoard's reader makes of the run directory (see tensorboard_check.py).
fn tensorboard(py: &Path, run: &Path) -> Value {
    let out = Command::new(py).arg(root().join("tests/python/tensorboard_check.py")).arg(run).output().unwrap();
    assert!(out.status.success(), "tensorboard_check.py: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The scalars a record should show in TensorBoard, tag by tag (written out independently of
/// `dspnet_run::metrics::scalars`).
fn expected(records: &[Value]) -> BTreeMap<String, Vec<(u64, f64)>> {
    let mut want: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for r in records {
        let step = r["step"].as_u64().unwrap();
        let mut put = |tag: String, v: &Value| {
            if let Some(v) = v.as_f64() {
                want.entry(tag).or_default().push((step, v));
            }
        };
        for key in ["lr", "ema_tau", "images_per_sec", "data_wait_fraction", "skipped_nonfinite"] {
            put(key.to_string(), &r[key]);
        }
        for item in r["loss"].as_array().into_iter().flatten() {
            put(format!("loss/w{:.2}", item["width"].as_f64().unwrap()), &item["loss"]);
        }
        for item in r["feature_std"].as_array().into_iter().flatten() {
            put(format!("feature_std/w{:.2}", item["width"].as_f64().unwrap()), &item["std"]);
        }
        if r["monitor"]["protocol"] == "knn" {
            for item in r["monitor"]["top1"].as_array().unwrap() {
                put(format!("knn/w{:.2}", item["width"].as_f64().unwrap()), &item["top1"]);
            }
        }
    }
    want
}

/// TensorBoard shows exactly the scalars of `records`: the same tags, each step once, the
/// values to f32 precision.
fn assert_mirrors(tb: &Value, records: &[Value]) {
    let want = expected(records);
    let got: BTreeMap<String, Vec<(u64, f64)>> = tb["scalars"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(tag, pts)| {
            let pts = pts.as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()));
            (tag.clone(), pts.collect())
        })
        .collect();
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (tag, w) in &want {
        let g = &got[tag];
        let steps = |v: &[(u64, f64)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(steps(g), steps(w), "{tag}: the steps TensorBoard shows");
        for ((step, gv), (_, wv)) in g.iter().zip(w) {
            assert_eq!(*gv, *wv as f32 as f64, "{tag} at step {step}");
        }
    }
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

/// Shards of the first `n` training photos of airplane, cat and ship in `base/train`.
fn shards(base: &Path, n: usize) -> String {
    let cifar = root().join("../shared/data/cifar10-jpg/train");
    let src = base.join("src");
    for c in ["airplane", "cat", "ship"] {
        std::fs::create_dir_all(src.join(c)).unwrap();
        for i in 0..n {
            let name = format!("{i:04}.jpg");
            std::os::unix::fs::symlink(cifar.join(c).join(&name), src.join(c).join(&name)).unwrap();
        }
    }
    assert!(cifar.exists(), "{} missing: the real photos live in ../shared/data beside the checkout", cifar.display());
    let out = base.join("train");
    let o = Command::new(SHARD)
        .args(["--input", src.to_str().unwrap(), "--output", out.to_str().unwrap(), "--samples-per-shard", "32"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out.to_str().unwrap().to_string()
}

fn checkpoint_step(run: &Path) -> Option<u64> {
    let b = std::fs::read(run.join("checkpoint.json")).ok()?;
    serde_json::from_slice::<Value>(&b).ok()?["step"].as_u64()
}

#[test]
fn a_killed_and_resumed_run_shows_in_tensorboard_as_its_metrics_each_step_once() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 32); // 96 photos: 12 steps of 8 per epoch
    let sets: Vec<String> = [
        &support::TINY_MODEL[..],
        &[
            "model.base_channels=8",
            "loader.batch_size=8",
            "train.threads=1",
            "train.epochs=2",
            "train.log_every=1",
            "train.checkpoint_every=4",
        ],
    ]
    .concat()
    .iter()
    .flat_map(|s| ["--set".to_string(), s.to_string()])
    .collect();
    let run = dir.path().join("run");
    let mut child = Command::new(TRAIN)
        .args(["--config", root().join("configs/cifar10-small.toml").to_str().unwrap()])
        .args(["--shards", &train_shards, "--out", run.to_str().unwrap(), "--quiet"])
        .args(&sets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL once step 5 is logged past the checkpoint of step 4 (the next comes at step 8)
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lines = std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
        if checkpoint_step(&run) == Some(4) && lines >= 5 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(checkpoint_step(&run), Some(4), "the kill must land before the checkpoint of step 8");
    let killed = dspnet_run::metrics::read(&run).unwrap();
    assert!(killed.len() >= 5, "steps past the checkpoint were logged before the kill");

    let out = Command::new(TRAIN).args(["--resume", run.to_str().unwrap(), "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = dspnet_run::metrics::read(&run).unwrap();
    assert_eq!(records.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=24).collect::<Vec<_>>());

    let tb = tensorboard(&py, &run);
    // one event file per invocation, each opened with its version; the killed one holds the
    // steps after its checkpoint that the resumed one logged again, and the resumed one starts
    // a session one step after the checkpoint
    let files = tb["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f["version"] == "brain.Event:2"), "{files:?}");
    let steps = |f: &Value| f["steps"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect::<Vec<_>>();
    let first = steps(&files[0]);
    assert_eq!(first[..5], [1, 2, 3, 4, 5], "{first:?}");
    assert_eq!(steps(&files[1]), (5..=24).collect::<Vec<_>>());
    assert_eq!(files[0]["starts"], json!([0]));
    assert_eq!(files[1]["starts"], json!([5]));
    // TensorBoard shows the resumed metrics.jsonl: every tag, each step once, the new values
    // (images_per_sec of step 5 differs between the killed and the resumed invocation)
    assert_mirrors(&tb, &records);
    assert!(tb["scalars"]["loss/w0.25"].as_array().is_some_and(|v| v.len() == 24));

    // the curves: loss per width; no kNN chart without monitor records
    assert!(is_png(&run.join("curves_loss.png")), "curves_loss.png");
    assert!(!run.join("curves_knn.png").exists());
}

#[test]
fn monitor_and_skipped_records_become_scalars_and_the_knn_chart() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let trained = |step: u64, loss: f64| {
        json!({"step": step, "epoch": 0, "lr": 0.1 * step as f64, "ema_tau": 0.99,
            "loss": [{"width": 1.0, "loss": loss}, {"width": 0.25, "loss": loss + 0.3}],
            "feature_std": [{"width": 1.0, "std": 0.12}, {"width": 0.25, "std": 0.1}],
            "images_per_sec": 1000.0 / 3.0, "data_wait_fraction": 0.01, "skipped_nonfinite": 0, "elapsed_sec": 1.0})
    };
    let monitor = |step: u64, top1: [f64; 2]| {
        json!({"step": step, "epoch": 0, "monitor": {"protocol": "knn", "k": 200, "t": 0.1, "bank_images": 2000,
            "test_images": 1000, "seconds": 3.2,
            "top1": [{"width": 1.0, "top1": top1[0]}, {"width": 0.25, "top1": top1[1]}]}})
    };
    let records = vec![
        trained(60, 3.5),
        monitor(60, [20.5, 18.25]),
        json!({"step": 61, "epoch": 0, "skipped_nonfinite": 1, "skip_reason": "non-finite loss at width 1 in step 61"}),
        trained(120, 2.75),
        monitor(120, [35.2, 30.1]),
    ];
    let mut log = dspnet_run::metrics::MetricsLog::open(run).unwrap();
    for r in &records {
        log.append(r).unwrap();
    }
    log.close().unwrap();
    let tb = tensorboard(&py, run);
    assert_mirrors(&tb, &records);
    assert_eq!(tb["scalars"]["knn/w0.25"], json!([[60, 18.25], [120, 30.100000381469727]]));
    assert_eq!(tb["scalars"]["skipped_nonfinite"], json!([[60, 0.0], [61, 1.0], [120, 0.0]]));

    if !Path::new(dspnet_core::plot::FONT).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI draws the curves: tools/setup.sh installs the font");
        return;
    }
    let drawn = dspnet_run::curves::write(run).unwrap();
    assert_eq!(drawn, vec![run.join("curves_loss.png"), run.join("curves_knn.png")]);
    assert!(drawn.iter().all(|p| is_png(p)));
}
