//! The DSPNet step (Wang et al., arXiv 2207.06075, as we read it; docs/method.md): the momentum
//! teacher projects both views ONCE, at full width; then every width of the sandwich rule
//! predicts the teacher's projection of the other view (BYOL's regression loss: self-supervision
//! at full width, in-place distillation from the teacher below it) and back-propagates at once;
//! one optimiser step on the summed gradient, then the teacher's EMA.

use super::{Method, StepStats};
use crate::collapse::feature_std;
use crate::error::{NonFiniteLoss, Result, TrainerError};
use crate::loss::regression_loss;
use crate::momentum::MomentumBase;
use crate::sandwich::sandwich_widths;
use crate::width_grads::{self, WidthGrad};
use dspnet_run::config::{DistillTarget, WidthGradients};
use dspnet_run::RunConfig;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Seed offset of the sandwich rule's generator (its seed is `train.seed` XOR this).
const SANDWICH_SEED: u64 = 0x5a4d_5749_4454_4853;

/// DSPNet: the sandwich rule over the trained widths, with in-place distillation.
pub struct Dspnet {
    /// Widths trained (ascending).
    pub widths: Vec<f64>,
    /// Loss weight per trained width (`method.loss_weights`, default 1 each).
    loss_weights: Vec<f64>,
    /// Random middle widths per step (`method.random_widths`).
    random_widths: Option<usize>,
    /// What the narrow widths regress onto (`method.distill_target`).
    pub distill_target: DistillTarget,
    /// Optimiser steps (0-based indices below this) that train only the largest width
    /// (`round(method.narrow_warmup_epochs · steps_per_epoch)`; 0: none).
    pub narrow_warmup_steps: u64,
    /// How the widths' gradients become the update (`method.width_gradients`).
    pub width_gradients: WidthGradients,
    /// Measure the interference between widths after every this many steps
    /// (`monitor.interference_every_steps`; 0: never).
    pub interference_every: u64,
    rng: ChaCha8Rng,
}

impl Dspnet {
    /// The method as `cfg.method` configures it.
    ///
    /// Errors: `method.train_widths` not among `model.widths` (named).
    pub fn new(cfg: &RunConfig, steps_per_epoch: u64) -> Result<Self> {
        let widths = cfg.train_widths()?.as_slice().to_vec();
        Ok(Dspnet {
            loss_weights: cfg.method.loss_weights.clone().unwrap_or_else(|| vec![1.0; widths.len()]),
            widths,
            random_widths: cfg.method.random_widths,
            distill_target: cfg.method.distill_target,
            narrow_warmup_steps: (cfg.method.narrow_warmup_epochs * steps_per_epoch as f64).round() as u64,
            width_gradients: cfg.method.width_gradients,
            interference_every: cfg.runtime.monitor.interference_every_steps,
            rng: ChaCha8Rng::seed_from_u64(cfg.train.seed ^ SANDWICH_SEED),
        })
    }
}

