//! `dspnet-eval`'s work behind one interface: load a run, evaluate every width with the chosen
//! protocols (and optionally the same architecture at random initialisation), merge the
//! records into `results.json` after each protocol (finished work is never lost) and draw the
//! accuracy-against-MACs plot.
//!
//! Protocols ([`Protocol`]): `knn` and `linear` on frozen features ([`FrozenFeatures`]), `semi`
//! (fine-tuning the whole sub-network on class-balanced label subsets, [`SemiSupervised`]),
//! `transfer-linear` (a logistic regression on frozen features of another image folder,
//! [`TransferLinear`]), `detection` and `segmentation` (transfer through the Python tool,
//! [`Transfer`]). Everything that can be checked is checked before the first long computation:
//! settings, subset files, the transfer datasets' folders, the transfer tool's packages.

use crate::error::{EvalError, Result};
use crate::frozen::FrozenFeatures;
use crate::protocol::{EvalContext, EvalProtocol, Init, Protocol};
use crate::semi::{SemiSettings, SemiSupervised};
use crate::transfer::{PythonTool, Transfer, TransferRequest};
use crate::transfer_linear::{TransferLinear, TransferLinearSettings};
use dspnet_model::ComputeFormat;
use dspnet_pipeline::loader::{Loader, LoaderMode, LoaderSettings};
use dspnet_run::layout::ACCURACY_PLOT;
use dspnet_run::{checkpoint, EvalRecord, RunConfig, RunDir};
use std::path::PathBuf;
use tch::Device;

/// Where the transfer protocols read their data and how long they train.
#[derive(Clone, Debug)]
pub struct TransferSettings {
    /// COCO128-layout or COCO folder.
    pub coco: PathBuf,
    /// `cpu` or `full`.
    pub preset: String,
    /// Seed of the Python tool.
    pub seed: u64,
    /// Extra arguments for `python -m dspnet_export.transfer`.
    pub extra_args: Vec<String>,
}

/// What to evaluate.
pub struct EvalRequest {
    pub run_dir: PathBuf,
    /// Shards of the labelled training images (knn bank, linear probe, semi subsets).
    pub train_shards: Vec<String>,
    /// Shards to measure top-1 on.
    pub test_shards: Vec<String>,
    /// Protocols, run in [`Protocol::ALL`] order whatever the order given (knn and linear
    /// records in the order given).
    pub protocols: Vec<Protocol>,
    /// Widths to evaluate (`None`: every trained width, widest first).
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
    /// Dataset and schedule of the transfer protocols (needed only by them).
    pub transfer: Option<TransferSettings>,
    /// Datasets and classifier settings of [`Protocol::TransferLinear`] (ignored by the others).
    pub transfer_linear: TransferLinearSettings,
}

impl EvalRequest {
    /// A request with the defaults of `dspnet-eval`: protocols knn and linear, every trained
    /// width, no random-init baseline, no BN calibration, default [`SemiSettings`] and
    /// [`TransferLinearSettings`] (no dataset).
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
            transfer: None,
            transfer_linear: TransferLinearSettings::default(),
        }
    }
}

