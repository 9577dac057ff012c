//! CPU autocast: PyTorch's automatic mixed precision on the CPU device (`torch.autocast("cpu",
//! dtype=torch.bfloat16)`), for tch.
//!
//! tch 0.26's `tch::autocast` only toggles the device-less `at::autocast::set_enabled`, i.e. CUDA
//! autocast. CPU autocast needs `at::autocast::set_autocast_enabled(at::kCPU, ..)` and
//! `set_autocast_dtype(at::kCPU, ..)`; `csrc/autocast_cpu.cpp` (compiled by `build.rs` against
//! the headers of the linked libtorch) exposes them to Rust.
//!
//! Inside an autocast region libtorch casts the inputs of the ops on its lower-precision list
//! (convolutions, `linear`, `matmul`, ...) to the autocast dtype and leaves other ops (batch
//! norm, ReLU, additions) in their input dtype; weights stay fp32 master copies, and autograd
//! records the casts, so gradients reach them in fp32. The state is thread-local: a guard
//! affects only the thread that created it (and is therefore neither `Send` nor `Sync`).

use crate::error::{ModelError, Result};
use std::marker::PhantomData;
use std::os::raw::c_int;
use tch::Kind;

extern "C" {
    fn dspnet_autocast_cpu_get(enabled: *mut c_int, dtype: *mut c_int) -> c_int;
    fn dspnet_autocast_cpu_set(enabled: c_int, dtype: c_int) -> c_int;
    fn dspnet_autocast_enter() -> c_int;
    fn dspnet_autocast_exit() -> c_int;
}

/// `c10::ScalarType` codes of the kinds autocast can target or report.
fn scalar_type(kind: Kind) -> Option<c_int> {
    match kind {
        Kind::Half => Some(5),
        Kind::Float => Some(6),
        Kind::Double => Some(7),
        Kind::BFloat16 => Some(15),
        _ => None,
    }
}

fn kind_of(code: c_int) -> Option<Kind> {
    [Kind::Half, Kind::Float, Kind::Double, Kind::BFloat16].into_iter().find(|&k| scalar_type(k) == Some(code))
}

fn raw_state() -> Result<(c_int, c_int)> {
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: the shim writes two ints through valid pointers and catches every C++ exception.
    let rc = unsafe { dspnet_autocast_cpu_get(&mut enabled, &mut dtype) };
    if rc != 0 {
        return Err(ModelError::Autocast("libtorch failed to report the CPU autocast state".into()));
    }
    Ok((enabled, dtype))
}

fn raw_set(enabled: c_int, dtype: c_int) -> Result<()> {
    // SAFETY: plain ints; the shim catches every C++ exception.
    if unsafe { dspnet_autocast_cpu_set(enabled, dtype) } != 0 {
        return Err(ModelError::Autocast("libtorch refused the CPU autocast state".into()));
    }
    Ok(())
}

/// The calling thread's CPU autocast state: (enabled, target dtype). libtorch's default is
/// `(false, Kind::BFloat16)`.
///
/// # Errors
/// [`ModelError::Autocast`] when libtorch fails or reports a dtype tch has no `Kind` for here.
pub fn cpu_autocast_state() -> Result<(bool, Kind)> {
    let (enabled, dtype) = raw_state()?;
    let kind =
        kind_of(dtype).ok_or_else(|| ModelError::Autocast(format!("unexpected CPU autocast dtype code {dtype}")))?;
    Ok((enabled != 0, kind))
}

/// Scope guard of a CPU autocast region on the calling thread.
///
/// [`CpuAutocast::enable`] switches CPU autocast on with a target dtype, [`CpuAutocast::disable`]
/// switches it off (e.g. for fp32 heads inside a larger region); dropping the guard restores the
/// previous enabled flag AND dtype, also when unwinding from a panic, and when the outermost
/// region closes libtorch's autocast weight-cast cache is cleared (as `torch.autocast` does on
/// exit). Guards nest; drop them in reverse order of creation (the natural order of scopes).
#[derive(Debug)]
pub struct CpuAutocast {
    prev_enabled: c_int,
    prev_dtype: c_int,
    /// Autocast state is thread-local: keep the guard on its thread.
    _not_send: PhantomData<*const ()>,
}

impl CpuAutocast {
    /// Enables CPU autocast to `kind` (`Kind::BFloat16`, or `Kind::Half`) until the guard drops.
    ///
    /// # Errors
    /// [`ModelError::Autocast`] for a `kind` autocast cannot target, or when libtorch fails.
    pub fn enable(kind: Kind) -> Result<Self> {
        if !matches!(kind, Kind::BFloat16 | Kind::Half) {
            return Err(ModelError::Autocast(format!(
                "CPU autocast targets BFloat16 or Half, not {kind:?}; use Kind::BFloat16"
            )));
        }
        Self::switch(true, kind)
    }

