//! `dspnet-bench`: the performance figures of issue 6, every one measured in ONE run on the
//! machine where it runs, each printed beside its baseline (measured in the same run), the ratio
//! and the target.
//!
//! ```text
//! dspnet-bench [--quick] [--out FILE.json] [--skip loader,trainer,peer,e2e,shard] [--threads N]
//!              [--batch B] [--steps S]
//! ```
//!
//! * peaks: GEMM (square matmul) and 3x3 convolution (forward, ResNet-18 layer2/layer3 shapes)
//!   in fp32 and bf16, channels_last for the convolutions;
//! * trainer: images/s of the single-width BYOL step and of the all-widths DSPNet step (widths
//!   0.25/0.5/0.75/1.0, sandwich rule, one shared momentum teacher) on the small-image ResNet-18
//!   of `configs/cifar10-small.toml` (base 64, 32 px, heads 4096/256, LARS), batch 128 (32 with
//!   `--quick`), in fp32 and on the fast path (bf16 + channels_last, fp32 master weights, heads
//!   and loss); achieved GFLOP/s and peak memory;
//! * peer: `bench/peer/peer_step.py` (the same BYOL step from torchvision/PyTorch modules, fp32
//!   and bf16 autocast + channels_last) when `.venv` has torch;
//! * loader: the loader contributor's `bench/src/loader.rs` (twin views at 224 and 32 px, the
//!   decode-only ceiling, PyTorch DataLoader + torchvision as the peer);
//! * end to end: a real short `dspnet-stream-train` run (the library's run loop) from CIFAR-10
//!   shards with the fraction of step time the trainer waited for data;
//! * shard: `bench/src/shard.rs` (`dspnet-shard`'s library path on CIFAR-10 class folders and on
//!   an ILSVRC-layout archive of COCO photos, against Python webdataset's `ShardWriter`).
//!
//! FLOP convention: forward FLOPs = 2 x the backbone's convolution multiply-accumulates
//! (`SlimResNet::flops`; heads, BN, ReLU and additions not counted: < 1 % here); a training
//! pass of the online network = 3 x its forward FLOPs (forward + backward for activations and
//! weights), the momentum teacher = 1 x; per image both views: single-width BYOL step =
//! 2 x (3 + 1) x F(1.0) = 8.9 GFLOP at 32 px; all-widths step = 2 x (3 x sum_w F(w) + F(1.0)).
//!
//! Peak memory: the process's peak resident set size (`VmHWM` in /proc/self/status) over the
//! warm-up and timed steps of a freshly built trainer, after returning freed heap memory to the
//! kernel (glibc `malloc_trim`) and resetting the peak through /proc/self/clear_refs; it
//! includes libtorch, weights, teacher, optimiser state, activations and allocator caches.
//!
//! Exit codes: 0 (figures printed, whether or not targets pass), 2 on bad input (options, an
//! unwritable --out, missing shared data), 1 when a measurement fails.

mod loader;
mod shard;

use clap::Parser;
use dspnet_core::machine::cpu_has_native_bf16;
use dspnet_model::ComputeFormat;
use dspnet_pipeline::shard::{RawSample, ShardWriter, ShardWriterConfig};
use dspnet_run::config::Method;
use dspnet_run::RunConfig;
use dspnet_trainer::{train, RunLength, TrainRequest, Trainer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The trainer workload's configuration (model, heads, optimiser, augmentations).
const PRESET: &str = include_str!("../../configs/cifar10-small.toml");
const PRESET_NAME: &str = "configs/cifar10-small.toml";
const WIDTHS: [f64; 4] = [0.25, 0.5, 0.75, 1.0];
const IMAGE: i64 = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Loader,
    Trainer,
    Peer,
    E2e,
    Shard,
}

