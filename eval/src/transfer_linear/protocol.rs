//! The transfer-linear protocol behind the evaluation interface: its datasets checked once,
//! then for every dataset the features of every split at every width of every init, and one
//! classifier per (init, width).

use super::{transfer_top1, TransferDataset, TransferFit, TransferLinearSettings, ViewDecoder};
use crate::error::{EvalError, Result};
use crate::features::batch_features;
use crate::protocol::{EvalContext, EvalProtocol, Init};
use dspnet_run::backbone::Backbone;
use dspnet_run::EvalRecord;
use serde_json::{json, Value};
use std::path::PathBuf;
use tch::Tensor;

/// The transfer-linear protocol, its datasets opened and checked ([`TransferLinear::prepare`]).
pub struct TransferLinear {
    pub settings: TransferLinearSettings,
    datasets: Vec<TransferDataset>,
}

impl TransferLinear {
    /// Checks the settings and opens every dataset, so that a bad folder fails before any long
    /// computation.
    ///
    /// Errors: invalid settings (named option); a dataset that cannot be used
    /// ([`EvalError::TransferData`]); two datasets whose folders have the same name (their records
    /// would share one protocol name).
    pub fn prepare(settings: TransferLinearSettings) -> Result<Self> {
        settings.validate()?;
        let mut datasets: Vec<TransferDataset> = Vec::new();
        for dir in &settings.datasets {
            let ds = TransferDataset::open(dir)?;
            if let Some(other) = datasets.iter().find(|d| d.name == ds.name) {
                return Err(EvalError::transfer_data(
                    dir,
                    format!(
                        "its records would be named {} like those of {}; give each dataset folder its own name",
                        ds.protocol(),
                        other.dir.display()
                    ),
                ));
            }
            datasets.push(ds);
        }
        Ok(TransferLinear { settings, datasets })
    }

    /// The opened datasets, in the order given.
    pub fn datasets(&self) -> &[TransferDataset] {
        &self.datasets
    }
}

/// Features `[init][width]` (`[N, D_w]` f32, CPU) of one split, and its grayscale image count.
struct SplitFeatures {
    features: Vec<Vec<Tensor>>,
    grayscale: usize,
}

fn extract(
    ds: &TransferDataset,
    files: &[PathBuf],
    nets: &[Backbone],
    decoder: &ViewDecoder,
    cx: &EvalContext,
) -> Result<SplitFeatures> {
    let mut parts: Vec<Vec<Vec<Tensor>>> =
        nets.iter().map(|_| cx.widths.iter().map(|_| Vec::new()).collect()).collect();
    let grayscale = decoder.for_each_batch(&ds.dir, files, cx.cfg.runtime.eval.batch_size, |x| {
        let x = x.to_device(cx.device);
        for (k, b) in nets.iter().enumerate() {
            for (i, f) in batch_features(&b.net, &x, cx.widths, cx.format)?.into_iter().enumerate() {
                parts[k][i].push(f);
            }
        }
        Ok(())
    })?;
    let features =
        parts.into_iter().map(|per_width| per_width.into_iter().map(|v| Tensor::cat(&v, 0)).collect()).collect();
    Ok(SplitFeatures { features, grayscale })
}

/// Where the validation images of a dataset come from.
enum Validation {
    /// `val/`: its features and its labels `[N_val]` i64.
    Folder { features: SplitFeatures, labels: Tensor },
    /// Rows of `train/`: those the classifier is fitted on and those held out (ascending).
    HeldOut { fit: Vec<usize>, val: Vec<usize> },
}

impl Validation {
    /// The (fit, validation) parts of `train` (a tensor of `train/`'s rows): all of it and
    /// `own` (the matching tensor of `val/`, picked from its features and labels), or its fitted
    /// and held-out rows.
    fn split<'a>(
        &'a self,
        train: &Tensor,
        own: impl Fn(&'a SplitFeatures, &'a Tensor) -> &'a Tensor,
    ) -> (Tensor, Tensor) {
        match self {
            Validation::Folder { features, labels } => (train.shallow_clone(), own(features, labels).shallow_clone()),
            Validation::HeldOut { fit, val } => (rows(train, fit), rows(train, val)),
        }
    }
}

