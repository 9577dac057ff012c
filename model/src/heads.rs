//! Slimmable BYOL projector / predictor (Grill et al. 2020, "Bootstrap Your Own Latent", §3.3:
//! Linear -> BN -> ReLU -> Linear), made slimmable as in DSPNet: the hidden layer and, for the
//! projector, the input are sliced with the width; the output embedding is never sliced, so
//! every width's embedding lives in the same space for the BYOL / distillation losses.

use crate::error::{ModelError, Result};
use crate::slimmable::{SharedBatchNorm, SlimLinear, SwitchableBatchNorm, WidthList};
use tch::{nn, Tensor};

/// `Linear(in(w) -> hidden(w), no bias) -> SwitchableBatchNorm1d -> ReLU -> Linear(hidden(w) ->
/// out_dim, bias)`, with `in(w) = slim(in_full, w)` when `in_sliced` (projector on backbone
/// features) or `in_full` (predictor on the projector's 256-d output), `hidden(w) =
/// slim(hidden_full, w)`.
///
/// The first linear has no bias because the BN right after it cancels any bias (BYOL's
/// reference uses one; it is a no-op up to the BN's shift). VarStore names: `fc1.weight`,
/// `bn1.w0_25.{weight,bias,running_mean,running_var}`, `fc2.weight`, `fc2.bias`; with
/// [`HeadNorm::Shared`] the BN is one [`SharedBatchNorm`] instead, named
/// `bn1.{weight,bias,running_mean,running_var}`.
#[derive(Debug)]
pub struct SlimMlpHead {
    fc1: SlimLinear,
    bn1: HeadBn,
    fc2: SlimLinear,
    widths: WidthList,
}

/// Which batch norm the hidden layer of a [`SlimMlpHead`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeadNorm {
    /// A private BN per width ([`SwitchableBatchNorm`], Slimmable Networks §3.1; SlimCLR uses it
    /// inside projector and predictor too). The default.
    #[default]
    Switchable,
    /// ONE BN over the full hidden size whose first `hidden(w)` channels serve width `w`
    /// ([`SharedBatchNorm`], US-Nets style).
    Shared,
}

#[derive(Debug)]
enum HeadBn {
    Switchable(SwitchableBatchNorm),
    Shared(SharedBatchNorm),
}

impl SlimMlpHead {
    /// Creates the head under `vs` with switchable BN (see [`Self::with_norm`]).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when a dimension is < 1.
    pub fn new(
        vs: &nn::Path,
        in_full: i64,
        in_sliced: bool,
        hidden_full: i64,
        out_dim: i64,
        widths: &WidthList,
    ) -> Result<Self> {
        Self::with_norm(vs, in_full, in_sliced, hidden_full, out_dim, widths, HeadNorm::Switchable)
    }

