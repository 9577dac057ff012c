//! The `end-to-end` section: a real short run of the library's training loop
//! (`dspnet_trainer::train`, what `dspnet-stream-train` runs) from CIFAR-10 shards written for
//! it, with its throughput and the fraction of step time the trainer waited for data.

use crate::cli::Plan;
use crate::loader;
use crate::step::{PRESET, PRESET_NAME};
use crate::table::Row;
use dspnet_pipeline::shard::{RawSample, ShardWriter, ShardWriterConfig};
use dspnet_run::RunConfig;
use dspnet_trainer::{train, TrainRequest};
use serde_json::Value;
use std::path::Path;
use tch::Device;

struct E2e {
    steps: u64,
    images_per_s: f64,
    wait_all: f64,
    wait_steady: f64,
    precision: String,
    note: String,
}

/// A real short run of the library's training loop (`dspnet_trainer::train`, what
/// `dspnet-stream-train` runs) from CIFAR-10 shards: the preset's model, loader and
/// augmentations, all four widths, precision "auto", one metrics line per step.
fn end_to_end(plan: &Plan, data: &Path) -> Result<E2e, String> {
    let tmp = loader::TempDir::new("e2e")?;
    let shard_dir = tmp.0.join("shards");
    let images = loader::cifar_jpegs(data, plan.e2e_images)?;
    let n_images = images.len();
    let mut w = ShardWriter::new(ShardWriterConfig {
        output_dir: shard_dir.clone(),
        prefix: "cifar".into(),
        samples_per_shard: Some(1000),
        max_shard_bytes: None,
        zstd: false,
        overwrite: false,
    })
    .map_err(|e| e.to_string())?;
    for (i, (bytes, label)) in images.into_iter().enumerate() {
        w.write(&RawSample::new(format!("cifar{i:07}")).with("jpg", bytes).with("cls", label.to_string()))
            .map_err(|e| e.to_string())?;
    }
    let manifest = w.finish(&[]).map_err(|e| e.to_string())?;
    let shards: Vec<String> =
        manifest.shards.iter().map(|s| shard_dir.join(&s.name).to_string_lossy().to_string()).collect();

    let mut cfg = RunConfig::from_toml_str(PRESET, PRESET_NAME).map_err(|e| e.to_string())?;
    cfg.loader.batch_size = plan.e2e_batch;
    cfg.runtime.train.log_every = 1;
    cfg.runtime.train.checkpoint_every = 0;
    cfg.train.epochs = 1.0;
    cfg.validate().map_err(|e| e.to_string())?;
    let workers = cfg.runtime.loader.workers;
    let run_dir = tmp.0.join("run");
    let summary = train(TrainRequest {
        config: cfg,
        shards,
        run_dir: run_dir.clone(),
        max_steps: Some(plan.e2e_steps),
        device: Device::Cpu,
        overwrite: true,
        resume: false,
        stop: dspnet_core::cli::StopSignal::new(),
        progress: false,
    })
    .map_err(|e| e.to_string())?;
    // metrics.jsonl has one line per step: images/s and wait fraction of that step's window.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).map_err(|e| format!("metrics.jsonl: {e}"))?;
    let (mut wait, mut total) = (0.0, 0.0);
    for (i, line) in metrics.lines().enumerate() {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("metrics.jsonl: {e}"))?;
        let ips = v["images_per_sec"].as_f64().unwrap_or(f64::NAN);
        let frac = v["data_wait_fraction"].as_f64().unwrap_or(f64::NAN);
        if i == 0 || ips.is_nan() || ips <= 0.0 {
            continue; // the first step also waits for the loader to start
        }
        let dt = plan.e2e_batch as f64 / ips;
        wait += frac * dt;
        total += dt;
    }
    Ok(E2e {
        steps: summary.steps,
        images_per_s: summary.images_per_sec,
        wait_all: summary.data_wait_fraction,
        wait_steady: if total > 0.0 { wait / total } else { f64::NAN },
        precision: summary.precision.clone(),
        note: format!(
            "{} steps of batch {} from {n_images} CIFAR-10 JPEGs in {} shards, {PRESET_NAME} (widths 0.25-1.0, precision auto = {}), {workers} loader workers sharing the cores with libtorch; {:.1} s including the final checkpoint",
            summary.steps,
            plan.e2e_batch,
            manifest.shards.len(),
            summary.precision,
            summary.seconds
        ),
    })
}

/// The `end-to-end` section's rows from a run over the CIFAR-10 images in `data`.
pub fn figures(plan: &Plan, data: &Path, rows: &mut Vec<Row>) -> Result<(), String> {
    let e = end_to_end(plan, data)?;
    let s = "end-to-end";
    rows.push(Row::new(
        s,
        format!("training run, {} steps: throughput", e.steps),
        e.images_per_s,
        "images/s",
        e.note.clone(),
    ));
    let mut w = Row::new(
        s,
        "trainer waiting for data, steps 2..N",
        100.0 * e.wait_steady,
        "%",
        format!(
            "of step time ({} steps); over all steps including the loader's start-up: {:.1}%",
            e.precision,
            100.0 * e.wait_all
        ),
    );
    w.target = Some("< 5%".into());
    w.pass = e.wait_steady.is_finite().then_some(e.wait_steady < 0.05);
    rows.push(w);
    Ok(())
}
