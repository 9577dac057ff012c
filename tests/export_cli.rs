//! `dspnet-export` end to end, checked against timm / onnxruntime / torchvision in the venv
//! (`tests/python/deploy_check.py`, with PYTHONPATH set to this checkout's
//! `tools/python/dspnet_export`):
//! - every architecture (r18, r34, r50) x stem (imagenet, small) x width (0.25, 0.5, 0.75, 1.0):
//!   runs written through the trainer's own checkpoint code with non-trivial BN statistics,
//!   exported with `--reference`, loaded in timm: pooled features and every stage map within
//!   1e-5 of the Rust network; the model.json snippet (timm + torch only) likewise; params and
//!   conv MACs counted by PyTorch equal model.json's; ONNX via onnxruntime within 1e-4 of torch
//!   (width 0.5 of ResNet-50 / ImageNet stem and ResNet-34 / small stem);
//! - a real run (CIFAR-10 photos, 2 DSPNet steps, dspnet-eval) exported: model.json carries its
//!   results, step and checkpoint sha256;
//! - a torchvision Faster R-CNN with FPN on an exported ResNet-18 (ImageNet stem) on a COCO128
//!   photo;
//! - bad input: one line `error: ...`, exit code 2.

use dspnet_model::{Depth, Stem};
use dspnet_run::checkpoint::{self, CheckpointState};
use dspnet_run::layout::CONFIG;
use dspnet_run::RunConfig;
use dspnet_trainer::network::Branch;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

const EXPORT: &str = env!("CARGO_BIN_EXE_dspnet-export");
const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");
const TRAIN: &str = env!("CARGO_BIN_EXE_dspnet-stream-train");
const EVAL: &str = env!("CARGO_BIN_EXE_dspnet-eval");
const WIDTHS: [f64; 4] = [0.25, 0.5, 0.75, 1.0];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a binary with one intra-op thread (the networks here are tiny; on a busy 2-core
/// machine a second libtorch thread mostly spins).
fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).env("OMP_NUM_THREADS", "1").output().expect("binary runs")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The venv's python with timm, onnx and onnxruntime; None (skip) outside CI when missing.
fn python() -> Option<PathBuf> {
    let py = root().join(".venv/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ('timm', 'onnx', 'onnxruntime', 'torchvision', 'safetensors')))"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the Python checks: tools/setup.sh installs .venv with timm/onnx/onnxruntime"
        );
        eprintln!("skipping: {} with timm, onnx, onnxruntime missing", py.display());
        return None;
    }
    Some(py)
}

