//! `dspnet-gpu-check`: the Rust stages of the device bundle (`tools/device/bundle.sh`,
//! docs/gpu.md), each a subcommand printing one JSON object per figure on stdout (JSON lines, so
//! a stage killed by its time box keeps the figures printed before).
//!
//! ```text
//! dspnet-gpu-check env
//! dspnet-gpu-check correctness [--device cuda] [--smoke]
//! dspnet-gpu-check speed       [--device cuda] [--smoke] [--steps N]
//! torchrun --no-python --nproc-per-node 1 dspnet-gpu-check dist [--device cuda] [--smoke]
//! ```
//!
//! * env: the libtorch built for and found, CUDA and cuDNN as libtorch sees them, device count,
//!   the TF32 defaults.
//! * correctness: `--device` against the CPU from the same weights and inputs. fp32 with TF32
//!   off: every width's backbone forward (output) and backward (every backbone gradient), then
//!   three DSPNet steps (every width's loss, then every online and teacher tensor). A bf16 +
//!   channels_last step on `--device` against the fp32 step there: finite, loss within
//!   [`BF16_LOSS_TOL`]. Each record carries its tolerance and `pass`. On `--device cpu` it
//!   compares the CPU with itself (what the smoke test runs).
//! * speed: images/s of the single-width BYOL step and the all-widths DSPNet step for the
//!   small-image ResNet-18 at 32 px (batch 512) and the ResNet-50 with the ImageNet stem at
//!   224 px (batch 128), fp32 (TF32 on) and bf16 + channels_last; achieved TFLOP/s (the
//!   convention of `dspnet-bench`: a training pass is 3x the forward FLOPs, the teacher 1x)
//!   beside the bf16 GEMM and 3x3-convolution peaks measured in the same run.
//! * dist: joins the job torchrun describes on the collective backend of `--device` (NCCL on
//!   CUDA, Gloo on the CPU) even with one process (the trainer leaves a single process alone),
//!   checks an all-reduce, and runs three data-parallel DSPNet steps.
//!
//! Exit codes: 0 (figures printed, whether or not they pass), 2 bad options, 1 a failure.

mod step_shape;

use clap::{Parser, Subcommand};
use dspnet_model::{cuda_settings, parse_device, ComputeFormat};
use dspnet_run::RunConfig;
use dspnet_trainer::{RunLength, Trainer};
use serde_json::{json, Value};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const SMALL: &str = include_str!("../../configs/cifar10-small.toml");
const R50: &str = include_str!("../../configs/imagenet-r50.toml");
/// fp32 (TF32 off), device against CPU: largest |difference| over the largest |reference|.
const FORWARD_TOL: f64 = 1e-4;
const GRAD_TOL: f64 = 1e-3;
const STEP_LOSS_TOL: f64 = 1e-4;
const STEP_WEIGHT_TOL: f64 = 1e-3;
/// bf16 + channels_last step against the fp32 step on the same device: |loss difference| over
/// the fp32 loss.
const BF16_LOSS_TOL: f64 = 5e-2;

#[derive(Parser)]
#[command(version, about = "GPU checks of the device bundle: environment, CUDA-vs-CPU correctness, step speed")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// libtorch built for / found, CUDA and cuDNN availability.
    Env,
    /// The device against the CPU from the same weights and inputs.
    Correctness {
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Toy sizes (narrow network, small batch): the CPU smoke test.
        #[arg(long)]
        smoke: bool,
    },
    /// Step throughput on the device against its measured peaks.
    Speed {
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Toy sizes: the CPU smoke test.
        #[arg(long)]
        smoke: bool,
        /// Timed steps per figure (after 2 warm-up steps); default 10, 1 with --smoke.
        #[arg(long)]
        steps: Option<usize>,
    },
    /// Data-parallel steps on the collective backend of the device, under torchrun.
    Dist {
        /// cpu (Gloo), cuda (NCCL; LOCAL_RANK picks the GPU).
        #[arg(long, default_value = "cuda")]
        device: String,
        /// Toy sizes: the CPU smoke test.
        #[arg(long)]
        smoke: bool,
    },
}

