//! The kNN protocol (and monitor) on frozen features.

use tch::{Kind, Tensor};

/// Weighted kNN top-1 in percent (Wu et al. 2018, as the InstDisc/solo-learn kNN monitor):
/// features l2-normalised, cosine similarity to every training feature, the `k` nearest vote
/// for their class with weight `exp(sim / t)`, the class with the largest sum wins.
///
/// Shapes: `train` `[N, D]`, `train_labels` `[N]` i64 in `0..classes`, `test` `[M, D]`,
/// `test_labels` `[M]`. Memory: chunks of 512 test rows (512·N floats at a time).
pub fn knn_top1(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    test_labels: &Tensor,
    k: i64,
    t: f64,
    classes: i64,
) -> f64 {
    tch::no_grad(|| {
        let norm = |x: &Tensor| x / x.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
        let train = norm(train);
        let test = norm(test);
        let k = k.min(train.size()[0]);
        let m = test.size()[0];
        let mut correct = 0i64;
        let mut start = 0;
        while start < m {
            let len = 512.min(m - start);
            let q = test.narrow(0, start, len);
            let sim = q.matmul(&train.tr());
            let (top, idx) = sim.topk(k, 1, true, true);
            let votes_lbl = train_labels.index_select(0, &idx.flatten(0, -1)).view([len, k]);
            let weights = (top / t).exp();
            let scores = Tensor::zeros([len, classes], (Kind::Float, train.device()));
            let scores = scores.scatter_add(1, &votes_lbl, &weights);
            let pred = scores.argmax(1, false);
            correct += pred.eq_tensor(&test_labels.narrow(0, start, len)).sum(Kind::Int64).int64_value(&[]);
            start += len;
        }
        100.0 * correct as f64 / m.max(1) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knn_weighted_vote_by_hand() {
        // train: class 0 at angle 0 (two points), class 1 at 90 degrees (one point).
        let train = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.1, 0.0, 1.0]).view([3, 2]);
        let labels = Tensor::from_slice(&[0i64, 0, 1]);
        // query at 80 degrees: nearest is class 1 (cos 0.985) but k=3 with t=10 (almost
        // uniform weights) → two votes of class 0 beat one of class 1; with t=0.01 the nearest
        // dominates → class 1.
        let a = 80f32.to_radians();
        let q = Tensor::from_slice(&[a.cos(), a.sin()]).view([1, 2]);
        let y1 = Tensor::from_slice(&[1i64]);
        let y0 = Tensor::from_slice(&[0i64]);
        assert_eq!(knn_top1(&train, &labels, &q, &y0, 3, 10.0, 2), 100.0);
        assert_eq!(knn_top1(&train, &labels, &q, &y1, 3, 0.01, 2), 100.0);
        assert_eq!(knn_top1(&train, &labels, &q, &y1, 1, 0.1, 2), 100.0);
    }
}
