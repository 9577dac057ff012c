//! Run configuration: a TOML file plus `--set section.key=value` overrides.
//!
//! Every section denies unknown keys, so a typo is a one-line error naming the key instead of a
//! silently ignored setting. The resolved configuration is written into the run directory and is
//! what `dspnet-eval` reads back.

use crate::error::RunError;
use dspnet_model::resnet::ResNetConfig;
use dspnet_model::WidthList;
use dspnet_pipeline::augment::AugmentConfig;
use dspnet_pipeline::loader::LoaderConfig;
use dspnet_pipeline::RemoteConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which pretraining method the step runs. `Dspnet` over a single width is plain BYOL, which is
/// also what `Byol` runs (it requires exactly one width), the "individually pretrained" baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// DSPNet (Wang et al., arXiv 2207.06075): BYOL at full width, in-place distillation from the
    /// momentum teacher at narrower widths, sandwich rule.
    Dspnet,
    /// BYOL (Grill et al. 2020) at one width.
    Byol,
}

/// Optimiser family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with (heavy-ball) momentum.
    Sgd,
    /// LARS (You et al. 2017) as used by BYOL: layer-wise trust ratio on weights, not on BN/bias.
    Lars,
}

/// Projector / predictor sizes (BYOL §3.3: hidden 4096, output 256 at ImageNet scale).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadsConfig {
    /// Hidden width of projector and predictor at width multiplier 1.0 (scaled by w).
    pub hidden: i64,
    /// Output dimension of projector and predictor at every width.
    pub out_dim: i64,
    /// `heads.bn`: the hidden BN of projector and predictor (ablation switch; the backbone's BN
    /// stays switchable). Left out of the serialised config when it is the default, so configs
    /// written before the switch existed serialise identically.
    #[serde(default, skip_serializing_if = "is_default")]
    pub bn: HeadBn,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Defines a config enum read from / written as a lowercase string, whose unknown values are a
/// one-line error naming the key and the accepted values.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $key:literal, { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The value as the config file spells it.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{} = \"{s}\" is unknown; use {}",
                        $key,
                        [$(concat!("\"", $text, "\"")),+].join(" or ")
                    )),
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }
    };
}

string_enum!(
    /// `heads.bn`: how projector and predictor normalise their hidden layer.
    HeadBn, "heads.bn", {
        /// A private BN per width (Slimmable Networks' switchable BN; SlimCLR uses it in the
        /// heads too). The default.
        #[default]
        Switchable = "switchable",
        /// ONE BN over the full hidden size; width w uses its first `hidden(w)` channels, affine
        /// and running statistics (US-Nets' shared BN). VarStore names `*.bn1.{weight,bias,
        /// running_mean,running_var}`.
        Shared = "shared",
    }
);

string_enum!(
    /// `method.distill_target`: what the narrow widths (w < the largest) regress onto.
    DistillTarget, "method.distill_target", {
        /// The momentum teacher's full-width projection of the other view (DSPNet as we read
        /// it, US3L). The default.
        #[default]
        Teacher = "teacher",
        /// The ONLINE network's full-width projection of the other view, detached: in-place
        /// distillation as in Slimmable Networks / US-Nets. The full width keeps BYOL's
        /// teacher target.
        Online = "online",
    }
);

string_enum!(
    /// `method.narrow_predictor`: which predictor the narrow widths use.
    NarrowPredictor, "method.narrow_predictor", {
        /// One slimmable predictor for every width (`predictor.*`). The default.
        #[default]
        Shared = "shared",
        /// Widths below the largest use a second slimmable predictor (`predictor_narrow.*`), as
        /// US3L; the largest width uses `predictor.*`.
        Separate = "separate",
    }
);

impl HeadBn {
    /// The model crate's equivalent.
    pub fn to_model(self) -> dspnet_model::HeadNorm {
        match self {
            HeadBn::Switchable => dspnet_model::HeadNorm::Switchable,
            HeadBn::Shared => dspnet_model::HeadNorm::Shared,
        }
    }
}

