//! The comparison's plan: one TOML file (a `dspnet-stream-train` run configuration plus a
//! `[compare]` section), the widths and protocols, and the run configuration of every training:
//! DSPNet over the width list, plain BYOL at each width ("one-by-one"), and the one-by-one runs
//! cut to DSPNet's wall time ("same budget").
//!
//! # One-by-one networks are truly that width
//! `method.name = "byol"` with one entry in `method.train_widths` runs plain BYOL through the
//! same code path, but inside the model's whole width list: the momentum teacher would run at
//! the LARGEST width of `model.widths` (1.0, not the trained width), and every weight, gradient,
//! momentum buffer and EMA copy would be stored at full width, so both cost (FLOPs, memory, step
//! time) and the recipe would be wrong for an individually pretrained network. With
//! `model.widths = [w]` the teacher runs at w, but the storage is still full width. So a
//! one-by-one network at width `w` is built as its own full-width (`1.0`) network with
//! `model.base_channels · w` base channels and `heads.hidden · w` hidden units
//! ([`one_by_one_config`]): every layer then has exactly `slim_channels(full, w)` channels, the
//! same shapes (parameters, multiply-accumulates) as DSPNet's sub-network at `w` (checked at
//! run time against the DSPNet run's records), and nothing wider is stored or computed.
//!
//! # The kNN monitor of every sub-run
//! Every training runs with the trainer's kNN monitor on (`[compare.monitor]`, see
//! [`MonitorSection`]): kNN top-1 of every trained width at every epoch end and every
//! `every_steps` steps, bank = the comparison's training shards, classified = its test shards,
//! written to the sub-run's `metrics.jsonl`; the report draws these curves. The monitor is a
//! runtime setting (it changes no weight), so a finished sub-run trained without it is still
//! kept on `--resume`.

use crate::error::{CompareError, Result};
use dspnet_eval::transfer_linear::TransferLinear;
use dspnet_eval::{Protocol, TransferLinearSettings};
use dspnet_model::slim_channels;
use dspnet_run::config::{apply_override, Method, MonitorConfig};
use dspnet_run::RunConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The presets shipped in `configs/`: (name for `--preset`, file name, text).
pub const PRESETS: &[(&str, &str, &str)] = &[
    ("cpu", "configs/compare-cpu.toml", include_str!("../../configs/compare-cpu.toml")),
    ("gpu", "configs/compare-gpu.toml", include_str!("../../configs/compare-gpu.toml")),
    ("imagenet", "configs/compare-imagenet-r50.toml", include_str!("../../configs/compare-imagenet-r50.toml")),
];

/// Text and file name of preset `name`. Errors: an unknown name (the message lists the presets).
pub fn preset(name: &str) -> Result<(&'static str, &'static str)> {
    PRESETS.iter().find(|(n, _, _)| *n == name).map(|(_, f, t)| (*f, *t)).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|(n, _, _)| *n).collect();
        CompareError::option("--preset", format!("--preset {name}: unknown preset; use one of {}", names.join(", ")))
    })
}

/// Where the comparison takes its images from when no `--train-shards`/`--test-shards` are
/// given: a class-balanced subset of an ImageFolder dataset (`SOURCE/train/<class>/*.jpg`,
/// `SOURCE/test/<class>/*.jpg`), sharded into `OUT/data/{train,test}` (see `data.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// ImageFolder root with `train/` and `test/`; a relative path is relative to the current
    /// folder (run from the checkout root for the presets' `../shared/data/...`).
    pub source: String,
    /// Training images drawn per class (the same for every class).
    pub train_per_class: usize,
    /// Test images drawn per class.
    pub test_per_class: usize,
    /// Seed of the subset draw and of the shard order.
    #[serde(default)]
    pub seed: u64,
    /// Samples per shard.
    #[serde(default = "default_samples_per_shard")]
    pub samples_per_shard: usize,
}

fn default_samples_per_shard() -> usize {
    1000
}

fn default_protocols() -> Vec<String> {
    vec!["knn".into(), "linear".into()]
}

fn yes() -> bool {
    true
}

fn default_every_steps() -> u64 {
    200
}

fn default_bank_images() -> usize {
    MonitorConfig::default().bank_images
}

fn default_test_images() -> usize {
    MonitorConfig::default().test_images
}

/// `[compare.monitor]`: the kNN monitor every sub-run trains with (the trainer's `[monitor]`,
/// with the comparison's training shards as bank and its test shards as the images
/// classified). Cost per evaluation: one eval-mode forward pass of `bank_images + test_images`
/// images at every trained width plus the kNN search; its seconds are subtracted from the
/// measured training wall time (see `run.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    /// Off: no curves (the sub-runs train without the monitor).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Also evaluate every this many optimiser steps, besides every epoch end (0: epoch ends
    /// only). The default 200 gives about ten points on the `cpu` preset (1,287 steps) at
    /// about a twentieth of its training FLOPs.
    #[serde(default = "default_every_steps")]
    pub every_steps: u64,
    /// Bank: the first this many images of the training shards.
    #[serde(default = "default_bank_images")]
    pub bank_images: usize,
    /// Classified: the first this many images of the test shards.
    #[serde(default = "default_test_images")]
    pub test_images: usize,
}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            enabled: true,
            every_steps: default_every_steps(),
            bank_images: default_bank_images(),
            test_images: default_test_images(),
        }
    }
}

