//! The weight decay of the transfer-linear classifier picked on a validation split, the refit on
//! train + validation with it, and the test top-1.

use super::lbfgs::{Lbfgs, Stop};
use super::logistic::{Fitted, LogisticRegression};
use crate::error::Result;
use tch::Tensor;

/// Features `[N, D]` and labels `[N]` i64 of one split.
pub type Split<'a> = (&'a Tensor, &'a Tensor);

/// One weight decay of the grid, fitted on the training part and scored on validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub weight_decay: f64,
    /// Validation top-1 in percent.
    pub val_top1: f64,
    pub iterations: usize,
    pub stop: Stop,
}

/// The grid's candidates (grid order) and the one chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub candidates: Vec<Candidate>,
    /// The chosen weight decay.
    pub weight_decay: f64,
    /// Its validation top-1 in percent.
    pub val_top1: f64,
}

/// Fits one classifier per weight decay of `grid` on `fit` and scores it on `val`. The highest
/// validation top-1 wins; ties go to the larger weight decay (the more regularised classifier).
///
/// Errors: an empty grid ([`crate::EvalError::Option`] naming `--transfer-weight-decays`); a label
/// outside `0..classes`.
pub fn pick_weight_decay(grid: &[f64], lbfgs: Lbfgs, fit: Split, val: Split, classes: i64) -> Result<Selection> {
    let mut candidates = Vec::with_capacity(grid.len());
    for &wd in grid {
        let f = LogisticRegression { weight_decay: wd, lbfgs }.fit(fit.0, fit.1, classes)?;
        candidates.push(Candidate {
            weight_decay: wd,
            val_top1: f.top1(val.0, val.1),
            iterations: f.iterations,
            stop: f.stop,
        });
    }
    let best = candidates
        .iter()
        .max_by(|a, b| a.val_top1.total_cmp(&b.val_top1).then(a.weight_decay.total_cmp(&b.weight_decay)))
        .ok_or_else(|| {
            crate::EvalError::option(
                "--transfer-weight-decays",
                "--transfer-weight-decays is empty; give e.g. 1e-6,1e-5,1e-4,1e-3,1e-2,1e-1",
            )
        })?;
    let (weight_decay, val_top1) = (best.weight_decay, best.val_top1);
    Ok(Selection { candidates, weight_decay, val_top1 })
}

/// The protocol's result for one network: the selection, the classifier refitted on train +
/// validation with the chosen weight decay, and its test top-1 in percent.
#[derive(Debug)]
pub struct TransferFit {
    pub selection: Selection,
    pub fitted: Fitted,
    pub test_top1: f64,
}

/// [`pick_weight_decay`] on (`fit`, `val`), then a refit on both with the chosen weight decay
/// (standardised with their joint mean/std), scored on `test`.
///
/// Errors: those of [`pick_weight_decay`].
pub fn transfer_top1(
    grid: &[f64],
    lbfgs: Lbfgs,
    fit: Split,
    val: Split,
    test: Split,
    classes: i64,
) -> Result<TransferFit> {
    let selection = pick_weight_decay(grid, lbfgs, fit, val, classes)?;
    let x = Tensor::cat(&[fit.0, val.0], 0);
    let y = Tensor::cat(&[fit.1, val.1], 0);
    let fitted = LogisticRegression { weight_decay: selection.weight_decay, lbfgs }.fit(&x, &y, classes)?;
    let test_top1 = fitted.top1(test.0, test.1);
    Ok(TransferFit { selection, fitted, test_top1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// `n` points per class of two overlapping 20-d Gaussians whose means differ in the first
    /// coordinate only; the other 19 coordinates are noise a weakly regularised fit overfits.
    fn noisy(n: i64, seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let y = Tensor::cat(
            &[Tensor::zeros([n], (Kind::Int64, Device::Cpu)), Tensor::ones([n], (Kind::Int64, Device::Cpu))],
            0,
        );
        let x = Tensor::randn([2 * n, 20], (Kind::Double, Device::Cpu));
        let signal = (y.to_kind(Kind::Double) * 2.0 - 1.0).view([-1, 1]) * 0.6;
        let x = Tensor::cat(&[x.narrow(1, 0, 1) + signal, x.narrow(1, 1, 19)], 1);
        (x, y)
    }

    #[test]
    fn decay_is_picked_by_validation_top1_and_ties_go_to_the_larger_one() {
        let (xf, yf) = noisy(12, 0);
        let (xv, yv) = noisy(200, 1);
        let grid = [1e-6, 1e-4, 1e-2, 1.0];
        let s = pick_weight_decay(&grid, Lbfgs::default(), (&xf, &yf), (&xv, &yv), 2).unwrap();
        assert_eq!(s.candidates.len(), 4);
        let best = s.candidates.iter().map(|c| c.val_top1).fold(f64::MIN, f64::max);
        assert_eq!(s.val_top1, best);
        let winners: Vec<f64> = s.candidates.iter().filter(|c| c.val_top1 == best).map(|c| c.weight_decay).collect();
        assert_eq!(s.weight_decay, *winners.last().unwrap(), "ties go to the larger decay: {s:?}");
        // 24 points in 20 dimensions: almost no decay overfits the noise; a strong decay keeps
        // the signal coordinate and generalises better
        let weak = s.candidates[0].val_top1;
        assert!(s.val_top1 > weak, "{s:?}");
        assert!(s.weight_decay >= 1e-2, "{s:?}");

        // a validation split every candidate classifies alike (two points far out along the
        // signal coordinate): the largest decay is chosen
        let mut far = vec![0.0f64; 40];
        (far[0], far[20]) = (-50.0, 50.0);
        let xs = Tensor::from_slice(&far).view([2, 20]);
        let ys = Tensor::from_slice(&[0i64, 1]);
        let same = pick_weight_decay(&[1e-3, 1e-2], Lbfgs::default(), (&xf, &yf), (&xs, &ys), 2).unwrap();
        assert_eq!((same.candidates[0].val_top1, same.candidates[1].val_top1), (100.0, 100.0), "{same:?}");
        assert_eq!(same.weight_decay, 1e-2);
        assert!(pick_weight_decay(&[], Lbfgs::default(), (&xf, &yf), (&xv, &yv), 2).is_err());
    }

    #[test]
    fn refit_uses_train_and_validation() {
        let (xf, yf) = noisy(30, 2);
        let (xv, yv) = noisy(30, 3);
        let (xt, yt) = noisy(100, 4);
        let r = transfer_top1(&[1e-3, 1e-1], Lbfgs::default(), (&xf, &yf), (&xv, &yv), (&xt, &yt), 2).unwrap();
        assert_eq!(r.fitted.weight.size(), vec![20, 2]);
        // the refit is the fit of the chosen decay on the 120 pooled points
        let x = Tensor::cat(&[&xf, &xv], 0);
        let y = Tensor::cat(&[&yf, &yv], 0);
        let again = LogisticRegression { weight_decay: r.selection.weight_decay, lbfgs: Lbfgs::default() }
            .fit(&x, &y, 2)
            .unwrap();
        assert_eq!(again.top1(&xt, &yt), r.test_top1);
        assert!((again.loss - r.fitted.loss).abs() < 1e-12);
        // the signal alone gives Φ(0.6) ≈ 73%: a working fit is well above chance on 200 points
        assert!(r.test_top1 > 60.0, "{r:?}");
    }
}
