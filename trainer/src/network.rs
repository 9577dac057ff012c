//! The online network (backbone + projector + predictor) and the momentum teacher (backbone +
//! projector), each in its own `VarStore`, with the EMA update between them.

use crate::error::TrainerError;
use dspnet_model::heads::SlimMlpHead;
use dspnet_model::resnet::SlimResNet;
use dspnet_model::{ComputeFormat, WidthList};
use dspnet_run::config::{NarrowPredictor, RunConfig};
use tch::{nn, Device, Tensor};

/// Backbone and heads of one branch. The teacher has no predictor (BYOL §3.1).
pub struct Branch {
    pub vs: nn::VarStore,
    pub backbone: SlimResNet,
    pub projector: SlimMlpHead,
    pub predictor: Option<SlimMlpHead>,
    /// The narrow widths' own predictor (`method.narrow_predictor = "separate"`, as US3L):
    /// used by [`Branch::predict`] below the largest width of `model.widths`. `None` for the
    /// default shared predictor and for the teacher.
    pub predictor_narrow: Option<SlimMlpHead>,
    /// The largest width of `model.widths` (the one `predictor` serves when
    /// `predictor_narrow` exists).
    pub largest: f64,
}

impl Branch {
    /// Builds a branch on `device` from the run configuration. Variables live under
    /// `backbone.*`, `projector.*` and `predictor.*` (and `predictor_narrow.*` with
    /// `method.narrow_predictor = "separate"`); projector and predictors use the hidden BN of
    /// `heads.bn`.
    pub fn new(cfg: &RunConfig, device: Device, with_predictor: bool) -> Result<Self, TrainerError> {
        let vs = nn::VarStore::new(device);
        let widths = WidthList::new(cfg.model.widths.clone())?;
        let root = vs.root();
        let norm = cfg.heads.bn.to_model();
        let backbone = SlimResNet::new(&(&root / "backbone"), &cfg.model)?;
        let feat = backbone.feature_dim(1.0);
        let projector = SlimMlpHead::with_norm(
            &(&root / "projector"),
            feat,
            true,
            cfg.heads.hidden,
            cfg.heads.out_dim,
            &widths,
            norm,
        )?;
        let predictor_at = |name: &str| {
            SlimMlpHead::with_norm(
                &(&root / name),
                cfg.heads.out_dim,
                false,
                cfg.heads.hidden,
                cfg.heads.out_dim,
                &widths,
                norm,
            )
        };
        let predictor = if with_predictor { Some(predictor_at("predictor")?) } else { None };
        let predictor_narrow = if with_predictor && cfg.method.narrow_predictor == NarrowPredictor::Separate {
            Some(predictor_at("predictor_narrow")?)
        } else {
            None
        };
        Ok(Branch { vs, backbone, projector, predictor, predictor_narrow, largest: widths.largest() })
    }

    /// Every head of the branch: projector, predictor and narrow predictor where present (for
    /// settings that apply to all, e.g. synchronised BN).
    pub fn heads_mut(&mut self) -> Vec<&mut SlimMlpHead> {
        let mut out = vec![&mut self.projector];
        out.extend(self.predictor.as_mut());
        out.extend(self.predictor_narrow.as_mut());
        out
    }

    /// Projection `[B, out_dim]` fp32 of images `[B, C, H, W]` (already in `format`, see
    /// [`ComputeFormat::apply`]) at width multiplier `width`. The backbone runs as `format`
    /// says; its features are cast to fp32 before the heads, so heads and loss stay fp32.
    ///
    /// Errors: model errors (width not in the list, bad shape), autocast failures.
    pub fn project(
        &self,
        images: &Tensor,
        width: f64,
        train: bool,
        format: &ComputeFormat,
    ) -> Result<Tensor, TrainerError> {
        let f = format
            .run_backbone(self.vs.device(), || self.backbone.forward_t(images, width, train))??
            .to_kind(tch::Kind::Float);
        Ok(self.projector.forward_t(&f, width, train)?)
    }

