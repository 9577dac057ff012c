//! The momentum base: what every BYOL-family method shares (solo-learn's `BaseMomentumMethod`).
//! It owns the online network, the momentum teacher and its EMA update, the optimiser, the
//! learning-rate and EMA schedules, the compute format, and the gradient averaging of a
//! data-parallel run. A method ([`crate::method`]) computes losses and backward passes on it and
//! ends each step with [`MomentumBase::update`].

use crate::data_parallel::DataParallel;
use crate::error::{Result, TrainerError};
use crate::network::{copy_into_teacher, ema_update, Branch};
use crate::optim::Optimizer;
use dspnet_core::schedule::{cosine_ramp, warmup_cosine};
use dspnet_model::{ComputeFormat, WidthList};
use dspnet_run::checkpoint::{self, Checkpoint};
use dspnet_run::RunConfig;
use tch::{Device, Tensor};

/// The length of a run, which fixes its schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLength {
    /// Optimiser steps of the whole run.
    pub total_steps: u64,
    /// Optimiser steps per epoch (warm-ups are given in epochs).
    pub steps_per_epoch: u64,
    /// Images per optimiser step over all ranks (the learning rate scales with it).
    pub global_batch: usize,
}

/// Online network, momentum teacher, optimiser and schedules of one run.
pub struct MomentumBase {
    pub online: Branch,
    pub teacher: Branch,
    pub optimizer: Optimizer,
    pub format: ComputeFormat,
    /// Width the momentum teacher runs at: the largest of `model.widths`.
    pub teacher_width: f64,
    pub length: RunLength,
    warmup_steps: u64,
    base_lr: f64,
    ema_base: f64,
    ema_final: f64,
    data_parallel: Option<DataParallel>,
}

impl MomentumBase {
    /// Builds online and teacher branches (weights from libtorch's generator seeded with
    /// `train.seed`; the teacher starts as a copy of the online network, BYOL §3.1) and the
    /// optimiser over the online network's trainable parameters. The learning rate is
    /// `optim.lr · global_batch/256` (linear scaling, Goyal et al. 2017), warmed up linearly over
    /// `optim.warmup_epochs` and decayed with a cosine; the EMA rate follows BYOL's cosine ramp
    /// from `method.ema_base` to `method.ema_final`.
    ///
    /// Errors: a configuration the model cannot be built from.
    ///
    /// On CUDA it also sets the process's GPU math: TF32 for fp32 per `train.tf32`, and cuDNN's
    /// benchmark mode (the step's shapes repeat, so autotuning each once pays).
    pub fn new(cfg: &RunConfig, device: Device, length: RunLength) -> Result<Self> {
        if device.is_cuda() {
            dspnet_model::cuda_settings::set_tf32(cfg.train.tf32)?;
            dspnet_model::cuda_settings::set_cudnn_benchmark(true)?;
        }
        tch::manual_seed(cfg.train.seed as i64);
        let online = Branch::new(cfg, device, true)?;
        let teacher = Branch::new(cfg, device, false)?;
        copy_into_teacher(&teacher, &online)?;
        let params: Vec<(String, Tensor)> =
            online.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        let optimizer = Optimizer::new(&cfg.optim, params);
        Ok(MomentumBase {
            online,
            teacher,
            optimizer,
            format: ComputeFormat::resolve(&cfg.train.precision, cfg.train.channels_last, device),
            teacher_width: WidthList::new(cfg.model.widths.clone())?.largest(),
            length,
            warmup_steps: (cfg.optim.warmup_epochs * length.steps_per_epoch as f64).round() as u64,
            base_lr: cfg.optim.lr * length.global_batch as f64 / 256.0,
            ema_base: cfg.method.ema_base,
            ema_final: cfg.method.ema_final,
            data_parallel: None,
        })
    }

    /// Makes this base one rank of a data-parallel run when the launcher asks for several
    /// processes (see [`crate::data_parallel::join`]); a single process is left as it is.
    ///
    /// Errors: launcher variables, rendezvous, a configuration that differs between ranks.
    pub fn join_data_parallel(&mut self, cfg: &RunConfig) -> Result<()> {
        self.data_parallel = crate::data_parallel::join(&mut self.online, &mut self.teacher, cfg)?;
        Ok(())
    }

    /// Makes this base one rank of a data-parallel run over `group` (see
    /// [`crate::data_parallel::attach`]).
    ///
    /// Errors: a configuration that differs between ranks, a failed collective.
    pub fn attach_data_parallel(
        &mut self,
        group: std::sync::Arc<dspnet_dist::ProcessGroup>,
        cfg: &RunConfig,
    ) -> Result<()> {
        self.data_parallel = Some(crate::data_parallel::attach(group, &mut self.online, &mut self.teacher, cfg)?);
        Ok(())
    }