#[derive(Parser)]
#[command(
    version,
    about = "Throughput of dspnet's loader and trainer against the hardware limits and the PyTorch peer, measured in one run"
)]
struct Args {
    /// Smaller workloads (trainer batch 32, 2 timed steps, fewer images): about 2 minutes on 2
    /// idle cores with native bf16.
    #[arg(long)]
    quick: bool,
    /// Also write every figure and the machine description as JSON to this file (atomically).
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,
    /// Parts to leave out, comma-separated: loader, trainer, peer, e2e, shard.
    #[arg(long, value_enum, value_delimiter = ',')]
    skip: Vec<Part>,
    /// libtorch intra-op threads (0: libtorch's default, one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Trainer batch size (images per step, each with two views); default 128, 32 with --quick.
    #[arg(long)]
    batch: Option<i64>,
    /// Timed steps per trainer figure after one warm-up step; default 3, 2 with --quick.
    #[arg(long)]
    steps: Option<usize>,
}

/// Sizes of one run.
struct Plan {
    quick: bool,
    batch: i64,
    warmup: usize,
    steps: usize,
    peak_reps: usize,
    gemm_n: i64,
    conv_batch: i64,
    /// Also measure fp32 + channels_last and bf16 through CPU autocast, and the peer with
    /// both views concatenated.
    extra_variants: bool,
    e2e_images: usize,
    e2e_steps: u64,
    e2e_batch: usize,
}

impl Plan {
    fn new(args: &Args) -> Result<Self, String> {
        let q = args.quick;
        let p = Plan {
            quick: q,
            batch: args.batch.unwrap_or(if q { 32 } else { 128 }),
            warmup: 1,
            steps: args.steps.unwrap_or(if q { 2 } else { 3 }),
            peak_reps: if q { 3 } else { 5 },
            gemm_n: if q { 1024 } else { 2048 },
            conv_batch: if q { 64 } else { 256 },
            extra_variants: !q,
            e2e_images: if q { 2000 } else { 10_000 },
            e2e_steps: if q { 4 } else { 10 },
            e2e_batch: if q { 32 } else { 128 },
        };
        if p.batch < 2 {
            return Err(format!("--batch {}: batch norm needs at least 2 images; use e.g. 128", p.batch));
        }
        if p.steps < 1 {
            return Err("--steps 0: time at least one step, e.g. --steps 3".into());
        }
        Ok(p)
    }
}

/// One line of the table / one record of the JSON.
#[derive(Clone, Debug)]
struct Row {
    section: String,
    figure: String,
    value: f64,
    unit: String,
    /// What the value is compared with, and its value (measured in this run).
    baseline: Option<(String, f64)>,
    ratio: Option<f64>,
    /// "x" (value / baseline), "%" (of a peak) or "x time" (step-time ratio).
    ratio_unit: &'static str,
    target: Option<String>,
    pass: Option<bool>,
    note: String,
}

impl Row {
    fn new(section: &str, figure: impl Into<String>, value: f64, unit: &str, note: impl Into<String>) -> Self {
        Row {
            section: section.into(),
            figure: figure.into(),
            value,
            unit: unit.into(),
            baseline: None,
            ratio: None,
            ratio_unit: "x",
            target: None,
            pass: None,
            note: note.into(),
        }
    }

    /// value / baseline.
    fn against(mut self, name: impl Into<String>, base: f64) -> Self {
        self.ratio = Some(self.value / base);
        self.baseline = Some((name.into(), base));
        self
    }

    /// value as a percentage of a peak.
    fn of_peak(mut self, name: impl Into<String>, peak: f64) -> Self {
        self.ratio = Some(100.0 * self.value / peak);
        self.ratio_unit = "%";
        self.baseline = Some((name.into(), peak));
        self
    }

    /// Target on the ratio: `at_least` (true) or at most.
    fn target(mut self, text: &str, at_least: bool, bound: f64) -> Self {
        self.target = Some(text.into());
        self.pass = self.ratio.filter(|r| r.is_finite()).map(|r| if at_least { r >= bound } else { r <= bound });
        self
    }

