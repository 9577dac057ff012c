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

use crate::dspnet::ComputeFormat;
use crate::error::TrainerError;
use dspnet_model::resnet::SlimResNet;
use dspnet_pipeline::augment::random_resized_crop_box;
use dspnet_pipeline::loader::Loader;
use dspnet_pipeline::mix_seed;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

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
    /// Checks every field. Errors: [`TrainerError::Config`] naming the `dspnet-eval` option.
    pub fn validate(&self) -> Result<(), TrainerError> {
        let bad = |opt: &str, v: String, why: &str| Err(TrainerError::Config(format!("{opt} {v}: {why}")));
        for &f in &self.label_fractions {
            if !(f > 0.0 && f <= 1.0) {
                return bad("--label-fractions", f.to_string(), "a label fraction must be in (0, 1], e.g. 0.01,0.1");
            }
        }
        if self.label_fractions.is_empty() && self.subset_files.is_empty() {
            return Err(TrainerError::Config(
                "protocol semi needs --label-fractions (e.g. 0.01,0.1) or --subset-file FILE".into(),
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

/// Images kept per class for a label fraction: `floor(fraction · n_c)`, at least 1, at most
/// `n_c`. The floor is taken of `fraction · n_c + 1e-9` so binary rounding cannot lose an image
/// (0.29 · 100 is 28.999999999999996 in f64; the count is 29).
pub fn per_class_count(n_c: usize, fraction: f64) -> usize {
    ((fraction * n_c as f64 + 1e-9).floor() as usize).clamp(1, n_c.max(1))
}

/// Class-balanced subset of a labelled pool: indices (ascending) into `keys`/`labels`.
///
/// For every class `c` with `n_c` samples, [`per_class_count`]`(n_c, fraction)` samples are
/// drawn: the class's samples are sorted by key (so the draw does not depend on shard order),
/// shuffled with `ChaCha8Rng(mix_seed([seed, c]))` and the first ones kept. Because the per-class
/// order depends on the seed and the class only, for one seed the subset of a smaller fraction
/// is contained in the subset of a larger one (the 1% subset lies within the 10% subset).
///
/// Errors: [`TrainerError::Config`] for a fraction outside (0, 1] or `keys`/`labels` of different
/// lengths.
pub fn balanced_subset(keys: &[String], labels: &[i64], fraction: f64, seed: u64) -> Result<Vec<usize>, TrainerError> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(TrainerError::Config(format!("--label-fractions {fraction}: a label fraction must be in (0, 1]")));
    }
    if keys.len() != labels.len() {
        return Err(TrainerError::Config(format!("{} keys but {} labels", keys.len(), labels.len())));
    }
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &c) in labels.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut out = Vec::new();
    for (c, mut idx) in by_class {
        idx.sort_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(&[seed, c as u64])));
        let k = per_class_count(idx.len(), fraction);
        out.extend_from_slice(&idx[..k]);
    }
    out.sort_unstable();
    Ok(out)
}

/// A subset read from a file by [`read_subset_file`].
#[derive(Clone, Debug, PartialEq)]
pub struct SubsetFile {
    /// Indices (ascending) into the pool's keys.
    pub indices: Vec<usize>,
    /// sha256 of the file's bytes, lowercase hex.
    pub sha256: String,
}

fn strip_image_ext(s: &str) -> &str {
    match s.rsplit_once('.') {
        Some((stem, ext)) if ["jpg", "jpeg", "png", "webp"].contains(&ext.to_ascii_lowercase().as_str()) => stem,
        _ => s,
    }
}

