//! Summary statistics of measurements (timings, accuracies over seeds).

/// Median of `xs` (mean of the two middle values for an even count); `None` when empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    percentile(xs, 50.0)
}

/// The `p`-th percentile (0..=100) of `xs` by linear interpolation between the closest ranks
/// (Hyndman & Fan 1996 definition 7, numpy's default): with the values sorted ascending,
/// `h = (n - 1) p / 100`, result `x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h])`.
/// `None` when `xs` is empty or `p` is outside 0..=100 or NaN.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * p / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

/// Arithmetic mean; `None` when empty.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample standard deviation (divisor n − 1, numpy's `std(ddof=1)`); `None` for fewer than two
/// values.
pub fn sample_std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs)?;
    Some((xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt())
}

/// Standard error of the mean, `sample_std / sqrt(n)`; `None` for fewer than two values.
pub fn standard_error(xs: &[f64]) -> Option<f64> {
    Some(sample_std(xs)? / (xs.len() as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentile_by_hand() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        // numpy.percentile([1, 2, 3, 4], 90) = 1 + 0.9 * 3 = 3.7
        let p = percentile(&[4.0, 2.0, 1.0, 3.0], 90.0).unwrap();
        assert!((p - 3.7).abs() < 1e-12, "{p}");
        // 10 values 1..=10: h = 9 * 0.9 = 8.1 -> 9 + 0.1 * (10 - 9) = 9.1
        let xs: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert!((percentile(&xs, 90.0).unwrap() - 9.1).abs() < 1e-12);
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert_eq!(percentile(&xs, 100.0), Some(10.0));
        assert_eq!(percentile(&xs, 101.0), None);
        assert_eq!(percentile(&xs, f64::NAN), None);
    }

    #[test]
    fn mean_std_and_standard_error_by_hand() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, squared deviations sum 32, sample variance 32/7
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), Some(5.0));
        let s = sample_std(&xs).unwrap();
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{s}");
        assert!((standard_error(&xs).unwrap() - s / 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(sample_std(&[1.0]), None);
        assert_eq!(mean(&[]), None);
    }
}
