//! The `peer` section: `bench/peer/peer_step.py` (the same BYOL step from torchvision/PyTorch
//! modules, fp32 and bf16 autocast + channels_last) run from `.venv`, its images/s, achieved
//! GFLOP/s and peak memory, and our single-width step against it.

use crate::cli::Plan;
use crate::peaks::Peaks;
use crate::step::{step_config, IMAGE};
use crate::table::{gib, Row};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tch::Device;

struct PeerStep {
    images_per_s: f64,
    peak_rss: Option<u64>,
    detail: String,
}

fn run_peer_step(root: &Path, plan: &Plan, bf16: bool, views: &str) -> Result<Option<PeerStep>, String> {
    let python = root.join(".venv/bin/python");
    let script = root.join("bench/peer/peer_step.py");
    if !python.exists() || !script.exists() {
        return Ok(None);
    }
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--batch", &plan.batch.to_string()])
        .args(["--warmup", &plan.warmup.to_string()])
        .args(["--steps", &plan.steps.to_string()])
        .args(["--threads", &tch::get_num_threads().to_string()])
        .args(["--views", views])
        .args(["--precision", if bf16 { "bf16" } else { "fp32" }]);
    if bf16 {
        cmd.arg("--channels-last");
    }
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.code() == Some(3) {
        return Ok(None);
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("peer_step.py failed ({}): {}", out.status, err.lines().last().unwrap_or("")));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or("peer_step.py printed no JSON line")?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("peer_step.py output: {e}"))?;
    let ips = v["images_per_s"].as_f64().ok_or("peer_step.py output lacks images_per_s")?;
    let detail = format!(
        "torch {} / torchvision {}, {} threads, CPU capability {}, batch {}, views {}, median of {} steps after {} warm-up: {:.2} s/step, {:.2} CPU s/step",
        v["torch"].as_str().unwrap_or("?"),
        v["torchvision"].as_str().unwrap_or("?"),
        v["threads"],
        v["cpu_capability"].as_str().unwrap_or("?"),
        v["batch"],
        views,
        plan.steps,
        plan.warmup,
        v["median_step_seconds"].as_f64().unwrap_or(f64::NAN),
        v["cpu_seconds_per_step"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(Some(PeerStep { images_per_s: ips, peak_rss: v["peak_rss_bytes"].as_u64(), detail }))
}

/// The `peer` section's rows; `fast_single` and `fp32_single` are our single-width images/s
/// (None when the trainer part was skipped), `peaks_opt` the peaks when measured.
pub fn figures(
    root: &Path,
    plan: &Plan,
    fast_single: Option<f64>,
    fp32_single: Option<f64>,
    peaks_opt: Option<&Peaks>,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let s = "peer";
    let single_flops = step_config(false, plan.batch)
        .ok()
        .and_then(|cfg| dspnet_run::backbone::Backbone::random(&cfg, Device::Cpu).ok())
        .map(|b| 8.0 * 2.0 * b.net.macs(1.0, IMAGE, IMAGE) as f64);
    let mut peer_runs = vec![(false, "separate"), (true, "separate")];
    if plan.extra_variants {
        peer_runs.push((false, "concat"));
        peer_runs.push((true, "concat"));
    }
    for (bf16, views) in peer_runs {
        let label = if bf16 { "PyTorch bf16 autocast + channels_last" } else { "PyTorch fp32" };
        eprintln!("peer: {label} BYOL step (views {views}) ...");
        match run_peer_step(root, plan, bf16, views)? {
            None => {
                rows.push(Row::new(
                    s,
                    format!("{label}: BYOL step"),
                    f64::NAN,
                    "images/s",
                    "not measured: .venv with torch and torchvision not found (run tools/setup.sh)",
                ));
            }
            Some(p) => {
                let suffix = if views == "concat" { ", views concatenated as ours" } else { "" };
                rows.push(Row::new(
                    s,
                    format!("{label}: BYOL step{suffix}"),
                    p.images_per_s,
                    "images/s",
                    p.detail.clone(),
                ));
                let ours = if bf16 { fast_single } else { fp32_single };
                if let Some(o) = ours {
                    let ours_label = if bf16 { "our fast path" } else { "our fp32" };
                    let how = if bf16 {
                        "single-width step, same batch and timing; both bf16 + channels_last"
                    } else {
                        "single-width step, same batch and timing; ours fp32 + channels_last as the presets run it, the peer plain fp32 (contiguous)"
                    };
                    let mut row = Row::new(s, format!("{ours_label} vs {label}{suffix}"), o, "images/s", how)
                        .against(format!("{label} BYOL step{suffix}"), p.images_per_s);
                    if bf16 && views == "separate" {
                        row = row.target(">= 1.1x", true, 1.1);
                    }
                    rows.push(row);
                }
                if let (Some(f), Some(peaks)) = (single_flops, peaks_opt) {
                    let (name, peak) = if bf16 {
                        ("3x3 conv peak bf16", peaks.conv_bf16)
                    } else {
                        ("3x3 conv peak fp32", peaks.conv_fp32)
                    };
                    rows.push(
                        Row::new(s, format!("{label}{suffix}: achieved"), p.images_per_s * f / 1e9, "GFLOP/s", "")
                            .of_peak(name, peak),
                    );
                }
                if let Some(m) = p.peak_rss {
                    rows.push(Row::new(
                        s,
                        format!("{label}{suffix}: peak memory"),
                        m as f64,
                        "bytes",
                        format!("peak RSS of the Python process over the timed steps = {}", gib(m)),
                    ));
                }
            }
        }
    }
    Ok(())
}