impl Method for Dspnet {
    fn name(&self) -> &'static str {
        "dspnet"
    }

    fn widths(&self) -> &[f64] {
        &self.widths
    }

    /// 1. The teacher (largest width of the model, no gradient) projects both views once.
    /// 2. For each width w of the sandwich rule (only the largest trained width while `step <
    ///    narrow_warmup_steps`, without drawing from the generator): `L_w = ℓ(q_w(a), z_b) +
    ///    ℓ(q_w(b), z_a)` with BYOL's regression loss ℓ; at the teacher's width this is BYOL's
    ///    SSL loss, below it in-place distillation from the teacher. With `distill_target =
    ///    online` the targets of w < 1 are instead the online network's own full-width
    ///    projections of this step, detached (the sandwich rule trains the largest width first).
    ///    `λ_w·L_w` is back-propagated at once, so only one width's activations are alive at a
    ///    time; gradients accumulate.
    /// 3. [`MomentumBase::update`]: gradients averaged over the ranks, one optimiser step, EMA.
    ///
    /// `method.width_gradients` other than "sum" takes each width's gradient apart
    /// ([`width_grads`]) and combines them per [`WidthGradients`] before the one step (data
    /// parallel: each width's gradient averaged over the ranks first), or ("steps",
    /// "steps_split") takes one optimiser step per width right after its backward pass (at
    /// `lr`, or `lr` over the number of widths chosen); the EMA stays once per step. At
    /// the steps `monitor.interference_every_steps` names, the raw per-width gradients are
    /// measured ([`width_grads::interference`]; this rank's, before averaging) and, for "sum",
    /// summed back in autograd's order: the update is the same as without the measurement.
    ///
    /// The losses and feature spreads of all widths are read with ONE host synchronisation at
    /// the end of the step ("steps", "steps_split": one per width, before each width's update).
    fn step(&mut self, base: &mut MomentumBase, view_a: &Tensor, view_b: &Tensor, step: u64) -> Result<StepStats> {
        let (ab, n) = base.both_views(view_a, view_b);
        let z = base.teacher_targets(&ab)?;
        let (z_a, z_b) = (z.narrow(0, 0, n), z.narrow(0, n, n));
        let largest = *self.widths.last().expect("a width list is never empty");
        let chosen = if step < self.narrow_warmup_steps {
            vec![largest]
        } else {
            sandwich_widths(&self.widths, self.random_widths, &mut self.rng)
        };
        let (lr, tau) = (base.lr_at(step), base.ema_rate_at(step));
        let combine = self.width_gradients;
        let measure = self.interference_every > 0 && (step + 1).is_multiple_of(self.interference_every);
        // the widths' gradients are taken apart to measure them or to combine them otherwise
        let apart = measure || matches!(combine, WidthGradients::Trust | WidthGradients::Project);
        let params: Vec<(Tensor, bool)> = if apart {
            base.optimizer.params().map(|(p, shared)| (p.shallow_clone(), shared)).collect()
        } else {
            Vec::new()
        };
        let shared: Vec<bool> = params.iter().map(|(_, s)| *s).collect();
        let mut per_width: Vec<WidthGrad> = Vec::new();
        // distill_target = online: the full width's own projection of both views, detached
        let mut online_target: Option<Tensor> = None;
        // per width: the loss and the feature spread, 0-dim tensors read together at the end
        let mut figures: Vec<Tensor> = Vec::with_capacity(2 * chosen.len());
        base.zero_grad();
        for (k, &w) in chosen.iter().enumerate() {
            let idx = self.widths.iter().position(|x| *x == w).expect("sandwich picks trained widths");
            let proj = base.online.project(&ab, w, true, &base.format)?;
            let q = base.online.predict(&proj, w, true)?;
            let (q_a, q_b) = (q.narrow(0, 0, n), q.narrow(0, n, n));
            let narrow = w < base.teacher_width;
            let loss = match (&online_target, narrow && self.distill_target == DistillTarget::Online) {
                (Some(t), true) => {
                    regression_loss(&q_a, &t.narrow(0, n, n)) + regression_loss(&q_b, &t.narrow(0, 0, n))
                }
                (None, true) => {
                    return Err(TrainerError::option(
                        "method.distill_target",
                        format!(
                            "method.distill_target = \"online\": width {w} trains before the largest width {}, whose projection is its target; train the largest width (method.train_widths)",
                            base.teacher_width
                        ),
                    ))
                }
                (_, false) => regression_loss(&q_a, &z_b) + regression_loss(&q_b, &z_a),
            };
            if !narrow && self.distill_target == DistillTarget::Online {
                online_target = Some(proj.detach());
            }
            figures.push(loss.detach());
            figures.push(feature_std(&proj.narrow(0, 0, n)));
            (loss * self.loss_weights[idx]).backward();
            if matches!(combine, WidthGradients::Steps | WidthGradients::StepsSplit) {
                // this width's own optimiser step, before the next width's forward pass
                if let Some(e) = non_finite(&chosen[k..=k], &read_figures(&figures[2 * k..]), step) {
                    base.zero_grad();
                    return Err(e);
                }
                if measure {
                    let params: Vec<(Tensor, bool)> =
                        base.optimizer.params().map(|(p, shared)| (p.shallow_clone(), shared)).collect();
                    per_width.push(width_grads::take(&params, w));
                    width_grads::set_sum(&params, &per_width[k..]);
                }
                base.average_gradients()?;
                let width_lr = if combine == WidthGradients::StepsSplit { lr / chosen.len() as f64 } else { lr };
                base.optimizer.step(width_lr);
                base.zero_grad();
            } else if apart {
                if combine != WidthGradients::Sum {
                    base.average_gradients()?;
                }
                per_width.push(width_grads::take(&params, w));
            }
        }
        let values = read_figures(&figures);
        if let Some(e) = non_finite(&chosen, &values, step) {
            base.zero_grad();
            return Err(e);
        }
        let interference = measure.then(|| {
            let shared: Vec<bool> = base.optimizer.params().map(|(_, s)| s).collect();
            width_grads::interference(&per_width, &shared)
        });
        match combine {
            WidthGradients::Sum => {
                if apart {
                    width_grads::set_sum(&params, &per_width);
                }
                base.update(lr, tau)?;
            }
            WidthGradients::Trust | WidthGradients::Project => {
                if combine == WidthGradients::Trust {
                    width_grads::equalise_norms(&mut per_width, &shared);
                } else if let Some((full, narrower)) = per_width.split_first_mut() {
                    for g in narrower {
                        width_grads::project_away_conflict(g, full, &shared);
                    }
                }
                width_grads::set_sum(&params, &per_width);
                // already averaged over the ranks, width by width
                base.optimizer.step(lr);
                base.update_teacher(tau)?;
            }
            WidthGradients::Steps | WidthGradients::StepsSplit => base.update_teacher(tau)?,
        }
        let losses = chosen.iter().enumerate().map(|(k, &w)| (w, values[2 * k])).collect();
        let feature_std = chosen.iter().enumerate().map(|(k, &w)| (w, values[2 * k + 1])).collect();
        Ok(StepStats { losses, feature_std, lr, tau, interference })
    }

    /// The sandwich rule's ChaCha8 generator (seeded from `train.seed`). Steps of the narrow
    /// warm-up do not draw from it.
    fn rng_word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    fn set_rng_word_pos(&mut self, pos: u128) {
        self.rng.set_word_pos(pos);
    }
}

