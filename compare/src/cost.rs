//! Cost bookkeeping: training FLOPs counted from the networks and the steps each run took, the
//! same-total-budget split, and the ratios of DSPNet's cost to the sum over the one-by-one runs.
//!
//! # Training FLOPs
//! Counted, not estimated from time, in multiply-accumulates (MACs; the convention of
//! `SlimResNet::flops`, Slimmable Networks and torchvision's "GFLOPS" column: convolutions
//! and the heads' linear layers; BN, ReLU, pooling, the loss, the optimiser update and the EMA
//! update are not counted). Per training image, each step runs both augmented views through:
//! * the momentum teacher at its width once, forward only (backbone + projector): `T`;
//! * the online network at every width `w` the sandwich rule chose that step (backbone +
//!   projector + predictor), forward and backward, the backward pass counted as twice the
//!   forward (the usual estimate: gradients with respect to activations and to weights): `3·F_w`.
//!
//! So a run of `S` steps over `N` images (`N/S` per step) costs
//! `N/S · 2 · (S·T + 3 · Σ_w n_w · F_w)` MACs, where `n_w` is the number of steps that trained
//! width `w`, read from the run's `metrics.jsonl` (one line per step; `train.log_every = 1` is
//! forced). Plain BYOL at width `w` has `T = F_w` minus the predictor, `n_w = S`.

use crate::error::{CompareError, Result};
use dspnet_model::{slim_channels, WidthList};
use dspnet_run::backbone::Backbone;
use dspnet_run::RunConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Forward multiply-accumulates of ONE image (one view) of a run's networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForwardMacs {
    /// Momentum teacher: backbone + projector at the teacher's width.
    pub teacher: u64,
    /// Online network per trained width (config widths, ascending): backbone + projector +
    /// predictor.
    pub online: Vec<(f64, u64)>,
    /// Backbone alone per trained width (what an exported sub-network costs).
    pub backbone: Vec<(f64, u64)>,
}

/// MACs of the projector (and predictor) at `width`: linear layers only.
fn heads_macs(feature_dim: i64, hidden_full: i64, out_dim: i64, width: f64, predictor: bool) -> u64 {
    let h = slim_channels(hidden_full, width);
    let projector = feature_dim * h + h * out_dim;
    let predictor = if predictor { out_dim * h + h * out_dim } else { 0 };
    (projector + predictor) as u64
}

/// Counts [`ForwardMacs`] for the networks `cfg` trains, at the training resolution
/// (`augment.image_size`). Builds the backbone on the CPU to read its counts.
///
/// Errors: an invalid model configuration.
pub fn forward_macs(cfg: &RunConfig) -> Result<ForwardMacs> {
    let backbone = Backbone::random(cfg, tch::Device::Cpu)?.net;
    let img = cfg.augment.image_size as i64;
    let bb = |w: f64| backbone.macs(w, img, img);
    let head = |w: f64, pred: bool| heads_macs(backbone.feature_dim(w), cfg.heads.hidden, cfg.heads.out_dim, w, pred);
    let teacher_w = WidthList::new(cfg.model.widths.clone())?.largest();
    let trained = cfg.train_widths()?;
    Ok(ForwardMacs {
        teacher: bb(teacher_w) + head(teacher_w, false),
        online: trained.as_slice().iter().map(|&w| (w, bb(w) + head(w, true))).collect(),
        backbone: trained.as_slice().iter().map(|&w| (w, bb(w))).collect(),
    })
}

/// Steps per trained width, read from a run's `metrics.jsonl` (each step's line lists the
/// widths it trained under `loss`). Returns `(steps with a loss line, [(width, steps)])`, widths
/// in the order `widths` gives.
///
/// Errors: unreadable file; a width not in `widths`.
pub fn width_steps(metrics: &Path, widths: &[f64]) -> Result<(u64, Vec<(f64, u64)>)> {
    let text = std::fs::read_to_string(metrics).map_err(|e| CompareError::io(metrics, e))?;
    let mut counts: Vec<(f64, u64)> = widths.iter().map(|&w| (w, 0)).collect();
    let mut steps = 0;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(losses) = v["loss"].as_array() else { continue };
        steps += 1;
        for l in losses {
            let w = l["width"].as_f64().unwrap_or(f64::NAN);
            let slot = counts.iter_mut().find(|(x, _)| (x - w).abs() <= 1e-9).ok_or_else(|| {
                CompareError::run_file(
                    metrics,
                    format!("{}: width {w} is not one of the run's widths {widths:?}", metrics.display()),
                )
            })?;
            slot.1 += 1;
        }
    }
    Ok((steps, counts))
}

