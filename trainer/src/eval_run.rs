//! `dspnet-eval`'s work: load a run, evaluate every width with the chosen protocols (and
//! optionally the same architecture at random initialisation), write `results.json` and a plot.
//!
//! Protocols: `knn` and `linear` on frozen features, and `semi` (fine-tuning the whole
//! sub-network on class-balanced label subsets, see [`crate::semi`]). A semi record's protocol
//! names its subset: `semi-1%`, `semi-10%` (label fractions) or `semi-<file stem>` (subset
//! files); its settings hold the fraction, seed or file + sha256, the number of labelled images
//! and every hyper-parameter.

use crate::checkpoint::{self, CONFIG};
use crate::config::RunConfig;
use crate::dspnet::ComputeFormat;
use crate::error::TrainerError;
use crate::eval::{calibrate_bn, extract_features, knn_top1, linear_probe_top1, EvalRecord};
use crate::network::Branch;
use crate::semi::{self, SemiSettings};
use dspnet_model::resnet::SlimResNet;
use dspnet_pipeline::loader::{Loader, LoaderMode, LoaderSettings};
use serde_json::json;
use std::path::PathBuf;
use tch::{nn, Device, Kind, Tensor};

/// Evaluation protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Weighted kNN on frozen features.
    Knn,
    /// Linear probe on frozen features.
    Linear,
    /// Semi-supervised: fine-tune the whole sub-network on class-balanced label subsets
    /// ([`EvalRequest::semi`]); one record per subset, protocol `semi-1%`, `semi-10%`, ...
    Semi,
}

