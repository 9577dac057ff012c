//! `dspnet-eval`'s work: load a run, evaluate every width with the chosen protocols (and
//! optionally the same architecture at random initialisation), write `results.json` and a plot.

use crate::checkpoint::{self, CONFIG};
use crate::config::RunConfig;
use crate::dspnet::ComputeFormat;
use crate::error::TrainerError;
use crate::eval::{calibrate_bn, extract_features, knn_top1, linear_probe_top1, EvalRecord};
use crate::network::Branch;
use dspnet_pipeline::loader::{Loader, LoaderMode};
use serde_json::json;
use std::path::PathBuf;
use tch::Device;

/// Evaluation protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Weighted kNN on frozen features.
    Knn,
    /// Linear probe on frozen features.
    Linear,
}

impl std::str::FromStr for Protocol {
    type Err = TrainerError;
    fn from_str(s: &str) -> Result<Self, TrainerError> {
        match s.trim() {
            "knn" => Ok(Protocol::Knn),
            "linear" => Ok(Protocol::Linear),
            p => Err(TrainerError::Config(format!("--protocol {p}: unknown protocol; use knn, linear or knn,linear"))),
        }
    }
}

/// What to evaluate.
pub struct EvalRequest {
    pub run_dir: PathBuf,
    pub train_shards: Vec<String>,
    pub test_shards: Vec<String>,
    pub protocols: Vec<Protocol>,
    /// Widths to evaluate (`None`: every trained width).
    pub widths: Option<Vec<f64>>,
    /// Also evaluate the same architecture at random initialisation (same seed, fresh
    /// PyTorch-default BN statistics, as `model.eval()` on a new torchvision model).
    pub random_init: bool,
    /// Re-estimate every evaluated network's BN statistics on clean training images first.
    pub calibrate_bn: bool,
    pub device: Device,
}

/// Runs the evaluation; returns the records (also written to RUN/results.json, with a plot in
/// RUN/accuracy_vs_flops.png).
///
/// Errors: no or corrupt checkpoint, a width the run did not train, bad shard patterns, no
/// labelled test image.
pub fn evaluate_run(req: &EvalRequest) -> Result<Vec<EvalRecord>, TrainerError> {
    let cfg_path = req.run_dir.join(CONFIG);
    let cfg = RunConfig::load(&cfg_path, &[]).map_err(|e| match e {
        TrainerError::Config(m) if !cfg_path.exists() => TrainerError::Checkpoint(format!(
            "{} is not a dspnet run directory ({CONFIG} missing): {m}",
            req.run_dir.display()
        )),
        e => e,
    })?;
    let ckpt = checkpoint::load(&req.run_dir)?;
    if cfg.train.threads > 0 {
        tch::set_num_threads(cfg.train.threads as i32);
    }
    let trained = cfg.train_widths()?;
    let widths: Vec<f64> = match &req.widths {
        None => trained.as_slice().iter().rev().copied().collect(),
        Some(ws) => {
            for &w in ws {
                if trained.index_of(w).is_err() {
                    return Err(TrainerError::Config(format!(
                        "--widths {w}: this run did not train width {w} (trained: {:?})",
                        trained.as_slice()
                    )));
                }
            }
            ws.clone()
        }
    };
    let format = ComputeFormat::resolve(&cfg.train.precision, cfg.train.channels_last, req.device);
    let mut loader_cfg = cfg.loader.clone();
    loader_cfg.batch_size = cfg.eval.batch_size;
    loader_cfg.drop_last = false;
    loader_cfg.strict_data = false;
    let train_loader = Loader::new(
        req.train_shards.clone(),
        loader_cfg.clone(),
        cfg.augment.clone(),
        LoaderMode::Eval,
        0,
        1,
        req.device,
    )?;
    let test_loader =
        Loader::new(req.test_shards.clone(), loader_cfg, cfg.augment.clone(), LoaderMode::Eval, 0, 1, req.device)?;

    let pretrained = Branch::new(&cfg, req.device, true)?;
    checkpoint::restore_vars(&pretrained.vs, &ckpt, "online")?;
    let mut inits: Vec<(&str, Branch)> = vec![("pretrained", pretrained)];
    if req.random_init {
        tch::manual_seed(cfg.train.seed as i64);
        inits.push(("random", Branch::new(&cfg, req.device, true)?));
    }
    let img = cfg.augment.image_size as i64;
    let mut records = Vec::new();
    for (init, branch) in &inits {
        if req.calibrate_bn {
            calibrate_bn(branch, &widths, &train_loader, cfg.eval.bn_calibration_batches, format)?;
        }
        tracing::info!(init, "extracting features");
        let (train_f, train_y) = extract_features(branch, &widths, &train_loader, format)?;
        let (test_f, test_y) = extract_features(branch, &widths, &test_loader, format)?;
        let classes = train_y.max().int64_value(&[]).max(test_y.max().int64_value(&[])) + 1;
        for (i, &w) in widths.iter().enumerate() {
            let params = branch.backbone.num_params(w);
            let flops = branch.backbone.flops(w, img, img);
            for p in &req.protocols {
                let (top1, mut settings) = match p {
                    Protocol::Knn => (
                        knn_top1(&train_f[i], &train_y, &test_f[i], &test_y, cfg.eval.knn_k, cfg.eval.knn_t, classes),
                        json!({"k": cfg.eval.knn_k, "temperature": cfg.eval.knn_t, "features": "pooled backbone, l2-normalised, un-augmented centre view", "bn": "eval mode"}),
                    ),
                    Protocol::Linear => (
                        linear_probe_top1(
                            &train_f[i],
                            &train_y,
                            &test_f[i],
                            &test_y,
                            classes,
                            cfg.eval.linear_epochs,
                            cfg.eval.linear_lr,
                            cfg.eval.linear_batch,
                            cfg.train.seed,
                        )?,
                        json!({"epochs": cfg.eval.linear_epochs, "lr": cfg.eval.linear_lr, "optimizer": "adam, cosine", "batch": cfg.eval.linear_batch, "features": "pooled backbone, standardised, frozen (eval-mode BN), un-augmented centre view"}),
                    ),
                };
                let name = match p {
                    Protocol::Knn => "knn",
                    Protocol::Linear => "linear",
                };
                tracing::info!(init, width = w, protocol = name, top1, "result");
                settings["train_images"] = json!(train_y.size()[0]);
                settings["test_images"] = json!(test_y.size()[0]);
                settings["bn_calibrated"] = json!(req.calibrate_bn);
                records.push(EvalRecord {
                    width: w,
                    params,
                    flops,
                    protocol: name.into(),
                    top1,
                    init: init.to_string(),
                    settings,
                });
            }
        }
    }
    let json = serde_json::to_vec_pretty(&records).expect("records serialise");
    checkpoint::write_atomic(&req.run_dir, "results.json", &json)?;
    let title = format!("{:?} {:?} stem, {} steps", cfg.model.depth, cfg.model.stem, ckpt.state.step);
    if let Err(e) = crate::report::plot(&records, &req.run_dir.join("accuracy_vs_flops.png"), &title) {
        tracing::warn!("{e}");
    }
    Ok(records)
}
