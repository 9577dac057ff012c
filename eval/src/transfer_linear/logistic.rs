//! Multinomial logistic regression with L2 weight decay on frozen features, fitted full-batch
//! by L-BFGS ([`super::lbfgs`]): the classifier of the transfer-linear protocol.
//!
//! Features are standardised with the mean and (population) standard deviation of the data the
//! classifier is fitted on (clamped at 1e-6, as the linear probe), then
//!
//! ```text
//! minimise  L(W, b) = (1/N) Σ_i −log softmax(x_i W + b)[y_i]  +  (λ/2) ‖W‖²_F
//! ∇_W L = Xᵀ (P − Y) / N + λ W,   ∇_b L = Σ_i (P − Y)_i / N     (P = softmax, Y = one-hot)
//! ```
//!
//! with the gradient written out (no autograd), from `W = 0, b = 0`, in f64 on the features'
//! device. λ is the weight decay of an SGD step on the mean loss; scikit-learn's
//! `LogisticRegression(C=...)` minimises `C Σ_i CE_i + ½‖W‖²`, the same problem for
//! `C = 1 / (λ N)`. The bias is not decayed (as scikit-learn's lbfgs solver).

use super::lbfgs::{Lbfgs, Stop};
use crate::error::Result;
use tch::{Kind, Tensor};

/// One fit's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogisticRegression {
    /// λ, the L2 weight decay on `W` (>= 0).
    pub weight_decay: f64,
    pub lbfgs: Lbfgs,
}

/// A fitted classifier.
#[derive(Debug)]
pub struct Fitted {
    /// `[D, C]` f64.
    pub weight: Tensor,
    /// `[C]` f64.
    pub bias: Tensor,
    /// `[1, D]` f64: the standardisation of the fitted data.
    mean: Tensor,
    std: Tensor,
    /// Objective at the solution.
    pub loss: f64,
    /// `max |gradient|` at the solution.
    pub grad_max: f64,
    pub iterations: usize,
    pub stop: Stop,
}

/// The objective and its gradient at `theta = [vec(W) (D·C, row-major [D, C]), b (C)]` for
/// standardised features `xs` `[N, D]` f64 and one-hot labels `onehot` `[N, C]` f64.
pub fn objective(xs: &Tensor, onehot: &Tensor, theta: &Tensor, weight_decay: f64) -> (f64, Tensor) {
    let (n, d) = (xs.size()[0], xs.size()[1]);
    let c = onehot.size()[1];
    let w = theta.narrow(0, 0, d * c).view([d, c]);
    let b = theta.narrow(0, d * c, c);
    let logp = (xs.matmul(&w) + &b).log_softmax(1, Kind::Double);
    let nll = -(&logp * onehot).sum(Kind::Double).double_value(&[]) / n as f64;
    let value = nll + 0.5 * weight_decay * w.square().sum(Kind::Double).double_value(&[]);
    let residual = (logp.exp() - onehot) / n as f64;
    let gw = xs.tr().matmul(&residual) + &w * weight_decay;
    let gb = residual.sum_dim_intlist(Some([0i64].as_slice()), false, Kind::Double);
    (value, Tensor::cat(&[gw.reshape([-1]), gb], 0))
}

/// Mean and population standard deviation (clamped at 1e-6) of the rows of `x`, `[1, D]` each.
fn standardisation(x: &Tensor) -> (Tensor, Tensor) {
    let mean = x.mean_dim(Some([0i64].as_slice()), true, Kind::Double);
    let std = x.std_dim(Some([0i64].as_slice()), false, true).clamp_min(1e-6);
    (mean, std)
}

impl LogisticRegression {
    /// Fits on `x` `[N, D]` (any float dtype and device; computed in f64 there) with labels `y`
    /// `[N]` i64 in `0..classes`.
    ///
    /// Errors: [`crate::EvalError::Torch`] for a label outside `0..classes`.
    pub fn fit(&self, x: &Tensor, y: &Tensor, classes: i64) -> Result<Fitted> {
        let x = x.to_kind(Kind::Double);
        let (mean, std) = standardisation(&x);
        let xs = (&x - &mean) / &std;
        let onehot = y.to_device(x.device()).f_one_hot(classes)?.to_kind(Kind::Double);
        let d = xs.size()[1];
        let theta0 = Tensor::zeros([(d + 1) * classes], (Kind::Double, x.device()));
        let wd = self.weight_decay;
        let m = self.lbfgs.minimise(theta0, |theta| Ok(objective(&xs, &onehot, theta, wd)))?;
        Ok(Fitted {
            weight: m.x.narrow(0, 0, d * classes).view([d, classes]),
            bias: m.x.narrow(0, d * classes, classes),
            mean,
            std,
            loss: m.value,
            grad_max: m.grad_max,
            iterations: m.iterations,
            stop: m.stop,
        })
    }
}

impl Fitted {
    /// Logits `[M, C]` f64 of features `x` `[M, D]` (standardised as the fitted data).
    pub fn logits(&self, x: &Tensor) -> Tensor {
        let xs = (x.to_device(self.mean.device()).to_kind(Kind::Double) - &self.mean) / &self.std;
        xs.matmul(&self.weight) + &self.bias
    }

