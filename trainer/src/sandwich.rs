//! The sandwich rule (Yu & Huang 2019, "Universally Slimmable Networks", §3.2): every step trains
//! the largest and the smallest width plus `n` widths drawn at random from the rest.

use rand::seq::SliceRandom;
use rand::Rng;

/// Widths to train this step, largest first: `widths` must be sorted ascending (a `WidthList`).
/// `random`: how many middle widths to draw without replacement; `None` means all middle widths
/// when the list has at most 4 entries, otherwise 2.
pub fn sandwich_widths<R: Rng>(widths: &[f64], random: Option<usize>, rng: &mut R) -> Vec<f64> {
    let n = widths.len();
    if n <= 2 {
        return widths.iter().rev().copied().collect();
    }
    let middle = &widths[1..n - 1];
    let k = random.unwrap_or(if n <= 4 { middle.len() } else { 2 }).min(middle.len());
    let mut picked: Vec<f64> = middle.choose_multiple(rng, k).copied().collect();
    picked.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let mut out = vec![widths[n - 1]];
    out.extend(picked);
    out.push(widths[0]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn always_contains_largest_and_smallest() {
        let widths = [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let ws = sandwich_widths(&widths, Some(2), &mut rng);
            assert_eq!(ws.len(), 4);
            assert_eq!(ws[0], 1.0);
            assert_eq!(*ws.last().unwrap(), 0.25);
            assert!(ws.windows(2).all(|p| p[0] > p[1]), "distinct, largest first: {ws:?}");
            for w in &ws[1..3] {
                seen.insert((w * 1000.0) as i64);
            }
        }
        // every middle width is drawn at some point (5 candidates, 1000 draws)
        assert_eq!(seen.len(), 5);
    }

    #[test]
    fn default_trains_all_of_four_widths() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        assert_eq!(sandwich_widths(&[0.25, 0.5, 0.75, 1.0], None, &mut rng), vec![1.0, 0.75, 0.5, 0.25]);
        assert_eq!(sandwich_widths(&[1.0], None, &mut rng), vec![1.0]);
    }
}
