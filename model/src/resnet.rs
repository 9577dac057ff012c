//! Slimmable ResNet-18/34/50 (He et al. 2016, "Deep Residual Learning for Image Recognition";
//! ResNet-50 uses the torchvision "v1.5" bottleneck with the stride on the 3x3 conv) built from
//! [`SlimConv2d`] and [`SwitchableBatchNorm`] (Yu et al. 2019).
//!
//! Channel counts at width `w` (base `b`, 64 in torchvision): stem conv `slim(b, w)`; stage `i`
//! (1..=4) inner width `slim(b * 2^(i-1), w)`, block output `slim(b * 2^(i-1) * e, w)` with
//! expansion `e = 1` (BasicBlock) or 4 (Bottleneck).
//!
//! VarStore names mirror torchvision's module names, with the switchable BN's width tag inserted
//! before the tensor name: `conv1.weight`, `bn1.w0_25.weight`, `layer1.0.conv2.weight`,
//! `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.w1_00.running_var`, ... so
//! [`SlimResNet::torchvision_state_dict`] (and any exporter) maps them mechanically by dropping
//! the width tag and slicing.

use crate::error::{ModelError, Result};
use crate::slimmable::{conv_out, slim_channels, SlimConv2d, SwitchableBatchNorm, WidthList};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use tch::{nn, Tensor};

/// Network depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// ResNet-18: BasicBlock x [2, 2, 2, 2].
    R18,
    /// ResNet-34: BasicBlock x [3, 4, 6, 3].
    R34,
    /// ResNet-50: Bottleneck x [3, 4, 6, 3].
    R50,
}

impl Depth {
    /// Blocks per stage.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Depth::R18 => [2, 2, 2, 2],
            Depth::R34 | Depth::R50 => [3, 4, 6, 3],
        }
    }

    /// Ratio of a block's output channels to its inner channels (1 BasicBlock, 4 Bottleneck).
    pub fn expansion(self) -> i64 {
        match self {
            Depth::R50 => 4,
            _ => 1,
        }
    }

    /// Number of layers in the name (18, 34, 50).
    pub fn layers(self) -> u32 {
        match self {
            Depth::R18 => 18,
            Depth::R34 => 34,
            Depth::R50 => 50,
        }
    }
}

impl std::fmt::Display for Depth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{}", self.layers())
    }
}

impl FromStr for Depth {
    type Err = ModelError;
    /// Accepts `r18`, `resnet18`, `18` (case-insensitive), likewise 34 and 50.
    fn from_str(s: &str) -> Result<Self> {
        let l = s.trim().to_ascii_lowercase();
        let n = l.strip_prefix("resnet").or_else(|| l.strip_prefix('r')).unwrap_or(&l);
        match n {
            "18" => Ok(Depth::R18),
            "34" => Ok(Depth::R34),
            "50" => Ok(Depth::R50),
            _ => Err(ModelError::InvalidConfig(format!(
                "unknown depth {s:?}; use r18, r34 or r50 (or resnet18 / 18, ...)"
            ))),
        }
    }
}

/// Input stem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// 7x7 stride-2 conv + BN + ReLU + 3x3 stride-2 max pool (overall stride 4), for >= 64 px.
    Imagenet,
    /// 3x3 stride-1 conv + BN + ReLU, no max pool, for 28-32 px images (CIFAR, Fashion-MNIST).
    Small,
}

impl FromStr for Stem {
    type Err = ModelError;
    /// Accepts `imagenet` or `small` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "imagenet" => Ok(Stem::Imagenet),
            "small" => Ok(Stem::Small),
            _ => Err(ModelError::InvalidConfig(format!("unknown stem {s:?}; use imagenet or small"))),
        }
    }
}

