//! # dspnet-model
//!
//! Slimmable building blocks and networks for DSPNet (Wang et al. 2022, arXiv 2207.06075:
//! pretrain one slimmable network with BYOL-style self-supervision, then slim it into
//! sub-networks at width multipliers such as 0.25 / 0.5 / 0.75 / 1.0).
//!
//! * [`slimmable`]: the width list, [`slim_channels`], width-sliced [`SlimConv2d`] /
//!   [`SlimLinear`] (one shared full-size weight; a width uses its leading slice) and
//!   [`SwitchableBatchNorm`] (private BN statistics and affine per width, Yu et al. 2019
//!   "Slimmable Neural Networks", §3).
//! * [`resnet`]: slimmable ResNet-18/34/50 (He et al. 2016) with ImageNet or small-image stem,
//!   per-width parameter and multiply-accumulate counts, and export of one width as a
//!   torchvision state dict.
//! * [`heads`]: the slimmable BYOL projector/predictor MLP.
//! * [`autocast`]: a scope guard for libtorch's CPU autocast (bf16 mixed precision on the CPU
//!   device), which tch does not expose.
//! * [`precision`]: the forward pass's numeric format ([`ComputeFormat`]: fp32, bf16,
//!   channels_last) and `--device` parsing.
//! * [`cuda_settings`]: TF32 and cuDNN benchmark mode, which tch does not expose.
//! * [`libtorch`]: which libtorch a binary was built for and which it found at run time.
//! * [`sync`]: cross-replica batch statistics for synchronised batch norm (data parallel).
//!
//! Width is always an explicit `f64` argument; a width not in the model's list is a
//! [`ModelError::WidthNotInList`], never a silent fallback.

pub mod autocast;
pub mod cuda_settings;
pub mod error;
pub mod heads;
pub mod libtorch;
pub mod precision;
pub mod resnet;
pub mod slimmable;
pub mod sync;

pub use autocast::{cpu_autocast_state, with_cpu_autocast, CpuAutocast};
pub use error::{ModelError, Result};
pub use heads::{HeadNorm, SlimMlpHead};
pub use precision::{parse_device, ComputeFormat};
pub use resnet::{Depth, ResNetConfig, SlimResNet, Stem};
pub use slimmable::{
    is_channels_last, slim_channels, to_channels_last, width_tag, SharedBatchNorm, SlimConv2d, SlimLinear,
    SwitchableBatchNorm, WidthList,
};
pub use sync::CrossReplicaSum;
