//! Slimmable layers (Yu et al. 2019, "Slimmable Neural Networks", ICLR; Yu & Huang 2019,
//! "Universally Slimmable Networks").
//!
//! A slimmable layer owns ONE full-size weight. At width multiplier `w` it runs with the
//! leading `slim_channels(C, w)` output (and, where sliced, input) channels of that weight: the
//! slice is a view (`narrow`), not a copy, so every width trains the same shared parameters and
//! gradients of a width-`w` pass land only inside its slice.
//!
//! Batch normalisation cannot be shared that way, because each width sees different feature
//! statistics; [`SwitchableBatchNorm`] keeps one private BN (affine + running statistics) per
//! width in the [`WidthList`] (Yu et al. 2019, §3 "switchable batch normalization").

use crate::error::{ModelError, Result};
use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// Two widths closer than this are the same width ([`WidthList::index_of`], uniqueness check).
pub const WIDTH_TOLERANCE: f64 = 1e-9;
/// Running-statistics momentum of every BN (PyTorch default): `r <- (1 - m) r + m batch_stat`.
pub const BN_MOMENTUM: f64 = 0.1;
/// Epsilon added to the variance in every BN (PyTorch default).
pub const BN_EPS: f64 = 1e-5;

/// Number of channels a layer with `full` channels has at width multiplier `width`:
/// `max(1, round(width * full))`.
///
/// Rounding is [`f64::round`], i.e. half away from zero (`0.5 * 3 = 1.5 -> 2`). Note that
/// Python's `round()` rounds half to even (`round(1.5) = 2`, `round(2.5) = 2`), so a Python
/// reimplementation must use `math.floor(x + 0.5)` to agree on exact halves. For the usual
/// widths 0.25/0.5/0.75/1.0 and channel counts that are multiples of 4 no halves occur.
pub fn slim_channels(full: i64, width: f64) -> i64 {
    ((full as f64) * width).round().max(1.0) as i64
}

/// Stable, readable VarStore path component for a width: `0.25 -> "w0_25"`, `1.0 -> "w1_00"`,
/// `0.125 -> "w0_125"` (at least two decimals, more only when needed to represent the width
/// within [`WIDTH_TOLERANCE`]).
pub fn width_tag(width: f64) -> String {
    let mut s = format!("{width:.2}");
    for decimals in 2..=9usize {
        s = format!("{width:.decimals$}");
        if s.parse::<f64>().map(|v| (v - width).abs() <= WIDTH_TOLERANCE).unwrap_or(false) {
            break;
        }
    }
    format!("w{}", s.replace('.', "_"))
}

/// A validated list of width multipliers: non-empty, sorted ascending, unique (pairwise apart by
/// more than [`WIDTH_TOLERANCE`]), every value finite and in `(0, 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WidthList(Vec<f64>);

impl WidthList {
    /// Validates `widths`.
    ///
    /// # Errors
    /// [`ModelError::InvalidWidthList`] naming the offending value (empty list, value outside
    /// `(0, 1]` or not finite, not ascending, duplicate).
    pub fn new(widths: Vec<f64>) -> Result<Self> {
        let bad = |reason: String| ModelError::InvalidWidthList { list: widths.clone(), reason };
        if widths.is_empty() {
            return Err(
                bad("the list is empty; give at least one width in (0, 1], e.g. [0.25, 0.5, 0.75, 1.0]".into()),
            );
        }
        for &w in &widths {
            if !(w.is_finite() && w > 0.0 && w <= 1.0) {
                return Err(bad(format!("width {w} is outside (0, 1]")));
            }
        }
        for pair in widths.windows(2) {
            if (pair[1] - pair[0]).abs() <= WIDTH_TOLERANCE {
                return Err(bad(format!("width {} appears twice", pair[1])));
            }
            if pair[1] < pair[0] {
                return Err(bad(format!("width {} comes after {}; sort the list ascending", pair[1], pair[0])));
            }
        }
        Ok(Self(widths))
    }

