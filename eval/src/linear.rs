//! The linear probe on frozen features.

use crate::error::EvalError;
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Linear-probe settings (`eval.linear_*` of the run's config; the seed is `train.seed`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearProbe {
    /// Passes over the training features.
    pub epochs: usize,
    /// Peak learning rate of Adam, decayed with a cosine to 0 over all steps.
    pub lr: f64,
    /// Features per step.
    pub batch: i64,
    /// Seed of the initial weights and of every epoch's shuffle (libtorch's generator).
    pub seed: u64,
}

impl LinearProbe {
    /// Top-1 in percent: features standardised with the training mean/std (a BN without affine,
    /// as MAE's linear probe), a linear layer trained with Adam and cross-entropy for `epochs`
    /// epochs of mini-batches (seeded shuffle), learning rate cosine-decayed per step
    /// (`dspnet_core::schedule::warmup_cosine` without warm-up).
    ///
    /// Shapes: `train` `[N, D]` f32, `train_labels` `[N]` i64 in `0..classes`, `test` `[M, D]`,
    /// `test_labels` `[M]`; all on the CPU.
    ///
    /// Errors: libtorch failures.
    pub fn top1(
        &self,
        train: &Tensor,
        train_labels: &Tensor,
        test: &Tensor,
        test_labels: &Tensor,
        classes: i64,
    ) -> Result<f64, EvalError> {
        tch::manual_seed(self.seed as i64);
        let mean = train.mean_dim(Some([0].as_slice()), true, Kind::Float);
        let std = train.std_dim(Some([0].as_slice()), true, true).clamp_min(1e-6);
        let xs = (train - &mean) / &std;
        let xt = (test - &mean) / &std;
        let vs = nn::VarStore::new(Device::Cpu);
        let linear = nn::linear(vs.root() / "fc", xs.size()[1], classes, Default::default());
        let mut opt = nn::Adam::default().build(&vs, self.lr)?;
        let n = xs.size()[0];
        let batch = self.batch;
        let steps_per_epoch = (n + batch - 1) / batch;
        let total = (self.epochs as i64 * steps_per_epoch).max(1) as u64;
        let mut step = 0u64;
        for _ in 0..self.epochs {
            let perm = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
            let mut s = 0;
            while s < n {
                let len = batch.min(n - s);
                let idx = perm.narrow(0, s, len);
                let logits = linear.forward(&xs.index_select(0, &idx));
                let loss = logits.cross_entropy_for_logits(&train_labels.index_select(0, &idx));
                opt.set_lr(dspnet_core::schedule::warmup_cosine(step, total, 0, self.lr));
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let probe = LinearProbe { epochs: 5, lr: 0.01, batch: 64, seed: 0 };
        let acc = probe.top1(&xs, &ys, &xt, &yt, 2).unwrap();
        assert_eq!(acc, 100.0);
    }
}
