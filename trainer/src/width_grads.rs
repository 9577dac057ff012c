//! What each width of a DSPNet step contributes to the gradient of the shared weights, taken
//! apart: for the interference measurement (how large each width's gradient is, and how the
//! full width's gradient and the narrow widths' sum point) and for the method switches that
//! combine the widths' gradients otherwise than by summing them (`method.width_gradients`).
//!
//! "Shared weights" are the conv and linear weights (rank > 1): every width uses a slice of
//! each. Switchable BN parameters are private to a width and are summed as they are.

use tch::{Kind, Tensor};

/// One width's gradient of every optimised parameter (in the optimiser's order; zeros where
/// the width gave none).
pub struct WidthGrad {
    pub width: f64,
    pub grads: Vec<Tensor>,
}

/// The gradients accumulated in `params` since their last zeroing, taken out (copied) and the
/// parameters' gradients zeroed, so the next backward pass accumulates only its own.
pub fn take(params: &[(Tensor, bool)], width: f64) -> WidthGrad {
    let grads = tch::no_grad(|| {
        params
            .iter()
            .map(|(p, _)| {
                let g = p.grad();
                if g.defined() {
                    let copy = g.copy();
                    let _ = g.shallow_clone().zero_();
                    copy
                } else {
                    p.zeros_like()
                }
            })
            .collect()
    });
    WidthGrad { width, grads }
}

/// `Σ_p ⟨a_p, b_p⟩` over the shared weights (`shared[p]`), as a 0-dim f64 tensor (no host sync).
fn dot(a: &[Tensor], b: &[Tensor], shared: &[bool]) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Double, a[0].device()));
    for ((x, y), &s) in a.iter().zip(b).zip(shared) {
        if s {
            total += (x.to_kind(Kind::Double) * y.to_kind(Kind::Double)).sum(Kind::Double);
        }
    }
    total
}

/// The interference figures of one step: each width's gradient norm on the shared weights, and
/// the cosine between the full (largest) width's gradient and the sum of the narrower ones'.
#[derive(Clone, Debug, PartialEq)]
pub struct Interference {
    /// (width, ‖g_w‖ over the shared weights), in the order given.
    pub norms: Vec<(f64, f64)>,
    /// cos(g_full, Σ_{w < full} g_w); `None` when the step trained one width only.
    pub cosine_full_vs_narrow: Option<f64>,
    /// (width, cos(g_full, g_w)) for every narrower width.
    pub cosine_per_width: Vec<(f64, f64)>,
}

/// Measures [`Interference`] over per-width gradients, the first of which is the full width's
/// (the sandwich rule trains the largest width first). Reads the figures with one host
/// synchronisation per value.
pub fn interference(widths: &[WidthGrad], shared: &[bool]) -> Interference {
    tch::no_grad(|| {
        let norm = |g: &[Tensor]| dot(g, g, shared).double_value(&[]).sqrt();
        let norms: Vec<(f64, f64)> = widths.iter().map(|w| (w.width, norm(&w.grads))).collect();
        let Some((full, narrow)) = widths.split_first() else {
            return Interference { norms, cosine_full_vs_narrow: None, cosine_per_width: Vec::new() };
        };
        let cos = |a: &[Tensor], b: &[Tensor]| {
            let d = dot(a, b, shared).double_value(&[]);
            let n = norm(a) * norm(b);
            if n > 0.0 {
                d / n
            } else {
                0.0
            }
        };
        let cosine_per_width = narrow.iter().map(|w| (w.width, cos(&full.grads, &w.grads))).collect();
        let cosine_full_vs_narrow = (!narrow.is_empty()).then(|| {
            let sum: Vec<Tensor> = (0..full.grads.len())
                .map(|i| narrow.iter().map(|w| w.grads[i].shallow_clone()).reduce(|a, b| a + b).expect("narrow widths"))
                .collect();
            cos(&full.grads, &sum)
        });
        Interference { norms, cosine_full_vs_narrow, cosine_per_width }
    })
}

