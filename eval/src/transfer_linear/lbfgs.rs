//! Full-batch L-BFGS on a flat parameter vector: the optimiser of the transfer-linear
//! classifier.
//!
//! Nocedal & Wright, *Numerical Optimization* (2nd ed., 2006): the two-loop recursion
//! (Alg. 7.4) for the search direction with the initial Hessian `γ·I`,
//! `γ = sᵀy / yᵀy` of the newest pair (Eq. 7.20), the outer loop of Alg. 7.5, and a
//! backtracking line search on the Armijo condition (Alg. 3.1, `c₁ = 1e-4`, step halved). A pair
//! `(s, y)` enters the history only when `sᵀy > 1e-10` (as PyTorch's `torch.optim.LBFGS`); for a
//! strictly convex objective (an L2-regularised logistic regression) that always holds. The first
//! step (no history yet) is `min(1, 1/‖g‖₁)` along `−g`, as in PyTorch; later steps start at 1.
//! Stopping follows scipy's L-BFGS-B: the largest gradient entry at most `gtol`, or a relative
//! decrease `(f_k − f_{k+1}) / max(|f_k|, |f_{k+1}|, 1)` at most `ftol`, or `max_iter`
//! iterations. No randomness: the same start gives the same iterates.

use crate::error::Result;
use std::collections::VecDeque;
use tch::{Kind, Tensor};

/// L-BFGS settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lbfgs {
    /// Correction pairs kept (scipy's `maxcor`, default 10).
    pub history: usize,
    /// Iterations (accepted steps) at most.
    pub max_iter: usize,
    /// Stop when `max |gradient|` is at most this (scipy's `gtol`, default 1e-5).
    pub gtol: f64,
    /// Stop when the relative decrease of the objective is at most this (scipy's `ftol`,
    /// default 2.22e-9 = 1e7 × machine epsilon).
    pub ftol: f64,
}

impl Default for Lbfgs {
    fn default() -> Self {
        Lbfgs { history: 10, max_iter: 1000, gtol: 1e-5, ftol: 1e7 * f64::EPSILON }
    }
}

/// Why [`Lbfgs::minimise`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// `max |gradient| <= gtol`.
    Gradient,
    /// Relative decrease of the objective `<= ftol`.
    Objective,
    /// No step along the search direction decreased the objective enough (the precision limit).
    LineSearch,
    /// `max_iter` iterations.
    MaxIter,
}

impl Stop {
    /// `gradient`, `objective`, `line search` or `max iterations`, as the records say it.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Gradient => "gradient",
            Stop::Objective => "objective",
            Stop::LineSearch => "line search",
            Stop::MaxIter => "max iterations",
        }
    }

    /// True unless the iteration budget ran out.
    pub fn converged(self) -> bool {
        self != Stop::MaxIter
    }
}

/// The minimiser [`Lbfgs::minimise`] found.
#[derive(Debug)]
pub struct Minimum {
    /// Parameters, same shape, dtype and device as the start.
    pub x: Tensor,
    /// Objective at `x`.
    pub value: f64,
    /// `max |gradient|` at `x`.
    pub grad_max: f64,
    /// Accepted steps.
    pub iterations: usize,
    /// Objective evaluations (line-search trials included).
    pub evaluations: usize,
    pub stop: Stop,
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.dot(b).double_value(&[])
}

fn max_abs(g: &Tensor) -> f64 {
    g.abs().max().double_value(&[])
}

/// Backtracking halvings tried before the line search gives up.
const MAX_HALVINGS: usize = 60;
/// Armijo's sufficient-decrease constant.
const ARMIJO_C1: f64 = 1e-4;

