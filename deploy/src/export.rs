//! Export of one width of a DSPNet run as a standalone model in timm's `ResNet` layout
//! (`model.safetensors` + `model.json`), optionally with reference outputs of the Rust
//! slimmable network (`reference.safetensors`) for equivalence tests.
//!
//! Names: timm's `ResNet` (timm 1.x, `timm/models/resnet.py`) uses torchvision's module names
//! (`conv1`, `bn1`, `layerI.J.convK`, `layerI.J.bnK`, `layerI.0.downsample.{0,1}`), so the
//! sub-network's state dict is [`SlimResNet::torchvision_state_dict`] (the width's weight
//! slices and that width's switchable-BN tensors) plus each BN's `num_batches_tracked` buffer;
//! the classifier is absent (`num_classes=0`).
//!
//! Channels: `timm.create_model("resnetNN", channels=(c1, c2, c3, c4), num_classes=0)` builds
//! stage `i` with inner width `c_i` and output `c_i * expansion`, which is exactly the slimmed
//! ResNet when `slim(b*2^i*e, w) = e * slim(b*2^i, w)` (always for BasicBlock; checked for
//! Bottleneck). Its plain 7x7 stem, however, always has 64 channels (`stem_width` only sizes
//! timm's deep stems), so a sub-network whose stem is not 64 wide (every width below 1.0 of a
//! base-64 ResNet) needs its stem and layer1's first block swapped for timm/torch modules of the
//! right size: [`timm_snippet`] writes those few lines (no dspnet code) into `model.json`.

use crate::error::{DeployError, Result};
use crate::run::{load_run, LoadedRun};
use dspnet_core::fs::{sha256_hex, write_atomic};
use dspnet_model::{width_tag, Depth, ResNetConfig, SlimResNet, Stem};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Weights file of an export folder.
pub const MODEL_WEIGHTS: &str = "model.safetensors";
/// Description file of an export folder (written last: an export is complete when it exists).
pub const MODEL_JSON: &str = "model.json";
/// Reference input/outputs of the Rust slimmable network (`--reference`).
pub const REFERENCE: &str = "reference.safetensors";
/// Seed of the reference input ([`reference_input`]).
pub const REFERENCE_SEED: u64 = 20220714;
/// Batch size of the reference input.
pub const REFERENCE_BATCH: i64 = 2;
/// Version of the export folder layout recorded in `model.json` (`format`).
pub const FORMAT: &str = "dspnet-export/1";

/// What one export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportSummary {
    /// Width multiplier.
    pub width: f64,
    /// The export folder `OUT/<width_tag>` (e.g. `OUT/w0_50`).
    pub dir: PathBuf,
    /// Parameters of the sub-network (conv weights + BN affine, no classifier).
    pub params: i64,
    /// Convolution multiply-accumulates of one image at the run's input size.
    pub macs: u64,
    /// Pooled feature dimension (channels of layer4's output).
    pub feature_dim: i64,
    /// Side of the square input in pixels.
    pub input_size: i64,
    /// True when `reference.safetensors` was written.
    pub reference: bool,
}

/// Channels of the plain (7x7) stem that timm's `ResNet` builds whatever `stem_width` says
/// (timm 1.0.x: `inplanes = stem_width * 2 if deep_stem else 64`; `stem_width` only sizes deep
/// stems).
pub const TIMM_PLAIN_STEM_CHANNELS: i64 = 64;