/// One pattern that `expand_pattern` turns back into exactly `shards` (in order): the shard
/// itself when there is one, else their common folder followed by `{name,name,...}`.
///
/// Errors: no shards, or a file name holding `{`, `}` or `,` (which a brace list cannot hold);
/// the message names `what` (the option) and the way out.
pub fn shard_list_pattern(shards: &[String], what: &str) -> Result<String> {
    match shards {
        [] => Err(CompareError::option(what, format!("{what}: no shards"))),
        [one] => Ok(one.clone()),
        _ => {
            let first = &shards[0];
            let mut cut = first.rfind('/').map_or(0, |i| i + 1);
            for s in &shards[1..] {
                let common = first.bytes().zip(s.bytes()).take_while(|(a, b)| a == b).count().min(cut);
                cut = first.as_bytes()[..common].iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
            }
            let names: Vec<&str> = shards.iter().map(|s| &s[cut..]).collect();
            if let Some(bad) = names.iter().find(|n| n.is_empty() || n.contains(['{', '}', ','])) {
                return Err(CompareError::option(
                    what,
                    format!(
                        "{what}: the shard name {bad:?} cannot be listed in a brace pattern for the kNN monitor; rename the shard or set compare.monitor.enabled=false"
                    ),
                ));
            }
            Ok(format!("{}{{{}}}", &first[..cut], names.join(",")))
        }
    }
}

impl MonitorSection {
    /// The trainer's kNN `[monitor]` for a sub-run on these shards (off when `enabled` is
    /// false); its `interference_every_steps` is left at 0 (the sub-run's config keeps its own,
    /// see `run.rs`).
    ///
    /// Errors: see [`shard_list_pattern`].
    pub fn monitor_config(&self, train_shards: &[String], test_shards: &[String]) -> Result<MonitorConfig> {
        if !self.enabled {
            return Ok(MonitorConfig::default());
        }
        Ok(MonitorConfig {
            train_shards: shard_list_pattern(train_shards, "compare.monitor (training shards)")?,
            test_shards: shard_list_pattern(test_shards, "compare.monitor (test shards)")?,
            every_steps: self.every_steps,
            bank_images: self.bank_images,
            test_images: self.test_images,
            ..MonitorConfig::default()
        })
    }
}

/// The `[compare]` section of a comparison config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSection {
    /// Widths compared (default: the config's trained widths, `method.train_widths` or else
    /// `model.widths`); must contain the largest of `model.widths`.
    #[serde(default)]
    pub widths: Option<Vec<f64>>,
    /// Widths at which a one-by-one network is trained (`--one-by-one-widths` takes
    /// precedence); default: every compared width. A subset saves the baseline's cost when only
    /// some widths need a verdict (e.g. the narrowest and the full one); DSPNet still trains
    /// every compared width.
    #[serde(default)]
    pub one_by_one_widths: Option<Vec<f64>>,
    /// Evaluation protocols, names as `dspnet-eval --protocol` takes them.
    #[serde(default = "default_protocols")]
    pub protocols: Vec<String>,
    /// Also run the "same total budget" one-by-one runs.
    #[serde(default)]
    pub same_budget: bool,
    /// Data to shard when no shards are given.
    #[serde(default)]
    pub data: Option<DataSection>,
    /// Image folders of the `transfer-linear` protocol (`train/<class>/<image>`,
    /// `test/<class>/<image>`, optionally `val/`); `--transfer-data DIR` replaces them. A relative
    /// path is relative to the current folder.
    #[serde(default)]
    pub transfer_data: Vec<String>,
    /// Seeds to repeat the comparison with (`--seeds` takes precedence); empty: once, with the
    /// config's own `train.seed` and `loader.seed` (see `seeds.rs`).
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// The kNN monitor of every sub-run.
    #[serde(default)]
    pub monitor: MonitorSection,
}

impl Default for CompareSection {
    fn default() -> Self {
        CompareSection {
            widths: None,
            one_by_one_widths: None,
            protocols: default_protocols(),
            same_budget: false,
            data: None,
            transfer_data: Vec::new(),
            seeds: Vec::new(),
            monitor: MonitorSection::default(),
        }
    }
}

/// A parsed comparison: the shared run configuration and what to compare.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The run configuration every training starts from (with `train.log_every = 1`, which the
    /// FLOP count reads; it does not change the trained weights).
    pub base: RunConfig,
    pub compare: CompareSection,
    /// Widths compared, ascending.
    pub widths: Vec<f64>,
    /// Widths with a one-by-one network, ascending: `widths` or a subset of it.
    pub one_by_one_widths: Vec<f64>,
    /// Protocol names, each accepted by `dspnet_eval::Protocol` (not detection or segmentation).
    pub protocols: Vec<String>,
    pub same_budget: bool,
    /// Seeds to repeat the comparison with, ascending (`None`: once, with the config's seeds).
    pub seeds: Option<Vec<u64>>,
    /// Where the config came from (file or preset), for messages and the report.
    pub origin: String,
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn same_width(a: f64, b: f64) -> bool {
    (a - b).abs() <= dspnet_model::slimmable::WIDTH_TOLERANCE
}

