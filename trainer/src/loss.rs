//! BYOL's regression loss, used both for SSL at full width and for in-place distillation from the
//! momentum teacher at narrower widths.

use tch::{Kind, Tensor};

/// BYOL's normalised regression loss (Grill et al. 2020, eq. 2):
/// `L(p, z) = mean_i ‖p_i/‖p_i‖ − z_i/‖z_i‖‖² = mean_i (2 − 2·cos(p_i, z_i))`.
///
/// `prediction`: `[B, D]` online predictor output; `target`: `[B, D]` teacher projection (no
/// gradient flows into it: it is detached here). Both are computed in fp32 whatever the input
/// dtype. Returns a scalar fp32 tensor in [0, 4].
pub fn regression_loss(prediction: &Tensor, target: &Tensor) -> Tensor {
    let p = prediction.to_kind(Kind::Float);
    let z = target.detach().to_kind(Kind::Float);
    let cos = Tensor::cosine_similarity(&p, &z, 1, 1e-8);
    (cos * -2.0 + 2.0).mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_values() {
        // p = (1, 0), z = (1, 1): cos = 1/sqrt(2) → 2 - sqrt(2) = 0.585786...
        // p = (0, 2), z = (0, -1): cos = -1 → 4.
        let p = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 2.0]).view([2, 2]);
        let z = Tensor::from_slice(&[1.0f32, 1.0, 0.0, -1.0]).view([2, 2]);
        let l = regression_loss(&p, &z).double_value(&[]);
        let expected = ((2.0 - 2.0f64.sqrt()) + 4.0) / 2.0;
        assert!((l - expected).abs() < 1e-6, "{l} vs {expected}");
    }

    #[test]
    fn scale_invariant_and_zero_for_aligned_vectors() {
        let p = Tensor::from_slice(&[3.0f32, 4.0]).view([1, 2]);
        let z = Tensor::from_slice(&[0.3f32, 0.4]).view([1, 2]);
        assert!(regression_loss(&p, &z).double_value(&[]).abs() < 1e-6);
    }

    #[test]
    fn no_gradient_reaches_the_target() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2]).set_requires_grad(true);
        let z = Tensor::from_slice(&[2.0f32, 1.0]).view([1, 2]).set_requires_grad(true);
        regression_loss(&p, &z).backward();
        assert!(p.grad().defined());
        assert!(!z.grad().defined());
    }
}
