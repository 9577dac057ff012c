//! The trained online backbone of a run, loaded with strict names and shapes: what evaluation,
//! export and profiling use.

use crate::checkpoint::Checkpoint;
use crate::config::RunConfig;
use crate::error::{Result, RunError};
use dspnet_model::resnet::SlimResNet;
use std::collections::BTreeSet;
use tch::{nn, Device};

/// Checkpoint prefix of the online network (`online.backbone.conv1.weight`, ...).
pub const ONLINE_PREFIX: &str = "online";

/// A slimmable backbone with its own variable store (variables under `backbone.*`).
pub struct Backbone {
    pub vs: nn::VarStore,
    pub net: SlimResNet,
}

impl Backbone {
    /// The architecture `cfg.model` describes on `device`, with PyTorch's default random
    /// initialisation drawn from libtorch's generator (seed it first for a reproducible one).
    ///
    /// Errors: a model configuration that cannot be built.
    pub fn random(cfg: &RunConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let net = SlimResNet::new(&(vs.root() / "backbone"), &cfg.model)?;
        Ok(Backbone { vs, net })
    }

    /// The run's trained online backbone (weights and every width's switchable-BN statistics)
    /// from `ckpt`, fp32 on `device`. Strict: every `online.backbone.*` tensor of the checkpoint
    /// must match a variable of the architecture `cfg` describes in name, shape and floating
    /// dtype, and vice versa.
    ///
    /// Errors: [`RunError::Checkpoint`] for a checkpoint without backbone tensors or of another
    /// architecture (names the first tensor that differs and the architecture expected).
    pub fn trained(cfg: &RunConfig, ckpt: &Checkpoint, device: Device) -> Result<Self> {
        let b = Self::random(cfg, device)?;
        restore_strict(&b.vs, ckpt, cfg)?;
        Ok(b)
    }
}

/// `cfg.model` in words, for error messages.
pub fn describe_arch(cfg: &RunConfig) -> String {
    let m = &cfg.model;
    format!(
        "{} with {:?} stem, {} input channels, base_channels {}, widths {:?}",
        m.depth, m.stem, m.in_channels, m.base_channels, m.widths
    )
    .replace("Imagenet", "imagenet")
    .replace("Small", "small")
}

fn restore_strict(vs: &nn::VarStore, ckpt: &Checkpoint, cfg: &RunConfig) -> Result<()> {
    let other = |detail: String| {
        RunError::checkpoint(
            &ckpt.path,
            format!(
                "{}: {detail}, but config.toml describes {}: the checkpoint was written for another architecture; export from the run directory that wrote it",
                ckpt.path.display(),
                describe_arch(cfg)
            ),
        )
    };
    let vars = vs.variables();
    let wanted: BTreeSet<String> = vars.keys().map(|n| format!("{ONLINE_PREFIX}.{n}")).collect();
    let backbone_prefix = format!("{ONLINE_PREFIX}.backbone.");
    let mut present: Vec<&String> = ckpt.tensors.keys().filter(|k| k.starts_with(&backbone_prefix)).collect();
    present.sort();
    if present.is_empty() {
        return Err(RunError::checkpoint(
            &ckpt.path,
            format!(
                "{} holds no {backbone_prefix}* tensors: it is not a dspnet training checkpoint",
                ckpt.path.display()
            ),
        ));
    }
    if let Some(extra) = present.iter().find(|k| !wanted.contains(k.as_str())) {
        return Err(other(format!("it holds {extra}")));
    }
    tch::no_grad(|| {
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            let key = format!("{ONLINE_PREFIX}.{name}");
            let mut var = vars[name].shallow_clone();
            let src = ckpt.tensors.get(&key).ok_or_else(|| other(format!("it lacks {key}")))?;
            if src.size() != var.size() {
                return Err(other(format!("{key} has shape {:?} where {:?} is expected", src.size(), var.size())));
            }
            if !src.is_floating_point() {
                return Err(other(format!("{key} has dtype {:?}", src.kind())));
            }
            var.f_copy_(&src.to_kind(var.kind()))?;
        }
        Ok(())
    })
}
