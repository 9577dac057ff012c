//! The recipe: every setting that determines the trained weights (model, heads, method,
//! optimiser, the weight-determining `[train]` and `[loader]` keys, augmentations). Two runs
//! with equal recipes on the same shards train the same network; a resumed run keeps its own.

use crate::error::RunError;
use dspnet_model::resnet::ResNetConfig;
use dspnet_model::WidthList;
use dspnet_pipeline::augment::AugmentConfig;
use dspnet_pipeline::loader::LoaderConfig;
use serde::{Deserialize, Serialize};

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// `method.width_gradients`: how the widths' gradients of one DSPNet step become the update
    /// of the shared weights (conv and linear weights; switchable BN is private to a width).
    WidthGradients, "method.width_gradients", {
        /// Summed, one optimiser step (DSPNet, slimmable networks). The default.
        #[default]
        Sum = "sum",
        /// Per-width trust ratio: on every shared weight, each width's gradient is rescaled to
        /// the mean of the widths' gradient norms on it before the sum, so no width's step is
        /// set by the others' magnitude (the LARS trust ratio, You et al. 2017, taken per width).
        Trust = "trust",
        /// Gradient surgery: a narrow width's gradient that opposes the full width's (negative
        /// dot product over the shared weights) loses its component along it before the sum
        /// (PCGrad, Yu et al. 2020, with the full width's gradient kept as it is).
        Project = "project",
        /// One optimiser step per width, largest first, each on that width's gradient alone,
        /// the next width's loss taken on the updated weights (US3L, Yang et al. 2022).
        Steps = "steps",
        /// As `steps`, with each width's step at the learning rate divided by the number of
        /// widths in the training step, so that together they move the weights about as far as
        /// one default step (`steps` applies the learning rate, and with it LARS's weight decay,
        /// once per width).
        StepsSplit = "steps_split",
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Ablation switch: how the widths' gradients are combined (default "sum"; see
    /// [`WidthGradients`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub width_gradients: WidthGradients,
}

fn one() -> f64 {
    1.0
}

/// Optimiser and schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

fn default_tf32() -> bool {
    true
}

fn default_eta() -> f64 {
    0.001
}

/// The `[train]` keys that determine the weights (the others are [`super::TrainRuntime`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// On CUDA, let fp32 convolutions and matrix products run in TF32 (10-bit mantissa inputs,
    /// fp32 accumulation; PyTorch's `allow_tf32`), as the bf16 path's fp32 parts too. Default
    /// on; `false` gives IEEE fp32 (the CUDA-vs-CPU correctness check runs so). No effect on CPU.
    #[serde(default = "default_tf32")]
    pub tf32: bool,
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
}

/// What determines the trained weights: the sections and keys of the config file besides
/// [`super::Runtime`]'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub model: ResNetConfig,
    pub heads: HeadsConfig,
    pub method: MethodConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    /// Batching, shuffling, readers and seed of the loader (its threads are runtime).
    pub loader: LoaderConfig,
    pub augment: AugmentConfig,
}

impl Recipe {
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
        self.model.validate().map_err(|e| {
            let key = match e {
                dspnet_model::ModelError::InvalidWidthList { .. } => "model.widths",
                _ => "model",
            };
            RunError::config(key, format!("{key}: {e}"))
        })?;
        for (v, key) in [(self.heads.hidden, "heads.hidden"), (self.heads.out_dim, "heads.out_dim")] {
            if v < 1 {
                return Err(RunError::config(key, format!("{key} = {v} must be at least 1")));
            }
        }
        self.loader.validate().map_err(|e| RunError::config("loader", e.to_string()))?;
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
        positive(self.optim.lr, "optim.lr", 1e3)?;
        for (v, name) in [
            (self.optim.momentum, "optim.momentum"),
            (self.optim.weight_decay, "optim.weight_decay"),
            (self.optim.lars_eta, "optim.lars_eta"),
            (self.optim.warmup_epochs, "optim.warmup_epochs"),
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
        self.validate_method_switches()
    }

    /// BYOL trains one width without the sandwich rule: DSPNet's switches stay at their
    /// defaults.
    fn validate_method_switches(&self) -> Result<(), RunError> {
        if self.method.name != Method::Byol {
            return Ok(());
        }
        let m = &self.method;
        let set: Vec<&str> = [
            (m.random_widths.is_some(), "method.random_widths"),
            (m.loss_weights.is_some(), "method.loss_weights"),
            (m.distill_target != DistillTarget::default(), "method.distill_target"),
            (m.narrow_warmup_epochs != 0.0, "method.narrow_warmup_epochs"),
            (m.narrow_predictor != NarrowPredictor::default(), "method.narrow_predictor"),
            (m.width_gradients != WidthGradients::default(), "method.width_gradients"),
        ]
        .into_iter()
        .filter_map(|(on, key)| on.then_some(key))
        .collect();
        match set.first() {
            None => Ok(()),
            Some(first) => Err(RunError::config(
                *first,
                format!(
                    "{} {} DSPNet's: method.name = \"byol\" trains one width without them; unset {} or use method.name = \"dspnet\"",
                    set.join(", "),
                    if set.len() == 1 { "is a switch of" } else { "are switches of" },
                    if set.len() == 1 { "it" } else { "them" }
                ),
            )),
        }
    }
}
