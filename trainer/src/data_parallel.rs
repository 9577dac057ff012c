//! Data-parallel DSPNet over PyTorch's c10d (dspnet-dist): W processes (launched by torchrun or
//! any launcher setting RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) each train on
//! their share of the global batch, as PyTorch DDP does:
//!
//! * at start, rank 0's online network and momentum teacher (weights AND BN running statistics)
//!   are broadcast to every rank, after a check that every rank runs the same configuration;
//! * each step, after the sandwich rule's per-width backward passes, the online network's
//!   gradients are averaged over the ranks in flat buckets (one all-reduce per ~25 MB bucket per
//!   step, not per width), then every rank takes the same optimiser step and EMA update;
//! * the sandwich rule's random widths are the same on every rank: its generator is seeded from
//!   `train.seed` only (never the rank), and the configuration check covers the seed;
//! * with `train.sync_bn`, every switchable BN of both networks normalises with the global
//!   batch statistics (differentiable all-reduce; model crate `sync`).
//!
//! See docs/distributed.md for launching on GPUs, several nodes and SLURM.

use crate::error::TrainerError;
use crate::network::Branch;
use dspnet_dist::{Backend, DistEnv, DistOptions, ProcessGroup};
use dspnet_model::CrossReplicaSum;
use dspnet_run::RunConfig;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// The trainer's part of a data-parallel run: the process group and the online network's
/// trainable parameters (sorted by name, the same order on every rank) whose gradients are
/// averaged before each optimiser step.
pub struct DataParallel {
    /// The process group.
    pub group: Arc<ProcessGroup>,
    /// Trainable parameters of the online network, sorted by name.
    pub params: Vec<Tensor>,
}

impl DataParallel {
    /// Averages the gradients of every parameter over the ranks: ONE bucketed all-reduce (mean)
    /// per step, after every width's backward pass.
    ///
    /// Errors: a dead or hung peer.
    pub fn average_gradients(&self) -> Result<(), TrainerError> {
        Ok(self.group.all_reduce_grads_avg(&self.params)?)
    }
}

/// The device this rank trains on: under data parallel with a CUDA `requested` device, CUDA
/// device LOCAL_RANK (one GPU per process, as torchrun expects); `requested` otherwise.
pub fn device_for_rank(requested: Device) -> Result<Device, TrainerError> {
    match (requested, DistEnv::from_env()?) {
        (Device::Cuda(_), Some(env)) => Ok(Device::Cuda(env.local_rank)),
        (d, _) => Ok(d),
    }
}

/// Joins the process group described by the environment when WORLD_SIZE > 1 (NCCL for CUDA
/// devices when this build has it, Gloo otherwise; timeout `train.dist_timeout_sec`) and makes
/// `online` and `teacher` one rank of a data-parallel run ([`attach`]). `Ok(None)` for a single
/// process.
///
/// Errors: bad launcher variables, rendezvous failures, a configuration that differs between
/// ranks, a peer that dies.
pub fn join(online: &mut Branch, teacher: &mut Branch, cfg: &RunConfig) -> Result<Option<DataParallel>, TrainerError> {
    let device = online.vs.device();
    let backend = match Backend::for_device(device) {
        Backend::Nccl if !Backend::nccl_compiled() => {
            tracing::warn!("this build has no NCCL: Gloo carries the collectives of CUDA tensors (slower)");
            Backend::Gloo
        }
        b => b,
    };
    let options = DistOptions {
        timeout: Duration::from_secs_f64(cfg.runtime.train.dist_timeout_sec),
        backend,
        ..Default::default()
    };
    let Some(group) = ProcessGroup::from_env(&options)? else {
        return Ok(None);
    };
    Ok(Some(attach(Arc::new(group), online, teacher, cfg)?))
}

/// Decides together whether to stop: every rank learns whether any rank was asked to stop, and
/// by which signal (SIGTERM wins over SIGINT, so a preempted job reports 143 on every rank), so
/// a stop reaching the ranks at different steps never leaves one waiting in a collective. One
/// 2-element all-reduce; a single process just returns `local`.
///
/// Errors: a dead peer.
pub fn any_rank_stopping(group: Option<&ProcessGroup>, local: Option<i32>) -> Result<Option<i32>, TrainerError> {
    let Some(g) = group else { return Ok(local) };
    let term = local == Some(15);
    let other = local.is_some() && !term;
    let flags = Tensor::from_slice(&[term as i32 as f32, other as i32 as f32]).to_device(device_of_group(g));
    g.all_reduce_sum(&[flags.shallow_clone()])?;
    Ok(if flags.double_value(&[0]) > 0.0 {
        Some(15)
    } else if flags.double_value(&[1]) > 0.0 {
        Some(local.unwrap_or(2))
    } else {
        None
    })
}

