//! Semi-supervised evaluation (protocol `semi`): fine-tune the WHOLE sub-network at one width
//! (its backbone slice, its switchable BN, and a new linear classifier) on a class-balanced
//! fraction of the labelled training images, then measure top-1 on the test shards.
//!
//! # Recipe and its sources
//! The common SSL semi-supervised protocol of SimCLR (Chen et al. 2020, arXiv 2002.05709,
//! §6 / App. B.5) and BYOL (Grill et al. 2020, arXiv 2006.07733, App. C.2): initialise from the
//! pretrained representation, put a linear classifier on top, fine-tune everything with SGD and
//! Nesterov momentum (0.9) on the labelled subset with light augmentation only (random resized
//! crop + horizontal flip), then evaluate on the test set; the label subsets are class-balanced
//! 1% and 10% of the training labels (the public ImageNet lists). As in the semi-supervised
//! evaluations of SwAV (Caron et al. 2020) and Barlow Twins (Zbontar et al. 2021), the backbone
//! gets a small learning rate and the new head a larger one, both decayed with a cosine
//! schedule (per step, to 0, no warm-up). Our own choices, sized for CPU: the defaults of
//! [`SemiSettings`] (no sweep), no weight decay by default, and a zero-initialised head (as
//! BiT, Kolesnikov et al. 2020), which makes the first step's loss exactly `ln(classes)`.
//!
//! The width's switchable BN runs in train mode (batch statistics, running statistics updated)
//! during fine-tuning and in eval mode (the running statistics fine-tuning left) for the test.
//! Only the chosen width's slice and BN receive gradients; the network is a fresh copy for every
//! (init, width, subset), so runs never see each other's updates.
//!
//! # Data path
//! Two passes of the evaluation loader over the training shards: the first collects every
//! labelled sample's key and label (images decoded and dropped), the subsets are chosen, the
//! second keeps the chosen images' un-augmented evaluation views (`augment.eval_resize` →
//! centre crop `image_size`, normalised) in memory, `[N, C, S, S]` f32 (4·C·S² bytes each:
//! 12 KiB at 32 px; 590 KiB at 224 px, so ImageNet 1% holds ~7.5 GB). The augmentation (random
//! resized crop, antialiased bilinear, + flip) is applied to those views as tensors; for small
//! images (`eval_resize == image_size`) the view is the whole image, as torchvision's recipe.

pub mod finetune;
pub mod protocol;
pub mod subsets;

use crate::error::EvalError;
use std::path::{Path, PathBuf};

pub use finetune::{augment_batch, fine_tune, predict, test_top1, FineTuneStats, Head, NesterovSgd};
pub use protocol::SemiSupervised;
pub use subsets::{
    balanced_subset, gather_views, per_class_count, read_subset_file, scan_pool, LabelledPool, SubsetFile,
};

/// Aspect-ratio range (w/h) of the random resized crop (torchvision's default, 3/4 to 4/3).
pub const CROP_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// Settings of the `semi` protocol (`dspnet-eval --semi-*`, `--label-fractions`,
/// `--subset-seed`, `--subset-file`). Every field is recorded in each result's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SemiSettings {
    /// Label fractions in (0, 1] for class-balanced subsets drawn with `subset_seed`
    /// (protocol names `semi-1%`, `semi-10%`, ...). Default 0.01 and 0.1.
    pub label_fractions: Vec<f64>,
    /// Subset files, one sample key per line (protocol name `semi-<file stem>`), run after the
    /// fractions. See [`read_subset_file`] for how lines match keys.
    pub subset_files: Vec<PathBuf>,
    /// Seed of the class-balanced draw ([`balanced_subset`]).
    pub subset_seed: u64,
    /// Passes over the labelled subset (default 10).
    pub epochs: usize,
    /// Images per step (default 64; a subset smaller than this trains on whole-subset batches).
    pub batch: usize,
    /// Peak learning rate of the backbone (default 0.01), used as given (not scaled by batch).
    pub backbone_lr: f64,
    /// Peak learning rate of the new linear head (default 0.1).
    pub head_lr: f64,
    /// Nesterov momentum (default 0.9).
    pub momentum: f64,
    /// L2 weight decay on conv and linear weights (rank > 1), not on BN parameters or biases
    /// (default 0).
    pub weight_decay: f64,
    /// Smallest area fraction of the random resized crop (default 0.08, the Inception crop).
    pub crop_scale_min: f64,
}

