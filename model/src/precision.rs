//! The numeric format of the networks' forward pass: the precision policy shared by training,
//! evaluation, profiling and benchmarks.
//!
//! The fast path (Micikevicius et al. 2018, "Mixed Precision Training", with bf16 instead of
//! fp16, so no loss scaling): bf16 activations, convolutions and BN inputs (BN statistics and
//! affine stay fp32 inside libtorch's mixed kernel), fp32 master weights, fp32 heads and loss;
//! images in channels_last so oneDNN (CPU) and cuDNN (GPU) run their NHWC kernels without
//! layout conversions.

use crate::error::{ModelError, Result};
use tch::{Device, Kind, Tensor};

/// Numeric format of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComputeFormat {
    /// `Kind::Float` or `Kind::BFloat16` for images, convolutions and BN (weights stay fp32
    /// master copies; heads and losses are fp32).
    pub kind: Kind,
    /// Images (and so convolution activations) in channels_last memory format.
    pub channels_last: bool,
    /// How bf16 is reached: `false` (the default) casts the images and, in every
    /// `SlimConv2d`, the weight slice explicitly; `true` keeps images fp32 and runs the backbone
    /// inside a CPU autocast region ([`crate::CpuAutocast`]), where libtorch inserts the same
    /// casts. CPU only; `dspnet-bench` measures both.
    pub autocast: bool,
}

impl ComputeFormat {
    /// fp32, contiguous (NCHW), explicit casts: the reference format.
    pub const FP32: ComputeFormat = ComputeFormat { kind: Kind::Float, channels_last: false, autocast: false };

    /// Resolves `train.precision` ("fp32", "bf16", "auto") and `train.channels_last`. "auto" is
    /// bf16 on CUDA and on CPUs that report AMX or AVX512-BF16 (where oneDNN runs bf16
    /// convolutions natively), fp32 elsewhere (without them oneDNN emulates bf16, measured about
    /// 4x slower than fp32 on an AVX-512 Xeon: docs/results.md). bf16 uses explicit casts.
    pub fn resolve(precision: &str, channels_last: bool, device: Device) -> Self {
        let bf16 = match precision {
            "bf16" => true,
            "fp32" => false,
            _ => device.is_cuda() || dspnet_core::machine::cpu_has_native_bf16(),
        };
        ComputeFormat { kind: if bf16 { Kind::BFloat16 } else { Kind::Float }, channels_last, autocast: false }
    }

    /// Casts a batch of images `[B, C, H, W]` to this format (kept fp32 under autocast, whose
    /// first convolution casts them).
    pub fn apply(&self, images: &Tensor) -> Tensor {
        let x = if self.autocast { images.to_kind(Kind::Float) } else { images.to_kind(self.kind) };
        if self.channels_last {
            crate::to_channels_last(&x)
        } else {
            x
        }
    }

    /// Runs a backbone forward `f`: inside a CPU autocast region to `self.kind` when
    /// `self.autocast` (and the kind is not fp32), directly otherwise.
    ///
    /// Errors: autocast requested for a non-CPU device, or libtorch refusing the switch.
    pub fn run_backbone<T>(&self, device: Device, f: impl FnOnce() -> T) -> Result<T> {
        if !self.autocast || self.kind == Kind::Float {
            return Ok(f());
        }
        if device != Device::Cpu {
            return Err(ModelError::Autocast(format!(
                "the autocast compute format is CPU-only (device {device:?}); use the default explicit casts"
            )));
        }
        crate::with_cpu_autocast(self.kind, f)
    }

    /// "fp32" or "bf16" ("bf16-autocast" for the autocast variant).
    pub fn name(&self) -> &'static str {
        match (self.kind, self.autocast) {
            (Kind::BFloat16, false) => "bf16",
            (Kind::BFloat16, true) => "bf16-autocast",
            _ => "fp32",
        }
    }
}

/// Parses a `--device` value: `cpu`, `cuda` or `cuda:N`.
///
/// Errors: [`ModelError::Device`] naming the value and the accepted ones, or saying that CUDA
/// was asked for but libtorch sees no CUDA device.
pub fn parse_device(s: &str) -> Result<Device> {
    let d = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => return Err(ModelError::Device(format!("--device {s}: use cpu, cuda or cuda:N"))),
        },
    };
    if d.is_cuda() && !tch::Cuda::is_available() {
        return Err(ModelError::Device(format!("--device {s}: libtorch sees no CUDA device here; use --device cpu")));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_resolve() {
        let f = ComputeFormat::resolve("fp32", false, Device::Cpu);
        assert_eq!((f.kind, f.name()), (Kind::Float, "fp32"));
        assert_eq!(f, ComputeFormat::FP32);
        let b = ComputeFormat::resolve("bf16", true, Device::Cpu);
        assert_eq!((b.kind, b.channels_last, b.name()), (Kind::BFloat16, true, "bf16"));
        let auto = ComputeFormat::resolve("auto", false, Device::Cpu);
        assert_eq!(auto.kind == Kind::BFloat16, dspnet_core::machine::cpu_has_native_bf16());
        assert_eq!(ComputeFormat::resolve("auto", false, Device::Cuda(0)).kind, Kind::BFloat16);
        let x = Tensor::ones([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let y = b.apply(&x);
        assert_eq!(y.kind(), Kind::BFloat16);
        assert!(crate::is_channels_last(&y));
    }

    #[test]
    fn device_values() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        let e = parse_device("gpu").unwrap_err().to_string();
        assert!(e.contains("--device gpu") && e.contains("cuda:N"), "{e}");
        if !tch::Cuda::is_available() {
            assert!(parse_device("cuda:1").unwrap_err().to_string().contains("no CUDA device"));
        }
    }
}
