//! Evaluation of every width of a slimmable backbone: kNN monitor and linear probe on frozen
//! features, with parameter and FLOP counts, and BN re-calibration for random-init baselines.

use crate::error::TrainerError;
use crate::network::Branch;
use dspnet_pipeline::loader::Loader;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// One evaluation result (one line of `results.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Width multiplier.
    pub width: f64,
    /// Parameters of the standalone sub-network (backbone only).
    pub params: i64,
    /// Multiply-accumulates of one forward pass at the training resolution.
    pub flops: u64,
    /// "knn", "linear", or "semi-<subset>" (e.g. "semi-1%", "semi-10%", "semi-1percent").
    pub protocol: String,
    /// Top-1 accuracy on the test shards, in percent.
    pub top1: f64,
    /// "pretrained" (the run's weights) or "random" (same architecture and seed, random init,
    /// PyTorch-default BN running statistics unless `--calibrate-bn`).
    pub init: String,
    /// Protocol settings (k, temperature, epochs, lr, ...), recorded with every result.
    pub settings: serde_json::Value,
}

/// Frozen features of a whole split at every width: `features[i]` is `[N, D_i]` fp32 (CPU) for
/// `widths[i]`, `labels` is `[N]` i64. Images are decoded once and run through every width, in
/// eval mode (BN running statistics), under `no_grad`.
pub fn extract_features(
    branch: &Branch,
    widths: &[f64],
    loader: &Loader,
    format: crate::dspnet::ComputeFormat,
) -> Result<(Vec<Tensor>, Tensor), TrainerError> {
    let device = branch.vs.device();
    let mut feats: Vec<Vec<Tensor>> = widths.iter().map(|_| Vec::new()).collect();
    let mut labels = Vec::new();
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let x = format.apply(&batch.view_a.to_device(device));
        tch::no_grad(|| -> Result<(), TrainerError> {
            for (i, &w) in widths.iter().enumerate() {
                let f = branch.backbone.forward_t(&x, w, false)?;
                feats[i].push(f.to_kind(Kind::Float).to_device(Device::Cpu));
            }
            Ok(())
        })?;
        labels.push(batch.labels.to_device(Device::Cpu));
    }
    if labels.is_empty() {
        return Err(TrainerError::Config("the evaluation shards gave no labelled image".into()));
    }
    Ok((feats.into_iter().map(|v| Tensor::cat(&v, 0)).collect(), Tensor::cat(&labels, 0)))
}

