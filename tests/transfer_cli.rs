//! Detection and segmentation transfer (issue 7) end to end:
//! - `dspnet-eval RUN --protocol detection,segmentation --random-init` on a run written through
//!   the trainer's own checkpoint code: exports width 0.5, runs the Python tool
//!   (`python -m dspnet_export.transfer`) for ONE training step and ONE evaluation on TWO real
//!   COCO128 photos per split, appends four records to results.json next to an existing kNN
//!   record; losses finite, metrics in [0, 1], pretrained and random runs really differ;
//! - the pure parts of the tool (`tests/python/transfer_check.py`) against hand-worked values:
//!   category-id mask -> class map, YOLO label -> pixel boxes, confusion matrix / mIoU, COCOeval
//!   on one box;
//! - bad input (missing folders, an export of the wrong format, a 1-channel export): one line
//!   `error: ...`, exit code 2.
//!
//! Needs `.venv` with torchvision, timm, pycocotools (tools/setup.sh) and ../shared/data/coco128:
//! skipped with a message when missing, failing when `CI` is set.

use dspnet_model::{Depth, Stem};
use dspnet_run::checkpoint::{self, CheckpointState};
use dspnet_run::layout::CONFIG;
use dspnet_run::RunConfig;
use dspnet_trainer::network::Branch;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tch::Device;

const EVAL: &str = env!("CARGO_BIN_EXE_dspnet-eval");
const EXPORT: &str = env!("CARGO_BIN_EXE_dspnet-export");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn coco128() -> PathBuf {
    root().join("../shared/data/coco128")
}

/// The venv's python with the transfer tool's packages and the COCO128 data; None (skip)
/// outside CI when missing.
fn python() -> Option<PathBuf> {
    let py = root().join(".venv/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('torchvision', 'timm', 'safetensors', 'pycocotools', 'yaml')))"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    let data = coco128().join("images/train2017").is_dir();
    if !ok || !data {
        assert!(std::env::var_os("CI").is_none(), "CI runs the transfer tests: tools/setup.sh installs .venv with torchvision/timm/pycocotools, and ../shared/data/coco128 must exist");
        eprintln!("skipping: {} with torchvision/timm/pycocotools or {} missing", py.display(), coco128().display());
        return None;
    }
    Some(py)
}

fn pythonpath() -> PathBuf {
    root().join("tools/python/dspnet_export")
}

/// `python -m dspnet_export.transfer ARGS` with this checkout's package.
fn tool(py: &Path, args: &[&str]) -> Output {
    Command::new(py)
        .args(["-m", "dspnet_export.transfer"])
        .args(args)
        .env("PYTHONPATH", pythonpath())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).env("OMP_NUM_THREADS", "1").output().expect("binary runs")
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + b.abs())
}

/// A run directory (config.toml + checkpoint of the online branch) written through the trainer's
/// own code, without data: a ResNet-18 with the ImageNet stem, base 16 channels, 3 input
/// channels (or `in_channels`), random weights from a fixed seed.
fn synthetic_run(dir: &Path, in_channels: i64) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/cifar10-small.toml")).unwrap();
    let mut cfg = RunConfig::from_toml_str(&text, "cifar10-small.toml").unwrap();
    cfg.model.depth = Depth::R18;
    cfg.model.stem = Stem::Imagenet;
    cfg.model.base_channels = 16;
    cfg.model.in_channels = in_channels;
    cfg.augment.channels = in_channels as u32;
    if in_channels == 1 {
        cfg.augment.mean = vec![0.5];
        cfg.augment.std = vec![0.25];
    }
    cfg.model.widths = vec![0.5, 1.0];
    cfg.heads.hidden = 16;
    cfg.heads.out_dim = 8;
    cfg.augment.image_size = 64;
    cfg.augment.eval_resize = 64;
    cfg.validate().unwrap();
    tch::set_num_threads(1);
    tch::manual_seed(11);
    let online = Branch::new(&cfg, Device::Cpu, true).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    dspnet_core::fs::write_atomic(&dir.join(CONFIG), cfg.to_toml().as_bytes()).unwrap();
    let tensors = checkpoint::prefixed(&online.vs, "online");
    let state =
        CheckpointState { epoch: 1, finished: true, version: "test".into(), ..CheckpointState::basic(3, 3, "fp32") };
    checkpoint::save(dir, &tensors, state).unwrap();
    dir.to_path_buf()
}