/// Per-width trust ratio (`method.width_gradients = "trust"`): on every shared weight, each
/// width's gradient is rescaled to the mean of the norms the widths put on that weight (widths
/// that put none do not count), so every width moves a layer by the same magnitude and none is
/// set by the others' (the LARS trust ratio of You et al. 2017, taken per width and layer). The
/// sum keeps the magnitude of the plain sum's parts; the optimiser (LARS) then adapts it as
/// usual. Private (BN) gradients are left as they are. On the device: no host sync.
pub fn equalise_norms(widths: &mut [WidthGrad], shared: &[bool]) {
    tch::no_grad(|| {
        for (i, _) in shared.iter().enumerate().filter(|(_, s)| **s) {
            let norms: Vec<Tensor> = widths.iter().map(|w| w.grads[i].norm()).collect();
            let norms = Tensor::stack(&norms, 0);
            let count = norms.gt(0.0).sum(norms.kind()).clamp_min(1.0);
            let mean = norms.sum(norms.kind()) / count;
            for (k, w) in widths.iter_mut().enumerate() {
                // a zero gradient stays zero: 0 · (mean / tiny) = 0
                let scale = &mean / norms.get(k as i64).clamp_min(f64::from(f32::MIN_POSITIVE));
                w.grads[i] = &w.grads[i] * scale;
            }
        }
    })
}

/// Gradient surgery (`method.width_gradients = "project"`): when `grad` conflicts with
/// `reference` (negative dot product over the concatenated shared weights), removes its
/// component along it, `g ← g − (⟨g, r⟩ / ‖r‖²)·r` on the shared weights; otherwise leaves it
/// (PCGrad, Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", with the full width's
/// gradient as the one kept). On the device: no host sync.
pub fn project_away_conflict(grad: &mut WidthGrad, reference: &WidthGrad, shared: &[bool]) {
    tch::no_grad(|| {
        let d = dot(&grad.grads, &reference.grads, shared);
        let rr = dot(&reference.grads, &reference.grads, shared);
        // c = min(⟨g, r⟩, 0) / ‖r‖²: 0 when they agree (or r = 0), so g is left exactly as it is
        let c = d.clamp_max(0.0) / rr.clamp_min(f64::MIN_POSITIVE);
        for ((g, r), &s) in grad.grads.iter_mut().zip(&reference.grads).zip(shared) {
            if s {
                *g = &*g - r * c.to_kind(r.kind());
            }
        }
    })
}

