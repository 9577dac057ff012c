//! The DSPNet step: one momentum-teacher forward per view shared by every width, then the
//! sandwich-rule widths of the online network, each with its own backward pass, and ONE
//! optimiser step. See docs/method.md for the equations and where each choice comes from.

use crate::config::{DistillTarget, RunConfig};
use crate::error::TrainerError;
use crate::loss::regression_loss;
use crate::network::{copy_into_teacher, ema_update, Branch};
use crate::optim::Optimizer;
use crate::sandwich::sandwich_widths;
use dspnet_core::schedule::{cosine_ramp, warmup_cosine};
pub use dspnet_model::ComputeFormat;
use dspnet_model::WidthList;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// What one step did, per trained width (largest first).
#[derive(Clone, Debug, Default)]
pub struct StepStats {
    /// (width, unweighted loss summed over both view orders, in [0, 8]).
    pub losses: Vec<(f64, f64)>,
    /// (width, std over the batch of the l2-normalised online projection, averaged over
    /// dimensions; collapse shows as → 0, a healthy value is near 1/sqrt(out_dim)).
    pub feature_std: Vec<(f64, f64)>,
    /// Learning rate used.
    pub lr: f64,
    /// EMA rate used for the teacher update after this step.
    pub tau: f64,
}

/// Online network, momentum teacher, optimiser and schedules of one DSPNet (or BYOL) run.
pub struct DspnetTrainer {
    pub online: Branch,
    pub teacher: Branch,
    pub optimizer: Optimizer,
    /// Widths trained (sorted ascending).
    pub widths: Vec<f64>,
    /// Width the momentum teacher runs at: the largest of the model's width list.
    pub teacher_width: f64,
    loss_weights: Vec<f64>,
    random_widths: Option<usize>,
    /// `method.distill_target`: what the narrow widths regress onto.
    pub distill_target: DistillTarget,
    /// Optimiser steps (0-based indices below this) that train only the largest width
    /// (`round(method.narrow_warmup_epochs · steps_per_epoch)`; 0: none).
    pub narrow_warmup_steps: u64,
    rng: ChaCha8Rng,
    pub format: ComputeFormat,
    /// Total optimiser steps of the run (for the schedules).
    pub total_steps: u64,
    warmup_steps: u64,
    base_lr: f64,
    ema_base: f64,
    ema_final: f64,
    /// Data parallel: the process group and the online network's trainable parameters (sorted
    /// by name, the same order on every rank) whose gradients are averaged before the optimiser
    /// step; set by `DspnetTrainer::attach_data_parallel` (distributed.rs).
    pub(crate) data_parallel: Option<crate::distributed::DataParallel>,
}

impl DspnetTrainer {
    /// Builds online and teacher branches (teacher initialised as a copy of the online network)
    /// and the optimiser. `total_steps`/`steps_per_epoch` set the schedules; the learning rate
    /// is `optim.lr · batch/256` (linear scaling, Goyal et al. 2017).
    pub fn new(
        cfg: &RunConfig,
        device: Device,
        total_steps: u64,
        steps_per_epoch: u64,
        global_batch: usize,
    ) -> Result<Self, TrainerError> {
        tch::manual_seed(cfg.train.seed as i64);
        let online = Branch::new(cfg, device, true)?;
        let teacher = Branch::new(cfg, device, false)?;
        copy_into_teacher(&teacher, &online)?;
        let params: Vec<(String, Tensor)> =
            online.vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        let optimizer = Optimizer::new(&cfg.optim, params);
        let widths = cfg.train_widths()?.as_slice().to_vec();
        let loss_weights = cfg.method.loss_weights.clone().unwrap_or_else(|| vec![1.0; widths.len()]);
        let teacher_width = WidthList::new(cfg.model.widths.clone())?.largest();
        let format = ComputeFormat::resolve(&cfg.train.precision, cfg.train.channels_last, device);
        Ok(DspnetTrainer {
            online,
            teacher,
            optimizer,
            widths,
            teacher_width,
            loss_weights,
            random_widths: cfg.method.random_widths,
            distill_target: cfg.method.distill_target,
            narrow_warmup_steps: (cfg.method.narrow_warmup_epochs * steps_per_epoch as f64).round() as u64,
            rng: ChaCha8Rng::seed_from_u64(cfg.train.seed ^ 0x5a4d_5749_4454_4853),
            format,
            total_steps,
            warmup_steps: (cfg.optim.warmup_epochs * steps_per_epoch as f64).round() as u64,
            base_lr: cfg.optim.lr * global_batch as f64 / 256.0,
            ema_base: cfg.method.ema_base,
            ema_final: cfg.method.ema_final,
            data_parallel: None,
        })
    }