/// The DSPNet step.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    pub name: Method,
    /// Widths trained by the sandwich rule; a subset of `model.widths` (default: all of them).
    #[serde(default)]
    pub train_widths: Option<Vec<f64>>,
    /// Random middle widths per step besides largest and smallest (sandwich rule, Yu & Huang
    /// 2019). `None`: every width when there are at most 4, else 2.
    #[serde(default)]
    pub random_widths: Option<usize>,
    /// Loss weight per width, same order as the trained widths; `None` means 1.0 each.
    #[serde(default)]
    pub loss_weights: Option<Vec<f64>>,
    /// Initial EMA rate of the momentum teacher (BYOL: 0.996; 0.99 for short runs).
    pub ema_base: f64,
    /// Final EMA rate (cosine schedule from `ema_base` to this; BYOL: 1.0).
    #[serde(default = "one")]
    pub ema_final: f64,
    /// Ablation switch: the narrow widths' regression target (default "teacher"; see
    /// [`DistillTarget`]). Left out of the serialised config when default, like the other
    /// switches below.
    #[serde(default, skip_serializing_if = "is_default")]
    pub distill_target: DistillTarget,
    /// Ablation switch (SlimCLR's "slow start"): for optimiser steps before
    /// `round(narrow_warmup_epochs · steps_per_epoch)` only the largest trained width trains;
    /// afterwards the sandwich rule. In [0, train.epochs); default 0 (no warm-up).
    #[serde(default, skip_serializing_if = "is_default")]
    pub narrow_warmup_epochs: f64,
    /// Ablation switch: one predictor for all widths or a second one for the narrow widths
    /// (default "shared"; see [`NarrowPredictor`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub narrow_predictor: NarrowPredictor,
}

fn one() -> f64 {
    1.0
}

/// Optimiser and schedule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    /// Base learning rate for a batch of 256 images; scaled linearly by batch/256.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// LARS trust coefficient (eta).
    #[serde(default = "default_eta")]
    pub lars_eta: f64,
    /// Linear warm-up length in epochs (may be fractional).
    pub warmup_epochs: f64,
}

fn default_eta() -> f64 {
    0.001
}

/// Length and bookkeeping of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs over the training shards (fractional allowed).
    pub epochs: f64,
    /// Compute dtype: "fp32" or "bf16" (bf16 activations and weights in the forward pass,
    /// fp32 master weights, heads and loss). "auto" picks bf16 on CPUs with AMX/AVX512-BF16
    /// and on CUDA devices with bf16 support.
    pub precision: String,
    /// Use channels_last memory format for images and convolutions.
    pub channels_last: bool,
    /// Save a checkpoint every this many optimiser steps, besides the ones at every epoch end
    /// and at the end of the run (0: only those).
    pub checkpoint_every: u64,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
    /// Intra-op threads for libtorch (0: libtorch's default).
    pub threads: usize,
    /// Seed for weights, width sampling and data order.
    pub seed: u64,
    /// A step whose loss is NaN or inf at any width is skipped (no update, no EMA, BN running
    /// statistics restored) and counted in metrics.jsonl and the summary, instead of stopping
    /// the run. Skipping stops anyway once the weights themselves are non-finite.
    #[serde(default)]
    pub skip_nonfinite_steps: bool,
    /// Data parallel (WORLD_SIZE > 1): synchronised batch norm, i.e. every switchable BN
    /// normalises with the statistics of the global batch over all processes
    /// (docs/distributed.md). No effect in a single process.
    #[serde(default)]
    pub sync_bn: bool,
    /// Data parallel: timeout of the rendezvous and of every collective, seconds (a dead peer
    /// is usually reported at once; a hung one after this long).
    #[serde(default = "default_dist_timeout")]
    pub dist_timeout_sec: f64,
}

fn default_dist_timeout() -> f64 {
    300.0
}