/// Reads a subset file (one sample key per line, like the public ImageNet 1%/10% lists; blank
/// lines and lines starting with `#` ignored, repeated lines counted once) against the keys of the
/// labelled training pool.
///
/// A line matches, in this order: a key exactly; the key it becomes without an image extension
/// (`.jpg`, `.jpeg`, `.png`, `.webp`, any case) and sanitised as `dspnet-shard` does (characters
/// other than ASCII letters, digits, `_`, `-` become `_`); or the ONE key ending in `_` + that
/// (dspnet-shard names ImageFolder samples `{class}_{stem}`, so the ImageNet list's
/// `n01440764_10026.JPEG` finds `n01440764_n01440764_10026`). Several pool samples with the same
/// key are all taken.
///
/// Errors: [`TrainerError::Io`] when the file cannot be read; [`TrainerError::Config`] naming the
/// file, line and key for a key that is not in the pool, a suffix that matches several keys, or
/// a file without any key.
pub fn read_subset_file(path: &Path, keys: &[String]) -> Result<SubsetFile, TrainerError> {
    let bytes = std::fs::read(path).map_err(|e| TrainerError::io(path, e))?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let text = String::from_utf8_lossy(&bytes);
    let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        exact.entry(k.as_str()).or_default().push(i);
    }
    let mut suffix: Option<HashMap<&str, Vec<&str>>> = None;
    let mut chosen: HashSet<usize> = HashSet::new();
    let mut lines = 0usize;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        lines += 1;
        let plain = dspnet_pipeline::dataset::sanitize_key(strip_image_ext(line));
        let hit = if let Some(v) = exact.get(line) {
            v.clone()
        } else if let Some(v) = exact.get(plain.as_str()) {
            v.clone()
        } else {
            let map = suffix.get_or_insert_with(|| {
                let mut m: HashMap<&str, Vec<&str>> = HashMap::new();
                for &k in exact.keys() {
                    for (p, _) in k.match_indices('_') {
                        m.entry(&k[p + 1..]).or_default().push(k);
                    }
                }
                m
            });
            match map.get(plain.as_str()).map(Vec::as_slice) {
                Some([k]) => exact[k].clone(),
                Some(many) => {
                    let mut many = many.to_vec();
                    many.sort_unstable();
                    return Err(TrainerError::Config(format!(
                        "--subset-file {}: line {}: key {line} matches several training samples ({}); write the full key",
                        path.display(),
                        n + 1,
                        many.iter().take(3).copied().collect::<Vec<_>>().join(", ")
                    )));
                }
                None => {
                    return Err(TrainerError::Config(format!(
                        "--subset-file {}: line {}: key {line} is not a labelled sample of the training shards (their keys look like {})",
                        path.display(),
                        n + 1,
                        keys.first().map(String::as_str).unwrap_or("<none>")
                    )))
                }
            }
        };
        chosen.extend(hit);
    }
    if lines == 0 {
        return Err(TrainerError::Config(format!(
            "--subset-file {}: no key in the file (one sample key per line)",
            path.display()
        )));
    }
    let mut indices: Vec<usize> = chosen.into_iter().collect();
    indices.sort_unstable();
    Ok(SubsetFile { indices, sha256 })
}

/// Keys and labels of every labelled sample the evaluation loader delivers, in its order.
pub struct LabelledPool {
    pub keys: Vec<String>,
    /// Class indices, `>= 0`.
    pub labels: Vec<i64>,
}

/// First pass: the keys and labels of every labelled training sample (images are decoded by the
/// loader and dropped). Errors: loader errors; no labelled sample.
pub fn scan_pool(loader: &Loader) -> Result<LabelledPool, TrainerError> {
    let mut keys = Vec::new();
    let mut labels = Vec::new();
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let l: Vec<i64> = Vec::<i64>::try_from(batch.labels.to_device(Device::Cpu))?;
        keys.extend(batch.keys);
        labels.extend(l);
    }
    if keys.is_empty() {
        return Err(TrainerError::Config("the training shards gave no labelled image for protocol semi".into()));
    }
    Ok(LabelledPool { keys, labels })
}

