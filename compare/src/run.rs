//! The comparison itself: data, DSPNet once, plain BYOL per width, optionally the same-budget
//! runs, the evaluation of every network with the same protocols, and the outputs.
//!
//! # Output folder
//! ```text
//! OUT/compare-plan.json         what is compared (DSPNet config, widths, shards); checked on --resume
//! OUT/data/{train,test}/        the sharded subset (when no shards were given)
//! OUT/dspnet/                   DSPNet's run directory (config, checkpoint, metrics, results)
//! OUT/byol-w0_25/ ...           one run directory per one-by-one width
//! OUT/budget-w0_25/ ...         same-budget runs (--same-budget)
//! OUT/seed0/dspnet/, OUT/seed0/byol-w0_25/, ..., OUT/seed1/...
//!                               the same per seed instead, with --seeds (see `seeds.rs`)
//! OUT/compare.json, report.md, compare.png
//! OUT/curves/steps-w0_25.png, flops-w0_25.png, ...   the kNN monitor's curves per width
//! ```
//! Every run directory gets `compare-train.json` once its training has finished and been
//! measured, and `compare-eval.json` once it has been evaluated. Every training runs with the
//! kNN monitor (`[compare.monitor]`); the seconds of its evaluations, recorded in the run's
//! `metrics.jsonl`, are subtracted from the measured training wall time.
//!
//! # Resuming
//! With `--resume`, a sub-run whose `compare-train.json` records the configuration asked for is
//! kept and not trained again, and its evaluation is kept when it covered the same protocols:
//! finished work is never lost. Only the recipe counts (the monitor and other runtime settings
//! may differ), and a seed's sub-run is also found in the other layout's folder (`seeds.rs`),
//! so adding a seed trains only that seed's sub-runs. An unfinished training (interrupted, killed,
//! preempted) continues from its last checkpoint when its recorded request has the recipe and
//! shards asked for and that checkpoint is part-way (exact resume, as `dspnet-stream-train
//! --resume`); its record then counts every piece (see `child.rs`, "Pieces") and the report
//! says which trainings took more than one. Otherwise it is started again from its beginning.
//!
//! # Reusing the baselines of an earlier comparison (`--baseline-from DIR`)
//! An ablation of DSPNet changes only DSPNet's configuration: the one-by-one networks are the
//! same (see [`crate::plan::one_by_one_config`]). With `baseline_from = DIR` the finished
//! one-by-one sub-runs of the comparison in DIR are COPIED into OUT (DIR is never written; the
//! copy's `compare-train.json` records where it was trained, so every later report of OUT marks
//! it) and kept instead of trained, provided DIR's `compare-plan.json` names the same training and test
//! shards as this run (with neither `--train-shards` nor `--test-shards`, DIR's shards, e.g.
//! DIR/data, are used) and each `byol-w*/compare-train.json` records exactly the configuration
//! planned now (per seed: `DIR/seed{s}/byol-w*` or, for a comparison without seeds, `DIR/byol-w*`).
//! A missing or different `byol-w*` run, or other shards, is a one-line error
//! naming what differs. A `budget-w*` run is reused when its configuration matches; one whose
//! configuration differs only in its schedule (`train.epochs`, `optim.warmup_epochs`: the cut
//! follows DSPNet's measured wall time, which a new DSPNet run changes) is trained anew in OUT.
//!
//! # Sub-runs as separate jobs (`--only NAME,...`)
//! A comparison's trainings are independent until the report, so they can run at once as
//! separate jobs sharing OUT (one per GPU, node or cluster job): `--only dspnet` in one,
//! `--only byol-w1_00` in another, each training (or keeping, or continuing: `--only` implies
//! `--resume`) and evaluating just its named sub-runs of every seed, and writing no report; then
//! the same command without `--only`, with `--resume`, keeps them all and writes the report.
//! Locks ([`crate::lock`]) keep the jobs apart: the first job shards OUT/data and records the
//! plan while the others wait (OUT's lock); a training holds its sub-run folder's lock, so a
//! second process asked for a sub-run that is training stops with a one-line error instead of
//! training it twice; an evaluation waits for that lock, so one started by another process is
//! finished and read, not repeated. Same-budget runs follow DSPNet's measured time and are
//! trained by the final run. Jobs that share a machine's cores slow each other down: their wall
//! times then measure that, not the method.

use crate::child::{unix_now, ChildRecord, ChildRequest, CHILD_RECORD, REQUEST};
use crate::cost::{forward_macs, same_budget_split, train_macs, width_steps};
use crate::curves::{read_curves, CurveSource, RunCurve};
use crate::error::{CompareError, Result};
use crate::lock::FolderLock;
use crate::plan::{one_by_one_config, same_budget_config, Plan};
use crate::report::{build, write_all, Comparison, CopiedFrom, Machine, Meta, SeedRuns, SubRun, TrainRecord};
use crate::seeds::Repeat;
use dspnet_core::cli::StopSignal;
use dspnet_eval::{evaluate, EvalRequest, Protocol, TransferLinearSettings};
use dspnet_model::parse_device;
use dspnet_model::width_tag;
use dspnet_pipeline::source::{expand_pattern, is_remote};
use dspnet_run::checkpoint::CheckpointState;
use dspnet_run::config::MonitorConfig;
use dspnet_run::layout::{METRICS, STATE};
use dspnet_run::EvalRecord;
use dspnet_run::RunConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The comparison's plan record in OUT.
pub const PLAN: &str = "compare-plan.json";
/// A sub-run's training record (written once it has finished and been measured).
pub const TRAIN_RECORD: &str = "compare-train.json";
/// A sub-run's evaluation records.
pub const EVAL_RECORD: &str = "compare-eval.json";

