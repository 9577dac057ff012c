//! BYOL (Grill et al. 2020, arXiv 2006.07733) at one width: the one-by-one baseline DSPNet is
//! measured against. The online network at width w predicts the momentum teacher's projection
//! of the other view; one backward pass, one optimiser step, the teacher's EMA.

use super::{Method, StepStats};
use crate::collapse::feature_std;
use crate::error::{NonFiniteLoss, Result, TrainerError};
use crate::loss::regression_loss;
use crate::momentum::MomentumBase;
use dspnet_run::RunConfig;
use tch::{Kind, Tensor};

/// Plain BYOL on the one trained width.
pub struct Byol {
    /// The trained width (its list of one, for [`Method::widths`]).
    width: [f64; 1],
}

impl Byol {
    /// BYOL at the one width of `method.train_widths` (default `model.widths`).
    ///
    /// Errors: more than one trained width (named key).
    pub fn new(cfg: &RunConfig) -> Result<Self> {
        let widths = cfg.train_widths()?;
        match widths.as_slice() {
            [w] => Ok(Byol { width: [*w] }),
            ws => Err(TrainerError::option(
                "method.train_widths",
                format!(
                    "method.name = \"byol\" trains one width but method.train_widths has {}; set --set method.train_widths=[1.0]",
                    ws.len()
                ),
            )),
        }
    }
}

impl Method for Byol {
    fn name(&self) -> &'static str {
        "byol"
    }

    fn widths(&self) -> &[f64] {
        &self.width
    }

    /// `L = ℓ(q(a), z_b) + ℓ(q(b), z_a)` (BYOL eq. 2, symmetrised), `z` the teacher's
    /// projections (at the model's largest width), `q` the online prediction at the trained
    /// width; backward, then [`MomentumBase::update`].
    fn step(&mut self, base: &mut MomentumBase, view_a: &Tensor, view_b: &Tensor, step: u64) -> Result<StepStats> {
        let w = self.width[0];
        let (ab, n) = base.both_views(view_a, view_b);
        let z = base.teacher_targets(&ab)?;
        let (lr, tau) = (base.lr_at(step), base.ema_rate_at(step));
        base.zero_grad();
        let proj = base.online.project(&ab, w, true, &base.format)?;
        let q = base.online.predict(&proj, w, true)?;
        let loss = regression_loss(&q.narrow(0, 0, n), &z.narrow(0, n, n))
            + regression_loss(&q.narrow(0, n, n), &z.narrow(0, 0, n));
        loss.backward();
        // Loss and feature spread in ONE host synchronisation, after the backward pass is queued
        // (on a GPU the device is not left idle while the host reads the loss). A non-finite
        // loss zeroes the gradients and returns before any weight moves.
        let figures =
            [loss.detach().to_kind(Kind::Double), feature_std(&proj.narrow(0, 0, n).detach()).to_kind(Kind::Double)];
        let values = super::dspnet::read_figures(&figures);
        let (value, spread) = (values[0], values[1]);
        if !value.is_finite() {
            base.zero_grad();
            return Err(TrainerError::NonFinite(NonFiniteLoss { width: w, step: step + 1, value }));
        }
        let stats = StepStats { losses: vec![(w, value)], feature_std: vec![(w, spread)], lr, tau, interference: None };
        base.update(lr, tau)?;
        Ok(stats)
    }

    /// BYOL draws no random numbers in its step.
    fn rng_word_pos(&self) -> u128 {
        0
    }

    fn set_rng_word_pos(&mut self, _pos: u128) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::momentum::RunLength;
    use tch::{Device, Kind};

    #[test]
    fn single_width_run_is_byol_with_teacher_at_that_width() {
        let mut cfg = dspnet_run::testing::tiny_config(&[0.5]);
        cfg.method.name = dspnet_run::config::Method::Byol;
        cfg.validate().unwrap();
        let length = RunLength { total_steps: 10, steps_per_epoch: 10, global_batch: 4 };
        let mut base = MomentumBase::new(&cfg, Device::Cpu, length).unwrap();
        let mut byol = Byol::new(&cfg).unwrap();
        assert_eq!(base.teacher_width, 0.5);
        tch::manual_seed(1);
        let a = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
        let s = byol.step(&mut base, &a, &b, 0).unwrap();
        assert_eq!(s.losses.len(), 1);
        assert_eq!(s.losses[0].0, 0.5);
        // at step 0 teacher == online, so the loss is the predictor's mismatch only: finite, < 8
        assert!(s.losses[0].1.is_finite());
        assert!(s.losses[0].1 < 8.0);
        // BYOL's step equals DSPNet's on one width, to the bit, from the same weights
        let mut cfg_d = cfg.clone();
        cfg_d.method.name = dspnet_run::config::Method::Dspnet;
        let mut base_d = MomentumBase::new(&cfg_d, Device::Cpu, length).unwrap();
        let mut base_b = MomentumBase::new(&cfg, Device::Cpu, length).unwrap();
        base_d.online.vs.copy(&base.online.vs).unwrap();
        base_d.teacher.vs.copy(&base.teacher.vs).unwrap();
        base_b.online.vs.copy(&base.online.vs).unwrap();
        base_b.teacher.vs.copy(&base.teacher.vs).unwrap();
        let mut dspnet = crate::method::dspnet::Dspnet::new(&cfg_d, 10).unwrap();
        for step in 1..3 {
            let d = dspnet.step(&mut base_d, &a, &b, step).unwrap();
            let o = byol.step(&mut base_b, &a, &b, step).unwrap();
            assert_eq!(d.losses, o.losses, "step {step}");
        }
        let (vd, vb) = (base_d.online.vs.variables(), base_b.online.vs.variables());
        for (name, t) in vd {
            assert!(t.equal(&vb[&name]), "{name}");
        }
    }
}