/// The rows `idx` of `t`.
fn rows(t: &Tensor, idx: &[usize]) -> Tensor {
    let idx: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    t.index_select(0, &Tensor::from_slice(&idx).to_device(t.device()))
}

/// What a dataset's records share: everything but the fit.
fn dataset_settings(
    s: &TransferLinearSettings,
    ds: &TransferDataset,
    cx: &EvalContext,
    counts: (usize, usize, usize),
    grayscale: usize,
) -> Value {
    let a = &cx.cfg.augment;
    let (fit, val, test) = counts;
    let validation = match &ds.val {
        Some(_) => "val/".to_string(),
        None => format!(
            "held out of train/: floor({} x n_c) images of each class (at least 1), seed {}",
            s.val_fraction, s.split_seed
        ),
    };
    let channel_handling = if a.channels == 3 {
        "decoded as RGB: grayscale images replicated to 3 channels, colour images kept"
    } else {
        "decoded as luma (ITU-R 601): colour images converted to 1 channel"
    };
    json!({
        "dataset": ds.dir.display().to_string(),
        "dataset_name": ds.name,
        "classes": ds.classes.len(),
        "class_names": ds.classes,
        "train_images": ds.train.len(),
        "val_folder_images": ds.val.as_ref().map_or(0, |v| v.len()),
        "test_images": test,
        "validation": validation,
        "validation_images": val,
        "selection_fit_images": fit,
        "refit_images": fit + val,
        "split_seed": s.split_seed,
        "val_fraction": if ds.val.is_some() { Value::Null } else { json!(s.val_fraction) },
        "weight_decays": s.weight_decays,
        "classifier": "multinomial logistic regression: mean cross-entropy + weight_decay/2 * ||W||^2 (bias not decayed); weight decay picked by validation top-1 (ties: the larger), then refitted on train + validation",
        "optimizer": "full-batch L-BFGS (two-loop recursion, Armijo backtracking), f64, from zero weights",
        "lbfgs_history": s.lbfgs.history,
        "max_iter": s.lbfgs.max_iter,
        "gtol": s.lbfgs.gtol,
        "ftol": s.lbfgs.ftol,
        "features": "pooled backbone, frozen (eval-mode BN), standardised with the fitted images' mean/std, un-augmented centre view",
        "preprocessing": format!(
            "shorter side resized to {} px, centre crop {} px, normalised with the run's mean/std",
            a.eval_resize, a.image_size
        ),
        "input_size": a.image_size,
        "eval_resize": a.eval_resize,
        "mean": a.mean,
        "std": a.std,
        "input_channels": a.channels,
        "channel_handling": channel_handling,
        "grayscale_images": grayscale,
        "bn": "eval mode",
    })
}

/// The record of one fit.
fn fit_settings(shared: &Value, fit: &TransferFit) -> Value {
    let mut s = shared.clone();
    let sel = &fit.selection;
    s["selection"] = sel
        .candidates
        .iter()
        .map(|c| json!({"weight_decay": c.weight_decay, "val_top1": c.val_top1, "iterations": c.iterations, "stop": c.stop.name()}))
        .collect();
    s["weight_decay"] = json!(sel.weight_decay);
    s["val_top1"] = json!(sel.val_top1);
    s["iterations"] = json!(fit.fitted.iterations);
    s["stop"] = json!(fit.fitted.stop.name());
    s["converged"] = json!(fit.fitted.stop.converged());
    s["final_loss"] = json!(fit.fitted.loss);
    s
}

