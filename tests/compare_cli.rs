//! End-to-end: `dspnet-compare` on a tiny real run (CIFAR-10 photos from ../shared/data, sharded
//! by the command itself; 3 optimiser steps per training): the bookkeeping (ratios worked out
//! from the records, the same-budget split worked out by hand, every width in report.md and
//! compare.json, a plot that decodes), resuming (finished sub-runs kept, byte for byte), seeds
//! (folders per seed, each sub-run trained with its seed, means and standard deviations worked out
//! from the per-seed records, adding a seed trains only it), the kNN monitor's curves, and the
//! bad-input contract (one line, exit code 2).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_dspnet-compare");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cifar() -> PathBuf {
    let p = root().join("../shared/data/cifar10-jpg");
    assert!(p.join("train").is_dir(), "the real data {} is missing", p.display());
    p
}

fn run(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().expect("binary runs")
}

/// 10 classes x 5 training photos, batch 16: 3 steps per epoch, 1 epoch per training; 3 test
/// photos per class; a base of 4 channels.
fn tiny(out: &Path, widths: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        ["--preset", "cpu", "--out", out.to_str().unwrap(), "--widths", widths].iter().map(|s| s.to_string()).collect();
    let sets = [
        format!("compare.data.source={}", cifar().display()),
        "compare.data.train_per_class=5".into(),
        "compare.data.test_per_class=3".into(),
        "compare.data.samples_per_shard=20".into(),
        "model.base_channels=4".into(),
        "heads.hidden=16".into(),
        "heads.out_dim=8".into(),
        "loader.batch_size=16".into(),
        "loader.shuffle_buffer=32".into(),
        "train.epochs=1.0".into(),
        "optim.warmup_epochs=0.0".into(),
        "train.precision=\"fp32\"".into(),
        "train.checkpoint_every=0".into(),
        "train.threads=1".into(),
        "eval.batch_size=32".into(),
        "eval.knn_k=5".into(),
        "eval.linear_epochs=2".into(),
    ];
    for s in sets {
        a.push("--set".into());
        a.push(s);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[test]
fn compare_bookkeeping_resume_on_a_tiny_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let o = run(&tiny(&out, "0.25,0.5,1.0", &["--same-budget"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("kept: -"), "{stdout}");
    let c = json(&out.join("compare.json"));
    let runs = c["runs"].as_array().unwrap();
    let of_kind = |k: &str| runs.iter().filter(|r| r["kind"] == k).collect::<Vec<_>>();
    let dsp = of_kind("dspnet")[0];
    let ones = of_kind("one-by-one");
    let budget = of_kind("same-budget");
    assert_eq!((ones.len(), budget.len()), (3, 3));
    // the sharded subset: 50 training photos, 3 steps of 16 per training
    for r in runs {
        assert_eq!(
            (u(&r["steps"]), u(&r["images"])),
            (if r["kind"] == "same-budget" { u(&r["steps"]) } else { 3 }, 16 * u(&r["steps"])),
            "{}",
            r["name"]
        );
        assert!(
            f(&r["seconds"]) > 0.0
                && u(&r["peak_rss_bytes"]) > u(&r["baseline_rss_bytes"])
                && u(&r["baseline_rss_bytes"]) > 0,
            "{r}"
        );
    }

    // FLOPs from the records: N/S · 2 · (S·T + 3 · Σ_w n_w F_w). DSPNet trains all 3 widths each
    // step (sandwich rule, <= 4 widths); each one-by-one network is the same network as DSPNet's
    // slice (same forward MACs) and its teacher is that network without the predictor
    // (2 · hidden(w) · out_dim MACs, hidden(w) = round(16 w), out_dim 8).
    let online = |r: &serde_json::Value, w: f64| -> u64 {
        u(&r["online_macs"].as_array().unwrap().iter().find(|p| (f(&p[0]) - w).abs() < 1e-9).unwrap()[1])
    };
    for ws in dsp["width_steps"].as_array().unwrap() {
        assert_eq!(u(&ws[1]), 3);
    }
    let sum_f: u64 = [0.25, 0.5, 1.0].iter().map(|&w| online(dsp, w)).sum();
    assert_eq!(u(&dsp["train_macs"]), 48 * 2 * (u(&dsp["teacher_macs"]) + 3 * sum_f));
    assert_eq!(u(&dsp["teacher_macs"]), online(dsp, 1.0) - 2 * 16 * 8);
    for (r, w) in ones.iter().zip([0.25f64, 0.5, 1.0]) {
        let h = (16.0 * w).round() as u64;
        assert_eq!(online(r, w), online(dsp, w), "{}", r["name"]);
        assert_eq!(u(&r["teacher_macs"]), online(r, w) - 2 * h * 8, "{}", r["name"]);
        assert_eq!(u(&r["train_macs"]), 48 * 2 * (u(&r["teacher_macs"]) + 3 * online(r, w)));
    }

    // ratios from the records = the report's
    let sum = |k: &str| ones.iter().map(|r| f(&r[k])).sum::<f64>();
    let want = [
        f(&dsp["seconds"]) / sum("seconds"),
        f(&dsp["train_macs"]) / sum("train_macs"),
        f(&dsp["peak_rss_bytes"]) / sum("peak_rss_bytes"),
        f(&dsp["peak_rss_bytes"]) / ones.iter().map(|r| f(&r["peak_rss_bytes"])).fold(0.0, f64::max),
    ];
    let ratios = &c["cost"]["ratios"];
    let got = [&ratios["wall_time"], &ratios["train_flops"], &ratios["peak_memory"], &ratios["peak_memory_vs_largest"]]
        .map(f);
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for r in &want[..3] {
        assert!(report.contains(&format!("**{r:.3}**")), "{r:.3} not in\n{report}");
    }

    // the same-budget split by hand: DSPNet's seconds / 3 per width, floor(share / s per step)
    let share = f(&dsp["seconds"]) / 3.0;
    // one seed: its same-budget section where it was before seeds existed
    assert_eq!(c["same_budget"], c["per_seed"][0]["same_budget"]);
    let split = &c["same_budget"]["split"];
    assert!((f(&split["budget_seconds"]) - f(&dsp["seconds"])).abs() < 1e-12);
    for ((one, b), w) in ones.iter().zip(&budget).zip([0.25, 0.5, 1.0]) {
        let step_s = f(&one["seconds"]) / f(&one["steps"]);
        let steps = ((share / step_s).floor() as u64).max(1);
        let entry = split["widths"].as_array().unwrap().iter().find(|e| (f(&e[0]) - w).abs() < 1e-9).unwrap();
        assert_eq!(u(&entry[2]), steps, "width {w}");
        assert_eq!(
            (u(&b["steps"]), u(&b["total_steps"])),
            (steps, steps),
            "width {w}: the budget run planned and took its steps"
        );
    }

    // every width in compare.json and report.md, for every protocol
    let results = c["results"].as_array().unwrap();
    for p in ["knn", "linear"] {
        for w in [0.25, 0.5, 1.0] {
            let row = results.iter().find(|r| r["protocol"] == p && (f(&r["width"]) - w).abs() < 1e-9);
            let row = row.unwrap_or_else(|| panic!("{p} {w} missing"));
            let d = f(&row["dspnet_top1"]) - f(&row["one_by_one_top1"]);
            assert!((f(&row["difference"]) - d).abs() < 1e-12 && (0.0..=100.0).contains(&f(&row["dspnet_top1"])));
            assert!(row["same_budget_top1"].is_number());
        }
        assert!(report.contains(&format!("### {p}")), "{report}");
    }
    for w in ["0.25", "0.5", "1"] {
        assert_eq!(
            report.lines().filter(|l| l.starts_with(&format!("| {w} |"))).count(),
            2 + 1,
            "width {w} (2 protocols + budget table):\n{report}"
        );
    }
    assert!(
        report.contains("dspnet-compare --preset cpu")
            && report.contains("Code version")
            && report.contains("load average")
    );
    let png = image::open(out.join("compare.png")).expect("compare.png decodes");
    assert_eq!((png.width(), png.height()), (800, 560));
    // one seed (the config's): no spread measured, no verdict, and the report says so
    assert_eq!((&c["seeds"], &c["seed_folders"]), (&serde_json::json!([0]), &serde_json::json!(false)));
    let summary = c["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2 * 3);
    for r in summary {
        assert!(r["dspnet"]["std"].is_null() && r["difference"]["standard_error"].is_null(), "{r}");
        assert_eq!(r["difference"]["verdict"], "one seed: no error bar", "{r}");
    }
    assert!(report.contains("One seed (0): no error bar, so no verdict"), "{report}");
    // the monitor at the epoch end (step 3) of every width of DSPNet and of each one-by-one run
    let curves = c["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 3 + 3, "{curves:?}");
    assert!(curves.iter().all(|k| k["points"].as_array().unwrap().len() == 1 && u(&k["points"][0]["step"]) == 3));

    // resume: a sub-run whose record is gone is trained again; finished ones are kept untouched
    let ck = |name: &str| std::fs::read(out.join(name).join("checkpoint.safetensors")).unwrap();
    let before: Vec<Vec<u8>> = ["dspnet", "byol-w0_25", "byol-w1_00"].iter().map(|n| ck(n)).collect();
    std::fs::remove_file(out.join("byol-w0_50/compare-train.json")).unwrap();
    let again = run(&tiny(&out, "0.25,0.5,1.0", &["--same-budget"]));
    assert_eq!(again.status.code(), Some(2));
    let e = String::from_utf8_lossy(&again.stderr);
    assert!(e.trim().lines().count() == 1 && e.contains("--resume"), "{e}");
    let o = run(&tiny(&out, "0.25,0.5,1.0", &["--same-budget", "--resume"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = |p: &str| stdout.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    let (kept, trained) = (line("kept: "), line("trained: "));
    for n in ["dspnet", "byol-w0_25", "byol-w1_00"] {
        assert!(kept.split_whitespace().any(|k| k == n) && !trained.contains(n), "{stdout}");
    }
    assert!(trained.split_whitespace().any(|k| k == "byol-w0_50"), "{stdout}");
    let after: Vec<Vec<u8>> = ["dspnet", "byol-w0_25", "byol-w1_00"].iter().map(|n| ck(n)).collect();
    assert!(before == after, "kept sub-runs were rewritten");
    assert!(out.join("byol-w0_50/compare-train.json").exists());
    // a resumed comparison with another width list is refused
    let o = run(&tiny(&out, "0.5,1.0", &["--resume"]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    // (info lines of the reused data subset come first; the error is one line, the last)
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(errors.len() == 1 && e.trim_end().ends_with(errors[0]) && errors[0].contains("another comparison"), "{e}");
}

/// `seed = N` of section `[section]` of a config.toml, read line by line.
fn seed_in(config: &str, section: &str) -> u64 {
    let head = format!("[{section}]");
    let body = config.split_once(&format!("{head}\n")).unwrap_or_else(|| panic!("no {head} in\n{config}")).1;
    let body = body.split("\n[").next().unwrap();
    let line = body.lines().find(|l| l.starts_with("seed = ")).unwrap_or_else(|| panic!("no seed in {head}"));
    line["seed = ".len()..].trim().parse().unwrap()
}

/// Sample standard deviation, written out: sqrt(sum (x - mean)^2 / (n - 1)).
fn sd(xs: &[f64]) -> f64 {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0)).sqrt()
}

/// `--seeds`: both sides trained once per seed in OUT/seed{s}/, each sub-run with its seed; the
/// report's means, standard deviations, paired differences and verdicts equal the ones worked
/// out here from the per-seed evaluation records; the kNN monitor's curves of every width;
/// `--resume` with the same seeds keeps everything, adding a seed trains only that seed.
#[test]
fn seeds_bookkeeping_mean_std_resume_and_curves_on_a_tiny_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let args = |seeds: &str, resume: bool| {
        let mut extra = vec!["--protocols", "knn", "--seeds", seeds, "--set", "compare.monitor.every_steps=1"];
        if resume {
            extra.push("--resume");
        }
        tiny(&out, "0.5,1.0", &extra)
    };
    let o = run(&args("1,0", false));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    let line = |stdout: &str, p: &str| stdout.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    let names = ["dspnet", "byol-w0_50", "byol-w1_00"];
    let all = |seeds: &[u64]| -> Vec<String> {
        seeds.iter().flat_map(|s| names.iter().map(move |n| format!("seed{s}/{n}"))).collect()
    };
    assert_eq!(line(&stdout, "trained: "), format!("trained: {}", all(&[0, 1]).join(" ")), "{stdout}");

    // the folder layout: one folder per seed, the data shared, nothing in the flat places
    for n in names {
        assert!(!out.join(n).exists(), "{n} outside the seed folders");
    }
    assert!(out.join("data/train").is_dir() && !out.join("seed0/data").exists());
    // each seed's sub-runs trained with that seed (train.seed and loader.seed), and the seed took
    // effect: the two DSPNet trainings differ
    for s in [0u64, 1] {
        for n in names {
            let run = out.join(format!("seed{s}/{n}"));
            let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
            assert_eq!((seed_in(&config, "train"), seed_in(&config, "loader")), (s, s), "seed{s}/{n}");
            assert!(run.join("compare-train.json").exists() && run.join("compare-eval.json").exists());
        }
    }
    let ck = |name: &str| std::fs::read(out.join(name).join("checkpoint.safetensors")).unwrap();
    assert!(ck("seed0/dspnet") != ck("seed1/dspnet"), "two seeds trained the same weights");

    // mean, standard deviation, paired differences and verdicts from the per-seed records
    let top1 = |seeds: &[u64], name: &str, w: f64| -> Vec<f64> {
        seeds
            .iter()
            .map(|s| {
                let e = json(&out.join(format!("seed{s}/{name}/compare-eval.json")));
                let r = e["records"].as_array().unwrap().iter().find(|r| (f(&r["width"]) - w).abs() < 1e-9).unwrap();
                f(&r["top1"])
            })
            .collect()
    };
    let check_summary = |seeds: &[u64]| {
        let c = json(&out.join("compare.json"));
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert_eq!(c["seeds"], serde_json::json!(seeds));
        let n = seeds.len() as f64;
        for (w, one) in [(0.5, "byol-w0_50"), (1.0, "byol-w1_00")] {
            let (d, o) = (top1(seeds, "dspnet", w), top1(seeds, one, w));
            let diff: Vec<f64> = d.iter().zip(&o).map(|(a, b)| a - b).collect();
            let mean = |x: &[f64]| x.iter().sum::<f64>() / n;
            let se = sd(&diff) / n.sqrt();
            let verdict = if mean(&diff) - 2.0 * se > 0.0 {
                "ahead"
            } else if mean(&diff) + 2.0 * se < 0.0 {
                "behind"
            } else {
                "within noise"
            };
            let row = c["summary"].as_array().unwrap().iter().find(|r| (f(&r["width"]) - w).abs() < 1e-9).unwrap();
            let close = |v: &serde_json::Value, want: f64| (f(v) - want).abs() < 1e-9;
            assert!(
                close(&row["dspnet"]["mean"], mean(&d))
                    && close(&row["dspnet"]["std"], sd(&d))
                    && close(&row["one_by_one"]["mean"], mean(&o))
                    && close(&row["one_by_one"]["std"], sd(&o))
                    && close(&row["difference"]["mean"], mean(&diff))
                    && close(&row["difference"]["standard_error"], se),
                "width {w}: {row}"
            );
            assert_eq!(row["difference"]["verdict"], verdict, "width {w}");
            // every per-seed value is in compare.json, paired by seed
            let per_seed: Vec<f64> = row["dspnet"]["values"].as_array().unwrap().iter().map(f).collect();
            assert_eq!(per_seed, d);
            let want = format!(
                "| {w} | {} | {:.1} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:+.2} ± {:.2} | {verdict} |",
                row["params"],
                f(&row["mflops"]),
                seeds.len(),
                mean(&d),
                sd(&d),
                mean(&o),
                sd(&o),
                mean(&diff),
                se
            );
            assert!(report.contains(&want), "{want} not in\n{report}");
        }
        c
    };
    let c = check_summary(&[0, 1]);

    // the curves: every width of every DSPNet and one-by-one training at steps 1, 2, 3; FLOPs up
    // to the last step = the training's count; the monitor's seconds left out of the wall time
    let runs = c["runs"].as_array().unwrap();
    let curves = c["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 2 * (2 + 2), "{curves:?}");
    for k in curves {
        let steps: Vec<u64> = k["points"].as_array().unwrap().iter().map(|p| u(&p["step"])).collect();
        assert_eq!(steps, vec![1, 2, 3], "{k}");
        let r = runs.iter().find(|r| r["name"] == k["run"]).unwrap();
        assert_eq!(u(&k["points"][2]["train_macs"]), u(&r["train_macs"]), "{k}");
        assert!(k["points"].as_array().unwrap().iter().all(|p| (0.0..=100.0).contains(&f(&p["top1"]))));
    }
    for r in runs {
        let child = json(&out.join(r["name"].as_str().unwrap()).join("compare-child.json"));
        assert!(f(&r["monitor_seconds"]) > 0.0, "{r}");
        assert!((f(&r["seconds"]) + f(&r["monitor_seconds"]) - f(&child["seconds"])).abs() < 1e-9, "{r}");
    }
    let mean_curves = c["mean_curves"].as_array().unwrap();
    assert_eq!(mean_curves.len(), 4);
    let m = mean_curves.iter().find(|m| m["kind"] == "dspnet" && f(&m["width"]) == 0.5).unwrap();
    let at3: Vec<f64> = curves
        .iter()
        .filter(|k| k["kind"] == "dspnet" && f(&k["width"]) == 0.5)
        .map(|k| f(&k["points"][2]["top1"]))
        .collect();
    assert!((f(&m["points"][2]["top1_mean"]) - (at3[0] + at3[1]) / 2.0).abs() < 1e-9, "{m}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("## kNN top-1 during training") && report.contains("(curves/flops-w0_50.png)"), "{report}");
    for png in [
        "compare.png",
        "curves/steps-w0_50.png",
        "curves/flops-w0_50.png",
        "curves/steps-w1_00.png",
        "curves/flops-w1_00.png",
    ] {
        let img = image::open(out.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert_eq!((img.width(), img.height()), (800, 560), "{png}");
    }

    // --resume with the same seeds keeps everything, untouched (bytes and modification times
    // of every file of every sub-run)
    let stamps = |seeds: &[u64]| -> Vec<(String, std::time::SystemTime)> {
        let mut v = Vec::new();
        for n in all(seeds) {
            for e in std::fs::read_dir(out.join(&n)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    v.push((
                        format!("{n}/{}", e.file_name().to_string_lossy()),
                        e.metadata().unwrap().modified().unwrap(),
                    ));
                }
            }
        }
        v.sort();
        v
    };
    let times = stamps(&[0, 1]);
    assert!(times.iter().any(|(n, _)| n == "seed1/byol-w0_50/checkpoint.safetensors"), "{times:?}");
    let before: Vec<Vec<u8>> = all(&[0, 1]).iter().map(|n| ck(n)).collect();
    let o = run(&args("0,1", true));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(line(&stdout, "trained: "), "trained: -", "{stdout}");
    assert_eq!(line(&stdout, "kept: "), format!("kept: {}", all(&[0, 1]).join(" ")), "{stdout}");
    assert_eq!(stamps(&[0, 1]), times, "a kept sub-run was written to");
    // adding a seed trains only that seed's sub-runs
    let o = run(&args("0,1,2", true));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(line(&stdout, "trained: "), format!("trained: {}", all(&[2]).join(" ")), "{stdout}");
    assert_eq!(line(&stdout, "kept: "), format!("kept: {}", all(&[0, 1]).join(" ")), "{stdout}");
    let after: Vec<Vec<u8>> = all(&[0, 1]).iter().map(|n| ck(n)).collect();
    assert!(before == after, "kept sub-runs were rewritten");
    assert_eq!(stamps(&[0, 1]), times, "a kept sub-run was written to");
    let c = check_summary(&[0, 1, 2]);
    assert_eq!(c["per_seed"].as_array().unwrap().len(), 3);
    assert_eq!(c["curves"].as_array().unwrap().len(), 3 * 4);
}

/// A comparison run without `--seeds` (the config's seed 0, sub-runs in OUT) continues with
/// `--resume --seeds 0,1`: its sub-runs are kept where they are as seed 0's, only seed 1 trains,
/// and the summary pairs the kept seed-0 results with seed 1's.
#[test]
fn a_comparison_without_seeds_resumes_with_seeds_keeping_its_runs_as_seed_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let args = |extra: &[&str]| tiny(&out, "0.5,1.0", &[&["--protocols", "knn"], extra].concat());
    let o = run(&args(&[]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flat_ck = std::fs::read(out.join("dspnet/checkpoint.safetensors")).unwrap();
    let o = run(&args(&["--resume", "--seeds", "0,1"]));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    let line = |p: &str| stdout.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    assert_eq!(line("kept: "), "kept: dspnet byol-w0_50 byol-w1_00", "{stdout}");
    assert_eq!(line("trained: "), "trained: seed1/dspnet seed1/byol-w0_50 seed1/byol-w1_00", "{stdout}");
    assert!(!out.join("seed0").exists());
    assert_eq!(std::fs::read(out.join("dspnet/checkpoint.safetensors")).unwrap(), flat_ck);
    let c = json(&out.join("compare.json"));
    assert_eq!((&c["seeds"], &c["seed_folders"]), (&serde_json::json!([0, 1]), &serde_json::json!(true)));
    let top1 = |name: &str, w: f64| -> f64 {
        let e = json(&out.join(name).join("compare-eval.json"));
        f(&e["records"].as_array().unwrap().iter().find(|r| (f(&r["width"]) - w).abs() < 1e-9).unwrap()["top1"])
    };
    for (w, one) in [(0.5, "byol-w0_50"), (1.0, "byol-w1_00")] {
        let row = c["summary"].as_array().unwrap().iter().find(|r| (f(&r["width"]) - w).abs() < 1e-9).unwrap();
        let d = [top1("dspnet", w) - top1(one, w), top1("seed1/dspnet", w) - top1(&format!("seed1/{one}"), w)];
        let got: Vec<f64> = row["difference"]["values"].as_array().unwrap().iter().map(f).collect();
        assert_eq!(got, d, "width {w}");
        // two values: sd = |d0 - d1| / sqrt 2, SE = sd / sqrt 2 = |d0 - d1| / 2
        assert!((f(&row["difference"]["standard_error"]) - (d[0] - d[1]).abs() / 2.0).abs() < 1e-9, "{row}");
    }
}

/// `--one-by-one-widths 0.25,1.0` beside DSPNet over 0.25, 0.5 and 1.0: only those two
/// one-by-one networks train, DSPNet keeps all three widths, rows and verdicts exist for the two
/// and the report says the cost sum leaves 0.5 out. A resume keeps everything when only runtime
/// settings changed or when the recorded plan predates a config key (read with its default), and
/// refuses a changed recipe, naming the key.
#[test]
fn one_by_one_widths_subset_and_resume_across_runtime_changes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let args = |extra: &[&str]| tiny(&out, "0.25,0.5,1.0", &[&["--protocols", "knn"], extra].concat());
    let o = run(&args(&["--one-by-one-widths", "1.0,0.25"]));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    let line = |out: &str, p: &str| out.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    assert_eq!(line(&stdout, "trained: "), "trained: dspnet byol-w0_25 byol-w1_00", "{stdout}");
    assert!(!out.join("byol-w0_50").exists());
    let c = json(&out.join("compare.json"));
    let widths_of = |key: &str| -> Vec<f64> { c[key].as_array().unwrap().iter().map(|r| f(&r["width"])).collect() };
    assert_eq!(widths_of("summary"), vec![0.25, 1.0]);
    let dsp = json(&out.join("dspnet/compare-eval.json"));
    let mut evaluated: Vec<f64> = dsp["records"].as_array().unwrap().iter().map(|r| f(&r["width"])).collect();
    evaluated.sort_by(f64::total_cmp);
    assert_eq!(evaluated, vec![0.25, 0.5, 1.0]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("widths 0.25, 0.5, 1 (one-by-one at 0.25, 1 only)"), "{report}");
    assert!(report.contains("trained at widths 0.25, 1 only (of DSPNet's 0.25, 0.5, 1)"), "{report}");

    // a plan recorded before a config key existed (here train.tf32), resumed with other runtime
    // settings (threads, logging): everything is kept
    let plan_path = out.join("compare-plan.json");
    let mut plan = json(&plan_path);
    let old = plan["dspnet_config"].as_str().unwrap().replace("tf32 = true\n", "");
    assert_ne!(old, plan["dspnet_config"].as_str().unwrap(), "the recorded config names train.tf32");
    plan["dspnet_config"] = serde_json::Value::String(old);
    std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
    let o = run(&args(&[
        "--one-by-one-widths",
        "0.25,1",
        "--resume",
        "--set",
        "train.threads=2",
        "--set",
        "train.checkpoint_every=5",
    ]));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(line(&stdout, "kept: "), "kept: dspnet byol-w0_25 byol-w1_00", "{stdout}");
    assert_eq!(line(&stdout, "trained: "), "trained: -", "{stdout}");
    // a recipe change is another comparison: one line naming the key
    let o = run(&args(&["--resume", "--set", "optim.lr=0.5"]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(errors.len() == 1 && errors[0].contains("another comparison") && errors[0].contains("optim.lr"), "{e}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--preset".into(), "nosuch".into(), "--out".into(), o.into()], "--preset nosuch"),
        (
            vec!["--preset".into(), "cpu".into(), "--out".into(), o.into(), "--widths".into(), "0.3,1.0".into()],
            "--widths",
        ),
        (
            vec!["--preset".into(), "cpu".into(), "--out".into(), o.into(), "--protocols".into(), "knn,nope".into()],
            "nope",
        ),
        (
            vec![
                "--preset".into(),
                "cpu".into(),
                "--out".into(),
                o.into(),
                "--set".into(),
                "compare.data.source=/no/such/folder".into(),
            ],
            "compare.data.source",
        ),
        (
            vec!["--preset".into(), "cpu".into(), "--out".into(), o.into(), "--train-shards".into(), "x".into()],
            "go together",
        ),
        (vec!["--preset".into(), "imagenet".into(), "--out".into(), o.into()], "--train-shards"),
        (vec!["--config".into(), "/no/such.toml".into(), "--out".into(), o.into()], "/no/such.toml"),
        (
            vec!["--preset".into(), "cpu".into(), "--out".into(), o.into(), "--seeds".into(), "3,1,3".into()],
            "--seeds: seed 3 is given twice",
        ),
    ];
    for (args, needle) in cases {
        let r = run(&args);
        let e = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.trim().lines().count() == 1 && e.starts_with("error: ") && e.contains(needle), "{args:?}: {e}");
        assert!(!out.join("compare.json").exists());
    }
}

/// Every file under `dir` (relative path -> bytes).
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// An ablation in one command: `--baseline-from` copies the one-by-one runs of an earlier
/// comparison (untouched) and trains only DSPNet, here with every ablation switch on; a baseline
/// trained with another recipe, or other shards, is refused before anything trains.
#[test]
fn baseline_from_reuses_matching_one_by_one_runs_and_refuses_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let o = run(&tiny(&base, "0.5,1.0", &[]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = snapshot(&base);

    let abl = dir.path().join("ablation");
    let switches = [
        "--set",
        "method.distill_target=online",
        "--set",
        "method.narrow_predictor=separate",
        "--set",
        "heads.bn=shared",
        // 3 steps per epoch: round(0.34 · 3) = 1 step of the full width alone
        "--set",
        "method.narrow_warmup_epochs=0.34",
    ];
    let mut extra = vec!["--baseline-from", base.to_str().unwrap()];
    extra.extend(switches);
    let o = run(&tiny(&abl, "0.5,1.0", &extra));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    let line = |p: &str| stdout.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    assert_eq!(line("trained: "), "trained: dspnet", "{stdout}");
    assert_eq!(line("reused: "), "reused: byol-w0_50 byol-w1_00", "{stdout}");
    // the baseline is untouched; its one-by-one runs were copied byte for byte, but for their
    // training record, which adds where they were trained; its data is used
    assert!(before == snapshot(&base), "the baseline folder changed");
    let (cb, ca) = (json(&base.join("compare.json")), json(&abl.join("compare.json")));
    for name in ["byol-w0_50", "byol-w1_00"] {
        let (mut theirs, mut ours) = (snapshot(&base.join(name)), snapshot(&abl.join(name)));
        let record = std::path::PathBuf::from("compare-train.json");
        let (t, o) = (theirs.remove(&record).unwrap(), ours.remove(&record).unwrap());
        assert!(theirs == ours, "{name} differs from the baseline's");
        let (mut t, mut o): (serde_json::Value, serde_json::Value) =
            (serde_json::from_slice(&t).unwrap(), serde_json::from_slice(&o).unwrap());
        let origin = o.as_object_mut().unwrap().remove("copied_from").expect("the copy names its origin");
        assert_eq!(origin, serde_json::json!({"from": base.display().to_string(), "code_version": cb["code_version"]}));
        assert!(t.as_object_mut().unwrap().remove("copied_from").is_none());
        assert_eq!(t, o, "{name}: the copy's record differs in more than its origin");
    }
    assert!(!abl.join("data").exists());
    assert_eq!(cb["train_shards"], ca["train_shards"]);
    // DSPNet ran the ablation: the switches in its config, 1 warm-up step of the full width
    // then 2 sandwich steps: 3 steps at width 1, 2 at width 0.5
    let config = std::fs::read_to_string(abl.join("dspnet/config.toml")).unwrap();
    for want in [
        "distill_target = \"online\"",
        "narrow_predictor = \"separate\"",
        "bn = \"shared\"",
        "narrow_warmup_epochs = 0.34",
    ] {
        assert!(config.contains(want), "{want} not in\n{config}");
    }
    let runs = ca["runs"].as_array().unwrap();
    let dsp = runs.iter().find(|r| r["kind"] == "dspnet").unwrap();
    let steps_at =
        |w: f64| u(&dsp["width_steps"].as_array().unwrap().iter().find(|p| (f(&p[0]) - w).abs() < 1e-9).unwrap()[1]);
    assert_eq!((steps_at(1.0), steps_at(0.5)), (3, 2));
    let ck = safetensors_names(&abl.join("dspnet/checkpoint.safetensors"));
    assert!(
        ck.iter().any(|n| n.starts_with("online.predictor_narrow."))
            && ck.iter().any(|n| n == "online.projector.bn1.weight")
    );
    // the one-by-one results are the baseline's
    let one_top1 = |c: &serde_json::Value| -> Vec<f64> {
        c["results"].as_array().unwrap().iter().map(|r| f(&r["one_by_one_top1"])).collect()
    };
    assert_eq!(one_top1(&cb), one_top1(&ca));
    // ... and the report says which cost figures were measured in the earlier comparison
    assert_eq!(ca["reused"][0]["runs"], serde_json::json!(["byol-w0_50", "byol-w1_00"]));
    assert_eq!(ca["reused"][0]["code_version"], cb["code_version"]);
    assert_eq!(ca["reused"].as_array().unwrap().len(), 1);
    assert!(cb.get("reused").is_none(), "nothing was reused in the baseline itself");
    let marks_reused = |report: &str| {
        report.contains("| byol-w0_50 (reused) |")
            && report.contains("| byol-w1_00 (reused) |")
            && report.contains("| dspnet |")
            && report.contains(&format!(
                "Reused: byol-w0_50, byol-w1_00 trained in the comparison in {} (code version",
                base.display()
            ))
    };
    let report = std::fs::read_to_string(abl.join("report.md")).unwrap();
    assert!(marks_reused(&report), "{report}");
    // ... and still does when the ablation is reported again (--resume keeps every run)
    let mut again = tiny(&abl, "0.5,1.0", &extra);
    again.push("--resume".into());
    let o = run(&again);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && stdout.contains("trained: -"), "{stdout}");
    let report = std::fs::read_to_string(abl.join("report.md")).unwrap();
    assert!(marks_reused(&report), "after --resume: {report}");
    assert_eq!(json(&abl.join("compare.json"))["reused"], ca["reused"]);

    // a one-by-one recipe change: refused in one line naming the key, before any training
    let bad = dir.path().join("bad");
    let o = run(&tiny(&bad, "0.5,1.0", &["--baseline-from", base.to_str().unwrap(), "--set", "optim.momentum=0.8"]));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(errors.len() == 1 && errors[0].contains("byol-w0_50") && errors[0].contains("optim.momentum"), "{e}");
    assert!(!bad.join("dspnet").exists() && !bad.join("compare-plan.json").exists(), "the mismatch was found too late");
    // other shards: refused, naming them
    let plan = json(&base.join("compare-plan.json"));
    let test_shard = plan["test_shards"][0].as_str().unwrap();
    let o = run(&tiny(
        &bad,
        "0.5,1.0",
        &["--baseline-from", base.to_str().unwrap(), "--train-shards", test_shard, "--test-shards", test_shard],
    ));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.trim().lines().count() == 1 && e.contains("other training shards"), "{e}");
    assert!(before == snapshot(&base), "the baseline folder changed");
}

/// Tensor names of a safetensors file (its JSON header).
fn safetensors_names(p: &Path) -> Vec<String> {
    let bytes = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect()
}

/// Starts `dspnet-compare` with `args` in the background, its output discarded.
fn spawn_quiet(args: &[String]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Pids of the processes whose command line holds `--child-train` and `needle` (Linux /proc),
/// that have not exited (zombies excluded).
#[cfg(target_os = "linux")]
fn live_children(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = state.rsplit(')').next().map(|s| s.trim_start().starts_with('Z')).unwrap_or(true);
        if cmd.contains("--child-train") && cmd.contains(needle) && !zombie {
            out.push(pid);
        }
    }
    out
}

/// A training child must not outlive a killed `dspnet-compare` (it would keep writing into a run
/// folder that a new comparison may be using): the parent is SIGKILLed mid-training, so it
/// cannot forward anything, and the child (thousands of steps left) must be gone within 60 s.
/// The killed parent's end of the child's stdin pipe is closed by the kernel, which stops it;
/// without that it keeps training for minutes.
#[cfg(target_os = "linux")]
#[test]
fn a_training_child_stops_when_dspnet_compare_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let args = tiny(&out, "0.5,1.0", &["--set", "train.epochs=3000.0"]);
    let mut parent = spawn_quiet(&args);
    let needle = out.join("dspnet").display().to_string();
    let t0 = std::time::Instant::now();
    let child = loop {
        if let Some(pid) = live_children(&needle).first() {
            // wait until it is training (its metrics file exists), not still starting up
            if out.join("dspnet/metrics.jsonl").exists() {
                break *pid;
            }
        }
        assert!(t0.elapsed().as_secs() < 300, "no training child appeared within 300 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    parent.kill().unwrap();
    parent.wait().unwrap();
    let t1 = std::time::Instant::now();
    while live_children(&needle).contains(&child) {
        assert!(t1.elapsed().as_secs() < 60, "training child {child} still runs 60 s after dspnet-compare was killed");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Starts a long comparison (DSPNet training for thousands of steps, no periodic checkpoint),
/// in a process group of its own when `own_group`, and waits until DSPNet is training.
#[cfg(target_os = "linux")]
fn long_comparison(out: &Path, own_group: bool) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let args = tiny(out, "0.5,1.0", &["--set", "train.epochs=3000.0"]);
    let mut cmd = Command::new(BIN);
    cmd.args(&args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    if own_group {
        cmd.process_group(0);
    }
    let child = cmd.spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !out.join("dspnet/metrics.jsonl").exists() {
        assert!(t0.elapsed().as_secs() < 300, "DSPNet did not start training within 300 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child
}

/// SIGTERM stops a comparison the way it stops `dspnet-stream-train`, whether it is sent to
/// `dspnet-compare` alone (`kill PID`, a container's PID 1: the parent asks its training child
/// to stop) or to the whole process group (a scheduler, Ctrl-C: both get it, and the child
/// counts it once instead of aborting): the training saves a checkpoint part-way (no periodic
/// ones here, so it can only be the stop's), both processes end within 120 s, and the exit
/// code is 143.
#[cfg(target_os = "linux")]
#[test]
fn sigterm_stops_the_training_with_a_checkpoint_and_exit_code_143() {
    let dir = tempfile::tempdir().unwrap();
    for (case, own_group) in [("alone", false), ("group", true)] {
        let out = dir.path().join(case);
        let mut parent = long_comparison(&out, own_group);
        let target = if own_group { format!("-{}", parent.id()) } else { parent.id().to_string() };
        assert!(Command::new("kill").args(["-TERM", "--", &target]).status().unwrap().success());
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = parent.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed().as_secs() >= 120 {
                parent.kill().unwrap();
                panic!("{case}: dspnet-compare still runs 120 s after SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let needle = out.join("dspnet").display().to_string();
        assert!(live_children(&needle).is_empty(), "{case}: the training child outlived dspnet-compare");
        assert_eq!(status.code(), Some(143), "{case}");
        let state = json(&out.join("dspnet/checkpoint.json"));
        assert!(u(&state["step"]) > 0 && state["finished"] == false, "{case}: {state}");
        assert!(!state["position_in_epoch"].is_null(), "{case}: the checkpoint cannot be resumed exactly: {state}");
        assert!(!out.join("dspnet/compare-train.json").exists(), "{case}");
    }
}

/// The per-step losses of a run's metrics.jsonl, by step (each step once).
fn losses_by_step(run: &Path) -> std::collections::BTreeMap<u64, String> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v.get("elapsed_sec").is_some() {
            let step = u(&v["step"]);
            assert!(out.insert(step, v["loss"].to_string()).is_none(), "step {step} logged twice");
        }
    }
    out
}

/// A comparison whose processes are SIGKILLed mid-training (as a preempted job's are)
/// continues with `--resume` from DSPNet's last checkpoint: it ends with the same weights and
/// per-step losses as the same comparison trained in one go (exact resume), its record counts
/// every step and image in 2 pieces, and report.md names the training that took them.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_comparison_continues_its_training_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        "--protocols",
        "knn",
        "--one-by-one-widths",
        "1.0",
        "--set",
        "train.epochs=20.0",
        "--set",
        "train.checkpoint_every=2",
    ];
    let whole = dir.path().join("whole");
    let o = run(&tiny(&whole, "0.5,1.0", &extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cut = dir.path().join("cut");
    let args = tiny(&cut, "0.5,1.0", &extra);
    let mut parent = spawn_quiet(&args);
    let state = cut.join("dspnet/checkpoint.json");
    let t0 = std::time::Instant::now();
    loop {
        let st: Option<serde_json::Value> = std::fs::read(&state).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(st) = st {
            assert_eq!(st["finished"], false, "DSPNet finished before it could be killed");
            if u(&st["step"]) >= 4 {
                break;
            }
        }
        assert!(t0.elapsed().as_secs() < 300, "no DSPNet checkpoint within 300 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let needle = cut.join("dspnet").display().to_string();
    parent.kill().unwrap();
    for pid in live_children(&needle) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    parent.wait().unwrap();
    while !live_children(&needle).is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let at = u(&json(&state)["step"]);
    assert!((4..60).contains(&at), "checkpoint at step {at}");
    assert!(!cut.join("dspnet/compare-train.json").exists());

    let mut again = args.clone();
    again.push("--resume".into());
    let o = run(&again);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("continuing from its checkpoint"), "{err}");

    // exact: the weights and every step's losses of the comparison trained in one go
    let weights = |d: &Path| std::fs::read(d.join("dspnet/checkpoint.safetensors")).unwrap();
    assert!(weights(&cut) == weights(&whole), "resumed DSPNet weights differ from the one-go run's");
    let (a, b) = (losses_by_step(&cut.join("dspnet")), losses_by_step(&whole.join("dspnet")));
    assert_eq!(a.keys().copied().collect::<Vec<_>>(), (1..=60).collect::<Vec<u64>>());
    assert_eq!(a, b);

    let (rc, rw) = (json(&cut.join("dspnet/compare-train.json")), json(&whole.join("dspnet/compare-train.json")));
    assert_eq!(u(&rc["pieces"]), 2);
    assert_eq!(u(&rw["pieces"]), 1);
    assert_eq!(u(&rc["steps"]), 60);
    assert_eq!(rc["images"], rw["images"]);
    assert_eq!(rc["width_steps"], rw["width_steps"]);
    assert!(f(&rc["seconds"]) > 0.0);
    let report = std::fs::read_to_string(cut.join("report.md")).unwrap();
    assert!(report.contains("dspnet (2 pieces)"), "{report}");
    assert!(!std::fs::read_to_string(whole.join("report.md")).unwrap().contains("pieces)"));
}

/// Sub-runs as parallel jobs sharing one `--out` (`--only`): two jobs started together, DSPNet in
/// one and the one-by-one network in the other, shard the data once between them (the same
/// subset as the comparison run in one go), train the same networks as that run (every step's
/// losses and the final weights equal) and write no report; the run without `--only` then
/// trains nothing and reports the same accuracies as the one-go run.
#[test]
fn only_jobs_share_an_output_folder_and_the_last_run_reports() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--protocols", "knn", "--one-by-one-widths", "1.0"];
    let whole = dir.path().join("whole");
    let o = run(&tiny(&whole, "0.5,1.0", &extra));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let par = dir.path().join("par");
    let job = |only: &str| {
        let mut a = tiny(&par, "0.5,1.0", &extra);
        a.extend(["--only".to_string(), only.to_string()]);
        Command::new(BIN)
            .args(&a)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (job("dspnet"), job("byol-w1_00"));
    for (name, child) in [("dspnet", a), ("byol-w1_00", b)] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "--only {name}: {}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(&format!("trained: {name}")) && out.contains("--only: no report"), "{out}");
    }
    assert!(!par.join("report.md").exists() && !par.join("compare.json").exists());
    assert_eq!(snapshot(&par.join("data")), snapshot(&whole.join("data")), "the data subset differs");
    for run in ["dspnet", "byol-w1_00"] {
        assert_eq!(losses_by_step(&par.join(run)), losses_by_step(&whole.join(run)), "{run}");
        let weights = |d: &Path| std::fs::read(d.join(run).join("checkpoint.safetensors")).unwrap();
        assert!(weights(&par) == weights(&whole), "{run}: weights differ from the one-go run's");
    }

    let mut last = tiny(&par, "0.5,1.0", &extra);
    last.push("--resume".into());
    let o = run(&last);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("trained: -") && out.contains("kept: dspnet byol-w1_00"), "{out}");
    let top1 = |d: &Path| {
        let c = json(&d.join("compare.json"));
        c["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["width"].to_string(), f(&r["dspnet_top1"]), f(&r["one_by_one_top1"])))
            .collect::<Vec<_>>()
    };
    let (p, w) = (top1(&par), top1(&whole));
    assert_eq!(p.len(), 1, "knn at the one width with a one-by-one network");
    assert_eq!(p, w);

    // each training records its host and its process's span inside the jobs' time; the report
    // says one after another for the one-go run, and for the jobs what their spans say
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let spans = |d: &Path| -> Vec<(f64, f64)> {
        let c = json(&d.join("compare.json"));
        c["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["host"].as_str().unwrap(), host);
                let s = r["spans"].as_array().unwrap();
                assert_eq!(s.len(), 1, "one piece");
                let (a, b) = (f(&s[0][0]), f(&s[0][1]));
                assert!(a > 1.7e9 && a < b && b - a < 600.0, "span {a}..{b}");
                (a, b)
            })
            .collect()
    };
    let time_line = |d: &Path| {
        let report = std::fs::read_to_string(d.join("report.md")).unwrap();
        report.lines().find(|l| l.starts_with("- Wall time:")).unwrap().to_string()
    };
    let sw = spans(&whole);
    assert!(sw[0].1 <= sw[1].0 || sw[1].1 <= sw[0].0, "the one-go run's trainings overlap: {sw:?}");
    assert!(time_line(&whole).contains("one after another"), "{}", time_line(&whole));
    // an --only job for another recipe is refused, naming --only (it resumes without --resume)
    let mut other = tiny(&par, "0.5,1.0", &extra);
    other.extend(["--set", "optim.lr=0.5", "--only", "dspnet"].map(String::from));
    let o = run(&other);
    let e = String::from_utf8_lossy(&o.stderr);
    let last = e.trim().lines().last().unwrap_or_default();
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(last.starts_with("error: --only: ") && last.contains("optim.lr"), "{e}");
    let sp = spans(&par);
    let report = std::fs::read_to_string(par.join("report.md")).unwrap();
    if sp[0].0 < sp[1].1 && sp[1].0 < sp[0].1 {
        assert!(time_line(&par).contains("at the same time on the same machine"), "{}", time_line(&par));
        assert!(
            report.contains("Trained at the same time on the same machine")
                && report.contains("dspnet with byol-w1_00")
        );
    } else {
        assert!(time_line(&par).contains("one after another"), "{}", time_line(&par));
        assert!(!report.contains("Trained at the same time"));
    }
}

/// A job asked for a sub-run that another process is training stops at once with one line
/// naming it (exit code 2) instead of training it a second time in the same folder.
#[cfg(target_os = "linux")]
#[test]
fn a_second_job_for_a_training_sub_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let mut args = tiny(&out, "0.5,1.0", &["--set", "train.epochs=3000.0", "--only", "dspnet"]);
    let mut first = spawn_quiet(&args);
    let needle = out.join("dspnet").display().to_string();
    let t0 = std::time::Instant::now();
    while !out.join("dspnet/metrics.jsonl").exists() {
        assert!(t0.elapsed().as_secs() < 300, "the first job did not start training within 300 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    args.push("--resume".into());
    let o = run(&args);
    let e = String::from_utf8_lossy(&o.stderr);
    first.kill().unwrap();
    first.wait().unwrap();
    for pid in live_children(&needle) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert_eq!(o.status.code(), Some(2), "{e}");
    // its log lines (the data reused) come first; the error is one line, the last
    let last = e.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("dspnet is being trained by another dspnet-compare"), "{e}");
    assert_eq!(e.lines().filter(|l| l.starts_with("error: ")).count(), 1, "{e}");
    assert!(out.join("dspnet/metrics.jsonl").exists(), "the first job's run folder was left alone");
}
