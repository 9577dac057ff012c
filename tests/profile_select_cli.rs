//! End-to-end: a tiny real run (CIFAR-10 photos → dspnet-shard → 2 DSPNet steps → dspnet-eval),
//! then dspnet-profile (profile.json, table, plot) and dspnet-select (every budget kind, the
//! width worked out by hand from results.json and profile.json, the export, none-fits); plus
//! the bad-input contract of both binaries (one line, exit code 2).

use dspnet_model::SlimResNet;
use dspnet_run::RunConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");
const TRAIN: &str = env!("CARGO_BIN_EXE_dspnet-stream-train");
const EVAL: &str = env!("CARGO_BIN_EXE_dspnet-eval");
const PROFILE: &str = env!("CARGO_BIN_EXE_dspnet-profile");
const SELECT: &str = env!("CARGO_BIN_EXE_dspnet-select");
const WIDTHS: [f64; 4] = [0.25, 0.5, 0.75, 1.0];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("binary runs")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Shards 3 CIFAR-10 classes (32 train / 16 test photos each) and trains a base-4 ResNet-18
/// for 2 steps into `dir/run`; evaluates it (kNN + linear probe) when `eval`.
fn tiny_run(dir: &Path, eval: bool) -> PathBuf {
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
    for s in dspnet_run::testing::TINY_SETS.iter().copied().chain([
        "train.threads=1",
        "eval.batch_size=48",
        "eval.linear_epochs=3",
    ]) {
        args.extend(["--set".to_string(), s.to_string()]);
    }
    ok(&run(TRAIN, &args.iter().map(String::as_str).collect::<Vec<_>>()));
    if eval {
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
                "knn,linear",
            ],
        ));
    }
    run_dir
}

/// The width select must pick, worked out here: among widths whose cost is <= the limit, the
/// highest pretrained top-1 of `metric`, ties to the narrower width.
fn expected_choice(results: &Value, metric: &str, cost: impl Fn(f64) -> f64, limit: f64) -> f64 {
    let mut best: Option<(f64, f64)> = None;
    for &w in &WIDTHS {
        if cost(w) > limit {
            continue;
        }
        let top1 = results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["width"].as_f64() == Some(w) && r["protocol"] == metric && r["init"] == "pretrained")
            .map(|r| r["top1"].as_f64().unwrap())
            .unwrap();
        if best.is_none_or(|(_, t)| top1 > t) {
            best = Some((w, top1));
        }
    }
    best.expect("the limit admits a width").0
}

fn chosen_line(stdout: &str) -> &str {
    stdout.lines().find(|l| l.starts_with("chosen: ")).unwrap_or_else(|| panic!("{stdout}"))
}

