//! `dspnet-profile`'s work: what every width of a run costs on THIS machine.
//!
//! Per trained width: parameters and multiply-accumulates (the model's own counts,
//! [`dspnet_model::SlimResNet::num_params`] / [`dspnet_model::SlimResNet::flops`] at the run's
//! image size), the bytes of its exported fp32 weights, and for each batch size the measured
//! latency (median and 90th percentile of repeated timed forward passes after warm-up),
//! throughput and peak memory. Slimmable networks exist to be deployed at the width a device
//! affords (Yu et al. 2019, "Slimmable Neural Networks", §1; DSPNet, Wang et al., arXiv
//! 2207.06075, §1): this module measures the "affords".
//!
//! How latency is measured: the run's slimmable backbone (the online network `dspnet-eval`
//! evaluates) runs [`dspnet_model::SlimResNet::forward_t`] in eval mode (BN running statistics)
//! under `no_grad` on a fixed random-normal batch `[B, C, S, S]` (S = `augment.image_size`)
//! cast to the run's compute format ([`ComputeFormat`]: fp32 or bf16, channels-last or not);
//! each pass is timed with a monotonic clock around the call (libtorch CPU ops are synchronous).
//! The network reads each width's weights as slices of the shared full-width weights, as
//! training and `dspnet-eval` do.
//!
//! How peak memory is measured (Linux): before the timed passes of one width and batch size,
//! freed heap memory is returned to the OS (`malloc_trim(0)`, glibc) and the kernel's peak
//! resident set size (`VmHWM` in `/proc/self/status`) is reset to the current resident size by
//! writing `5` to `/proc/self/clear_refs`; after the passes, `VmHWM` minus the resident size
//! before them is the peak resident memory the forward passes added: activations, libtorch /
//! oneDNN scratch buffers and weight casts. The weights themselves are already resident and not
//! counted (see `weight_bytes`). Granularity is one page (4 KiB); `None` where `/proc` does not
//! allow it.

use crate::error::{DeployError, Result};
use crate::run::LoadedRun;
use dspnet_model::ComputeFormat;
use dspnet_model::ResNetConfig;
use dspnet_run::EvalRecord;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// File name of the profile inside a run directory.
pub const PROFILE: &str = "profile.json";
/// File name of the accuracy-against-latency plot.
pub const PLOT: &str = "accuracy_vs_latency.png";

/// What to measure.
#[derive(Clone, Debug)]
pub struct ProfileSettings {
    /// Widths to profile (`None`: every trained width).
    pub widths: Option<Vec<f64>>,
    /// Batch sizes (images per forward pass), each >= 1.
    pub batch_sizes: Vec<i64>,
    /// Untimed forward passes before the timed ones (per width and batch size).
    pub warmup: usize,
    /// Timed forward passes per width and batch size, >= 1.
    pub repeats: usize,
    /// libtorch intra-op threads (`None`: the run's `train.threads`, or libtorch's default
    /// when that is 0).
    pub threads: Option<i32>,
}

/// The machine the figures were measured on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` of the first processor in /proc/cpuinfo ("unknown" elsewhere).
    pub cpu_model: String,
    /// Logical CPUs the OS reports (`std::thread::available_parallelism`).
    pub logical_cpus: usize,
    /// Host name (/proc/sys/kernel/hostname).
    pub hostname: String,
}

impl Machine {
    /// Describes this machine.
    pub fn this() -> Self {
        use dspnet_core::machine;
        Machine {
            cpu_model: machine::cpu_model(),
            logical_cpus: machine::logical_cpus(),
            hostname: machine::hostname(),
        }
    }
}

/// Latency, throughput and memory of one width at one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchLatency {
    /// Images per forward pass.
    pub batch_size: i64,
    /// Timed passes.
    pub repeats: usize,
    /// Median wall-clock time of one pass, ms.
    pub median_ms: f64,
    /// 90th percentile (linear interpolation) of one pass, ms.
    pub p90_ms: f64,
    /// Fastest pass, ms.
    pub min_ms: f64,
    /// Slowest pass, ms.
    pub max_ms: f64,
    /// Throughput at the median: `batch_size / (median_ms / 1000)`, images/s.
    pub images_per_s: f64,
    /// Peak resident memory the passes added, bytes (module docs); `None` when not measurable.
    pub peak_rss_delta_bytes: Option<u64>,
}