/// Runs tests/python/deploy_check.py and returns its JSON lines.
fn py_check(py: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(py)
        .arg(root().join("tests/python/deploy_check.py"))
        .env("OMP_NUM_THREADS", "1")
        .args(args)
        .env("PYTHONPATH", root().join("tools/python/dspnet_export"))
        .output()
        .unwrap();
    assert!(out.status.success(), "deploy_check.py {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A run directory written through the trainer's own code (config.toml + checkpoint::save of the
/// online branch) without data: random-init weights, then BN statistics made
/// non-trivial (4 train-mode forwards of random images at every width move the running
/// statistics; BN affine drawn from U(0.5, 1.5) / U(-0.2, 0.2)).
fn synthetic_run(
    dir: &Path,
    depth: Depth,
    stem: Stem,
    base: i64,
    image: u32,
    train_widths: Option<Vec<f64>>,
) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/cifar10-small.toml")).unwrap();
    let mut cfg = RunConfig::from_toml_str(&text, "cifar10-small.toml").unwrap();
    cfg.model.depth = depth;
    cfg.model.stem = stem;
    cfg.model.base_channels = base;
    cfg.model.widths = WIDTHS.to_vec();
    cfg.method.train_widths = train_widths;
    cfg.heads.hidden = 16;
    cfg.heads.out_dim = 8;
    cfg.augment.image_size = image;
    cfg.augment.eval_resize = image;
    cfg.validate().unwrap();
    tch::set_num_threads(1);
    tch::manual_seed(depth.layers() as i64 + base);
    let online = Branch::new(&cfg, Device::Cpu, true).unwrap();
    tch::no_grad(|| {
        let x = Tensor::randn([4, 3, image as i64, image as i64], (Kind::Float, Device::Cpu)) * 1.5 + 0.3;
        for w in WIDTHS {
            for _ in 0..4 {
                let _ = online.backbone.forward_t(&x, w, true).unwrap();
            }
        }
        for (name, mut t) in online.vs.variables() {
            if name.starts_with("backbone.") && t.dim() == 1 {
                let n = t.size()[0];
                let u = Tensor::rand([n], (Kind::Float, Device::Cpu));
                if name.ends_with(".weight") {
                    t.copy_(&(u + 0.5));
                } else if name.ends_with(".bias") {
                    t.copy_(&(u * 0.4 - 0.2));
                }
            }
        }
    });
    let run_dir = dir.to_path_buf();
    std::fs::create_dir_all(&run_dir).unwrap();
    dspnet_core::fs::write_atomic(&run_dir.join(CONFIG), cfg.to_toml().as_bytes()).unwrap();
    // the online network only (what dspnet-export reads); real runs also hold teacher.* and optim.*
    let tensors = checkpoint::prefixed(&online.vs, "online");
    let state =
        CheckpointState { epoch: 1, finished: true, version: "test".into(), ..CheckpointState::basic(7, 7, "fp32") };
    checkpoint::save(&run_dir, &tensors, state).unwrap();
    run_dir
}

fn export(run_dir: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![run_dir.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&run(EXPORT, &args))
}

fn tag(w: f64) -> String {
    format!("w{:.2}", w).replace('.', "_")
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn every_arch_stem_and_width_matches_timm_and_onnx() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // ImageNet stem at 64 px (strides 4..32, 2x2 layer4); ResNet-18 at base 64 so that width 1.0
    // is timm's own 64-wide stem (create_model alone), the others at base 16 to stay fast.
    // Small stem at 32 px (strides 1..8), base 16.
    let cases = [
        (Depth::R18, Stem::Imagenet, 64, 64),
        (Depth::R34, Stem::Imagenet, 16, 64),
        (Depth::R50, Stem::Imagenet, 16, 64),
        (Depth::R18, Stem::Small, 16, 32),
        (Depth::R34, Stem::Small, 16, 32),
        (Depth::R50, Stem::Small, 16, 32),
    ];
    let mut dirs = Vec::new();
    let mut onnx_dirs = Vec::new();
    let t0 = std::time::Instant::now();
    for (depth, stem, base, image) in cases {
        let name = format!("{depth}-{stem:?}").to_lowercase();
        let run_dir = synthetic_run(&tmp.path().join(format!("run-{name}")), depth, stem, base, image, None);
        eprintln!("{name}: run written at {:.1} s", t0.elapsed().as_secs_f64());
        let out = tmp.path().join(format!("export-{name}"));
        let table = export(&run_dir, &out, &["--all", "--reference"]);
        eprintln!("{name}: exported at {:.1} s", t0.elapsed().as_secs_f64());
        assert_eq!(table.lines().count(), 5, "header + 4 widths: {table}");
        for w in WIDTHS {
            let d = out.join(tag(w));
            let meta = json(&d.join("model.json"));
            let t = &meta["architecture"]["timm"];
            let b = base as f64;
            let e = if depth == Depth::R50 { 4 } else { 1 };
            // channels worked out by hand: round(b * 2^i * w), outputs x expansion
            let want: Vec<i64> = (0..4).map(|i| (b * (1 << i) as f64 * w).round() as i64).collect();
            let got: Vec<i64> = t["channels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(got, want, "{name} {w}");
            assert_eq!(t["stem_width"].as_i64().unwrap(), (b * w).round() as i64);
            assert_eq!(t["feature_dim"].as_i64().unwrap(), want[3] * e);
            assert_eq!(t["model_name"], format!("resnet{}", depth.layers()));
            assert_eq!(t["timm_native"].as_bool().unwrap(), stem == Stem::Imagenet && (b * w).round() as i64 == 64);
            let snippet = meta["architecture"]["timm_snippet"].as_str().unwrap();
            assert!(!snippet.contains("dspnet"), "{snippet}");
            if t["timm_native"].as_bool().unwrap() {
                // timm builds it alone: create_model + load, nothing swapped
                assert!(!snippet.contains("model.conv1") && !snippet.contains("model.layer1"), "{snippet}");
            }
            assert_eq!(meta["input"]["size"], serde_json::json!([image, image]));
            assert_eq!(meta["stem"]["type"], format!("{stem:?}").to_lowercase());
            assert_eq!(meta["source"]["step"], 7);
            assert_eq!(
                meta["source"]["sha256"],
                json(&run_dir.join("checkpoint.json"))["weights_sha256"],
                "model.json names the checkpoint it came from"
            );
            assert!(meta["code_version"].as_str().unwrap().starts_with("dspnet-deploy 0.1.0"));
            dirs.push((depth, stem, w, d.clone(), meta));
        }
        if matches!((depth, stem), (Depth::R50, Stem::Imagenet) | (Depth::R34, Stem::Small)) {
            onnx_dirs.push(out.join(tag(0.5)));
        }
    }
    // one Python process: the timm checks of every folder, then ONNX (to keep the test fast, one
    // architecture per stem and block type: width 0.5 of ResNet-50 with the ImageNet stem and of
    // ResNet-34 with the small stem)
    let onnx_out = tmp.path().join("onnx");
    std::fs::create_dir_all(&onnx_out).unwrap();
    let args: Vec<String> = dirs.iter().map(|x| x.3.display().to_string()).collect();
    let onnx_args: Vec<String> = onnx_dirs.iter().map(|d| d.display().to_string()).collect();
    let mut argv = vec!["equiv"];
    argv.extend(args.iter().map(String::as_str));
    argv.extend(["--", "onnx", onnx_out.to_str().unwrap()]);
    argv.extend(onnx_args.iter().map(String::as_str));
    let mut results = py_check(&py, &argv);
    eprintln!("Python checks done at {:.1} s", t0.elapsed().as_secs_f64());
    let onnx = results.split_off(dirs.len());
    assert_eq!(results.len(), dirs.len());
    for ((depth, stem, w, _, meta), r) in dirs.iter().zip(&results) {
        let what = format!("{depth} {stem:?} width {w}");
        assert!(f(&r["pooled"]) <= 1e-5, "{what}: pooled differs by {}", r["pooled"]);
        for (i, d) in r["layers"].as_array().unwrap().iter().enumerate() {
            assert!(f(d) <= 1e-5, "{what}: layer{} differs by {d}", i + 1);
        }
        assert!(f(&r["snippet_pooled"]) <= 1e-5, "{what}: the model.json snippet differs by {}", r["snippet_pooled"]);
        assert_eq!(r["snippet_is_timm_resnet"], true, "{what}");
        // the check can fail: with PyTorch's initial BN statistics the outputs differ clearly
        assert!(
            f(&r["default_bn_pooled"]) > 1e-3,
            "{what}: BN statistics too close to 0/1: {}",
            r["default_bn_pooled"]
        );
        // PyTorch's own counts (parameters; Conv2d MACs by forward hooks) equal the Rust ones
        assert_eq!(r["params"], meta["params"], "{what}");
        assert_eq!(r["macs"], meta["flops"], "{what}");
        let strides: Vec<i64> = if *stem == Stem::Imagenet { vec![4, 8, 16, 32] } else { vec![1, 2, 4, 8] };
        assert_eq!(r["feature_reductions"], serde_json::json!(strides), "{what}");
        assert_eq!(r["feature_channels"], meta["architecture"]["timm"]["stage_channels"], "{what}");
        let size = meta["input"]["size"][0].as_i64().unwrap();
        for (i, s) in r["feature_shapes"].as_array().unwrap().iter().enumerate() {
            assert_eq!(s[2].as_i64().unwrap(), size / strides[i], "{what}: layer{} size", i + 1);
        }
        assert_eq!(r["eval_mode"], true);
    }
    assert_eq!(onnx.len(), 2);
    for r in &onnx {
        assert!(f(&r["max_abs_diff"]) <= 1e-4, "ONNX differs: {r}");
        assert_eq!(r["opset"], serde_json::json!([17]));
    }
}

/// Shards 3 CIFAR-10 classes (32 train / 16 test photos each), trains a base-4 ResNet-18 for 2
/// DSPNet steps and evaluates it (kNN); returns the run directory.
fn real_run(dir: &Path) -> PathBuf {
    let cifar = root().join("../shared/data/cifar10-jpg");
    for (split, n) in [("train", 32), ("test", 16)] {
        for c in ["airplane", "cat", "ship"] {
            let d = dir.join(format!("src-{split}")).join(c);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let name = format!("{i:04}.jpg");
                std::fs::copy(cifar.join(split).join(c).join(&name), d.join(&name))
                    .unwrap_or_else(|e| panic!("{}: {e} (the real photos live in ../shared/data)", cifar.display()));
            }
        }
        let src = dir.join(format!("src-{split}"));
        ok(&run(
            SHARD,
            &["--input", src.to_str().unwrap(), "--output", dir.join(split).to_str().unwrap(), "--split", split],
        ));
    }
    let run_dir = dir.join("run");
    let config = root().join("configs/cifar10-small.toml");
    let mut args: Vec<String> = [
        "--config",
        config.to_str().unwrap(),
        "--shards",
        dir.join("train").to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--quiet",
        "--max-steps",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for s in dspnet_run::testing::TINY_SETS.iter().copied().chain(["eval.batch_size=48"]) {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    ok(&run(TRAIN, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    let (train, test) = (dir.join("train"), dir.join("test"));
    ok(&run(
        EVAL,
        &[
            run_dir.to_str().unwrap(),
            "--train-shards",
            train.to_str().unwrap(),
            "--test-shards",
            test.to_str().unwrap(),
            "--protocol",
            "knn",
        ],
    ));
    run_dir
}

#[test]
fn export_of_a_trained_and_evaluated_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = real_run(tmp.path());
    let out = tmp.path().join("export");
    export(&run_dir, &out, &["--width", "0.5", "--reference"]);
    let d = out.join("w0_50");
    let meta = json(&d.join("model.json"));
    let results = json(&run_dir.join("results.json"));
    let want = results
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["width"] == 0.5 && r["protocol"] == "knn" && r["init"] == "pretrained")
        .expect("dspnet-eval wrote a kNN record for width 0.5");
    let got = &meta["eval_results"];
    assert_eq!(got.as_array().unwrap().len(), 1, "{got}");
    assert_eq!(got[0]["protocol"], "knn");
    assert_eq!(got[0]["top1"], want["top1"]);
    assert_eq!(got[0]["settings"]["k"], want["settings"]["k"]);
    assert_eq!(meta["params"], want["params"]);
    assert_eq!(meta["flops"], want["flops"]);
    let state = json(&run_dir.join("checkpoint.json"));
    assert_eq!(meta["source"]["step"], 2);
    assert_eq!(meta["source"]["sha256"], state["weights_sha256"]);
    assert_eq!(meta["input"]["mean"], serde_json::json!([0.4914, 0.4822, 0.4465]));
    assert_eq!(meta["input"]["std"], serde_json::json!([0.247, 0.2435, 0.2616]));
    // only the requested width; every file named in model.json has its sha256
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, vec!["w0_50".to_string()]);
    for (file, rec) in meta["files"].as_object().unwrap() {
        let bytes = std::fs::read(d.join(file)).unwrap();
        let sha: String = sha256_hex(&bytes);
        assert_eq!(rec["sha256"].as_str().unwrap(), sha, "{file}");
    }
    let mut entries: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, vec!["model.json", "model.safetensors", "reference.safetensors"], "no temporary files left");
    // the exported weights are the online backbone's width-0.5 slice, read back independently
    let ckpt: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(run_dir.join("checkpoint.safetensors")).unwrap().into_iter().collect();
    let exported: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(d.join("model.safetensors")).unwrap().into_iter().collect();
    let full = &ckpt["online.backbone.layer2.0.conv1.weight"]; // [8, 4, 3, 3] at base 4
    assert!(exported["layer2.0.conv1.weight"].equal(&full.narrow(0, 0, 4).narrow(1, 0, 2)));
    assert!(exported["layer3.1.bn2.running_var"].equal(&ckpt["online.backbone.layer3.1.bn2.w0_50.running_var"]));
    assert!(!exported.keys().any(|k| k.contains("w0_") || k.starts_with("fc")));
    // re-export without --reference removes the stale reference
    export(&run_dir, &out, &["--width", "0.5"]);
    assert!(!d.join("reference.safetensors").exists());
    if let Some(py) = python() {
        export(&run_dir, &out, &["--width", "0.5", "--reference"]);
        let r = py_check(&py, &["equiv", d.to_str().unwrap(), "--", "corrupt", d.to_str().unwrap()]);
        assert!(f(&r[0]["pooled"]) <= 1e-5, "{}", r[0]);
        assert!(r[0]["layers"].as_array().unwrap().iter().all(|d| f(d) <= 1e-5), "{}", r[0]);
        // a corrupted model.safetensors is refused by load_subnet (sha256 from model.json)
        assert_eq!(r[1]["refused"], true, "{}", r[1]);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn faster_rcnn_with_fpn_on_an_exported_resnet18() {
    let Some(py) = python() else { return };
    let photo = root().join("../shared/data/coco128/images/val2017/000000000139.jpg");
    assert!(photo.exists(), "{} missing: the real photos live in ../shared/data", photo.display());
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = synthetic_run(&tmp.path().join("run"), Depth::R18, Stem::Imagenet, 64, 64, None);
    let out = tmp.path().join("export");
    export(&run_dir, &out, &["--width", "0.5"]);
    let r = &py_check(&py, &["detect", out.join("w0_50").to_str().unwrap(), photo.to_str().unwrap()])[0];
    // FPN inputs: layer1..4 of ResNet-18 at 0.5x = 32/64/128/256 channels at strides 4..32
    assert_eq!(r["body_channels"], serde_json::json!([32, 64, 128, 256]));
    assert_eq!(r["body_reductions"], serde_json::json!([4, 8, 16, 32]));
    let batch = r["batch_shape"].as_array().unwrap();
    let (bh, bw) = (batch[2].as_i64().unwrap(), batch[3].as_i64().unwrap());
    assert_eq!((bh % 32, bw % 32), (0, 0), "the transform pads to a multiple of 32");
    for (i, key) in ["0", "1", "2", "3"].iter().enumerate() {
        let s = 4 << i;
        assert_eq!(r["fpn"][key], serde_json::json!([1, 256, bh / s, bw / s]), "FPN level {key}");
    }
    // LastLevelMaxPool: kernel 1, stride 2 on level 3 -> ceil(size / 2)
    assert_eq!(r["fpn"]["pool"], serde_json::json!([1, 256, (bh / 32 + 1) / 2, (bw / 32 + 1) / 2]));
    // detections: [N, 4] boxes inside the photo, scores in [0, 1], one label per box
    let img = r["image_shape"].as_array().unwrap();
    let (h, w) = (img[1].as_f64().unwrap(), img[2].as_f64().unwrap());
    let n = r["boxes_shape"][0].as_i64().unwrap();
    assert!(n > 0, "box_score_thresh=0 keeps detections: {r}");
    assert_eq!(r["boxes_shape"][1], 4);
    assert_eq!(r["scores_shape"], serde_json::json!([n]));
    assert_eq!(r["labels_shape"], serde_json::json!([n]));
    assert!(f(&r["boxes_min"]) >= 0.0 && f(&r["boxes_max_x"]) <= w && f(&r["boxes_max_y"]) <= h, "{r}");
    assert_eq!(r["boxes_ordered"], true);
    assert!(f(&r["scores_min"]) >= 0.0 && f(&r["scores_max"]) <= 1.0, "{r}");
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn bad_export_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    // trains 0.5 and 1.0 of the widths [0.25, 0.5, 0.75, 1.0]
    let r18 = synthetic_run(&base.join("r18"), Depth::R18, Stem::Small, 4, 16, Some(vec![0.5, 1.0]));
    let r34 = synthetic_run(&base.join("r34"), Depth::R34, Stem::Small, 4, 16, None);
    let out = base.join("out");
    let o = out.to_str().unwrap();
    let r = r18.to_str().unwrap();
    // widths the run did not train: in the model's list but not trained, and not in the list
    assert_one_line_error(&run(EXPORT, &[r, "--width", "0.25", "--out", o]), "did not train width 0.25");
    assert_one_line_error(&run(EXPORT, &[r, "--width", "0.3", "--out", o]), "did not train width 0.3");
    // --all exports exactly the trained widths
    export(&r18, &out, &["--all"]);
    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["w0_50", "w1_00"]);
    // neither --width nor --all (clap's usage error is exit code 2 too)
    let e = run(EXPORT, &[r, "--out", o]);
    assert_eq!(e.status.code(), Some(2));
    // missing run directory / not a run directory
    let missing = base.join("nope");
    assert_one_line_error(&run(EXPORT, &[missing.to_str().unwrap(), "--all", "--out", o]), "does not exist");
    assert_one_line_error(&run(EXPORT, &[base.to_str().unwrap(), "--all", "--out", o]), "not a dspnet run directory");
    // unwritable --out: a path below a regular file
    let file = base.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad_out = file.join("sub");
    assert_one_line_error(&run(EXPORT, &[r, "--all", "--out", bad_out.to_str().unwrap()]), "--out");
    // checkpoint of another architecture: config says r34, weights are r18 (missing tensors),
    // and config says r18, weights are r34 (r18's names are a subset of r34's: extra tensors),
    // and a base-channel mismatch (shapes)
    let swap = |cfg_from: &Path, weights_from: &Path, name: &str| -> PathBuf {
        let d = base.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f_ in ["checkpoint.safetensors", "checkpoint.json"] {
            std::fs::copy(weights_from.join(f_), d.join(f_)).unwrap();
        }
        std::fs::copy(cfg_from.join("config.toml"), d.join("config.toml")).unwrap();
        d
    };
    let a = swap(&r34, &r18, "r34cfg-r18ckpt");
    assert_one_line_error(&run(EXPORT, &[a.to_str().unwrap(), "--all", "--out", o]), "another architecture");
    let b = swap(&r18, &r34, "r18cfg-r34ckpt");
    assert_one_line_error(&run(EXPORT, &[b.to_str().unwrap(), "--all", "--out", o]), "another architecture");
    let c = swap(&r18, &r18, "wider");
    let text = std::fs::read_to_string(c.join("config.toml")).unwrap();
    std::fs::write(c.join("config.toml"), text.replace("base_channels = 4", "base_channels = 8")).unwrap();
    assert_one_line_error(&run(EXPORT, &[c.to_str().unwrap(), "--all", "--out", o]), "another architecture");
    // truncated checkpoint (sha256 mismatch) and missing weights
    let t = swap(&r18, &r18, "truncated");
    let w = t.join("checkpoint.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    let fresh = base.join("fresh-out");
    assert_one_line_error(
        &run(EXPORT, &[t.to_str().unwrap(), "--all", "--out", fresh.to_str().unwrap()]),
        "corrupt or truncated",
    );
    assert!(!fresh.exists(), "nothing written on bad input");
    std::fs::remove_file(&w).unwrap();
    assert_one_line_error(&run(EXPORT, &[t.to_str().unwrap(), "--all", "--out", o]), "checkpoint.safetensors");
    let n = swap(&r18, &r18, "no-json");
    std::fs::remove_file(n.join("checkpoint.json")).unwrap();
    assert_one_line_error(&run(EXPORT, &[n.to_str().unwrap(), "--all", "--out", o]), "has no checkpoint");
    // a damaged results.json
    let j = swap(&r18, &r18, "bad-results");
    std::fs::write(j.join("results.json"), b"[{\"width\": 0.5").unwrap();
    assert_one_line_error(&run(EXPORT, &[j.to_str().unwrap(), "--all", "--out", o]), "results.json");
}

/// A run written through the trainer's checkpoint code: the state dict has torchvision/timm
/// names only (no width tags), one BN (5 tensors with num_batches_tracked) per conv, slices
/// of the online weights, and the BN of the requested width; results.json is read.
#[test]
fn state_dict_of_a_saved_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../configs/cifar10-small.toml");
    let mut cfg = RunConfig::from_toml_str(text, "cifar10-small.toml").unwrap();
    cfg.model.base_channels = 4;
    cfg.heads.hidden = 8;
    cfg.heads.out_dim = 4;
    cfg.method.train_widths = Some(vec![0.5, 1.0]);
    let online = Branch::new(&cfg, Device::Cpu, true).unwrap();
    dspnet_core::fs::write_atomic(&dir.path().join(CONFIG), cfg.to_toml().as_bytes()).unwrap();
    let state = CheckpointState { version: "test".into(), ..CheckpointState::basic(3, 9, "fp32") };
    checkpoint::save(dir.path(), &checkpoint::prefixed(&online.vs, "online"), state).unwrap();
    let results = r#"[{"width": 0.5, "params": 1, "flops": 2, "protocol": "knn", "top1": 41.5, "init": "pretrained", "settings": {}},
                      {"width": 0.5, "params": 1, "flops": 2, "protocol": "knn", "top1": 30.0, "init": "random", "settings": {}}]"#;
    std::fs::write(dir.path().join("results.json"), results).unwrap();
    let run = dspnet_deploy::load_run(dir.path()).unwrap();
    assert_eq!(run.top1(0.5, "knn"), Some(41.5));
    assert_eq!(run.top1(0.5, "linear"), None);
    assert_eq!(run.results_for(1.0).len(), 0);
    assert!(
        matches!(run.check_width(0.25), Err(dspnet_deploy::DeployError::Width { width, .. }) if width == 0.25),
        "0.25 is in model.widths but not trained"
    );
    let sd = dspnet_deploy::export::timm_state_dict(&run, 0.5).unwrap();
    let convs = sd.iter().filter(|(_, t)| t.dim() == 4).count();
    assert_eq!(convs, 1 + 8 * 2 + 3, "stem + 8 BasicBlocks x 2 convs + 3 downsamples");
    assert_eq!(sd.len(), convs * 6);
    assert!(sd.iter().all(|(n, _)| !n.contains(".w0_") && !n.contains(".w1_")));
    assert!(sd.windows(2).all(|p| p[0].0 < p[1].0), "sorted by name");
    let get = |k: &str| &sd.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("{k}")).1;
    assert_eq!(get("bn1.num_batches_tracked").kind(), Kind::Int64);
    assert_eq!(get("bn1.num_batches_tracked").size(), Vec::<i64>::new());
    let full = &online.vs.variables()["backbone.layer4.0.conv1.weight"]; // [32, 16, 3, 3]
    assert!(get("layer4.0.conv1.weight").equal(&full.narrow(0, 0, 16).narrow(1, 0, 8)));
    assert!(get("layer2.1.bn2.bias").equal(&online.vs.variables()["backbone.layer2.1.bn2.w0_50.bias"]));
    assert!(matches!(
        dspnet_deploy::export::timm_state_dict(&run, 0.25),
        Err(dspnet_deploy::DeployError::Width { width, .. }) if width == 0.25
    ));
    // export: files and the record
    let out = dir.path().join("exp");
    let s = dspnet_deploy::export_loaded(&run, 0.5, &out, false).unwrap();
    assert_eq!(s.dir, out.join("w0_50"));
    assert_eq!((s.params, s.macs), (run.params(0.5), run.macs(0.5)));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.dir.join(dspnet_deploy::export::MODEL_JSON)).unwrap()).unwrap();
    assert_eq!(meta["eval_results"][0]["top1"], 41.5);
    assert_eq!(meta["random_init_baselines"][0]["top1"], 30.0);
    assert_eq!(meta["source"]["step"], 3);
    assert!(!s.dir.join(dspnet_deploy::export::REFERENCE).exists());
}