impl EvalProtocol for TransferLinear {
    /// For every dataset: features of train, val (if any) and test at every width of every init,
    /// then per init and width the weight decay picked, the refit and its test top-1.
    ///
    /// Errors: a file that cannot be decoded, non-finite features, model errors.
    fn evaluate(&mut self, cx: &EvalContext) -> Result<Vec<EvalRecord>> {
        let cfg = cx.cfg;
        let s = &self.settings;
        let img = cfg.augment.image_size as i64;
        let mut nets = Vec::new();
        for &init in cx.inits {
            nets.push(match init {
                Init::Pretrained => Backbone::trained(cfg, cx.ckpt, cx.device)?,
                Init::Random => {
                    tch::manual_seed(cfg.train.seed as i64);
                    Backbone::random(cfg, cx.device)?
                }
            });
        }
        let decoder = ViewDecoder::new(&cfg.augment, cfg.runtime.loader.workers)?;
        let mut records = Vec::new();
        for ds in &self.datasets {
            let protocol = ds.protocol();
            tracing::info!(dataset = %ds.dir.display(), train = ds.train.len(), test = ds.test.len(), "transfer-linear: extracting features");
            let train = extract(ds, &ds.train.files, &nets, &decoder, cx)?;
            let test = extract(ds, &ds.test.files, &nets, &decoder, cx)?;
            // the validation split: val/ (its own features) or rows held out of train/
            let validation = match &ds.val {
                Some(v) => Validation::Folder {
                    features: extract(ds, &v.files, &nets, &decoder, cx)?,
                    labels: Tensor::from_slice(&v.labels),
                },
                None => {
                    let val = ds.held_out(s.val_fraction, s.split_seed)?;
                    let fit = (0..ds.train.len()).filter(|i| val.binary_search(i).is_err()).collect();
                    Validation::HeldOut { fit, val }
                }
            };
            let train_y = Tensor::from_slice(&ds.train.labels);
            let test_y = Tensor::from_slice(&ds.test.labels);
            let (fit_y, val_y) = validation.split(&train_y, |_, labels| labels);
            let counts = (fit_y.size()[0] as usize, val_y.size()[0] as usize, ds.test.len());
            let val_gray = match &validation {
                Validation::Folder { features, .. } => features.grayscale,
                Validation::HeldOut { .. } => 0,
            };
            let shared = dataset_settings(s, ds, cx, counts, train.grayscale + test.grayscale + val_gray);
            let classes = ds.classes.len() as i64;
            for (k, &init) in cx.inits.iter().enumerate() {
                for (i, &w) in cx.widths.iter().enumerate() {
                    let (tr, te) = (&train.features[k][i], &test.features[k][i]);
                    let (fit_x, val_x) = validation.split(tr, |features, _| &features.features[k][i]);
                    for (t, split_name) in [(tr, "train"), (te, "test"), (&val_x, "validation")] {
                        if !bool::try_from(t.isfinite().all())? {
                            return Err(EvalError::transfer_data(
                                &ds.dir,
                                format!(
                                    "width {w} ({}) gives non-finite features on the {split_name} images",
                                    init.name()
                                ),
                            ));
                        }
                    }
                    let on = |t: &Tensor| t.to_device(cx.device);
                    tracing::info!(init = init.name(), width = w, protocol = protocol.as_str(), "fitting");
                    let fit = transfer_top1(
                        &s.weight_decays,
                        s.lbfgs,
                        (&on(&fit_x), &fit_y),
                        (&on(&val_x), &val_y),
                        (&on(te), &test_y),
                        classes,
                    )?;
                    tracing::info!(
                        init = init.name(),
                        width = w,
                        protocol = protocol.as_str(),
                        top1 = fit.test_top1,
                        weight_decay = fit.selection.weight_decay,
                        "result"
                    );
                    records.push(EvalRecord {
                        width: w,
                        params: nets[k].net.num_params(w),
                        macs: nets[k].net.macs(w, img, img),
                        protocol: protocol.clone(),
                        top1: fit.test_top1,
                        init: init.name().to_string(),
                        settings: fit_settings(&shared, &fit),
                        extra: Default::default(),
                    });
                }
            }
        }
        Ok(records)
    }
}