    /// Prediction `[B, out_dim]` fp32: predictor(projection) at `width`, through
    /// `predictor_narrow` when the branch has one and `width` is below the largest. Errors if
    /// built without predictor.
    pub fn predict(&self, projection: &Tensor, width: f64, train: bool) -> Result<Tensor, TrainerError> {
        let narrow =
            self.predictor_narrow.as_ref().filter(|_| width < self.largest - dspnet_model::slimmable::WIDTH_TOLERANCE);
        let p = narrow
            .or(self.predictor.as_ref())
            .ok_or_else(|| TrainerError::option("heads", "the momentum teacher has no predictor (BYOL §3.1)"))?;
        Ok(p.forward_t(projection, width, train)?)
    }
}

/// Copies every teacher variable from the online variable of the same name (initialisation,
/// BYOL §3.1: the teacher starts as the online network).
pub fn copy_into_teacher(teacher: &Branch, online: &Branch) -> Result<(), TrainerError> {
    ema_update(teacher, online, 0.0)
}

/// EMA update of the momentum teacher (BYOL §3.1, eq. 1): `ξ ← τ·ξ + (1 − τ)·θ` for every
/// teacher variable, parameters AND BN running statistics (our choice: the teacher runs its BN
/// in train mode, so its running statistics only matter when the teacher itself is evaluated,
/// and then they follow the online network's like the weights do). Integer buffers are copied.
///
/// Computed as `ξ.lerp_(θ, 1 − τ)` (`ξ + (1 − τ)(θ − ξ)`): one fused pass per tensor, no
/// temporary.
///
/// Errors: a teacher variable with no online counterpart (different architectures).
pub fn ema_update(teacher: &Branch, online: &Branch, tau: f64) -> Result<(), TrainerError> {
    let online_vars = online.vs.variables();
    tch::no_grad(|| {
        for (name, mut t) in teacher.vs.variables() {
            let o = online_vars.get(&name).ok_or_else(|| {
                TrainerError::option("model", format!("teacher variable {name} has no online counterpart"))
            })?;
            if tau == 0.0 || !t.is_floating_point() {
                t.copy_(o);
            } else {
                let _ = t.f_lerp_(o, 1.0 - tau)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dspnet_run::config::RunConfig;

    fn tiny_config() -> RunConfig {
        dspnet_run::testing::tiny_config(&[0.25, 0.5, 0.75, 1.0])
    }

    #[test]
    fn ema_update_by_hand() {
        let cfg = tiny_config();
        let online = Branch::new(&cfg, Device::Cpu, true).unwrap();
        let teacher = Branch::new(&cfg, Device::Cpu, false).unwrap();
        tch::no_grad(|| {
            for (_, mut t) in online.vs.variables() {
                let _ = t.fill_(1.0);
            }
            for (_, mut t) in teacher.vs.variables() {
                let _ = t.fill_(0.0);
            }
        });
        // ξ ← 0.9·0 + 0.1·1 = 0.1, then ξ ← 0.9·0.1 + 0.1·1 = 0.19
        ema_update(&teacher, &online, 0.9).unwrap();
        ema_update(&teacher, &online, 0.9).unwrap();
        let vars = teacher.vs.variables();
        assert!(!vars.is_empty());
        for (name, t) in vars {
            let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
            assert!((lo - 0.19).abs() < 1e-6 && (hi - 0.19).abs() < 1e-6, "{name}: {lo}..{hi}");
        }
        // the teacher has no predictor; every teacher variable exists in the online network
        assert!(teacher.vs.variables().keys().all(|k| !k.starts_with("predictor")));
    }

    #[test]
    fn copy_into_teacher_makes_equal_weights() {
        let cfg = tiny_config();
        let online = Branch::new(&cfg, Device::Cpu, true).unwrap();
        let teacher = Branch::new(&cfg, Device::Cpu, false).unwrap();
        copy_into_teacher(&teacher, &online).unwrap();
        let ov = online.vs.variables();
        for (name, t) in teacher.vs.variables() {
            assert!(t.equal(&ov[&name]), "{name}");
        }
    }
}