/// Evaluation protocol settings (recorded in every result).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// kNN monitor: neighbours (Wu et al. 2018 / InstDisc: 200).
    pub knn_k: i64,
    /// kNN temperature for weighted votes (0.1).
    pub knn_t: f64,
    /// Linear probe epochs over the frozen, pre-computed features.
    pub linear_epochs: usize,
    /// Linear probe learning rate (Adam).
    pub linear_lr: f64,
    /// Linear probe batch size.
    pub linear_batch: i64,
    /// Batch size for feature extraction.
    pub batch_size: usize,
    /// Batches of clean training images used by `dspnet-eval --calibrate-bn` to re-estimate BN
    /// running statistics.
    pub bn_calibration_batches: usize,
}

/// The whole run configuration (one TOML file; see `configs/`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ResNetConfig,
    pub heads: HeadsConfig,
    pub method: MethodConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    pub loader: LoaderConfig,
    /// Remote shards: read-ahead and retry budget (absent from a file: the defaults).
    #[serde(default)]
    pub remote: RemoteConfig,
    pub augment: AugmentConfig,
    pub eval: EvalConfig,
}

impl RunConfig {
    /// Reads a TOML file and applies `key=value` overrides (`section.key=value`, the value parsed
    /// as TOML, falling back to a string), then validates.
    ///
    /// Errors: unreadable file, TOML syntax, unknown or mistyped key (named), invalid values.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RunError::config("config", format!("cannot read config {}: {e}", path.display())))?;
        let mut value: toml::Value = toml::from_str(&text).map_err(|e| {
            RunError::config(
                "config",
                format!("config {} is not valid TOML: {}", path.display(), one_line(&e.to_string())),
            )
        })?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let origin = if overrides.is_empty() {
            path.display().to_string()
        } else {
            format!("{} with the --set overrides", path.display())
        };
        Self::from_value(value, &origin)
    }

    /// Parses a configuration from TOML text (used for a run directory's resolved config).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, RunError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            RunError::config("config", format!("config {origin} is not valid TOML: {}", one_line(&e.to_string())))
        })?;
        Self::from_value(value, origin)
    }

    fn from_value(value: toml::Value, origin: &str) -> Result<Self, RunError> {
        let cfg: RunConfig = value.try_into().map_err(|e: toml::de::Error| {
            RunError::config("config", format!("config {origin}: {}", one_line(&e.to_string())))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Dotted keys (`optim.lr`, `augment.view_a.flip_p`, ...) whose values differ between two
    /// configurations, sorted.
    pub fn differences(&self, other: &RunConfig) -> Vec<String> {
        fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
            match (a, b) {
                (toml::Value::Table(x), toml::Value::Table(y)) => {
                    let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                    for k in keys {
                        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        match (x.get(k), y.get(k)) {
                            (Some(u), Some(v)) => walk(&key, u, v, out),
                            _ => out.push(key),
                        }
                    }
                }
                _ if a != b => out.push(prefix.to_string()),
                _ => {}
            }
        }
        let a = toml::Value::try_from(self).expect("a RunConfig always serialises");
        let b = toml::Value::try_from(other).expect("a RunConfig always serialises");
        let mut out = Vec::new();
        walk("", &a, &b, &mut out);
        out
    }

    /// The configuration a resumed run continues with: the run's own `config.toml` (`run`),
    /// with the settings of `requested` (from `--config`/`--set` on the resume command line)
    /// applied where they cannot change the result ([`RESUME_MAY_CHANGE`]: thread counts,
    /// logging, checkpoint frequency, evaluation settings).
    ///
    /// Errors: any other key differs; the message names the keys and both values.
    pub fn for_resume(run: &RunConfig, requested: &RunConfig, run_config_path: &Path) -> Result<RunConfig, RunError> {
        let diffs = run.differences(requested);
        let fixed: Vec<&String> = diffs
            .iter()
            .filter(|k| !RESUME_MAY_CHANGE.iter().any(|p| *k == p || k.starts_with(&format!("{p}."))))
            .collect();
        if let Some(first) = fixed.first() {
            let a = toml::Value::try_from(run).expect("serialises");
            let b = toml::Value::try_from(requested).expect("serialises");
            let get = |v: &toml::Value| -> String {
                first.split('.').try_fold(v, |v, k| v.get(k)).map_or("(absent)".into(), |v| v.to_string())
            };
            let list: Vec<&str> = fixed.iter().map(|s| s.as_str()).collect();
            return Err(RunError::config(first.to_string(), format!(
                "--resume: the requested config differs from {} in {} ({first} = {} there, {} requested); a resumed run keeps its config: drop --config/--set, or start a new run with --out",
                run_config_path.display(),
                list.join(", "),
                get(&a),
                get(&b)
            )));
        }
        let mut merged = toml::Value::try_from(run).expect("serialises");
        let req = toml::Value::try_from(requested).expect("serialises");
        for key in &diffs {
            let parts: Vec<&str> = key.split('.').collect();
            let value = parts.iter().try_fold(&req, |v, k| v.get(*k)).cloned();
            let mut node = &mut merged;
            for p in &parts[..parts.len() - 1] {
                node = node.get_mut(*p).expect("key present in both");
            }
            let table = node.as_table_mut().expect("a section");
            match value {
                Some(v) => {
                    table.insert(parts[parts.len() - 1].to_string(), v);
                }
                None => {
                    table.remove(parts[parts.len() - 1]);
                }
            }
        }
        Self::from_value(merged, &format!("{} with the resume overrides", run_config_path.display()))
    }

    /// Serialises the resolved configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serialises")
    }

    /// The widths this run trains, validated against the model's width list.
    pub fn train_widths(&self) -> Result<WidthList, RunError> {
        let model_widths = WidthList::new(self.model.widths.clone())
            .map_err(|e| RunError::config("model.widths", format!("model.widths: {e}")))?;
        let list = match &self.method.train_widths {
            None => model_widths,
            Some(ws) => {
                for &w in ws {
                    model_widths
                        .index_of(w)
                        .map_err(|e| RunError::config("method.train_widths", format!("method.train_widths: {e}")))?;
                }
                WidthList::new(ws.clone())
                    .map_err(|e| RunError::config("method.train_widths", format!("method.train_widths: {e}")))?
            }
        };
        Ok(list)
    }

    /// Checks cross-field constraints; errors name the option and the fix.
    pub fn validate(&self) -> Result<(), RunError> {
        let widths = self.train_widths()?;
        if self.method.name == Method::Byol && widths.as_slice().len() != 1 {
            return Err(RunError::config("method.name", format!(
                "method.name = \"byol\" trains one width but method.train_widths has {}; set --set method.train_widths=[1.0]",
                widths.as_slice().len()
            )));
        }
        if let Some(lw) = &self.method.loss_weights {
            if lw.len() != widths.as_slice().len() {
                return Err(RunError::config(
                    "method.loss_weights",
                    format!(
                        "method.loss_weights has {} values but {} widths are trained; give one weight per width",
                        lw.len(),
                        widths.as_slice().len()
                    ),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.method.ema_base) || !(0.0..=1.0).contains(&self.method.ema_final) {
            // (NaN is not contained in any range, so it is refused here too)
            return Err(RunError::config("method.ema_base", "method.ema_base and method.ema_final must lie in [0, 1]"));
        }
        if self.loader.batch_size < 2 {
            return Err(RunError::config(
                "loader.batch_size",
                "loader.batch_size must be at least 2 (batch norm needs it)",
            ));
        }
        let positive = |v: f64, name: &str, max: f64| -> Result<(), RunError> {
            if v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(RunError::config(name, format!("{name} = {v} must be a number in (0, {max}]")))
            }
        };
        positive(self.train.epochs, "train.epochs", 1e5)?;
        positive(self.train.dist_timeout_sec, "train.dist_timeout_sec", 1e6)?;
        positive(self.optim.lr, "optim.lr", 1e3)?;
        for (v, name) in [
            (self.optim.momentum, "optim.momentum"),
            (self.optim.weight_decay, "optim.weight_decay"),
            (self.optim.lars_eta, "optim.lars_eta"),
            (self.optim.warmup_epochs, "optim.warmup_epochs"),
            (self.eval.knn_t, "eval.knn_t"),
            (self.eval.linear_lr, "eval.linear_lr"),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(RunError::config(name, format!("{name} = {v} must be a finite number >= 0")));
            }
        }
        let nw = self.method.narrow_warmup_epochs;
        if !(nw >= 0.0 && nw < self.train.epochs) {
            return Err(RunError::config("method.narrow_warmup_epochs", format!(
                "method.narrow_warmup_epochs = {nw} must be a number in [0, train.epochs = {}): the narrow widths must start training before the run ends; lower it (0 turns the warm-up off)",
                self.train.epochs
            )));
        }
        if self.method.distill_target == DistillTarget::Online {
            let largest = WidthList::new(self.model.widths.clone())
                .map_err(|e| RunError::config("model.widths", format!("model.widths: {e}")))?
                .largest();
            if widths.index_of(largest).is_err() {
                return Err(RunError::config("method.distill_target", format!(
                    "method.distill_target = \"online\" needs the largest width {largest} among method.train_widths (its projection is the narrow widths' target); add it or use \"teacher\""
                )));
            }
        }
        if self.method.loss_weights.iter().flatten().any(|w| !(*w >= 0.0 && w.is_finite())) {
            return Err(RunError::config("method.loss_weights", "method.loss_weights must be finite numbers >= 0"));
        }
        match self.train.precision.as_str() {
            "fp32" | "bf16" | "auto" => {}
            p => {
                return Err(RunError::config(
                    "train.precision",
                    format!("train.precision = \"{p}\" is unknown; use \"fp32\", \"bf16\" or \"auto\""),
                ))
            }
        }
        if self.augment.channels as i64 != self.model.in_channels {
            return Err(RunError::config(
                "augment.channels",
                format!(
                    "augment.channels ({}) differs from model.in_channels ({}); make them equal",
                    self.augment.channels, self.model.in_channels
                ),
            ));
        }
        self.augment.validate().map_err(|e| RunError::config("augment", format!("augment: {e}")))?;
        Ok(())
    }
}

/// Config keys (or whole sections) a resumed run may change: they affect speed, logging and
/// evaluation, not the trained weights.
pub const RESUME_MAY_CHANGE: &[&str] = &[
    "train.threads",
    "train.log_every",
    "train.checkpoint_every",
    "loader.workers",
    "loader.prefetch_batches",
    "remote.read_ahead",
    "remote.read_ahead_bytes",
    "remote.max_retries",
    "remote.max_retry_secs",
    "eval",
];

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies one `a.b.c=value` override to a TOML tree. The key must already exist, so a typo is
/// an error naming it; the value is parsed as TOML (`0.5`, `[0.25, 1.0]`, `true`, `"x"`) and
/// falls back to a bare string.
pub fn apply_override(root: &mut toml::Value, item: &str) -> Result<(), RunError> {
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| RunError::config(item, format!("--set {item}: expected key=value, e.g. --set optim.lr=0.5")))?;
    let key = key.trim();
    let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (i, part) in parts.iter().enumerate() {
        let table = node
            .as_table_mut()
            .ok_or_else(|| RunError::config(key, format!("--set {key}: {} is not a section", parts[..i].join("."))))?;
        if i + 1 == parts.len() {
            if !table.contains_key(*part) && !optional_key(&parts) {
                return Err(RunError::config(
                    key,
                    format!("--set {key}: unknown config key; see the config file for the available keys"),
                ));
            }
            table.insert(part.to_string(), parsed);
            return Ok(());
        }
        // the section of an optional key may be absent from the file too (e.g. [remote])
        if !table.contains_key(*part) && optional_key(&parts) {
            table.insert(part.to_string(), toml::Value::Table(toml::Table::new()));
        }
        node = table.get_mut(*part).ok_or_else(|| {
            RunError::config(key, format!("--set {key}: unknown config section {}", parts[..=i].join(".")))
        })?;
    }
    Ok(())
}