/// Everything measured for one width.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WidthProfile {
    /// Width multiplier.
    pub width: f64,
    /// `w0_25` style tag (folder names of exports).
    pub width_tag: String,
    /// Parameters of the standalone sub-network (conv weights + BN affine).
    pub params: i64,
    /// Multiply-accumulates of one image at the run's image size.
    pub flops: u64,
    /// Bytes of the exported weights in fp32 (conv weights, BN affine and running statistics).
    pub weight_bytes: u64,
    /// One entry per batch size, in the order asked.
    pub batches: Vec<BatchLatency>,
}

impl WidthProfile {
    /// The measurement at `batch_size`, if taken.
    pub fn at_batch(&self, batch_size: i64) -> Option<&BatchLatency> {
        self.batches.iter().find(|b| b.batch_size == batch_size)
    }
}

/// Input shape of the timed passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputShape {
    pub channels: i64,
    pub height: i64,
    pub width: i64,
}

/// The contents of `RUN/profile.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// dspnet version that measured it.
    pub dspnet_version: String,
    /// The run directory as given.
    pub run_dir: String,
    /// Optimiser steps of the profiled checkpoint and the sha256 of its weights.
    pub checkpoint_step: u64,
    pub checkpoint_sha256: String,
    /// The backbone's architecture (`model` section of the run's config).
    pub architecture: ResNetConfig,
    /// Shape of one input image.
    pub input: InputShape,
    /// Compute format of the passes: "fp32" or "bf16".
    pub dtype: String,
    /// Inputs (hence activations) in channels-last memory format.
    pub channels_last: bool,
    /// Where it was measured.
    pub machine: Machine,
    /// libtorch intra-op threads during the measurement (`tch::get_num_threads`).
    pub threads: i32,
    /// Untimed and timed passes per width and batch size.
    pub warmup: usize,
    pub repeats: usize,
    /// Seconds since the Unix epoch when the measurement started.
    pub measured_at_unix_s: u64,
    /// 1-minute load average just before measuring (other processes competing for the cores).
    pub load_average_1min: Option<f64>,
    /// How latency and memory were measured (module docs, in one line each).
    pub latency_method: String,
    pub memory_method: String,
    /// Widths, ascending.
    pub widths: Vec<WidthProfile>,
}

const LATENCY_METHOD: &str = "wall-clock time of one eval-mode, no-grad forward pass of the slimmable backbone at the width (SlimResNet::forward_t) on a fixed random batch in the run's compute format, after the warm-up passes; median and p90 (linear interpolation) over the repeats";
const MEMORY_METHOD: &str = "peak resident set size (VmHWM, reset via /proc/self/clear_refs after malloc_trim) during the timed passes minus the resident size before them: activations and scratch buffers, not the already-resident weights";

impl Profile {
    /// Reads a profile written by [`profile_run`].
    ///
    /// # Errors
    /// [`DeployError::Io`] when unreadable, [`DeployError::Run`] when not a profile.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DeployError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            DeployError::Run(format!(
                "{} is not a dspnet-profile file ({e}); delete it or rerun dspnet-profile",
                path.display()
            ))
        })
    }

    /// The width's profile, if measured.
    pub fn width(&self, width: f64) -> Option<&WidthProfile> {
        self.widths.iter().find(|w| (w.width - width).abs() <= dspnet_model::slimmable::WIDTH_TOLERANCE)
    }

    /// Whether this profile's latencies stand for a measurement of `run` here and now at
    /// `batch_size` with `threads` threads in `format`: same machine (CPU model, logical CPUs,
    /// host name), same architecture and input size, same compute format and thread count, and
    /// every trained width measured at that batch size. `Err` carries the first difference, for
    /// the user.
    pub fn matches(
        &self,
        run: &LoadedRun,
        threads: i32,
        batch_size: i64,
        format: ComputeFormat,
    ) -> std::result::Result<(), String> {
        let here = Machine::this();
        if self.machine != here {
            return Err(format!(
                "it was measured on another machine ({}, {} CPUs, host {})",
                self.machine.cpu_model, self.machine.logical_cpus, self.machine.hostname
            ));
        }
        let same_arch = serde_json::to_value(&self.architecture).ok() == serde_json::to_value(&run.config.model).ok();
        let s = run.image_size();
        if !same_arch || self.input != (InputShape { channels: run.config.model.in_channels, height: s, width: s }) {
            return Err("it describes another architecture or input size".into());
        }
        if self.dtype != format.name() || self.channels_last != format.channels_last {
            return Err(format!(
                "it was measured in {} (channels_last {}), the run computes in {} (channels_last {})",
                self.dtype,
                self.channels_last,
                format.name(),
                format.channels_last
            ));
        }
        if self.threads != threads {
            return Err(format!("it was measured with threads = {}, here {threads}", self.threads));
        }
        for &w in run.trained_widths.as_slice() {
            if self.width(w).and_then(|p| p.at_batch(batch_size)).is_none() {
                return Err(format!("it has no batch-{batch_size} latency of width {w}"));
            }
        }
        Ok(())
    }
}