    /// Learning rate at optimiser step `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        warmup_cosine(step, self.total_steps, self.warmup_steps, self.base_lr)
    }

    /// EMA rate of the momentum teacher after optimiser step `step` (0-based).
    pub fn ema_rate_at(&self, step: u64) -> f64 {
        cosine_ramp(step, self.total_steps, self.ema_base, self.ema_final)
    }

    /// State of the sandwich rule's generator: the ChaCha8 word position (its seed comes from
    /// `train.seed`). This is the only random number source of [`DspnetTrainer::step`]. Steps of
    /// the narrow warm-up do not draw from it.
    pub fn sandwich_rng_word_pos(&self) -> u128 {
        self.rng.get_word_pos()
    }

    /// Restores the sandwich rule's generator to a word position from
    /// [`DspnetTrainer::sandwich_rng_word_pos`] (for resuming).
    pub fn set_sandwich_rng_word_pos(&mut self, pos: u128) {
        self.rng.set_word_pos(pos);
    }

    /// One training step on two augmented views `[B, C, H, W]` f32 of the same images (any
    /// device; moved to the model's with a non-blocking copy).
    ///
    /// 1. Teacher (largest width of the model, no gradient) projects each view once: `z_a`, `z_b`.
    /// 2. For each width w of the sandwich rule (only the largest trained width while `step <
    ///    narrow_warmup_steps`, without drawing from the generator): `L_w = ℓ(q_w(a), z_b) +
    ///    ℓ(q_w(b), z_a)` with BYOL's regression loss ℓ; at w = 1 this is BYOL's SSL loss, at
    ///    w < 1 in-place distillation from the teacher. With `distill_target = Online` the
    ///    targets of w < 1 are instead the online network's own full-width projections of this
    ///    step, detached (only that tensor is kept, not its graph; the sandwich rule trains the
    ///    largest width first). `λ_w·L_w` is back-propagated at once, so only one width's
    ///    activations are alive at a time; gradients accumulate.
    /// 3. Data parallel only: the gradients are averaged over the processes (one bucketed
    ///    all-reduce per step, after every width's backward pass).
    /// 4. One optimiser step; then the teacher's EMA update.
    ///
    /// Errors: a non-finite loss (names width and step; the weights are left untouched).
    pub fn step(&mut self, view_a: &Tensor, view_b: &Tensor, step: u64) -> Result<StepStats, TrainerError> {
        let device = self.online.vs.device();
        let a = self.format.apply(&view_a.to_device_(device, view_a.kind(), true, false));
        let b = self.format.apply(&view_b.to_device_(device, view_b.kind(), true, false));
        // Both views go through every network as ONE batch of 2B images: half the kernel
        // launches of two separate passes; BN statistics are then taken over both views.
        let ab = Tensor::cat(&[&a, &b], 0);
        let n = a.size()[0];
        let z = tch::no_grad(|| self.teacher.project(&ab, self.teacher_width, true, &self.format))?;
        let (z_a, z_b) = (z.narrow(0, 0, n), z.narrow(0, n, n));
        let largest = *self.widths.last().expect("a width list is never empty");
        let chosen = if step < self.narrow_warmup_steps {
            vec![largest]
        } else {
            sandwich_widths(&self.widths, self.random_widths, &mut self.rng)
        };
        // distill_target = online: the full width's own projection of both views, detached
        let mut online_target: Option<Tensor> = None;
        let lr = self.lr_at(step);
        let tau = cosine_ramp(step, self.total_steps, self.ema_base, self.ema_final);
        let mut stats = StepStats { lr, tau, ..Default::default() };
        self.optimizer.zero_grad();
        for &w in &chosen {
            let idx = self.widths.iter().position(|x| *x == w).expect("sandwich picks trained widths");
            let proj = self.online.project(&ab, w, true, &self.format)?;
            let q = self.online.predict(&proj, w, true)?;
            let (q_a, q_b) = (q.narrow(0, 0, n), q.narrow(0, n, n));
            let proj_a = proj.narrow(0, 0, n);
            let narrow = w < self.teacher_width;
            let loss = match (&online_target, narrow && self.distill_target == DistillTarget::Online) {
                (Some(t), true) => regression_loss(&q_a, &t.narrow(0, n, n)) + regression_loss(&q_b, &t.narrow(0, 0, n)),
                (None, true) => {
                    return Err(TrainerError::Config(format!(
                        "method.distill_target = \"online\": width {w} trains before the largest width {}, whose projection is its target; train the largest width (method.train_widths)",
                        self.teacher_width
                    )))
                }
                (_, false) => regression_loss(&q_a, &z_b) + regression_loss(&q_b, &z_a),
            };
            if !narrow && self.distill_target == DistillTarget::Online {
                online_target = Some(proj.detach());
            }
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                self.optimizer.zero_grad();
                return Err(TrainerError::NonFinite(format!(
                    "non-finite loss ({value}) at width {w} in step {} (1-based, as in metrics.jsonl); lower optim.lr or optim.weight_decay, or use train.precision=\"fp32\"",
                    step + 1
                )));
            }
            (loss * self.loss_weights[idx]).backward();
            let std = tch::no_grad(|| {
                let z = proj_a.detach();
                let z = &z / z.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
                z.std_dim(Some([0].as_slice()), true, false).mean(Kind::Float).double_value(&[])
            });
            stats.losses.push((w, value));
            stats.feature_std.push((w, std));
        }
        // Data parallel: ONE bucketed all-reduce (mean) of the gradients summed over the widths.
        if let Some(dp) = &self.data_parallel {
            dp.group.all_reduce_grads_avg(&dp.params)?;
        }
        self.optimizer.step(lr);
        ema_update(&self.teacher, &self.online, tau)?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NarrowPredictor, RunConfig};

    fn tiny(widths: &[f64]) -> RunConfig {
        let text = include_str!("../../configs/cpu-fashion-mnist.toml");
        let mut cfg = RunConfig::from_toml_str(text, "preset").unwrap();
        cfg.model.base_channels = 4;
        cfg.model.widths = widths.to_vec();
        cfg.heads.hidden = 16;
        cfg.heads.out_dim = 8;
        cfg.train.precision = "fp32".into();
        cfg.optim.warmup_epochs = 0.0;
        cfg
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
        let mut t = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
        let before: Vec<(String, Tensor)> = t.teacher.vs.variables().into_iter().map(|(n, v)| (n, v.copy())).collect();
        let online_before = t.online.vs.variables()["backbone.conv1.weight"].copy();
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
        let online_after = t.online.vs.variables();
        assert!(!online_after["backbone.conv1.weight"].equal(&online_before));
        let tv = t.teacher.vs.variables();
        for (name, old) in before.iter().filter(|(n, _)| n.ends_with("conv1.weight")) {
            let expected = old * s.tau + &online_after[name] * (1.0 - s.tau);
            let diff = (&tv[name] - expected).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{name}: {diff}");
        }
    }

    #[test]
    fn single_width_run_is_byol_with_teacher_at_that_width() {
        let mut cfg = tiny(&[0.5]);
        cfg.method.name = crate::config::Method::Byol;
        cfg.validate().unwrap();
        let mut t = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
        assert_eq!(t.teacher_width, 0.5);
        let (a, b) = views();
        let s = t.step(&a, &b, 0).unwrap();
        assert_eq!(s.losses.len(), 1);
        assert_eq!(s.losses[0].0, 0.5);
        // at step 0 teacher == online, so the loss is the predictor's mismatch only: finite, < 8
        assert!(s.losses[0].1.is_finite());
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
        // DspnetTrainer::new sets is shared with tests running on other threads.
        let mut fp32 = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 16).unwrap();
        let mut fast = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 16).unwrap();
        let mut auto = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 16).unwrap();
        for t in [&mut fast, &mut auto] {
            t.online.vs.copy(&fp32.online.vs).unwrap();
            t.teacher.vs.copy(&fp32.teacher.vs).unwrap();
        }
        let reference = fp32.step(&a, &b, 0).unwrap();
        fast.format = ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: false };
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
        auto.format = ComputeFormat { kind: Kind::BFloat16, channels_last: true, autocast: true };
        let via_autocast = auto.step(&a, &b, 0).unwrap();
        for ((w, le), (_, la)) in got.losses.iter().zip(&via_autocast.losses) {
            assert!((le - la).abs() < 2e-3, "width {w}: explicit bf16 {le} vs autocast {la}");
        }
        // ... and leaves CPU autocast off afterwards.
        assert_eq!(dspnet_model::cpu_autocast_state().unwrap().0, false);
    }

    #[test]
    fn non_finite_loss_is_an_error_naming_width_and_step() {
        let cfg = tiny(&[0.5, 1.0]);
        let mut t = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
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
        let mut t = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
        // a teacher that differs from the online network
        tch::no_grad(|| {
            for (name, mut v) in t.teacher.vs.variables() {
                if name.starts_with("projector.fc") {
                    let _ = v.g_mul_scalar_(-0.5);
                }
            }
        });
        // a reference with the same weights, run by hand through Branch::project/predict
        let mut r = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
        r.online.vs.copy(&t.online.vs).unwrap();
        r.teacher.vs.copy(&t.teacher.vs).unwrap();
        let (a, b) = views();
        let ab = both(&a, &b);
        let (full_online, q_full, q_half, z) = tch::no_grad(|| {
            let z = r.teacher.project(&ab, 1.0, true, &fp32).unwrap();
            let p1 = r.online.project(&ab, 1.0, true, &fp32).unwrap();
            let q1 = r.online.predict(&p1, 1.0, true).unwrap();
            let p5 = r.online.project(&ab, 0.5, true, &fp32).unwrap();
            let q5 = r.online.predict(&p5, 0.5, true).unwrap();
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
        let mut d = DspnetTrainer::new(&cfg_t, Device::Cpu, 10, 10, 4).unwrap();
        d.online.vs.copy(&r.online.vs).unwrap();
        d.teacher.vs.copy(&r.teacher.vs).unwrap();
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
        let mut t = DspnetTrainer::new(&cfg, Device::Cpu, 12, 4, 4).unwrap();
        assert_eq!(t.narrow_warmup_steps, 2);
        fn t_var(t: &DspnetTrainer, name: &str) -> Tensor {
            t.online.vs.variables()[name].copy()
        }
        let before = t_var(&t, "backbone.bn1.w0_25.weight");
        let full_before = t_var(&t, "backbone.bn1.w1_00.weight");
        let pos0 = t.sandwich_rng_word_pos();
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
        assert_eq!(t.sandwich_rng_word_pos(), pos0, "the warm-up drew from the sandwich generator");
        let s = t.step(&a, &b, 2).unwrap();
        assert_eq!(s.losses.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![1.0, 0.5, 0.25]);
        assert!(!t_var(&t, "backbone.bn1.w0_25.weight").equal(&before), "after the warm-up the narrow widths train");
    }

    #[test]
    fn separate_narrow_predictor_gets_exactly_the_narrow_gradient() {
        // default: no predictor_narrow variables anywhere
        let t = DspnetTrainer::new(&tiny(&[0.5, 1.0]), Device::Cpu, 10, 10, 4).unwrap();
        assert!(t.online.vs.variables().keys().all(|k| !k.starts_with("predictor_narrow")));
        assert!(t.online.predictor_narrow.is_none());

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
            let mut t = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
            let vars = t.online.vs.variables();
            let narrow: Vec<&String> = vars.keys().filter(|k| k.starts_with("predictor_narrow.")).collect();
            assert!(narrow.iter().any(|k| k.as_str() == "predictor_narrow.fc1.weight"), "{narrow:?}");
            // the teacher has no predictor of either kind
            assert!(t.teacher.vs.variables().keys().all(|k| !k.starts_with("predictor")));
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
        cfg.heads.bn = crate::config::HeadBn::Shared;
        cfg.validate().unwrap();
        let t = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
        let names: Vec<String> = crate::run::checkpoint_tensors(&t).into_iter().map(|(n, _)| n).collect();
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
        let state = crate::checkpoint::CheckpointState {
            sandwich_rng_word_pos: "0".into(),
            ..crate::checkpoint::CheckpointState::basic(0, 10, "fp32")
        };
        crate::checkpoint::save(dir.path(), &crate::run::checkpoint_tensors(&t), state).unwrap();
        let mut u = DspnetTrainer::new(&cfg, Device::Cpu, 10, 10, 4).unwrap();
        tch::no_grad(|| {
            for (_, mut v) in u.online.vs.variables() {
                let _ = v.fill_(0.0);
            }
        });
        crate::run::restore_trainer(&mut u, &crate::checkpoint::load(dir.path()).unwrap()).unwrap();
        let uv = u.online.vs.variables();
        for (name, v) in t.online.vs.variables() {
            assert!(v.equal(&uv[&name]), "{name}");
        }
        // a default-config trainer's checkpoint lacks them: refused with the name
        let plain = DspnetTrainer::new(&tiny(&[0.5, 1.0]), Device::Cpu, 10, 10, 4).unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let state = crate::checkpoint::CheckpointState {
            sandwich_rng_word_pos: "0".into(),
            ..crate::checkpoint::CheckpointState::basic(0, 10, "fp32")
        };
        crate::checkpoint::save(d2.path(), &crate::run::checkpoint_tensors(&plain), state).unwrap();
        let e = crate::run::restore_trainer(&mut u, &crate::checkpoint::load(d2.path()).unwrap())
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("lacks online."), "{e}");
    }
}
