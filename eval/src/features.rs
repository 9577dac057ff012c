//! Frozen features of every width of a slimmable backbone (what kNN and the linear probe
//! classify), and the re-estimation of BN running statistics for random-init baselines.

use crate::error::EvalError;
use dspnet_model::{ComputeFormat, SlimResNet};
use dspnet_pipeline::loader::Loader;
use tch::nn;
use tch::{Device, Kind, Tensor};

/// Frozen features of a split at every width: `features[i]` is `[N, D_i]` fp32 (CPU) for
/// `widths[i]`, `labels` is `[N]` i64. Images are decoded once and run through every width, in
/// eval mode (BN running statistics), under `no_grad`; nothing else changes (no BN statistic, no
/// random number is drawn). `limit`: only the first N images of the split (in the Eval-mode
/// loader's order, which is the shards' order), `None` for all.
///
/// Errors: the loader's; [`EvalError::NoLabelledImage`] when the shards give no image.
pub fn extract_features(
    backbone: &SlimResNet,
    device: Device,
    widths: &[f64],
    loader: &Loader,
    format: ComputeFormat,
    limit: Option<usize>,
) -> Result<(Vec<Tensor>, Tensor), EvalError> {
    let mut feats: Vec<Vec<Tensor>> = widths.iter().map(|_| Vec::new()).collect();
    let mut labels = Vec::new();
    let mut left = limit.unwrap_or(usize::MAX);
    for batch in loader.epoch(0)? {
        if left == 0 {
            break;
        }
        let batch = batch?;
        let take = (batch.labels.size()[0] as usize).min(left) as i64;
        left -= take as usize;
        let x = batch.view_a.narrow(0, 0, take).to_device(device);
        for (i, f) in batch_features(backbone, &x, widths, format)?.into_iter().enumerate() {
            feats[i].push(f);
        }
        labels.push(batch.labels.narrow(0, 0, take).to_device(Device::Cpu));
    }
    if labels.is_empty() {
        return Err(EvalError::NoLabelledImage);
    }
    Ok((feats.into_iter().map(|v| Tensor::cat(&v, 0)).collect(), Tensor::cat(&labels, 0)))
}

/// Frozen features of one batch at every width: `x` is `[B, C, S, S]` f32 on the backbone's
/// device; `out[i]` is `[B, D_i]` fp32 (CPU) for `widths[i]`. Eval mode (BN running statistics),
/// under `no_grad`, in `format`.
///
/// Errors: a width the backbone was not built with.
pub fn batch_features(
    backbone: &SlimResNet,
    x: &Tensor,
    widths: &[f64],
    format: ComputeFormat,
) -> Result<Vec<Tensor>, EvalError> {
    let x = format.apply(x);
    tch::no_grad(|| {
        widths
            .iter()
            .map(|&w| Ok(backbone.forward_t(&x, w, false)?.to_kind(Kind::Float).to_device(Device::Cpu)))
            .collect()
    })
}

/// Re-estimates the BN running statistics of every width in `widths` (backbone only) from
/// `batches` batches of `loader`: statistics reset to (0, 1), then forward passes in train mode
/// without gradients, momentum 0.1 (after 50 batches the initial values weigh 0.9^50 ≈ 0.5%).
/// Each batch is decoded once and run through every width. Only BN running statistics change
/// (switchable BN: each width's own), nothing else.
///
/// Errors: the loader's; model errors.
pub fn calibrate_bn(
    vs: &nn::VarStore,
    backbone: &SlimResNet,
    widths: &[f64],
    loader: &Loader,
    batches: usize,
    format: ComputeFormat,
) -> Result<(), EvalError> {
    for &w in widths {
        reset_bn_stats(vs, "backbone.", w);
    }
    let device = vs.device();
    for (n, batch) in loader.epoch(1_000_000)?.enumerate() {
        if n >= batches {
            break;
        }
        let x = format.apply(&batch?.view_a.to_device(device));
        tch::no_grad(|| -> Result<(), EvalError> {
            for &w in widths {
                let _ = backbone.forward_t(&x, w, true)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Resets the running statistics of `width`'s switchable BNs under `prefix` (e.g. `backbone.`)
/// to PyTorch's initial values (mean 0, variance 1). Other widths' BNs are not touched.
/// Returns how many BN layers were reset.
pub fn reset_bn_stats(vs: &nn::VarStore, prefix: &str, width: f64) -> usize {
    let tag = format!(".{}.", dspnet_model::width_tag(width));
    let mut n = 0;
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if !name.starts_with(prefix) || !name.contains(&tag) {
                continue;
            }
            if name.ends_with(".running_mean") {
                let _ = t.fill_(0.0);
                n += 1;
            } else if name.ends_with(".running_var") {
                let _ = t.fill_(1.0);
            }
        }
    });
    n
}