fn device_of_group(g: &ProcessGroup) -> Device {
    match g.backend() {
        Backend::Nccl => Device::Cuda(g.local_rank()),
        Backend::Gloo => Device::Cpu,
    }
}

/// Clean end of a data-parallel run: waits for every rank (rank 0 may still be writing its
/// checkpoint, and it hosts the store), then releases the group.
///
/// Errors: a peer that died before the end.
pub fn finish(group: Option<Arc<ProcessGroup>>) -> Result<(), TrainerError> {
    if let Some(g) = group {
        g.barrier()?;
    }
    Ok(())
}

/// A fingerprint of everything that must agree across ranks: the resolved configuration
/// (architecture, widths, seed, sandwich rule, optimiser, batch size, ...) and the parameter
/// shapes, as 4 f64-exact integers (16-bit chunks of a SHA-256 prefix).
fn fingerprint(cfg: &RunConfig, params: &[(String, Tensor)]) -> [f64; 4] {
    let mut h = Sha256::new();
    h.update(cfg.recipe_toml().as_bytes());
    for (name, t) in params {
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.size(), t.kind()).as_bytes());
    }
    let d = h.finalize();
    let mut out = [0.0; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u16::from_le_bytes([d[2 * i], d[2 * i + 1]]) as f64;
    }
    out
}

/// Makes `online` and `teacher` one rank of a data-parallel run over `group`:
/// 1. checks that every rank has the same configuration and parameter shapes (rank 0's
///    fingerprint is broadcast and compared);
/// 2. broadcasts rank 0's online network and momentum teacher (every variable, including BN
///    running statistics) to all ranks;
/// 3. with `cfg.train.sync_bn`, turns on synchronised batch norm in both networks;
/// 4. returns the [`DataParallel`] whose [`DataParallel::average_gradients`] the momentum base
///    calls once per step, before the optimiser.
///
/// Errors: [`TrainerError::Option`] when the ranks' configurations differ (names the rank);
/// [`TrainerError::Distributed`] when a collective fails.
pub fn attach(
    group: Arc<ProcessGroup>,
    online_branch: &mut Branch,
    teacher_branch: &mut Branch,
    cfg: &RunConfig,
) -> Result<DataParallel, TrainerError> {
    let mut online: Vec<(String, Tensor)> = online_branch.vs.variables().into_iter().collect();
    online.sort_by(|a, b| a.0.cmp(&b.0));
    let mut teacher: Vec<(String, Tensor)> = teacher_branch.vs.variables().into_iter().collect();
    teacher.sort_by(|a, b| a.0.cmp(&b.0));

    let mine = fingerprint(cfg, &online);
    let shared = Tensor::from_slice(&mine).to_kind(Kind::Double).to_device(device_of_group(&group));
    group.broadcast(&[shared.shallow_clone()], 0)?;
    let root: Vec<f64> = Vec::<f64>::try_from(&shared.to_device(Device::Cpu))?;
    // every rank learns whether any rank differs, so all fail together instead of hanging
    let differs = Tensor::from_slice(&[(root != mine) as i32 as f64]).to_device(device_of_group(&group));
    group.all_reduce_sum(&[differs.shallow_clone()])?;
    if differs.double_value(&[0]) > 0.0 {
        return Err(TrainerError::option(
                "--config",
                format!(
                    "rank {} of {}: {} rank(s) run a configuration or model that differs from rank 0's; launch every rank with the same --config and --set options",
                    group.rank(),
                    group.world_size(),
                    differs.double_value(&[0])
                ),
            ));
    }

    let all: Vec<Tensor> = online.iter().chain(teacher.iter()).map(|(_, t)| t.shallow_clone()).collect();
    group.broadcast(&all, 0)?;

    if cfg.train.sync_bn {
        let g: Arc<dyn CrossReplicaSum> = group.clone();
        for branch in [&mut *online_branch, &mut *teacher_branch] {
            branch.backbone.set_cross_replica(Some(g.clone()));
            for head in branch.heads_mut() {
                head.set_cross_replica(Some(g.clone()));
            }
        }
    }
    let params = online.into_iter().filter(|(_, t)| t.requires_grad()).map(|(_, t)| t).collect();
    tracing::info!(
        rank = group.rank(),
        world = group.world_size(),
        backend = group.backend().name(),
        sync_bn = cfg.train.sync_bn,
        "data parallel: weights broadcast from rank 0"
    );
    Ok(DataParallel { group, params })
}