/// Prints one JSON record (a line) and flushes, so a killed stage keeps what it printed.
fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn env() -> Result<(), String> {
    let l = dspnet_model::libtorch::libtorch();
    let (tf32_cudnn, tf32_cublas) = cuda_settings::tf32();
    emit(json!({
        "stage": "env",
        "libtorch_built_for": l.built_version, "libtorch_built_cuda": l.built_cuda,
        "libtorch_built_lib": l.built_lib, "libtorch_found": l.found_version, "libtorch_found_lib": l.found_lib,
        "libtorch_mismatch": l.mismatch_line(),
        "cuda_available": tch::Cuda::is_available(), "cudnn_available": tch::Cuda::cudnn_is_available(),
        "cuda_devices": tch::Cuda::device_count(),
        "tf32_default_cudnn": tf32_cudnn, "tf32_default_cublas": tf32_cublas,
        "cpu_threads": tch::get_num_threads(),
    }));
    if tch::Cuda::is_available() {
        // one bf16 product on the GPU proves the CUDA kernels load
        let a = Tensor::ones([64, 64], (Kind::BFloat16, Device::Cuda(0)));
        let s = a.matmul(&a).sum(Kind::Float).double_value(&[]);
        emit(json!({"stage": "env", "figure": "bf16 matmul on cuda:0", "value": s, "pass": s == 64.0 * 64.0 * 64.0}));
    }
    Ok(())
}