/// Second pass: the un-augmented evaluation views of the pool samples at `wanted` (ascending,
/// positions of [`scan_pool`]'s order) as `[wanted.len(), C, S, S]` f32 on the CPU, rows in the
/// order of `wanted`. Errors: loader errors, or shards that changed between the passes (a key
/// at a wanted position differs from the first pass).
pub fn gather_views(loader: &Loader, pool: &LabelledPool, wanted: &[usize]) -> Result<Tensor, TrainerError> {
    let mut rows = Vec::with_capacity(wanted.len());
    let mut next = 0usize;
    let mut pos = 0usize;
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let n = batch.keys.len();
        let mut take = Vec::new();
        while next < wanted.len() && wanted[next] < pos + n {
            let i = wanted[next] - pos;
            if pool.keys.get(wanted[next]) != Some(&batch.keys[i]) {
                return Err(TrainerError::Config(format!(
                    "the training shards changed while reading them (sample {} was {:?}, now {})",
                    wanted[next],
                    pool.keys.get(wanted[next]),
                    batch.keys[i]
                )));
            }
            take.push(i as i64);
            next += 1;
        }
        if !take.is_empty() {
            rows.push(batch.view_a.to_device(Device::Cpu).index_select(0, &Tensor::from_slice(&take)));
        }
        pos += n;
        if next == wanted.len() {
            break;
        }
    }
    if next < wanted.len() {
        return Err(TrainerError::Config(
            "the training shards changed while reading them (fewer samples than before)".into(),
        ));
    }
    Ok(Tensor::cat(&rows, 0))
}

/// Light augmentation of a batch of views `[B, C, H, W]` (any float kind, returned in the same
/// kind and device): per image, a random resized crop (torchvision's parameters:
/// [`random_resized_crop_box`] with area fraction `(scale_min, 1)` and ratio [`CROP_RATIO`])
/// resized back to `H × W` with antialiased bilinear interpolation, then a horizontal flip with
/// probability 0.5. Random draws come from `rng` in image order (crop, then flip).
pub fn augment_batch(views: &Tensor, scale_min: f64, rng: &mut ChaCha8Rng) -> Result<Tensor, TrainerError> {
    let (b, h, w) = (views.size()[0], views.size()[2], views.size()[3]);
    let mut out = Vec::with_capacity(b as usize);
    tch::no_grad(|| -> Result<(), TrainerError> {
        for i in 0..b {
            let img = views.get(i);
            let c = random_resized_crop_box(
                w as u32,
                h as u32,
                (scale_min as f32, 1.0),
                (CROP_RATIO.0 as f32, CROP_RATIO.1 as f32),
                rng,
            );
            let crop =
                img.narrow(1, c.top as i64, c.height as i64).narrow(2, c.left as i64, c.width as i64).unsqueeze(0);
            let mut v = if (c.width as i64, c.height as i64) == (w, h) {
                crop
            } else {
                crop.to_kind(Kind::Float)
                    .f_internal_upsample_bilinear2d_aa([h, w], false, None, None)?
                    .to_kind(views.kind())
            };
            if rng.gen_bool(0.5) {
                v = v.flip([3]);
            }
            out.push(v);
        }
        Ok(())
    })?;
    Ok(Tensor::cat(&out, 0))
}

/// SGD with Nesterov momentum, PyTorch's formulation (`torch.optim.SGD(nesterov=True)`), with
/// one peak learning rate per parameter group:
/// `g ← ∇ + wd·w` (weights of rank > 1 only), `v ← m·v + g`, `w ← w − lr·(g + m·v)`.
/// A parameter without a gradient (another width's BN) is left untouched.
pub struct NesterovSgd {
    params: Vec<(Tensor, Tensor, f64)>,
    momentum: f64,
    weight_decay: f64,
}