/// Keys that may be absent from a config file but can be set (serde defaults).
fn optional_key(parts: &[&str]) -> bool {
    matches!(
        parts,
        [
            "method",
            "train_widths"
                | "random_widths"
                | "loss_weights"
                | "ema_final"
                | "distill_target"
                | "narrow_warmup_epochs"
                | "narrow_predictor"
        ] | ["heads", "bn"]
            | ["optim", "lars_eta"]
            | ["train", "skip_nonfinite_steps" | "sync_bn" | "dist_timeout_sec"]
            | ["remote", "read_ahead" | "read_ahead_bytes" | "max_retries" | "max_retry_secs"]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> toml::Value {
        toml::from_str("[optim]\nlr = 0.1\n[method]\nname = \"dspnet\"\n").unwrap()
    }

    #[test]
    fn override_sets_typed_values() {
        let mut v = base();
        apply_override(&mut v, "optim.lr=0.5").unwrap();
        apply_override(&mut v, "method.train_widths=[0.5, 1.0]").unwrap();
        assert_eq!(v["optim"]["lr"].as_float(), Some(0.5));
        let ws: Vec<f64> =
            v["method"]["train_widths"].as_array().unwrap().iter().map(|x| x.as_float().unwrap()).collect();
        assert_eq!(ws, vec![0.5, 1.0]);
    }

    #[test]
    fn override_unknown_key_is_an_error_naming_it() {
        let mut v = base();
        let e = apply_override(&mut v, "optim.lrr=0.5").unwrap_err().to_string();
        assert!(e.contains("optim.lrr"), "{e}");
        let e = apply_override(&mut v, "nosuch.lr=0.5").unwrap_err().to_string();
        assert!(e.contains("nosuch"), "{e}");
        let e = apply_override(&mut v, "optim.lr").unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
    }

    fn preset() -> RunConfig {
        RunConfig::from_toml_str(include_str!("../../configs/cifar10-small.toml"), "preset").unwrap()
    }

    #[test]
    fn differences_name_the_dotted_keys() {
        let a = preset();
        let mut b = a.clone();
        assert!(a.differences(&b).is_empty());
        b.optim.lr = 0.5;
        b.augment.view_b.solarize_p = 0.0;
        b.method.random_widths = Some(1);
        assert_eq!(a.differences(&b), vec!["augment.view_b.solarize_p", "method.random_widths", "optim.lr"]);
    }

    #[test]
    fn resume_keeps_the_run_config_and_takes_only_harmless_changes() {
        let run = preset();
        let path = Path::new("RUN/config.toml");
        // the same config: fine
        let same = RunConfig::for_resume(&run, &run.clone(), path).unwrap();
        assert!(same.differences(&run).is_empty());
        // thread count, logging and eval settings may change and are taken
        let mut req = run.clone();
        req.train.threads = 7;
        req.eval.knn_k = 20;
        req.loader.workers = 5;
        let got = RunConfig::for_resume(&run, &req, path).unwrap();
        assert_eq!((got.train.threads, got.eval.knn_k, got.loader.workers), (7, 20, 5));
        assert_eq!(got.differences(&run), vec!["eval.knn_k", "loader.workers", "train.threads"]);
        // anything that changes the trained weights is an error naming key and values
        let mut req = run.clone();
        req.optim.lr = 0.5;
        req.loader.seed = 3;
        let e = RunConfig::for_resume(&run, &req, path).unwrap_err().to_string();
        assert!(e.contains("loader.seed, optim.lr") && e.contains("loader.seed = 0 there, 3 requested"), "{e}");
        assert!(e.contains("RUN/config.toml") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn skip_nonfinite_steps_defaults_off_and_can_be_set() {
        assert!(!preset().train.skip_nonfinite_steps);
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cifar10-small.toml");
        let cfg = RunConfig::load(&path, &["train.skip_nonfinite_steps=true".into()]).unwrap();
        assert!(cfg.train.skip_nonfinite_steps);
    }

    #[test]
    fn every_shipped_preset_parses_and_validates() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("toml") {
                // dspnet-compare's presets (compare-*.toml) add a [compare] section; the rest is
                // a run configuration like any other
                let mut v: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                v.as_table_mut().unwrap().remove("compare");
                let cfg = RunConfig::from_toml_str(&toml::to_string(&v).unwrap(), &path.display().to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(cfg.model.widths.last(), Some(&1.0), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 3, "expected the shipped presets in {}", dir.display());
    }

    #[test]
    fn ablation_switches_default_to_todays_step_and_stay_out_of_the_serialised_config() {
        let cfg = preset();
        assert_eq!(cfg.method.distill_target, DistillTarget::Teacher);
        assert_eq!(cfg.method.narrow_predictor, NarrowPredictor::Shared);
        assert_eq!(cfg.method.narrow_warmup_epochs, 0.0);
        assert_eq!(cfg.heads.bn, HeadBn::Switchable);
        // a config written before the switches existed serialises to the same text
        let text = cfg.to_toml();
        for key in ["distill_target", "narrow_warmup_epochs", "narrow_predictor", "\nbn ="] {
            assert!(!text.contains(key), "{key} in\n{text}");
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cifar10-small.toml");
        let sets: Vec<String> = [
            "method.distill_target=online",
            "method.narrow_warmup_epochs=0.5",
            "method.narrow_predictor=\"separate\"",
            "heads.bn=shared",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let set = RunConfig::load(&path, &sets).unwrap();
        assert_eq!(
            (set.method.distill_target, set.method.narrow_warmup_epochs, set.method.narrow_predictor, set.heads.bn),
            (DistillTarget::Online, 0.5, NarrowPredictor::Separate, HeadBn::Shared)
        );
        assert_eq!(
            cfg.differences(&set),
            vec!["heads.bn", "method.distill_target", "method.narrow_predictor", "method.narrow_warmup_epochs"]
        );
        // and they round-trip through the resolved config.toml
        let back = RunConfig::from_toml_str(&set.to_toml(), "back").unwrap();
        assert!(back.differences(&set).is_empty());
        assert!(set.to_toml().contains("distill_target = \"online\""));
    }

    #[test]
    fn ablation_switches_refuse_bad_values_in_one_line() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cifar10-small.toml");
        let epochs = preset().train.epochs;
        let cases = [
            (
                "method.distill_target=\"nope\"",
                "method.distill_target = \"nope\" is unknown; use \"teacher\" or \"online\"",
            ),
            (
                "method.narrow_predictor=both",
                "method.narrow_predictor = \"both\" is unknown; use \"shared\" or \"separate\"",
            ),
            ("heads.bn=\"group\"", "heads.bn = \"group\" is unknown; use \"switchable\" or \"shared\""),
            (
                "method.narrow_warmup_epochs=-0.5",
                "method.narrow_warmup_epochs = -0.5 must be a number in [0, train.epochs",
            ),
        ];
        for (set, needle) in cases {
            let e = RunConfig::load(&path, &[set.to_string()]).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{set}: {e}");
        }
        let e = RunConfig::load(&path, &[format!("method.narrow_warmup_epochs={epochs:?}")]).unwrap_err().to_string();
        assert!(e.contains("method.narrow_warmup_epochs") && e.contains("lower it"), "{e}");
        assert!(RunConfig::load(&path, &[format!("method.narrow_warmup_epochs={}", epochs - 0.5)]).is_ok());
        // online targets need the largest width among the trained ones
        let e =
            RunConfig::load(&path, &["method.distill_target=online".into(), "method.train_widths=[0.25, 0.5]".into()])
                .unwrap_err()
                .to_string();
        assert!(e.contains("method.distill_target = \"online\"") && e.contains("largest width 1"), "{e}");
    }
}