/// The small-image ResNet-18 preset, shrunk for `smoke`.
fn small_config(smoke: bool, all_widths: bool, batch: usize) -> Result<RunConfig, String> {
    let mut cfg = RunConfig::from_toml_str(SMALL, "configs/cifar10-small.toml").map_err(|e| e.to_string())?;
    shape_config(&mut cfg, smoke, all_widths, batch);
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn shape_config(cfg: &mut RunConfig, smoke: bool, all_widths: bool, batch: usize) {
    step_shape::shape_step(cfg, all_widths);
    if smoke {
        cfg.model.base_channels = 16;
        cfg.heads.hidden = 128;
        cfg.heads.out_dim = 32;
    }
    cfg.loader.batch_size = batch;
}

/// Largest |a - b| over the largest |b| (b the CPU reference), both moved to the CPU in f64.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

/// A trainer on `device` with the weights (online, teacher) of a fresh CPU trainer of `cfg`.
fn trainer_like_cpu(cfg: &RunConfig, device: Device, length: RunLength) -> Result<Trainer, String> {
    let cpu = Trainer::new(cfg, Device::Cpu, length).map_err(|e| e.to_string())?;
    let mut t = Trainer::new(cfg, device, length).map_err(|e| e.to_string())?;
    t.base.online.vs.copy(&cpu.base.online.vs).map_err(|e| e.to_string())?;
    t.base.teacher.vs.copy(&cpu.base.teacher.vs).map_err(|e| e.to_string())?;
    Ok(t)
}

fn correctness(device: Device, smoke: bool) -> Result<(), String> {
    let batch = if smoke { 4 } else { 32 };
    let mut cfg = small_config(smoke, true, batch)?;
    cfg.train.precision = "fp32".into();
    cfg.train.channels_last = false;
    cfg.train.tf32 = false;
    let length = RunLength { total_steps: 100, steps_per_epoch: 10, global_batch: batch };
    let cpu = Trainer::new(&cfg, Device::Cpu, length).map_err(|e| e.to_string())?;
    let dev = trainer_like_cpu(&cfg, device, length)?;
    cuda_settings::set_tf32(false).map_err(|e| e.to_string())?;
    tch::manual_seed(11);
    let x = Tensor::randn([batch as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let backbone_vars = |t: &Trainer| {
        let mut v: Vec<(String, Tensor)> = t
            .base
            .online
            .vs
            .variables()
            .into_iter()
            .filter(|(n, t)| n.starts_with("backbone.") && t.requires_grad())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (vc, vd) = (backbone_vars(&cpu), backbone_vars(&dev));
    for &w in &cfg.model.widths {
        let mut outs = Vec::new();
        for (t, vars) in [(&cpu, &vc), (&dev, &vd)] {
            let d = t.base.device();
            for (_, p) in vars.iter() {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let y = t.base.online.backbone.forward_t(&x.to_device(d), w, true).map_err(|e| e.to_string())?;
            let r = Tensor::ones_like(&y) * 0.5;
            (&y * r).sum(Kind::Float).backward();
            let grads: Vec<Tensor> =
                vars.iter().map(|(_, p)| if p.grad().defined() { p.grad().copy() } else { p.zeros_like() }).collect();
            outs.push((y.detach(), grads));
        }
        let fwd = rel_diff(&outs[1].0, &outs[0].0);
        let (mut worst, mut worst_name) = (0.0f64, String::new());
        for (i, (name, _)) in vc.iter().enumerate() {
            let d = rel_diff(&outs[1].1[i], &outs[0].1[i]);
            if d > worst || worst_name.is_empty() {
                (worst, worst_name) = (d, name.clone());
            }
        }
        emit(json!({"stage": "correctness", "figure": format!("forward fp32 width {w}"), "value": fwd,
                    "tolerance": FORWARD_TOL, "pass": fwd <= FORWARD_TOL}));
        emit(json!({"stage": "correctness", "figure": format!("backward fp32 width {w}"), "value": worst,
                    "worst_tensor": worst_name, "tolerance": GRAD_TOL, "pass": worst <= GRAD_TOL}));
    }

    // three DSPNet steps from identical fresh weights
    let mut cpu = Trainer::new(&cfg, Device::Cpu, length).map_err(|e| e.to_string())?;
    let mut dev = trainer_like_cpu(&cfg, device, length)?;
    cuda_settings::set_tf32(false).map_err(|e| e.to_string())?;
    tch::manual_seed(12);
    let a = Tensor::randn([batch as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([batch as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    for s in 0..3u64 {
        let sc = cpu.step(&a, &b, s).map_err(|e| e.to_string())?;
        let sd = dev.step(&a, &b, s).map_err(|e| e.to_string())?;
        for ((w, lc), (_, ld)) in sc.losses.iter().zip(&sd.losses) {
            let d = (lc - ld).abs() / lc.abs().max(1e-12);
            emit(json!({"stage": "correctness", "figure": format!("dspnet step {} loss width {w}", s + 1),
                        "cpu": lc, "device": ld, "value": d, "tolerance": STEP_LOSS_TOL, "pass": d <= STEP_LOSS_TOL}));
        }
    }
    for (branch, vc, vd) in [
        ("online", cpu.base.online.vs.variables(), dev.base.online.vs.variables()),
        ("teacher", cpu.base.teacher.vs.variables(), dev.base.teacher.vs.variables()),
    ] {
        let (mut worst, mut worst_name) = (0.0f64, String::new());
        for (name, t) in &vc {
            let d = rel_diff(&vd[name], t);
            if d > worst || worst_name.is_empty() {
                (worst, worst_name) = (d, name.clone());
            }
        }
        emit(json!({"stage": "correctness", "figure": format!("dspnet 3 steps {branch} weights"), "value": worst,
                    "worst_tensor": worst_name, "tolerance": STEP_WEIGHT_TOL, "pass": worst <= STEP_WEIGHT_TOL}));
    }

    // a bf16 + channels_last step against the fp32 step on the device
    let mut fp32 = trainer_like_cpu(&cfg, device, length)?;
    let mut bf = trainer_like_cpu(&cfg, device, length)?;
    bf.base.format = ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: false };
    let lf = fp32.step(&a, &b, 0).map_err(|e| e.to_string())?;
    let lb = bf.step(&a, &b, 0).map_err(|e| e.to_string())?;
    for ((w, x), (_, y)) in lf.losses.iter().zip(&lb.losses) {
        let d = (x - y).abs() / x.abs().max(1e-12);
        emit(json!({"stage": "correctness", "figure": format!("bf16 step loss width {w}"), "fp32": x, "bf16": y,
                    "finite": y.is_finite(), "value": d, "tolerance": BF16_LOSS_TOL,
                    "pass": y.is_finite() && d <= BF16_LOSS_TOL}));
    }
    let finite = bf.base.online.vs.variables().values().all(|t| t.isfinite().all().int64_value(&[]) == 1);
    emit(json!({"stage": "correctness", "figure": "bf16 step weights finite", "value": finite, "pass": finite}));
    Ok(())
}

/// Seconds per call of `f` (median of `reps` after one warm-up), the device synchronised.
fn time_op(device: Device, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    sync(device);
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f();
        sync(device);
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn peaks(device: Device, smoke: bool) -> (f64, f64) {
    let n = if smoke { 256 } else { 8192 };
    let a = Tensor::randn([n, n], (Kind::BFloat16, device));
    let gemm = 2.0 * (n as f64).powi(3) / time_op(device, if smoke { 2 } else { 10 }, || drop(a.matmul(&a))) / 1e12;
    emit(json!({"stage": "speed", "figure": "peak bf16 GEMM", "value": gemm, "unit": "TFLOP/s", "size": n}));
    let (bsz, c, hw) = if smoke { (4, 32, 14) } else { (256, 256, 28) };
    let x = dspnet_model::to_channels_last(&Tensor::randn([bsz, c, hw, hw], (Kind::BFloat16, device)));
    let w = dspnet_model::to_channels_last(&Tensor::randn([c, c, 3, 3], (Kind::BFloat16, device)));
    let flops = 2.0 * (bsz * c * c * 9 * hw * hw) as f64;
    let conv = flops
        / time_op(device, if smoke { 2 } else { 10 }, || {
            drop(x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1));
        })
        / 1e12;
    emit(json!({"stage": "speed", "figure": "peak bf16 3x3 conv channels_last", "value": conv, "unit": "TFLOP/s",
                "shape": [bsz, c, hw, hw]}));
    (gemm, conv)
}

fn speed(device: Device, smoke: bool, steps: usize) -> Result<(), String> {
    cuda_settings::set_cudnn_benchmark(true).map_err(|e| e.to_string())?;
    let (gemm, conv) = peaks(device, smoke);
    // (name, preset, image px, batch)
    let models: [(&str, &str, i64, usize); 2] = if smoke {
        [("r18-small-32px", SMALL, 32, 8), ("r50-imagenet-64px", R50, 64, 4)]
    } else {
        [("r18-small-32px", SMALL, 32, 512), ("r50-imagenet-224px", R50, 224, 128)]
    };
    for (name, preset, px, batch) in models {
        for all_widths in [false, true] {
            for (label, format) in [
                ("fp32-tf32", ComputeFormat { kind: Kind::Float, channels_last: false, autocast: false }),
                ("bf16-channels_last", ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: false }),
            ] {
                let mut cfg = RunConfig::from_toml_str(preset, name).map_err(|e| e.to_string())?;
                shape_config(&mut cfg, smoke, all_widths, batch);
                cfg.train.tf32 = true;
                cfg.validate().map_err(|e| e.to_string())?;
                let length = RunLength { total_steps: 1000, steps_per_epoch: 100, global_batch: batch };
                let mut t = Trainer::new(&cfg, device, length).map_err(|e| e.to_string())?;
                t.base.format = format;
                let fwd = |w: f64| 2.0 * t.base.online.backbone.macs(w, px, px) as f64;
                let online: f64 = t.method.widths().iter().map(|&w| fwd(w)).sum();
                let flops_per_image = 2.0 * (3.0 * online + fwd(t.base.teacher_width));
                let a = Tensor::randn([batch as i64, 3, px, px], (Kind::Float, device));
                let b = Tensor::randn([batch as i64, 3, px, px], (Kind::Float, device));
                let mut step = 0u64;
                for _ in 0..2 {
                    t.step(&a, &b, step).map_err(|e| e.to_string())?;
                    step += 1;
                }
                sync(device);
                let t0 = Instant::now();
                for _ in 0..steps {
                    t.step(&a, &b, step).map_err(|e| e.to_string())?;
                    step += 1;
                }
                sync(device);
                let s = t0.elapsed().as_secs_f64() / steps as f64;
                let ips = batch as f64 / s;
                let tflops = ips * flops_per_image / 1e12;
                let peak = if format.kind == Kind::BFloat16 { gemm.max(conv) } else { f64::NAN };
                emit(json!({
                    "stage": "speed", "model": name, "method": if all_widths { "dspnet all widths" } else { "byol width 1.0" },
                    "format": label, "batch": batch, "image_px": px, "steps": steps, "step_s": s,
                    "images_per_s": ips, "tflops": tflops, "gflop_per_image": flops_per_image / 1e9,
                    "percent_of_bf16_peak": if peak.is_finite() { Some(100.0 * tflops / peak) } else { None },
                }));
            }
        }
    }
    Ok(())
}

fn dist(device: Device, smoke: bool) -> Result<(), String> {
    use dspnet_dist::{Backend, DistEnv, DistOptions, ProcessGroup};
    let get = |k: &str| std::env::var(k).ok();
    let num = |k: &str, d: u64| get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d);
    let env = DistEnv {
        rank: num("RANK", 0) as usize,
        world: num("WORLD_SIZE", 1) as usize,
        local_rank: num("LOCAL_RANK", 0) as usize,
        master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
        master_port: num("MASTER_PORT", 29500) as u16,
        agent_store: get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True"),
        restart_count: num("TORCHELASTIC_RESTART_COUNT", 0),
    };
    let device = match device {
        Device::Cuda(_) => Device::Cuda(env.local_rank),
        d => d,
    };
    let backend = Backend::for_device(device);
    let options = DistOptions { backend, ..Default::default() };
    let t0 = Instant::now();
    let group = ProcessGroup::new(&env, &options).map_err(|e| e.to_string())?;
    emit(
        json!({"stage": "dist", "figure": "rendezvous", "backend": backend.name(), "nccl_compiled": Backend::nccl_compiled(),
                "rank": env.rank, "world": env.world, "seconds": t0.elapsed().as_secs_f64()}),
    );
    let t = Tensor::ones([1024], (Kind::Float, device));
    group.all_reduce_sum(&[t.shallow_clone()]).map_err(|e| e.to_string())?;
    let got = t.mean(Kind::Double).double_value(&[]);
    emit(json!({"stage": "dist", "figure": "all_reduce_sum of ones", "value": got, "expected": env.world,
                "pass": got == env.world as f64}));
    let batch = if smoke { 4 } else { 128 };
    let cfg = small_config(smoke, true, batch)?;
    let length = RunLength { total_steps: 100, steps_per_epoch: 10, global_batch: batch * env.world };
    let mut trainer = Trainer::new(&cfg, device, length).map_err(|e| e.to_string())?;
    trainer.base.attach_data_parallel(std::sync::Arc::new(group), &cfg).map_err(|e| e.to_string())?;
    tch::manual_seed(13 + env.rank as i64);
    let a = Tensor::randn([batch as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([batch as i64, 3, 32, 32], (Kind::Float, Device::Cpu));
    for s in 0..3u64 {
        let t = Instant::now();
        let st = trainer.step(&a, &b, s).map_err(|e| e.to_string())?;
        sync(device);
        let finite = st.losses.iter().all(|(_, l)| l.is_finite());
        emit(json!({"stage": "dist", "figure": format!("data-parallel dspnet step {}", s + 1), "losses": st.losses,
                    "seconds": t.elapsed().as_secs_f64(), "pass": finite}));
    }
    Ok(())
}

fn run(args: Args) -> Result<(), (u8, String)> {
    let bad = |e: dspnet_model::ModelError| (2u8, e.to_string());
    let fail = |e: String| (1u8, e);
    match args.cmd {
        Cmd::Env => env().map_err(fail),
        Cmd::Correctness { device, smoke } => correctness(parse_device(&device).map_err(bad)?, smoke).map_err(fail),
        Cmd::Speed { device, smoke, steps } => {
            let steps = steps.unwrap_or(if smoke { 1 } else { 10 });
            if steps == 0 {
                return Err((2, "--steps 0: time at least one step, e.g. --steps 10".into()));
            }
            speed(parse_device(&device).map_err(bad)?, smoke, steps).map_err(fail)
        }
        Cmd::Dist { device, smoke } => dist(parse_device(&device).map_err(bad)?, smoke).map_err(fail),
    }
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("dspnet-gpu-check: {msg}");
            ExitCode::from(code)
        }
    }
}