/// The timm constructor arguments that rebuild one width (serialised into `model.json`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimmArch {
    /// `timm.create_model` name whose block and layers these are: `resnet18`/`resnet34`/`resnet50`.
    pub model_name: String,
    /// `BasicBlock` or `Bottleneck` (classes of `timm.models.resnet`).
    pub block: String,
    /// Blocks per stage (`layers=`).
    pub layers: [usize; 4],
    /// Inner channels per stage (`channels=`).
    pub channels: [i64; 4],
    /// Output channels of the sub-network's stem convolution.
    pub stem_width: i64,
    /// Image channels (`in_chans=`).
    pub in_chans: i64,
    /// Always 0: no classifier, `forward` returns the pooled features.
    pub num_classes: i64,
    /// Always `avg`.
    pub global_pool: String,
    /// Pooled feature dimension: `channels[3] * expansion`.
    pub feature_dim: i64,
    /// Output channels of layer1..layer4: `channels[i] * expansion`.
    pub stage_channels: [i64; 4],
    /// True when `timm.create_model(model_name, num_classes=0, in_chans=.., channels=..)` alone
    /// builds this network: ImageNet stem with exactly [`TIMM_PLAIN_STEM_CHANNELS`] stem channels.
    /// Otherwise the stem (and layer1's first block, whose input is the stem) are replaced by
    /// timm/torch modules of the right size, see [`timm_snippet`].
    pub timm_native: bool,
}

/// timm's constructor arguments for the sub-network of `cfg` at `width`.
///
/// # Errors
/// [`DeployError::Unsupported`] when a Bottleneck stage's output channels are not 4x its inner
/// channels after rounding (e.g. base 6 at width 0.25: 2 inner, 6 outer), which timm's blocks
/// cannot build.
pub fn timm_arch(cfg: &ResNetConfig, width: f64) -> Result<TimmArch> {
    use dspnet_model::slim_channels as slim;
    let e = cfg.depth.expansion();
    let b = cfg.base_channels;
    let mut channels = [0i64; 4];
    let mut stage_channels = [0i64; 4];
    for i in 0..4 {
        channels[i] = slim(b << i, width);
        stage_channels[i] = slim((b << i) * e, width);
        if stage_channels[i] != channels[i] * e {
            return Err(DeployError::Unsupported(format!(
                "width {width} of base_channels {b}: stage {} has {} inner and {} output channels, but timm's ResNet blocks need output = {e} x inner; export another width",
                i + 1,
                channels[i],
                stage_channels[i]
            )));
        }
    }
    let stem_width = slim(b, width);
    Ok(TimmArch {
        model_name: format!("resnet{}", cfg.depth.layers()),
        block: if cfg.depth == Depth::R50 { "Bottleneck" } else { "BasicBlock" }.into(),
        layers: cfg.depth.blocks(),
        channels,
        stem_width,
        in_chans: cfg.in_channels,
        num_classes: 0,
        global_pool: "avg".into(),
        feature_dim: stage_channels[3],
        stage_channels,
        timm_native: cfg.stem == Stem::Imagenet && stem_width == TIMM_PLAIN_STEM_CHANNELS,
    })
}

/// Python (timm + torch only, no dspnet code) that builds the sub-network described by `arch`
/// and `stem` and loads `weights` with strict keys; ends with `model.eval()`. The first
/// statement after the imports is always `timm.create_model(..)`; stem modules follow only
/// when timm cannot build them (small stem, or a stem width other than 64).
pub fn timm_snippet(arch: &TimmArch, stem: Stem, weights: &str) -> String {
    let c = arch.channels;
    let s = arch.stem_width;
    let mut lines =
        vec!["import timm, torch.nn as nn".to_string(), "from safetensors.torch import load_file".to_string()];
    let resize = s != TIMM_PLAIN_STEM_CHANNELS;
    if resize {
        let extra = if arch.block == "Bottleneck" { ", downsample_conv" } else { "" };
        lines.push(format!("from timm.models.resnet import {}{extra}", arch.block));
    }
    lines.push(format!(
        "model = timm.create_model(\"{}\", pretrained=False, num_classes=0, in_chans={}, channels=({}, {}, {}, {}))",
        arch.model_name, arch.in_chans, c[0], c[1], c[2], c[3]
    ));
    let (k, st, p) = match stem {
        Stem::Imagenet => (7, 2, 3),
        Stem::Small => (3, 1, 1),
    };
    if resize || stem == Stem::Small {
        lines.push(format!(
            "model.conv1 = nn.Conv2d({}, {s}, kernel_size={k}, stride={st}, padding={p}, bias=False)",
            arch.in_chans
        ));
    }
    if resize {
        lines.push(format!("model.bn1 = nn.BatchNorm2d({s})"));
        if arch.block == "Bottleneck" {
            lines.push(format!(
                "model.layer1[0] = Bottleneck({s}, {}, downsample=downsample_conv({s}, {}, 1))",
                c[0], arch.stage_channels[0]
            ));
        } else {
            lines.push(format!("model.layer1[0] = BasicBlock({s}, {})", c[0]));
        }
    }
    if stem == Stem::Small {
        lines.push("model.maxpool = nn.Identity()".into());
    }
    lines.push(format!("model.load_state_dict(load_file(\"{weights}\"), strict=True)"));
    lines.push("model.eval()".into());
    lines.join("\n") + "\n"
}