    /// Disables CPU autocast until the guard drops (the dtype setting is kept).
    ///
    /// # Errors
    /// [`ModelError::Autocast`] when libtorch fails.
    pub fn disable() -> Result<Self> {
        let (_, dtype) = raw_state()?;
        let kind = kind_of(dtype).unwrap_or(Kind::BFloat16);
        Self::switch(false, kind)
    }

    fn switch(enabled: bool, kind: Kind) -> Result<Self> {
        let (prev_enabled, prev_dtype) = raw_state()?;
        let code = scalar_type(kind).expect("checked by the callers");
        raw_set(enabled as c_int, code)?;
        // SAFETY: no arguments; the shim catches every C++ exception.
        if unsafe { dspnet_autocast_enter() } < 0 {
            let _ = raw_set(prev_enabled, prev_dtype);
            return Err(ModelError::Autocast("libtorch failed to open an autocast region".into()));
        }
        Ok(CpuAutocast { prev_enabled, prev_dtype, _not_send: PhantomData })
    }
}

impl Drop for CpuAutocast {
    fn drop(&mut self) {
        // SAFETY: as above. Failures cannot be reported from drop; the shim never throws past
        // its boundary, and restoring the flags below does not depend on the nesting count.
        unsafe {
            dspnet_autocast_exit();
        }
        let _ = raw_set(self.prev_enabled, self.prev_dtype);
    }
}

/// Runs `f` with CPU autocast to `kind` enabled on this thread, restoring the previous state
/// afterwards (see [`CpuAutocast`]).
///
/// # Errors
/// As [`CpuAutocast::enable`]; `f`'s own result is returned inside `Ok`.
pub fn with_cpu_autocast<T>(kind: Kind, f: impl FnOnce() -> T) -> Result<T> {
    let _guard = CpuAutocast::enable(kind)?;
    Ok(f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Tensor};

    /// Autocast is thread-local, and the test harness runs tests on several threads: every test
    /// here runs its body on a fresh thread so it starts from libtorch's default state.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().expect("test thread panicked");
    }

    #[test]
    fn guard_enables_and_restores_flag_and_dtype() {
        on_fresh_thread(|| {
            assert_eq!(cpu_autocast_state().unwrap(), (false, Kind::BFloat16), "libtorch default");
            // A non-default previous state (Half, disabled) must come back exactly.
            raw_set(0, 5).unwrap();
            {
                let _g = CpuAutocast::enable(Kind::BFloat16).unwrap();
                assert_eq!(cpu_autocast_state().unwrap(), (true, Kind::BFloat16));
                {
                    let _off = CpuAutocast::disable().unwrap();
                    assert_eq!(cpu_autocast_state().unwrap(), (false, Kind::BFloat16));
                }
                assert_eq!(cpu_autocast_state().unwrap(), (true, Kind::BFloat16));
            }
            assert_eq!(cpu_autocast_state().unwrap(), (false, Kind::Half));
            // Restored after a panic inside the region too.
            raw_set(0, 15).unwrap();
            let r = std::panic::catch_unwind(|| {
                let _g = CpuAutocast::enable(Kind::BFloat16).unwrap();
                panic!("inside the region");
            });
            assert!(r.is_err());
            assert_eq!(cpu_autocast_state().unwrap(), (false, Kind::BFloat16));
            assert!(matches!(CpuAutocast::enable(Kind::Float), Err(ModelError::Autocast(_))));
            assert_eq!(cpu_autocast_state().unwrap(), (false, Kind::BFloat16));
        });
    }

    /// The switch really reaches libtorch's dispatcher: a conv of fp32 tensors returns bf16
    /// inside the region (autocast's lower-precision list) and fp32 outside it, batch norm keeps
    /// its input dtype, and the weight's gradient arrives in fp32.
    #[test]
    fn region_casts_convolutions_only() {
        on_fresh_thread(|| {
            let x = Tensor::randn([2, 3, 5, 5], (Kind::Float, Device::Cpu));
            let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let y = with_cpu_autocast(Kind::BFloat16, || {
                let y = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
                assert_eq!(y.kind(), Kind::BFloat16);
                let n = y.batch_norm(
                    None::<Tensor>,
                    None::<Tensor>,
                    None::<Tensor>,
                    None::<Tensor>,
                    true,
                    0.1,
                    1e-5,
                    false,
                );
                assert_eq!(n.kind(), Kind::BFloat16);
                y
            })
            .unwrap();
            let out = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
            assert_eq!(out.kind(), Kind::Float);
            y.to_kind(Kind::Float).sum(Kind::Float).backward();
            assert_eq!(w.grad().kind(), Kind::Float);
            // bf16 conv against fp32 conv: 8-bit mantissa, 27-term sums -> well within 3e-2.
            let rel = (y.to_kind(Kind::Float) - &out).norm().double_value(&[]) / out.norm().double_value(&[]);
            assert!(rel < 3e-2 && rel > 0.0, "relative difference {rel}");
        });
    }
}