    /// The data-parallel part of the run, if any.
    pub fn data_parallel(&self) -> Option<&DataParallel> {
        self.data_parallel.as_ref()
    }

    /// Device of the networks.
    pub fn device(&self) -> Device {
        self.online.vs.device()
    }

    /// Learning rate at optimiser step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        warmup_cosine(step, self.length.total_steps, self.warmup_steps, self.base_lr)
    }

    /// EMA rate of the momentum teacher after optimiser step `step` (0-based).
    pub fn ema_rate_at(&self, step: u64) -> f64 {
        cosine_ramp(step, self.length.total_steps, self.ema_base, self.ema_final)
    }

    /// Both views `[B, C, H, W]` f32 (any device; moved with a non-blocking copy) in the compute
    /// format, as ONE batch `[2B, C, H, W]`: every network runs both views in one pass (half
    /// the kernel launches of two passes; BN statistics are then taken over both views).
    /// Returns the batch and `B`.
    pub fn both_views(&self, view_a: &Tensor, view_b: &Tensor) -> (Tensor, i64) {
        let device = self.device();
        let a = self.format.apply(&view_a.to_device_(device, view_a.kind(), true, false));
        let b = self.format.apply(&view_b.to_device_(device, view_b.kind(), true, false));
        let n = a.size()[0];
        (Tensor::cat(&[&a, &b], 0), n)
    }

    /// The momentum teacher's projections `[2B, out_dim]` fp32 of `both_views`, at its width, in
    /// train-mode BN, without gradient: the regression targets of the step.
    ///
    /// Errors: model errors.
    pub fn teacher_targets(&self, both: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.teacher.project(both, self.teacher_width, true, &self.format))
    }

    /// Clears the online network's gradients before a step's backward passes.
    pub fn zero_grad(&mut self) {
        self.optimizer.zero_grad();
    }

    /// Ends a step: the accumulated gradients averaged over the ranks (data parallel only; one
    /// bucketed all-reduce per step), ONE optimiser step at learning rate `lr`, then the
    /// teacher's EMA update at rate `tau`.
    ///
    /// Errors: a dead or hung peer.
    pub fn update(&mut self, lr: f64, tau: f64) -> Result<()> {
        self.average_gradients()?;
        self.optimizer.step(lr);
        self.update_teacher(tau)
    }

    /// The accumulated gradients averaged over the ranks in place (one bucketed all-reduce); a
    /// single process: nothing.
    ///
    /// Errors: a dead or hung peer.
    pub fn average_gradients(&self) -> Result<()> {
        match &self.data_parallel {
            Some(dp) => dp.average_gradients(),
            None => Ok(()),
        }
    }

    /// The teacher's EMA update at rate `tau`: `θ_t ← τ·θ_t + (1 − τ)·θ_online`.
    ///
    /// Errors: libtorch errors.
    pub fn update_teacher(&mut self, tau: f64) -> Result<()> {
        ema_update(&self.teacher, &self.online, tau)
    }

    /// The tensors a checkpoint holds: `online.*`, `teacher.*` (both with BN running
    /// statistics) and `optim.*` (momentum buffers).
    pub fn checkpoint_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = checkpoint::prefixed(&self.online.vs, "online");
        tensors.extend(checkpoint::prefixed(&self.teacher.vs, "teacher"));
        tensors.extend(self.optimizer.state());
        tensors
    }

    /// Restores weights, teacher and optimiser state from `ckpt`.
    ///
    /// Errors: a missing or mis-shaped tensor (names it and the checkpoint).
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        checkpoint::restore_vars(&self.online.vs, ckpt, "online")?;
        checkpoint::restore_vars(&self.teacher.vs, ckpt, "teacher")?;
        self.optimizer.load_state(&ckpt.tensors).map_err(|message| {
            TrainerError::Run(dspnet_run::RunError::checkpoint(
                &ckpt.path,
                format!("{}: {message}", ckpt.path.display()),
            ))
        })
    }

    /// Copies of the BN running statistics (the non-trainable variables) of both branches, which
    /// a forward pass in training mode updates: put back with [`MomentumBase::restore_bn`] when
    /// a non-finite step is skipped.
    pub fn bn_snapshot(&self) -> Vec<(Tensor, Tensor)> {
        [&self.online.vs, &self.teacher.vs]
            .iter()
            .flat_map(|vs| vs.variables().into_values())
            .filter(|t| !t.requires_grad())
            .map(|t| {
                let copy = t.copy();
                (t, copy)
            })
            .collect()
    }

    /// Puts back a [`MomentumBase::bn_snapshot`].
    pub fn restore_bn(snapshot: &[(Tensor, Tensor)]) {
        tch::no_grad(|| {
            for (var, saved) in snapshot {
                var.shallow_clone().copy_(saved);
            }
        });
    }
}