/// Adds the `[compare]` keys (and `[compare.monitor]` keys) that `value` leaves out, with their
/// defaults, so that `--set` reaches every one of them (it refuses keys absent from the file).
///
/// Errors: `compare` or `compare.monitor` is not a table.
fn with_compare_defaults(value: &mut toml::Value, origin: &str) -> Result<()> {
    fn merge(into: &mut toml::Table, defaults: toml::Table, at: &str, origin: &str) -> Result<()> {
        for (k, v) in defaults {
            match (into.get_mut(&k), v) {
                (None, v) => {
                    into.insert(k, v);
                }
                (Some(toml::Value::Table(t)), toml::Value::Table(d)) => merge(t, d, &format!("{at}.{k}"), origin)?,
                (Some(old), toml::Value::Table(_)) if !old.is_table() => {
                    return Err(CompareError::config_file(
                        origin,
                        format!("config {origin}: {at}.{k} must be a section"),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
    let defaults = match toml::Value::try_from(CompareSection::default()) {
        Ok(toml::Value::Table(t)) => t,
        _ => unreachable!("the [compare] defaults serialise to a table"),
    };
    let Some(root) = value.as_table_mut() else { return Ok(()) };
    let compare = root.entry("compare").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(table) = compare.as_table_mut() else {
        return Err(CompareError::config_file(
            origin,
            format!("config {origin}: compare must be a section ([compare])"),
        ));
    };
    merge(table, defaults, "compare", origin)
}

/// `ws` with each width replaced by the entry of `allowed` it names (within the width
/// tolerance), ascending, without repeats.
///
/// Errors: `not_allowed(w)` for the first width that is not in `allowed`.
fn snap_widths(ws: Vec<f64>, allowed: &[f64], not_allowed: impl Fn(f64) -> CompareError) -> Result<Vec<f64>> {
    let mut out = ws
        .into_iter()
        .map(|w| allowed.iter().copied().find(|a| same_width(*a, w)).ok_or_else(|| not_allowed(w)))
        .collect::<Result<Vec<f64>>>()?;
    out.sort_by(f64::total_cmp);
    out.dedup_by(|a, b| same_width(*a, *b));
    Ok(out)
}

/// `[compare]` keys without a default value (absent from the defaults [`with_compare_defaults`]
/// adds), which `--set` may still give.
const OPTIONAL_COMPARE_KEYS: [&str; 2] = ["widths", "one_by_one_widths"];

/// Adds an empty `compare.KEY` for a `--set compare.KEY=...` of an optional key the file leaves
/// out, so that the override (which refuses keys absent from the file) can set it.
fn make_room_for_optional(value: &mut toml::Value, set: &str) {
    let Some(key) = set.split_once('=').and_then(|(k, _)| k.trim().strip_prefix("compare.")) else { return };
    if !OPTIONAL_COMPARE_KEYS.contains(&key) {
        return;
    }
    if let Some(table) = value.get_mut("compare").and_then(|c| c.as_table_mut()) {
        table.entry(key).or_insert_with(|| toml::Value::Array(Vec::new()));
    }
}

impl Plan {
    /// Parses a comparison config: `text` (from `origin`), `--set key=value` overrides (any key
    /// of the file, `compare.*` included), then the command-line `widths`, `protocols`
    /// (comma-separated) and `same_budget`, which take precedence over the `[compare]` section.
    ///
    /// Errors (one line): TOML syntax, unknown keys, invalid run configuration, a width not in
    /// `model.widths` or a list without the largest, an unknown protocol.
    pub fn parse(
        text: &str,
        origin: &str,
        sets: &[String],
        widths: Option<Vec<f64>>,
        protocols: Option<&str>,
        same_budget: bool,
    ) -> Result<Plan> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            CompareError::config_file(
                origin,
                format!("config {origin} is not valid TOML: {}", one_line(&e.to_string())),
            )
        })?;
        with_compare_defaults(&mut value, origin)?;
        for s in sets {
            make_room_for_optional(&mut value, s);
            apply_override(&mut value, s)?;
        }
        let table = value
            .as_table_mut()
            .ok_or_else(|| CompareError::config_file(origin, format!("config {origin}: expected a TOML table")))?;
        let compare: CompareSection = match table.remove("compare") {
            None => CompareSection::default(),
            Some(v) => v.try_into().map_err(|e: toml::de::Error| {
                CompareError::config_file(origin, format!("config {origin}: [compare]: {}", one_line(&e.to_string())))
            })?,
        };
        let rest = toml::to_string(&value).expect("a TOML table serialises");
        let mut base = RunConfig::from_toml_str(&rest, origin)?;
        base.runtime.train.log_every = 1;

        let model_widths = base.model.widths.clone();
        let largest = model_widths.iter().copied().fold(f64::MIN, f64::max);
        let (ws, flag) = match (widths, &compare.widths) {
            (Some(w), _) => (w, "--widths"),
            (None, Some(w)) => (w.clone(), "compare.widths"),
            (None, None) => (base.train_widths()?.as_slice().to_vec(), "method.train_widths"),
        };
        if ws.is_empty() {
            return Err(CompareError::option(
                flag,
                format!("{flag} is empty; give at least the full width, e.g. --widths 0.25,0.5,1.0"),
            ));
        }
        let ws = snap_widths(ws, &model_widths, |w| {
            CompareError::option(
                flag,
                format!("{flag}: width {w} is not in model.widths {model_widths:?} of {origin}; choose widths from that list"),
            )
        })?;
        if !ws.iter().any(|w| same_width(*w, largest)) {
            return Err(CompareError::option(
                flag,
                format!(
                    "{flag} {ws:?} lacks the largest width {largest} of model.widths: DSPNet's momentum teacher and its BYOL loss run at the largest width; add {largest}"
                ),
            ));
        }
        let protocols: Vec<String> = match protocols {
            Some(p) => p.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            None => compare.protocols.clone(),
        };
        if protocols.is_empty() {
            return Err(CompareError::option("--protocols", "--protocols is empty; use e.g. --protocols knn,linear"));
        }
        for p in &protocols {
            if p.parse::<Protocol>()?.is_transfer() {
                return Err(CompareError::option(
                    "--protocols",
                    format!(
                        "--protocols {p}: dspnet-compare evaluates knn, linear, semi and transfer-linear; run dspnet-eval --protocol {p} on its run folders"
                    ),
                ));
            }
        }
        let same_budget = same_budget || compare.same_budget;
        if compare.monitor.enabled && (compare.monitor.bank_images == 0 || compare.monitor.test_images == 0) {
            let key = if compare.monitor.bank_images == 0 { "bank_images" } else { "test_images" };
            return Err(CompareError::option(
                format!("compare.monitor.{key}"),
                "compare.monitor.bank_images and compare.monitor.test_images must be at least 1 (or set compare.monitor.enabled=false)",
            ));
        }
        let seeds = crate::seeds::choose(None, &compare.seeds)?;
        let mut plan = Plan {
            base,
            compare,
            one_by_one_widths: ws.clone(),
            widths: ws,
            protocols,
            same_budget,
            seeds,
            origin: origin.to_string(),
        };
        plan.one_by_one_widths = plan.choose_one_by_one_widths(None)?;
        plan.dspnet_config()?;
        for &w in &plan.widths {
            one_by_one_config(&plan.base, w)?;
        }
        Ok(plan)
    }

    /// Reads a comparison config file (see [`Plan::parse`]).
    pub fn load(
        path: &Path,
        sets: &[String],
        widths: Option<Vec<f64>>,
        protocols: Option<&str>,
        same_budget: bool,
    ) -> Result<Plan> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CompareError::config_file(
                path.display().to_string(),
                format!("--config {}: cannot read it: {e}", path.display()),
            )
        })?;
        Plan::parse(&text, &path.display().to_string(), sets, widths, protocols, same_budget)
    }

    /// The plan with `--seeds` (`cli`, taking precedence over `compare.seeds`; see
    /// [`crate::seeds::choose`]).
    ///
    /// Errors: an empty list, a seed given twice.
    pub fn with_seeds(mut self, cli: Option<Vec<u64>>) -> Result<Plan> {
        self.seeds = crate::seeds::choose(cli, &self.compare.seeds)?;
        Ok(self)
    }

    /// The plan with `--one-by-one-widths` (`cli`, taking precedence over
    /// `compare.one_by_one_widths`).
    ///
    /// Errors: see [`Plan::choose_one_by_one_widths`].
    pub fn with_one_by_one_widths(mut self, cli: Option<Vec<f64>>) -> Result<Plan> {
        self.one_by_one_widths = self.choose_one_by_one_widths(cli)?;
        Ok(self)
    }

    /// The widths to train one-by-one networks at: `cli` over `compare.one_by_one_widths`, else
    /// every compared width; each snapped to the compared width it names, ascending.
    ///
    /// Errors (one line, naming the option): an empty list, a width that is not compared, a
    /// subset together with `--same-budget` (its split divides DSPNet's time among every
    /// compared width).
    fn choose_one_by_one_widths(&self, cli: Option<Vec<f64>>) -> Result<Vec<f64>> {
        let (ws, flag) = match (cli, &self.compare.one_by_one_widths) {
            (Some(w), _) => (w, "--one-by-one-widths"),
            (None, Some(w)) => (w.clone(), "compare.one_by_one_widths"),
            (None, None) => return Ok(self.widths.clone()),
        };
        if ws.is_empty() {
            return Err(CompareError::option(
                flag,
                format!("{flag} is empty; give at least one compared width, e.g. 0.25,1.0"),
            ));
        }
        let ws = snap_widths(ws, &self.widths, |w| {
            CompareError::option(
                flag,
                format!(
                    "{flag}: width {w} is not among the compared widths {:?}; choose from them (or add it to --widths)",
                    self.widths
                ),
            )
        })?;
        if self.same_budget && ws.len() != self.widths.len() {
            return Err(CompareError::option(
                flag,
                format!(
                    "{flag} {ws:?} with --same-budget: the same-budget runs split DSPNet's time among every compared width {:?}; drop one of the two",
                    self.widths
                ),
            ));
        }
        Ok(ws)
    }

    /// The protocols as the evaluation takes them.
    pub fn eval_protocols(&self) -> Result<Vec<Protocol>> {
        Ok(self.protocols.iter().map(|p| p.parse()).collect::<std::result::Result<Vec<Protocol>, _>>()?)
    }

    /// The settings of the `transfer-linear` protocol: `compare.transfer_data` (made absolute)
    /// with the protocol's defaults. When the protocol is compared, its datasets are opened and
    /// checked here, so that a bad folder fails before anything trains.
    ///
    /// Errors: `transfer-linear` without a dataset (names `--transfer-data` and
    /// `compare.transfer_data`); a dataset that cannot be used (the evaluation's error).
    pub fn transfer_linear(&self) -> Result<TransferLinearSettings> {
        let datasets: Vec<PathBuf> =
            self.compare.transfer_data.iter().map(|d| std::path::absolute(d).unwrap_or_else(|_| d.into())).collect();
        let settings = TransferLinearSettings { datasets, ..Default::default() };
        if self.protocols.iter().any(|p| p == Protocol::TransferLinear.name()) {
            if settings.datasets.is_empty() {
                return Err(CompareError::option(
                    "--transfer-data",
                    "--protocols transfer-linear needs --transfer-data DIR (or compare.transfer_data = [\"DIR\"]): an image folder with train/<class>/<image> and test/<class>/<image>",
                ));
            }
            TransferLinear::prepare(settings.clone())?;
        }
        Ok(settings)
    }

    /// DSPNet over the compared widths: `model.widths` = the compared widths (so the switchable
    /// BN holds exactly those), `method.name = "dspnet"`, every width trained; a
    /// `method.loss_weights` given for the config's trained widths is narrowed to the compared
    /// ones.
    ///
    /// Errors: a loss weight list that does not name every compared width; invalid result.
    pub fn dspnet_config(&self) -> Result<RunConfig> {
        let mut c = self.base.clone();
        if let Some(lw) = &self.base.method.loss_weights {
            let trained = self.base.train_widths()?;
            let mut picked = Vec::with_capacity(self.widths.len());
            for &w in &self.widths {
                let i = trained.index_of(w).map_err(|_| {
                    CompareError::option(
                        "method.loss_weights",
                        format!(
                            "method.loss_weights gives weights for the widths {:?}, not for the compared width {w}; set method.loss_weights for every compared width or drop it",
                            trained.as_slice()
                        ),
                    )
                })?;
                picked.push(lw[i]);
            }
            c.method.loss_weights = Some(picked);
        }
        c.model.widths = self.widths.clone();
        c.method.name = Method::Dspnet;
        c.method.train_widths = None;
        c.validate()?;
        Ok(c)
    }
}

