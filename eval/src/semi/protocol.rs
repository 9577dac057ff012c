//! The semi-supervised protocol behind the evaluation interface: its label subsets prepared
//! once, then for every subset, init and width a fresh network fine-tuned and tested.

use super::{
    balanced_subset, file_protocol, fine_tune, fraction_protocol, gather_views, predict, read_subset_file, scan_pool,
    test_top1, Head, SemiSettings,
};
use crate::error::{EvalError, Result};
use crate::protocol::{EvalContext, EvalProtocol};
use dspnet_pipeline::loader::Loader;
use dspnet_run::backbone::Backbone;
use dspnet_run::EvalRecord;
use serde_json::json;
use std::path::PathBuf;
use tch::{Kind, Tensor};

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
fn prepare_data(s: &SemiSettings, loader: &Loader) -> Result<SemiData> {
    tracing::info!("protocol semi: reading the labels of the training shards");
    let pool = scan_pool(loader)?;
    let mut subsets: Vec<SemiSubset> = Vec::new();
    for &f in &s.label_fractions {
        let indices = balanced_subset(&pool.keys, &pool.labels, f, s.subset_seed)?;
        subsets.push(SemiSubset { protocol: fraction_protocol(f), fraction: Some(f), file: None, indices });
    }
    for path in &s.subset_files {
        let sf = read_subset_file(path, &pool.keys)?;
        subsets.push(SemiSubset {
            protocol: file_protocol(path),
            fraction: None,
            file: Some((path.clone(), sf.sha256)),
            indices: sf.indices,
        });
    }
    for (i, a) in subsets.iter().enumerate() {
        if subsets[..i].iter().any(|b| b.protocol == a.protocol) {
            return Err(EvalError::option(
                "--label-fractions",
                format!(
                    "protocol semi: two subsets would both be recorded as {}; give each label fraction / subset file once",
                    a.protocol
                ),
            ));
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
    let views = gather_views(loader, &pool, &union)?;
    let rows = union.iter().enumerate().map(|(r, &i)| (i, r as i64)).collect();
    let classes = pool.labels.iter().copied().max().unwrap_or(0) + 1;
    Ok(SemiData { labels: pool.labels, classes, subsets, views, rows })
}

/// The semi-supervised protocol, its subsets prepared ([`SemiSupervised::prepare`]).
pub struct SemiSupervised<'a> {
    pub settings: SemiSettings,
    data: SemiData,
    test: &'a Loader,
}

impl<'a> SemiSupervised<'a> {
    /// Reads the labelled pool of `train` (first pass), resolves every subset (fractions, then
    /// files) and keeps the views of the images they use (second pass), so a bad subset file
    /// fails before any long computation. `test` measures the fine-tuned networks.
    ///
    /// Errors: invalid settings (named option), a subset file with an unknown key, two subsets
    /// recorded under one name, loader errors.
    pub fn prepare(settings: SemiSettings, train: &Loader, test: &'a Loader) -> Result<Self> {
        settings.validate()?;
        let data = prepare_data(&settings, train)?;
        Ok(SemiSupervised { settings, data, test })
    }
}

impl EvalProtocol for SemiSupervised<'_> {
    /// For every subset, init and width, a fresh network fine-tuned and tested.
    fn evaluate(&mut self, cx: &EvalContext) -> Result<Vec<EvalRecord>> {
        let (s, data, test_loader, cfg, widths, format) =
            (&self.settings, &self.data, self.test, cx.cfg, cx.widths, cx.format);
        let img = cfg.augment.image_size as i64;
        // the same batches and augmentations for every init and width: only the network differs
        let seed = dspnet_pipeline::mix_seed(&[cfg.train.seed, 0x5e41]);
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
            for &init in cx.inits {
                let init = init.name();
                for &w in widths {
                    tracing::info!(
                        init,
                        width = w,
                        protocol = sub.protocol.as_str(),
                        images = label_vec.len(),
                        "fine-tuning"
                    );
                    // PyTorch-default random initialisation drawn after `manual_seed(train.seed)` (the
                    // same weights as the `random` init of the feature protocols), with the
                    // checkpoint's online backbone loaded over it for `pretrained`
                    tch::manual_seed(cfg.train.seed as i64);
                    let Backbone { vs, net: backbone } = match init {
                        "pretrained" => Backbone::trained(cfg, cx.ckpt, cx.device)?,
                        _ => Backbone::random(cfg, cx.device)?,
                    };
                    let head = Head::zeros(backbone.feature_dim(w), data.classes, cx.device);
                    let stats =
                        fine_tune(&backbone, vs.trainable_variables(), &head, w, &views, &labels, s, seed, format)?;
                    let pred = predict(&backbone, &head, w, &views, cfg.runtime.eval.batch_size as i64, format)?;
                    let train_top1 =
                        100.0 * pred.eq_tensor(&labels).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
                    let (top1, test_images) = test_top1(&backbone, &head, w, test_loader, format)?;
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
                        macs: backbone.macs(w, img, img),
                        protocol: sub.protocol.clone(),
                        top1,
                        init: init.to_string(),
                        settings,
                        extra: Default::default(),
                    });
                }
            }
        }
        Ok(records)
    }
}