/// Strides of layer1..layer4 relative to the input: 4/8/16/32 (ImageNet stem: 7x7/2 conv and
/// 3x3/2 max pool) or 1/2/4/8 (small stem: 3x3/1 conv, no pool).
pub fn feature_strides(stem: Stem) -> [i64; 4] {
    match stem {
        Stem::Imagenet => [4, 8, 16, 32],
        Stem::Small => [1, 2, 4, 8],
    }
}

/// The sub-network at `width` as timm's `ResNet(num_classes=0)` state dict: every tensor of
/// [`SlimResNet::torchvision_state_dict`] (fp32, contiguous copies) plus
/// `<bn>.num_batches_tracked` (int64, shape `[]`, value 0: dspnet uses a fixed BN momentum of
/// 0.1, which PyTorch's BN uses instead of that counter), sorted by name.
///
/// # Errors
/// [`DeployError::Width`] for a width the run did not train.
pub fn timm_state_dict(run: &LoadedRun, width: f64) -> Result<Vec<(String, Tensor)>> {
    run.check_width(width)?;
    let mut out = Vec::new();
    for (name, t) in run.backbone.torchvision_state_dict(&run.vs, width)? {
        if let Some(bn) = name.strip_suffix(".running_var") {
            out.push((format!("{bn}.num_batches_tracked"), Tensor::from_slice(&[0i64]).reshape(Vec::<i64>::new())));
        }
        out.push((name, t.to_kind(Kind::Float).contiguous()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The fixed reference input `[REFERENCE_BATCH, C, S, S]` fp32: pixel values drawn uniformly
/// from [0, 1) by ChaCha8 seeded with [`REFERENCE_SEED`], normalised per channel with the run's
/// mean/std, i.e. what the evaluation transform produces from an image.
pub fn reference_input(channels: i64, size: i64, mean: &[f32], std: &[f32]) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(REFERENCE_SEED);
    let plane = (size * size) as usize;
    let mut data = Vec::with_capacity(REFERENCE_BATCH as usize * channels as usize * plane);
    for _ in 0..REFERENCE_BATCH {
        for c in 0..channels as usize {
            for _ in 0..plane {
                let u: f32 = rng.gen();
                data.push((u - mean[c]) / std[c]);
            }
        }
    }
    Tensor::from_slice(&data).reshape([REFERENCE_BATCH, channels, size, size])
}

/// Reference tensors of the Rust slimmable network at `width` in eval mode (running BN
/// statistics) on [`reference_input`] at the run's image size: `input` `[2, C, S, S]`,
/// `pooled` `[2, feature_dim]` ([`SlimResNet::forward_t`]) and `layer1`..`layer4`
/// `[2, stage_channels[i], S/stride_i, S/stride_i]` ([`SlimResNet::feature_maps`]); all fp32
/// contiguous.
///
/// # Errors
/// [`DeployError::Width`]; [`DeployError::Model`] when the input is too small for the stem.
pub fn reference_tensors(run: &LoadedRun, width: f64) -> Result<Vec<(String, Tensor)>> {
    run.check_width(width)?;
    let a = &run.config.augment;
    let x = reference_input(a.channels as i64, run.image_size(), &a.mean, &a.std);
    let net: &SlimResNet = &run.backbone;
    let (pooled, maps) = tch::no_grad(|| -> Result<(Tensor, Vec<Tensor>)> {
        Ok((net.forward_t(&x, width, false)?, net.feature_maps(&x, width, false)?))
    })?;
    let mut out = vec![("input".to_string(), x), ("pooled".to_string(), pooled.contiguous())];
    for (i, m) in maps.into_iter().enumerate() {
        out.push((format!("layer{}", i + 1), m.to_kind(Kind::Float).contiguous()));
    }
    Ok(out)
}

/// Version of the code that wrote an export: the crate version, plus `git describe --always
/// --dirty` of the checkout when it was available at build time (as of the last build of this
/// crate).
pub fn code_version() -> String {
    match option_env!("DSPNET_GIT_DESCRIBE") {
        Some(g) if !g.is_empty() => format!("dspnet-deploy {} ({g})", env!("CARGO_PKG_VERSION")),
        _ => format!("dspnet-deploy {}", env!("CARGO_PKG_VERSION")),
    }
}

struct Bytes {
    data: Vec<u8>,
    shape: Vec<usize>,
    dtype: safetensors::Dtype,
}

impl safetensors::View for &Bytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Serialises CPU tensors (fp32 or int64, contiguous) to safetensors bytes with `metadata`
/// (`format: pt` is always set, as `safetensors.torch.save_file` does).
pub fn safetensors_bytes(tensors: &[(String, Tensor)], metadata: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let dtype = match t.kind() {
            Kind::Float => safetensors::Dtype::F32,
            Kind::Int64 => safetensors::Dtype::I64,
            k => {
                return Err(DeployError::Unsupported(format!(
                    "tensor {name} has dtype {k:?}; exports hold fp32 and int64 only"
                )))
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        owned.push((name.clone(), Bytes { data, shape: t.size().iter().map(|&d| d as usize).collect(), dtype }));
    }
    let mut meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    meta.insert("format".into(), "pt".into());
    safetensors::serialize(owned.iter().map(|(n, b)| (n.as_str(), b)), &Some(meta))
        .map_err(|e| DeployError::Unsupported(format!("safetensors serialisation failed: {e}")))
}

fn out_err(dir: &Path) -> impl Fn(dspnet_core::PathError) -> DeployError + '_ {
    move |e| {
        DeployError::Output(format!("--out {}: cannot write the export ({e}); pass a writable folder", dir.display()))
    }
}

/// Loads `run_dir` ([`load_run`]) and exports `width` into `out_dir/<width_tag>/`
/// ([`export_loaded`]).
///
/// # Errors
/// As [`load_run`] and [`export_loaded`].
pub fn export_width(run_dir: &Path, width: f64, out_dir: &Path, reference: bool) -> Result<ExportSummary> {
    let run = load_run(run_dir)?;
    export_loaded(&run, width, out_dir, reference)
}

/// Exports `width` of a loaded run into `out_dir/<width_tag>/` (created if needed):
/// `model.safetensors` ([`timm_state_dict`], fp32), `reference.safetensors` when `reference`
/// ([`reference_tensors`]; a stale one is removed otherwise) and, last, `model.json`
/// (architecture as timm constructor arguments, stem, input size and normalisation, params,
/// FLOPs, known evaluation results, source run/checkpoint/step/sha256, code version, files and
/// their sha256). Every file is written atomically (temporary name in the same folder, fsync,
/// rename).
///
/// # Errors
/// [`DeployError::Width`] for a width the run did not train; [`DeployError::Unsupported`] when
/// timm cannot express the width ([`timm_arch`]); [`DeployError::Output`] when the folder cannot
/// be created or written.
pub fn export_loaded(run: &LoadedRun, width: f64, out_dir: &Path, reference: bool) -> Result<ExportSummary> {
    run.check_width(width)?;
    let cfg = &run.config;
    let arch = timm_arch(&cfg.model, width)?;
    let tag = width_tag(width);
    let dir = out_dir.join(&tag);
    std::fs::create_dir_all(&dir).map_err(|e| {
        DeployError::Output(format!(
            "--out {}: cannot create {} ({e}); pass a writable folder",
            out_dir.display(),
            dir.display()
        ))
    })?;
    let size = run.image_size();
    let params = run.params(width);
    let flops = run.macs(width);
    let version = code_version();
    let meta = [("width", width.to_string()), ("dspnet_version", version.clone())];

    let weights = safetensors_bytes(&timm_state_dict(run, width)?, &meta)?;
    let weights_sha = sha256_hex(&weights);
    write_atomic(&dir.join(MODEL_WEIGHTS), &weights).map_err(out_err(out_dir))?;
    drop(weights);

    let strides = feature_strides(cfg.model.stem);
    let mut files = json!({ MODEL_WEIGHTS: { "sha256": weights_sha } });
    let ref_path = dir.join(REFERENCE);
    if reference {
        let tensors = reference_tensors(run, width)?;
        let strides_s = strides.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",");
        let mut rmeta = meta.to_vec();
        rmeta.push(("seed", REFERENCE_SEED.to_string()));
        rmeta.push(("strides", strides_s));
        let bytes = safetensors_bytes(&tensors, &rmeta)?;
        files[REFERENCE] = json!({
            "sha256": sha256_hex(&bytes),
            "input": {"shape": tensors[0].1.size(), "seed": REFERENCE_SEED, "generator": "ChaCha8 uniform [0,1) pixels, normalised with input.mean/std"},
            "outputs": {"pooled": tensors[1].1.size(), "layer1": tensors[2].1.size(), "layer2": tensors[3].1.size(), "layer3": tensors[4].1.size(), "layer4": tensors[5].1.size()},
            "mode": "eval (running BN statistics)",
        });
        write_atomic(&dir.join(REFERENCE), &bytes).map_err(out_err(out_dir))?;
    } else if ref_path.exists() {
        std::fs::remove_file(&ref_path).map_err(|e| {
            DeployError::Output(format!(
                "--out {}: cannot remove the stale {} ({e})",
                out_dir.display(),
                ref_path.display()
            ))
        })?;
    }

    let stem = match cfg.model.stem {
        Stem::Imagenet => json!({
            "type": "imagenet",
            "conv1": {"kernel_size": 7, "stride": 2, "padding": 3, "bias": false},
            "maxpool": {"kernel_size": 3, "stride": 2, "padding": 1},
        }),
        Stem::Small => json!({
            "type": "small",
            "conv1": {"kernel_size": 3, "stride": 1, "padding": 1, "bias": false},
            "maxpool": null,
        }),
    };
    let eval_results: Vec<_> = run
        .results_for(width)
        .into_iter()
        .map(|r| json!({"protocol": r.protocol, "top1": r.top1, "settings": r.settings}))
        .collect();
    let baselines: Vec<_> = run
        .results
        .iter()
        .filter(|r| r.init != "pretrained" && (r.width - width).abs() <= dspnet_model::slimmable::WIDTH_TOLERANCE)
        .map(|r| json!({"init": r.init, "protocol": r.protocol, "top1": r.top1, "settings": r.settings}))
        .collect();
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string();
    let a = &cfg.augment;
    // f32 config values as their shortest decimal (0.4914, not 0.49140000343322754)
    let f64s = |v: &[f32]| v.iter().map(|x| x.to_string().parse::<f64>().unwrap_or(*x as f64)).collect::<Vec<f64>>();
    let snippet = timm_snippet(&arch, cfg.model.stem, MODEL_WEIGHTS);
    let doc = json!({
        "format": FORMAT,
        "width": width,
        "width_tag": tag,
        "architecture": {
            "family": "resnet",
            "depth": cfg.model.depth.to_string(),
            "timm": arch,
            "timm_snippet": snippet,
            "feature_strides": strides,
            "dtype": "float32",
        },
        "stem": stem,
        "input": {
            "channels": a.channels,
            "size": [size, size],
            "value_range": [0.0, 1.0],
            "mean": f64s(&a.mean),
            "std": f64s(&a.std),
            "eval_transform": {"resize_shorter_side": a.eval_resize, "center_crop": a.image_size},
        },
        "params": params,
        "flops": flops,
        "flops_definition": "multiply-accumulates of the convolutions for one image at input.size (BN, ReLU, pooling and additions not counted)",
        "eval_results": eval_results,
        "random_init_baselines": baselines,
        "source": {
            "run": abs(&run.run_dir),
            "checkpoint": abs(&run.checkpoint_path),
            "network": "online backbone (online.backbone.*), as dspnet-eval evaluates",
            "step": run.state.step,
            "total_steps": run.state.total_steps,
            "finished": run.state.finished,
            "sha256": run.state.weights_sha256,
            "trainer_version": run.state.version,
            "precision": run.state.precision,
        },
        "code_version": version,
        "files": files,
    });
    let text = serde_json::to_vec_pretty(&doc).expect("model.json serialises");
    write_atomic(&dir.join(MODEL_JSON), &text).map_err(out_err(out_dir))?;
    Ok(ExportSummary { width, dir, params, macs: flops, feature_dim: arch.feature_dim, input_size: size, reference })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(depth: Depth, stem: Stem, base: i64) -> ResNetConfig {
        ResNetConfig { depth, stem, in_channels: 3, base_channels: base, widths: vec![0.25, 0.5, 0.75, 1.0] }
    }

    /// Channel counts worked out by hand from torchvision's ResNet-50 (64/128/256/512 inner,
    /// x4 outputs) at half width, and the example `channels=(32, 64, 128, 256)`.
    #[test]
    fn timm_arch_by_hand() {
        let a = timm_arch(&cfg(Depth::R50, Stem::Imagenet, 64), 0.5).unwrap();
        assert_eq!(a.model_name, "resnet50");
        assert_eq!(a.block, "Bottleneck");
        assert_eq!(a.layers, [3, 4, 6, 3]);
        assert_eq!(a.channels, [32, 64, 128, 256]);
        assert_eq!(a.stage_channels, [128, 256, 512, 1024]);
        assert_eq!((a.stem_width, a.feature_dim, a.in_chans, a.num_classes), (32, 1024, 3, 0));
        assert!(!a.timm_native, "timm's plain stem is 64 wide, this one 32");
        assert!(timm_arch(&cfg(Depth::R50, Stem::Imagenet, 64), 1.0).unwrap().timm_native);
        assert!(!timm_arch(&cfg(Depth::R50, Stem::Small, 64), 1.0).unwrap().timm_native);
        let b = timm_arch(&cfg(Depth::R18, Stem::Small, 16), 0.25).unwrap();
        assert_eq!(
            (b.block.as_str(), b.layers, b.channels, b.feature_dim),
            ("BasicBlock", [2, 2, 2, 2], [4, 8, 16, 32], 32)
        );
        assert_eq!(timm_arch(&cfg(Depth::R34, Stem::Small, 16), 0.75).unwrap().layers, [3, 4, 6, 3]);
    }

    /// base 6 at width 0.25: inner round(1.5) = 2, output round(6) = 6 != 4 x 2.
    #[test]
    fn timm_arch_refuses_what_timm_cannot_build() {
        let e = timm_arch(&cfg(Depth::R50, Stem::Imagenet, 6), 0.25).unwrap_err().to_string();
        assert!(e.contains("stage 1 has 2 inner and 6 output") && !e.contains('\n'), "{e}");
        // BasicBlock has expansion 1: always representable
        assert!(timm_arch(&cfg(Depth::R18, Stem::Imagenet, 6), 0.25).is_ok());
    }

    #[test]
    fn snippet_swaps_only_what_timm_cannot_build() {
        let native = timm_snippet(
            &timm_arch(&cfg(Depth::R50, Stem::Imagenet, 64), 1.0).unwrap(),
            Stem::Imagenet,
            "m.safetensors",
        );
        assert_eq!(
            native,
            "import timm, torch.nn as nn\nfrom safetensors.torch import load_file\n\
             model = timm.create_model(\"resnet50\", pretrained=False, num_classes=0, in_chans=3, channels=(64, 128, 256, 512))\n\
             model.load_state_dict(load_file(\"m.safetensors\"), strict=True)\nmodel.eval()\n"
        );
        let quarter = timm_snippet(
            &timm_arch(&cfg(Depth::R50, Stem::Imagenet, 64), 0.25).unwrap(),
            Stem::Imagenet,
            "m.safetensors",
        );
        for line in [
            "from timm.models.resnet import Bottleneck, downsample_conv",
            "channels=(16, 32, 64, 128))",
            "model.conv1 = nn.Conv2d(3, 16, kernel_size=7, stride=2, padding=3, bias=False)",
            "model.bn1 = nn.BatchNorm2d(16)",
            "model.layer1[0] = Bottleneck(16, 16, downsample=downsample_conv(16, 64, 1))",
        ] {
            assert!(quarter.contains(line), "{line} missing in\n{quarter}");
        }
        assert!(!quarter.contains("maxpool"));
        let small =
            timm_snippet(&timm_arch(&cfg(Depth::R18, Stem::Small, 64), 1.0).unwrap(), Stem::Small, "m.safetensors");
        assert!(
            small.contains("model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)"),
            "{small}"
        );
        assert!(small.contains("model.maxpool = nn.Identity()"), "{small}");
        assert!(!small.contains("bn1") && !small.contains("layer1"), "64-wide stem: timm's BN and layer1 fit\n{small}");
    }

    #[test]
    fn reference_input_is_fixed_and_normalised() {
        let (mean, std) = ([0.5f32, 0.25, 0.0], [0.5f32, 0.25, 2.0]);
        let a = reference_input(3, 5, &mean, &std);
        let b = reference_input(3, 5, &mean, &std);
        assert_eq!(a.size(), vec![2, 3, 5, 5]);
        assert!(a.equal(&b), "same seed, same input");
        // pixels in [0, 1) -> channel c in [(0 - m_c) / s_c, (1 - m_c) / s_c)
        for c in 0..3 {
            let ch = a.narrow(1, c, 1);
            let (lo, hi) = (ch.min().double_value(&[]), ch.max().double_value(&[]));
            let (l, h) = (
                (0.0 - mean[c as usize] as f64) / std[c as usize] as f64,
                (1.0 - mean[c as usize] as f64) / std[c as usize] as f64,
            );
            assert!(lo >= l - 1e-6 && hi < h + 1e-6 && hi - lo > 0.8 * (h - l), "channel {c}: {lo}..{hi} vs {l}..{h}");
        }
        // the first value is the first ChaCha8 draw
        let u: f32 = rand_chacha::ChaCha8Rng::seed_from_u64(REFERENCE_SEED).gen();
        assert_eq!(a.double_value(&[0, 0, 0, 0]) as f32, (u - 0.5) / 0.5);
    }

    /// Read back with the safetensors crate itself: names, dtypes, shapes, bytes, metadata.
    #[test]
    fn safetensors_bytes_round_trip() {
        let t = vec![
            ("b.weight".to_string(), Tensor::from_slice(&[1.5f32, -2.0, 0.25, 4.0]).reshape([2, 2])),
            ("a.num_batches_tracked".to_string(), Tensor::from_slice(&[0i64]).reshape(Vec::<i64>::new())),
        ];
        let bytes = safetensors_bytes(&t, &[("width", "0.5".into())]).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let m = meta.metadata().as_ref().unwrap();
        assert_eq!((m["format"].as_str(), m["width"].as_str()), ("pt", "0.5"));
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let w = st.tensor("b.weight").unwrap();
        assert_eq!((w.dtype(), w.shape()), (safetensors::Dtype::F32, &[2usize, 2][..]));
        let vals: Vec<f32> = w.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals, vec![1.5, -2.0, 0.25, 4.0]);
        let n = st.tensor("a.num_batches_tracked").unwrap();
        assert_eq!((n.dtype(), n.shape(), n.data()), (safetensors::Dtype::I64, &[][..], &[0u8; 8][..]));
        let bad = [("x".to_string(), Tensor::from_slice(&[1u8]))];
        assert!(matches!(safetensors_bytes(&bad, &[]), Err(DeployError::Unsupported(_))));
    }
}