/// Writes the sum of `widths`' gradients into the parameters' gradients (the optimiser's step
/// then takes it as if the widths had accumulated it themselves).
pub fn set_sum(params: &[(Tensor, bool)], widths: &[WidthGrad]) {
    for (i, (p, _)) in params.iter().enumerate() {
        let Some(sum) = tch::no_grad(|| widths.iter().map(|w| w.grads[i].shallow_clone()).reduce(|a, b| a + b)) else {
            continue;
        };
        let g = p.grad();
        if g.defined() {
            tch::no_grad(|| g.shallow_clone().copy_(&sum));
        } else {
            // tch has no setter for `.grad`: let autograd allocate it, d/dp Σ(p·s) = s exactly
            (p * sum.detach()).sum(sum.kind()).backward();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn wg(width: f64, vals: &[[f32; 2]]) -> WidthGrad {
        WidthGrad { width, grads: vals.iter().map(|v| Tensor::from_slice(v).view([1, 2])).collect() }
    }

    #[test]
    fn interference_figures_by_hand() {
        // two shared weights; full width g1 = ([1, 0], [0, 1]), narrow g2 = ([-1, 0], [0, 0]),
        // g3 = ([0, 0], [0, 2]): ‖g1‖ = √2, ‖g2‖ = 1, ‖g3‖ = 2; g2 + g3 = ([-1, 0], [0, 2])
        // cos(g1, g2+g3) = (−1 + 2) / (√2·√5) = 0.316228; cos(g1, g2) = −1/√2, cos(g1, g3) = 1/√2
        let widths = [
            wg(1.0, &[[1.0, 0.0], [0.0, 1.0]]),
            wg(0.5, &[[-1.0, 0.0], [0.0, 0.0]]),
            wg(0.25, &[[0.0, 0.0], [0.0, 2.0]]),
        ];
        let i = interference(&widths, &[true, true]);
        let norms: Vec<f64> = i.norms.iter().map(|n| n.1).collect();
        assert!(
            (norms[0] - 2f64.sqrt()).abs() < 1e-12 && (norms[1] - 1.0).abs() < 1e-12 && (norms[2] - 2.0).abs() < 1e-12
        );
        assert!((i.cosine_full_vs_narrow.unwrap() - 1.0 / (2f64.sqrt() * 5f64.sqrt())).abs() < 1e-12);
        assert!((i.cosine_per_width[0].1 + 1.0 / 2f64.sqrt()).abs() < 1e-12);
        assert!((i.cosine_per_width[1].1 - 1.0 / 2f64.sqrt()).abs() < 1e-12);
        // a private (BN) tensor does not count
        let i = interference(&widths, &[true, false]);
        assert!((i.norms[0].1 - 1.0).abs() < 1e-12 && (i.norms[2].1 - 0.0).abs() < 1e-12);
        // one width: no cosine
        assert_eq!(interference(&widths[..1], &[true, true]).cosine_full_vs_narrow, None);
    }

    #[test]
    fn projection_and_trust_by_hand() {
        // g = [1, -2] conflicts with r = [1, 1] (⟨g, r⟩ = −1, ‖r‖² = 2): g − (−1/2)·r = [1.5, −1.5]
        let r = wg(1.0, &[[1.0, 1.0]]);
        let mut g = wg(0.5, &[[1.0, -2.0]]);
        project_away_conflict(&mut g, &r, &[true]);
        assert_eq!(Vec::<f32>::try_from(g.grads[0].flatten(0, -1)).unwrap(), vec![1.5, -1.5]);
        // an agreeing gradient is left exactly alone, and so is a private tensor
        let mut h = wg(0.5, &[[2.0, 0.0], [-5.0, 0.0]]);
        let r2 = wg(1.0, &[[1.0, 1.0], [1.0, 0.0]]);
        project_away_conflict(&mut h, &r2, &[true, false]);
        assert_eq!(Vec::<f32>::try_from(h.grads[0].flatten(0, -1)).unwrap(), vec![2.0, 0.0]);
        assert_eq!(Vec::<f32>::try_from(h.grads[1].flatten(0, -1)).unwrap(), vec![-5.0, 0.0]);
        // the dot product is over all shared tensors: ([1, 0], [0, -3]) against ([1, 0], [0, 1])
        // gives ⟨g, r⟩ = 1 − 3 = −2, ‖r‖² = 2, c = −1: g + r = ([2, 0], [0, −2])
        let mut m = wg(0.5, &[[1.0, 0.0], [0.0, -3.0]]);
        project_away_conflict(&mut m, &wg(1.0, &[[1.0, 0.0], [0.0, 1.0]]), &[true, true]);
        assert_eq!(Vec::<f32>::try_from(m.grads[0].flatten(0, -1)).unwrap(), vec![2.0, 0.0]);
        assert_eq!(Vec::<f32>::try_from(m.grads[1].flatten(0, -1)).unwrap(), vec![0.0, -2.0]);

        // trust: on the shared tensor the widths' norms are 5 ([3, 4]), 1 ([0, 1]) and 0: the
        // mean over the widths that give one is 3, so [3, 4] → [1.8, 2.4], [0, 1] → [0, 3], the
        // zero stays zero; the private tensor keeps its values
        let mut ws = [
            wg(1.0, &[[3.0, 4.0], [7.0, 0.0]]),
            wg(0.5, &[[0.0, 1.0], [0.0, 0.5]]),
            wg(0.25, &[[0.0, 0.0], [1.0, 1.0]]),
        ];
        equalise_norms(&mut ws, &[true, false]);
        let v = |w: &WidthGrad, i: usize| Vec::<f32>::try_from(w.grads[i].flatten(0, -1)).unwrap();
        let close = |a: Vec<f32>, b: [f32; 2]| (a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6;
        assert!(close(v(&ws[0], 0), [1.8, 2.4]), "{:?}", v(&ws[0], 0));
        assert!(close(v(&ws[1], 0), [0.0, 3.0]), "{:?}", v(&ws[1], 0));
        assert_eq!(v(&ws[2], 0), vec![0.0, 0.0]);
        assert_eq!((v(&ws[0], 1), v(&ws[1], 1), v(&ws[2], 1)), (vec![7.0, 0.0], vec![0.0, 0.5], vec![1.0, 1.0]));
    }

    #[test]
    fn taking_apart_and_summing_back_gives_the_accumulated_gradient() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]).set_requires_grad(true);
        let params = vec![(p.shallow_clone(), true)];
        (&p * 3.0).sum(Kind::Float).backward();
        let a = take(&params, 1.0);
        assert_eq!(Vec::<f32>::try_from(p.grad().flatten(0, -1)).unwrap(), vec![0.0, 0.0], "zeroed");
        (&p * &p).sum(Kind::Float).backward(); // 2p = [2, 4]
        let b = take(&params, 0.5);
        set_sum(&params, &[a, b]);
        assert_eq!(Vec::<f32>::try_from(p.grad().flatten(0, -1)).unwrap(), vec![5.0, 7.0]);
        // a parameter that never had a gradient gets one
        let q = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let qp = vec![(q.shallow_clone(), true)];
        let z = take(&qp, 1.0);
        set_sum(&qp, &[z, wg(0.5, &[[1.0, 1.0]])]);
        assert_eq!(Vec::<f32>::try_from(q.grad().flatten(0, -1)).unwrap(), vec![1.0, 1.0]);
    }
}