/// Resolves and applies the libtorch thread count: `requested`, else the run's `train.threads`
/// when > 0, else libtorch's default. Returns what `tch::get_num_threads` then reports.
///
/// # Errors
/// [`DeployError::Usage`] for a requested count < 1.
pub fn apply_threads(requested: Option<i32>, run: &LoadedRun) -> Result<i32> {
    match requested {
        Some(t) if t < 1 => return Err(DeployError::Usage(format!("--threads {t}: give at least 1 thread"))),
        Some(t) => tch::set_num_threads(t),
        None if run.config.runtime.train.threads > 0 => tch::set_num_threads(run.config.runtime.train.threads as i32),
        None => {}
    }
    Ok(tch::get_num_threads())
}

/// The compute format the run trains and evaluates in, on the CPU.
pub fn run_format(run: &LoadedRun) -> ComputeFormat {
    ComputeFormat::resolve(&run.config.train.precision, run.config.train.channels_last, Device::Cpu)
}

/// Times `repeats` forward passes of `run`'s backbone at `width` on a batch of `batch_size`
/// images after `warmup` untimed ones (module docs), and measures their peak memory.
///
/// # Errors
/// [`DeployError::Width`] for a width the run did not train; [`DeployError::Usage`] for a batch
/// size < 1 or zero repeats; [`DeployError::Model`] / [`DeployError::Torch`] from the forward
/// pass (e.g. an image too small for the network).
pub fn measure(
    run: &LoadedRun,
    width: f64,
    batch_size: i64,
    format: ComputeFormat,
    warmup: usize,
    repeats: usize,
) -> Result<BatchLatency> {
    run.check_width(width)?;
    if batch_size < 1 {
        return Err(DeployError::Usage(format!("batch size {batch_size}: give at least 1 image")));
    }
    if repeats < 1 {
        return Err(DeployError::Usage("--repeats 0: give at least 1 timed pass".into()));
    }
    let s = run.image_size();
    let c = run.config.model.in_channels;
    tch::manual_seed(0);
    let x = format.apply(&Tensor::randn([batch_size, c, s, s], (Kind::Float, Device::Cpu)));
    let (ms, peak) = tch::no_grad(|| -> Result<(Vec<f64>, Option<u64>)> {
        for _ in 0..warmup {
            let _ = run.backbone.forward_t(&x, width, false)?;
        }
        let mem = dspnet_core::memory::PeakRss::start();
        let mut ms = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t0 = Instant::now();
            let y = run.backbone.forward_t(&x, width, false)?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            drop(y);
        }
        Ok((ms, mem.and_then(|m| m.peak_delta())))
    })?;
    let median_ms = dspnet_core::stats::median(&ms).expect("repeats >= 1");
    Ok(BatchLatency {
        batch_size,
        repeats,
        median_ms,
        p90_ms: dspnet_core::stats::percentile(&ms, 90.0).expect("repeats >= 1"),
        min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: ms.iter().copied().fold(0.0, f64::max),
        images_per_s: batch_size as f64 / (median_ms / 1e3),
        peak_rss_delta_bytes: peak,
    })
}