/// Plain BYOL at width `width` as its own network (see the module docs): `model.widths = [1.0]`,
/// `model.base_channels · width` base channels, `heads.hidden` → `slim_channels(hidden, width)`,
/// `method.name = "byol"`, no sandwich settings, loss weight 1, and the DSPNet ablation switches
/// at their defaults (`method.distill_target`, `method.narrow_warmup_epochs`,
/// `method.narrow_predictor`, `method.width_gradients` only concern several widths; `heads.bn`: a single-width network's
/// switchable and shared BN are the same thing), so the one-by-one configs are identical
/// whatever the DSPNet ablation is. Everything else (data, augmentations, optimiser, schedule,
/// epochs, seed) is `base`'s.
///
/// Errors: `base_channels · width` is not a whole number (no network of exactly that width
/// exists in this family).
pub fn one_by_one_config(base: &RunConfig, width: f64) -> Result<RunConfig> {
    let b = base.model.base_channels as f64 * width;
    if (b - b.round()).abs() > 1e-6 || b.round() < 1.0 {
        return Err(CompareError::Width {
            width,
            message: format!(
                "width {width}: model.base_channels = {} times {width} is not a whole number of channels, so no one-by-one network of exactly that width exists; choose widths that give whole channel counts (e.g. multiples of 1/{})",
                base.model.base_channels, base.model.base_channels
            ),
        });
    }
    let mut c = base.clone();
    c.model.base_channels = b.round() as i64;
    c.model.widths = vec![1.0];
    c.heads.hidden = slim_channels(base.heads.hidden, width);
    c.method.name = Method::Byol;
    c.method.train_widths = None;
    c.method.random_widths = None;
    c.method.loss_weights = None;
    c.method.distill_target = Default::default();
    c.method.narrow_warmup_epochs = 0.0;
    c.method.narrow_predictor = Default::default();
    c.method.width_gradients = Default::default();
    c.heads.bn = Default::default();
    c.validate()?;
    Ok(c)
}

