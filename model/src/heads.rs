//! Slimmable BYOL projector / predictor (Grill et al. 2020, "Bootstrap Your Own Latent", §3.3:
//! Linear -> BN -> ReLU -> Linear), made slimmable as in DSPNet: the hidden layer and, for the
//! projector, the input are sliced with the width; the output embedding is never sliced, so
//! every width's embedding lives in the same space for the BYOL / distillation losses.

use crate::error::{ModelError, Result};
use crate::slimmable::{SlimLinear, SwitchableBatchNorm, WidthList};
use tch::{nn, Tensor};

/// `Linear(in(w) -> hidden(w), no bias) -> SwitchableBatchNorm1d -> ReLU -> Linear(hidden(w) ->
/// out_dim, bias)`, with `in(w) = slim(in_full, w)` when `in_sliced` (projector on backbone
/// features) or `in_full` (predictor on the projector's 256-d output), `hidden(w) =
/// slim(hidden_full, w)`.
///
/// The first linear has no bias because the BN right after it cancels any bias (BYOL's
/// reference uses one; it is a no-op up to the BN's shift). VarStore names: `fc1.weight`,
/// `bn1.w0_25.{weight,bias,running_mean,running_var}`, `fc2.weight`, `fc2.bias`.
#[derive(Debug)]
pub struct SlimMlpHead {
    fc1: SlimLinear,
    bn1: SwitchableBatchNorm,
    fc2: SlimLinear,
    widths: WidthList,
}

impl SlimMlpHead {
    /// Creates the head under `vs`.
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
        if in_full < 1 || hidden_full < 1 || out_dim < 1 {
            return Err(ModelError::InvalidConfig(format!(
                "MLP head dimensions must be >= 1, got in={in_full} hidden={hidden_full} out={out_dim}"
            )));
        }
        Ok(Self {
            fc1: SlimLinear::new(&vs.sub("fc1"), in_full, hidden_full, false, in_sliced, true),
            bn1: SwitchableBatchNorm::new(&vs.sub("bn1"), hidden_full, widths),
            fc2: SlimLinear::new(&vs.sub("fc2"), hidden_full, out_dim, true, true, false),
            widths: widths.clone(),
        })
    }

    /// Synchronised batch norm for the head's switchable BN (see
    /// [`SwitchableBatchNorm::set_cross_replica`]); `None` turns it off.
    pub fn set_cross_replica(&mut self, group: Option<std::sync::Arc<dyn crate::sync::CrossReplicaSum>>) {
        self.bn1.set_cross_replica(group);
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
        self.fc1.num_params(width) + self.bn1.num_params(width) + self.fc2.num_params(width)
    }

    /// `x [B, in_features(w)]` (fp32 or bf16) to `[B, out_dim]` of the same kind. `train` uses
    /// batch statistics in the BN and updates only this width's running statistics (needs
    /// B >= 2).
    ///
    /// # Errors
    /// [`ModelError::WidthNotInList`], [`ModelError::BadInput`], [`ModelError::Torch`].
    pub fn forward_t(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        self.widths.index_of(width)?;
        let h = self.fc1.f_forward(x, width)?;
        // In-place ReLU on the fresh BN output (BN's backward needs its input, not its output).
        let h = self.bn1.f_forward_t(&h, width, train)?.f_relu_()?;
        self.fc2.f_forward(&h, width)
    }
}