/// Training MACs of a run: `images/steps · 2 · (steps·teacher + 3 · Σ_w n_w · online_w)` (module
/// docs). `width_steps` and `online` pair up by position. Zero when `steps` is 0.
pub fn train_macs(images: u64, steps: u64, teacher: u64, online: &[(f64, u64)], width_steps: &[(f64, u64)]) -> u64 {
    if steps == 0 {
        return 0;
    }
    let per_image_all_steps: u128 = 2
        * (steps as u128 * teacher as u128
            + 3 * online.iter().zip(width_steps).map(|((_, f), (_, n))| *f as u128 * *n as u128).sum::<u128>());
    (images as u128 * per_image_all_steps / steps as u128).min(u64::MAX as u128) as u64
}

/// The same-total-budget split: DSPNet's training wall time `budget_seconds` shared equally by
/// the one-by-one widths; each gets `floor(budget/n / step_seconds)` steps (at least 1), its step
/// time measured on its full one-by-one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetSplit {
    /// DSPNet's training wall time, seconds.
    pub budget_seconds: f64,
    /// `budget_seconds / n`.
    pub per_width_seconds: f64,
    /// (width, measured seconds per step, steps given).
    pub widths: Vec<(f64, f64, u64)>,
}

/// Splits `budget_seconds` over `(width, seconds per step)` (see [`BudgetSplit`]).
pub fn same_budget_split(budget_seconds: f64, step_seconds: &[(f64, f64)]) -> BudgetSplit {
    let per = budget_seconds / step_seconds.len().max(1) as f64;
    BudgetSplit {
        budget_seconds,
        per_width_seconds: per,
        widths: step_seconds
            .iter()
            .map(|&(w, s)| (w, s, if s > 0.0 { ((per / s).floor() as u64).max(1) } else { 1 }))
            .collect(),
    }
}

/// `a / b`, or `None` when `b` is 0.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_macs_by_hand() {
        // teacher 100 MACs, widths 0.5 (20 MACs, 2 steps) and 1.0 (110 MACs, 3 steps);
        // 3 steps over 48 images: per image over all steps 2·(3·100 + 3·(2·20 + 3·110)) = 2820,
        // times 48 / 3 = 45120
        let online = [(0.5, 20), (1.0, 110)];
        assert_eq!(train_macs(48, 3, 100, &online, &[(0.5, 2), (1.0, 3)]), 45_120);
        // plain BYOL: 2 steps of 8 images, teacher 7, online 9: 16/2 · 2 · (2·7 + 3·2·9) = 1088
        assert_eq!(train_macs(16, 2, 7, &[(1.0, 9)], &[(1.0, 2)]), 1088);
        assert_eq!(train_macs(16, 0, 7, &[(1.0, 9)], &[(1.0, 0)]), 0);
    }

    #[test]
    fn budget_split_by_hand() {
        // 100 s over 4 widths: 25 s each; 25/0.5 = 50, 25/1 = 25, 25/3 = 8.33 -> 8, 25/40 -> 1
        let s = same_budget_split(100.0, &[(0.25, 0.5), (0.5, 1.0), (0.75, 3.0), (1.0, 40.0)]);
        assert_eq!(s.per_width_seconds, 25.0);
        let steps: Vec<u64> = s.widths.iter().map(|w| w.2).collect();
        assert_eq!(steps, vec![50, 25, 8, 1]);
    }

    #[test]
    fn width_steps_count_every_logged_step() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(
            &p,
            "{\"step\":1,\"loss\":[{\"width\":1.0,\"loss\":1},{\"width\":0.25,\"loss\":1}]}\n\
             {\"step\":2,\"skipped_nonfinite\":1}\n\
             {\"step\":3,\"loss\":[{\"width\":1.0,\"loss\":1},{\"width\":0.5,\"loss\":1},{\"width\":0.25,\"loss\":1}]}\n",
        )
        .unwrap();
        let (steps, counts) = width_steps(&p, &[0.25, 0.5, 1.0]).unwrap();
        assert_eq!(steps, 2);
        assert_eq!(counts, vec![(0.25, 2), (0.5, 1), (1.0, 2)]);
        assert!(width_steps(&p, &[0.25, 1.0]).is_err());
    }

    #[test]
    fn heads_by_hand() {
        // feature 32, hidden round(64·0.5) = 32, out 16: projector 32·32 + 32·16 = 1536,
        // predictor 16·32 + 32·16 = 1024
        assert_eq!(heads_macs(32, 64, 16, 0.5, false), 1536);
        assert_eq!(heads_macs(32, 64, 16, 0.5, true), 2560);
    }
}