#[test]
fn detection_and_segmentation_one_step_on_two_coco128_photos() {
    let Some(_py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = synthetic_run(&tmp.path().join("run"), 3);
    // an earlier kNN record stays; the transfer records are appended
    let knn = json!([{"width": 0.5, "params": 1, "flops": 2, "protocol": "knn", "top1": 33.0, "init": "pretrained", "settings": {"k": 20}}]);
    std::fs::write(run_dir.join("results.json"), serde_json::to_vec_pretty(&knn).unwrap()).unwrap();
    let coco = coco128();
    let out = run(
        EVAL,
        &[
            run_dir.to_str().unwrap(),
            "--protocol",
            "detection,segmentation",
            "--widths",
            "0.5",
            "--random-init",
            "--coco",
            coco.to_str().unwrap(),
            "--transfer-preset",
            "cpu",
            "--transfer-arg=--max-train-images=2",
            "--transfer-arg=--max-val-images=2",
            "--transfer-arg=--max-steps=1",
            "--transfer-arg=--batch=2",
            "--transfer-arg=--min-size=128",
            "--transfer-arg=--max-size=192",
            "--transfer-arg=--threads=1",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dspnet-eval failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("detection (pretrained)") && stdout.contains("segmentation (random)"), "{stdout}");

    let model = json_file(&run_dir.join("export/w0_50/model.json"));
    let records = json_file(&run_dir.join("results.json"));
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 5, "{records:?}");
    assert_eq!(records[0], knn[0], "the earlier record is kept as it was");
    let mut first_loss = std::collections::HashMap::new();
    for r in &records[1..] {
        let (protocol, init) = (r["protocol"].as_str().unwrap(), r["init"].as_str().unwrap());
        assert_eq!(f(&r["width"]), 0.5);
        assert_eq!(r["params"], model["params"], "params of the exported width");
        assert_eq!(r["flops"], model["flops"]);
        let s = &r["settings"];
        assert_eq!(
            (s["train_images"].as_i64(), s["val_images"].as_i64(), s["steps"].as_i64()),
            (Some(2), Some(2), Some(1)),
            "{s}"
        );
        assert_eq!(
            (s["min_size"].as_i64(), s["batch"].as_i64(), s["preset"].as_str()),
            (Some(128), Some(2), Some("cpu"))
        );
        assert!(s["train"]["images"].as_str().unwrap().ends_with("images/train2017"), "{s}");
        let m = &r["metrics"];
        let keys: &[&str] =
            if protocol == "detection" { &["map", "map_50", "map_75", "mar_100"] } else { &["miou", "pixel_accuracy"] };
        for k in keys {
            let v = f(&m[*k]);
            assert!((0.0..=1.0).contains(&v), "{protocol} {init} {k} = {v}");
        }
        let headline = if protocol == "detection" { "map" } else { "miou" };
        assert!(close(f(&r["top1"]), 100.0 * f(&m[headline])), "top1 is the headline metric in percent: {r}");
        if protocol == "segmentation" {
            // scored at the two val masks' own resolution (COCO photos are at most 640 px a side)
            let px = r["counts"]["pixels"].as_i64().unwrap();
            assert!(px > 0 && px <= 2 * 640 * 640, "{r}");
        } else {
            // COCO128's first two val photos hold boxes; one step leaves 100 detections per image
            assert!(r["counts"]["val_boxes"].as_i64().unwrap() > 0, "{r}");
        }
        let loss = f(&r["losses"]["first"]);
        assert!(loss.is_finite() && loss > 0.0, "{r}");
        // the Python tool's full record: one loss per step
        let full = json_file(Path::new(r["record"].as_str().unwrap()));
        assert_eq!(full["losses"]["history"].as_array().unwrap().len(), 1);
        assert_eq!(
            full["backbone"].as_str().unwrap(),
            std::fs::canonicalize(run_dir.join("export/w0_50")).unwrap().to_str().unwrap()
        );
        first_loss.insert((protocol.to_string(), init.to_string()), loss);
    }
    for p in ["detection", "segmentation"] {
        let (a, b) = (
            first_loss[&(p.to_string(), "pretrained".to_string())],
            first_loss[&(p.to_string(), "random".to_string())],
        );
        assert!(a != b, "{p}: the exported weights must change the first loss ({a} vs {b})");
    }
}

#[test]
fn class_maps_boxes_and_metrics_match_hand_worked_values() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(&py)
        .arg(root().join("tests/python/transfer_check.py"))
        .arg(tmp.path())
        .arg(coco128())
        .env("PYTHONPATH", pythonpath())
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "transfer_check.py: {}", String::from_utf8_lossy(&out.stderr));
    let cases: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let case =
        |name: &str| cases.iter().find(|c| c["case"] == name).unwrap_or_else(|| panic!("no case {name}")).clone();

    // ids [1, 2, 17, 200] -> classes 1..4; 0 (unlabeled) -> background 0; 5 is not in the list
    let c = case("class_map");
    assert_eq!(c["ignore_label"], 255);
    assert_eq!(c["background"], json!([[0, 1, 2], [3, 4, 255]]));
    assert_eq!(c["ignore"], json!([[255, 1, 2], [3, 4, 255]]));
    assert_eq!(c["png"], c["background"]);

    // umask 022: 0666 & !0022 = 0644 (420), no temporary file left behind
    let c = case("write_atomic");
    assert_eq!(c["mode"], 0o644, "{c}");
    assert_eq!(c["text"], "{}\n");
    assert_eq!(c["others"], json!(["r.json"]));

    // COCO128's semantic config lists the 129 panoptic categories that occur in its masks
    // (133 panoptic categories less parking meter 14, cow 21, toaster 80, hair drier 89), ids
    // 1..200; the box config names 80 classes 0..79
    let c = case("class_lists");
    assert_eq!(c["seg_count"], 129);
    assert_eq!(c["seg_first"], json!([1, 2, 3]));
    assert_eq!(c["seg_last"], 200);
    assert_eq!(c["det_count"], 80);
    assert_eq!(c["det_first"], json!([0, 1]));

    // "3 0.5 0.5 0.5 0.25" on 640x480: x 320 +- 160, y 240 +- 60 -> [160, 180, 480, 300], label 4;
    // "0 0.05 0.1 0.2 0.2": x from -32 (clipped to 0) to 96, y from 0 to 96 -> label 1
    let c = case("yolo");
    assert_eq!(c["image_id"], 7);
    assert_eq!(c["size"], json!([640, 480]));
    assert_eq!(c["boxes"], json!([[160.0, 180.0, 480.0, 300.0], [0.0, 0.0, 96.0, 96.0]]));
    assert_eq!(c["labels"], json!([4, 1]));

    // targets [0 0 0 0 1 1 ignore], predictions [0 0 0 1 1 1 0]: confusion [[3, 1], [0, 2]];
    // IoU 3/4 and 2/3 -> mIoU 17/24; pixel accuracy 5/6; class accuracy (3/4 + 1)/2
    let c = case("seg_metrics");
    assert_eq!(c["confusion"], json!([[3, 1], [0, 2]]));
    assert!(close(f(&c["miou"]), 17.0 / 24.0), "{c}");
    assert!(close(f(&c["pixel_accuracy"]), 5.0 / 6.0), "{c}");
    assert!(close(f(&c["mean_class_accuracy"]), 0.875), "{c}");
    assert_eq!(c["pixels"], 6);

    // one 100x100 box: a perfect detection has AP 1 at every IoU threshold; IoU 0.62 passes
    // 0.50, 0.55, 0.60 of the ten thresholds -> mAP 0.3, AP50 1, AP75 0; a wrong class and no
    // detection score 0; the box is "large" (area 10000 > 96^2), so map_small is undefined
    let c = case("coco_eval");
    assert!(close(f(&c["perfect"]["map"]), 1.0) && close(f(&c["perfect"]["map_large"]), 1.0), "{c}");
    assert!(c["perfect"]["map_small"].is_null(), "{c}");
    assert!(close(f(&c["shifted"]["map"]), 0.3), "{c}");
    assert!(close(f(&c["shifted"]["map_50"]), 1.0) && close(f(&c["shifted"]["map_75"]), 0.0), "{c}");
    assert_eq!(f(&c["wrong_class"]["map"]), 0.0);
    assert_eq!(f(&c["none"]["map"]), 0.0);
    assert!(c["none"]["map_small"].is_null(), "{c}");
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("Traceback") && !stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_transfer_input_is_one_line_and_exit_2() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    let coco = coco128();
    let c = coco.to_str().unwrap();
    // missing backbone folder
    let missing = base.join("nope");
    let m = missing.to_str().unwrap();
    assert_one_line_error(&tool(&py, &["detect", "--backbone", m, "--coco", c]), "--backbone");
    // a folder without model.json, and one of another format
    let empty = base.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_one_line_error(
        &tool(&py, &["segment", "--backbone", empty.to_str().unwrap(), "--coco", c]),
        "model.json missing",
    );
    let other = base.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("model.json"), br#"{"format": "somebody-else/3"}"#).unwrap();
    assert_one_line_error(
        &tool(&py, &["detect", "--backbone", other.to_str().unwrap(), "--coco", c]),
        "somebody-else/3",
    );
    // a 1-channel export cannot take COCO photos
    let gray = synthetic_run(&base.join("gray"), 1);
    let exported = run(EXPORT, &[gray.to_str().unwrap(), "--width", "0.5", "--out", base.join("gx").to_str().unwrap()]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let gx = base.join("gx/w0_50");
    assert_one_line_error(&tool(&py, &["detect", "--backbone", gx.to_str().unwrap(), "--coco", c]), "3-channel");
    // missing dataset folder
    assert_one_line_error(&tool(&py, &["detect", "--backbone", gx.to_str().unwrap(), "--coco", m]), "--coco");
    // an unknown option (argparse) is one line too
    assert_one_line_error(&tool(&py, &["detect", "--backbone", gx.to_str().unwrap(), "--bogus"]), "--bogus");

    // through dspnet-eval: missing --coco folder, unknown protocol
    let g = gray.to_str().unwrap();
    assert_one_line_error(&run(EVAL, &[g, "--protocol", "detection", "--coco", m]), "--coco");
    assert_one_line_error(&run(EVAL, &[g, "--protocol", "detektion"]), "detection, segmentation");
    // knn without shards
    assert_one_line_error(&run(EVAL, &[g, "--protocol", "knn"]), "--train-shards");
    // the 1-channel run: the tool's own line comes through
    assert_one_line_error(&run(EVAL, &[g, "--protocol", "segmentation", "--widths", "0.5", "--coco", c]), "3-channel");
}

/// The Python children of process `pid` (from /proc/PID/task/*/children).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// True while process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
        .unwrap_or(false)
}

#[test]
fn sigterm_to_dspnet_eval_stops_its_python_child() {
    let Some(_py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = synthetic_run(&tmp.path().join("run"), 3);
    let coco = coco128();
    // a fine-tuning long enough to be interrupted (the cpu preset on every photo)
    let mut child = Command::new(EVAL)
        .args([run_dir.to_str().unwrap(), "--protocol", "detection", "--widths", "0.5", "--coco"])
        .arg(&coco)
        .args(["--transfer-preset", "cpu", "--transfer-arg=--threads=1"])
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let python = loop {
        if let Some(&p) = children_of(child.id()).first() {
            break p;
        }
        assert!(child.try_wait().unwrap().is_none(), "dspnet-eval ended before it started the Python tool");
        assert!(std::time::Instant::now() < deadline, "no Python child after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // let the tool get going, then the scheduler's SIGTERM reaches dspnet-eval alone
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(alive(python), "the Python tool ended on its own");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive(python) {
        assert!(std::time::Instant::now() < deadline, "the Python tool {python} outlived dspnet-eval");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