impl Protocol {
    /// Name on the command line (`knn`, `linear`, `semi`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Knn => "knn",
            Protocol::Linear => "linear",
            Protocol::Semi => "semi",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = TrainerError;
    fn from_str(s: &str) -> Result<Self, TrainerError> {
        match s.trim() {
            "knn" => Ok(Protocol::Knn),
            "linear" => Ok(Protocol::Linear),
            "semi" => Ok(Protocol::Semi),
            p => Err(TrainerError::Config(format!(
                "--protocol {p}: unknown protocol; use knn, linear, semi or a list like knn,linear,semi"
            ))),
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
    /// Re-estimate every evaluated network's BN statistics on clean training images first
    /// (knn and linear; semi fine-tunes BN in train mode from the checkpoint's statistics).
    pub calibrate_bn: bool,
    pub device: Device,
    /// Label subsets and hyper-parameters of [`Protocol::Semi`] (ignored by the others).
    pub semi: SemiSettings,
}

impl EvalRequest {
    /// A request with the defaults of `dspnet-eval`: protocols knn and linear, every trained
    /// width, no random-init baseline, no BN calibration, default [`SemiSettings`].
    pub fn new(run_dir: PathBuf, train_shards: Vec<String>, test_shards: Vec<String>, device: Device) -> Self {
        EvalRequest {
            run_dir,
            train_shards,
            test_shards,
            protocols: vec![Protocol::Knn, Protocol::Linear],
            widths: None,
            random_init: false,
            calibrate_bn: false,
            device,
            semi: SemiSettings::default(),
        }
    }
}

/// Runs the evaluation; returns the records (also written to RUN/results.json, with a plot in
/// RUN/accuracy_vs_flops.png).
///
/// Errors: no or corrupt checkpoint, a width the run did not train, bad shard patterns, no
/// labelled test image; for semi: bad settings, a subset file with an unknown key, a
/// non-finite fine-tuning loss.
pub fn evaluate_run(req: &EvalRequest) -> Result<Vec<EvalRecord>, TrainerError> {
    let run_semi = req.protocols.contains(&Protocol::Semi);
    if run_semi {
        req.semi.validate()?;
    }
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
    let settings = LoaderSettings { loader: loader_cfg, augment: cfg.augment.clone(), remote: cfg.remote.clone() };
    let train_loader = Loader::new(req.train_shards.clone(), settings.clone(), LoaderMode::Eval, 0, 1, req.device)?;
    let test_loader = Loader::new(req.test_shards.clone(), settings, LoaderMode::Eval, 0, 1, req.device)?;

    // Semi first reads the labelled pool and resolves the subsets, so a bad subset file fails
    // before any long computation.
    let semi_data = if run_semi { Some(prepare_semi(&req.semi, &train_loader)?) } else { None };
    let feature_protocols: Vec<Protocol> = req.protocols.iter().copied().filter(|p| *p != Protocol::Semi).collect();
    let mut records = Vec::new();
    if !feature_protocols.is_empty() {
        records = feature_records(req, &cfg, &ckpt, &widths, format, &feature_protocols, &train_loader, &test_loader)?;
    }
    if let Some(data) = &semi_data {
        records.extend(semi_records(req, &cfg, &ckpt, &widths, format, data, &test_loader)?);
    }
    let json = serde_json::to_vec_pretty(&records).expect("records serialise");
    checkpoint::write_atomic(&req.run_dir, "results.json", &json)?;
    let title = format!("{:?} {:?} stem, {} steps", cfg.model.depth, cfg.model.stem, ckpt.state.step);
    if let Err(e) = crate::report::plot(&records, &req.run_dir.join("accuracy_vs_flops.png"), &title) {
        tracing::warn!("{e}");
    }
    Ok(records)
}

/// knn and linear records on frozen features.
#[allow(clippy::too_many_arguments)]
fn feature_records(
    req: &EvalRequest,
    cfg: &RunConfig,
    ckpt: &checkpoint::Checkpoint,
    widths: &[f64],
    format: ComputeFormat,
    protocols: &[Protocol],
    train_loader: &Loader,
    test_loader: &Loader,
) -> Result<Vec<EvalRecord>, TrainerError> {
    let pretrained = Branch::new(cfg, req.device, true)?;
    checkpoint::restore_vars(&pretrained.vs, ckpt, "online")?;
    let mut inits: Vec<(&str, Branch)> = vec![("pretrained", pretrained)];
    if req.random_init {
        tch::manual_seed(cfg.train.seed as i64);
        inits.push(("random", Branch::new(cfg, req.device, true)?));
    }
    let img = cfg.augment.image_size as i64;
    let mut records = Vec::new();
    for (init, branch) in &inits {
        if req.calibrate_bn {
            calibrate_bn(branch, widths, train_loader, cfg.eval.bn_calibration_batches, format)?;
        }
        tracing::info!(init, "extracting features");
        let (train_f, train_y) = extract_features(branch, widths, train_loader, format)?;
        let (test_f, test_y) = extract_features(branch, widths, test_loader, format)?;
        let classes = train_y.max().int64_value(&[]).max(test_y.max().int64_value(&[])) + 1;
        for (i, &w) in widths.iter().enumerate() {
            let params = branch.backbone.num_params(w);
            let flops = branch.backbone.flops(w, img, img);
            for p in protocols {
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
                    // semi records come from semi_records
                    Protocol::Semi => continue,
                };
                let name = p.name();
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
    Ok(records)
}

/// One label subset of protocol semi.
struct SemiSubset {
    /// `semi-1%`, `semi-10%`, `semi-<file stem>`.
    protocol: String,
    fraction: Option<f64>,
    /// (path, sha256) of a subset file.
    file: Option<(PathBuf, String)>,
    /// Indices into the labelled pool, ascending.
    indices: Vec<usize>,
}

/// The labelled pool's labels, the subsets and the views of every image some subset uses.
struct SemiData {
    labels: Vec<i64>,
    classes: i64,
    subsets: Vec<SemiSubset>,
    /// `[U, C, S, S]` f32 (CPU): un-augmented views of the union of the subsets.
    views: Tensor,
    /// Pool index → row of `views`.
    rows: std::collections::HashMap<usize, i64>,
}

/// Reads the labelled pool (first pass), resolves every subset (fractions, then files), and
/// keeps the views of the images they use (second pass).
fn prepare_semi(s: &SemiSettings, loader: &Loader) -> Result<SemiData, TrainerError> {
    tracing::info!("protocol semi: reading the labels of the training shards");
    let pool = semi::scan_pool(loader)?;
    let mut subsets: Vec<SemiSubset> = Vec::new();
    for &f in &s.label_fractions {
        let indices = semi::balanced_subset(&pool.keys, &pool.labels, f, s.subset_seed)?;
        subsets.push(SemiSubset { protocol: semi::fraction_protocol(f), fraction: Some(f), file: None, indices });
    }
    for path in &s.subset_files {
        let sf = semi::read_subset_file(path, &pool.keys)?;
        subsets.push(SemiSubset {
            protocol: semi::file_protocol(path),
            fraction: None,
            file: Some((path.clone(), sf.sha256)),
            indices: sf.indices,
        });
    }
    for (i, a) in subsets.iter().enumerate() {
        if subsets[..i].iter().any(|b| b.protocol == a.protocol) {
            return Err(TrainerError::Config(format!(
                "protocol semi: two subsets would both be recorded as {}; give each label fraction / subset file once",
                a.protocol
            )));
        }
    }
    let mut union: Vec<usize> = subsets.iter().flat_map(|s| s.indices.iter().copied()).collect();
    union.sort_unstable();
    union.dedup();
    tracing::info!(
        pool = pool.keys.len(),
        labelled = union.len(),
        "protocol semi: keeping the views of the labelled subsets"
    );
    let views = semi::gather_views(loader, &pool, &union)?;
    let rows = union.iter().enumerate().map(|(r, &i)| (i, r as i64)).collect();
    let classes = pool.labels.iter().copied().max().unwrap_or(0) + 1;
    Ok(SemiData { labels: pool.labels, classes, subsets, views, rows })
}

/// A fresh backbone: PyTorch-default random initialisation drawn after `manual_seed(train.seed)`
/// (the same weights as the `random` branch of the feature protocols), with the checkpoint's
/// online backbone (weights and BN statistics) loaded over it for `pretrained`.
fn fresh_backbone(
    cfg: &RunConfig,
    ckpt: &checkpoint::Checkpoint,
    init: &str,
    device: Device,
) -> Result<(nn::VarStore, SlimResNet), TrainerError> {
    let vs = nn::VarStore::new(device);
    tch::manual_seed(cfg.train.seed as i64);
    let backbone = SlimResNet::new(&(vs.root() / "backbone"), &cfg.model)?;
    if init == "pretrained" {
        checkpoint::restore_vars(&vs, ckpt, "online")?;
    }
    Ok((vs, backbone))
}

/// Semi records: for every subset, init and width, a fresh network fine-tuned and tested.
fn semi_records(
    req: &EvalRequest,
    cfg: &RunConfig,
    ckpt: &checkpoint::Checkpoint,
    widths: &[f64],
    format: ComputeFormat,
    data: &SemiData,
    test_loader: &Loader,
) -> Result<Vec<EvalRecord>, TrainerError> {
    let s = &req.semi;
    let img = cfg.augment.image_size as i64;
    // the same batches and augmentations for every init and width: only the network differs
    let seed = dspnet_pipeline::mix_seed(&[cfg.train.seed, 0x5e41]);
    let mut inits = vec!["pretrained"];
    if req.random_init {
        inits.push("random");
    }
    let mut records = Vec::new();
    for sub in &data.subsets {
        let rows: Vec<i64> = sub.indices.iter().map(|i| data.rows[i]).collect();
        let views = data.views.index_select(0, &Tensor::from_slice(&rows));
        let label_vec: Vec<i64> = sub.indices.iter().map(|&i| data.labels[i]).collect();
        let labels = Tensor::from_slice(&label_vec);
        let mut per_class = vec![0usize; data.classes as usize];
        for &l in &label_vec {
            per_class[l as usize] += 1;
        }
        let present: Vec<usize> = per_class.iter().copied().filter(|&n| n > 0).collect();
        for init in &inits {
            for &w in widths {
                tracing::info!(
                    init,
                    width = w,
                    protocol = sub.protocol.as_str(),
                    images = label_vec.len(),
                    "fine-tuning"
                );
                let (vs, backbone) = fresh_backbone(cfg, ckpt, init, req.device)?;
                let head = semi::Head::zeros(backbone.feature_dim(w), data.classes, req.device);
                let stats =
                    semi::fine_tune(&backbone, vs.trainable_variables(), &head, w, &views, &labels, s, seed, format)?;
                let pred = semi::predict(&backbone, &head, w, &views, cfg.eval.batch_size as i64, format)?;
                let train_top1 =
                    100.0 * pred.eq_tensor(&labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
                let (top1, test_images) = semi::test_top1(&backbone, &head, w, test_loader, format)?;
                tracing::info!(init, width = w, protocol = sub.protocol.as_str(), top1, train_top1, "result");
                let settings = json!({
                    "label_fraction": sub.fraction,
                    "subset": if sub.file.is_some() { "file: one sample key per line" } else { "class-balanced: floor(fraction*n_c + 1e-9) per class, at least 1; keys sorted per class, shuffled with ChaCha8(mix_seed(subset_seed, class)); nested across fractions for one seed" },
                    "subset_seed": if sub.file.is_none() { Some(s.subset_seed) } else { None },
                    "subset_file": sub.file.as_ref().map(|f| f.0.display().to_string()),
                    "subset_sha256": sub.file.as_ref().map(|f| f.1.clone()),
                    "labelled_images": label_vec.len(),
                    "labelled_per_class_min": present.iter().min(),
                    "labelled_per_class_max": present.iter().max(),
                    "pool_images": data.labels.len(),
                    "classes": data.classes,
                    "epochs": s.epochs,
                    "batch": stats.batch,
                    "steps": stats.steps,
                    "backbone_lr": s.backbone_lr,
                    "head_lr": s.head_lr,
                    "optimizer": "sgd, nesterov momentum, per-step cosine decay to 0, no warm-up",
                    "momentum": s.momentum,
                    "weight_decay": s.weight_decay,
                    "augmentation": format!("random resized crop of the {img}px evaluation view, scale ({}, 1), ratio (3/4, 4/3), antialiased bilinear, + horizontal flip p=0.5", s.crop_scale_min),
                    "head": "linear, zero-initialised",
                    "bn": "the width's switchable BN in train mode while fine-tuning, eval mode for the test",
                    "first_loss": stats.first_loss,
                    "final_loss": stats.epoch_losses.last(),
                    "train_top1": train_top1,
                    "test_images": test_images,
                    "seed": seed,
                    "precision": format.name(),
                    "memory_format": "contiguous NCHW while fine-tuning (channels-last conv backward crashes libtorch 2.13 CPU at odd batch sizes)",
                    "bn_calibrated": false,
                    "recipe": "fine-tune the whole sub-network: SimCLR App. B.5 / BYOL App. C.2 (SGD nesterov, crop + flip), backbone/head learning rates as SwAV / Barlow Twins",
                });
                records.push(EvalRecord {
                    width: w,
                    params: backbone.num_params(w),
                    flops: backbone.flops(w, img, img),
                    protocol: sub.protocol.clone(),
                    top1,
                    init: init.to_string(),
                    settings,
                });
            }
        }
    }
    Ok(records)
}