    /// Creates the head under `vs` with the hidden BN `norm` ([`HeadNorm::Switchable`]: one BN
    /// per width of `widths`; [`HeadNorm::Shared`]: one BN of `hidden_full` channels).
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] when a dimension is < 1.
    pub fn with_norm(
        vs: &nn::Path,
        in_full: i64,
        in_sliced: bool,
        hidden_full: i64,
        out_dim: i64,
        widths: &WidthList,
        norm: HeadNorm,
    ) -> Result<Self> {
        if in_full < 1 || hidden_full < 1 || out_dim < 1 {
            return Err(ModelError::InvalidConfig(format!(
                "MLP head dimensions must be >= 1, got in={in_full} hidden={hidden_full} out={out_dim}"
            )));
        }
        Ok(Self {
            fc1: SlimLinear::new(&vs.sub("fc1"), in_full, hidden_full, false, in_sliced, true),
            bn1: match norm {
                HeadNorm::Switchable => {
                    HeadBn::Switchable(SwitchableBatchNorm::new(&vs.sub("bn1"), hidden_full, widths))
                }
                HeadNorm::Shared => HeadBn::Shared(SharedBatchNorm::new(&vs.sub("bn1"), hidden_full)),
            },
            fc2: SlimLinear::new(&vs.sub("fc2"), hidden_full, out_dim, true, true, false),
            widths: widths.clone(),
        })
    }

    /// Synchronised batch norm for the head's BN (see
    /// [`SwitchableBatchNorm::set_cross_replica`]); `None` turns it off.
    pub fn set_cross_replica(&mut self, group: Option<std::sync::Arc<dyn crate::sync::CrossReplicaSum>>) {
        match &mut self.bn1 {
            HeadBn::Switchable(bn) => bn.set_cross_replica(group),
            HeadBn::Shared(bn) => bn.set_cross_replica(group),
        }
    }

    /// The hidden BN's kind.
    pub fn norm(&self) -> HeadNorm {
        match self.bn1 {
            HeadBn::Switchable(_) => HeadNorm::Switchable,
            HeadBn::Shared(_) => HeadNorm::Shared,
        }
    }

    /// Input features expected at `width`.
    pub fn in_features(&self, width: f64) -> i64 {
        self.fc1.in_features(width)
    }

    /// Output dimension (same at every width).
    pub fn out_dim(&self) -> i64 {
        self.fc2.out_features(1.0)
    }

    /// Parameters of the standalone head at `width` (linear slices, that width's BN affine).
    pub fn num_params(&self, width: f64) -> i64 {
        let bn = match &self.bn1 {
            HeadBn::Switchable(bn) => bn.num_params(width),
            HeadBn::Shared(bn) => bn.num_params(width),
        };
        self.fc1.num_params(width) + bn + self.fc2.num_params(width)
    }

    /// `x [B, in_features(w)]` (fp32 or bf16) to `[B, out_dim]` of the same kind. `train` uses
    /// batch statistics in the BN and updates only this width's running statistics (switchable
    /// BN) or the first `hidden(w)` running statistics of the shared BN (needs B >= 2).
    ///
    /// # Errors
    /// [`ModelError::WidthNotInList`], [`ModelError::BadInput`], [`ModelError::Torch`].
    pub fn forward_t(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        self.widths.index_of(width)?;
        let h = self.fc1.f_forward(x, width)?;
        // In-place ReLU on the fresh BN output (BN's backward needs its input, not its output).
        let mut h = match &self.bn1 {
            HeadBn::Switchable(bn) => bn.f_forward_t(&h, width, train)?,
            HeadBn::Shared(bn) => bn.f_forward_t(&h, width, train)?,
        };
        let h = h.f_relu_()?;
        self.fc2.f_forward(&h, width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// A predictor-like head (input not sliced) of 3 -> 8 -> 2 with a shared hidden BN over the
    /// widths 0.5 and 1.0, every weight set to known non-trivial values.
    fn shared_head() -> (nn::VarStore, SlimMlpHead) {
        let vs = nn::VarStore::new(Device::Cpu);
        let widths = WidthList::new(vec![0.5, 1.0]).unwrap();
        let head = SlimMlpHead::with_norm(&vs.root().sub("h"), 3, false, 8, 2, &widths, HeadNorm::Shared).unwrap();
        let v = vs.variables();
        tch::no_grad(|| {
            let set = |name: &str, t: Tensor| {
                v[name].shallow_clone().copy_(&t);
            };
            set("h.fc1.weight", Tensor::arange(24, (Kind::Float, Device::Cpu)).view([8, 3]).sin());
            set("h.fc2.weight", Tensor::arange(16, (Kind::Float, Device::Cpu)).view([2, 8]).cos());
            set("h.fc2.bias", Tensor::from_slice(&[0.5f32, -0.25]));
            set("h.bn1.weight", Tensor::arange(8, (Kind::Float, Device::Cpu)) * 0.25 + 0.5);
            set("h.bn1.bias", Tensor::arange(8, (Kind::Float, Device::Cpu)) * -0.1);
        });
        (vs, head)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn shared_head_bn_uses_the_first_channels_of_one_bn() {
        let (vs, head) = shared_head();
        assert_eq!(head.norm(), HeadNorm::Shared);
        // one BN variable set (no per-width entries)
        let mut names: Vec<String> = vs.variables().keys().filter(|k| k.contains("bn1")).cloned().collect();
        names.sort();
        assert_eq!(names, ["h.bn1.bias", "h.bn1.running_mean", "h.bn1.running_var", "h.bn1.weight"]);
        let v = vs.variables();
        let x = Tensor::from_slice(&[0.3f32, -1.0, 2.0, 1.5, 0.2, -0.7, -0.4, 0.9, 0.1, 2.2, -1.3, 0.0]).view([4, 3]);

        // train mode at 0.5: 4 hidden channels, batch statistics (biased variance), eps 1e-5
        let (fc1, fc2) = (v["h.fc1.weight"].narrow(0, 0, 4), v["h.fc2.weight"].narrow(1, 0, 4));
        let (g, b) = (v["h.bn1.weight"].narrow(0, 0, 4), v["h.bn1.bias"].narrow(0, 0, 4));
        let h = x.matmul(&fc1.tr());
        let mean = h.mean_dim(Some([0].as_slice()), true, Kind::Float);
        let var = (&h - &mean).square().mean_dim(Some([0].as_slice()), true, Kind::Float);
        let y = ((&h - &mean) / (var.shallow_clone() + 1e-5).sqrt() * &g + &b).relu();
        let want = y.matmul(&fc2.tr()) + &v["h.fc2.bias"];
        let got = head.forward_t(&x, 0.5, true).unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "train: {got} vs {want}");
        // running statistics: the first 4 channels moved by momentum 0.1 (unbiased variance, n = 4),
        // the other 4 untouched
        let rm = v["h.bn1.running_mean"].shallow_clone();
        let rv = v["h.bn1.running_var"].shallow_clone();
        assert!(max_diff(&rm.narrow(0, 0, 4), &(mean.view([4]) * 0.1)) < 1e-6, "{rm}");
        assert!(max_diff(&rv.narrow(0, 0, 4), &(var.view([4]) * (4.0 / 3.0) * 0.1 + 0.9)) < 1e-5, "{rv}");
        assert_eq!(rm.narrow(0, 4, 4).abs().max().double_value(&[]), 0.0);
        assert_eq!(rv.narrow(0, 4, 4).double_value(&[0]), 1.0);

        // eval mode at 0.5: the running statistics of the first 4 channels
        let h = x.matmul(&fc1.tr());
        let y = ((&h - rm.narrow(0, 0, 4)) / (rv.narrow(0, 0, 4) + 1e-5).sqrt() * &g + &b).relu();
        let want = y.matmul(&fc2.tr()) + &v["h.fc2.bias"];
        let got = head.forward_t(&x, 0.5, false).unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "eval: {got} vs {want}");

        // the gradient of the BN affine lands in the first 4 channels only
        head.forward_t(&x, 0.5, true).unwrap().sum(Kind::Float).backward();
        let gg = v["h.bn1.weight"].grad();
        assert!(gg.narrow(0, 0, 4).abs().sum(Kind::Float).double_value(&[]) > 0.0);
        assert_eq!(gg.narrow(0, 4, 4).abs().sum(Kind::Float).double_value(&[]), 0.0);
        // the same parameter count as the switchable head at every width
        let vs2 = nn::VarStore::new(Device::Cpu);
        let switchable =
            SlimMlpHead::new(&vs2.root(), 3, false, 8, 2, &WidthList::new(vec![0.5, 1.0]).unwrap()).unwrap();
        assert_eq!(head.num_params(0.5), switchable.num_params(0.5));
        assert!(vs2.variables().contains_key("bn1.w0_50.weight"));
    }
}
