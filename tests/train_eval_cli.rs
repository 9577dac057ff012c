//! End-to-end: real CIFAR-10 photos → dspnet-shard → dspnet-stream-train (a few steps) →
//! dspnet-eval, then results.json checked; plus the bad-input contract of the training and
//! evaluation binaries (one line, exit code 2, no run directory that looks complete).

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
    [
        "model.base_channels=4",
        "heads.hidden=32",
        "heads.out_dim=16",
        "loader.batch_size=16",
        "loader.shuffle_buffer=32",
        "train.precision=\"fp32\"",
        "train.log_every=1",
        "train.checkpoint_every=2",
        "eval.batch_size=32",
        "eval.linear_epochs=3",
        "eval.bn_calibration_batches=2",
    ]
    .iter()
    .flat_map(|s| ["--set".to_string(), s.to_string()])
    .collect()
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
    let config = Box::leak(root().join("configs/cifar10-small.toml").into_os_string().into_string().unwrap().into_boxed_str());
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
        &[f.run.to_str().unwrap(), "--train-shards", &f.train, "--test-shards", &f.test, "--protocol", "knn,linear", "--random-init"],
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
        let out = Command::new(TRAIN).args(train_args(&f, &sets, &[])).env("RANK", rank).env("WORLD_SIZE", world).output().unwrap();
        assert_one_line_error(&out, "RANK");
    }
    // a shard pattern matching nothing
    let missing = f.base.join("nothing-{000000..000003}.tar");
    let mut args = train_args(&f, &sets, &[]);
    args[3] = missing.to_str().unwrap();
    assert_one_line_error(&run(TRAIN, &args), "nothing-");
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
    // a corrupt (truncated) checkpoint
    let w = f.run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    let out = run(EVAL, &[run_dir, "--train-shards", &f.train, "--test-shards", &f.test]);
    assert_one_line_error(&out, "corrupt or truncated");
    assert!(!f.run.join("results.json").exists());
}