/// What the caller asks of one comparison.
pub struct CompareRequest {
    pub plan: Plan,
    /// Shard patterns; both or neither (then `[compare.data]` is sharded into OUT/data).
    pub train_shards: Option<String>,
    pub test_shards: Option<String>,
    pub out: PathBuf,
    /// Keep finished sub-runs of an earlier comparison in `out` (see the module docs).
    pub resume: bool,
    /// `--baseline-from DIR`: copy the matching finished one-by-one (and same-budget) sub-runs
    /// of the comparison in DIR instead of training them (see the module docs).
    pub baseline_from: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Binary that trains one sub-run when called with `--child-train RUN` (the
    /// `dspnet-compare` binary itself).
    pub exe: PathBuf,
    /// The command as typed (for the report).
    pub command: String,
    /// SIGINT/SIGTERM: no new sub-run starts once set.
    pub stop: StopSignal,
    /// `--only`: train and evaluate only these sub-runs (`dspnet`, `byol-w1_00`, ...) of every
    /// seed and write no report (see the module docs). `None`: the whole comparison.
    pub only: Option<Vec<String>>,
}

impl CompareRequest {
    /// Whether finished sub-runs are kept and interrupted ones continued: `--resume`, or an
    /// `--only` job (it shares OUT with the others by design).
    pub fn resumes(&self) -> bool {
        self.resume || self.only.is_some()
    }
}

/// A finished comparison.
pub struct Outcome {
    /// `None` with `--only` (no report is written).
    pub comparison: Option<Comparison>,
    /// Sub-runs kept from an earlier invocation, and sub-runs trained by this one.
    pub kept: Vec<String>,
    pub trained: Vec<String>,
    /// Sub-runs copied from `--baseline-from` instead of trained.
    pub reused: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PlanRecord {
    dspnet_config: String,
    widths: Vec<f64>,
    train_shards: Vec<String>,
    test_shards: Vec<String>,
}

impl PlanRecord {
    /// Whether `new` (with DSPNet's configuration `cfg`) continues the comparison recorded in
    /// `self`: the same widths and shards, and DSPNet's recipe the same. Runtime settings
    /// (threads, logging, the kNN monitor, checkpoint frequency) and keys added to the config
    /// since (read with their defaults) may differ, as they may for `dspnet-stream-train
    /// --resume`.
    fn same_comparison(&self, new: &PlanRecord, cfg: &RunConfig) -> bool {
        self.widths == new.widths
            && self.train_shards == new.train_shards
            && self.test_shards == new.test_shards
            && same_recipe(&self.dspnet_config, cfg)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct EvalFile {
    protocols: Vec<String>,
    /// The transfer-linear datasets evaluated (absolute paths; empty without that protocol).
    #[serde(default)]
    transfer_data: Vec<String>,
    records: Vec<EvalRecord>,
}

fn absolute(shards: Vec<String>) -> Vec<String> {
    shards
        .into_iter()
        .map(|s| if is_remote(&s) { s } else { std::path::absolute(&s).map_or(s, |p| p.to_string_lossy().to_string()) })
        .collect()
}

struct Ctx<'a> {
    req: &'a CompareRequest,
    train_shards: Vec<String>,
    test_shards: Vec<String>,
    /// Settings of the transfer-linear protocol (its datasets checked before anything trains).
    transfer_linear: TransferLinearSettings,
    /// The `[monitor]` every training runs with.
    monitor: MonitorConfig,
    kept: Vec<String>,
    trained: Vec<String>,
    reused: Vec<String>,
}

fn read_train_record(dir: &Path) -> Option<TrainRecord> {
    std::fs::read(dir.join(TRAIN_RECORD)).ok().and_then(|b| serde_json::from_slice::<TrainRecord>(&b).ok())
}

/// The first of `candidates` (sub-run names) under `root` holding a finished training of the
/// same recipe as `cfg`, with its record (named after the folder it is in).
fn find_finished(root: &Path, candidates: &[String], cfg: &RunConfig) -> Option<(String, TrainRecord)> {
    candidates.iter().find_map(|name| {
        let mut r = read_train_record(&root.join(name)).filter(|r| trains_same(r, cfg))?;
        r.name = name.clone();
        Some((name.clone(), r))
    })
}

/// The request that continues the unfinished training in `dir` from its checkpoint, when it can
/// be: `dir` holds a request (its last piece's) with `fresh`'s shards and device and `cfg`'s
/// recipe, and a checkpoint part-way through the run that exact resume can continue (it has a
/// stream position; the trainer checks its weights). `Ok(None)`: train from the beginning.
/// The earlier pieces' seconds add the last piece's loop time up to the checkpoint's step (the
/// `elapsed_sec` of that step's metrics record; none when the last piece made no new
/// checkpoint).
///
/// Errors: a damaged metrics file; a checkpoint past its first piece's start whose step has
/// no metrics record.
fn next_piece(dir: &Path, fresh: &ChildRequest, cfg: &RunConfig) -> Result<Option<ChildRequest>> {
    let Some(last) =
        std::fs::read(dir.join(REQUEST)).ok().and_then(|b| serde_json::from_slice::<ChildRequest>(&b).ok())
    else {
        return Ok(None);
    };
    if last.shards != fresh.shards || last.device != fresh.device || !same_recipe(&last.config_toml, cfg) {
        return Ok(None);
    }
    let state: Option<CheckpointState> =
        std::fs::read(dir.join(STATE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let Some(state) = state else { return Ok(None) };
    let step = state.step;
    if step == 0 || state.finished || state.position_in_epoch.is_none() {
        return Ok(None);
    }
    let earlier_seconds = if step == last.start_step {
        last.earlier_seconds
    } else {
        let metrics = dir.join(METRICS);
        let elapsed = dspnet_run::metrics::read(dir)?
            .iter()
            .find(|r| r["step"].as_u64() == Some(step) && r.get("elapsed_sec").is_some())
            .and_then(|r| r["elapsed_sec"].as_f64())
            .ok_or_else(|| {
                CompareError::run_file(
                    &metrics,
                    format!(
                        "{}: no record of step {step}, where the checkpoint is; cannot count the time trained before it: rerun without --resume in a new --out",
                        metrics.display()
                    ),
                )
            })?;
        last.earlier_seconds + elapsed
    };
    let mut earlier_spans = last.earlier_spans.clone();
    if last.started_unix > 0.0 {
        earlier_spans.push((last.started_unix, last_write(dir).max(last.started_unix)));
    }
    Ok(Some(ChildRequest { earlier_seconds, start_step: step, piece: last.piece + 1, earlier_spans, ..fresh.clone() }))
}

/// When the run folder `dir` was last written (its metrics or checkpoint record), Unix seconds;
/// 0 when neither can be read.
fn last_write(dir: &Path) -> f64 {
    [METRICS, STATE]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .fold(0.0, f64::max)
}

/// Seconds of the kNN monitor's evaluations recorded in `dir`'s metrics.jsonl.
///
/// Errors: a damaged metrics file.
fn monitor_seconds(dir: &Path) -> Result<f64> {
    Ok(dspnet_run::metrics::read(dir)?.iter().filter_map(|r| r["monitor"]["seconds"].as_f64()).sum())
}

/// Copies the folder `src` to `dst` (files and sub-folders; `dst` must not exist).
fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).map_err(|e| CompareError::io(dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| CompareError::io(src, e))? {
        let entry = entry.map_err(|e| CompareError::io(src, e))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if entry.file_type().map_err(|e| CompareError::io(&from, e))?.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| CompareError::io(&from, e))?;
        }
    }
    Ok(())
}

/// The code version of the comparison in `dir` (from its compare.json; "unknown" without one).
fn comparison_version(dir: &Path) -> String {
    std::fs::read(dir.join("compare.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["code_version"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The shards of the comparison in `dir` (`--baseline-from`), from its `compare-plan.json`.
///
/// Errors: no readable plan there (not a dspnet-compare output folder).
fn baseline_plan(dir: &Path) -> Result<PlanRecord> {
    let path = dir.join(PLAN);
    std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<PlanRecord>(&b).ok()).ok_or_else(|| {
        CompareError::option(
            "--baseline-from",
            format!(
                "--baseline-from {}: no readable {PLAN} there; pass the --out folder of an earlier dspnet-compare run",
                dir.display()
            ),
        )
    })
}

/// Dotted recipe keys in which the configuration recorded in `src`'s train record differs from
/// `cfg` (runtime settings such as threads or logging do not count).
fn recorded_differences(record: &TrainRecord, src: &Path, cfg: &RunConfig) -> Vec<String> {
    RunConfig::from_toml_str(&record.config_toml, &src.join(TRAIN_RECORD).display().to_string())
        .map(|old| old.recipe_differences(cfg))
        .unwrap_or_else(|_| vec!["(unreadable recorded config)".into()])
}

/// True when the recorded configuration `config_toml` has `cfg`'s recipe (runtime settings and
/// keys added since, read with their defaults, may differ).
fn same_recipe(config_toml: &str, cfg: &RunConfig) -> bool {
    RunConfig::from_toml_str(config_toml, "the recorded config").is_ok_and(|old| old.recipe == cfg.recipe)
}

/// True when a train record's configuration trains the same network as `cfg`: equal recipes.
fn trains_same(record: &TrainRecord, cfg: &RunConfig) -> bool {
    same_recipe(&record.config_toml, cfg)
}

fn mismatch(base: &Path, name: &str, diffs: &[String]) -> CompareError {
    CompareError::option(
        "--baseline-from",
        format!(
            "--baseline-from {}: {name} was trained with another configuration (config keys differ: {}); only DSPNet's settings may change, so drop those changes or run without --baseline-from",
            base.display(),
            diffs.join(", ")
        ),
    )
}

/// The finished one-by-one run of `base` among `candidates` (sub-run names, see
/// [`Repeat::candidates`]) trained with exactly `cfg`'s recipe: its name there and its record.
///
/// Errors (one line): no candidate holds a finished run, or the first that does was trained with
/// another configuration (the message names the keys).
fn check_baseline_run(base: &Path, candidates: &[String], cfg: &RunConfig) -> Result<(String, TrainRecord)> {
    if let Some(found) = find_finished(base, candidates, cfg) {
        return Ok(found);
    }
    let name = &candidates[0];
    let Some((other, record)) =
        candidates.iter().find_map(|n| read_train_record(&base.join(n)).map(|r| (n.clone(), r)))
    else {
        return Err(CompareError::option(
            "--baseline-from",
            format!(
                "--baseline-from {}: it has no finished {name} ({} is missing); compare the same widths and seeds as it did, or run without --baseline-from",
                base.display(),
                base.join(name).join(TRAIN_RECORD).display()
            ),
        ));
    };
    Err(mismatch(base, &other, &recorded_differences(&record, &base.join(&other), cfg)))
}

/// Config keys of a same-budget run that follow DSPNet's measured wall time.
const BUDGET_SCHEDULE_KEYS: &[&str] = &["optim.warmup_epochs", "train.epochs"];

impl Ctx<'_> {
    fn interrupted(&self) -> CompareError {
        CompareError::Interrupted { out: self.req.out.clone() }
    }

    /// Trains `cfg` (already carrying the repetition's seed) as `base` of `repeat` in a child
    /// process, with the kNN monitor on, unless a finished record of the same recipe is among
    /// the repetition's candidate folders (then kept where it is). `nominal` maps the config's
    /// trained widths (ascending) to the widths they stand for. The record's `name` is the
    /// folder it is in.
    fn ensure_trained(
        &mut self,
        repeat: &Repeat,
        base: &str,
        kind: &str,
        cfg: &RunConfig,
        nominal: &[f64],
    ) -> Result<TrainRecord> {
        let name = repeat.name(base);
        let dir = self.req.out.join(&name);
        if let Some(r) = self.keep_finished(repeat, base, cfg) {
            return Ok(r);
        }
        if kind != "dspnet" {
            if let Some(r) = self.adopt_baseline(repeat, base, kind, cfg)? {
                return Ok(r);
            }
        }
        let Some(_lock) = FolderLock::try_take(&dir)? else {
            return Err(CompareError::sub_run(
                &name,
                format!(
                    "{name} is being trained by another dspnet-compare in {} (an --only job, or an earlier run still going); let it finish, then rerun with --resume",
                    self.req.out.display()
                ),
            ));
        };
        // another process may have finished it between the look above and the lock
        if let Some(r) = self.keep_finished(repeat, base, cfg) {
            return Ok(r);
        }
        let mut cfg = cfg.clone();
        // the comparison's kNN monitor; the config's own interference measurement stays
        let interference = cfg.runtime.monitor.interference_every_steps;
        cfg.runtime.monitor = MonitorConfig { interference_every_steps: interference, ..self.monitor.clone() };
        let cfg = &cfg;
        let toml = cfg.to_toml();
        if self.req.stop.signal().is_some() {
            return Err(self.interrupted());
        }
        for stale in [TRAIN_RECORD, EVAL_RECORD, CHILD_RECORD] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
        let mut request = ChildRequest::first(toml.clone(), self.train_shards.clone(), self.req.device.clone());
        if self.req.resumes() {
            if let Some(next) = next_piece(&dir, &request, cfg)? {
                tracing::info!(
                    run = name,
                    step = next.start_step,
                    piece = next.piece,
                    "continuing from its checkpoint"
                );
                request = next;
            }
        }
        request.started_unix = unix_now();
        dspnet_core::fs::write_atomic(&dir.join(REQUEST), &serde_json::to_vec_pretty(&request).expect("json"))?;
        if !request.resumes() {
            tracing::info!(run = name, "training");
        }
        let t0 = Instant::now();
        let status = self.run_child(&name, &dir)?;
        let process_seconds = t0.elapsed().as_secs_f64();
        let mut spans = request.earlier_spans.clone();
        spans.push((request.started_unix, unix_now()));
        if !status.success() {
            if self.req.stop.signal().is_some() {
                return Err(self.interrupted());
            }
            return Err(CompareError::sub_run(
                &name,
                format!(
                    "training {name} failed ({status}; its error is printed above); finished sub-runs in {} are kept: fix the cause and rerun with --resume",
                    self.req.out.display()
                ),
            ));
        }
        let child_path = dir.join(CHILD_RECORD);
        let child: ChildRecord =
            std::fs::read(&child_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| {
                CompareError::run_file(
                    &child_path,
                    format!("{} is missing after the training of {name} succeeded", child_path.display()),
                )
            })?;
        let macs = forward_macs(cfg)?;
        let widths: Vec<f64> = macs.online.iter().map(|(w, _)| *w).collect();
        let (logged, counts) = width_steps(&dir.join(METRICS), &widths)?;
        let monitor_seconds = monitor_seconds(&dir)?;
        if logged + child.skipped_nonfinite != child.steps {
            return Err(CompareError::run_file(
                dir.join(METRICS),
                format!(
                    "{}: {logged} trained steps logged but the run took {} ({} skipped); the FLOP count needs one metrics line per step",
                    dir.join(METRICS).display(),
                    child.steps,
                    child.skipped_nonfinite
                ),
            ));
        }
        let total = train_macs(child.images, child.steps, macs.teacher, &macs.online, &counts);
        let to_nominal =
            |v: Vec<(f64, u64)>| -> Vec<(f64, u64)> { v.into_iter().zip(nominal).map(|((_, x), w)| (*w, x)).collect() };
        let seconds = (child.seconds - monitor_seconds).max(0.0);
        let record = TrainRecord {
            name: name.clone(),
            kind: kind.to_string(),
            widths: nominal.to_vec(),
            seconds,
            monitor_seconds,
            process_seconds,
            steps: child.steps,
            total_steps: child.total_steps,
            steps_per_epoch: child.steps_per_epoch,
            images: child.images,
            step_seconds: seconds / child.steps.max(1) as f64,
            train_macs: total,
            teacher_macs: macs.teacher,
            online_macs: to_nominal(macs.online),
            width_steps: to_nominal(counts),
            peak_rss_bytes: child.peak_rss_bytes,
            baseline_rss_bytes: child.baseline_rss_bytes,
            threads: child.threads,
            precision: child.precision,
            data_wait_fraction: child.data_wait_fraction,
            skipped_nonfinite: child.skipped_nonfinite,
            pieces: child.pieces,
            config_toml: toml,
            host: dspnet_core::machine::hostname(),
            spans,
            copied_from: None,
        };
        dspnet_core::fs::write_atomic(&dir.join(TRAIN_RECORD), &serde_json::to_vec_pretty(&record).expect("json"))?;
        self.trained.push(name);
        Ok(record)
    }

    /// Runs `dspnet-compare --child-train DIR` for the sub-run `name` and waits for it. The
    /// child's standard input is a pipe the parent closes on its own first SIGINT/SIGTERM, which
    /// asks the child to checkpoint and stop (see `child.rs`, "Stopping"): a signal sent to this
    /// process alone reaches the training too.
    ///
    /// Errors: the child cannot be started or waited for.
    fn run_child(&self, name: &str, dir: &Path) -> Result<std::process::ExitStatus> {
        let failed = |what: &str, e: std::io::Error| {
            CompareError::sub_run(
                name,
                format!("cannot {what} {} for the training of {name}: {e}", self.req.exe.display()),
            )
        };
        let mut child = Command::new(&self.req.exe)
            .arg("--child-train")
            .arg(dir)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| failed("start", e))?;
        // dropping the pipe's write end is the stop request
        let mut stop_pipe = child.stdin.take();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| failed("wait for", e))? {
                return Ok(status);
            }
            if stop_pipe.is_some() && self.req.stop.signal().is_some() {
                tracing::info!(run = name, "asking the training to save a checkpoint and stop");
                stop_pipe = None;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The finished training of `base` for `repeat` with `cfg`'s recipe, if one is among its
    /// candidate folders (then recorded as kept).
    fn keep_finished(&mut self, repeat: &Repeat, base: &str, cfg: &RunConfig) -> Option<TrainRecord> {
        let (found, r) = find_finished(&self.req.out, &repeat.candidates(base), cfg)?;
        tracing::info!(run = found, "kept: trained earlier");
        self.kept.push(found);
        Some(r)
    }

    /// `--baseline-from DIR`: copies the finished `base` run of `repeat` in DIR (the first of
    /// its candidate folders that trains the same network as `cfg`) into `OUT/<its name here>`
    /// and returns its record. `Ok(None)`: no baseline folder, or a same-budget run that is
    /// missing there or whose schedule differs (trained here).
    ///
    /// Errors: a one-by-one run that is missing in DIR or was trained with another
    /// configuration (the message names the keys), a same-budget run differing in more than its
    /// schedule, copy failures.
    fn adopt_baseline(
        &mut self,
        repeat: &Repeat,
        base: &str,
        kind: &str,
        cfg: &RunConfig,
    ) -> Result<Option<TrainRecord>> {
        let Some(dir) = &self.req.baseline_from else { return Ok(None) };
        let candidates = repeat.candidates(base);
        let (found, mut record) = if kind == "same-budget" {
            match find_finished(dir, &candidates, cfg) {
                Some(f) => f,
                None => {
                    let Some((other, r)) =
                        candidates.iter().find_map(|n| read_train_record(&dir.join(n)).map(|r| (n.clone(), r)))
                    else {
                        return Ok(None);
                    };
                    let diffs = recorded_differences(&r, &dir.join(&other), cfg);
                    if !diffs.is_empty() && diffs.iter().all(|k| BUDGET_SCHEDULE_KEYS.contains(&k.as_str())) {
                        tracing::info!(
                            run = other,
                            "the baseline's same-budget cut differs (DSPNet's wall time changed): training it"
                        );
                        return Ok(None);
                    }
                    return Err(mismatch(dir, &other, &diffs));
                }
            }
        } else {
            check_baseline_run(dir, &candidates, cfg)?
        };
        let name = repeat.name(base);
        let (src, dst) = (dir.join(&found), self.req.out.join(&name));
        if dst.exists() {
            std::fs::remove_dir_all(&dst).map_err(|e| CompareError::io(&dst, e))?;
        }
        copy_dir(&src, &dst)?;
        tracing::info!(run = name, from = %src.display(), "reused from the baseline comparison");
        // the copy says where it was trained (a copy of a copy keeps the first origin)
        record.name = name.clone();
        if record.copied_from.is_none() {
            // absolute: the record outlives the working folder it was typed in
            let from = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            record.copied_from =
                Some(CopiedFrom { from: from.display().to_string(), code_version: comparison_version(dir) });
        }
        dspnet_core::fs::write_atomic(&dst.join(TRAIN_RECORD), &serde_json::to_vec_pretty(&record).expect("json"))?;
        self.reused.push(name);
        Ok(Some(record))
    }

    /// The transfer-linear datasets a sub-run's evaluation covers (none without that protocol).
    fn transfer_data(&self) -> Vec<String> {
        if !self.req.plan.protocols.iter().any(|p| p == Protocol::TransferLinear.name()) {
            return Vec::new();
        }
        self.transfer_linear.datasets.iter().map(|d| d.display().to_string()).collect()
    }

    /// The monitor curves of the finished training `train` (see [`read_curves`]).
    ///
    /// Errors: a damaged metrics.jsonl.
    fn curves(&self, train: &TrainRecord, seed: u64, config_widths: &[f64]) -> Result<Vec<RunCurve>> {
        read_curves(
            &self.req.out.join(&train.name),
            &CurveSource {
                run: &train.name,
                kind: &train.kind,
                seed,
                config_widths,
                nominal: &train.widths,
                images: train.images,
                steps: train.steps,
                teacher_macs: train.teacher_macs,
                online_macs: &train.online_macs,
            },
        )
    }

    /// Evaluates `OUT/name` with the plan's protocols unless done before with the same ones (and
    /// the same transfer-linear datasets).
    /// Record widths are mapped from the config's (ascending) to `nominal`.
    fn ensure_evaluated(&self, name: &str, config_widths: &[f64], nominal: &[f64]) -> Result<Vec<EvalRecord>> {
        let dir = self.req.out.join(name);
        // another job evaluating this sub-run finishes first; its records are then read below
        let _lock = FolderLock::wait(&dir)?;
        let path = dir.join(EVAL_RECORD);
        let transfer_data = self.transfer_data();
        if let Some(f) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<EvalFile>(&b).ok()) {
            if f.protocols == self.req.plan.protocols && f.transfer_data == transfer_data {
                return Ok(f.records);
            }
        }
        if self.req.stop.signal().is_some() {
            return Err(self.interrupted());
        }
        tracing::info!(run = name, "evaluating");
        let mut request = EvalRequest::new(
            dir.clone(),
            self.train_shards.clone(),
            self.test_shards.clone(),
            parse_device(&self.req.device)?,
        );
        request.protocols = self.req.plan.eval_protocols()?;
        request.transfer_linear = self.transfer_linear.clone();
        let mut records = evaluate(&request)?;
        for r in &mut records {
            if let Some(i) = config_widths.iter().position(|w| (w - r.width).abs() <= 1e-9) {
                r.width = nominal[i];
            }
        }
        let file = EvalFile { protocols: self.req.plan.protocols.clone(), transfer_data, records: records.clone() };
        dspnet_core::fs::write_atomic(&dir.join(EVAL_RECORD), &serde_json::to_vec_pretty(&file).expect("json"))?;
        Ok(records)
    }
}

impl Ctx<'_> {
    /// One repetition: DSPNet, the one-by-one networks and (`--same-budget`) the same-budget
    /// runs, each trained with the repetition's seed (or kept), evaluated, and the monitor curves
    /// of DSPNet and the one-by-one networks. `dspnet_cfg`: DSPNet's configuration before the
    /// seed is applied.
    ///
    /// Errors: a failed or interrupted sub-run, a one-by-one network that is not DSPNet's slice,
    /// damaged metrics.
    fn one_seed(&mut self, repeat: &Repeat, dspnet_cfg: &RunConfig) -> Result<(SeedRuns, Vec<RunCurve>)> {
        let req = self.req;
        let widths = req.plan.widths.clone();
        let seed = repeat.seed;
        let dspnet = self.dspnet_run(repeat, dspnet_cfg)?;
        let mut curves = self.curves(&dspnet.train, seed, &widths)?;

        let mut ones = Vec::new();
        let mut one_cfgs = Vec::new();
        for &w in &req.plan.one_by_one_widths {
            let (one, cfg) = self.one_by_one_run(repeat, w)?;
            check_same_network(&dspnet.evals, &one.evals, w, &one.train.name)?;
            curves.extend(self.curves(&one.train, seed, &[1.0])?);
            ones.push(one);
            one_cfgs.push(cfg);
        }

        let budget = if req.plan.same_budget {
            let split = same_budget_split(
                dspnet.train.seconds,
                &ones.iter().zip(&widths).map(|(o, w)| (*w, o.train.step_seconds)).collect::<Vec<_>>(),
            );
            let mut runs = Vec::new();
            for ((w, _, steps), (one, cfg)) in split.widths.iter().zip(ones.iter().zip(&one_cfgs)) {
                let base = format!("budget-{}", width_tag(*w));
                let cfg = same_budget_config(cfg, *steps, one.train.steps_per_epoch, one.train.total_steps)?;
                let train = self.ensure_trained(repeat, &base, "same-budget", &cfg, &[*w])?;
                let evals = self.ensure_evaluated(&train.name, &[1.0], &[*w])?;
                runs.push(SubRun { train, evals });
            }
            Some((split, runs))
        } else {
            None
        };
        Ok((SeedRuns { seed, dspnet, one: ones, budget }, curves))
    }

