//! Linear transfer to another dataset (protocol `transfer-linear`): frozen features of every
//! width on a labelled image folder, a multinomial logistic regression whose weight decay is
//! picked on a validation split, top-1 on the test split; one record per dataset, width and
//! init, named `transfer-linear-<dataset folder name>`.
//!
//! # Recipe and its sources
//! The frozen-feature transfer protocol of SimCLR (Chen et al. 2020, arXiv 2002.05709, App.
//! B.8, "transfer learning via a linear classifier") and BYOL (Grill et al. 2020, arXiv
//! 2006.07733, App. D), which follow Kornblith et al. 2019 ("Do Better ImageNet Models Transfer
//! Better?", arXiv 1805.08974): an L2-regularised multinomial logistic regression on features
//! of the frozen network (eval-mode BN), no augmentation (one centre view per image), the
//! regularisation strength chosen on the validation split (or, for datasets without one, on a
//! part of the training split held out for it), then the classifier refitted on train +
//! validation and scored once on test; fitted with L-BFGS on the softmax cross-entropy.
//! Our choices, sized for a CPU: the grid (default 10⁻⁶ … 10⁻¹, one value per decade, for
//! features standardised with the fitted data's mean/std and the loss averaged over images;
//! SimCLR searched 45 values), a class-balanced held-out 20 % of train drawn with seed 0 when
//! there is no `val/`, ties in validation top-1 going to the larger weight decay, and
//! scipy's L-BFGS-B stopping rule and history ([`lbfgs`]); the optimiser runs in f64 from zero
//! weights, so a fit is deterministic.
//!
//! # Data path and cost
//! The folder is checked first ([`TransferDataset::open`]: splits, classes, counts), so a bad
//! dataset fails before any long computation. Images are decoded once per split by
//! `loader.workers` threads in batches of `eval.batch_size` ([`ViewDecoder`]) and each batch
//! goes through every width of every evaluated network (pretrained and, with `--random-init`,
//! random). Memory: one batch of views plus the features, `4 · Σ_w D_w` bytes per image and
//! network (ResNet-18 small stem at base 64: 4 · 1280 B = 5 KiB per image for the four widths;
//! ResNet-50: 20 KiB), e.g. 0.5 GB for 50,000 images and two networks of a ResNet-18.
//! Compute: one forward pass per image, width and network, then per width and network
//! `|grid| + 1` L-BFGS fits of at most `max_iter` iterations, each one or two evaluations of
//! `2·N·D·C` multiply-adds (N images, D features, C classes), on `--device`.

pub mod dataset;
pub mod images;
pub mod lbfgs;
pub mod logistic;
pub mod protocol;
pub mod select;

use crate::error::EvalError;
use std::path::PathBuf;

pub use dataset::{SplitFiles, TransferDataset};
pub use images::ViewDecoder;
pub use lbfgs::{Lbfgs, Minimum, Stop};
pub use logistic::{Fitted, LogisticRegression};
pub use protocol::TransferLinear;
pub use select::{pick_weight_decay, transfer_top1, Candidate, Selection, TransferFit};

/// The default weight-decay grid: 10⁻⁶ … 10⁻¹, one value per decade.
pub const DEFAULT_WEIGHT_DECAYS: [f64; 6] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// Settings of the `transfer-linear` protocol (`dspnet-eval --transfer-data`,
/// `--transfer-weight-decays`, `--transfer-val-fraction`, `--transfer-max-iter`). Every field is
/// recorded in each result's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TransferLinearSettings {
    /// Dataset folders (`DIR/train/<class>/<image>`, `DIR/test/...`, optional `DIR/val/...`),
    /// evaluated in this order.
    pub datasets: Vec<PathBuf>,
    /// The L2 weight decays tried (each > 0), in the order tried.
    pub weight_decays: Vec<f64>,
    /// Fraction of each class of `train/` held out for validation when there is no `val/`, in
    /// (0, 0.5] (default 0.2).
    pub val_fraction: f64,
    /// Seed of the held-out draw (default 0, the same for every run so that compared runs see
    /// the same split).
    pub split_seed: u64,
    /// L-BFGS settings of every fit (default: history 10, at most 1000 iterations, scipy's
    /// tolerances).
    pub lbfgs: Lbfgs,
}

impl Default for TransferLinearSettings {
    fn default() -> Self {
        TransferLinearSettings {
            datasets: Vec::new(),
            weight_decays: DEFAULT_WEIGHT_DECAYS.to_vec(),
            val_fraction: 0.2,
            split_seed: 0,
            lbfgs: Lbfgs::default(),
        }
    }
}

impl TransferLinearSettings {
    /// Checks every field (the folders themselves are checked by [`TransferDataset::open`]).
    ///
    /// Errors: [`EvalError::Option`] naming the `dspnet-eval` option.
    pub fn validate(&self) -> Result<(), EvalError> {
        if self.datasets.is_empty() {
            return Err(EvalError::option(
                "--transfer-data",
                "protocol transfer-linear needs --transfer-data DIR (an image folder with train/<class>/<image>, test/<class>/<image> and optionally val/)",
            ));
        }
        if self.weight_decays.is_empty() {
            return Err(EvalError::option(
                "--transfer-weight-decays",
                "--transfer-weight-decays is empty; give e.g. 1e-6,1e-5,1e-4,1e-3,1e-2,1e-1",
            ));
        }
        for &wd in &self.weight_decays {
            if !(wd > 0.0 && wd.is_finite()) {
                return Err(EvalError::option(
                    "--transfer-weight-decays",
                    format!("--transfer-weight-decays {wd}: every weight decay must be a finite number > 0"),
                ));
            }
        }
        if !(self.val_fraction > 0.0 && self.val_fraction <= 0.5) {
            return Err(EvalError::option(
                "--transfer-val-fraction",
                format!(
                    "--transfer-val-fraction {}: must be in (0, 0.5] (the part of each train/ class held out for validation when there is no val/)",
                    self.val_fraction
                ),
            ));
        }
        if self.lbfgs.max_iter == 0 {
            return Err(EvalError::option("--transfer-max-iter", "--transfer-max-iter 0: must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_bad_option() {
        let ok = TransferLinearSettings { datasets: vec!["x".into()], ..Default::default() };
        assert!(ok.validate().is_ok());
        let e = |s: TransferLinearSettings| s.validate().unwrap_err().to_string();
        assert!(e(TransferLinearSettings::default()).contains("--transfer-data DIR"));
        assert!(e(TransferLinearSettings { weight_decays: vec![1e-3, 0.0], ..ok.clone() })
            .contains("--transfer-weight-decays 0"));
        assert!(e(TransferLinearSettings { weight_decays: vec![], ..ok.clone() }).contains("is empty"));
        assert!(e(TransferLinearSettings { val_fraction: 0.7, ..ok.clone() }).contains("--transfer-val-fraction 0.7"));
        let no_iter = TransferLinearSettings { lbfgs: Lbfgs { max_iter: 0, ..Lbfgs::default() }, ..ok };
        assert!(e(no_iter).contains("--transfer-max-iter"));
    }
}
