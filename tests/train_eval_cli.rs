//! End-to-end: real CIFAR-10 photos → dspnet-shard → dspnet-stream-train (a few steps) →
//! dspnet-eval, then results.json checked; plus the bad-input contract of the training and
//! evaluation binaries (one line, exit code 2, no run directory that looks complete).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");
const TRAIN: &str = env!("CARGO_BIN_EXE_dspnet-stream-train");
const EVAL: &str = env!("CARGO_BIN_EXE_dspnet-eval");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cifar() -> PathBuf {
    root().join("../shared/data/cifar10-jpg")
}

/// A class-folder subset: the first `n` images of `classes` from `split`, copied into `dst`.
fn subset(split: &str, classes: &[&str], n: usize, dst: &Path) {
    for c in classes {
        let d = dst.join(c);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            let name = format!("{i:04}.jpg");
            std::fs::copy(cifar().join(split).join(c).join(&name), d.join(&name)).unwrap();
        }
    }
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("binary runs")
}

fn tiny_sets() -> Vec<String> {
    let rest = [
        "train.log_every=1",
        "train.checkpoint_every=2",
        "eval.batch_size=32",
        "eval.linear_epochs=3",
        "eval.bn_calibration_batches=2",
    ];
    support::TINY_MODEL.iter().chain(&rest).flat_map(|s| ["--set".to_string(), s.to_string()]).collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    train: String,
    test: String,
    run: PathBuf,
    base: PathBuf,
}

fn shard_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let classes = ["airplane", "cat", "ship"];
    subset("train", &classes, 32, &base.join("src-train"));
    subset("test", &classes, 16, &base.join("src-test"));
    for (split, n) in [("train", "40"), ("test", "100")] {
        let out = run(
            SHARD,
            &[
                "--input",
                base.join(format!("src-{split}")).to_str().unwrap(),
                "--output",
                base.join(split).to_str().unwrap(),
                "--samples-per-shard",
                n,
                "--split",
                split,
            ],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    Fixture {
        train: base.join("train").to_str().unwrap().to_string(),
        test: base.join("test").to_str().unwrap().to_string(),
        run: base.join("run"),
        base,
        _dir: dir,
    }
}

fn train_args<'a>(f: &'a Fixture, sets: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let config =
        Box::leak(root().join("configs/cifar10-small.toml").into_os_string().into_string().unwrap().into_boxed_str());
    let mut a: Vec<&str> = vec!["--config", config, "--shards", &f.train, "--out", f.run.to_str().unwrap(), "--quiet"];
    a.extend(sets.iter().map(String::as_str));
    a.extend_from_slice(extra);
    a
}