/// Configuration of a [`SlimResNet`] (TOML/JSON via serde; unknown fields are rejected).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// `"r18"`, `"r34"` or `"r50"`.
    pub depth: Depth,
    /// `"imagenet"` or `"small"`.
    pub stem: Stem,
    /// Image channels (1 grey, 3 RGB); never sliced.
    pub in_channels: i64,
    /// Stem/stage-1 channels at width 1 (64 = torchvision).
    pub base_channels: i64,
    /// Width multipliers, ascending, unique, in (0, 1] (see [`WidthList`]).
    pub widths: Vec<f64>,
}

impl ResNetConfig {
    /// Checks the values a network can be built from (without building it).
    ///
    /// # Errors
    /// [`ModelError::InvalidWidthList`] for a bad `widths`; [`ModelError::InvalidConfig`] when
    /// `in_channels` or `base_channels` is < 1.
    pub fn validate(&self) -> Result<()> {
        let cfg = self;
        cfg.width_list()?;
        if cfg.in_channels < 1 {
            return Err(ModelError::InvalidConfig(format!(
                "in_channels = {} must be >= 1 (1 for grey, 3 for RGB images)",
                cfg.in_channels
            )));
        }
        if cfg.base_channels < 1 {
            return Err(ModelError::InvalidConfig(format!(
                "base_channels = {} must be >= 1 (64 for torchvision ResNets)",
                cfg.base_channels
            )));
        }
        Ok(())
    }

    /// The validated width list.
    ///
    /// # Errors
    /// [`ModelError::InvalidWidthList`].
    pub fn width_list(&self) -> Result<WidthList> {
        WidthList::new(self.widths.clone())
    }
}

/// A conv followed by its switchable BN, with torchvision names of both.
#[derive(Debug)]
struct ConvBn {
    conv: SlimConv2d,
    bn: SwitchableBatchNorm,
    conv_name: String,
    bn_name: String,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        vs: &nn::Path,
        tv_prefix: &str,
        conv_key: &str,
        bn_key: &str,
        (cin, cout, k, s, p): (i64, i64, i64, i64, i64),
        slice_input: bool,
        widths: &WidthList,
    ) -> Self {
        let join = |k: &str| {
            if tv_prefix.is_empty() {
                k.to_string()
            } else {
                format!("{tv_prefix}.{k}")
            }
        };
        Self {
            conv: SlimConv2d::new(&vs.sub(conv_key), cin, cout, k, s, p, slice_input),
            bn: SwitchableBatchNorm::new(&vs.sub(bn_key), cout, widths),
            conv_name: join(conv_key),
            bn_name: join(bn_key),
        }
    }

    fn forward_t(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        self.bn.f_forward_t(&self.conv.f_forward(x, width)?, width, train)
    }

    fn num_params(&self, width: f64) -> i64 {
        self.conv.num_params(width) + self.bn.num_params(width)
    }

    fn export(&self, width: f64, out: &mut Vec<(String, Tensor)>) -> Result<()> {
        let copy = |t: &Tensor| t.detach().copy();
        out.push((format!("{}.weight", self.conv_name), copy(&self.conv.sliced_weight(width))));
        let s = self.bn.state(width)?;
        let n = &self.bn_name;
        out.push((format!("{n}.weight"), copy(&s.weight)));
        out.push((format!("{n}.bias"), copy(&s.bias)));
        out.push((format!("{n}.running_mean"), copy(&s.running_mean)));
        out.push((format!("{n}.running_var"), copy(&s.running_var)));
        Ok(())
    }
}

