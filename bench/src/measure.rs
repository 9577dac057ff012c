//! Timing helpers shared by the measuring parts: the median of measurements and the median
//! wall time of repeated calls after one untimed call.

use std::time::Instant;

/// Median of measurements (NaN for none).
pub fn median(v: Vec<f64>) -> f64 {
    dspnet_core::stats::median(&v).unwrap_or(f64::NAN)
}

/// Median wall seconds of `reps` calls of `f` after one untimed call.
pub fn time_median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        f();
        ts.push(t.elapsed().as_secs_f64());
    }
    median(ts)
}