#[test]
fn shard_train_eval_on_real_photos() {
    let f = shard_fixture();
    let sets = tiny_sets();
    // 96 training photos, batch 16 → 6 steps per epoch; stop after 4.
    let out = run(TRAIN, &train_args(&f, &sets, &["--max-steps", "4"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trained 4 steps, 64 images"), "{stdout}");
    for f_ in ["config.toml", "checkpoint.safetensors", "checkpoint.json", "metrics.jsonl"] {
        assert!(f.run.join(f_).exists(), "{f_} missing");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 4);
    let metrics = std::fs::read_to_string(f.run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "one metrics line per step with log_every=1");
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    let widths: Vec<f64> = first["loss"].as_array().unwrap().iter().map(|l| l["width"].as_f64().unwrap()).collect();
    assert_eq!(widths, vec![1.0, 0.75, 0.5, 0.25], "sandwich: all four widths, largest first");

    let out = run(
        EVAL,
        &[
            f.run.to_str().unwrap(),
            "--train-shards",
            &f.train,
            "--test-shards",
            &f.test,
            "--protocol",
            "knn,linear",
            "--random-init",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(f.run.join("results.json")).unwrap()).unwrap();
    // 4 widths × 2 protocols × 2 inits
    assert_eq!(records.len(), 16);
    let mut by_width: Vec<(f64, i64, u64)> = Vec::new();
    for r in &records {
        let top1 = r["top1"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&top1), "{r}");
        // 48 test photos: accuracy is a multiple of 100/48
        let k = top1 * 48.0 / 100.0;
        assert!((k - k.round()).abs() < 1e-6, "{r}");
        assert!(["knn", "linear"].contains(&r["protocol"].as_str().unwrap()));
        assert_eq!(r["settings"]["test_images"], 48);
        assert_eq!(r["settings"]["train_images"], 96);
        let w = r["width"].as_f64().unwrap();
        if !by_width.iter().any(|(x, _, _)| *x == w) {
            by_width.push((w, r["params"].as_i64().unwrap(), r["flops"].as_u64().unwrap()));
        }
    }
    by_width.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert_eq!(by_width.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0.25, 0.5, 0.75, 1.0]);
    // base 4 at width 1 → stem 4 channels: stem conv 3·4·9 = 108 params is part of the count;
    // parameters and FLOPs grow strictly with width.
    assert!(by_width.windows(2).all(|p| p[0].1 < p[1].1 && p[0].2 < p[1].2), "{by_width:?}");
    assert!(f.run.join("accuracy_vs_flops.png").exists());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("knn (pretrained)") && table.contains("linear (random)"), "{table}");
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn bad_training_input_is_one_line_and_exit_2() {
    let f = shard_fixture();
    let sets = tiny_sets();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--set", "optim.lrr=0.1"], "optim.lrr"),
        (vec!["--set", "model.widths=[0.0, 1.0]"], "model.widths"),
        (vec!["--set", "model.widths=[0.5, 1.5]"], "1.5"),
        (vec!["--set", "model.widths=[0.5, 0.5, 1.0]"], "model.widths"),
        (vec!["--set", "method.train_widths=[0.3, 1.0]"], "0.3"),
        (vec!["--device", "tpu"], "--device tpu"),
        (vec!["--set", "train.epochs=nan"], "train.epochs"),
        (vec!["--set", "train.epochs=inf"], "train.epochs"),
        (vec!["--set", "optim.lr=nan"], "optim.lr"),
        // 96 photos cannot fill one batch of 1000 (drop_last): an error, not an endless loop
        (vec!["--set", "loader.batch_size=1000", "--max-steps", "2"], "no full batch"),
    ];
    for (extra, needle) in cases {
        let out = run(TRAIN, &train_args(&f, &sets, &extra));
        assert_one_line_error(&out, needle);
        assert!(!f.run.join("checkpoint.json").exists());
    }
    // launcher variables that cannot be right
    for (rank, world) in [("0", "0"), ("2", "2"), ("x", "1")] {
        let out = Command::new(TRAIN)
            .args(train_args(&f, &sets, &[]))
            .env("RANK", rank)
            .env("WORLD_SIZE", world)
            .output()
            .unwrap();
        assert_one_line_error(&out, "RANK");
    }
    // a shard pattern matching nothing
    let missing = f.base.join("nothing-{000000..000003}.tar");
    let mut args = train_args(&f, &sets, &[]);
    args[3] = missing.to_str().unwrap();
    assert_one_line_error(&run(TRAIN, &args), "nothing-");
    assert!(!f.run.join("checkpoint.json").exists());
    // a file that is not a shard (here the config itself), named with the option
    let not_a_shard = root().join("configs/cifar10-small.toml");
    let mut args = train_args(&f, &sets, &[]);
    args[3] = not_a_shard.to_str().unwrap();
    let out = run(TRAIN, &args);
    assert_one_line_error(&out, "--shards");
    assert_one_line_error(&out, "cifar10-small.toml is not a shard");
    assert!(!f.run.join("checkpoint.json").exists());
    // an unknown key in the config file itself
    let cfg = f.base.join("bad.toml");
    let text = std::fs::read_to_string(root().join("configs/cifar10-small.toml")).unwrap();
    std::fs::write(&cfg, text.replace("[optim]", "[optim]\nmomentun = 0.9")).unwrap();
    let mut args = train_args(&f, &sets, &[]);
    args[1] = cfg.to_str().unwrap();
    assert_one_line_error(&run(TRAIN, &args), "momentun");
}

#[test]
fn bad_evaluation_input_is_one_line_and_exit_2() {
    let f = shard_fixture();
    let sets = tiny_sets();
    let out = run(TRAIN, &train_args(&f, &sets, &["--max-steps", "1"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = f.run.to_str().unwrap();
    // a width the run did not train
    let out = run(EVAL, &[run_dir, "--train-shards", &f.train, "--test-shards", &f.test, "--widths", "0.3"]);
    assert_one_line_error(&out, "did not train width 0.3");
    // an unknown protocol
    let out = run(EVAL, &[run_dir, "--train-shards", &f.train, "--test-shards", &f.test, "--protocol", "svm"]);
    assert_one_line_error(&out, "svm");
    // a directory that is not a run
    let out = run(EVAL, &[f.base.to_str().unwrap(), "--train-shards", &f.train, "--test-shards", &f.test]);
    assert_one_line_error(&out, "not a dspnet run directory");
    // a file that is not a shard, for either split: the option is named, before any feature
    let not_a_shard = root().join("configs/cifar10-small.toml");
    let not_a_shard = not_a_shard.to_str().unwrap();
    let out = run(EVAL, &[run_dir, "--train-shards", &f.train, "--test-shards", not_a_shard]);
    assert_one_line_error(&out, "--test-shards: ");
    assert_one_line_error(&out, "is not a shard");
    let out = run(EVAL, &[run_dir, "--train-shards", not_a_shard, "--test-shards", &f.test]);
    assert_one_line_error(&out, "--train-shards: ");
    // a corrupt (truncated) checkpoint
    let w = f.run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    let out = run(EVAL, &[run_dir, "--train-shards", &f.train, "--test-shards", &f.test]);
    assert_one_line_error(&out, "corrupt or truncated");
    assert!(!f.run.join("results.json").exists());
}

/// sha256 of a file, lowercase hex (computed here, independently of the evaluation code).
fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn semi_supervised_records_on_real_photos() {
    let f = shard_fixture();
    // one libtorch thread: on a loaded 2-core machine two spinning OpenMP threads made these
    // tiny steps ~30x slower (measured: 5 min instead of 8 s for the evaluation below)
    let mut sets = tiny_sets();
    sets.extend(["--set".to_string(), "train.threads=1".to_string()]);
    let out = run(TRAIN, &train_args(&f, &sets, &["--max-steps", "1"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run_dir = f.run.to_str().unwrap();
    // 3 classes × 32 training photos, 3 × 16 test photos; flips only (crop scale 1) so that 90
    // steps can fit the 96 photos
    let out = run(
        EVAL,
        &[
            run_dir,
            "--train-shards",
            &f.train,
            "--test-shards",
            &f.test,
            "--protocol",
            "semi",
            "--widths",
            "1.0,0.25",
            "--label-fractions",
            "0.1,1.0",
            "--subset-seed",
            "3",
            "--random-init",
            "--semi-epochs",
            "15",
            "--semi-batch",
            "16",
            "--semi-lr",
            "0.02",
            "--semi-head-lr",
            "0.2",
            "--semi-crop-scale",
            "1.0",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(f.run.join("results.json")).unwrap()).unwrap();
    // 2 subsets × 2 inits × 2 widths
    assert_eq!(records.len(), 8, "{records:?}");
    let ln3 = 3f64.ln();
    for r in &records {
        let s = &r["settings"];
        let proto = r["protocol"].as_str().unwrap();
        // by hand: 10% of 32 per class = floor(3.2) = 3 → 9 images, one batch of 9 per epoch;
        // 100% = 96 images, floor(96/16) = 6 steps per epoch; 15 epochs
        let (fraction, images, batch, steps) = match proto {
            "semi-10%" => (0.1, 9, 9, 15),
            "semi-100%" => (1.0, 96, 16, 90),
            p => panic!("unexpected protocol {p}"),
        };
        assert_eq!(s["label_fraction"], fraction, "{r}");
        assert_eq!(s["labelled_images"], images, "{r}");
        assert_eq!(s["labelled_per_class_min"], images / 3, "{r}");
        assert_eq!(s["labelled_per_class_max"], images / 3, "{r}");
        assert_eq!(s["pool_images"], 96);
        assert_eq!(s["classes"], 3);
        assert_eq!(s["subset_seed"], 3);
        assert!(s["subset_file"].is_null());
        assert_eq!(s["epochs"], 15);
        assert_eq!(s["batch"], batch, "{r}");
        assert_eq!(s["steps"], steps, "{r}");
        assert_eq!(s["backbone_lr"], 0.02);
        assert_eq!(s["head_lr"], 0.2);
        assert_eq!(s["weight_decay"], 0.0);
        assert_eq!(s["momentum"], 0.9);
        assert!(s["augmentation"].as_str().unwrap().contains("random resized crop"), "{r}");
        assert_eq!(s["test_images"], 48);
        // the zero-initialised head starts at chance: cross-entropy ln 3
        let first = s["first_loss"].as_f64().unwrap();
        assert!((first - ln3).abs() < 1e-4, "{r}");
        let top1 = r["top1"].as_f64().unwrap();
        let k = top1 * 48.0 / 100.0;
        assert!((0.0..=100.0).contains(&top1) && (k - k.round()).abs() < 1e-6, "{r}");
        assert!(["pretrained", "random"].contains(&r["init"].as_str().unwrap()));
        // fine-tuning the full width on all 96 labels trains, from either init: the last epoch's
        // mean loss falls below 3/4 of chance (ln 3) and the labelled photos are classified
        // (eval-mode BN) at more than twice chance (33.3%). Measured here: loss 0.46 / 0.55,
        // accuracy 92% / 82% (pretrained / random).
        if proto == "semi-100%" && r["width"] == 1.0 {
            let last = s["final_loss"].as_f64().unwrap();
            assert!(last < 0.75 * ln3, "loss did not decrease: {r}");
            assert!(s["train_top1"].as_f64().unwrap() > 200.0 / 3.0, "{r}");
        }
    }
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("semi-10% (pretrained)") && table.contains("semi-100% (random)"), "{table}");

    // a subset file: exact key, key with extension, ImageNet-style stem → 3 images
    let list = f.base.join("mine.txt");
    std::fs::write(&list, "airplane_0000\ncat_0001.jpg\n# comment\nship_0002\n").unwrap();
    let out = run(
        EVAL,
        &[
            run_dir,
            "--train-shards",
            &f.train,
            "--test-shards",
            &f.test,
            "--protocol",
            "semi",
            "--widths",
            "0.25",
            "--subset-file",
            list.to_str().unwrap(),
            "--semi-epochs",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(f.run.join("results.json")).unwrap()).unwrap();
    // the new record joins the 8 of the fraction run (other protocols' records are kept)
    assert_eq!(records.len(), 9, "{records:?}");
    assert_eq!(records.iter().filter(|r| r["protocol"] == "semi-10%").count(), 4, "{records:?}");
    let mine: Vec<&serde_json::Value> = records.iter().filter(|r| r["protocol"] == "semi-mine").collect();
    assert_eq!(mine.len(), 1, "{records:?}");
    let r = mine[0];
    assert_eq!(r["protocol"], "semi-mine");
    assert_eq!(r["settings"]["labelled_images"], 3);
    assert_eq!(r["settings"]["subset_sha256"], sha256_hex(&list).as_str());
    assert_eq!(r["settings"]["subset_file"], list.to_str().unwrap());
    assert!(r["settings"]["label_fraction"].is_null() && r["settings"]["subset_seed"].is_null(), "{r}");

    // bad input: one line, exit 2
    std::fs::write(&list, "airplane_0000\nairplane_9999\n").unwrap();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> =
            [run_dir, "--train-shards", f.train.as_str(), "--test-shards", f.test.as_str(), "--protocol", "semi"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut a = args(&[]);
    a.extend(["--subset-file".to_string(), list.to_str().unwrap().to_string()]);
    let out = Command::new(EVAL).args(&a).output().unwrap();
    assert_one_line_error(&out, "airplane_9999");
    assert_one_line_error(&out, "mine.txt");
    let out = Command::new(EVAL).args(args(&["--label-fractions", "1.5"])).output().unwrap();
    assert_one_line_error(&out, "--label-fractions 1.5");
    let out = Command::new(EVAL).args(args(&["--semi-epochs", "0"])).output().unwrap();
    assert_one_line_error(&out, "--semi-epochs");
}

/// The records of `metrics.jsonl` that come from the kNN monitor, without their wall time.
fn monitor_records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("monitor").is_some())
        .map(|mut v| {
            v["monitor"].as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

#[test]
fn the_knn_monitor_is_dspnet_evals_knn_and_changes_nothing() {
    let f = shard_fixture();
    let sets = tiny_sets();
    let train = |run: &Path, extra: &[&str]| {
        let config = root().join("configs/cifar10-small.toml");
        let mut c = Command::new(TRAIN);
        c.args(["--config", config.to_str().unwrap(), "--shards", &f.train, "--out", run.to_str().unwrap(), "--quiet"])
            .args(&sets)
            .args(["--set", "train.threads=1", "--set", "train.epochs=2"])
            .args(extra);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let monitor = [
        "--set".to_string(),
        format!("monitor.train_shards={}", f.train),
        "--set".to_string(),
        format!("monitor.test_shards={}", f.test),
        "--set".into(),
        "monitor.every_steps=4".into(),
    ];
    let monitor: Vec<&str> = monitor.iter().map(String::as_str).collect();
    // A without the monitor, B with it: the same weights to the byte
    let (run_a, run_b) = (f.base.join("a"), f.base.join("b"));
    train(&run_a, &[]);
    train(&run_b, &monitor);
    let bytes = |r: &Path| std::fs::read(r.join("checkpoint.safetensors")).unwrap();
    assert!(bytes(&run_a) == bytes(&run_b), "the monitor changed the training");
    // every 4 steps and at the two epoch ends (6 steps each): steps 4, 6, 8, 12
    let recs = monitor_records(&run_b);
    let steps: Vec<u64> = recs.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![4, 6, 8, 12], "{recs:?}");
    assert!(monitor_records(&run_a).is_empty());
    let last = &recs[3]["monitor"];
    assert_eq!((last["bank_images"].as_i64(), last["test_images"].as_i64()), (Some(96), Some(48)));
    assert_eq!(last["top1"].as_array().unwrap().len(), 4, "every trained width");
    // dspnet-eval's kNN on the final checkpoint and the same data gives the same top-1
    let out = run(
        EVAL,
        &[run_b.to_str().unwrap(), "--train-shards", &f.train, "--test-shards", &f.test, "--protocol", "knn"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(run_b.join("results.json")).unwrap()).unwrap();
    for m in last["top1"].as_array().unwrap() {
        let r = results.iter().find(|r| r["width"] == m["width"]).unwrap_or_else(|| panic!("{m} not evaluated"));
        assert_eq!(r["top1"], m["top1"], "width {}", m["width"]);
    }
    // a run stopped mid-epoch and resumed writes the same monitor records
    let run_c = f.base.join("c");
    train(&run_c, &[&monitor[..], &["--max-steps", "5"]].concat());
    let out = run(TRAIN, &["--resume", run_c.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(monitor_records(&run_c), recs);
    assert!(bytes(&run_c) == bytes(&run_b));
}