impl NesterovSgd {
    /// `groups`: (peak learning rate, parameters).
    pub fn new(groups: Vec<(f64, Vec<Tensor>)>, momentum: f64, weight_decay: f64) -> Self {
        let params = groups
            .into_iter()
            .flat_map(|(lr, ps)| ps.into_iter().map(move |p| (p.zeros_like(), p, lr)))
            .map(|(v, p, lr)| (p, v, lr))
            .collect();
        NesterovSgd { params, momentum, weight_decay }
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for (p, _, _) in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update with each group's peak learning rate times `factor` (the schedule's value).
    pub fn step(&mut self, factor: f64) {
        let (m, wd) = (self.momentum, self.weight_decay);
        tch::no_grad(|| {
            for (p, v, lr) in &mut self.params {
                let grad = p.grad();
                if !grad.defined() {
                    continue;
                }
                let g = if wd > 0.0 && p.dim() > 1 { &grad + &*p * wd } else { grad };
                let _ = v.g_mul_scalar_(m).g_add_(&g);
                let update = &g + &*v * m;
                let _ = p.g_add_(&(update * (-*lr * factor)));
            }
        });
    }
}

/// Cosine decay factor at step `step` of `total` (1 at step 0, towards 0 at the end; no warm-up).
pub fn cosine_factor(step: usize, total: usize) -> f64 {
    0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total.max(1) as f64).cos())
}

/// The classifier put on the backbone: a linear layer `[D] → [classes]`, zero-initialised.
pub struct Head {
    pub vs: nn::VarStore,
    pub linear: nn::Linear,
}

impl Head {
    /// Zero weights and bias on `device`: the first logits are all 0, the first loss `ln(classes)`.
    pub fn zeros(dim: i64, classes: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let cfg = nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true };
        let linear = nn::linear(vs.root() / "fc", dim, classes, cfg);
        Head { vs, linear }
    }
}

/// What one fine-tuning run did.
#[derive(Clone, Debug)]
pub struct FineTuneStats {
    /// Cross-entropy of the first step (nats; `ln(classes)` with the zero head).
    pub first_loss: f64,
    /// Mean cross-entropy per epoch (nats), on the augmented batches in train mode.
    pub epoch_losses: Vec<f64>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
}

/// Fine-tunes `backbone` at `width` together with `head` on `views` `[N, C, S, S]` f32 (CPU,
/// un-augmented evaluation views) with `labels` `[N]` i64: `settings.epochs` epochs of
/// `floor(N / batch)` steps (at least 1; batch = min(settings.batch, N)), a fresh shuffle and
/// fresh augmentations ([`augment_batch`]) per epoch from `ChaCha8Rng(mix_seed([seed, epoch]))`,
/// the width's BN in train mode, cross-entropy, [`NesterovSgd`] over `backbone_params` (peak
/// `backbone_lr`) and the head (peak `head_lr`), [`cosine_factor`] per step.
///
/// Images go through the network in the precision of `format` but always in contiguous NCHW
/// layout, whatever `format.channels_last` says: libtorch 2.13's CPU (oneDNN) backward of the
/// 1×1 stride-2 downsampling convolution corrupts the heap on channels-last inputs with few
/// channels and an odd batch (reproduced in plain PyTorch: `conv2d` 4→8 channels, 1×1, stride 2,
/// 32 px, batch 3, 9 or 17, channels-last, `.backward()` aborts with "double free or
/// corruption"), and a subset can make any batch size.
///
/// Errors: fewer than 2 images; a non-finite loss (names width and step); model errors.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune(
    backbone: &SlimResNet,
    backbone_params: Vec<Tensor>,
    head: &Head,
    width: f64,
    views: &Tensor,
    labels: &Tensor,
    settings: &SemiSettings,
    seed: u64,
    format: ComputeFormat,
) -> Result<FineTuneStats, TrainerError> {
    let n = views.size()[0] as usize;
    if n < 2 {
        return Err(TrainerError::Config(format!(
            "protocol semi needs at least 2 labelled images, the subset has {n}"
        )));
    }
    let device = head.vs.device();
    let format = ComputeFormat { channels_last: false, ..format };
    let batch = settings.batch.min(n);
    let steps_per_epoch = (n / batch).max(1);
    let total = settings.epochs * steps_per_epoch;
    let mut opt = NesterovSgd::new(
        vec![(settings.backbone_lr, backbone_params), (settings.head_lr, head.vs.trainable_variables())],
        settings.momentum,
        settings.weight_decay,
    );
    let mut stats = FineTuneStats { first_loss: f64::NAN, epoch_losses: Vec::new(), steps: 0, batch };
    for epoch in 0..settings.epochs {
        let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[seed, epoch as u64]));
        let mut perm: Vec<i64> = (0..n as i64).collect();
        perm.shuffle(&mut rng);
        let mut sum = 0.0;
        for s in 0..steps_per_epoch {
            let idx = Tensor::from_slice(&perm[s * batch..(s + 1) * batch]);
            let x = augment_batch(&views.index_select(0, &idx), settings.crop_scale_min, &mut rng)?;
            let x = format.apply(&x.to_device(device));
            let y = labels.index_select(0, &idx).to_device(device);
            let f = format.run_backbone(device, || backbone.forward_t(&x, width, true))??.to_kind(Kind::Float);
            let loss = head.linear.forward(&f).cross_entropy_for_logits(&y);
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(TrainerError::NonFinite(format!(
                    "protocol semi: non-finite loss ({value}) at width {width} in fine-tuning step {}; lower --semi-lr / --semi-head-lr",
                    stats.steps + 1
                )));
            }
            if stats.steps == 0 {
                stats.first_loss = value;
            }
            opt.zero_grad();
            loss.backward();
            opt.step(cosine_factor(stats.steps, total));
            stats.steps += 1;
            sum += value;
        }
        stats.epoch_losses.push(sum / steps_per_epoch as f64);
    }
    Ok(stats)
}

