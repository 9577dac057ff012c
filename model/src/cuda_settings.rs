//! Process-wide GPU math settings tch does not expose (`csrc/cuda_settings.cpp`): TF32 for fp32
//! convolutions and matrix products, and cuDNN's benchmark mode. Both are global to the process
//! (libtorch's `at::globalContext()`), as in PyTorch (`torch.backends.cuda.matmul.allow_tf32`,
//! `torch.backends.cudnn.allow_tf32`, `torch.backends.cudnn.benchmark`).

use crate::error::{ModelError, Result};
use std::os::raw::c_int;

extern "C" {
    fn dspnet_set_tf32(enabled: c_int) -> c_int;
    fn dspnet_get_tf32(cudnn: *mut c_int, cublas: *mut c_int) -> c_int;
    fn dspnet_set_cudnn_benchmark(enabled: c_int) -> c_int;
}

/// Lets (or forbids) fp32 convolutions and matrix products on CUDA run in TF32 (10-bit
/// mantissa inputs, fp32 accumulation): about 8x the fp32 rate on Hopper. libtorch's defaults
/// are TF32 on for cuDNN convolutions and off for cuBLAS matrix products.
///
/// Errors: libtorch refusing the switch.
pub fn set_tf32(enabled: bool) -> Result<()> {
    // SAFETY: plain C functions over libtorch's global context; no pointers.
    match unsafe { dspnet_set_tf32(enabled as c_int) } {
        0 => Ok(()),
        _ => Err(ModelError::Device("libtorch refused to switch TF32".into())),
    }
}

/// The TF32 flags: (cuDNN convolutions, cuBLAS matrix products).
pub fn tf32() -> (bool, bool) {
    let (mut a, mut b) = (0, 0);
    // SAFETY: the function writes two ints it is given pointers to.
    let _ = unsafe { dspnet_get_tf32(&mut a, &mut b) };
    (a != 0, b != 0)
}

/// Turns cuDNN's benchmark mode on or off: each new convolution shape is timed over cuDNN's
/// algorithms once and the fastest kept (the step's shapes repeat, so this pays after the first
/// step; the choice may differ between runs, so results are not bit-reproducible on a GPU).
///
/// Errors: libtorch refusing the switch.
pub fn set_cudnn_benchmark(enabled: bool) -> Result<()> {
    // SAFETY: plain C function over libtorch's global context.
    match unsafe { dspnet_set_cudnn_benchmark(enabled as c_int) } {
        0 => Ok(()),
        _ => Err(ModelError::Device("libtorch refused to switch cuDNN benchmark mode".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_switches_both_flags() {
        set_tf32(false).unwrap();
        assert_eq!(tf32(), (false, false));
        set_tf32(true).unwrap();
        assert_eq!(tf32(), (true, true));
        set_tf32(false).unwrap();
        set_cudnn_benchmark(false).unwrap();
    }
}
