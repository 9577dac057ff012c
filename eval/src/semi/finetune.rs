//! Fine-tuning one width of a backbone with a new linear head on a labelled subset, and its
//! test accuracy.

use super::{SemiSettings, CROP_RATIO};
use crate::error::EvalError;
use dspnet_core::schedule::warmup_cosine;
use dspnet_model::{ComputeFormat, SlimResNet};
use dspnet_pipeline::augment::random_resized_crop_box;
use dspnet_pipeline::loader::Loader;
use dspnet_pipeline::mix_seed;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Light augmentation of a batch of views `[B, C, H, W]` (any float kind, returned in the same
/// kind and device): per image, a random resized crop (torchvision's parameters:
/// [`random_resized_crop_box`] with area fraction `(scale_min, 1)` and ratio [`CROP_RATIO`])
/// resized back to `H × W` with antialiased bilinear interpolation, then a horizontal flip with
/// probability 0.5. Random draws come from `rng` in image order (crop, then flip).
pub fn augment_batch(views: &Tensor, scale_min: f64, rng: &mut ChaCha8Rng) -> Result<Tensor, EvalError> {
    let (b, h, w) = (views.size()[0], views.size()[2], views.size()[3]);
    let mut out = Vec::with_capacity(b as usize);
    tch::no_grad(|| -> Result<(), EvalError> {
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
/// `backbone_lr`) and the head (peak `head_lr`), `warmup_cosine` without warm-up as a factor per step.
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
) -> Result<FineTuneStats, EvalError> {
    let n = views.size()[0] as usize;
    if n < 2 {
        return Err(EvalError::Subset {
            file: None,
            message: format!("protocol semi needs at least 2 labelled images, the subset has {n}"),
        });
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
                return Err(EvalError::NonFinite { width, step: stats.steps + 1, value });
            }
            if stats.steps == 0 {
                stats.first_loss = value;
            }
            opt.zero_grad();
            loss.backward();
            opt.step(warmup_cosine(stats.steps as u64, total as u64, 0, 1.0));
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
) -> Result<Tensor, EvalError> {
    let device = head.vs.device();
    let n = views.size()[0];
    let mut out = Vec::new();
    let mut s = 0;
    while s < n {
        let len = chunk.max(1).min(n - s);
        let x = format.apply(&views.narrow(0, s, len).to_device(device));
        let p = tch::no_grad(|| -> Result<Tensor, EvalError> {
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
) -> Result<(f64, i64), EvalError> {
    let (mut correct, mut total) = (0i64, 0i64);
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let n = batch.labels.size()[0];
        let pred = predict(backbone, head, width, &batch.view_a, n, format)?;
        correct += pred.eq_tensor(&batch.labels.to_device(Device::Cpu)).sum(Kind::Int64).int64_value(&[]);
        total += n;
    }
    if total == 0 {
        return Err(EvalError::Subset { file: None, message: "the test shards gave no labelled image".into() });
    }
    Ok((100.0 * correct as f64 / total as f64, total))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cfg = dspnet_run::testing::tiny_config(&[0.25, 0.5, 0.75, 1.0]);
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
