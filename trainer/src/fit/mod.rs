//! The training loop: a small type that walks the data stream epoch by epoch and step by step,
//! and hooks that do everything around the step (in the order they are given):
//!
//! | hook | job |
//! |---|---|
//! | [`resume::Resume`] | continue from a checkpoint exactly (validate, restore, stream position) |
//! | [`stop::StopOnSignal`] | Ctrl-C: stop at a step boundary (every rank at the same step) |
//! | [`nonfinite::NonFiniteGuard`] | a non-finite loss: stop, or skip the step (`train.skip_nonfinite_steps`) |
//! | [`logging::MetricsLogger`] | `metrics.jsonl` records (mirrored into a TensorBoard event file) and the progress bar |
//! | [`monitor::KnnMonitor`] | kNN top-1 of every width at epoch ends and every N steps |
//! | [`checkpointing::Checkpointer`] | checkpoints every N steps, at every epoch end and at the end |
//! | [`curves::Curves`] | `curves_loss.png` and `curves_knn.png` at the end of every invocation |
//!
//! # Exact resume
//! A checkpoint holds everything the next step depends on: online and teacher weights with BN
//! running statistics, the optimiser's momentum buffers, the step (which fixes the learning rate
//! and EMA rate schedules), the sandwich rule's generator position, and the stream position
//! (epoch, the epoch's shard order, stream position and samples/batches consumed in the epoch).
//! The step draws nothing from libtorch's generator (no dropout; BN is deterministic), so seeding
//! it for the initial weights is all it needs. The loader's randomness is positional (see
//! `dspnet_pipeline::loader`), so `Loader::epoch_from` re-creates the rest of the epoch exactly.
//! With `train.threads` fixed (1 for bit-exactness on CPU), a run killed at any point and
//! resumed with `--resume RUN` ends with the same bytes as an uninterrupted run.
//!
//! # Equal steps per epoch on every rank
//! With a manifest beside the shards, every epoch stops after
//! `dspnet_pipeline::loader::steps_per_epoch` batches: the minimum over ranks of the batches the
//! shard split gives them, derived identically on every rank.

pub mod checkpointing;
pub mod curves;
pub mod logging;
pub mod monitor;
pub mod nonfinite;
pub mod resume;
pub mod stop;

use crate::error::{NonFiniteLoss, Result, TrainerError};
use crate::method::{Method, StepStats};
use crate::momentum::{MomentumBase, RunLength};
use dspnet_pipeline::loader::Loader;
use dspnet_run::checkpoint::Checkpoint;
use dspnet_run::RunConfig;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// The model being trained: the momentum base and the method whose step runs on it.
pub struct Trainer {
    pub base: MomentumBase,
    pub method: Box<dyn Method>,
}

impl Trainer {
    /// The base and the method `cfg` describes (see [`MomentumBase::new`],
    /// [`crate::method::build`]).
    ///
    /// Errors: a configuration the model or the method cannot be built from.
    pub fn new(cfg: &RunConfig, device: Device, length: RunLength) -> Result<Self> {
        let base = MomentumBase::new(cfg, device, length)?;
        let method = crate::method::build(cfg, length.steps_per_epoch)?;
        Ok(Trainer { base, method })
    }

    /// One training step of the method (see [`Method::step`]).
    pub fn step(&mut self, view_a: &Tensor, view_b: &Tensor, step: u64) -> Result<StepStats> {
        self.method.step(&mut self.base, view_a, view_b, step)
    }

    /// Restores the base (weights, teacher, optimiser) and the method's generator from `ckpt`.
    ///
    /// Errors: a missing or mis-shaped tensor, a malformed generator position.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        self.base.restore(ckpt)?;
        let pos: u128 = ckpt.state.sandwich_rng_word_pos.parse().map_err(|_| {
            TrainerError::Run(dspnet_run::RunError::checkpoint(
                &ckpt.path,
                format!(
                    "{}: sandwich_rng_word_pos {:?} is not a number; the checkpoint cannot be resumed exactly",
                    ckpt.path.display(),
                    ckpt.state.sandwich_rng_word_pos
                ),
            ))
        })?;
        self.method.set_rng_word_pos(pos);
        Ok(())
    }
}

