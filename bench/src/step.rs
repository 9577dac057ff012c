//! The trainer workload (the small-image ResNet-18 of `configs/cifar10-small.toml`, single-width
//! BYOL or all-widths DSPNet) and the timing of its steps: a fresh trainer on fixed random
//! views, warm-up then timed steps, with images/s, CPU seconds and share, peak memory and the
//! training FLOPs per image.

use crate::cli::Plan;
use crate::measure::median;
use dspnet_core::machine::process_cpu_seconds as cpu_seconds;
use dspnet_core::memory::PeakRss;
use dspnet_model::ComputeFormat;
use dspnet_run::RunConfig;
use dspnet_trainer::{RunLength, Trainer};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The trainer workload's configuration (model, heads, optimiser, augmentations).
pub const PRESET: &str = include_str!("../../configs/cifar10-small.toml");
pub const PRESET_NAME: &str = "configs/cifar10-small.toml";
/// The widths of the all-widths step.
pub use crate::step_shape::WIDTHS;
pub const IMAGE: i64 = 32;

pub struct StepResult {
    pub images_per_s: f64,
    pub step_s: f64,
    /// Median CPU seconds (all threads) per step: the work done, less sensitive than wall time
    /// to other processes sharing the cores.
    pub cpu_s: Option<f64>,
    /// CPU seconds / (wall seconds x threads) over the timed steps: about 1 on an idle machine,
    /// well below when other processes took the cores.
    pub cpu_share: Option<f64>,
    pub peak_rss: Option<u64>,
    pub rss_start: Option<u64>,
    /// Training FLOPs per image (both views), see the FLOP convention in main.rs's docs.
    pub flops_per_image: f64,
}

impl StepResult {
    pub fn gflops(&self) -> f64 {
        self.images_per_s * self.flops_per_image / 1e9
    }
}

pub fn step_config(all_widths: bool, batch: i64) -> Result<RunConfig, String> {
    let mut cfg = RunConfig::from_toml_str(PRESET, PRESET_NAME).map_err(|e| e.to_string())?;
    crate::step_shape::shape_step(&mut cfg, all_widths);
    cfg.loader.batch_size = batch as usize;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Times `plan.steps` steps (after `plan.warmup`) of a fresh trainer on fixed random views.
pub fn step_bench(plan: &Plan, all_widths: bool, format: ComputeFormat) -> Result<StepResult, String> {
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