/// The 0-dim figures of a step as f64, in one host synchronisation.
pub(crate) fn read_figures(figures: &[Tensor]) -> Vec<f64> {
    let all = Tensor::stack(figures, 0).to_kind(Kind::Double).to_device(Device::Cpu);
    Vec::<f64>::try_from(all).expect("a 1-dim f64 tensor converts")
}

/// The first width (in training order) whose loss in `values` (`[loss, std]` per width) is not
/// finite, as the error that names it and the 1-based step.
fn non_finite(widths: &[f64], values: &[f64], step: u64) -> Option<TrainerError> {
    widths
        .iter()
        .zip(values.chunks(2))
        .find(|(_, v)| !v[0].is_finite())
        .map(|(&width, v)| TrainerError::NonFinite(NonFiniteLoss { width, step: step + 1, value: v[0] }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::momentum::RunLength;
    use dspnet_model::ComputeFormat;
    use dspnet_run::config::NarrowPredictor;
    use dspnet_run::RunConfig;
    use tch::{Device, Kind};

    fn tiny(widths: &[f64]) -> RunConfig {
        let mut cfg = dspnet_run::testing::tiny_config(widths);
        cfg.heads.hidden = 16;
        cfg.heads.out_dim = 8;
        cfg.optim.warmup_epochs = 0.0;
        cfg
    }

    /// The momentum base and the DSPNet method of one run.
    struct T {
        base: MomentumBase,
        dspnet: Dspnet,
    }

    impl T {
        fn new(cfg: &RunConfig, total_steps: u64, steps_per_epoch: u64, global_batch: usize) -> T {
            let length = RunLength { total_steps, steps_per_epoch, global_batch };
            T {
                base: MomentumBase::new(cfg, Device::Cpu, length).unwrap(),
                dspnet: Dspnet::new(cfg, steps_per_epoch).unwrap(),
            }
        }

        fn step(&mut self, a: &Tensor, b: &Tensor, step: u64) -> Result<StepStats> {
            self.dspnet.step(&mut self.base, a, b, step)
        }
    }

    fn views() -> (Tensor, Tensor) {
        tch::manual_seed(1);
        let a = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
        (a, b)
    }

    #[test]
    fn step_trains_every_width_largest_first_and_updates_teacher() {
        let cfg = tiny(&[0.25, 0.5, 0.75, 1.0]);
        let mut t = T::new(&cfg, 10, 10, 4);
        let before: Vec<(String, Tensor)> =
            t.base.teacher.vs.variables().into_iter().map(|(n, v)| (n, v.copy())).collect();
        let online_before = t.base.online.vs.variables()["backbone.conv1.weight"].copy();
        let (a, b) = views();
        let s = t.step(&a, &b, 0).unwrap();
        let ws: Vec<f64> = s.losses.iter().map(|(w, _)| *w).collect();
        assert_eq!(ws, vec![1.0, 0.75, 0.5, 0.25]);
        for (w, l) in &s.losses {
            assert!((0.0..=8.0).contains(l), "width {w}: loss {l}");
        }
        // lr of step 0 without warm-up is the base lr scaled by batch/256 (cosine at t=0)
        assert!((s.lr - cfg.optim.lr * 4.0 / 256.0).abs() < 1e-12);
        assert!((s.tau - cfg.method.ema_base).abs() < 1e-12);
        // online weights moved; teacher = tau*old + (1-tau)*online_new
        let online_after = t.base.online.vs.variables();
        assert!(!online_after["backbone.conv1.weight"].equal(&online_before));
        let tv = t.base.teacher.vs.variables();
        for (name, old) in before.iter().filter(|(n, _)| n.ends_with("conv1.weight")) {
            let expected = old * s.tau + &online_after[name] * (1.0 - s.tau);
            let diff = (&tv[name] - expected).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name}: {diff}");
        }
    }

    /// The fast path's step losses against fp32 from identical weights (copied) and views, every
    /// width. Tolerance 0.05 on a width's loss (a sum of two regression
    /// losses, each 2 - 2cos in [0, 4], about 4 at initialisation): bf16 keeps 8 significant
    /// bits (unit roundoff 2^-9), so the backbone features carry a relative error of 1-3 % after
    /// its ~20 conv/BN layers (measured 0.7 % after layer1 to 3.1 % after layer4 here); the fp32
    /// heads' batch norm divides by the batch spread of each hidden unit, which amplifies that
    /// error where the spread is small, so the margin needs a batch and heads of some size: at
    /// base 16, hidden 64, out 32, 2x16 images the losses moved by at most 0.02 over two seeds
    /// (at base 8, hidden 16, 2x4 images by up to 1.0, which is why the test does not use the
    /// tiny config of the other tests). A fast path that dropped bf16 would differ by exactly 0
    /// (checked), one that mixed up widths or BN modes by far more than 0.05.
    #[test]
    fn fast_path_loss_matches_fp32_within_bf16_rounding() {
        let mut cfg = tiny(&[0.25, 0.5, 0.75, 1.0]);
        cfg.model.base_channels = 16;
        cfg.heads.hidden = 64;
        cfg.heads.out_dim = 32;
        tch::manual_seed(0);
        let a = Tensor::randn([16, 1, 16, 16], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([16, 1, 16, 16], (Kind::Float, Device::Cpu));
        // Three trainers with the SAME weights: copied, because the global seed that
        // MomentumBase::new sets is shared with tests running on other threads.
        let mut fp32 = T::new(&cfg, 10, 10, 16);
        let mut fast = T::new(&cfg, 10, 10, 16);
        let mut auto = T::new(&cfg, 10, 10, 16);
        for t in [&mut fast, &mut auto] {
            t.base.online.vs.copy(&fp32.base.online.vs).unwrap();
            t.base.teacher.vs.copy(&fp32.base.teacher.vs).unwrap();
        }
        let reference = fp32.step(&a, &b, 0).unwrap();
        fast.base.format = ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: false };
        let got = fast.step(&a, &b, 0).unwrap();
        let mut max_diff: f64 = 0.0;
        for ((w, l32), (w16, l16)) in reference.losses.iter().zip(&got.losses) {
            assert_eq!(w, w16);
            let d = (l32 - l16).abs();
            assert!(d < 0.05, "width {w}: fp32 loss {l32} vs bf16 {l16}");
            max_diff = max_diff.max(d);
        }
        assert!(max_diff > 0.0, "bf16 losses equal fp32 bit for bit: the fast path did not run in bf16");

        // The CPU-autocast variant issues the same casts as the explicit one (images and weight
        // slices to bf16 before each convolution, heads in fp32): its losses agree with the
        // explicit fast path up to kernel summation order.
        auto.base.format = ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: true };
        let via_autocast = auto.step(&a, &b, 0).unwrap();
        for ((w, le), (_, la)) in got.losses.iter().zip(&via_autocast.losses) {
            assert!((le - la).abs() < 2e-3, "width {w}: explicit bf16 {le} vs autocast {la}");
        }
        // ... and leaves CPU autocast off afterwards.
        assert!(!dspnet_model::cpu_autocast_state().unwrap().0);
    }

    #[test]
    fn non_finite_loss_is_an_error_naming_width_and_step() {
        let cfg = tiny(&[0.5, 1.0]);
        let mut t = T::new(&cfg, 10, 10, 4);
        let (a, b) = views();
        let a = a * f64::NAN;
        let e = t.step(&a, &b, 7).unwrap_err().to_string();
        assert!(e.contains("width 1") && e.contains("step 8 "), "{e}");
    }

    /// `ab` = both views as one batch, as the step builds it.
    fn both(a: &Tensor, b: &Tensor) -> Tensor {
        Tensor::cat(&[a, b], 0)
    }

    /// `ℓ(q_a, t_b) + ℓ(q_b, t_a)` for `[2n, D]` predictions and targets.
    fn symmetric_loss(q: &Tensor, t: &Tensor) -> f64 {
        let n = q.size()[0] / 2;
        (regression_loss(&q.narrow(0, 0, n), &t.narrow(0, n, n))
            + regression_loss(&q.narrow(0, n, n), &t.narrow(0, 0, n)))
        .double_value(&[])
    }

    #[test]
    fn online_distill_target_is_the_online_full_width_projection() {
        let mut cfg = tiny(&[0.5, 1.0]);
        cfg.method.distill_target = DistillTarget::Online;
        cfg.validate().unwrap();
        let fp32 = ComputeFormat { kind: Kind::Float, channels_last: false, autocast: false };
        let mut t = T::new(&cfg, 10, 10, 4);
        // a teacher that differs from the online network
        tch::no_grad(|| {
            for (name, mut v) in t.base.teacher.vs.variables() {
                if name.starts_with("projector.fc") {
                    let _ = v.g_mul_scalar_(-0.5);
                }
            }
        });
        // a reference with the same weights, run by hand through Branch::project/predict
        let mut r = T::new(&cfg, 10, 10, 4);
        r.base.online.vs.copy(&t.base.online.vs).unwrap();
        r.base.teacher.vs.copy(&t.base.teacher.vs).unwrap();
        let (a, b) = views();
        let ab = both(&a, &b);
        let (full_online, q_full, q_half, z) = tch::no_grad(|| {
            let z = r.base.teacher.project(&ab, 1.0, true, &fp32).unwrap();
            let p1 = r.base.online.project(&ab, 1.0, true, &fp32).unwrap();
            let q1 = r.base.online.predict(&p1, 1.0, true).unwrap();
            let p5 = r.base.online.project(&ab, 0.5, true, &fp32).unwrap();
            let q5 = r.base.online.predict(&p5, 0.5, true).unwrap();
            (p1, q1, q5, z)
        });
        let want_half = symmetric_loss(&q_half, &full_online);
        let teacher_half = symmetric_loss(&q_half, &z);
        let want_full = symmetric_loss(&q_full, &z);
        let s = t.step(&a, &b, 0).unwrap();
        assert_eq!(s.losses.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![1.0, 0.5]);
        assert!(
            (s.losses[0].1 - want_full).abs() < 1e-5,
            "full width keeps the teacher target: {} vs {want_full}",
            s.losses[0].1
        );
        assert!((s.losses[1].1 - want_half).abs() < 1e-5, "width 0.5: {} vs {want_half}", s.losses[1].1);
        assert!(
            (teacher_half - want_half).abs() > 1e-2,
            "teacher and online targets must differ here: {teacher_half} vs {want_half}"
        );

        // the default (teacher) on the same weights gives the teacher-target loss instead
        let mut cfg_t = cfg.clone();
        cfg_t.method.distill_target = DistillTarget::Teacher;
        let mut d = T::new(&cfg_t, 10, 10, 4);
        d.base.online.vs.copy(&r.base.online.vs).unwrap();
        d.base.teacher.vs.copy(&r.base.teacher.vs).unwrap();
        // (r's online BN running statistics moved during the hand computation; they do not
        // enter a train-mode forward)
        let s = d.step(&a, &b, 0).unwrap();
        assert!((s.losses[1].1 - teacher_half).abs() < 1e-5, "{} vs {teacher_half}", s.losses[1].1);
    }

    #[test]
    fn narrow_warmup_trains_only_the_largest_width_and_keeps_the_generator() {
        let mut cfg = tiny(&[0.25, 0.5, 1.0]);
        cfg.optim.weight_decay = 0.0;
        cfg.method.narrow_warmup_epochs = 0.5;
        cfg.validate().unwrap();
        // 4 steps per epoch: round(0.5 · 4) = 2 warm-up steps
        let mut t = T::new(&cfg, 12, 4, 4);
        assert_eq!(t.dspnet.narrow_warmup_steps, 2);
        fn t_var(t: &T, name: &str) -> Tensor {
            t.base.online.vs.variables()[name].copy()
        }
        let before = t_var(&t, "backbone.bn1.w0_25.weight");
        let full_before = t_var(&t, "backbone.bn1.w1_00.weight");
        let pos0 = t.dspnet.rng_word_pos();
        let (a, b) = views();
        for step in 0..2 {
            let s = t.step(&a, &b, step).unwrap();
            assert_eq!(s.losses.len(), 1, "step {step}: {:?}", s.losses);
            assert_eq!(s.losses[0].0, 1.0);
        }
        assert!(
            t_var(&t, "backbone.bn1.w0_25.weight").equal(&before),
            "a narrow-only parameter moved during the warm-up"
        );
        assert!(!t_var(&t, "backbone.bn1.w1_00.weight").equal(&full_before), "the full width trained");
        assert_eq!(t.dspnet.rng_word_pos(), pos0, "the warm-up drew from the sandwich generator");
        let s = t.step(&a, &b, 2).unwrap();
        assert_eq!(s.losses.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![1.0, 0.5, 0.25]);
        assert!(!t_var(&t, "backbone.bn1.w0_25.weight").equal(&before), "after the warm-up the narrow widths train");
    }

    #[test]
    fn separate_narrow_predictor_gets_exactly_the_narrow_gradient() {
        // default: no predictor_narrow variables anywhere
        let t = T::new(&tiny(&[0.5, 1.0]), 10, 10, 4);
        assert!(t.base.online.vs.variables().keys().all(|k| !k.starts_with("predictor_narrow")));
        assert!(t.base.online.predictor_narrow.is_none());

        let (a, b) = views();
        // loss weights per trained width [0.5, 1.0]: only one width's loss reaches the gradient
        for (weights, trained_prefix, idle_prefix) in
            [([0.0, 1.0], "predictor.", "predictor_narrow."), ([1.0, 0.0], "predictor_narrow.", "predictor.")]
        {
            let mut cfg = tiny(&[0.5, 1.0]);
            cfg.method.narrow_predictor = NarrowPredictor::Separate;
            cfg.method.loss_weights = Some(weights.to_vec());
            cfg.optim.weight_decay = 0.0;
            cfg.validate().unwrap();
            let mut t = T::new(&cfg, 10, 10, 4);
            let vars = t.base.online.vs.variables();
            let narrow: Vec<&String> = vars.keys().filter(|k| k.starts_with("predictor_narrow.")).collect();
            assert!(narrow.iter().any(|k| k.as_str() == "predictor_narrow.fc1.weight"), "{narrow:?}");
            // the teacher has no predictor of either kind
            assert!(t.base.teacher.vs.variables().keys().all(|k| !k.starts_with("predictor")));
            let s = t.step(&a, &b, 0).unwrap();
            assert_eq!(s.losses.len(), 2);
            let grad_norm = |prefix: &str| -> f64 {
                vars.iter()
                    .filter(|(k, v)| k.starts_with(prefix) && v.requires_grad())
                    .map(|(_, v)| {
                        let g = v.grad();
                        if g.defined() {
                            g.abs().sum(Kind::Double).double_value(&[])
                        } else {
                            0.0
                        }
                    })
                    .sum()
            };
            assert!(grad_norm(trained_prefix) > 0.0, "{weights:?}: {trained_prefix} received no gradient");
            assert_eq!(grad_norm(idle_prefix), 0.0, "{weights:?}: {idle_prefix} received gradient");
        }
    }

    #[test]
    fn separate_predictor_and_shared_bn_round_trip_through_a_checkpoint() {
        let mut cfg = tiny(&[0.5, 1.0]);
        cfg.method.narrow_predictor = NarrowPredictor::Separate;
        cfg.heads.bn = dspnet_run::config::HeadBn::Shared;
        cfg.validate().unwrap();
        let t = T::new(&cfg, 10, 10, 4);
        let names: Vec<String> = t.base.checkpoint_tensors().into_iter().map(|(n, _)| n).collect();
        for want in [
            "online.predictor_narrow.fc1.weight",
            "online.predictor_narrow.bn1.running_var",
            "online.projector.bn1.weight",
            "teacher.projector.bn1.running_mean",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        let bad: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.starts_with("teacher.predictor") || n.contains("projector.bn1.w0_") || n.contains("predictor.bn1.w1_")
            })
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        let dir = tempfile::tempdir().unwrap();
        let state = dspnet_run::checkpoint::CheckpointState {
            sandwich_rng_word_pos: "0".into(),
            ..dspnet_run::checkpoint::CheckpointState::basic(0, 10, "fp32")
        };
        dspnet_run::checkpoint::save(dir.path(), &t.base.checkpoint_tensors(), state).unwrap();
        let mut u = T::new(&cfg, 10, 10, 4);
        tch::no_grad(|| {
            for (_, mut v) in u.base.online.vs.variables() {
                let _ = v.fill_(0.0);
            }
        });
        u.base.restore(&dspnet_run::checkpoint::load(dir.path()).unwrap()).unwrap();
        let uv = u.base.online.vs.variables();
        for (name, v) in t.base.online.vs.variables() {
            assert!(v.equal(&uv[&name]), "{name}");
        }
        // a default-config trainer's checkpoint lacks them: refused with the name
        let plain = T::new(&tiny(&[0.5, 1.0]), 10, 10, 4);
        let d2 = tempfile::tempdir().unwrap();
        let state = dspnet_run::checkpoint::CheckpointState {
            sandwich_rng_word_pos: "0".into(),
            ..dspnet_run::checkpoint::CheckpointState::basic(0, 10, "fp32")
        };
        dspnet_run::checkpoint::save(d2.path(), &plain.base.checkpoint_tensors(), state).unwrap();
        let e = u.base.restore(&dspnet_run::checkpoint::load(d2.path()).unwrap()).expect_err("refused").to_string();
        assert!(e.contains("lacks online."), "{e}");
    }

    /// Each width's gradient of every trainable online parameter on its own (a fresh backward
    /// pass of that width's loss, by hand through the branches), by name; zeros where none.
    fn grads_of_width(t: &mut T, a: &Tensor, b: &Tensor, w: f64) -> Vec<(String, Tensor)> {
        let (ab, _) = t.base.both_views(a, b);
        let z = t.base.teacher_targets(&ab).unwrap();
        t.base.zero_grad();
        let proj = t.base.online.project(&ab, w, true, &t.base.format).unwrap();
        let q = t.base.online.predict(&proj, w, true).unwrap();
        let n = q.size()[0] / 2;
        let loss = regression_loss(&q.narrow(0, 0, n), &z.narrow(0, n, n))
            + regression_loss(&q.narrow(0, n, n), &z.narrow(0, 0, n));
        loss.backward();
        let mut out: Vec<(String, Tensor)> = t
            .base
            .online
            .vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .map(|(name, v)| {
                let g = v.grad();
                let g = if g.defined() { g.to_kind(Kind::Double) } else { v.zeros_like().to_kind(Kind::Double) };
                (name, g)
            })
            .collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        t.base.zero_grad();
        out
    }

    /// Two widths, plain SGD (no momentum, no weight decay, lr 0.1·4/256): the online weights
    /// after one step of trainer `t` against `w0 − lr·g` for the combination `g` of the
    /// per-width gradients `combine` computes. Returns the largest deviation relative to the
    /// largest |lr·g|.
    fn deviation_from(t: &T, w0: &[(String, Tensor)], g: &[(String, Tensor)], lr: f64) -> f64 {
        let now = t.base.online.vs.variables();
        let (mut dev, mut scale) = (0.0f64, 0.0f64);
        for ((name, w), (gname, g)) in w0.iter().zip(g) {
            assert_eq!(name, gname);
            let want = w.to_kind(Kind::Double) - g * lr;
            dev = dev.max((now[name].to_kind(Kind::Double) - want).abs().max().double_value(&[]));
            scale = scale.max((g * lr).abs().max().double_value(&[]));
        }
        dev / scale
    }

    fn sgd_two_widths(combine: &str) -> RunConfig {
        let mut cfg = tiny(&[0.5, 1.0]);
        cfg.optim.kind = dspnet_run::config::OptimizerKind::Sgd;
        cfg.optim.momentum = 0.0;
        cfg.optim.weight_decay = 0.0;
        cfg.optim.lr = 0.1;
        cfg.method.width_gradients = dspnet_run::config::WidthGradients::try_from(combine.to_string()).unwrap();
        cfg
    }

    /// A trainer and a reference with the same weights, and the weights before the step.
    fn twins(cfg: &RunConfig) -> (T, T, Vec<(String, Tensor)>) {
        twins_of(cfg, None)
    }

    /// Two trainers with the same weights: those of `from` when given (so that the weights do
    /// not depend on the global random stream, which tests running in parallel share), else
    /// the first one's random initialisation.
    fn twins_of(cfg: &RunConfig, from: Option<&T>) -> (T, T, Vec<(String, Tensor)>) {
        let mut t = T::new(cfg, 10, 10, 4);
        if let Some(from) = from {
            t.base.online.vs.copy(&from.base.online.vs).unwrap();
            t.base.teacher.vs.copy(&from.base.teacher.vs).unwrap();
        }
        let mut r = T::new(cfg, 10, 10, 4);
        r.base.online.vs.copy(&t.base.online.vs).unwrap();
        r.base.teacher.vs.copy(&t.base.teacher.vs).unwrap();
        let mut w0: Vec<(String, Tensor)> = t
            .base
            .online
            .vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .map(|(n, v)| (n, v.copy()))
            .collect();
        w0.sort_by(|x, y| x.0.cmp(&y.0));
        (t, r, w0)
    }

    fn dot(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
        a.iter()
            .zip(b)
            .filter(|((_, x), _)| x.dim() > 1)
            .map(|((_, x), (_, y))| (x * y).sum(Kind::Double).double_value(&[]))
            .sum()
    }

    /// Views on which the full width's and the half width's gradients conflict (found by trying
    /// seeds: at initialisation some batches do, some do not).
    fn conflicting_views() -> (Tensor, Tensor, T) {
        for seed in 0..200 {
            tch::manual_seed(seed);
            let a = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
            let b = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
            let (_, mut r, _) = twins(&sgd_two_widths("sum"));
            let (g1, g5) = (grads_of_width(&mut r, &a, &b, 1.0), grads_of_width(&mut r, &a, &b, 0.5));
            if dot(&g1, &g5) < 0.0 {
                return (a, b, r);
            }
        }
        panic!("no conflicting batch in 200 seeds")
    }

    #[test]
    fn each_width_gradients_switch_against_a_two_width_step_by_hand() {
        let lr = 0.1 * 4.0 / 256.0;
        let (a, b, weights) = conflicting_views();
        let mut results = Vec::new();
        for combine in ["sum", "trust", "project", "steps", "steps_split"] {
            let (mut t, mut r, w0) = twins_of(&sgd_two_widths(combine), Some(&weights));
            let g1 = grads_of_width(&mut r, &a, &b, 1.0);
            let g5 = grads_of_width(&mut r, &a, &b, 0.5);
            let expected: Vec<(String, Tensor)> = match combine {
                "sum" => g1.iter().zip(&g5).map(|((n, x), (_, y))| (n.clone(), x + y)).collect(),
                // per shared tensor both scaled to the mean of their norms; BN tensors summed
                "trust" => g1
                    .iter()
                    .zip(&g5)
                    .map(|((n, x), (_, y))| {
                        if x.dim() < 2 {
                            return (n.clone(), x + y);
                        }
                        let (nx, ny) = (x.norm().double_value(&[]), y.norm().double_value(&[]));
                        let nonzero = [nx, ny].iter().filter(|v| **v > 0.0).count().max(1) as f64;
                        let mean = (nx + ny) / nonzero;
                        let sx = if nx > 0.0 { mean / nx } else { 0.0 };
                        let sy = if ny > 0.0 { mean / ny } else { 0.0 };
                        (n.clone(), x * sx + y * sy)
                    })
                    .collect(),
                // g5 ← g5 − (⟨g5, g1⟩/‖g1‖²)·g1 on the shared tensors (they conflict here)
                "project" => {
                    let c = dot(&g5, &g1) / dot(&g1, &g1);
                    assert!(c < 0.0);
                    g1.iter()
                        .zip(&g5)
                        .map(|((n, x), (_, y))| (n.clone(), if x.dim() > 1 { x + (y - x * c) } else { x + y }))
                        .collect()
                }
                // w1 = w0 − η·g1(w0); w2 = w1 − η·g5(w1) with η = lr ("steps") or lr/2
                // ("steps_split", two widths): the reference takes its own first step
                _ => {
                    let eta = if combine == "steps" { lr } else { lr / 2.0 };
                    tch::no_grad(|| {
                        let vars = r.base.online.vs.variables();
                        for (n, g) in &g1 {
                            let _ = vars[n].shallow_clone().g_sub_(&(g * eta).to_kind(Kind::Float));
                        }
                    });
                    let g5_after = grads_of_width(&mut r, &a, &b, 0.5);
                    let f = eta / lr;
                    g1.iter().zip(&g5_after).map(|((n, x), (_, y))| (n.clone(), (x + y) * f)).collect()
                }
            };
            let s = t.step(&a, &b, 0).unwrap();
            assert_eq!(s.losses.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![1.0, 0.5]);
            let dev = deviation_from(&t, &w0, &expected, lr);
            assert!(dev < 1e-4, "{combine}: relative deviation {dev}");
            results.push((combine, expected));
        }
        // the five are different updates, by far more than the tolerance
        for i in 0..results.len() {
            for j in i + 1..results.len() {
                let diff: f64 = results[i]
                    .1
                    .iter()
                    .zip(&results[j].1)
                    .map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[]))
                    .fold(0.0, f64::max);
                let scale: f64 = results[i].1.iter().map(|(_, x)| x.abs().max().double_value(&[])).fold(0.0, f64::max);
                assert!(
                    diff / scale > 1e-2,
                    "{} and {} give the same update ({})",
                    results[i].0,
                    results[j].0,
                    diff / scale
                );
            }
        }
    }

    #[test]
    fn measuring_interference_changes_no_weight_and_reports_the_figures() {
        let cfg = tiny(&[0.25, 0.5, 1.0]);
        let mut measured_cfg = cfg.clone();
        measured_cfg.runtime.monitor.interference_every_steps = 2;
        let mut plain = T::new(&cfg, 10, 10, 4);
        let mut measured = T::new(&measured_cfg, 10, 10, 4);
        measured.base.online.vs.copy(&plain.base.online.vs).unwrap();
        measured.base.teacher.vs.copy(&plain.base.teacher.vs).unwrap();
        let (a, b) = views();
        for step in 0..3 {
            let p = plain.step(&a, &b, step).unwrap();
            let m = measured.step(&a, &b, step).unwrap();
            assert_eq!(p.losses, m.losses, "step {step}");
            assert!(p.interference.is_none());
            // after every 2nd step: step index 1
            assert_eq!(m.interference.is_some(), step == 1, "step {step}");
            if let Some(i) = m.interference {
                assert_eq!(i.norms.iter().map(|n| n.0).collect::<Vec<_>>(), vec![1.0, 0.5, 0.25]);
                assert!(i.norms.iter().all(|n| n.1 > 0.0 && n.1.is_finite()), "{i:?}");
                let c = i.cosine_full_vs_narrow.unwrap();
                assert!((-1.0..=1.0).contains(&c), "{c}");
                assert_eq!(i.cosine_per_width.len(), 2);
            }
        }
        let (pv, mv) = (plain.base.checkpoint_tensors(), measured.base.checkpoint_tensors());
        assert_eq!(pv.len(), mv.len());
        for ((name, x), (_, y)) in pv.iter().zip(&mv) {
            assert!(x.equal(y), "{name} differs with the measurement on");
        }
    }
}