/// One residual block: BasicBlock (two 3x3) or Bottleneck (1x1, 3x3 with the stride, 1x1).
#[derive(Debug)]
struct Block {
    /// Main branch; ReLU after every conv-BN but the last.
    main: Vec<ConvBn>,
    /// 1x1 conv (with the stride) + BN on the shortcut when the shape changes.
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(
        vs: &nn::Path,
        name: &str,
        bottleneck: bool,
        cin: i64,
        planes: i64,
        stride: i64,
        widths: &WidthList,
    ) -> Self {
        let exp = if bottleneck { 4 } else { 1 };
        let cout = planes * exp;
        let main = if bottleneck {
            vec![
                ConvBn::new(vs, name, "conv1", "bn1", (cin, planes, 1, 1, 0), true, widths),
                ConvBn::new(vs, name, "conv2", "bn2", (planes, planes, 3, stride, 1), true, widths),
                ConvBn::new(vs, name, "conv3", "bn3", (planes, cout, 1, 1, 0), true, widths),
            ]
        } else {
            vec![
                ConvBn::new(vs, name, "conv1", "bn1", (cin, planes, 3, stride, 1), true, widths),
                ConvBn::new(vs, name, "conv2", "bn2", (planes, planes, 3, 1, 1), true, widths),
            ]
        };
        let downsample = (stride != 1 || cin != cout).then(|| {
            let p = vs.sub("downsample");
            ConvBn::new(&p, &format!("{name}.downsample"), "0", "1", (cin, cout, 1, stride, 0), true, widths)
        });
        Self { main, downsample }
    }

    /// ReLU and the residual addition run in place on fresh BN outputs (as torchvision's
    /// `ReLU(inplace=True)` and `out += identity`): batch norm's backward needs its input, not its
    /// output, and ReLU's backward needs only its own result, so autograd stays valid while each
    /// block allocates three activations fewer.
    fn forward_t(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        let mut out = x.shallow_clone();
        let last = self.main.len() - 1;
        for (i, cb) in self.main.iter().enumerate() {
            out = cb.forward_t(&out, width, train)?;
            if i < last {
                out = out.f_relu_()?;
            }
        }
        let identity = match &self.downsample {
            Some(ds) => ds.forward_t(x, width, train)?,
            None => x.shallow_clone(),
        };
        Ok(out.f_add_(&identity)?.f_relu_()?)
    }

    fn parts(&self) -> impl Iterator<Item = &ConvBn> {
        self.main.iter().chain(self.downsample.iter())
    }

    /// MACs of one image at `width` for an `h x w` input, and the output size.
    fn macs(&self, width: f64, h: i64, w: i64) -> (u64, i64, i64) {
        let (mut total, mut hh, mut ww) = (0u64, h, w);
        for cb in &self.main {
            let (m, h2, w2) = cb.conv.macs(width, hh, ww);
            total += m;
            hh = h2;
            ww = w2;
        }
        if let Some(ds) = &self.downsample {
            total += ds.conv.macs(width, h, w).0;
        }
        (total, hh, ww)
    }
}

/// A slimmable ResNet: one set of shared full-width weights, runnable at every width of its
/// [`WidthList`]. The classifier (`fc`) is not part of it; the output is the globally average
/// pooled feature vector (the BYOL/DSPNet encoder output).
#[derive(Debug)]
pub struct SlimResNet {
    cfg: ResNetConfig,
    widths: WidthList,
    stem: ConvBn,
    layers: Vec<Vec<Block>>,
}