fn load_average_1min() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Profiles `run` (see the module docs): every requested width (ascending) at every batch size.
/// Sets libtorch's thread count ([`apply_threads`]).
///
/// # Errors
/// [`DeployError::Usage`] for empty or non-positive batch sizes, zero repeats or threads < 1;
/// [`DeployError::Width`] for a width the run did not train; errors of [`measure`].
pub fn profile_run(run: &LoadedRun, settings: &ProfileSettings) -> Result<Profile> {
    if settings.batch_sizes.is_empty() {
        return Err(DeployError::Usage("--batch-sizes: give at least one batch size, e.g. 1,64".into()));
    }
    if let Some(b) = settings.batch_sizes.iter().find(|b| **b < 1) {
        return Err(DeployError::Usage(format!(
            "--batch-sizes: {b} is not a batch size; give positive integers, e.g. 1,64"
        )));
    }
    if settings.repeats < 1 {
        return Err(DeployError::Usage("--repeats 0: give at least 1 timed pass".into()));
    }
    let mut widths = match &settings.widths {
        Some(ws) => {
            for &w in ws {
                if run.trained_widths.index_of(w).is_err() {
                    return Err(DeployError::Width {
                        width: w,
                        message: format!(
                            "--widths {w}: the run {} did not train width {w} (trained: {:?}); pass some of those",
                            run.run_dir.display(),
                            run.trained_widths.as_slice()
                        ),
                    });
                }
            }
            ws.clone()
        }
        None => run.trained_widths.as_slice().to_vec(),
    };
    widths.sort_by(f64::total_cmp);
    widths.dedup();
    let threads = apply_threads(settings.threads, run)?;
    let format = run_format(run);
    let load_average_1min = load_average_1min();
    let measured_at_unix_s =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut out = Vec::with_capacity(widths.len());
    for &w in &widths {
        let mut batches = Vec::with_capacity(settings.batch_sizes.len());
        for &b in &settings.batch_sizes {
            let m = measure(run, w, b, format, settings.warmup, settings.repeats)?;
            tracing::info!(width = w, batch = b, median_ms = m.median_ms, p90_ms = m.p90_ms, "measured");
            batches.push(m);
        }
        let weight_bytes = run
            .backbone
            .torchvision_state_dict(&run.vs, w)?
            .iter()
            .map(|(_, t)| t.numel() as u64 * Kind::Float.elt_size_in_bytes() as u64)
            .sum();
        out.push(WidthProfile {
            width: w,
            width_tag: dspnet_model::width_tag(w),
            params: run.params(w),
            flops: run.macs(w),
            weight_bytes,
            batches,
        });
    }
    let s = run.image_size();
    Ok(Profile {
        dspnet_version: env!("CARGO_PKG_VERSION").into(),
        run_dir: run.run_dir.display().to_string(),
        checkpoint_step: run.state.step,
        checkpoint_sha256: run.state.weights_sha256.clone(),
        architecture: run.config.model.clone(),
        input: InputShape { channels: run.config.model.in_channels, height: s, width: s },
        dtype: format.name().into(),
        channels_last: format.channels_last,
        machine: Machine::this(),
        threads,
        warmup: settings.warmup,
        repeats: settings.repeats,
        measured_at_unix_s,
        load_average_1min,
        latency_method: LATENCY_METHOD.into(),
        memory_method: MEMORY_METHOD.into(),
        widths: out,
    })
}

/// Writes `profile` as pretty JSON to `path` atomically (temporary file in the same folder,
/// fsync, rename).
///
/// # Errors
/// [`DeployError::Output`] naming the file when it cannot be written.
pub fn write_profile(profile: &Profile, path: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(profile).expect("a Profile serialises");
    path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        DeployError::Output(format!("--out {}: not a file name; pass e.g. RUN/profile.json", path.display()))
    })?;
    dspnet_core::fs::write_atomic(path, &json).map_err(|e| {
        DeployError::Output(format!(
            "cannot write {} ({e}); make the folder writable or pass --out FILE",
            path.display()
        ))
    })
}

