//! Schedules: learning rate (linear warm-up then cosine) and the momentum teacher's EMA rate.

use std::f64::consts::PI;

/// Learning rate at optimiser step `step` (0-based) of `total` steps: linear warm-up from
/// `base/warmup` to `base` over `warmup` steps, then cosine decay to 0 (Loshchilov & Hutter 2017,
/// as in BYOL §3.3 / Appendix C).
pub fn lr_at(step: u64, total: u64, warmup: u64, base: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup.min(step)) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (PI * t).cos())
}

/// EMA rate of the momentum teacher at step `step` of `total`: BYOL's cosine increase
/// `tau = 1 − (1 − tau_base)·(cos(πk/K) + 1)/2`, generalised to end at `tau_final`
/// (BYOL §3.2: tau_base = 0.996, tau_final = 1).
pub fn ema_rate_at(step: u64, total: u64, tau_base: f64, tau_final: f64) -> f64 {
    let t = (step as f64 / total.max(1) as f64).min(1.0);
    tau_final - (tau_final - tau_base) * ((PI * t).cos() + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_warmup_and_cosine_by_hand() {
        // warm-up of 4 steps to 1.0: 0.25, 0.5, 0.75, 1.0
        assert!((lr_at(0, 104, 4, 1.0) - 0.25).abs() < 1e-12);
        assert!((lr_at(3, 104, 4, 1.0) - 1.0).abs() < 1e-12);
        // start of cosine: 1.0; halfway through 100 cosine steps: 0.5; end: 0
        assert!((lr_at(4, 104, 4, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(54, 104, 4, 1.0) - 0.5).abs() < 1e-12);
        assert!(lr_at(104, 104, 4, 1.0).abs() < 1e-12);
    }

    #[test]
    fn ema_rate_cosine_by_hand() {
        assert!((ema_rate_at(0, 100, 0.99, 1.0) - 0.99).abs() < 1e-12);
        assert!((ema_rate_at(50, 100, 0.99, 1.0) - 0.995).abs() < 1e-12);
        assert!((ema_rate_at(100, 100, 0.99, 1.0) - 1.0).abs() < 1e-12);
    }
}