/// Where the run is in its data stream (saved in every checkpoint).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamPos {
    pub epoch: u64,
    /// Position in the rank's epoch stream after the last consumed batch.
    pub position: u64,
    /// Samples consumed in the epoch.
    pub samples: u64,
    /// Batches (optimiser steps) taken in the epoch.
    pub batches: u64,
}

/// The run's counters, shared with the hooks.
#[derive(Clone, Debug, Default)]
pub struct LoopState {
    /// Optimiser steps taken since the start of the run (skipped non-finite steps included).
    pub step: u64,
    pub pos: StreamPos,
    /// Images trained on since the start of the run.
    pub run_images: u64,
    /// Steps skipped because of a non-finite loss since the start of the run.
    pub skipped: u64,
    /// Step of the last checkpoint saved (or resumed from).
    pub last_saved: Option<u64>,
    /// Learning rate and EMA rate of the last step trained.
    pub last_lr_tau: (f64, f64),
}

/// How the run's steps are laid out over epochs.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    /// Batches per epoch from the shards' manifest, per epoch (`None`: unknown, an epoch ends
    /// when its stream does).
    pub shard_samples: Option<Vec<u64>>,
    /// Images per batch on this rank (for error messages).
    pub batch_size: usize,
    /// The step this invocation stops at: the planned total, or `--max-steps` when lower.
    pub run_steps: u64,
}

impl EpochPlan {
    /// Batches every rank can deliver in `epoch` (`None` without a manifest).
    fn cap(&self, loader: &Loader, epoch: u64) -> Option<u64> {
        self.shard_samples.as_ref().map(|c| loader.steps_per_epoch(epoch, c))
    }
}

/// What a step did, as the hooks see it.
pub enum StepEvent<'a> {
    /// The step was trained.
    Trained(&'a StepStats),
    /// A non-finite loss; the step was skipped (no update).
    Skipped(&'a NonFiniteLoss),
}

/// One finished step.
pub struct StepInfo<'a> {
    pub event: StepEvent<'a>,
    /// Images in the batch.
    pub images: u64,
    /// Time spent waiting for the batch.
    pub waited: Duration,
    /// The step ended its epoch (the manifest's cap reached).
    pub epoch_done: bool,
    /// The step ended this invocation ([`EpochPlan::run_steps`] reached).
    pub run_done: bool,
}

/// What hooks may touch: the trainer, the counters and the loader.
pub struct Cx<'a> {
    pub trainer: &'a mut Trainer,
    pub state: &'a mut LoopState,
    pub loader: &'a Loader,
    pub plan: &'a EpochPlan,
}

/// Something done around the steps. Every method does nothing by default.
pub trait Hook {
    /// Before the first step of this invocation.
    fn on_start(&mut self, _cx: &mut Cx) -> Result<()> {
        Ok(())
    }
    /// Before waiting for the next batch: `true` stops the run there.
    fn stop_before_batch(&mut self, _cx: &mut Cx) -> Result<bool> {
        Ok(false)
    }
    /// A batch arrived: `true` stops the run before training it.
    fn stop_before_step(&mut self, _cx: &mut Cx) -> Result<bool> {
        Ok(false)
    }
    /// Just before the step runs.
    fn before_step(&mut self, _cx: &mut Cx) -> Result<()> {
        Ok(())
    }
    /// The step's loss was non-finite (nothing was updated): `Ok(true)` skips the step and goes
    /// on, `Err` stops the run, `Ok(false)` leaves the decision to the other hooks (the loop
    /// stops with [`TrainerError::NonFinite`] if none takes it).
    fn on_nonfinite(&mut self, _cx: &mut Cx, _loss: &NonFiniteLoss) -> Result<bool> {
        Ok(false)
    }
    /// After every step, trained or skipped.
    fn after_step(&mut self, _cx: &mut Cx, _info: &StepInfo) -> Result<()> {
        Ok(())
    }
    /// After an epoch's last step (the stream position already points at the next epoch).
    fn after_epoch(&mut self, _cx: &mut Cx) -> Result<()> {
        Ok(())
    }
    /// At the end of this invocation (the run's end, `--max-steps`, or a stop).
    fn on_end(&mut self, _cx: &mut Cx, _interrupted: bool) -> Result<()> {
        Ok(())
    }
}