    /// DSPNet of `repeat` trained (or kept) and evaluated. `dspnet_cfg`: before the seed.
    fn dspnet_run(&mut self, repeat: &Repeat, dspnet_cfg: &RunConfig) -> Result<SubRun> {
        let widths = &self.req.plan.widths;
        let train = self.ensure_trained(repeat, DSPNET_RUN, "dspnet", &repeat.apply(dspnet_cfg), widths)?;
        let evals = self.ensure_evaluated(&train.name, widths, widths)?;
        Ok(SubRun { train, evals })
    }

    /// The one-by-one network of width `w` of `repeat` trained (or kept, or copied from the
    /// baseline) and evaluated, with its configuration.
    fn one_by_one_run(&mut self, repeat: &Repeat, w: f64) -> Result<(SubRun, RunConfig)> {
        let cfg = repeat.apply(&one_by_one_config(&self.req.plan.base, w)?);
        let train = self.ensure_trained(repeat, &one_by_one_name(w), "one-by-one", &cfg, &[w])?;
        let evals = self.ensure_evaluated(&train.name, &[1.0], &[w])?;
        Ok((SubRun { train, evals }, cfg))
    }

    /// `--only`: the sub-runs named in `names` of `repeat`, trained (or kept) and evaluated;
    /// nothing else.
    fn only_these(&mut self, repeat: &Repeat, dspnet_cfg: &RunConfig, names: &[String]) -> Result<()> {
        if names.iter().any(|n| n == DSPNET_RUN) {
            self.dspnet_run(repeat, dspnet_cfg)?;
        }
        for &w in &self.req.plan.one_by_one_widths {
            if names.contains(&one_by_one_name(w)) {
                self.one_by_one_run(repeat, w)?;
            }
        }
        Ok(())
    }
}

/// DSPNet's sub-run folder name (per seed under `seed{s}/`).
const DSPNET_RUN: &str = "dspnet";

/// The one-by-one sub-run folder name of width `w` (`byol-w0_25`).
fn one_by_one_name(w: f64) -> String {
    format!("byol-{}", width_tag(w))
}

/// Checks `--only`'s names against the sub-runs the plan trains: DSPNet's and each one-by-one
/// width's.
///
/// Errors: an empty list, or a name that is not one of them (the message lists them).
fn check_only(names: &[String], plan: &Plan) -> Result<()> {
    let valid: Vec<String> = std::iter::once(DSPNET_RUN.to_string())
        .chain(plan.one_by_one_widths.iter().map(|&w| one_by_one_name(w)))
        .collect();
    let unknown = names.iter().find(|n| !valid.contains(n));
    if names.is_empty() || unknown.is_some() {
        let what = unknown.map_or("an empty list".to_string(), |n| format!("{n:?}"));
        return Err(CompareError::option(
            "--only",
            format!(
                "--only: {what} is not a sub-run of this comparison; name some of {} (same-budget runs are trained by the run without --only)",
                valid.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Checks that a one-by-one network has the DSPNet sub-network's exact size: same parameters
/// and MACs at `width` in every record.
fn check_same_network(dspnet: &[EvalRecord], one: &[EvalRecord], width: f64, name: &str) -> Result<()> {
    let d = dspnet.iter().find(|r| (r.width - width).abs() <= 1e-9);
    for o in one {
        if let Some(d) = d {
            if (d.params, d.macs) != (o.params, o.macs) {
                return Err(CompareError::sub_run(
                    name,
                    format!(
                        "{name}: the one-by-one network has {} parameters and {} MACs, DSPNet's sub-network at width {width} has {} and {}; they must be the same network",
                        o.params, o.macs, d.params, d.macs
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The code version compiled in (`git describe --always --dirty`), or "unknown".
pub fn code_version() -> String {
    option_env!("DSPNET_GIT_DESCRIBE").unwrap_or("unknown").to_string()
}

/// Runs the comparison (see the module docs) and writes OUT/compare.json, report.md and
/// compare.png; with `--only`, trains and evaluates only the sub-runs named and writes none of
/// them.
///
/// Errors (one line): an output folder holding another comparison (without `--resume`) or a
/// different one (with it), missing data, bad shards, an `--only` name that is not a sub-run, a
/// sub-run another process is training, a failed or interrupted sub-run (finished ones are kept).
pub fn run_compare(req: &CompareRequest) -> Result<Outcome> {
    parse_device(&req.device)?;
    if let Some(names) = &req.only {
        check_only(names, &req.plan)?;
    }
    // the transfer-linear datasets are checked before anything is written, sharded or trained
    let transfer_linear = req.plan.transfer_linear()?;
    let out = &req.out;
    let plan_path = out.join(PLAN);
    if plan_path.exists() && !req.resumes() {
        return Err(CompareError::option(
            "--out",
            format!(
                "--out {} already holds a comparison; pass --resume to continue it (finished sub-runs are kept) or choose another --out",
                out.display()
            ),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| {
        CompareError::option(
            "--out",
            format!("--out {}: cannot create it: {e}; choose a writable folder", out.display()),
        )
    })?;
    dspnet_run::layout::check_writable(out)?;
    // parallel --only jobs set OUT up one at a time: the first shards the data and records the
    // plan, the others wait, then reuse and check them
    let setup = FolderLock::wait(out)?;
    let mut machine = Machine::now();

    let baseline = match &req.baseline_from {
        None => None,
        Some(dir) => {
            let same = matches!((dir.canonicalize(), out.canonicalize()), (Ok(a), Ok(b)) if a == b);
            if same {
                return Err(CompareError::option(
                    "--baseline-from",
                    format!(
                        "--baseline-from {} is the --out folder itself; choose a new --out (or use --resume to continue that comparison)",
                        dir.display()
                    ),
                ));
            }
            Some(baseline_plan(dir)?)
        }
    };
    let (train_shards, test_shards) = match (&req.train_shards, &req.test_shards) {
        (Some(a), Some(b)) => (expand_pattern(a)?, expand_pattern(b)?),
        // --baseline-from without shards: the baseline comparison's own data
        (None, None) if baseline.is_some() => {
            let b = baseline.as_ref().expect("checked");
            (b.train_shards.clone(), b.test_shards.clone())
        }
        (None, None) => {
            let data = req.plan.compare.data.as_ref().ok_or_else(|| {
                CompareError::option(
                    "compare.data",
                    format!(
                        "{} has no [compare.data] section to shard; pass --train-shards and --test-shards",
                        req.plan.origin
                    ),
                )
            })?;
            let dir = out.join("data");
            let train = crate::data::prepare_split(data, "train", data.train_per_class, &dir)?;
            let test = crate::data::prepare_split(data, "test", data.test_per_class, &dir)?;
            (expand_pattern(&train.to_string_lossy())?, expand_pattern(&test.to_string_lossy())?)
        }
        _ => {
            let missing = if req.train_shards.is_none() { "--train-shards" } else { "--test-shards" };
            return Err(CompareError::option(
                missing,
                "--train-shards and --test-shards go together: give both, or neither to use [compare.data]",
            ));
        }
    };
    let (train_shards, test_shards) = (absolute(train_shards), absolute(test_shards));
    if let (Some(b), Some(dir)) = (&baseline, &req.baseline_from) {
        for (split, theirs, ours) in
            [("training", &b.train_shards, &train_shards), ("test", &b.test_shards, &test_shards)]
        {
            if theirs != ours {
                let first = |v: &Vec<String>| v.first().cloned().unwrap_or_else(|| "none".into());
                return Err(CompareError::option(
                    "--baseline-from",
                    format!(
                        "--baseline-from {}: it used other {split} shards ({} starting {} there, {} starting {} here); pass the same --train-shards/--test-shards as it did, or neither to use its data",
                        dir.display(),
                        theirs.len(),
                        first(theirs),
                        ours.len(),
                        first(ours)
                    ),
                ));
            }
        }
        for s in train_shards.iter().chain(&test_shards).filter(|s| !is_remote(s)) {
            if !Path::new(s).exists() {
                return Err(CompareError::option(
                    "--baseline-from",
                    format!(
                        "--baseline-from {}: its shard {s} is gone; restore it or pass --train-shards/--test-shards and run without --baseline-from",
                        dir.display()
                    ),
                ));
            }
        }
    }
    let batch = req.plan.base.loader.batch_size;
    if let Some(n) = dspnet_trainer::session::manifest_samples(&train_shards, &req.plan.base.runtime.remote)? {
        if n < batch as u64 {
            return Err(CompareError::option(
                "loader.batch_size",
                format!(
                    "the training shards hold {n} images, fewer than one batch (loader.batch_size = {batch}); use more images or --set loader.batch_size=N"
                ),
            ));
        }
    }

    // --baseline-from: every one-by-one run must be reusable; found out before anything is
    // recorded in OUT or trained
    let repeats = Repeat::all(req.plan.seeds.as_deref(), &req.plan.base);
    if let Some(dir) = &req.baseline_from {
        for repeat in &repeats {
            for &w in &req.plan.one_by_one_widths {
                let base = one_by_one_name(w);
                let one = repeat.apply(&one_by_one_config(&req.plan.base, w)?);
                let candidates = repeat.candidates(&base);
                if find_finished(out, &candidates, &one).is_none() {
                    check_baseline_run(dir, &candidates, &one)?;
                }
            }
        }
    }
    let monitor = req.plan.compare.monitor.monitor_config(&train_shards, &test_shards)?;
    let dspnet_cfg = req.plan.dspnet_config()?;
    let record = PlanRecord {
        dspnet_config: dspnet_cfg.to_toml(),
        widths: req.plan.widths.clone(),
        train_shards: train_shards.clone(),
        test_shards: test_shards.clone(),
    };
    match std::fs::read(&plan_path).ok().and_then(|b| serde_json::from_slice::<PlanRecord>(&b).ok()) {
        Some(old) if !old.same_comparison(&record, &dspnet_cfg) => {
            let what = if old.widths != record.widths {
                format!("widths {:?} there, {:?} now", old.widths, record.widths)
            } else if old.train_shards != record.train_shards || old.test_shards != record.test_shards {
                "the shards differ".to_string()
            } else {
                let a = RunConfig::from_toml_str(&old.dspnet_config, "recorded")
                    .map(|o| o.recipe_differences(&dspnet_cfg).join(", "));
                format!("config keys differ: {}", a.unwrap_or_else(|_| "(unreadable record)".into()))
            };
            // an --only job resumes without being asked to: name the option the user gave
            let option = if req.resume { "--resume" } else { "--only" };
            return Err(CompareError::option(
                option,
                format!(
                    "{option}: {} was started with another comparison ({what}); drop the changes or choose another --out",
                    out.display()
                ),
            ));
        }
        Some(_) => {}
        None => dspnet_core::fs::write_atomic(&out.join(PLAN), &serde_json::to_vec_pretty(&record).expect("json"))?,
    }
    drop(setup);

    let mut ctx = Ctx {
        req,
        train_shards: train_shards.clone(),
        test_shards: test_shards.clone(),
        transfer_linear,
        monitor,
        kept: Vec::new(),
        trained: Vec::new(),
        reused: Vec::new(),
    };
    if let Some(names) = &req.only {
        for repeat in &repeats {
            ctx.only_these(repeat, &dspnet_cfg, names)?;
        }
        return Ok(Outcome { comparison: None, kept: ctx.kept, trained: ctx.trained, reused: ctx.reused });
    }
    let widths = req.plan.widths.clone();
    let mut seed_runs = Vec::new();
    let mut curves = Vec::new();
    for repeat in &repeats {
        let (runs, c) = ctx.one_seed(repeat, &dspnet_cfg)?;
        seed_runs.push(runs);
        curves.extend(c);
    }

    machine.load_end = dspnet_core::machine::load_average();
    let meta = Meta {
        command: req.command.clone(),
        code_version: code_version(),
        machine,
        config: req.plan.origin.clone(),
        widths,
        protocols: req.plan.protocols.clone(),
        train_shards,
        test_shards,
        seed_folders: req.plan.seeds.is_some(),
        monitor: req.plan.compare.monitor.clone(),
    };
    let comparison = build(meta, &seed_runs, curves);
    write_all(&comparison, out)?;
    Ok(Outcome { comparison: Some(comparison), kept: ctx.kept, trained: ctx.trained, reused: ctx.reused })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--only` names DSPNet's and the one-by-one widths' folders (width tags as in OUT), and
    /// nothing else: not a compared width without a one-by-one network, not a same-budget run.
    #[test]
    fn only_accepts_the_planned_sub_runs_and_lists_them_otherwise() {
        let text = crate::plan::preset("cpu").unwrap().1;
        let plan = Plan::parse(text, "cpu", &[], None, None, false)
            .unwrap()
            .with_one_by_one_widths(Some(vec![0.25, 1.0]))
            .unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        check_only(&names(&["dspnet"]), &plan).unwrap();
        check_only(&names(&["byol-w1_00", "byol-w0_25", "dspnet"]), &plan).unwrap();
        for bad in [&["byol-w0_50"][..], &["dspnet", "budget-w0_25"], &["byol-1.0"], &[]] {
            let e = check_only(&names(bad), &plan).unwrap_err().to_string();
            assert!(e.starts_with("--only: ") && e.contains("dspnet, byol-w0_25, byol-w1_00"), "{bad:?}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    fn request(cfg: &RunConfig) -> ChildRequest {
        ChildRequest::first(cfg.to_toml(), vec!["/d/train-000000.tar".into()], "cpu".into())
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    /// A run folder as a killed piece leaves it: its request, a checkpoint at step 4 (with a
    /// stream position unless `position` is None), and metrics records past it (steps 1-5,
    /// elapsed 1.5 s per step).
    fn killed(dir: &Path, last: &ChildRequest, finished: bool, position: Option<u64>) {
        write(dir, REQUEST, &serde_json::to_string(last).unwrap());
        let state = CheckpointState { finished, position_in_epoch: position, ..CheckpointState::basic(4, 60, "fp32") };
        write(dir, STATE, &serde_json::to_string(&state).unwrap());
        let lines: String = (1..=5)
            .map(|s| format!("{{\"step\": {s}, \"elapsed_sec\": {}, \"loss\": []}}\n", 1.5 * s as f64))
            .collect();
        write(dir, METRICS, &format!("{lines}{{\"step\": 4, \"monitor\": {{\"seconds\": 9.0}}}}\n"));
    }

    /// The next piece starts at the checkpoint's step and adds the last piece's time up to it
    /// (step 4's elapsed_sec, 6.0 s, not the monitor record's or step 5's); a piece that made
    /// no new checkpoint adds nothing; another recipe, other shards, a finished checkpoint or
    /// one without a stream position (an older dspnet's): trained from the beginning.
    #[test]
    fn next_piece_counts_the_time_kept_up_to_the_checkpoint() {
        let cfg =
            RunConfig::from_toml_str(include_str!("../../configs/cpu-fashion-mnist.toml"), "cpu-fashion-mnist.toml")
                .unwrap();
        let fresh = request(&cfg);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(next_piece(d, &fresh, &cfg).unwrap().is_none(), "nothing there");

        killed(d, &fresh, false, Some(64));
        let next = next_piece(d, &fresh, &cfg).unwrap().expect("resumable");
        assert!(next.resumes());
        assert_eq!((next.start_step, next.piece, next.earlier_seconds), (4, 2, 6.0));

        // a second piece already ran from step 4 (after 6.0 s) and got to step 4 again: no new
        // checkpoint, nothing more kept
        killed(d, &next, false, Some(64));
        let third = next_piece(d, &fresh, &cfg).unwrap().unwrap();
        assert_eq!((third.start_step, third.piece, third.earlier_seconds), (4, 3, 6.0));
        // one that started at step 2 after 10 s and checkpointed at 4: 10 + 6
        killed(d, &ChildRequest { start_step: 2, earlier_seconds: 10.0, piece: 2, ..next.clone() }, false, Some(64));
        let n = next_piece(d, &fresh, &cfg).unwrap().unwrap();
        assert_eq!((n.start_step, n.piece, n.earlier_seconds), (4, 3, 16.0));

        let mut other = cfg.clone();
        other.recipe.optim.lr *= 2.0;
        assert!(next_piece(d, &request(&other), &other).unwrap().is_none(), "another recipe");
        let moved = ChildRequest { shards: vec!["/e/train-000000.tar".into()], ..fresh.clone() };
        assert!(next_piece(d, &moved, &cfg).unwrap().is_none(), "other shards");
        killed(d, &fresh, true, Some(64));
        assert!(next_piece(d, &fresh, &cfg).unwrap().is_none(), "finished");
        killed(d, &fresh, false, None);
        assert!(next_piece(d, &fresh, &cfg).unwrap().is_none(), "no stream position");
    }
}