impl SlimResNet {
    /// Builds the network's variables under `vs` (see module docs for names).
    ///
    /// # Errors
    /// [`ModelError::InvalidWidthList`] for a bad `cfg.widths`; [`ModelError::InvalidConfig`]
    /// when `in_channels` or `base_channels` is < 1.
    pub fn new(vs: &nn::Path, cfg: &ResNetConfig) -> Result<Self> {
        let widths = cfg.width_list()?;
        cfg.validate()?;
        let b = cfg.base_channels;
        let (k, s, p) = match cfg.stem {
            Stem::Imagenet => (7, 2, 3),
            Stem::Small => (3, 1, 1),
        };
        let stem = ConvBn::new(vs, "", "conv1", "bn1", (cfg.in_channels, b, k, s, p), false, &widths);
        let bottleneck = cfg.depth == Depth::R50;
        let exp = cfg.depth.expansion();
        let mut cin = b;
        let mut layers = Vec::with_capacity(4);
        for (stage, &n) in cfg.depth.blocks().iter().enumerate() {
            let planes = b << stage;
            let lname = format!("layer{}", stage + 1);
            let lvs = vs.sub(&lname);
            let mut blocks = Vec::with_capacity(n);
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let name = format!("{lname}.{i}");
                blocks.push(Block::new(&lvs.sub(i), &name, bottleneck, cin, planes, stride, &widths));
                cin = planes * exp;
            }
            layers.push(blocks);
        }
        Ok(Self { cfg: cfg.clone(), widths, stem, layers })
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.cfg
    }

    /// The validated width list.
    pub fn widths(&self) -> &WidthList {
        &self.widths
    }

    fn check_input(&self, x: &Tensor, width: f64) -> Result<()> {
        self.widths.index_of(width)?;
        let c = self.cfg.in_channels;
        if x.dim() != 4 || x.size()[1] != c {
            return Err(ModelError::BadInput {
                what: "SlimResNet".into(),
                got: x.size(),
                expected: format!("[B, {c}, H, W] images"),
            });
        }
        Ok(())
    }

    fn stem_forward(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        let y = self.stem.forward_t(x, width, train)?.f_relu_()?;
        Ok(match self.cfg.stem {
            Stem::Imagenet => y.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?,
            Stem::Small => y,
        })
    }

    /// Outputs of layer1..layer4 at `width`: `[B, slim(b*2^i*e, w), H/s_i, W/s_i]` with strides
    /// 4/8/16/32 (ImageNet stem) or 1/2/4/8 (small stem), same kind as `x`.
    ///
    /// # Errors
    /// As [`Self::forward_t`].
    pub fn feature_maps(&self, x: &Tensor, width: f64, train: bool) -> Result<Vec<Tensor>> {
        self.check_input(x, width)?;
        let mut h = self.stem_forward(x, width, train)?;
        let mut maps = Vec::with_capacity(4);
        for blocks in &self.layers {
            for b in blocks {
                h = b.forward_t(&h, width, train)?;
            }
            maps.push(h.shallow_clone());
        }
        Ok(maps)
    }

    /// Pooled features at `width`.
    ///
    /// `x`: `[B, in_channels, H, W]`, fp32 or bf16, any memory format (channels-last is kept
    /// through the convolutions). Returns `[B, feature_dim(width)]` of `x.kind()`, the global
    /// average pool of layer4 (no fc). `train` selects batch statistics (and updates this width's
    /// BN running statistics only) versus running statistics.
    ///
    /// # Errors
    /// [`ModelError::WidthNotInList`]; [`ModelError::BadInput`] for a non-4-D input or wrong
    /// channel count; [`ModelError::Torch`] for libtorch failures (e.g. an image too small for
    /// the stem, or batch 1 with 1x1 maps in train mode).
    pub fn forward_t(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        let maps = self.feature_maps(x, width, train)?;
        let last = &maps[maps.len() - 1];
        Ok(last.f_adaptive_avg_pool2d([1, 1])?.f_flatten(1, -1)?)
    }

    /// Feature dimension at `width`: `slim_channels(base * 8 * expansion, width)` (512 for
    /// R18/R34, 2048 for R50 at width 1, base 64).
    pub fn feature_dim(&self, width: f64) -> i64 {
        slim_channels(self.cfg.base_channels * 8 * self.cfg.depth.expansion(), width)
    }

    fn parts(&self) -> impl Iterator<Item = &ConvBn> {
        std::iter::once(&self.stem).chain(self.layers.iter().flatten().flat_map(|b| b.parts()))
    }

    /// Synchronised batch norm for every switchable BN of the network (see
    /// [`SwitchableBatchNorm::set_cross_replica`]); `None` turns it off.
    pub fn set_cross_replica(&mut self, group: Option<std::sync::Arc<dyn crate::sync::CrossReplicaSum>>) {
        self.stem.bn.set_cross_replica(group.clone());
        for block in self.layers.iter_mut().flatten() {
            for cb in block.main.iter_mut().chain(block.downsample.iter_mut()) {
                cb.bn.set_cross_replica(group.clone());
            }
        }
    }

    /// Parameters of the standalone sub-network at `width`: the sliced conv weights plus that
    /// width's BN affine (gamma, beta); no running statistics, no other widths' BNs, no fc.
    /// Computed from the shapes, so it is defined for any width in (0, 1].
    pub fn num_params(&self, width: f64) -> i64 {
        self.parts().map(|p| p.num_params(width)).sum()
    }

    /// Multiply-accumulates (MACs) of one forward pass of ONE image of `height x widthpx` pixels
    /// at `width`, counting convolutions only (`C_out * C_in * k * k * H_out * W_out` each); BN,
    /// ReLU, pooling, residual additions and the absent fc are not counted. This is the
    /// convention of Slimmable Networks and torchvision's "GFLOPS" column (ResNet-50 at 224 px:
    /// 4.09e9, ResNet-18: 1.81e9; torchvision also counts the 2.05e6 / 0.51e6 MACs of its fc).
    pub fn macs(&self, width: f64, height: i64, widthpx: i64) -> u64 {
        let (mut total, mut h, mut w) = self.stem.conv.macs(width, height, widthpx);
        if self.cfg.stem == Stem::Imagenet {
            h = conv_out(h, 3, 2, 1);
            w = conv_out(w, 3, 2, 1);
        }
        for b in self.layers.iter().flatten() {
            let (m, h2, w2) = b.macs(width, h, w);
            total += m;
            h = h2;
            w = w2;
        }
        total
    }

    /// The sub-network at `width` as a torchvision `ResNet` state dict (without `fc.*` and
    /// without `num_batches_tracked`, which torchvision fills in on load): names such as
    /// `conv1.weight`, `bn1.running_var`, `layer1.0.downsample.0.weight`; every tensor is a
    /// contiguous, detached copy of the width's slice (conv weights) or of that width's BN
    /// (affine and running statistics), in the store's dtype.
    ///
    /// `vs` is the store the model was built in; the tensors are read through the model's own
    /// handles, which alias the store's variables (so `vs.load(..)` is reflected).
    ///
    /// # Errors
    /// [`ModelError::WidthNotInList`] (deviation from a plain `Vec` return: a width outside the
    /// list has no BN to export).
    pub fn torchvision_state_dict(&self, _vs: &nn::VarStore, width: f64) -> Result<Vec<(String, Tensor)>> {
        self.widths.index_of(width)?;
        let mut out = Vec::new();
        for p in self.parts() {
            p.export(width, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slimmable::{to_channels_last, width_tag};
    use std::collections::HashMap;
    use tch::{nn::VarStore, Device, Kind};

    fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
        (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
    }

    /// The sliced path against an unsliced one: a width-`w` pass of the slimmable network must
    /// equal a plain network (width list `[1.0]`, `base * w` channels, so no slicing anywhere)
    /// whose weights are copies of the width-`w` slices and BN. Checked in train mode (batch
    /// statistics, and the running statistics each updates), eval mode, for the gradients the
    /// slices receive, and in bf16 channels_last.
    #[test]
    fn sliced_forward_equals_plain_network_with_copied_slices() {
        tch::manual_seed(11);
        let widths = vec![0.25, 0.5, 0.75, 1.0];
        let cfg = |base: i64, widths: Vec<f64>| ResNetConfig {
            depth: Depth::R18,
            stem: Stem::Small,
            in_channels: 3,
            base_channels: base,
            widths,
        };
        let slim_vs = VarStore::new(Device::Cpu);
        let slim = SlimResNet::new(&slim_vs.root(), &cfg(16, widths.clone())).unwrap();
        // Non-trivial BN: random affine and running statistics for every width.
        tch::no_grad(|| {
            for (name, mut t) in slim_vs.variables() {
                if name.ends_with("running_var") {
                    t.copy_(&(Tensor::rand_like(&t) + 0.5));
                } else if t.dim() == 1 {
                    t.copy_(&(Tensor::randn_like(&t) * 0.3 + 0.5));
                }
            }
        });
        let x = Tensor::randn([4, 3, 12, 12], (Kind::Float, Device::Cpu));
        for &w in &widths[..3] {
            let plain_vs = VarStore::new(Device::Cpu);
            let base = (16.0 * w) as i64;
            let plain = SlimResNet::new(&plain_vs.root(), &cfg(base, vec![1.0])).unwrap();
            // Copy the width-w slices in, by torchvision name (the plain store's names carry
            // the width tag w1_00 where the slimmable one has the tag of w).
            let slices: HashMap<String, Tensor> =
                slim.torchvision_state_dict(&slim_vs, w).unwrap().into_iter().collect();
            let mut copied = 0;
            tch::no_grad(|| {
                for (name, mut t) in plain_vs.variables() {
                    let tv = name.replace(".w1_00", "");
                    let src = &slices[&tv];
                    assert_eq!(src.size(), t.size(), "{name}");
                    t.copy_(src);
                    copied += 1;
                }
            });
            assert_eq!(copied, slices.len());
            let tag = width_tag(w);
            let slim_vars = slim_vs.variables();
            let running = |vars: &HashMap<String, Tensor>, tag: &str| -> Vec<Tensor> {
                let mut names: Vec<&String> =
                    vars.keys().filter(|n| n.contains(tag) && n.contains("running")).collect();
                names.sort();
                names.into_iter().map(|n| vars[n].detach().copy()).collect()
            };

            // Eval mode: identical up to float summation order.
            let ys = tch::no_grad(|| slim.forward_t(&x, w, false)).unwrap();
            let yp = tch::no_grad(|| plain.forward_t(&x, 1.0, false)).unwrap();
            assert_eq!(ys.size(), yp.size());
            let e = rel_err(&ys, &yp);
            assert!(e < 1e-5, "width {w} eval: relative difference {e}");

            // Train mode: same output, same running-statistics update, same slice gradients.
            for v in slim_vars.values().chain(plain_vs.variables().values()) {
                let mut v = v.shallow_clone();
                v.zero_grad();
            }
            let ys = slim.forward_t(&x, w, true).unwrap();
            let yp = plain.forward_t(&x, 1.0, true).unwrap();
            let e = rel_err(&ys, &yp);
            assert!(e < 1e-5, "width {w} train: relative difference {e}");
            (&ys * &ys).sum(Kind::Float).backward();
            (&yp * &yp).sum(Kind::Float).backward();
            let rs = running(&slim_vars, &format!(".{tag}."));
            let rp = running(&plain_vs.variables(), ".w1_00.");
            assert_eq!(rs.len(), rp.len());
            for (a, b) in rs.iter().zip(&rp) {
                assert!(rel_err(a, b) < 1e-5, "width {w}: running statistics differ");
            }
            let plain_vars = plain_vs.variables();
            let mut checked = 0;
            for (name, p) in &plain_vars {
                if p.dim() != 4 {
                    continue;
                }
                let s = &slim_vars[name];
                let (o, i) = (p.size()[0], p.size()[1]);
                let g = s.grad().narrow(0, 0, o).narrow(1, 0, i);
                let e = rel_err(&g, &p.grad());
                assert!(e < 1e-4, "width {w}: gradient of {name} differs by {e}");
                checked += 1;
            }
            assert_eq!(checked, 20, "ResNet-18: stem + 16 block convs + 3 downsample convs");

            // bf16 channels_last: the sliced and plain paths run the same casts and kernels.
            let xb = to_channels_last(&x.to_kind(Kind::BFloat16));
            let ys = tch::no_grad(|| slim.forward_t(&xb, w, false)).unwrap();
            let yp = tch::no_grad(|| plain.forward_t(&xb, 1.0, false)).unwrap();
            assert_eq!(ys.kind(), Kind::BFloat16);
            let e = rel_err(&ys, &yp);
            assert!(e < 1e-2, "width {w} bf16: relative difference {e}");
        }
    }
}