    /// Top-1 in percent on features `x` `[M, D]` with labels `y` `[M]` i64 (0 for M = 0).
    pub fn top1(&self, x: &Tensor, y: &Tensor) -> f64 {
        let m = y.size()[0];
        if m == 0 {
            return 0.0;
        }
        let pred = self.logits(x).argmax(1, false);
        let correct = pred.eq_tensor(&y.to_device(pred.device())).sum(Kind::Int64).int64_value(&[]);
        100.0 * correct as f64 / m as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn tight() -> Lbfgs {
        Lbfgs { gtol: 1e-10, ftol: 0.0, max_iter: 500, ..Default::default() }
    }

    fn col(v: &[f64]) -> Tensor {
        Tensor::from_slice(v).view([-1, 1])
    }

    #[test]
    fn gradient_matches_autograd() {
        // the written-out gradient against libtorch's autograd of nll_loss(log_softmax) + (λ/2)‖W‖²
        tch::manual_seed(1);
        let (n, d, c) = (13, 4, 3);
        let xs = Tensor::randn([n, d], (Kind::Double, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1, 2]);
        let onehot = y.one_hot(c).to_kind(Kind::Double);
        let theta = Tensor::randn([(d + 1) * c], (Kind::Double, Device::Cpu));
        let (value, grad) = objective(&xs, &onehot, &theta, 0.3);
        let t = theta.copy().set_requires_grad(true);
        let w = t.narrow(0, 0, d * c).view([d, c]);
        let b = t.narrow(0, d * c, c);
        let logp = (xs.matmul(&w) + &b).log_softmax(1, Kind::Double);
        let loss = logp.nll_loss(&y) + w.square().sum(Kind::Double) * 0.15;
        loss.backward();
        assert!((loss.double_value(&[]) - value).abs() < 1e-12);
        let diff = (t.grad() - &grad).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "gradient differs by {diff}");
    }

    #[test]
    fn two_symmetric_points_have_the_closed_form_solution() {
        // x = +1 (class 1) and x = −1 (class 0): by symmetry b₀ = b₁ and W = (−a, a) with
        // a = σ(−2a) / λ (the stationarity condition); a by bisection, independently of L-BFGS
        let wd = 0.1;
        let (mut lo, mut hi) = (0.0f64, 100.0f64);
        for _ in 0..200 {
            let a = 0.5 * (lo + hi);
            if a * wd - 1.0 / (1.0 + (2.0 * a).exp()) > 0.0 {
                hi = a;
            } else {
                lo = a;
            }
        }
        let a = 0.5 * (lo + hi);
        let fit = LogisticRegression { weight_decay: wd, lbfgs: tight() }
            .fit(&col(&[1.0, -1.0]), &Tensor::from_slice(&[1i64, 0]), 2)
            .unwrap();
        let w: Vec<f64> = Vec::try_from(fit.weight.reshape([-1])).unwrap();
        let b: Vec<f64> = Vec::try_from(&fit.bias).unwrap();
        assert!((w[0] + a).abs() < 1e-9 && (w[1] - a).abs() < 1e-9, "W {w:?}, expected ±{a}");
        assert!((b[0] - b[1]).abs() < 1e-9, "{b:?}");
        assert!(fit.stop.converged());
    }

    #[test]
    fn non_separable_data_gets_the_maximum_likelihood_probabilities() {
        // x = +1: classes 1,1,1,0; x = −1: classes 0,0,0,1. Without decay the fit is the MLE:
        // P(class 1 | x = +1) = 3/4 and P(class 1 | x = −1) = 1/4 exactly
        let x = col(&[1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0]);
        let y = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 0, 0, 1]);
        let fit = LogisticRegression { weight_decay: 0.0, lbfgs: tight() }.fit(&x, &y, 2).unwrap();
        let p = fit.logits(&col(&[1.0, -1.0])).softmax(1, Kind::Double);
        let p: Vec<f64> = Vec::try_from(p.reshape([-1])).unwrap();
        assert!((p[1] - 0.75).abs() < 1e-8 && (p[3] - 0.25).abs() < 1e-8, "{p:?}");
        // the loss at the MLE is the entropy of (3/4, 1/4)
        let h = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((fit.loss - h).abs() < 1e-10, "{} vs {h}", fit.loss);
        assert_eq!(fit.top1(&x, &y), 75.0);
    }

    #[test]
    fn separable_blobs_are_classified_and_decay_shrinks_the_weights() {
        // three Gaussian blobs 6σ apart in 5-d: any working classifier gets 100%, chance 33%
        tch::manual_seed(0);
        let blobs = |n: i64| {
            let centres = Tensor::from_slice(&[0.0f32, 0.0, 6.0, 0.0, 0.0, 6.0]).view([3, 2]);
            let y = Tensor::arange(3, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(n, Some(0), None);
            let mut x = Tensor::randn([3 * n, 5], (Kind::Float, Device::Cpu));
            let shift = centres.index_select(0, &y);
            x = Tensor::cat(&[x.narrow(1, 0, 2) + shift, x.narrow(1, 2, 3)], 1);
            (x, y)
        };
        let (xs, ys) = blobs(50);
        let (xt, yt) = blobs(30);
        let norm = |wd: f64| {
            let fit = LogisticRegression { weight_decay: wd, lbfgs: Lbfgs::default() }.fit(&xs, &ys, 3).unwrap();
            assert_eq!(fit.top1(&xt, &yt), 100.0, "weight decay {wd}");
            fit.weight.square().sum(Kind::Double).double_value(&[])
        };
        let (strong, weak) = (norm(1e-1), norm(1e-3));
        assert!(strong < weak, "‖W‖² {strong} at λ=0.1 should be below {weak} at λ=0.001");
    }

    #[test]
    fn a_label_outside_the_classes_is_an_error() {
        let fit = LogisticRegression { weight_decay: 0.1, lbfgs: Lbfgs::default() };
        assert!(fit.fit(&col(&[1.0, 2.0]), &Tensor::from_slice(&[0i64, 3]), 2).is_err());
    }
}