/// A one-by-one configuration planned for `steps` optimiser steps instead of its full length
/// `full_steps` (same-budget runs): `train.epochs = steps / steps_per_epoch` so the cosine
/// schedules end at `steps`, and the warm-up shortened in proportion
/// (`warmup_epochs · steps / full_steps`).
///
/// Errors: zero steps, or a schedule that would not have exactly `steps` steps.
pub fn same_budget_config(one: &RunConfig, steps: u64, steps_per_epoch: u64, full_steps: u64) -> Result<RunConfig> {
    if steps == 0 || steps_per_epoch == 0 || full_steps == 0 {
        return Err(CompareError::SameBudget {
            steps,
            message: format!(
                "same-budget run of {steps} steps ({steps_per_epoch} per epoch, {full_steps} in the full run): nothing to train"
            ),
        });
    }
    let mut c = one.clone();
    c.train.epochs = steps as f64 / steps_per_epoch as f64;
    c.optim.warmup_epochs = one.optim.warmup_epochs * steps as f64 / full_steps as f64;
    let planned = ((c.train.epochs * steps_per_epoch as f64).round() as u64).max(1);
    if planned != steps {
        return Err(CompareError::SameBudget {
            steps,
            message: format!("same-budget run: {steps} steps give a schedule of {planned} steps"),
        });
    }
    c.validate()?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> &'static str {
        preset("cpu").unwrap().1
    }

    /// The cpu preset without its [compare] section.
    fn cpu_without_compare() -> String {
        let mut v: toml::Value = toml::from_str(cpu()).unwrap();
        v.as_table_mut().unwrap().remove("compare");
        toml::to_string(&v).unwrap()
    }

    #[test]
    fn every_preset_parses_with_a_full_width_and_integral_narrow_networks() {
        for (name, _, text) in PRESETS {
            let plan = Plan::parse(text, name, &[], None, None, false).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(plan.widths.last(), Some(&1.0), "{name}");
            assert_eq!(plan.base.runtime.train.log_every, 1);
            assert!(plan.eval_protocols().unwrap().len() >= 2, "{name}");
        }
        let gpu = Plan::parse(preset("gpu").unwrap().1, "gpu", &[], None, None, false).unwrap();
        assert_eq!(gpu.base.loader.batch_size, 512);
        assert!(gpu.base.train.epochs >= 200.0);
    }

    #[test]
    fn one_by_one_network_has_exactly_the_slice_shapes() {
        let plan =
            Plan::parse(cpu(), "cpu", &["model.base_channels=8".into(), "heads.hidden=40".into()], None, None, false)
                .unwrap();
        let dsp = plan.dspnet_config().unwrap();
        // base 8 · 0.25 = 2 channels, hidden round(40 · 0.25) = 10; teacher at the only width
        let one = one_by_one_config(&plan.base, 0.25).unwrap();
        assert_eq!((one.model.base_channels, one.heads.hidden, one.model.widths.clone()), (2, 10, vec![1.0]));
        assert_eq!(one.method.name, Method::Byol);
        // parameters and multiply-accumulates equal the DSPNet sub-network's at 0.25, and the
        // scaled network has no more parameters than that (nothing wider is stored)
        let vs_a = tch::nn::VarStore::new(tch::Device::Cpu);
        let a = dspnet_model::SlimResNet::new(&vs_a.root(), &dsp.model).unwrap();
        let vs_b = tch::nn::VarStore::new(tch::Device::Cpu);
        let b = dspnet_model::SlimResNet::new(&vs_b.root(), &one.model).unwrap();
        let img = dsp.augment.image_size as i64;
        let w = 0.25;
        assert_eq!(a.num_params(w), b.num_params(1.0));
        assert_eq!(a.macs(w, img, img), b.macs(1.0, img, img));
        assert_eq!(a.feature_dim(w), b.feature_dim(1.0));
        let stored: i64 = vs_b.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert!(stored <= b.num_params(1.0) + 64, "stored {stored} vs {}", b.num_params(1.0));
        // a width with no whole channel count is refused with the option named
        let e = one_by_one_config(&plan.base, 0.3).unwrap_err();
        assert!(matches!(e, CompareError::Width { width, .. } if width == 0.3), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("width 0.3") && e.contains("base_channels") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn widths_and_protocols_are_checked() {
        let p = Plan::parse(cpu(), "cpu", &[], Some(vec![1.0, 0.25]), Some("knn"), true).unwrap();
        assert_eq!(p.widths, vec![0.25, 1.0]);
        assert_eq!(p.protocols, vec!["knn"]);
        assert!(p.same_budget);
        assert_eq!(p.dspnet_config().unwrap().model.widths, vec![0.25, 1.0]);
        let e = Plan::parse(cpu(), "cpu", &[], Some(vec![0.3, 1.0]), None, false).unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "--widths"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("--widths") && e.contains("0.3"), "{e}");
        let e = Plan::parse(cpu(), "cpu", &[], Some(vec![0.25, 0.5]), None, false).unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "--widths"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("largest width 1"), "{e}");
        let e = Plan::parse(cpu(), "cpu", &[], None, Some("knn,nope"), false).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = Plan::parse(cpu(), "cpu", &["compare.nosuch=1".into()], None, None, false).unwrap_err().to_string();
        assert!(e.contains("compare.nosuch"), "{e}");
    }

    #[test]
    fn one_by_one_widths_are_a_subset_of_the_compared_ones() {
        // default: every compared width; DSPNet trains all of them whatever the subset
        let p = Plan::parse(cpu(), "cpu", &[], None, None, false).unwrap();
        assert_eq!(p.one_by_one_widths, vec![0.25, 0.5, 0.75, 1.0]);
        let sub =
            Plan::parse(cpu(), "cpu", &["compare.one_by_one_widths=[1.0, 0.25]".into()], None, None, false).unwrap();
        assert_eq!(sub.one_by_one_widths, vec![0.25, 1.0]);
        assert_eq!(sub.dspnet_config().unwrap().model.widths, vec![0.25, 0.5, 0.75, 1.0]);
        // compare.widths, optional too, is reachable by --set as well
        let w = Plan::parse(cpu(), "cpu", &["compare.widths=[0.25, 1.0]".into()], None, None, false).unwrap();
        assert_eq!((w.widths.clone(), w.one_by_one_widths.clone()), (vec![0.25, 1.0], vec![0.25, 1.0]));
        // the command line over the config; a width within the tolerance snaps to the compared one
        let cli = sub.clone().with_one_by_one_widths(Some(vec![0.5000000001])).unwrap();
        assert_eq!(cli.one_by_one_widths, vec![0.5]);
        assert_eq!(sub.clone().with_one_by_one_widths(None).unwrap().one_by_one_widths, vec![0.25, 1.0]);
        let option_of = |e: CompareError| match e {
            CompareError::Option { option, message } => (option, message),
            other => panic!("{other:?}"),
        };
        let (o, m) = option_of(p.clone().with_one_by_one_widths(Some(vec![])).unwrap_err());
        assert_eq!(o, "--one-by-one-widths");
        assert!(m.contains("is empty"), "{m}");
        // a width DSPNet does not train here (not in --widths) is refused, naming both lists
        let two = Plan::parse(cpu(), "cpu", &[], Some(vec![0.25, 1.0]), None, false).unwrap();
        let (o, m) = option_of(two.with_one_by_one_widths(Some(vec![0.5])).unwrap_err());
        assert_eq!(o, "--one-by-one-widths");
        assert!(m.contains("0.5") && m.contains("[0.25, 1.0]"), "{m}");
        let (o, _) = option_of(
            Plan::parse(cpu(), "cpu", &["compare.one_by_one_widths=[0.3]".into()], None, None, false).unwrap_err(),
        );
        assert_eq!(o, "compare.one_by_one_widths");
        // --same-budget splits DSPNet's time over every compared width: a subset is refused
        let budget = Plan::parse(cpu(), "cpu", &[], None, None, true).unwrap();
        let (o, m) = option_of(budget.clone().with_one_by_one_widths(Some(vec![0.25, 1.0])).unwrap_err());
        assert_eq!(o, "--one-by-one-widths");
        assert!(m.contains("--same-budget"), "{m}");
        let all = budget.with_one_by_one_widths(Some(vec![1.0, 0.75, 0.5, 0.25])).unwrap();
        assert_eq!(all.one_by_one_widths, vec![0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn transfer_linear_needs_a_usable_dataset() {
        let plan = Plan::parse(cpu(), "cpu", &[], None, Some("knn,transfer-linear"), false).unwrap();
        assert_eq!(plan.eval_protocols().unwrap(), vec![Protocol::Knn, Protocol::TransferLinear]);
        let e = plan.transfer_linear().unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "--transfer-data"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("--transfer-data DIR") && e.contains("compare.transfer_data"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        // a config file's [compare] transfer_data (dspnet-compare's --transfer-data replaces it)
        let text =
            cpu().replacen("[compare]\n", &format!("[compare]\ntransfer_data = [\"{}\"]\n", missing.display()), 1);
        let plan = Plan::parse(&text, "cpu", &[], None, Some("transfer-linear"), false).unwrap();
        assert_eq!(plan.compare.transfer_data, vec![missing.display().to_string()]);
        let e = plan.transfer_linear().unwrap_err().to_string();
        assert!(e.contains("--transfer-data") && e.contains("nope") && e.contains("no such folder"), "{e}");
        // without the protocol the folders are not needed
        let plan = Plan::parse(&text, "cpu", &[], None, Some("knn"), false).unwrap();
        assert_eq!(plan.transfer_linear().unwrap().datasets, vec![missing]);
    }

    #[test]
    fn seeds_and_the_monitor_section_are_read() {
        let p = Plan::parse(cpu(), "cpu", &["compare.seeds=[2, 0]".into()], None, None, false).unwrap();
        // a config without any [compare] key still takes every one through --set
        let sets: Vec<String> = ["compare.seeds=[1]", "compare.monitor.every_steps=9"].map(String::from).to_vec();
        let b = Plan::parse(&cpu_without_compare(), "bare", &sets, None, None, false).unwrap();
        assert_eq!((b.seeds, b.compare.monitor.every_steps), (Some(vec![1]), 9));
        assert_eq!(p.seeds, Some(vec![0, 2]));
        assert_eq!(p.clone().with_seeds(Some(vec![5])).unwrap().seeds, Some(vec![5]));
        assert_eq!(p.with_seeds(None).unwrap().seeds, Some(vec![0, 2]));
        let plain = Plan::parse(cpu(), "cpu", &[], None, None, false).unwrap();
        assert_eq!((plain.seeds.clone(), plain.compare.monitor.clone()), (None, MonitorSection::default()));
        let e = plain.with_seeds(Some(vec![])).unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "--seeds"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("--seeds is empty"), "{e}");
        let sets = ["compare.monitor.every_steps=7".into(), "compare.monitor.test_images=30".into()];
        let m = Plan::parse(cpu(), "cpu", &sets, None, None, false).unwrap().compare.monitor;
        assert_eq!((m.enabled, m.every_steps, m.bank_images, m.test_images), (true, 7, 5000, 30));
        let e = Plan::parse(cpu(), "cpu", &["compare.monitor.bank_images=0".into()], None, None, false).unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "compare.monitor.bank_images"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("compare.monitor.bank_images"), "{e}");
        let e =
            Plan::parse(cpu(), "cpu", &["compare.monitor.nosuch=1".into()], None, None, false).unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
    }

    #[test]
    fn shard_lists_become_patterns_that_expand_back() {
        let dir = tempfile::tempdir().unwrap();
        let shards: Vec<String> = ["train-000000.tar", "train-000001.tar", "x-3.tar"]
            .iter()
            .map(|n| {
                let p = dir.path().join(n);
                // a tar header block (`ustar` magic at byte 257): expand_pattern checks it
                let mut header = [0u8; 512];
                header[257..262].copy_from_slice(b"ustar");
                std::fs::write(&p, header).unwrap();
                p.to_string_lossy().to_string()
            })
            .collect();
        let p = shard_list_pattern(&shards, "t").unwrap();
        assert_eq!(p, format!("{}/{{train-000000.tar,train-000001.tar,x-3.tar}}", dir.path().display()));
        assert_eq!(dspnet_pipeline::source::expand_pattern(&p).unwrap(), shards);
        assert_eq!(shard_list_pattern(&shards[..1], "t").unwrap(), shards[0]);
        // different folders: their common folder, the rest in the list
        let two = vec!["/d/a/x.tar".to_string(), "/d/b/x.tar".to_string()];
        assert_eq!(shard_list_pattern(&two, "t").unwrap(), "/d/{a/x.tar,b/x.tar}");
        let remote = vec!["s3://b/p/t-0.tar".to_string(), "s3://b/p/t-1.tar".to_string()];
        assert_eq!(shard_list_pattern(&remote, "t").unwrap(), "s3://b/p/{t-0.tar,t-1.tar}");
        let e = shard_list_pattern(&["/d/a,b.tar".into(), "/d/c.tar".into()], "opt").unwrap_err();
        assert!(matches!(&e, CompareError::Option { option, .. } if option == "opt"), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("opt") && e.contains("compare.monitor.enabled=false"), "{e}");
        let m = MonitorSection { every_steps: 3, ..Default::default() }.monitor_config(&shards, &shards[..1]).unwrap();
        assert!(m.enabled() && m.every_steps == 3 && m.test_shards == shards[0]);
        let off = MonitorSection { enabled: false, ..Default::default() };
        assert!(!off.monitor_config(&shards, &shards).unwrap().enabled());
    }

    #[test]
    fn same_budget_schedule_ends_at_the_cut() {
        let plan = Plan::parse(cpu(), "cpu", &[], None, None, false).unwrap();
        let one = one_by_one_config(&plan.base, 0.5).unwrap();
        // 7 steps of 3 per epoch, the full run had 30 steps: 7/3 epochs, warm-up × 7/30
        let c = same_budget_config(&one, 7, 3, 30).unwrap();
        assert!((c.train.epochs - 7.0 / 3.0).abs() < 1e-12);
        assert!((c.optim.warmup_epochs - one.optim.warmup_epochs * 7.0 / 30.0).abs() < 1e-12);
        assert!(same_budget_config(&one, 0, 3, 30).is_err());
    }

    #[test]
    fn one_by_one_configs_ignore_the_dspnet_ablation_switches() {
        let plain = Plan::parse(cpu(), "cpu", &[], None, None, false).unwrap();
        let sets: Vec<String> = [
            "method.distill_target=online",
            "method.narrow_warmup_epochs=0.5",
            "method.narrow_predictor=separate",
            "method.width_gradients=trust",
            "heads.bn=shared",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let ablated = Plan::parse(cpu(), "cpu", &sets, None, None, false).unwrap();
        // DSPNet takes the switches ...
        let d = ablated.dspnet_config().unwrap();
        assert_eq!(
            plain.dspnet_config().unwrap().differences(&d),
            vec![
                "heads.bn",
                "method.distill_target",
                "method.narrow_predictor",
                "method.narrow_warmup_epochs",
                "method.width_gradients"
            ]
        );
        // ... the one-by-one networks are the same configs, to the serialised text
        for &w in &plain.widths {
            let (a, b) = (one_by_one_config(&plain.base, w).unwrap(), one_by_one_config(&ablated.base, w).unwrap());
            assert_eq!(a.to_toml(), b.to_toml(), "width {w}");
            assert_eq!(b.method.distill_target, dspnet_run::config::DistillTarget::Teacher);
            assert_eq!(b.method.narrow_predictor, dspnet_run::config::NarrowPredictor::Shared);
            assert_eq!(b.heads.bn, dspnet_run::config::HeadBn::Switchable);
            assert_eq!(b.method.narrow_warmup_epochs, 0.0);
            assert_eq!(b.method.width_gradients, dspnet_run::config::WidthGradients::Sum);
        }
    }
}