/// Runs the evaluation; returns the records of this evaluation, which are merged into
/// `results.json` (earlier records of other widths, protocols or inits kept) after each
/// protocol. Also writes `RUN/accuracy_vs_flops.png` (the file's classification records).
///
/// Errors: no or corrupt checkpoint, a width the run did not train, missing shards for the
/// protocols that read them, no labelled image; for semi: bad settings, a subset file with an
/// unknown key, a non-finite fine-tuning loss; for transfer-linear: no `--transfer-data`, a
/// folder without `train/` or `test/`, a test class absent from train, an undecodable image; for
/// transfer: no dataset folder, a venv without the packages, a failed tool run.
pub fn evaluate(req: &EvalRequest) -> Result<Vec<EvalRecord>> {
    let wants = |p: Protocol| req.protocols.contains(&p);
    let transfer_protocols: Vec<Protocol> = req.protocols.iter().copied().filter(|p| p.is_transfer()).collect();
    // the transfer tool first: checked before the (long) other protocols start
    let transfer = match (&req.transfer, transfer_protocols.is_empty()) {
        (_, true) => None,
        (None, false) => {
            return Err(EvalError::option(
                "--coco",
                "--coco DIR is needed by the detection/segmentation protocols (a COCO128-layout or COCO folder)",
            ))
        }
        (Some(t), false) => {
            let request = TransferRequest {
                protocols: transfer_protocols,
                coco: t.coco.clone(),
                preset: t.preset.clone(),
                seed: t.seed,
                extra_args: t.extra_args.clone(),
            };
            request.validate()?;
            let python = PythonTool::find()?;
            python.check()?;
            Some(Transfer { request, python })
        }
    };
    if wants(Protocol::Semi) {
        req.semi.validate()?;
    }
    // the transfer datasets' folders are scanned and checked before anything is computed
    let transfer_linear = if wants(Protocol::TransferLinear) {
        Some(TransferLinear::prepare(req.transfer_linear.clone())?)
    } else {
        None
    };
    let run = RunDir::new(&req.run_dir);
    let cfg = run.read_config()?;
    let ckpt = checkpoint::load(run.path())?;
    if cfg.runtime.train.threads > 0 {
        tch::set_num_threads(cfg.runtime.train.threads as i32);
    }
    let widths = widths_to_evaluate(&cfg, req.widths.as_deref())?;
    let format = ComputeFormat::resolve(&cfg.train.precision, cfg.train.channels_last, req.device);
    let inits: Vec<Init> = if req.random_init { vec![Init::Pretrained, Init::Random] } else { vec![Init::Pretrained] };
    let cx = EvalContext {
        run_dir: run.path(),
        cfg: &cfg,
        ckpt: &ckpt,
        widths: &widths,
        inits: &inits,
        format,
        device: req.device,
    };

    let mut loaders = None;
    if req.protocols.iter().any(|p| p.reads_shards()) {
        loaders = Some((
            eval_loader(&cfg, &req.train_shards, "--train-shards", req.device)?,
            eval_loader(&cfg, &req.test_shards, "--test-shards", req.device)?,
        ));
    }
    let mut protocols: Vec<Box<dyn EvalProtocol + '_>> = Vec::new();
    if let Some((train, test)) = &loaders {
        // semi reads the labelled pool and resolves its subsets first, so a bad subset file
        // fails before any long computation
        let semi =
            if wants(Protocol::Semi) { Some(SemiSupervised::prepare(req.semi.clone(), train, test)?) } else { None };
        let frozen: Vec<Protocol> =
            req.protocols.iter().copied().filter(|p| matches!(p, Protocol::Knn | Protocol::Linear)).collect();
        if !frozen.is_empty() {
            protocols.push(Box::new(FrozenFeatures { protocols: frozen, calibrate_bn: req.calibrate_bn, train, test }));
        }
        if let Some(s) = semi {
            protocols.push(Box::new(s));
        }
    }
    if let Some(t) = transfer_linear {
        protocols.push(Box::new(t));
    }
    if let Some(t) = transfer {
        protocols.push(Box::new(t));
    }
    let (mut done, mut all) = (Vec::new(), dspnet_run::results::read(run.path())?);
    for p in &mut protocols {
        let records = p.evaluate(&cx)?;
        all = dspnet_run::results::merge(run.path(), &records)?;
        done.extend(records);
    }
    let classification: Vec<EvalRecord> =
        all.iter().filter(|r| !matches!(r.protocol.as_str(), "detection" | "segmentation")).cloned().collect();
    if !classification.is_empty() {
        let title = format!("{:?} {:?} stem, {} steps", cfg.model.depth, cfg.model.stem, ckpt.state.step);
        if let Err(e) = crate::report::plot(&classification, &run.file(ACCURACY_PLOT), &title) {
            tracing::warn!("{e}");
        }
    }
    Ok(done)
}

/// The widths to evaluate: `requested` (each one the run trained) or every trained width,
/// widest first.
///
/// Errors: [`EvalError::WidthNotTrained`].
pub fn widths_to_evaluate(cfg: &RunConfig, requested: Option<&[f64]>) -> Result<Vec<f64>> {
    let trained = cfg.train_widths()?;
    match requested {
        None => Ok(trained.as_slice().iter().rev().copied().collect()),
        Some(ws) => {
            for &w in ws {
                if trained.index_of(w).is_err() {
                    return Err(EvalError::WidthNotTrained { width: w, trained: trained.as_slice().to_vec() });
                }
            }
            Ok(ws.to_vec())
        }
    }
}

/// An evaluation loader (un-augmented centre views, `eval.batch_size`, every sample kept) over
/// `shards` (also the trainer's kNN monitor's).
///
/// Errors: [`EvalError::Option`] naming `option` when no shard is given; a `manifest.json` beside
/// the shards that is malformed; loader errors.
pub fn eval_loader(cfg: &RunConfig, shards: &[String], option: &str, device: Device) -> Result<Loader> {
    if shards.is_empty() {
        return Err(EvalError::option(option, format!("{option} is needed by the knn, linear and semi protocols")));
    }
    // a manifest beside the shards must be readable, as for training (a missing one is fine)
    dspnet_pipeline::source::manifest_beside(shards, &cfg.runtime.remote)?;
    let mut loader_cfg = cfg.loader.clone();
    loader_cfg.batch_size = cfg.runtime.eval.batch_size;
    loader_cfg.drop_last = false;
    loader_cfg.strict_data = false;
    let settings = LoaderSettings {
        loader: loader_cfg,
        threads: cfg.runtime.loader,
        augment: cfg.augment.clone(),
        remote: cfg.runtime.remote.clone(),
    };
    Ok(Loader::new(shards.to_vec(), settings, LoaderMode::Eval, 0, 1, device)?)
}
