//! Schedules shared by pretraining and evaluation: linear warm-up then cosine decay of the
//! learning rate, and BYOL's cosine ramp of the momentum teacher's EMA rate.

use std::f64::consts::PI;

/// Learning rate at step `step` (0-based) of `total`: linear warm-up from `base/warmup` to
/// `base` over `warmup` steps, then cosine decay to 0 at `total` (Loshchilov & Hutter 2017, SGDR
/// without restarts; BYOL §3.3 / Appendix C). `warmup = 0` is plain cosine decay,
/// `base · (1 + cos(π·step/total))/2`. Steps past `total` stay at 0.
pub fn warmup_cosine(step: u64, total: u64, warmup: u64, base: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let t = ((step - warmup.min(step)) as f64 / span).min(1.0);
    base * 0.5 * (1.0 + (PI * t).cos())
}

/// A cosine ramp from `from` at step 0 to `to` at step `total` (and after):
/// `to − (to − from)·(cos(π·step/total) + 1)/2`. BYOL's EMA rate (§3.2) is
/// `cosine_ramp(step, total, 0.996, 1.0)`.
pub fn cosine_ramp(step: u64, total: u64, from: f64, to: f64) -> f64 {
    let t = (step as f64 / total.max(1) as f64).min(1.0);
    to - (to - from) * ((PI * t).cos() + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_and_cosine_by_hand() {
        // warm-up of 4 steps to 1.0: 0.25, 0.5, 0.75, 1.0
        assert!((warmup_cosine(0, 104, 4, 1.0) - 0.25).abs() < 1e-12);
        assert!((warmup_cosine(3, 104, 4, 1.0) - 1.0).abs() < 1e-12);
        // start of cosine: 1.0; halfway through 100 cosine steps: 0.5; end: 0
        assert!((warmup_cosine(4, 104, 4, 1.0) - 1.0).abs() < 1e-12);
        assert!((warmup_cosine(54, 104, 4, 1.0) - 0.5).abs() < 1e-12);
        assert!(warmup_cosine(104, 104, 4, 1.0).abs() < 1e-12);
        // no warm-up as a factor (the semi-supervised fine-tuning's): 1, 1/2, 0
        assert_eq!(warmup_cosine(0, 10, 0, 1.0), 1.0);
        assert!((warmup_cosine(5, 10, 0, 1.0) - 0.5).abs() < 1e-12);
        assert!(warmup_cosine(10, 10, 0, 1.0).abs() < 1e-12);
        // no warm-up: a quarter of the way, (1 + cos(π/4))/2 = 0.853553...
        assert!((warmup_cosine(25, 100, 0, 2.0) - 2.0 * 0.853_553_390_593_273_7).abs() < 1e-12);
    }

    #[test]
    fn ema_ramp_by_hand() {
        assert!((cosine_ramp(0, 100, 0.99, 1.0) - 0.99).abs() < 1e-12);
        assert!((cosine_ramp(50, 100, 0.99, 1.0) - 0.995).abs() < 1e-12);
        assert!((cosine_ramp(100, 100, 0.99, 1.0) - 1.0).abs() < 1e-12);
        assert!((cosine_ramp(200, 100, 0.99, 1.0) - 1.0).abs() < 1e-12);
    }
}