    /// The widths, ascending.
    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }

    /// Position of `width` in the list (match within [`WIDTH_TOLERANCE`]).
    ///
    /// # Errors
    /// [`ModelError::WidthNotInList`] when no entry matches.
    pub fn index_of(&self, width: f64) -> Result<usize> {
        self.0
            .iter()
            .position(|&w| (w - width).abs() <= WIDTH_TOLERANCE)
            .ok_or_else(|| ModelError::WidthNotInList { width, list: self.0.clone() })
    }

    /// Largest width (the full network in DSPNet's sandwich rule).
    pub fn largest(&self) -> f64 {
        self.0[self.0.len() - 1]
    }

    /// Smallest width.
    pub fn smallest(&self) -> f64 {
        self.0[0]
    }

    /// Number of widths.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false (a `WidthList` is never empty); present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn shape_err(what: &str, x: &Tensor, expected: String) -> ModelError {
    ModelError::BadInput { what: what.to_string(), got: x.size(), expected }
}

/// Casts `t` to `kind` when it differs (keeps the autograd link to the fp32 master weight).
fn cast_like(t: Tensor, kind: Kind) -> Tensor {
    if t.kind() == kind {
        t
    } else {
        t.to_kind(kind)
    }
}

/// Returns `x [B, C, H, W]` with channels-last (NHWC) strides and unchanged logical shape.
///
/// tch 0.26 has no `MemoryFormat` enum, so this is `x.permute([0, 2, 3, 1]).contiguous()`
/// permuted back, which yields exactly PyTorch's `torch.channels_last` layout.
/// Tensors that are not 4-D are returned as a shallow clone.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    if x.dim() != 4 {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// True when the 4-D tensor `x` has dense channels-last (NHWC) strides.
pub fn is_channels_last(x: &Tensor) -> bool {
    if x.dim() != 4 {
        return false;
    }
    let (sz, st) = (x.size(), x.stride());
    st[1] == 1 && st[3] == sz[1] && st[2] == sz[1] * sz[3] && st[0] == sz[1] * sz[2] * sz[3]
}

/// Output size of a convolution/pooling window along one axis (PyTorch formula, floor mode).
pub(crate) fn conv_out(size: i64, k: i64, stride: i64, pad: i64) -> i64 {
    (size + 2 * pad - k).div_euclid(stride) + 1
}

/// Width-sliced 2-D convolution without bias (ResNet convs).
///
/// Holds one weight `[C_out, C_in, k, k]` (fp32 master). At width `w` it convolves with
/// `weight[..slim(C_out, w), ..slim(C_in, w)]` (or all `C_in` when `slice_input` is false, e.g. the
/// stem, whose input is the image). Square kernel, equal stride/padding on both axes, no
/// dilation, no groups. Initialisation: Kaiming normal, fan_out, ReLU gain (as torchvision
/// ResNet): `std = sqrt(2 / (C_out * k * k))`.
#[derive(Debug)]
pub struct SlimConv2d {
    weight: Tensor,
    in_full: i64,
    out_full: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
    slice_input: bool,
}

impl SlimConv2d {
    /// Creates the variable `weight` under `vs`.
    pub fn new(
        vs: &nn::Path,
        in_full: i64,
        out_full: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        slice_input: bool,
    ) -> Self {
        let init =
            Init::Kaiming { dist: NormalOrUniform::Normal, fan: FanInOut::FanOut, non_linearity: NonLinearity::ReLU };
        let weight = vs.var("weight", &[out_full, in_full, kernel, kernel], init);
        Self { weight, in_full, out_full, kernel, stride, padding, slice_input }
    }

    /// The full shared weight `[C_out, C_in, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Input channels used at `width`.
    pub fn in_channels(&self, width: f64) -> i64 {
        if self.slice_input {
            slim_channels(self.in_full, width)
        } else {
            self.in_full
        }
    }

    /// Output channels produced at `width`.
    pub fn out_channels(&self, width: f64) -> i64 {
        slim_channels(self.out_full, width)
    }

    /// The weight slice used at `width` (a view sharing storage with [`Self::weight`]).
    pub fn sliced_weight(&self, width: f64) -> Tensor {
        self.weight.narrow(0, 0, self.out_channels(width)).narrow(1, 0, self.in_channels(width))
    }