/// Predicted classes `[N]` i64 (CPU) of `views` `[N, C, S, S]` with the width's BN in eval mode,
/// in chunks of `chunk` images, without gradients.
pub fn predict(
    backbone: &SlimResNet,
    head: &Head,
    width: f64,
    views: &Tensor,
    chunk: i64,
    format: ComputeFormat,
) -> Result<Tensor, TrainerError> {
    let device = head.vs.device();
    let n = views.size()[0];
    let mut out = Vec::new();
    let mut s = 0;
    while s < n {
        let len = chunk.max(1).min(n - s);
        let x = format.apply(&views.narrow(0, s, len).to_device(device));
        let p = tch::no_grad(|| -> Result<Tensor, TrainerError> {
            let f = format.run_backbone(device, || backbone.forward_t(&x, width, false))??.to_kind(Kind::Float);
            Ok(head.linear.forward(&f).argmax(1, false))
        })?;
        out.push(p.to_device(Device::Cpu));
        s += len;
    }
    Ok(Tensor::cat(&out, 0))
}

/// Top-1 in percent and image count of the fine-tuned network on every labelled test image the
/// loader delivers (eval-mode BN). Errors: loader or model errors; no labelled test image.
pub fn test_top1(
    backbone: &SlimResNet,
    head: &Head,
    width: f64,
    loader: &Loader,
    format: ComputeFormat,
) -> Result<(f64, i64), TrainerError> {
    let (mut correct, mut total) = (0i64, 0i64);
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let n = batch.labels.size()[0];
        let pred = predict(backbone, head, width, &batch.view_a, n, format)?;
        correct += pred.eq_tensor(&batch.labels.to_device(Device::Cpu)).sum(Kind::Int64).int64_value(&[]);
        total += n;
    }
    if total == 0 {
        return Err(TrainerError::Config("the test shards gave no labelled image".into()));
    }
    Ok((100.0 * correct as f64 / total as f64, total))
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

    fn pool(sizes: &[usize]) -> (Vec<String>, Vec<i64>) {
        // class c has sizes[c] samples with keys "c{c}_{i:03}", interleaved like a shard would be
        let mut keys = Vec::new();
        let mut labels = Vec::new();
        let max = *sizes.iter().max().unwrap();
        for i in 0..max {
            for (c, &n) in sizes.iter().enumerate() {
                if i < n {
                    keys.push(format!("c{c}_{i:03}"));
                    labels.push(c as i64);
                }
            }
        }
        (keys, labels)
    }

    fn counts(labels: &[i64], idx: &[usize], classes: usize) -> Vec<usize> {
        let mut n = vec![0; classes];
        for &i in idx {
            n[labels[i] as usize] += 1;
        }
        n
    }

    #[test]
    fn per_class_counts_by_hand() {
        // floor(f·n), at least 1, at most n; 0.29·100 must give 29 despite binary rounding
        assert_eq!(per_class_count(100, 0.29), 29);
        assert_eq!(per_class_count(5000, 0.01), 50);
        assert_eq!(per_class_count(5000, 0.1), 500);
        assert_eq!(per_class_count(1300, 0.01), 13);
        assert_eq!(per_class_count(99, 0.1), 9);
        assert_eq!(per_class_count(7, 0.01), 1);
        assert_eq!(per_class_count(3, 1.0), 3);
    }

    #[test]
    fn balanced_subset_counts_by_hand() {
        // class sizes 10, 25, 3, 40
        let (keys, labels) = pool(&[10, 25, 3, 40]);
        // 10%: floor(1.0)=1, floor(2.5)=2, floor(0.3)=0→1, floor(4.0)=4 → 8 images
        let s = balanced_subset(&keys, &labels, 0.1, 7).unwrap();
        assert_eq!(counts(&labels, &s, 4), vec![1, 2, 1, 4]);
        assert_eq!(s.len(), 8);
        // 50%: 5, 12, 1, 20
        let s = balanced_subset(&keys, &labels, 0.5, 7).unwrap();
        assert_eq!(counts(&labels, &s, 4), vec![5, 12, 1, 20]);
        // 100%: everything
        let s = balanced_subset(&keys, &labels, 1.0, 7).unwrap();
        assert_eq!(s, (0..78).collect::<Vec<_>>());
        // ascending, no repeats
        let s = balanced_subset(&keys, &labels, 0.3, 1).unwrap();
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(counts(&labels, &s, 4), vec![3, 7, 1, 12]);
    }

    #[test]
    fn balanced_subset_is_reproducible_seed_dependent_nested_and_order_free() {
        let (keys, labels) = pool(&[50, 50, 50]);
        let a = balanced_subset(&keys, &labels, 0.1, 3).unwrap();
        assert_eq!(a, balanced_subset(&keys, &labels, 0.1, 3).unwrap());
        let b = balanced_subset(&keys, &labels, 0.1, 4).unwrap();
        assert_ne!(a, b, "different seeds draw different subsets");
        assert_eq!(counts(&labels, &b, 3), vec![5, 5, 5]);
        // the 10% subset of a seed contains its 2% subset
        let small = balanced_subset(&keys, &labels, 0.02, 3).unwrap();
        assert_eq!(counts(&labels, &small, 3), vec![1, 1, 1]);
        assert!(small.iter().all(|i| a.contains(i)), "{small:?} not within {a:?}");
        // the same samples in another order (other sharding) give the same keys
        let rev_keys: Vec<String> = keys.iter().rev().cloned().collect();
        let rev_labels: Vec<i64> = labels.iter().rev().copied().collect();
        let r = balanced_subset(&rev_keys, &rev_labels, 0.1, 3).unwrap();
        let mut ka: Vec<&String> = a.iter().map(|&i| &keys[i]).collect();
        let mut kr: Vec<&String> = r.iter().map(|&i| &rev_keys[i]).collect();
        ka.sort();
        kr.sort();
        assert_eq!(ka, kr);
        assert!(balanced_subset(&keys, &labels, 0.0, 3).is_err());
        assert!(balanced_subset(&keys, &labels, 1.5, 3).is_err());
    }

    #[test]
    fn subset_file_matches_keys_and_names_unknown_ones() {
        let keys: Vec<String> = ["airplane_0000", "airplane_0001", "n01440764_n01440764_10026", "cat_0001", "dog_0001"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("list.txt");
        // exact, extension + sanitising, ImageNet-style suffix, a comment, a blank line, a repeat
        std::fs::write(&f, "# my subset\nairplane_0000\n\nairplane_0001.jpg\nn01440764_10026.JPEG\nairplane_0000\n")
            .unwrap();
        let s = read_subset_file(&f, &keys).unwrap();
        assert_eq!(s.indices, vec![0, 1, 2]);
        // sha256 of the bytes, computed independently
        let expect = format!("{:x}", Sha256::digest(std::fs::read(&f).unwrap()));
        assert_eq!(s.sha256, expect);
        assert_eq!(s.sha256.len(), 64);
        std::fs::write(&f, "airplane_0000\nairplane_0002\n").unwrap();
        let e = read_subset_file(&f, &keys).unwrap_err().to_string();
        assert!(
            e.contains("list.txt") && e.contains("line 2") && e.contains("airplane_0002") && !e.contains('\n'),
            "{e}"
        );
        // "0001" ends several keys: ambiguous
        std::fs::write(&f, "0001\n").unwrap();
        let e = read_subset_file(&f, &keys).unwrap_err().to_string();
        assert!(e.contains("several"), "{e}");
        std::fs::write(&f, "\n# nothing\n").unwrap();
        assert!(read_subset_file(&f, &keys).is_err());
    }

    #[test]
    fn protocol_names() {
        assert_eq!(fraction_protocol(0.01), "semi-1%");
        assert_eq!(fraction_protocol(0.1), "semi-10%");
        assert_eq!(fraction_protocol(1.0), "semi-100%");
        assert_eq!(fraction_protocol(0.005), "semi-0.5%");
        assert_eq!(file_protocol(Path::new("/x/1percent.txt")), "semi-1percent");
    }

    #[test]
    fn nesterov_two_steps_by_hand() {
        // w = [[1, 2]], loss = sum(w²) → ∇ = 2w; m = 0.9, wd = 0.5, lr = 0.1, factor 1.
        let w = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]).set_requires_grad(true);
        let mut opt = NesterovSgd::new(vec![(0.1, vec![w.shallow_clone()])], 0.9, 0.5);
        // step 1: g = 2w + 0.5w = [2.5, 5]; v = g; update = g + 0.9 v = 1.9 g = [4.75, 9.5];
        // w = [1 − 0.475, 2 − 0.95] = [0.525, 1.05]
        w.square().sum(Kind::Float).backward();
        opt.step(1.0);
        opt.zero_grad();
        let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        assert!((got[0] - 0.525).abs() < 1e-6 && (got[1] - 1.05).abs() < 1e-6, "{got:?}");
        // step 2 at factor 0.5: g = 2.5 w = [1.3125, 2.625]; v = 0.9·[2.5, 5] + g = [3.5625, 7.125];
        // update = g + 0.9 v = [4.51875, 9.0375]; w −= 0.05·update = [0.2990625, 0.598125]
        w.square().sum(Kind::Float).backward();
        opt.step(0.5);
        let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        assert!((got[0] - 0.2990625).abs() < 1e-6 && (got[1] - 0.598125).abs() < 1e-6, "{got:?}");
        // a parameter without gradient stays put
        let b = Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let mut opt = NesterovSgd::new(vec![(1.0, vec![b.shallow_clone()])], 0.9, 0.5);
        opt.step(1.0);
        assert_eq!(b.double_value(&[0]), 3.0);
    }

    #[test]
    fn cosine_factor_by_hand() {
        assert_eq!(cosine_factor(0, 10), 1.0);
        assert!((cosine_factor(5, 10) - 0.5).abs() < 1e-12);
        assert!(cosine_factor(10, 10).abs() < 1e-12);
    }

    #[test]
    fn augmentation_keeps_shape_and_flip_mirrors() {
        // scale_min = 1 with a square image: the crop is the whole image (area 1, ratio 1 is the
        // only fit... or the fallback whole-image crop), so the output is the input or its mirror.
        let x = Tensor::arange(2 * 3 * 8 * 8, (Kind::Float, Device::Cpu)).view([2, 3, 8, 8]);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut flips = 0;
        for _ in 0..20 {
            let y = augment_batch(&x, 1.0, &mut rng).unwrap();
            assert_eq!(y.size(), vec![2, 3, 8, 8]);
            for i in 0..2 {
                let (xi, yi) = (x.get(i), y.get(i));
                if yi.equal(&xi) {
                    continue;
                }
                assert!(yi.equal(&xi.flip([2])), "neither identity nor mirror");
                flips += 1;
            }
        }
        assert!((10..=30).contains(&flips), "{flips} flips of 40");
        // a small crop is resized back to 8×8 and stays within the input's value range
        let y = augment_batch(&x, 0.08, &mut rng).unwrap();
        assert_eq!(y.size(), vec![2, 3, 8, 8]);
        assert!(y.min().double_value(&[]) >= -1e-3 && y.max().double_value(&[]) <= 383.0 + 1e-3);
    }

    #[test]
    fn fine_tuning_learns_a_separable_set_from_ln2() {
        // Two classes of 28×28 grey images: bright (+1.5) and dark (−1.5) plus N(0, 0.5) noise:
        // separable by mean intensity, which crop and flip keep. The zero head makes the first
        // loss exactly ln 2 = 0.6931 nats (chance); training must bring the epoch loss below half
        // of that and classify every training image (eval-mode BN) correctly.
        let text = include_str!("../../configs/cpu-fashion-mnist.toml");
        let mut cfg = crate::config::RunConfig::from_toml_str(text, "cpu-fashion-mnist.toml").unwrap();
        cfg.model.base_channels = 4;
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let backbone = SlimResNet::new(&(vs.root() / "backbone"), &cfg.model).unwrap();
        let n = 16;
        let noise = Tensor::randn([2 * n, 1, 28, 28], (Kind::Float, Device::Cpu)) * 0.5;
        let sign = Tensor::cat(
            &[Tensor::ones([n], (Kind::Float, Device::Cpu)), Tensor::ones([n], (Kind::Float, Device::Cpu)) * -1.0],
            0,
        );
        let views = noise + sign.view([2 * n, 1, 1, 1]) * 1.5;
        let labels = Tensor::cat(
            &[Tensor::zeros([n], (Kind::Int64, Device::Cpu)), Tensor::ones([n], (Kind::Int64, Device::Cpu))],
            0,
        );
        let settings = SemiSettings { epochs: 8, batch: 16, backbone_lr: 0.05, head_lr: 0.5, ..Default::default() };
        let format = ComputeFormat { kind: Kind::Float, channels_last: false, autocast: false };
        let w = 0.5;
        let head = Head::zeros(backbone.feature_dim(w), 2, Device::Cpu);
        let stats =
            fine_tune(&backbone, vs.trainable_variables(), &head, w, &views, &labels, &settings, 1, format).unwrap();
        assert!((stats.first_loss - 2f64.ln()).abs() < 1e-5, "first loss {}", stats.first_loss);
        assert_eq!(stats.steps, 16);
        assert_eq!(stats.epoch_losses.len(), 8);
        let last = *stats.epoch_losses.last().unwrap();
        assert!(last < 0.5 * 2f64.ln(), "losses {:?}", stats.epoch_losses);
        let pred = predict(&backbone, &head, w, &views, 8, format).unwrap();
        let acc = pred.eq_tensor(&labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert_eq!(acc, 1.0, "losses {:?}", stats.epoch_losses);
    }
}