/// The ablation heads (`method.narrow_predictor = "separate"`: `online.predictor_narrow.*`;
/// `heads.bn = "shared"`: one BN per head) are in the checkpoint and ignored by export like
/// `online.predictor.*`: the exported state dict is the backbone's alone.
#[test]
fn export_ignores_the_narrow_predictor_and_shared_head_bn() {
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../configs/cifar10-small.toml");
    let mut cfg = RunConfig::from_toml_str(text, "cifar10-small.toml").unwrap();
    cfg.model.base_channels = 4;
    cfg.heads.hidden = 8;
    cfg.heads.out_dim = 4;
    cfg.method.narrow_predictor = dspnet_run::config::NarrowPredictor::Separate;
    cfg.heads.bn = dspnet_run::config::HeadBn::Shared;
    let online = Branch::new(&cfg, Device::Cpu, true).unwrap();
    let tensors = checkpoint::prefixed(&online.vs, "online");
    assert!(tensors.iter().any(|(n, _)| n == "online.predictor_narrow.fc1.weight"));
    assert!(tensors.iter().any(|(n, _)| n == "online.projector.bn1.running_var"));
    dspnet_core::fs::write_atomic(&dir.path().join(CONFIG), cfg.to_toml().as_bytes()).unwrap();
    let state = CheckpointState { version: "test".into(), ..CheckpointState::basic(3, 9, "fp32") };
    checkpoint::save(dir.path(), &tensors, state).unwrap();
    let run = dspnet_deploy::load_run(dir.path()).unwrap();
    let sd = dspnet_deploy::export::timm_state_dict(&run, 0.5).unwrap();
    assert!(sd.iter().all(|(n, _)| !n.contains("predictor") && !n.contains("projector")));
    let get = |k: &str| &sd.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("{k}")).1;
    assert!(get("layer2.1.bn2.bias").equal(&online.vs.variables()["backbone.layer2.1.bn2.w0_50.bias"]));
    let s = dspnet_deploy::export_loaded(&run, 0.5, &dir.path().join("exp"), false).unwrap();
    assert_eq!(s.params, run.params(0.5));
}
