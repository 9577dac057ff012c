//! SGD with momentum and LARS (You et al. 2017, as used by BYOL §3.3), with BN parameters and
//! biases excluded from weight decay and from LARS adaptation (BYOL Appendix C).

use dspnet_run::config::{OptimConfig, OptimizerKind};
use tch::{Kind, Tensor};

/// One optimised parameter with its momentum buffer.
struct Param {
    name: String,
    value: Tensor,
    momentum: Tensor,
    /// Weight decay and LARS trust ratio apply (conv/linear weights, i.e. tensors of rank > 1).
    adapt: bool,
}

/// Optimiser over a fixed set of named fp32 parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    momentum: f64,
    weight_decay: f64,
    eta: f64,
    params: Vec<Param>,
}

impl Optimizer {
    /// Builds the optimiser for `params` (name, tensor with `requires_grad`). Tensors of rank <= 1
    /// (BN affine, biases) get neither weight decay nor LARS adaptation.
    pub fn new(cfg: &OptimConfig, mut params: Vec<(String, Tensor)>) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let params = params
            .into_iter()
            .map(|(name, value)| Param { adapt: value.dim() > 1, momentum: value.zeros_like(), name, value })
            .collect();
        Optimizer { kind: cfg.kind, momentum: cfg.momentum, weight_decay: cfg.weight_decay, eta: cfg.lars_eta, params }
    }

    /// The optimised parameters (sorted by name) and whether each is adapted (a conv/linear
    /// weight of rank > 1: weight decay and the LARS trust ratio apply, and every width shares it).
    pub fn params(&self) -> impl Iterator<Item = (&Tensor, bool)> {
        self.params.iter().map(|p| (&p.value, p.adapt))
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.value.zero_grad();
        }
    }

    /// Applies one update with learning rate `lr`:
    /// `g ← ∇ + wd·w` (adapted tensors); LARS: `g ← g · eta·‖w‖/‖g‖` (when both norms > 0);
    /// `v ← m·v + g`; `w ← w − lr·v`.
    ///
    /// A parameter that received no gradient in this step (its gradient is undefined or all
    /// zero: the switchable BN of a width the sandwich rule did not draw, the narrow widths'
    /// predictor during the narrow warm-up) gets `g = 0`: no weight decay and no LARS
    /// adaptation, which would otherwise turn the decay alone into a full-size step (the trust
    /// ratio of `wd·w` is `eta/wd`). Its momentum keeps moving it. The rule reads the gradient's
    /// values, not whether libtorch has allocated it, so the update depends on the weights,
    /// momentum buffers and gradients alone and a run restored from a checkpoint continues
    /// bit-identically.
    ///
    /// No host synchronisation: "received" and the trust ratio are decided on the parameters'
    /// device (`where` on 0-dim tensors; the ratio in f64 as `eta·‖w‖/‖g‖` of the f32 norms, so
    /// the result is bit-identical to reading the norms back and scaling by the host's f64), so
    /// on a GPU the whole update is queued behind the backward passes without waiting for them.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for p in &mut self.params {
                let grad = p.value.grad();
                let g = if !grad.defined() {
                    p.value.zeros_like()
                } else if !p.adapt {
                    grad.shallow_clone()
                } else {
                    let received = grad.abs().max().gt(0.0);
                    let g = if self.weight_decay > 0.0 { &grad + &p.value * self.weight_decay } else { grad };
                    let g = if self.kind == OptimizerKind::Lars {
                        let wn = p.value.norm().to_kind(Kind::Double);
                        let gn = g.norm().to_kind(Kind::Double);
                        let adapt = wn.gt(0.0).logical_and(&gn.gt(0.0));
                        let trust = (wn * self.eta / &gn).where_self(&adapt, &Tensor::ones_like(&gn));
                        &g * trust
                    } else {
                        g
                    };
                    g.where_self(&received, &g.zeros_like())
                };
                let _ = p.momentum.g_mul_scalar_(self.momentum).g_add_(&g);
                let _ = p.value.g_add_(&(&p.momentum * (-lr)));
            }
        });
    }

    /// Momentum buffers by parameter name (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params.iter().map(|p| (format!("optim.{}", p.name), p.momentum.shallow_clone())).collect()
    }

    /// Restores momentum buffers saved by [`Optimizer::state`]; missing names are an error.
    pub fn load_state(&mut self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<(), String> {
        for p in &mut self.params {
            let key = format!("optim.{}", p.name);
            let t = tensors.get(&key).ok_or_else(|| format!("checkpoint lacks optimizer state {key}"))?;
            tch::no_grad(|| p.momentum.copy_(t));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: OptimizerKind, wd: f64) -> OptimConfig {
        OptimConfig { kind, lr: 0.1, momentum: 0.9, weight_decay: wd, lars_eta: 0.001, warmup_epochs: 0.0 }
    }

    #[test]
    fn sgd_momentum_two_steps_by_hand() {
        // w = [1, 2] (rank 2 so weight decay applies), loss = sum(w^2) → grad = 2w.
        let w = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]).set_requires_grad(true);
        let mut opt = Optimizer::new(&cfg(OptimizerKind::Sgd, 0.5), vec![("w".into(), w.shallow_clone())]);
        // step 1: g = 2w + 0.5w = 2.5w = [2.5, 5]; v = g; w = w - 0.1 v = [0.75, 1.5]
        w.square().sum(Kind::Float).backward();
        opt.step(0.1);
        opt.zero_grad();
        let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        assert!((got[0] - 0.75).abs() < 1e-6 && (got[1] - 1.5).abs() < 1e-6, "{got:?}");
        // step 2: g = 2.5 w = [1.875, 3.75]; v = 0.9*[2.5,5] + g = [4.125, 8.25]; w -= 0.1 v
        w.square().sum(Kind::Float).backward();
        opt.step(0.1);
        let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        assert!((got[0] - (0.75 - 0.4125)).abs() < 1e-6 && (got[1] - (1.5 - 0.825)).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn a_parameter_without_gradient_follows_its_momentum() {
        // b = [1], momentum buffer 2 (from an earlier step), no gradient this step, no decay
        // (rank 1): v = 0.9·2 + 0 = 1.8, b = 1 − 0.1·1.8 = 0.82 — whether or not libtorch has
        // allocated b's gradient.
        for allocated in [false, true] {
            let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
            let mut opt = Optimizer::new(&cfg(OptimizerKind::Sgd, 0.5), vec![("b".into(), b.shallow_clone())]);
            let mut state = std::collections::HashMap::new();
            state.insert("optim.b".to_string(), Tensor::from_slice(&[2.0f32]));
            opt.load_state(&state).unwrap();
            if allocated {
                (&b * 3.0).sum(Kind::Float).backward();
                opt.zero_grad();
            }
            opt.step(0.1);
            assert!((b.double_value(&[0]) - 0.82).abs() < 1e-6, "allocated {allocated}: {}", b.double_value(&[0]));
        }
    }

    #[test]
    fn a_weight_without_gradient_is_not_moved_by_weight_decay() {
        // w = [3, 4] (rank 2, ‖w‖ = 5), wd = 0.1, LARS eta 0.001, lr 1: no gradient this step.
        // Before the fix: g = wd·w = [0.3, 0.4], trust = eta·‖w‖/‖g‖ = 0.001·5/0.5 = 0.01,
        // g = [0.003, 0.004]: w moved to [2.997, 3.996] by decay alone. Now: unchanged.
        for kind in [OptimizerKind::Lars, OptimizerKind::Sgd] {
            for allocated in [false, true] {
                let w = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]).set_requires_grad(true);
                let mut opt = Optimizer::new(&cfg(kind, 0.1), vec![("w".into(), w.shallow_clone())]);
                if allocated {
                    (&w * 2.0).sum(Kind::Float).backward();
                    opt.zero_grad();
                }
                opt.step(1.0);
                let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
                assert_eq!(got, vec![3.0, 4.0], "{kind:?}, allocated {allocated}");
            }
        }
        // with a momentum buffer of [1, 1] from earlier steps it still coasts: v = 0.9·1 = 0.9,
        // w = [3 − 0.9, 4 − 0.9] (no decay, no trust ratio on top)
        let w = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]).set_requires_grad(true);
        let mut opt = Optimizer::new(&cfg(OptimizerKind::Lars, 0.1), vec![("w".into(), w.shallow_clone())]);
        let mut state = std::collections::HashMap::new();
        state.insert("optim.w".to_string(), Tensor::from_slice(&[1.0f32, 1.0]).view([1, 2]));
        opt.load_state(&state).unwrap();
        opt.step(1.0);
        let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        assert!((got[0] - 2.1).abs() < 1e-6 && (got[1] - 3.1).abs() < 1e-6, "{got:?}");
        // a weight WITH gradient is decayed as before: g = ∇ + wd·w = [0, 1] + [0.3, 0.4]
        let w = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]).set_requires_grad(true);
        let mut opt = Optimizer::new(&cfg(OptimizerKind::Sgd, 0.1), vec![("w".into(), w.shallow_clone())]);
        w.select(1, 1).sum(Kind::Float).backward();
        opt.step(1.0);
        let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        assert!((got[0] - 2.7).abs() < 1e-6 && (got[1] - 2.6).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn lars_trust_ratio_and_exclusions_by_hand() {
        // weight w = [3, 4] (‖w‖ = 5), grad = [0, 1] (loss = w[1]) → trust = 0.001*5/1 = 0.005
        let w = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]).set_requires_grad(true);
        // bias b = [1] with grad 1: no adaptation, no decay → b = 1 - lr*1
        let b = Tensor::from_slice(&[1.0f32]).set_requires_grad(true);
        let mut opt = Optimizer::new(
            &cfg(OptimizerKind::Lars, 0.0),
            vec![("w".into(), w.shallow_clone()), ("b".into(), b.shallow_clone())],
        );
        (w.select(1, 1).sum(Kind::Float) + b.sum(Kind::Float)).backward();
        opt.step(1.0);
        let got: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        assert!((got[0] - 3.0).abs() < 1e-6 && (got[1] - (4.0 - 0.005)).abs() < 1e-6, "{got:?}");
        assert!((b.double_value(&[0]) - 0.0).abs() < 1e-6);
    }
}
