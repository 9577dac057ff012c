//! The trainer step both benchmark binaries time: one width with plain BYOL, or every width of
//! the sandwich rule with DSPNet, none of the method's optional switches. Shared by
//! `dspnet-bench` (`step`) and `dspnet-gpu-check` (`mod step_shape;` in each).

use dspnet_run::config::Method;
use dspnet_run::RunConfig;

/// The widths of the all-widths step.
pub const WIDTHS: [f64; 4] = [0.25, 0.5, 0.75, 1.0];

/// Sets `cfg` to the single-width BYOL step (width 1.0) or, with `all_widths`, the DSPNet step
/// over [`WIDTHS`]; clears the train-width, random-width and loss-weight switches.
pub fn shape_step(cfg: &mut RunConfig, all_widths: bool) {
    if all_widths {
        cfg.model.widths = WIDTHS.to_vec();
        cfg.method.name = Method::Dspnet;
    } else {
        cfg.model.widths = vec![1.0];
        cfg.method.name = Method::Byol;
    }
    cfg.method.train_widths = None;
    cfg.method.random_widths = None;
    cfg.method.loss_weights = None;
}