    /// Parameters of the standalone convolution at `width`.
    pub fn num_params(&self, width: f64) -> i64 {
        self.out_channels(width) * self.in_channels(width) * self.kernel * self.kernel
    }

    /// Multiply-accumulates for one image of `h x w` pixels at `width`, and the output size.
    pub fn macs(&self, width: f64, h: i64, w: i64) -> (u64, i64, i64) {
        let ho = conv_out(h, self.kernel, self.stride, self.padding);
        let wo = conv_out(w, self.kernel, self.stride, self.padding);
        let per_pixel = (self.out_channels(width) * self.in_channels(width) * self.kernel * self.kernel) as u64;
        (per_pixel * (ho.max(0) * wo.max(0)) as u64, ho, wo)
    }

    /// Convolution at `width`: `x [B, in_channels(w), H, W]` (any float kind, any memory format)
    /// to `[B, out_channels(w), H', W']` of the same kind. The weight slice is cast to `x.kind()`,
    /// so a bf16 input runs a bf16 convolution while the master weight stays fp32.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] when `x` is not 4-D or has the wrong channel count;
    /// [`ModelError::Torch`] for libtorch failures (e.g. an input smaller than the kernel).
    pub fn f_forward(&self, x: &Tensor, width: f64) -> Result<Tensor> {
        let cin = self.in_channels(width);
        if x.dim() != 4 || x.size()[1] != cin {
            return Err(shape_err("SlimConv2d", x, format!("[B, {cin}, H, W] at width {width}")));
        }
        let w = cast_like(self.sliced_weight(width), x.kind());
        let (s, p) = (self.stride, self.padding);
        Ok(x.f_conv2d(&w, None::<Tensor>, [s, s], [p, p], [1, 1], 1)?)
    }