impl Lbfgs {
    /// Minimises `f` from `x0` (a 1-d floating tensor; f64 recommended). `f(x)` returns the
    /// objective and its gradient (same shape as `x`); a non-finite objective counts as no
    /// decrease (the step is halved).
    ///
    /// Errors: those of `f`.
    pub fn minimise(&self, x0: Tensor, mut f: impl FnMut(&Tensor) -> Result<(f64, Tensor)>) -> Result<Minimum> {
        let mut x = x0;
        let (mut fx, mut g) = f(&x)?;
        let mut evaluations = 1;
        let mut pairs: VecDeque<(Tensor, Tensor, f64)> = VecDeque::new(); // (s, y, 1 / sᵀy)
        let mut iterations = 0;
        let mut gmax = max_abs(&g);
        if gmax <= self.gtol {
            return Ok(Minimum { x, value: fx, grad_max: gmax, iterations, evaluations, stop: Stop::Gradient });
        }
        let stop = loop {
            if iterations >= self.max_iter {
                break Stop::MaxIter;
            }
            let mut d = self.direction(&g, &pairs);
            let mut gd = dot(&g, &d);
            if gd >= 0.0 || gd.is_nan() {
                // not a descent direction (cannot happen with positive curvature pairs): restart
                pairs.clear();
                d = -&g;
                gd = dot(&g, &d);
            }
            let mut t =
                if pairs.is_empty() { (1.0 / g.abs().sum(Kind::Double).double_value(&[])).min(1.0) } else { 1.0 };
            let mut accepted = None;
            for _ in 0..MAX_HALVINGS {
                let x_new = &x + &d * t;
                let (f_new, g_new) = f(&x_new)?;
                evaluations += 1;
                if f_new <= fx + ARMIJO_C1 * t * gd {
                    accepted = Some((x_new, f_new, g_new));
                    break;
                }
                t *= 0.5;
            }
            let Some((x_new, f_new, g_new)) = accepted else { break Stop::LineSearch };
            let s = &x_new - &x;
            let y = &g_new - &g;
            let sy = dot(&s, &y);
            if sy > 1e-10 {
                if pairs.len() == self.history.max(1) {
                    pairs.pop_front();
                }
                pairs.push_back((s, y, 1.0 / sy));
            }
            let f_old = fx;
            (x, fx, g) = (x_new, f_new, g_new);
            iterations += 1;
            gmax = max_abs(&g);
            if gmax <= self.gtol {
                break Stop::Gradient;
            }
            if f_old - fx <= self.ftol * f_old.abs().max(fx.abs()).max(1.0) {
                break Stop::Objective;
            }
        };
        Ok(Minimum { x, value: fx, grad_max: gmax, iterations, evaluations, stop })
    }

    /// `−H·g` by the two-loop recursion over `pairs` (oldest first), `H₀ = γ·I`.
    fn direction(&self, g: &Tensor, pairs: &VecDeque<(Tensor, Tensor, f64)>) -> Tensor {
        let mut q = g.copy();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let a = rho * dot(s, &q);
            q -= y * a;
            alphas.push(a);
        }
        if let Some((s, y, _)) = pairs.back() {
            q *= dot(s, y) / dot(y, y);
        }
        for ((s, y, rho), a) in pairs.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q += s * (a - b);
        }
        -q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn quadratic_minimum_is_found_exactly() {
        // f(x) = ½ xᵀ A x − bᵀ x, A = diag(1, 10, 100): minimum at A⁻¹ b = (1, 0.2, -0.03)
        let a = t(&[1.0, 10.0, 100.0]);
        let b = t(&[1.0, 2.0, -3.0]);
        let f = |x: &Tensor| -> Result<(f64, Tensor)> {
            let ax = &a * x;
            let v = 0.5 * dot(x, &ax) - dot(&b, x);
            Ok((v, ax - &b))
        };
        let opt = Lbfgs { gtol: 1e-12, ftol: 0.0, ..Default::default() };
        let m = opt.minimise(Tensor::zeros([3], (Kind::Double, Device::Cpu)), f).unwrap();
        let x: Vec<f64> = Vec::try_from(&m.x).unwrap();
        for (got, want) in x.iter().zip([1.0, 0.2, -0.03]) {
            assert!((got - want).abs() < 1e-10, "{x:?}");
        }
        // stopped by the gradient or (ftol 0) when f stopped decreasing at machine precision
        assert!(m.stop.converged() && m.grad_max < 1e-9, "{m:?}");
        // L-BFGS on a 3-d quadratic: a handful of steps, not hundreds (steepest descent would
        // need ~ condition number × log(1/tol) ≈ 3000)
        assert!(m.iterations <= 20, "{} iterations", m.iterations);
    }

    #[test]
    fn rosenbrock_valley_is_crossed() {
        // the classic non-convex test: minimum 0 at (1, 1), start (-1.2, 1)
        let f = |x: &Tensor| -> Result<(f64, Tensor)> {
            let v: Vec<f64> = Vec::try_from(x).unwrap();
            let (a, b) = (v[0], v[1]);
            let val = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = [-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)];
            Ok((val, t(&g)))
        };
        let opt = Lbfgs { gtol: 1e-8, ftol: 0.0, ..Default::default() };
        let m = opt.minimise(t(&[-1.2, 1.0]), f).unwrap();
        let x: Vec<f64> = Vec::try_from(&m.x).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6, "{x:?} after {} iterations", m.iterations);
        assert!(m.stop.converged());
    }

    #[test]
    fn the_iteration_budget_is_kept_and_reported() {
        let f = |x: &Tensor| -> Result<(f64, Tensor)> { Ok((dot(x, x), x * 2.0)) };
        let opt = Lbfgs { max_iter: 0, ..Default::default() };
        let m = opt.minimise(t(&[3.0, 4.0]), f).unwrap();
        assert_eq!((m.iterations, m.stop, m.value), (0, Stop::MaxIter, 25.0));
        assert!(!m.stop.converged());
        // a start at the minimum stops before any step
        let m = Lbfgs::default().minimise(t(&[0.0, 0.0]), f).unwrap();
        assert_eq!((m.iterations, m.evaluations, m.stop), (0, 1, Stop::Gradient));
    }
}