/// What the loop did in this invocation.
#[derive(Clone, Debug)]
pub struct LoopOutcome {
    pub state: LoopState,
    /// Step the invocation started from.
    pub start_step: u64,
    /// Images trained on by this invocation.
    pub images: u64,
    /// Time spent waiting for batches.
    pub wait: Duration,
    pub seconds: f64,
    pub interrupted: bool,
}

/// The loop: a trainer, a loader, an epoch plan and the hooks.
pub struct TrainLoop<'a> {
    pub trainer: &'a mut Trainer,
    pub loader: &'a Loader,
    pub plan: EpochPlan,
    pub hooks: Vec<Box<dyn Hook + 'a>>,
}

macro_rules! each_hook {
    ($self:ident, $state:ident, |$h:ident, $cx:ident| $body:expr) => {{
        let mut $cx = Cx { trainer: &mut *$self.trainer, state: &mut $state, loader: $self.loader, plan: &$self.plan };
        for $h in $self.hooks.iter_mut() {
            $body;
        }
    }};
}

impl TrainLoop<'_> {
    /// Runs from the state the hooks' `on_start` set (the start of the run, or a checkpoint)
    /// until [`EpochPlan::run_steps`] or a stop.
    ///
    /// Errors: an epoch without a full batch, loader errors, a non-finite loss nobody takes, and
    /// whatever a hook returns.
    pub fn run(mut self) -> Result<LoopOutcome> {
        let mut state = LoopState::default();
        each_hook!(self, state, |h, cx| h.on_start(&mut cx)?);
        let start_step = state.step;
        let run_steps = self.plan.run_steps;
        let started = Instant::now();
        let (mut images, mut wait, mut interrupted) = (0u64, Duration::ZERO, false);
        let no_full_batch = |epoch| TrainerError::NoFullBatch { epoch, batch_size: self.plan.batch_size };
        'outer: while state.step < run_steps {
            let cap = self.plan.cap(self.loader, state.pos.epoch);
            if cap == Some(0) {
                return Err(no_full_batch(state.pos.epoch));
            }
            if cap.is_none_or(|c| state.pos.batches < c) {
                let mut iter = self.loader.epoch_from(state.pos.epoch, state.pos.position)?;
                loop {
                    let mut stop = false;
                    each_hook!(self, state, |h, cx| stop |= h.stop_before_batch(&mut cx)?);
                    if stop {
                        interrupted = true;
                        break 'outer;
                    }
                    let t0 = Instant::now();
                    let next = iter.next();
                    let waited = t0.elapsed();
                    let Some(batch) = next else {
                        if state.pos.batches == 0 {
                            return Err(no_full_batch(state.pos.epoch));
                        }
                        break;
                    };
                    let batch = batch?;
                    wait += waited;
                    let view_b = batch.view_b.as_ref().ok_or_else(|| {
                        TrainerError::option("loader", "the loader returned an evaluation batch in training mode")
                    })?;
                    each_hook!(self, state, |h, cx| stop |= h.stop_before_step(&mut cx)?);
                    if stop {
                        interrupted = true;
                        break 'outer;
                    }
                    each_hook!(self, state, |h, cx| h.before_step(&mut cx)?);
                    let outcome = self.trainer.step(&batch.view_a, view_b, state.step);
                    let n = batch.keys.len() as u64;
                    state.pos.position = batch.end_position;
                    state.pos.samples += n;
                    state.pos.batches += 1;
                    state.step += 1;
                    images += n;
                    state.run_images += n;
                    let stats;
                    let loss;
                    let event = match outcome {
                        Ok(s) => {
                            state.last_lr_tau = (s.lr, s.tau);
                            stats = s;
                            StepEvent::Trained(&stats)
                        }
                        Err(TrainerError::NonFinite(l)) => {
                            let mut taken = false;
                            each_hook!(self, state, |h, cx| taken = taken || h.on_nonfinite(&mut cx, &l)?);
                            if !taken {
                                return Err(TrainerError::NonFinite(l));
                            }
                            loss = l;
                            StepEvent::Skipped(&loss)
                        }
                        Err(e) => return Err(e),
                    };
                    let epoch_done = cap.is_some_and(|c| state.pos.batches >= c);
                    let run_done = state.step >= run_steps;
                    let info = StepInfo { event, images: n, waited, epoch_done, run_done };
                    each_hook!(self, state, |h, cx| h.after_step(&mut cx, &info)?);
                    if run_done {
                        break 'outer;
                    }
                    if epoch_done {
                        break;
                    }
                }
            }
            // end of the epoch: the next one starts at its first position
            state.pos = StreamPos { epoch: state.pos.epoch + 1, ..StreamPos::default() };
            each_hook!(self, state, |h, cx| h.after_epoch(&mut cx)?);
        }
        each_hook!(self, state, |h, cx| h.on_end(&mut cx, interrupted)?);
        Ok(LoopOutcome { state, start_step, images, wait, seconds: started.elapsed().as_secs_f64(), interrupted })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dspnet_run::checkpoint::{self, CheckpointState};

    fn tiny() -> RunConfig {
        let mut cfg = dspnet_run::testing::tiny_config(&[0.25, 0.5, 0.75, 1.0]);
        cfg.method.random_widths = Some(1); // the sandwich rule draws: its generator matters
        cfg.optim.warmup_epochs = 0.0;
        cfg
    }

    /// 10 steps of 5 per epoch, 4 images per step.
    const LENGTH: RunLength = RunLength { total_steps: 10, steps_per_epoch: 5, global_batch: 4 };

    /// Two `[4, 1, 16, 16]` views from a ChaCha generator (not libtorch's global one, which
    /// tests running in parallel share).
    fn views(seed: u64) -> (Tensor, Tensor) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut v = || {
            let data: Vec<f32> = (0..4 * 16 * 16).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            Tensor::from_slice(&data).view([4, 1, 16, 16])
        };
        (v(), v())
    }

    fn bytes(t: &Tensor) -> Vec<u8> {
        let t = t.contiguous();
        let mut v = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut v, t.numel());
        v
    }

    #[test]
    fn trainer_state_round_trip_continues_bit_identically() {
        tch::set_num_threads(1);
        let cfg = tiny();
        // A: 5 steps in one go. B: 2 steps, checkpoint, a fresh trainer restored from it, 3 more.
        // B starts from A's initial weights, restored from a checkpoint (libtorch's generator is
        // shared with tests running in parallel, so two inits need not agree).
        let mut a = Trainer::new(&cfg, Device::Cpu, LENGTH).unwrap();
        let init = tempfile::tempdir().unwrap();
        let state0 = CheckpointState { sandwich_rng_word_pos: "0".into(), ..CheckpointState::basic(0, 10, "fp32") };
        checkpoint::save(init.path(), &a.base.checkpoint_tensors(), state0).unwrap();
        let mut widths_a = Vec::new();
        for s in 0..5 {
            let (x, y) = views(100 + s);
            widths_a.push(a.step(&x, &y, s).unwrap().losses);
        }
        let mut b = Trainer::new(&cfg, Device::Cpu, LENGTH).unwrap();
        b.restore(&checkpoint::load(init.path()).unwrap()).unwrap();
        for s in 0..2 {
            let (x, y) = views(100 + s);
            b.step(&x, &y, s).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let state = CheckpointState {
            sandwich_rng_word_pos: b.method.rng_word_pos().to_string(),
            ..CheckpointState::basic(2, 10, "fp32")
        };
        checkpoint::save(dir.path(), &b.base.checkpoint_tensors(), state).unwrap();
        drop(b);
        let mut c = Trainer::new(&cfg, Device::Cpu, LENGTH).unwrap();
        // the fresh trainer differs (its momentum buffers are zero) until restored
        let ck = checkpoint::load(dir.path()).unwrap();
        c.restore(&ck).unwrap();
        for s in 2..5 {
            let (x, y) = views(100 + s);
            let losses = c.step(&x, &y, s).unwrap().losses;
            // same widths drawn by the sandwich rule, same losses to the bit
            assert_eq!(losses, widths_a[s as usize], "step {s}");
        }
        let (ta, tc) = (a.base.checkpoint_tensors(), c.base.checkpoint_tensors());
        assert_eq!(ta.len(), tc.len());
        assert!(ta.iter().any(|(n, _)| n.starts_with("optim.")) && ta.iter().any(|(n, _)| n.contains("running_var")));
        for ((na, xa), (nc, xc)) in ta.iter().zip(&tc) {
            assert_eq!(na, nc);
            assert_eq!(bytes(xa), bytes(xc), "{na}");
        }
        // the generator position is real state: a trainer restored without it would draw the
        // widths of steps 0, 1, 2 again instead of those of steps 2, 3, 4
        let drawn: Vec<Vec<f64>> = widths_a.iter().map(|l| l.iter().map(|(w, _)| *w).collect()).collect();
        assert!(drawn.iter().all(|ws| ws.len() == 3), "{drawn:?}");
        assert_ne!(drawn[2..5], drawn[0..3], "{drawn:?}");
    }

    #[test]
    fn narrow_warmup_resumes_with_the_widths_of_an_uninterrupted_run() {
        tch::set_num_threads(1);
        let mut cfg = tiny();
        // 5 steps per epoch: round(0.6 · 5) = 3 warm-up steps (0, 1, 2) of the largest width only
        cfg.method.narrow_warmup_epochs = 0.6;
        cfg.validate().unwrap();
        let mut a = Trainer::new(&cfg, Device::Cpu, LENGTH).unwrap();
        let init = tempfile::tempdir().unwrap();
        let state0 = CheckpointState { sandwich_rng_word_pos: "0".into(), ..CheckpointState::basic(0, 10, "fp32") };
        checkpoint::save(init.path(), &a.base.checkpoint_tensors(), state0).unwrap();
        let mut uninterrupted = Vec::new();
        for s in 0..7 {
            let (x, y) = views(200 + s);
            uninterrupted.push(a.step(&x, &y, s).unwrap().losses);
        }
        let drawn: Vec<Vec<f64>> = uninterrupted.iter().map(|l| l.iter().map(|(w, _)| *w).collect()).collect();
        assert!(drawn[..3].iter().all(|ws| ws == &vec![1.0]), "{drawn:?}");
        assert!(drawn[3..].iter().all(|ws| ws.len() == 3 && ws[0] == 1.0 && ws[2] == 0.25), "{drawn:?}");
        // the sandwich draws after the warm-up are the generator's first ones: the same widths as
        // a run without warm-up draws from step 0 on
        let mut plain_cfg = tiny();
        plain_cfg.method.narrow_warmup_epochs = 0.0;
        let mut plain = Trainer::new(&plain_cfg, Device::Cpu, LENGTH).unwrap();
        for s in 0..4 {
            let (x, y) = views(200 + s);
            let ws: Vec<f64> = plain.step(&x, &y, s).unwrap().losses.iter().map(|(w, _)| *w).collect();
            assert_eq!(ws, drawn[3 + s as usize], "draw {s}");
        }
        // interrupted inside the warm-up (after 2 steps) and after it (after 5 steps)
        for split in [2u64, 5] {
            let mut b = Trainer::new(&cfg, Device::Cpu, LENGTH).unwrap();
            b.restore(&checkpoint::load(init.path()).unwrap()).unwrap();
            for s in 0..split {
                let (x, y) = views(200 + s);
                b.step(&x, &y, s).unwrap();
            }
            let dir = tempfile::tempdir().unwrap();
            let state = CheckpointState {
                sandwich_rng_word_pos: b.method.rng_word_pos().to_string(),
                ..CheckpointState::basic(split, 10, "fp32")
            };
            checkpoint::save(dir.path(), &b.base.checkpoint_tensors(), state).unwrap();
            drop(b);
            let mut c = Trainer::new(&cfg, Device::Cpu, LENGTH).unwrap();
            c.restore(&checkpoint::load(dir.path()).unwrap()).unwrap();
            for s in split..7 {
                let (x, y) = views(200 + s);
                assert_eq!(c.step(&x, &y, s).unwrap().losses, uninterrupted[s as usize], "split {split}, step {s}");
            }
        }
    }
}