    /// Panicking form of [`Self::f_forward`].
    pub fn forward(&self, x: &Tensor, width: f64) -> Tensor {
        self.f_forward(x, width).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Width-sliced fully connected layer `y = x W^T + b`.
///
/// One weight `[out, in]` (+ optional bias `[out]`). At width `w` it uses
/// `weight[..out(w), ..in(w)]` where `in(w) = slim(in, w)` if `slice_input` else `in`, and
/// likewise for the output (a BYOL head's final 256-d output is never sliced). Initialisation as
/// `torch.nn.Linear`: weight and bias uniform in `±1/sqrt(in)`.
#[derive(Debug)]
pub struct SlimLinear {
    weight: Tensor,
    bias: Option<Tensor>,
    in_full: i64,
    out_full: i64,
    slice_input: bool,
    slice_output: bool,
}

impl SlimLinear {
    /// Creates the variables `weight` (and `bias` when `bias` is true) under `vs`.
    pub fn new(vs: &nn::Path, in_full: i64, out_full: i64, bias: bool, slice_input: bool, slice_output: bool) -> Self {
        let bound = 1.0 / (in_full.max(1) as f64).sqrt();
        let init = Init::Uniform { lo: -bound, up: bound };
        let weight = vs.var("weight", &[out_full, in_full], init);
        let bias = bias.then(|| vs.var("bias", &[out_full], init));
        Self { weight, bias, in_full, out_full, slice_input, slice_output }
    }

    /// The full shared weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The full bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Input features used at `width`.
    pub fn in_features(&self, width: f64) -> i64 {
        if self.slice_input {
            slim_channels(self.in_full, width)
        } else {
            self.in_full
        }
    }

    /// Output features produced at `width`.
    pub fn out_features(&self, width: f64) -> i64 {
        if self.slice_output {
            slim_channels(self.out_full, width)
        } else {
            self.out_full
        }
    }

    /// Parameters of the standalone layer at `width` (weight slice + bias slice).
    pub fn num_params(&self, width: f64) -> i64 {
        let o = self.out_features(width);
        o * self.in_features(width) + if self.bias.is_some() { o } else { 0 }
    }

    /// `x [.., in_features(w)]` (any float kind) to `[.., out_features(w)]` of the same kind.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] on a wrong last dimension; [`ModelError::Torch`] otherwise.
    pub fn f_forward(&self, x: &Tensor, width: f64) -> Result<Tensor> {
        let (i, o) = (self.in_features(width), self.out_features(width));
        if x.dim() < 1 || x.size()[x.dim() - 1] != i {
            return Err(shape_err("SlimLinear", x, format!("[B, {i}] at width {width}")));
        }
        let w = cast_like(self.weight.narrow(0, 0, o).narrow(1, 0, i), x.kind());
        let b = self.bias.as_ref().map(|b| cast_like(b.narrow(0, 0, o), x.kind()));
        Ok(x.f_linear(&w, b.as_ref())?)
    }

    /// Panicking form of [`Self::f_forward`].
    pub fn forward(&self, x: &Tensor, width: f64) -> Tensor {
        self.f_forward(x, width).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// The per-width tensors of one BN inside a [`SwitchableBatchNorm`].
#[derive(Debug)]
pub struct BnState {
    /// Channels of this width: `slim_channels(C, w)`.
    pub channels: i64,
    /// Affine scale gamma `[channels]`, trainable, initialised to 1.
    pub weight: Tensor,
    /// Affine shift beta `[channels]`, trainable, initialised to 0.
    pub bias: Tensor,
    /// Running mean `[channels]`, not trainable, initialised to 0.
    pub running_mean: Tensor,
    /// Running (unbiased) variance `[channels]`, not trainable, initialised to 1.
    pub running_var: Tensor,
}

/// Switchable batch normalisation (Yu et al. 2019, "Slimmable Neural Networks", §3): one private
/// BN per width of the [`WidthList`], sized `slim_channels(C, w)`. Variables live under
/// `<path>.<width_tag>.{weight,bias,running_mean,running_var}`, e.g. `bn1.w0_25.weight`,
/// `bn1.w1_00.running_mean` (running statistics are non-trainable VarStore entries so
/// checkpoints carry them; `num_batches_tracked` is not kept since momentum is fixed).
///
/// Works for 1-d (`[B, C]`, `[B, C, L]`) and 2-d (`[B, C, H, W]`) inputs alike. Momentum
/// [`BN_MOMENTUM`], eps [`BN_EPS`], as PyTorch.
#[derive(Debug)]
pub struct SwitchableBatchNorm {
    widths: WidthList,
    full: i64,
    bns: Vec<BnState>,
    /// Data-parallel group whose global batch statistics train mode uses (SyncBN); `None`:
    /// this process's batch only.
    cross_replica: Option<std::sync::Arc<dyn crate::sync::CrossReplicaSum>>,
}

impl SwitchableBatchNorm {
    /// Creates one BN per width of `widths` for a layer with `full` channels at width 1.
    pub fn new(vs: &nn::Path, full: i64, widths: &WidthList) -> Self {
        let bns = widths
            .as_slice()
            .iter()
            .map(|&w| {
                let p = vs.sub(width_tag(w));
                let c = slim_channels(full, w);
                BnState {
                    channels: c,
                    weight: p.ones("weight", &[c]),
                    bias: p.zeros("bias", &[c]),
                    running_mean: p.zeros_no_train("running_mean", &[c]),
                    running_var: p.ones_no_train("running_var", &[c]),
                }
            })
            .collect();
        Self { widths: widths.clone(), full, bns, cross_replica: None }
    }

    /// Synchronised batch norm: with `Some(group)` of more than one replica, train mode
    /// normalises with the mean and variance of the global batch over every replica of `group`
    /// (see [`crate::sync::global_batch_stats`]) and updates the running statistics with them;
    /// `None` (the default) uses this process's batch. Eval mode is unaffected.
    pub fn set_cross_replica(&mut self, group: Option<std::sync::Arc<dyn crate::sync::CrossReplicaSum>>) {
        self.cross_replica = group;
    }

    /// The width list this BN switches over.
    pub fn widths(&self) -> &WidthList {
        &self.widths
    }

    /// Channels at width 1.
    pub fn full_channels(&self) -> i64 {
        self.full
    }

    /// The BN of `width`.
    ///
    /// # Errors
    /// [`ModelError::WidthNotInList`].
    pub fn state(&self, width: f64) -> Result<&BnState> {
        Ok(&self.bns[self.widths.index_of(width)?])
    }

    /// Affine parameters of the standalone sub-network at `width` (2 x channels; running
    /// statistics are buffers, not parameters). Computed from the formula, so it is defined for
    /// any width.
    pub fn num_params(&self, width: f64) -> i64 {
        2 * slim_channels(self.full, width)
    }

    /// Normalises `x [B, slim(C, w), ...]` with the BN of `width`: batch statistics and a running
    /// statistics update (momentum 0.1, unbiased variance) when `train`, running statistics
    /// otherwise. Only this width's running statistics change.
    ///
    /// dtype: fp32 and bf16 (and fp16) inputs go straight to libtorch's mixed-precision CPU
    /// kernel (input in bf16, statistics/affine in fp32, accumulation in fp32); other kinds are
    /// computed in fp32. The result always has `x.kind()`.
    ///
    /// # Errors
    /// [`ModelError::WidthNotInList`], [`ModelError::BadInput`] on a channel mismatch,
    /// [`ModelError::Torch`] (e.g. training with one value per channel).
    pub fn f_forward_t(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        let bn = self.state(width)?;
        if x.dim() < 2 || x.size()[1] != bn.channels {
            return Err(shape_err("SwitchableBatchNorm", x, format!("[B, {}, ...] at width {width}", bn.channels)));
        }
        batch_norm_with(x, bn, train, self.cross_replica.as_deref())
    }

    /// Panicking form of [`Self::f_forward_t`].
    pub fn forward_t(&self, x: &Tensor, width: f64, train: bool) -> Tensor {
        self.f_forward_t(x, width, train).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Batch norm of `x [B, bn.channels, ...]` with the affine and running statistics of `bn`
/// (batch statistics and a running statistics update when `train`, running statistics
/// otherwise), through `group`'s global batch statistics when it has more than one replica.
/// fp32/bf16/fp16 inputs go to libtorch's mixed kernel, other kinds are computed in fp32; the
/// result has `x.kind()`. The tensors of `bn` may be views (narrowed prefixes of a larger BN):
/// the running statistics update lands in the viewed storage.
fn batch_norm_with(
    x: &Tensor,
    bn: &BnState,
    train: bool,
    cross_replica: Option<&dyn crate::sync::CrossReplicaSum>,
) -> Result<Tensor> {
    let kind = x.kind();
    if let Some(group) = cross_replica.filter(|g| train && g.replicas() > 1) {
        return sync_batch_norm(x, bn, group);
    }
    let xin = match kind {
        Kind::Float | Kind::BFloat16 | Kind::Half => x.shallow_clone(),
        _ => x.to_kind(Kind::Float),
    };
    let y = xin.f_batch_norm(
        Some(&bn.weight),
        Some(&bn.bias),
        Some(&bn.running_mean),
        Some(&bn.running_var),
        train,
        BN_MOMENTUM,
        BN_EPS,
        false,
    )?;
    Ok(cast_like(y, kind))
}

/// Shared ("universally slimmable") batch normalisation (Yu & Huang 2019, "Universally
/// Slimmable Networks"): ONE BN over the full `C` channels whose first `slim_channels(C, w)`
/// channels (affine AND running statistics, as views of the full tensors) normalise the layer at
/// width `w`, instead of a private BN per width. Defined for any width in (0, 1].
///
/// Variables live directly under `<path>`: `<path>.{weight,bias,running_mean,running_var}`, each
/// `[C]` fp32 (e.g. `projector.bn1.weight`). Momentum [`BN_MOMENTUM`], eps [`BN_EPS`], as
/// PyTorch. A train-mode forward at `w` updates only the first `slim_channels(C, w)` running
/// statistics; the affine gradient lands in the same prefix.
#[derive(Debug)]
pub struct SharedBatchNorm {
    full: BnState,
    cross_replica: Option<std::sync::Arc<dyn crate::sync::CrossReplicaSum>>,
}

impl SharedBatchNorm {
    /// Creates the BN of `full` channels under `vs` (weight 1, bias 0, running mean 0, running
    /// variance 1).
    pub fn new(vs: &nn::Path, full: i64) -> Self {
        let full = BnState {
            channels: full,
            weight: vs.ones("weight", &[full]),
            bias: vs.zeros("bias", &[full]),
            running_mean: vs.zeros_no_train("running_mean", &[full]),
            running_var: vs.ones_no_train("running_var", &[full]),
        };
        Self { full, cross_replica: None }
    }

    /// Synchronised batch norm over a data-parallel group, as
    /// [`SwitchableBatchNorm::set_cross_replica`]; `None` turns it off.
    pub fn set_cross_replica(&mut self, group: Option<std::sync::Arc<dyn crate::sync::CrossReplicaSum>>) {
        self.cross_replica = group;
    }

    /// Channels at width 1.
    pub fn full_channels(&self) -> i64 {
        self.full.channels
    }

    /// The BN used at `width`: views of the first `slim_channels(C, width)` entries of the four
    /// full tensors (writing to them writes the shared BN).
    pub fn state_at(&self, width: f64) -> BnState {
        let c = slim_channels(self.full.channels, width);
        BnState {
            channels: c,
            weight: self.full.weight.narrow(0, 0, c),
            bias: self.full.bias.narrow(0, 0, c),
            running_mean: self.full.running_mean.narrow(0, 0, c),
            running_var: self.full.running_var.narrow(0, 0, c),
        }
    }

    /// Affine parameters used at `width` (2 x `slim_channels(C, width)`).
    pub fn num_params(&self, width: f64) -> i64 {
        2 * slim_channels(self.full.channels, width)
    }

    /// Normalises `x [B, slim(C, w), ...]` (fp32, bf16 or fp16; other kinds computed in fp32;
    /// the result has `x.kind()`) with the first channels of the shared BN: batch statistics and
    /// a running statistics update of those channels when `train`, their running statistics
    /// otherwise.
    ///
    /// # Errors
    /// [`ModelError::BadInput`] on a channel mismatch, [`ModelError::Torch`].
    pub fn f_forward_t(&self, x: &Tensor, width: f64, train: bool) -> Result<Tensor> {
        let bn = self.state_at(width);
        if x.dim() < 2 || x.size()[1] != bn.channels {
            return Err(shape_err("SharedBatchNorm", x, format!("[B, {}, ...] at width {width}", bn.channels)));
        }
        batch_norm_with(x, &bn, train, self.cross_replica.as_deref())
    }
}

/// Train-mode batch norm with the global batch statistics of `group` (SyncBN): `y = (x − μ) /
/// sqrt(σ² + eps) · γ + β` with μ, σ² (biased) over every replica's batch, computed in fp32 and
/// returned in `x.kind()`; running statistics move by [`BN_MOMENTUM`] toward (μ, σ²·N/(N−1)),
/// N the global number of values per channel, as PyTorch's SyncBatchNorm.
fn sync_batch_norm(x: &Tensor, bn: &BnState, group: &dyn crate::sync::CrossReplicaSum) -> Result<Tensor> {
    let (mean, var, n) = crate::sync::global_batch_stats(x, group)?;
    let mut shape = vec![1i64; x.dim()];
    shape[1] = bn.channels;
    let invstd = var.f_add_scalar(BN_EPS)?.f_rsqrt()?;
    let scale = invstd.f_mul(&bn.weight)?.f_view(shape.as_slice())?;
    let y = x
        .f_to_kind(Kind::Float)?
        .f_sub(&mean.f_view(shape.as_slice())?)?
        .f_mul(&scale)?
        .f_add(&bn.bias.f_view(shape.as_slice())?)?;
    tch::no_grad(|| -> Result<()> {
        let unbiased = var.detach().f_mul_scalar(n / (n - 1.0).max(1.0))?;
        let mut rm = bn.running_mean.shallow_clone();
        let mut rv = bn.running_var.shallow_clone();
        let _ = rm.f_mul_scalar_(1.0 - BN_MOMENTUM)?.f_add_(&mean.detach().f_mul_scalar(BN_MOMENTUM)?)?;
        let _ = rv.f_mul_scalar_(1.0 - BN_MOMENTUM)?.f_add_(&unbiased.f_mul_scalar(BN_MOMENTUM)?)?;
        Ok(())
    })?;
    Ok(cast_like(y, x.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    fn wl() -> WidthList {
        WidthList::new(vec![0.25, 0.5, 0.75, 1.0]).unwrap()
    }

    #[test]
    fn width_list_validation() {
        assert!(WidthList::new(vec![]).is_err());
        let e = WidthList::new(vec![0.5, 0.25]).unwrap_err().to_string();
        assert!(e.contains("0.25") && e.contains("ascending"), "{e}");
        let e = WidthList::new(vec![0.5, 1.2]).unwrap_err().to_string();
        assert!(e.contains("1.2"), "{e}");
        assert!(WidthList::new(vec![0.0, 1.0]).is_err());
        assert!(WidthList::new(vec![f64::NAN]).is_err());
        assert!(WidthList::new(vec![0.5, 0.5]).is_err());
        let l = wl();
        assert_eq!(l.index_of(0.75).unwrap(), 2);
        assert_eq!(l.index_of(0.5 + 1e-12).unwrap(), 1);
        assert_eq!((l.smallest(), l.largest()), (0.25, 1.0));
        let e = l.index_of(0.3).unwrap_err().to_string();
        assert_eq!(e, "width 0.3 is not in this model's width list [0.25, 0.5, 0.75, 1.0]; pass one of them");
    }

    #[test]
    fn slim_channels_and_tags() {
        assert_eq!(slim_channels(64, 0.25), 16);
        assert_eq!(slim_channels(64, 0.3), 19); // 19.2
        assert_eq!(slim_channels(3, 0.5), 2); // 1.5 rounds half away from zero
        assert_eq!(slim_channels(2, 0.01), 1); // at least one channel
        assert_eq!(width_tag(0.25), "w0_25");
        assert_eq!(width_tag(1.0), "w1_00");
        assert_eq!(width_tag(0.5), "w0_50");
        assert_eq!(width_tag(0.125), "w0_125");
    }

    #[test]
    fn conv_slice_is_a_view_and_grad_stays_in_slice() {
        let vs = VarStore::new(Device::Cpu);
        let conv = SlimConv2d::new(&vs.root().sub("c"), 8, 12, 3, 1, 1, true);
        let s = conv.sliced_weight(0.5);
        assert_eq!(s.size(), vec![6, 4, 3, 3]);
        assert_eq!(s.data_ptr(), conv.weight().data_ptr()); // same storage start: a view
        let x = Tensor::randn([2, 4, 5, 5], (Kind::Float, Device::Cpu));
        let y = conv.forward(&x, 0.5);
        assert_eq!(y.size(), vec![2, 6, 5, 5]);
        // Independent reference: conv with a contiguous copy of the slice.
        let r = x.conv2d(&s.copy(), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert!(y.allclose(&r, 1e-6, 1e-6, false));
        y.sum(Kind::Float).backward();
        let g = conv.weight().grad();
        let inside = g.narrow(0, 0, 6).narrow(1, 0, 4).abs().sum(Kind::Float).double_value(&[]);
        assert!(inside > 0.0);
        let outside = g.copy();
        let _ = outside.narrow(0, 0, 6).narrow(1, 0, 4).fill_(0.0);
        assert_eq!(
            outside.abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "gradient leaked outside the width-0.5 slice"
        );
        // Wrong channel count is a typed error, not a panic.
        assert!(matches!(conv.f_forward(&x, 1.0), Err(ModelError::BadInput { .. })));
    }

    #[test]
    fn linear_slicing_flags() {
        let vs = VarStore::new(Device::Cpu);
        let l = SlimLinear::new(&vs.root().sub("fc"), 16, 256, true, true, false);
        let x = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let y = l.forward(&x, 0.25);
        assert_eq!(y.size(), vec![3, 256]);
        let r = x.matmul(&l.weight().narrow(1, 0, 4).tr()) + l.bias().unwrap();
        assert!(y.allclose(&r, 1e-5, 1e-6, false));
        assert_eq!(l.num_params(0.25), 256 * 4 + 256);
    }

    /// Hand-computed BN: train mode normalises with the biased batch variance and moves the
    /// running stats by momentum 0.1 toward (mean, unbiased var); other widths stay untouched.
    #[test]
    fn switchable_bn_train_updates_only_its_width() {
        let vs = VarStore::new(Device::Cpu);
        let widths = WidthList::new(vec![0.5, 1.0]).unwrap();
        let bn = SwitchableBatchNorm::new(&vs.root().sub("bn"), 4, &widths);
        let names: Vec<String> = {
            let mut v: Vec<String> = vs.variables().keys().cloned().collect();
            v.sort();
            v
        };
        assert!(names.contains(&"bn.w0_50.running_mean".to_string()), "{names:?}");
        assert!(names.contains(&"bn.w1_00.weight".to_string()), "{names:?}");
        // x: [B=3, C=2] at width 0.5
        let data: [f32; 6] = [1.0, 10.0, 2.0, 20.0, 6.0, 0.0];
        let x = Tensor::from_slice(&data).reshape([3, 2]);
        let y = bn.forward_t(&x, 0.5, true);
        for c in 0..2 {
            let col: Vec<f64> = (0..3).map(|b| data[b * 2 + c] as f64).collect();
            let mean = col.iter().sum::<f64>() / 3.0;
            let ss: f64 = col.iter().map(|v| (v - mean) * (v - mean)).sum();
            let (var_b, var_u) = (ss / 3.0, ss / 2.0);
            for (b, v) in col.iter().enumerate() {
                let expect = (v - mean) / (var_b + 1e-5).sqrt();
                let got = y.double_value(&[b as i64, c as i64]);
                assert!((got - expect).abs() < 1e-5, "y[{b},{c}] {got} vs {expect}");
            }
            let s = bn.state(0.5).unwrap();
            let rm = s.running_mean.double_value(&[c as i64]);
            let rv = s.running_var.double_value(&[c as i64]);
            assert!((rm - 0.1 * mean).abs() < 1e-5, "running_mean {rm}");
            assert!((rv - (0.9 + 0.1 * var_u)).abs() < 1e-4, "running_var {rv}");
        }
        let full = bn.state(1.0).unwrap();
        assert_eq!(Vec::<f32>::try_from(&full.running_mean).unwrap(), vec![0.0; 4]);
        assert_eq!(Vec::<f32>::try_from(&full.running_var).unwrap(), vec![1.0; 4]);
        // Eval mode uses running stats: (x - rm) / sqrt(rv + eps).
        let ye = bn.forward_t(&x, 0.5, false);
        let s = bn.state(0.5).unwrap();
        let expect = (&x - &s.running_mean) / (&s.running_var + 1e-5).sqrt();
        assert!(ye.allclose(&expect, 1e-5, 1e-6, false));
        assert!(matches!(bn.f_forward_t(&x, 0.75, true), Err(ModelError::WidthNotInList { .. })));
    }

    #[test]
    fn switchable_bn_bf16() {
        let vs = VarStore::new(Device::Cpu);
        let widths = WidthList::new(vec![0.5, 1.0]).unwrap();
        let bn = SwitchableBatchNorm::new(&vs.root().sub("bn"), 8, &widths);
        let x = Tensor::randn([4, 8, 3, 3], (Kind::Float, Device::Cpu));
        let xb = to_channels_last(&x.to_kind(Kind::BFloat16));
        let y = bn.forward_t(&xb, 1.0, true);
        assert_eq!(y.kind(), Kind::BFloat16);
        let yf = bn.forward_t(&x, 1.0, true);
        let rel = (y.to_kind(Kind::Float) - &yf).norm().double_value(&[]) / yf.norm().double_value(&[]);
        assert!(rel < 1e-2, "bf16 BN relative error {rel}");
        let x1 = Tensor::randn([4, 4], (Kind::BFloat16, Device::Cpu));
        assert_eq!(bn.forward_t(&x1, 0.5, true).kind(), Kind::BFloat16);
    }
}