/// Re-estimates the BN running statistics of every width in `widths` (backbone only) from
/// `batches` batches of `loader`: statistics reset to (0, 1), then forward passes in train mode
/// without gradients, momentum 0.1 (after 50 batches the initial values weigh 0.9^50 ≈ 0.5%).
/// Each batch is decoded once and run through every width. Only BN running statistics change
/// (switchable BN: each width's own), nothing else.
pub fn calibrate_bn(
    branch: &Branch,
    widths: &[f64],
    loader: &Loader,
    batches: usize,
    format: crate::dspnet::ComputeFormat,
) -> Result<(), TrainerError> {
    for &w in widths {
        reset_bn_stats(&branch.vs, "backbone.", w);
    }
    let device = branch.vs.device();
    for (n, batch) in loader.epoch(1_000_000)?.enumerate() {
        if n >= batches {
            break;
        }
        let x = format.apply(&batch?.view_a.to_device(device));
        tch::no_grad(|| -> Result<(), TrainerError> {
            for &w in widths {
                let _ = branch.backbone.forward_t(&x, w, true)?;
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

/// Weighted kNN top-1 in percent (Wu et al. 2018, as the InstDisc/solo-learn kNN monitor):
/// features l2-normalised, cosine similarity to every training feature, the `k` nearest vote
/// for their class with weight `exp(sim / t)`, the class with the largest sum wins.
///
/// Shapes: `train` `[N, D]`, `train_labels` `[N]` i64 in `0..classes`, `test` `[M, D]`,
/// `test_labels` `[M]`. Memory: chunks of 512 test rows (512·N floats at a time).
pub fn knn_top1(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    test_labels: &Tensor,
    k: i64,
    t: f64,
    classes: i64,
) -> f64 {
    tch::no_grad(|| {
        let norm = |x: &Tensor| x / x.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
        let train = norm(train);
        let test = norm(test);
        let k = k.min(train.size()[0]);
        let m = test.size()[0];
        let mut correct = 0i64;
        let mut start = 0;
        while start < m {
            let len = 512.min(m - start);
            let q = test.narrow(0, start, len);
            let sim = q.matmul(&train.tr());
            let (top, idx) = sim.topk(k, 1, true, true);
            let votes_lbl = train_labels.index_select(0, &idx.flatten(0, -1)).view([len, k]);
            let weights = (top / t).exp();
            let scores = Tensor::zeros([len, classes], (Kind::Float, train.device()));
            let scores = scores.scatter_add(1, &votes_lbl, &weights);
            let pred = scores.argmax(1, false);
            correct += pred.eq_tensor(&test_labels.narrow(0, start, len)).sum(Kind::Int64).int64_value(&[]);
            start += len;
        }
        100.0 * correct as f64 / m.max(1) as f64
    })
}

/// Linear probe top-1 in percent: features standardised with the training mean/std (a BN
/// without affine, as MAE's linear probe), a linear layer trained with Adam and cross-entropy
/// for `epochs` epochs of mini-batches `batch` (seeded shuffle), cosine-decayed learning rate.
pub fn linear_probe_top1(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    test_labels: &Tensor,
    classes: i64,
    epochs: usize,
    lr: f64,
    batch: i64,
    seed: u64,
) -> Result<f64, TrainerError> {
    tch::manual_seed(seed as i64);
    let mean = train.mean_dim(Some([0].as_slice()), true, Kind::Float);
    let std = train.std_dim(Some([0].as_slice()), true, true).clamp_min(1e-6);
    let xs = (train - &mean) / &std;
    let xt = (test - &mean) / &std;
    let vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root() / "fc", xs.size()[1], classes, Default::default());
    let mut opt = nn::Adam::default().build(&vs, lr)?;
    let n = xs.size()[0];
    let steps_per_epoch = (n + batch - 1) / batch;
    let total = (epochs as i64 * steps_per_epoch).max(1);
    let mut step = 0i64;
    for _ in 0..epochs {
        let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let mut s = 0;
        while s < n {
            let len = batch.min(n - s);
            let idx = perm.narrow(0, s, len);
            let logits = linear.forward(&xs.index_select(0, &idx));
            let loss = logits.cross_entropy_for_logits(&train_labels.index_select(0, &idx));
            opt.set_lr(lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos()));
            opt.backward_step(&loss);
            s += len;
            step += 1;
        }
    }
    let acc = tch::no_grad(|| {
        let pred = linear.forward(&xt).argmax(1, false);
        pred.eq_tensor(test_labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
    });
    Ok(100.0 * acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_weighted_vote_by_hand() {
        // train: class 0 at angle 0 (two points), class 1 at 90 degrees (one point).
        let train = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.1, 0.0, 1.0]).view([3, 2]);
        let labels = Tensor::from_slice(&[0i64, 0, 1]);
        // query at 80 degrees: nearest is class 1 (cos 0.985) but k=3 with t=10 (almost
        // uniform weights) → two votes of class 0 beat one of class 1; with t=0.01 the nearest
        // dominates → class 1.
        let a = 80f32.to_radians();
        let q = Tensor::from_slice(&[a.cos(), a.sin()]).view([1, 2]);
        let y1 = Tensor::from_slice(&[1i64]);
        let y0 = Tensor::from_slice(&[0i64]);
        assert_eq!(knn_top1(&train, &labels, &q, &y0, 3, 10.0, 2), 100.0);
        assert_eq!(knn_top1(&train, &labels, &q, &y1, 3, 0.01, 2), 100.0);
        assert_eq!(knn_top1(&train, &labels, &q, &y1, 1, 0.1, 2), 100.0);
    }

    #[test]
    fn linear_probe_separates_separable_classes() {
        // Two Gaussian blobs 8 sigma apart in 4-d: any working probe gets 100%, chance is 50%.
        tch::manual_seed(0);
        let mk = |n: i64| {
            let x0 = Tensor::randn([n, 4], (Kind::Float, Device::Cpu));
            let x1 = Tensor::randn([n, 4], (Kind::Float, Device::Cpu)) + 8.0;
            let y = Tensor::cat(
                &[Tensor::zeros([n], (Kind::Int64, Device::Cpu)), Tensor::ones([n], (Kind::Int64, Device::Cpu))],
                0,
            );
            (Tensor::cat(&[x0, x1], 0), y)
        };
        let (xs, ys) = mk(200);
        let (xt, yt) = mk(100);
        let acc = linear_probe_top1(&xs, &ys, &xt, &yt, 2, 5, 0.01, 64, 0).unwrap();
        assert_eq!(acc, 100.0);
    }
}