    fn json(&self) -> Value {
        json!({
            "section": self.section, "figure": self.figure, "value": finite(self.value), "unit": self.unit,
            "baseline": self.baseline.as_ref().map(|(n, _)| n.clone()),
            "baseline_value": self.baseline.as_ref().map(|(_, v)| finite(*v)),
            "ratio": self.ratio.map(finite), "ratio_unit": self.ratio_unit,
            "target": self.target, "pass": self.pass, "note": self.note,
        })
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else {
        Value::Null
    }
}

impl From<loader::Figure> for Row {
    fn from(f: loader::Figure) -> Self {
        let target = f.note.starts_with("target").then(|| f.note.clone());
        Row {
            section: f.section,
            figure: f.name,
            value: f.value,
            unit: f.unit,
            baseline: None,
            ratio: None,
            ratio_unit: "x",
            pass: f.pass,
            note: if target.is_some() { String::new() } else { f.note },
            target,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Process measurements (Linux /proc; None elsewhere).

use dspnet_core::machine::{cpu_flags, cpu_model, process_cpu_seconds as cpu_seconds};
use dspnet_core::memory::PeakRss;

/// The three load averages of /proc/loadavg as one string (`None` when unreadable).
fn load_average() -> Option<String> {
    let l = dspnet_core::machine::load_average();
    (!l.is_empty()).then(|| l.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" "))
}

/// Median of measurements (NaN for none).
fn median(v: Vec<f64>) -> f64 {
    dspnet_core::stats::median(&v).unwrap_or(f64::NAN)
}

/// Median wall seconds of `reps` calls of `f` after one untimed call.
fn time_median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f();
        ts.push(t.elapsed().as_secs_f64());
    }
    median(ts)
}

// ---------------------------------------------------------------------------------------------
// Machine.

fn git_commit(root: &Path) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(root).args(["rev-parse", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if commit.is_empty() {
        return None;
    }
    let dirty = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Some(if dirty { format!("{commit}+uncommitted") } else { commit })
}

/// The checkout: the working directory when it holds bench/peer, else the one this binary was
/// built from.
pub fn checkout_root() -> PathBuf {
    if Path::new("bench/peer/peer_step.py").exists() {
        return PathBuf::from(".");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------------------------
// Peaks.

struct Peaks {
    gemm_fp32: f64,
    gemm_bf16: f64,
    conv_fp32: f64,
    conv_bf16: f64,
    conv_shapes: String,
}

fn gemm_gflops(kind: Kind, n: i64, reps: usize) -> f64 {
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu)).to_kind(kind);
    let t = tch::no_grad(|| {
        time_median(reps, || {
            let _ = std::hint::black_box(a.matmul(&b));
        })
    });
    2.0 * (n as f64).powi(3) / t / 1e9
}

/// Best forward GFLOP/s of a 3x3 stride-1 convolution over the ResNet-18 shapes that carry most
/// of its FLOPs at 32 px (layer2: 128 ch 16x16, layer3: 256 ch 8x8), channels_last.
fn conv_gflops(kind: Kind, batch: i64, reps: usize) -> f64 {
    let mut best: f64 = 0.0;
    for (c, hw) in [(128i64, 16i64), (256, 8)] {
        let x = dspnet_model::to_channels_last(
            &Tensor::randn([batch, c, hw, hw], (Kind::Float, Device::Cpu)).to_kind(kind),
        );
        let w = dspnet_model::to_channels_last(
            &(Tensor::randn([c, c, 3, 3], (Kind::Float, Device::Cpu)) * 0.05).to_kind(kind),
        );
        let t = tch::no_grad(|| {
            time_median(reps, || {
                let _ = std::hint::black_box(x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1));
            })
        });
        best = best.max(2.0 * (batch * c * c * 9 * hw * hw) as f64 / t / 1e9);
    }
    best
}

fn measure_peaks(plan: &Plan) -> Peaks {
    Peaks {
        gemm_fp32: gemm_gflops(Kind::Float, plan.gemm_n, plan.peak_reps),
        gemm_bf16: gemm_gflops(Kind::BFloat16, plan.gemm_n, plan.peak_reps),
        conv_fp32: conv_gflops(Kind::Float, plan.conv_batch, plan.peak_reps),
        conv_bf16: conv_gflops(Kind::BFloat16, plan.conv_batch, plan.peak_reps),
        conv_shapes: format!(
            "best of [{b},128,16,16] and [{b},256,8,8] inputs, 3x3 same-channel weight, channels_last, forward, median of {} runs",
            plan.peak_reps,
            b = plan.conv_batch
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Trainer steps.

struct StepResult {
    images_per_s: f64,
    step_s: f64,
    /// Median CPU seconds (all threads) per step: the work done, less sensitive than wall time
    /// to other processes sharing the cores.
    cpu_s: Option<f64>,
    /// CPU seconds / (wall seconds x threads) over the timed steps: about 1 on an idle machine,
    /// well below when other processes took the cores.
    cpu_share: Option<f64>,
    peak_rss: Option<u64>,
    rss_start: Option<u64>,
    /// Training FLOPs per image (both views), see the module docs.
    flops_per_image: f64,
}

impl StepResult {
    fn gflops(&self) -> f64 {
        self.images_per_s * self.flops_per_image / 1e9
    }
}

fn step_config(all_widths: bool, batch: i64) -> Result<RunConfig, String> {
    let mut cfg = RunConfig::from_toml_str(PRESET, PRESET_NAME).map_err(|e| e.to_string())?;
    if all_widths {
        cfg.model.widths = WIDTHS.to_vec();
        cfg.method.name = Method::Dspnet;
    } else {
        cfg.model.widths = vec![1.0];
        cfg.method.name = Method::Byol;
    }
    cfg.method.train_widths = None;
    cfg.method.random_widths = None;
    cfg.method.loss_weights = None;
    cfg.loader.batch_size = batch as usize;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Times `plan.steps` steps (after `plan.warmup`) of a fresh trainer on fixed random views.
fn step_bench(plan: &Plan, all_widths: bool, format: ComputeFormat) -> Result<StepResult, String> {
    let cfg = step_config(all_widths, plan.batch)?;
    let length = RunLength { total_steps: 1000, steps_per_epoch: 100, global_batch: plan.batch as usize };
    let mut trainer = Trainer::new(&cfg, Device::Cpu, length).map_err(|e| e.to_string())?;
    trainer.base.format = format;
    let forward = |w: f64| 2.0 * trainer.base.online.backbone.macs(w, IMAGE, IMAGE) as f64;
    let online: f64 = trainer.method.widths().iter().map(|&w| forward(w)).sum();
    let flops_per_image = 2.0 * (3.0 * online + forward(trainer.base.teacher_width));
    tch::manual_seed(7);
    let shape = [plan.batch, 3, IMAGE, IMAGE];
    let a = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let b = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let peak = PeakRss::start();
    let rss_start = peak.map(|p| p.baseline());
    let mut step = 0u64;
    for _ in 0..plan.warmup {
        trainer.step(&a, &b, step).map_err(|e| e.to_string())?;
        step += 1;
    }
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut times = Vec::with_capacity(plan.steps);
    let mut cpu = Vec::with_capacity(plan.steps);
    for _ in 0..plan.steps {
        let (t, c) = (Instant::now(), cpu_seconds());
        trainer.step(&a, &b, step).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
        if let (Some(c0), Some(c1)) = (c, cpu_seconds()) {
            cpu.push(c1 - c0);
        }
        step += 1;
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu_share = match (cpu0, cpu_seconds()) {
        (Some(c0), Some(c1)) => Some((c1 - c0) / (wall * tch::get_num_threads().max(1) as f64)),
        _ => None,
    };
    let peak_rss = peak.and_then(|p| p.peak());
    let step_s = median(times);
    let cpu_s = (!cpu.is_empty()).then(|| median(cpu));
    Ok(StepResult {
        images_per_s: plan.batch as f64 / step_s,
        step_s,
        cpu_s,
        cpu_share,
        peak_rss,
        rss_start,
        flops_per_image,
    })
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn step_note(plan: &Plan, r: &StepResult) -> String {
    let mut s = format!(
        "batch {}, 32 px, median of {} steps after {} warm-up: {:.2} s/step, {:.2} GFLOP/image",
        plan.batch,
        plan.steps,
        plan.warmup,
        r.step_s,
        r.flops_per_image / 1e9
    );
    if let Some(c) = r.cpu_s {
        s += &format!(", {c:.2} CPU s/step");
    }
    if let Some(c) = r.cpu_share {
        s += &format!(", CPU share {:.0}%", 100.0 * c);
    }
    s
}

struct Variant {
    label: &'static str,
    format: ComputeFormat,
}

struct VariantResult {
    label: &'static str,
    bf16: bool,
    single: StepResult,
    all: StepResult,
}

// ---------------------------------------------------------------------------------------------
// The PyTorch peer.

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

// ---------------------------------------------------------------------------------------------
// End to end.

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

// ---------------------------------------------------------------------------------------------
// Output.

fn fmt_value(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if unit == "bytes" {
        return format!("{v:.0}");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<62} {:>12} {:<9} {:>12} {:>9} {:<8} pass/fail",
        "figure", "value", "unit", "baseline", "ratio", "target"
    );
    let mut section = "";
    for r in rows {
        if r.section != section {
            section = &r.section;
            println!("-- {section} {}", "-".repeat(100usize.saturating_sub(section.len())));
        }
        let base = r.baseline.as_ref().map(|(_, v)| fmt_value(*v, &r.unit)).unwrap_or_default();
        let ratio = match r.ratio {
            Some(x) if x.is_finite() && r.ratio_unit == "%" => format!("{x:.1}%"),
            Some(x) if x.is_finite() => format!("{x:.2}x"),
            Some(_) => "n/a".into(),
            None => String::new(),
        };
        let pass = match r.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None if r.target.is_some() => "n/a",
            None => "",
        };
        println!(
            "{:<62} {:>12} {:<9} {:>12} {:>9} {:<8} {}",
            r.figure,
            fmt_value(r.value, &r.unit),
            r.unit,
            base,
            ratio,
            r.target.as_deref().unwrap_or(""),
            pass
        );
        let mut note = r.note.clone();
        if let Some((name, _)) = &r.baseline {
            note = if note.is_empty() { format!("baseline: {name}") } else { format!("baseline: {name}; {note}") };
        }
        if !note.is_empty() {
            println!("    {note}");
        }
    }
}

/// Fails fast (before minutes of measuring) when --out cannot be written.
fn check_out(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(format!("--out {}: is a folder; give a file name such as bench.json", path.display()));
    }
    let probe = dir.join(format!(".dspnet-bench-probe-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| {
        format!("--out {}: folder {} is not writable ({e}); choose another path", path.display(), dir.display())
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

// ---------------------------------------------------------------------------------------------

enum Failure {
    /// Bad input: exit code 2.
    Input(String),
    /// A measurement failed: exit code 1.
    Run(String),
}

fn run(args: Args) -> Result<(), Failure> {
    let started = Instant::now();
    let plan = Plan::new(&args).map_err(Failure::Input)?;
    if let Some(out) = &args.out {
        check_out(out).map_err(Failure::Input)?;
    }
    let skip = |p: Part| args.skip.contains(&p);
    let data = if skip(Part::Loader) && skip(Part::E2e) && skip(Part::Shard) {
        None
    } else {
        Some(loader::shared_data_dir().map_err(Failure::Input)?)
    };
    if args.threads > 0 {
        tch::set_num_threads(args.threads as i32);
    }
    let root = checkout_root();
    let threads = tch::get_num_threads();
    let native_bf16 = cpu_has_native_bf16();
    let auto = ComputeFormat::resolve("auto", true, Device::Cpu);
    let load_start = load_average();
    eprintln!(
        "dspnet-bench{}: {} ({threads} libtorch threads), native bf16: {native_bf16}, load average {}",
        if plan.quick { " --quick" } else { "" },
        cpu_model(),
        load_start.as_deref().unwrap_or("?")
    );
    let mut rows: Vec<Row> = Vec::new();
    let run_err = Failure::Run;
    let mut sections: Vec<(&str, f64)> = Vec::new();
    let mut mark = Instant::now();
    let mut lap = |name: &'static str, sections: &mut Vec<(&str, f64)>| {
        sections.push((name, mark.elapsed().as_secs_f64()));
        mark = Instant::now();
    };

    // ---- peaks and trainer ----
    let mut fast_single = None;
    let mut fp32_single = None;
    let mut peaks_opt = None;
    if !skip(Part::Trainer) {
        eprintln!("peaks: GEMM and 3x3 convolution ...");
        let peaks = measure_peaks(&plan);
        let s = "peaks";
        rows.push(Row::new(
            s,
            "GEMM fp32",
            peaks.gemm_fp32,
            "GFLOP/s",
            format!("{n}x{n} @ {n}x{n} matmul, median of {} runs", plan.peak_reps, n = plan.gemm_n),
        ));
        rows.push(
            Row::new(s, "GEMM bf16", peaks.gemm_bf16, "GFLOP/s", format!("{n}x{n} @ {n}x{n} matmul", n = plan.gemm_n))
                .against("GEMM fp32", peaks.gemm_fp32),
        );
        rows.push(Row::new(
            s,
            "3x3 convolution fp32, channels_last",
            peaks.conv_fp32,
            "GFLOP/s",
            peaks.conv_shapes.clone(),
        ));
        rows.push(
            Row::new(s, "3x3 convolution bf16, channels_last", peaks.conv_bf16, "GFLOP/s", peaks.conv_shapes.clone())
                .against("3x3 convolution fp32", peaks.conv_fp32),
        );

        // "fp32" is our fp32 step as the presets run it (channels_last = true).
        let mut variants = vec![
            Variant {
                label: "fp32",
                format: ComputeFormat { kind: Kind::Float, channels_last: true, autocast: false },
            },
            Variant {
                label: "fast path (bf16 + channels_last)",
                format: ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: false },
            },
        ];
        if plan.extra_variants {
            variants.push(Variant {
                label: "fp32 contiguous (NCHW)",
                format: ComputeFormat { kind: Kind::Float, channels_last: false, autocast: false },
            });
            variants.push(Variant {
                label: "bf16 + channels_last via CPU autocast",
                format: ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: true },
            });
        }
        let mut results = Vec::new();
        for v in &variants {
            eprintln!("trainer: {} single-width BYOL step ...", v.label);
            let single = step_bench(&plan, false, v.format).map_err(run_err)?;
            eprintln!("trainer: {} all-widths DSPNet step ...", v.label);
            let all = step_bench(&plan, true, v.format).map_err(run_err)?;
            results.push(VariantResult { label: v.label, bf16: v.format.kind == Kind::BFloat16, single, all });
        }
        let s = "trainer";
        for r in &results {
            let (peak_name, peak) =
                if r.bf16 { ("3x3 conv peak bf16", peaks.conv_bf16) } else { ("3x3 conv peak fp32", peaks.conv_fp32) };
            let is_fast = r.label.starts_with("fast path");
            rows.push(Row::new(
                s,
                format!("{}: single-width BYOL step", r.label),
                r.single.images_per_s,
                "images/s",
                step_note(&plan, &r.single),
            ));
            let mut all = Row::new(
                s,
                format!("{}: all-widths DSPNet step", r.label),
                r.all.images_per_s,
                "images/s",
                format!(
                    "{}; ratio = step time all-widths / single-width (FLOP ratio {:.2})",
                    step_note(&plan, &r.all),
                    r.all.flops_per_image / r.single.flops_per_image
                ),
            );
            all.ratio = Some(r.all.step_s / r.single.step_s);
            all.ratio_unit = "x time";
            all.baseline = Some((format!("{} single-width step", r.label), r.single.images_per_s));
            if is_fast {
                all = all.target("<= 1.8x", false, 1.8);
            }
            rows.push(all);
            let mut g = Row::new(
                s,
                format!("{}: single-width step, achieved", r.label),
                r.single.gflops(),
                "GFLOP/s",
                "training FLOPs (module docs) x images/s",
            )
            .of_peak(peak_name, peak);
            if is_fast {
                g = g.target(">= 60%", true, 60.0);
            }
            rows.push(g);
            rows.push(
                Row::new(s, format!("{}: all-widths step, achieved", r.label), r.all.gflops(), "GFLOP/s", "")
                    .of_peak(peak_name, peak),
            );
            let gemm = if r.bf16 { peaks.gemm_bf16 } else { peaks.gemm_fp32 };
            rows.push(
                Row::new(s, format!("{}: single-width step vs GEMM peak", r.label), r.single.gflops(), "GFLOP/s", "")
                    .of_peak(if r.bf16 { "GEMM bf16" } else { "GEMM fp32" }, gemm),
            );
            for (what, x) in [("single-width", &r.single), ("all-widths", &r.all)] {
                if let Some(p) = x.peak_rss {
                    let start = x
                        .rss_start
                        .map(|b| {
                            format!(
                                "; {} resident before the first step (libtorch, weights, teacher, optimiser state)",
                                gib(b)
                            )
                        })
                        .unwrap_or_default();
                    rows.push(Row::new(
                        s,
                        format!("{}: {what} step peak memory", r.label),
                        p as f64,
                        "bytes",
                        format!("peak RSS over warm-up and timed steps = {}{start}", gib(p)),
                    ));
                }
            }
        }
        let fp32 = results.iter().find(|r| r.label == "fp32").map(|r| r.single.images_per_s);
        let fast = results.iter().find(|r| r.label.starts_with("fast path")).map(|r| r.single.images_per_s);
        if let (Some(fp32), Some(fast)) = (fp32, fast) {
            rows.push(
                Row::new(
                    s,
                    "fast path vs our fp32: single-width step",
                    fast,
                    "images/s",
                    format!(
                        "precision auto on this machine = {}{}",
                        auto.name(),
                        if native_bf16 { "" } else { " (no AMX / AVX512-BF16 in /proc/cpuinfo: oneDNN emulates bf16)" }
                    ),
                )
                .against("our fp32 single-width step", fp32)
                .target(">= 4x", true, 4.0),
            );
        }
        if let (Some(e), Some(a)) = (
            results.iter().find(|r| r.label.starts_with("fast path")),
            results.iter().find(|r| r.label.contains("autocast")),
        ) {
            rows.push(
                Row::new(
                    s,
                    "CPU autocast vs explicit bf16 casts: single-width step",
                    a.single.images_per_s,
                    "images/s",
                    "same kernels, different place of the casts",
                )
                .against("explicit casts (fast path)", e.single.images_per_s),
            );
            rows.push(
                Row::new(s, "CPU autocast vs explicit bf16 casts: all-widths step", a.all.images_per_s, "images/s", "")
                    .against("explicit casts (fast path)", e.all.images_per_s),
            );
        }
        fast_single = fast;
        fp32_single = fp32;
        peaks_opt = Some(peaks);
        lap("peaks + trainer", &mut sections);
    }

    // ---- the PyTorch peer ----
    if !skip(Part::Peer) {
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
            match run_peer_step(&root, &plan, bf16, views).map_err(run_err)? {
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
                    if let (Some(f), Some(peaks)) = (single_flops, peaks_opt.as_ref()) {
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
        lap("peer", &mut sections);
    }

    // ---- loader ----
    if !skip(Part::Loader) {
        eprintln!("loader: twin views at 224 and 32 px, decode ceiling, PyTorch DataLoader peer ...");
        let figs = loader::run_loader_bench(plan.quick).map_err(run_err)?;
        rows.extend(figs.into_iter().map(Row::from));
        lap("loader", &mut sections);
    }

    // ---- end to end ----
    if let (false, Some(data)) = (skip(Part::E2e), data.as_ref()) {
        eprintln!("end to end: short training run from CIFAR-10 shards ...");
        let e = end_to_end(&plan, data).map_err(run_err)?;
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
        lap("end-to-end", &mut sections);
    }

    // ---- sharding ----
    if !skip(Part::Shard) {
        eprintln!("shard: dspnet-shard's library path against webdataset's ShardWriter ...");
        let figs = shard::run_shard_bench(plan.quick).map_err(run_err)?;
        rows.extend(figs.into_iter().map(Row::from));
        lap("shard", &mut sections);
    }

    let seconds = started.elapsed().as_secs_f64();
    let load_end = load_average();
    println!();
    print_table(&rows);
    let per_section: Vec<String> = sections.iter().map(|(n, t)| format!("{n} {t:.0} s")).collect();
    let cpu_total = cpu_seconds();
    println!(
        "\nmachine: {} | {threads} libtorch threads | flags: {} | precision auto = {} | load average {} at start, {} at end",
        cpu_model(),
        cpu_flags().join(" "),
        auto.name(),
        load_start.as_deref().unwrap_or("?"),
        load_end.as_deref().unwrap_or("?"),
    );
    println!(
        "time: {seconds:.0} s ({}){}{}",
        per_section.join(", "),
        cpu_total
            .map(|c| format!(", {c:.0} CPU s in this process (the Python peers not included)"))
            .unwrap_or_default(),
        if plan.quick { "; --quick: provisional figures" } else { "" }
    );
    if let Some(out) = &args.out {
        let doc = json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "commit": git_commit(&root),
            "quick": plan.quick,
            "seconds": seconds,
            "section_seconds": sections.iter().map(|(n, t)| json!({"section": n, "seconds": t})).collect::<Vec<_>>(),
            "machine": {
                "cpu_model": cpu_model(),
                "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "libtorch_threads": threads,
                "cpu_flags": cpu_flags(),
                "native_bf16": native_bf16,
                "precision_auto": auto.name(),
                "load_average_start": load_start,
                "load_average_end": load_end,
            },
            "trainer_workload": {
                "preset": PRESET_NAME, "batch": plan.batch, "image_px": IMAGE, "warmup_steps": plan.warmup,
                "timed_steps": plan.steps, "widths_all": WIDTHS,
                "flop_convention": "forward FLOPs = 2 x backbone conv MACs; training = 3 x forward (online) + 1 x forward (teacher), both views",
                "memory_method": "peak RSS: VmHWM of /proc/self/status over warm-up and timed steps of a fresh trainer, after malloc_trim(0) and writing 5 to /proc/self/clear_refs",
            },
            "figures": rows.iter().map(Row::json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Failure::Run(e.to_string()))?;
        dspnet_core::fs::write_atomic(out, text.as_bytes()).map_err(|e| Failure::Run(format!("cannot write {}", e)))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    dspnet_core::cli::init_logging_at("warn");
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        // bad input: the usual one line and exit code 2
        Err(Failure::Input(e)) => dspnet_core::cli::exit_with(Err(e)),
        // a measurement that failed: one line and exit code 1
        Err(Failure::Run(e)) => {
            eprintln!("error: {}", dspnet_core::cli::error_line(&e));
            ExitCode::from(1)
        }
    }
}