impl Default for SemiSettings {
    fn default() -> Self {
        SemiSettings {
            label_fractions: vec![0.01, 0.1],
            subset_files: Vec::new(),
            subset_seed: 0,
            epochs: 10,
            batch: 64,
            backbone_lr: 0.01,
            head_lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            crop_scale_min: 0.08,
        }
    }
}

impl SemiSettings {
    /// Checks every field. Errors: [`EvalError::Config`] naming the `dspnet-eval` option.
    pub fn validate(&self) -> Result<(), EvalError> {
        let bad = |opt: &str, v: String, why: &str| Err(EvalError::option(opt, format!("{opt} {v}: {why}")));
        for &f in &self.label_fractions {
            if !(f > 0.0 && f <= 1.0) {
                return bad("--label-fractions", f.to_string(), "a label fraction must be in (0, 1], e.g. 0.01,0.1");
            }
        }
        if self.label_fractions.is_empty() && self.subset_files.is_empty() {
            return Err(EvalError::option(
                "--label-fractions",
                "protocol semi needs --label-fractions (e.g. 0.01,0.1) or --subset-file FILE",
            ));
        }
        for f in &self.subset_files {
            if !f.is_file() {
                return bad("--subset-file", f.display().to_string(), "no such file (one sample key per line)");
            }
        }
        if self.epochs == 0 {
            return bad("--semi-epochs", "0".into(), "must be at least 1");
        }
        if self.batch < 2 {
            return bad("--semi-batch", self.batch.to_string(), "must be at least 2 (BN in train mode needs 2 images)");
        }
        for (v, opt) in [(self.backbone_lr, "--semi-lr"), (self.head_lr, "--semi-head-lr")] {
            if !(v > 0.0 && v.is_finite()) {
                return bad(opt, v.to_string(), "must be a finite learning rate > 0");
            }
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("--semi-momentum", self.momentum.to_string(), "must be in [0, 1)");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("--semi-weight-decay", self.weight_decay.to_string(), "must be a finite value >= 0");
        }
        if !(self.crop_scale_min > 0.0 && self.crop_scale_min <= 1.0) {
            return bad("--semi-crop-scale", self.crop_scale_min.to_string(), "must be in (0, 1]");
        }
        Ok(())
    }
}

/// Protocol name of a label fraction: `semi-` + the percentage with at most 6 decimals and no
/// trailing zeros + `%` (0.01 → `semi-1%`, 0.1 → `semi-10%`, 0.005 → `semi-0.5%`).
pub fn fraction_protocol(fraction: f64) -> String {
    let p = format!("{:.6}", fraction * 100.0);
    let p = p.trim_end_matches('0').trim_end_matches('.');
    format!("semi-{p}%")
}

/// Protocol name of a subset file: `semi-` + the file stem (`1percent.txt` → `semi-1percent`).
pub fn file_protocol(path: &Path) -> String {
    format!("semi-{}", path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "file".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names() {
        assert_eq!(fraction_protocol(0.01), "semi-1%");
        assert_eq!(fraction_protocol(0.1), "semi-10%");
        assert_eq!(fraction_protocol(1.0), "semi-100%");
        assert_eq!(fraction_protocol(0.005), "semi-0.5%");
        assert_eq!(file_protocol(Path::new("/x/1percent.txt")), "semi-1percent");
    }
}
