//! kNN and the linear probe on frozen features: both protocols classify the same features, so
//! they share one extraction per init (the images are decoded once and run through every
//! width).

use crate::error::Result;
use crate::features::{calibrate_bn, extract_features};
use crate::knn::knn_top1;
use crate::linear::LinearProbe;
use crate::protocol::{EvalContext, EvalProtocol, Init, Protocol};
use dspnet_pipeline::loader::Loader;
use dspnet_run::backbone::Backbone;
use dspnet_run::EvalRecord;
use serde_json::json;

/// The knn and/or linear protocols over the un-augmented centre views of two loaders.
pub struct FrozenFeatures<'a> {
    /// [`Protocol::Knn`] and/or [`Protocol::Linear`], in the order their records are written.
    pub protocols: Vec<Protocol>,
    /// Re-estimate every evaluated network's BN statistics on clean training images first
    /// (`eval.bn_calibration_batches` batches).
    pub calibrate_bn: bool,
    pub train: &'a Loader,
    pub test: &'a Loader,
}

impl EvalProtocol for FrozenFeatures<'_> {
    fn evaluate(&mut self, cx: &EvalContext) -> Result<Vec<EvalRecord>> {
        let cfg = cx.cfg;
        let img = cfg.augment.image_size as i64;
        let mut records = Vec::new();
        for &init in cx.inits {
            let b = match init {
                Init::Pretrained => Backbone::trained(cfg, cx.ckpt, cx.device)?,
                Init::Random => {
                    tch::manual_seed(cfg.train.seed as i64);
                    Backbone::random(cfg, cx.device)?
                }
            };
            if self.calibrate_bn {
                calibrate_bn(&b.vs, &b.net, cx.widths, self.train, cfg.runtime.eval.bn_calibration_batches, cx.format)?;
            }
            let init = init.name();
            tracing::info!(init, "extracting features");
            let (train_f, train_y) = extract_features(&b.net, cx.device, cx.widths, self.train, cx.format, None)?;
            let (test_f, test_y) = extract_features(&b.net, cx.device, cx.widths, self.test, cx.format, None)?;
            let classes = train_y.max().int64_value(&[]).max(test_y.max().int64_value(&[])) + 1;
            for (i, &w) in cx.widths.iter().enumerate() {
                let params = b.net.num_params(w);
                let macs = b.net.macs(w, img, img);
                for &p in &self.protocols {
                    let (top1, mut settings) = match p {
                        Protocol::Knn => (
                            knn_top1(
                                &train_f[i],
                                &train_y,
                                &test_f[i],
                                &test_y,
                                cfg.runtime.eval.knn_k,
                                cfg.runtime.eval.knn_t,
                                classes,
                            ),
                            json!({"k": cfg.runtime.eval.knn_k, "temperature": cfg.runtime.eval.knn_t, "features": "pooled backbone, l2-normalised, un-augmented centre view", "bn": "eval mode"}),
                        ),
                        Protocol::Linear => {
                            let probe = LinearProbe {
                                epochs: cfg.runtime.eval.linear_epochs,
                                lr: cfg.runtime.eval.linear_lr,
                                batch: cfg.runtime.eval.linear_batch,
                                seed: cfg.train.seed,
                            };
                            (
                                probe.top1(&train_f[i], &train_y, &test_f[i], &test_y, classes)?,
                                json!({"epochs": cfg.runtime.eval.linear_epochs, "lr": cfg.runtime.eval.linear_lr, "optimizer": "adam, cosine", "batch": cfg.runtime.eval.linear_batch, "features": "pooled backbone, standardised, frozen (eval-mode BN), un-augmented centre view"}),
                            )
                        }
                        _ => continue,
                    };
                    let name = p.name();
                    tracing::info!(init, width = w, protocol = name, top1, "result");
                    settings["train_images"] = json!(train_y.size()[0]);
                    settings["test_images"] = json!(test_y.size()[0]);
                    settings["bn_calibrated"] = json!(self.calibrate_bn);
                    records.push(EvalRecord {
                        width: w,
                        params,
                        macs,
                        protocol: name.into(),
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