/// Checks, before any measurement, that the profile can be written to `path`: its folder
/// exists and accepts a new file (a probe file is created and removed).
///
/// # Errors
/// [`DeployError::Output`] naming the folder and the fix.
pub fn check_writable(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(DeployError::Output(format!(
            "--out {}: folder {} does not exist; create it or pass another --out FILE",
            path.display(),
            dir.display()
        )));
    }
    let probe = dir.join(format!(".dspnet-profile-probe-{}.tmp", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| {
        DeployError::Output(format!(
            "cannot write into {} ({e}); make the folder writable or pass --out FILE",
            dir.display()
        ))
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map(|b| format!("{:.2}", b as f64 / (1u64 << 20) as f64)).unwrap_or_else(|| "-".into())
}

/// A markdown table: one row per width; params, MFLOPs, weight MiB, then per batch size median
/// and p90 latency (ms), images/s and peak added memory (MiB); then the pretrained top-1 of
/// each protocol in `records` (linear, knn) where present.
pub fn markdown_table(profile: &Profile, records: &[EvalRecord]) -> String {
    let protocols: Vec<&str> = ["linear", "knn"]
        .into_iter()
        .filter(|p| records.iter().any(|r| r.init == "pretrained" && r.protocol == *p))
        .collect();
    let batches: Vec<i64> =
        profile.widths.first().map(|w| w.batches.iter().map(|b| b.batch_size).collect()).unwrap_or_default();
    let mut head = vec!["width".to_string(), "params".into(), "MFLOPs".into(), "weights MiB".into()];
    for b in &batches {
        head.extend([
            format!("b{b} median ms"),
            format!("b{b} p90 ms"),
            format!("b{b} img/s"),
            format!("b{b} peak MiB"),
        ]);
    }
    head.extend(protocols.iter().map(|p| format!("{p} top-1")));
    let mut out = format!(
        "| {} |\n|{}|\n",
        head.join(" | "),
        head.iter().map(|h| format!("{}:", "-".repeat(h.len() + 1))).collect::<Vec<_>>().join("|")
    );
    for w in &profile.widths {
        let mut cells = vec![
            format!("{:?}x", w.width),
            w.params.to_string(),
            format!("{:.3}", w.flops as f64 / 1e6),
            format!("{:.3}", w.weight_bytes as f64 / (1u64 << 20) as f64),
        ];
        for b in &batches {
            match w.at_batch(*b) {
                Some(m) => cells.extend([
                    format!("{:.3}", m.median_ms),
                    format!("{:.3}", m.p90_ms),
                    format!("{:.0}", m.images_per_s),
                    mib(m.peak_rss_delta_bytes),
                ]),
                None => cells.extend(std::iter::repeat_n("-".to_string(), 4)),
            }
        }
        for p in &protocols {
            let t = records
                .iter()
                .find(|r| {
                    r.init == "pretrained"
                        && r.protocol == *p
                        && (r.width - w.width).abs() <= dspnet_model::slimmable::WIDTH_TOLERANCE
                })
                .map(|r| format!("{:.2}", r.top1))
                .unwrap_or_else(|| "-".into());
            cells.push(t);
        }
        out += &format!("| {} |\n", cells.join(" | "));
    }
    out
}

/// Draws the top-1 (%) of the PRETRAINED network under every protocol in `records` (linear,
/// knn) against the median latency at `batch_size` (ms, log scale), one point per profiled width
/// labelled with it, as a PNG written atomically to `path`. Random-init baselines are left out
/// (same latency; `accuracy_vs_flops.png` shows them). Returns `Ok(false)` without drawing when
/// no pretrained record matches a profiled width.
///
/// # Errors
/// [`DeployError::Output`]: the font (Debian fonts-dejavu-core) is missing or the PNG cannot be
/// written.
pub fn plot(profile: &Profile, records: &[EvalRecord], batch_size: i64, path: &Path) -> Result<bool> {
    use dspnet_core::plot::{Legend, LineChart, Series};
    let pts_of = |init: &str, proto: &str| -> Vec<(f64, f64, f64)> {
        let mut v: Vec<(f64, f64, f64)> = records
            .iter()
            .filter(|r| r.init == init && r.protocol == proto)
            .filter_map(|r| Some((profile.width(r.width)?.at_batch(batch_size)?.median_ms, r.top1, r.width)))
            .collect();
        v.sort_by(|a, b| a.2.total_cmp(&b.2)); // joined in width order: the slimmable family
        v
    };
    let mut series: Vec<Series> = Vec::new();
    for r in records.iter().filter(|r| r.init == "pretrained") {
        let label = format!("{} ({})", r.protocol, r.init);
        let pts = pts_of(&r.init, &r.protocol);
        if !series.iter().any(|s| s.label == label) && !pts.is_empty() {
            series.push(Series {
                label,
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
                point_labels: pts.iter().map(|p| format!("{:?}x", p.2)).collect(),
                ..Default::default()
            });
        }
    }
    if series.is_empty() {
        return Ok(false);
    }
    let title = format!(
        "{} {:?} stem, threads: {}, {}, batch {batch_size}",
        profile.architecture.depth, profile.architecture.stem, profile.threads, profile.dtype
    )
    .replace("Small", "small")
    .replace("Imagenet", "imagenet");
    let chart = LineChart {
        title,
        x_label: format!("median latency at batch {batch_size} (ms, log scale), {}", profile.machine.cpu_model),
        y_label: "top-1 (%)".into(),
        x_log: true,
        y_percent: true,
        legend: Legend::LowerRight,
        series,
    };
    chart.write_png(path).map_err(|e| DeployError::Output(e.to_string()))?;
    Ok(true)
}