#[test]
fn profile_and_select_on_a_tiny_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tiny_run(tmp.path(), true);
    let r = run_dir.to_str().unwrap();

    // ---- dspnet-profile
    let stdout = ok(&run(PROFILE, &[r, "--batch-sizes", "1,64", "--repeats", "5", "--warmup", "1", "--threads", "1"]));
    let p = json(&run_dir.join("profile.json"));
    assert!(!run_dir.join(".profile.json.tmp").exists());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let model_name = cpuinfo.lines().find(|l| l.starts_with("model name")).unwrap().split_once(':').unwrap().1.trim();
    assert_eq!(p["machine"]["cpu_model"], model_name);
    assert_eq!(p["threads"], 1);
    assert_eq!(p["dtype"], "fp32");
    assert_eq!(p["channels_last"], true);
    assert_eq!(p["repeats"], 5);
    assert_eq!(p["input"], serde_json::json!({"channels": 3, "height": 32, "width": 32}));
    // params and FLOPs: the model's own counts, and the ones dspnet-eval recorded
    let cfg = RunConfig::load(&run_dir.join("config.toml"), &[]).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = SlimResNet::new(&vs.root(), &cfg.model).unwrap();
    let results = json(&run_dir.join("results.json"));
    let widths = p["widths"].as_array().unwrap();
    assert_eq!(widths.iter().map(|w| w["width"].as_f64().unwrap()).collect::<Vec<_>>(), WIDTHS);
    for w in widths {
        let width = w["width"].as_f64().unwrap();
        assert_eq!(w["params"].as_i64().unwrap(), net.num_params(width), "{w}");
        assert_eq!(w["flops"].as_u64().unwrap(), net.macs(width, 32, 32), "{w}");
        let rec = results.as_array().unwrap().iter().find(|x| x["width"].as_f64() == Some(width)).unwrap();
        assert_eq!(w["params"], rec["params"]);
        assert_eq!(w["flops"], rec["flops"]);
        let b = w["batches"].as_array().unwrap();
        assert_eq!(b.iter().map(|x| x["batch_size"].as_i64().unwrap()).collect::<Vec<_>>(), vec![1, 64]);
        for m in b {
            let (med, p90) = (m["median_ms"].as_f64().unwrap(), m["p90_ms"].as_f64().unwrap());
            let (min, max) = (m["min_ms"].as_f64().unwrap(), m["max_ms"].as_f64().unwrap());
            assert!(min > 0.0 && min <= med && med <= p90 && p90 <= max, "{m}");
            let bs = m["batch_size"].as_f64().unwrap();
            let ips = m["images_per_s"].as_f64().unwrap();
            assert!((ips - bs / (med / 1e3)).abs() <= 1e-9 * ips, "images/s must be batch / median latency: {m}");
            // the passes allocate at least the stem's output: batch x slim(4, w) channels x 32 x 32 fp32
            let stem_out = bs * (4.0 * width).round().max(1.0) * 32.0 * 32.0 * 4.0;
            let peak = m["peak_rss_delta_bytes"].as_f64().expect("peak memory measured on Linux");
            assert!(peak >= stem_out, "peak {peak} < stem output {stem_out}: {m}");
        }
        // fp32 weights: params + 2 running statistics per BN channel, 4 bytes each, so > 4 * params
        assert!(w["weight_bytes"].as_i64().unwrap() > 4 * w["params"].as_i64().unwrap());
    }
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 2 + 4, "{stdout}");
    assert!(
        table[0].contains("b1 median ms")
            && table[0].contains("b64 img/s")
            && table[0].contains("linear top-1")
            && table[0].contains("knn top-1"),
        "{stdout}"
    );
    assert!(stdout.contains(model_name) && stdout.contains("libtorch threads: 1,"), "{stdout}");
    let png = image::open(run_dir.join("accuracy_vs_latency.png")).expect("the plot is a PNG");
    assert_eq!((png.width(), png.height()), (800, 560));

    // ---- dspnet-select, each budget kind, latency reused from profile.json
    let mflops = |w: f64| net.macs(w, 32, 32) as f64 / 1e6;
    let params = |w: f64| net.num_params(w) as f64;
    let latency = |w: f64| {
        widths.iter().find(|x| x["width"].as_f64() == Some(w)).unwrap()["batches"][0]["median_ms"].as_f64().unwrap()
    };
    let limit = mflops(0.5);
    let out = ok(&run(SELECT, &[r, "--max-mflops", &limit.to_string(), "--threads", "1"]));
    let want = expected_choice(&results, "linear", mflops, limit);
    assert!(chosen_line(&out).starts_with(&format!("chosen: {want:?}x (linear top-1")), "want {want}: {out}");
    let tag = dspnet_model::width_tag(want);
    assert!(run_dir.join("export").join(&tag).join("model.json").exists(), "{out}");
    assert!(out.lines().next().unwrap().starts_with("latency: from"), "profile.json matches: {out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 2 + 4, "{out}");
    assert_eq!(rows.iter().filter(|l| l.contains("<==")).count(), 1);
    assert_eq!(rows.iter().filter(|l| l.contains(" yes ")).count(), 2, "0.25x and 0.5x fit: {out}");

    let limit = latency(0.75);
    let out = ok(&run(SELECT, &[r, "--max-latency-ms", &limit.to_string(), "--metric", "knn", "--threads", "1"]));
    let want = expected_choice(&results, "knn", latency, limit);
    assert!(chosen_line(&out).starts_with(&format!("chosen: {want:?}x (knn top-1")), "want {want}: {out}");
    assert!(out.starts_with("latency: from"), "{out}");

    let export = tmp.path().join("exports");
    let limit = params(0.25);
    let out =
        ok(&run(SELECT, &[r, "--max-params", &limit.to_string(), "--out", export.to_str().unwrap(), "--threads", "1"]));
    assert!(chosen_line(&out).starts_with("chosen: 0.25x"), "{out}");
    assert!(export.join("w0_25/model.json").exists() && export.join("w0_25/model.safetensors").exists());

    // measured now when profile.json was measured with other threads
    let out = ok(&run(
        SELECT,
        &[r, "--max-params", &limit.to_string(), "--out", export.to_str().unwrap(), "--threads", "2", "--repeats", "3"],
    ));
    assert!(out.starts_with("latency: measured now (it was measured with threads = 1, here 2)"), "{out}");

    // none fits: exit 1, one line naming what the smallest needs
    let out = run(SELECT, &[r, "--max-mflops", "0.000001", "--threads", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "decided before measuring anything: {}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{stderr}");
    let prefix = "error: no width fits --max-mflops 1e-6: the smallest, 0.25x, needs ";
    assert!(line.starts_with(prefix) && line.ends_with(" MFLOPs"), "{line}");
    let needs: f64 = line[prefix.len()..line.len() - " MFLOPs".len()].parse().unwrap();
    assert!((needs - mflops(0.25)).abs() < 1e-3, "{needs} vs {}", mflops(0.25));
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "want {needle:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tiny_run(tmp.path(), false);
    let r = run_dir.to_str().unwrap();
    let profile_cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--widths", "0.3"], "--widths 0.3: the run"),
        (vec!["--batch-sizes", "1,-4"], "-4"),
        (vec!["--repeats", "0"], "--repeats"),
        (vec!["--repeats", "many"], "many"),
        (vec!["--threads", "0"], "--threads 0"),
    ];
    for (extra, needle) in profile_cases {
        let mut a = vec![r];
        a.extend(extra);
        assert_one_line_error(&run(PROFILE, &a), needle);
    }
    let select_cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "no budget"),
        (vec!["--max-mflops", "2", "--max-params", "1000"], "--max-mflops and --max-params given"),
        (vec!["--max-mflops", "-1"], "--max-mflops -1"),
        (vec!["--max-latency-ms", "nan"], "--max-latency-ms NaN: the budget must be a positive finite number"),
        (vec!["--max-mflops", "2", "--metric", "svm"], "--metric svm"),
        (vec!["--max-mflops", "2", "--batch-size", "0"], "--batch-size 0"),
        // no results.json yet: tell the user to evaluate
        (vec!["--max-mflops", "2"], "run dspnet-eval"),
    ];
    for (extra, needle) in select_cases {
        let mut a = vec![r];
        a.extend(extra);
        assert_one_line_error(&run(SELECT, &a), needle);
    }
    // no results: profile works, says why there is no plot
    let out = ok(&run(PROFILE, &[r, "--batch-sizes", "2", "--repeats", "1", "--warmup", "0", "--threads", "1"]));
    assert!(out.contains("plot skipped") && !run_dir.join("accuracy_vs_latency.png").exists(), "{out}");
    // an output folder that does not exist: refused before measuring
    let nowhere = tmp.path().join("no-such-folder/profile.json");
    assert_one_line_error(&run(PROFILE, &[r, "--out", nowhere.to_str().unwrap()]), "does not exist; create it");
    // a missing run, then a truncated checkpoint
    let missing = tmp.path().join("no-such-run");
    assert_one_line_error(&run(PROFILE, &[missing.to_str().unwrap()]), "does not exist");
    assert_one_line_error(&run(SELECT, &[missing.to_str().unwrap(), "--max-mflops", "2"]), "does not exist");
    let w = run_dir.join("checkpoint.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() - 100]).unwrap();
    assert_one_line_error(&run(PROFILE, &[r]), "corrupt or truncated");
    assert_one_line_error(&run(SELECT, &[r, "--max-mflops", "2"]), "corrupt or truncated");
}
