//! The collapse monitor: how spread out the online network's projections are (solo-learn logs
//! it as `z_std`). BYOL-family training collapses when every image maps to the same point.

use tch::{Kind, Tensor};

/// Standard deviation (n − 1 divisor) over the batch of the l2-normalised projection `[B, D]`,
/// averaged over dimensions (no gradient), as a 0-dim f32 tensor on the projection's device (read
/// with the step's other figures in one host sync). Collapse shows as → 0; a healthy value is
/// near `1/sqrt(D)`.
pub fn feature_std(projection: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let z = projection.detach();
        let z = &z / z.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
        z.std_dim(Some([0].as_slice()), true, false).mean(Kind::Float)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn spread_by_hand_and_zero_for_a_collapsed_batch() {
        // rows (1, 0) and (0, 1) once normalised: per dimension the values are {1, 0}, mean 1/2,
        // squared deviations 1/4 + 1/4 over n − 1 = 1: std sqrt(1/2)
        let z = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 3.0]).view([2, 2]);
        assert!((feature_std(&z).double_value(&[]) - 0.5f64.sqrt()).abs() < 1e-6);
        // every row the same direction: no spread
        let same = Tensor::ones([8, 4], (Kind::Float, Device::Cpu));
        assert!(feature_std(&same).double_value(&[]).abs() < 1e-7);
    }
}
