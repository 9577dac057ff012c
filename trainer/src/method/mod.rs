//! Pretraining methods on the momentum base: DSPNet ([`dspnet`]) and plain BYOL ([`byol`]).
//! A method is its step: the losses and backward passes of one batch, ended by the base's
//! update.

pub mod byol;
pub mod dspnet;

use crate::error::Result;
use crate::momentum::MomentumBase;
use crate::width_grads::Interference;
use dspnet_run::config::Method as MethodName;
use dspnet_run::RunConfig;
use tch::Tensor;

/// What one step did, per trained width (largest first).
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// (width, unweighted loss summed over both view orders, in [0, 8]).
    pub losses: Vec<(f64, f64)>,
    /// (width, the collapse monitor [`crate::collapse::feature_std`] of the online projection of
    /// view a).
    pub feature_std: Vec<(f64, f64)>,
    /// Learning rate used.
    pub lr: f64,
    /// EMA rate used for the teacher update after this step.
    pub tau: f64,
    /// The interference between widths, at the steps `monitor.interference_every_steps` asks
    /// for (DSPNet only).
    pub interference: Option<Interference>,
}

/// A pretraining method: one step on two augmented views of a batch.
pub trait Method {
    /// `dspnet` or `byol`, as `method.name` spells it.
    fn name(&self) -> &'static str;

    /// Widths the method trains, ascending.
    fn widths(&self) -> &[f64];

    /// One training step on two augmented views `[B, C, H, W]` f32 of the same images, at
    /// optimiser step `step` (0-based; it fixes the schedules).
    ///
    /// Errors: [`crate::TrainerError::NonFinite`] for a non-finite loss (names width and
    /// 1-based step) before any update; model, libtorch and data-parallel errors.
    fn step(&mut self, base: &mut MomentumBase, view_a: &Tensor, view_b: &Tensor, step: u64) -> Result<StepStats>;

    /// Word position of the method's own generator (the sandwich rule's), 0 for none: the only
    /// random source of a step, saved in every checkpoint.
    fn rng_word_pos(&self) -> u128;

    /// Restores the generator to a position from [`Method::rng_word_pos`] (for resuming).
    fn set_rng_word_pos(&mut self, pos: u128);
}

/// The method `method.name` names, for a run of `steps_per_epoch` optimiser steps per epoch.
///
/// Errors: widths that do not fit the method (named key).
pub fn build(cfg: &RunConfig, steps_per_epoch: u64) -> Result<Box<dyn Method>> {
    Ok(match cfg.method.name {
        MethodName::Dspnet => Box::new(dspnet::Dspnet::new(cfg, steps_per_epoch)?),
        MethodName::Byol => Box::new(byol::Byol::new(cfg)?),
    })
}
