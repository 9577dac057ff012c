//! Cross-replica batch statistics for synchronised batch norm (SyncBN, as
//! `torch.nn.SyncBatchNorm`): in data-parallel training each process sees B/W images; with
//! SyncBN every [`crate::SwitchableBatchNorm`] normalises with the mean and variance of the
//! GLOBAL batch, so W processes of B/W images compute what one process of B images computes.
//!
//! The model crate knows no process group: it is handed one as a [`CrossReplicaSum`] (implemented
//! by `dspnet-dist`'s `ProcessGroup`) through `set_cross_replica` on the layers, explicitly, never
//! through global state.

use crate::error::{ModelError, Result};
use tch::{Kind, Tensor};

/// A differentiable sum over the processes of a data-parallel group.
pub trait CrossReplicaSum: Send + Sync + std::fmt::Debug {
    /// `Σ_r x_r` over the replicas (same shape and dtype as `x`, every replica passes the same
    /// shape). Differentiable: the backward pass sums the incoming gradients over the replicas.
    ///
    /// Errors: a one-line message (a dead peer, a timeout).
    fn cross_replica_sum(&self, x: &Tensor) -> std::result::Result<Tensor, String>;
    /// Number of replicas (processes).
    fn replicas(&self) -> usize;
    /// This replica's index in [0, replicas).
    fn replica(&self) -> usize;
}

/// Per-channel mean and biased variance `[C]` (fp32) of `x [B, C, ...]` over the batch and
/// spatial axes of EVERY replica, and the global number of values per channel.
///
/// Each replica packs (count n_r, mean m_r, M2_r = Σ(x − m_r)²) into its own row of a
/// `[replicas, 1 + 2C]` zero tensor; one differentiable cross-replica sum turns that into an
/// all-gather, and the rows are combined with Chan et al.'s parallel variance formula
/// (`M2 = Σ M2_r + Σ n_r (m_r − mean)²`), numerically as good as a two-pass variance (this is
/// also what PyTorch's SyncBatchNorm gathers: per-replica mean, variance and count).
///
/// Errors: [`ModelError::Distributed`] when the collective fails; [`ModelError::Torch`].
pub fn global_batch_stats(x: &Tensor, group: &dyn CrossReplicaSum) -> Result<(Tensor, Tensor, f64)> {
    let c = x.size()[1];
    let dims: Vec<i64> = (0..x.dim() as i64).filter(|d| *d != 1).collect();
    let xf = x.f_to_kind(Kind::Float)?;
    let n_local = (x.numel() as i64 / c.max(1)) as f64;
    let mut bshape = vec![1i64; x.dim()];
    bshape[1] = c;
    let m = xf.f_mean_dim(dims.as_slice(), false, Kind::Float)?;
    let centred = xf.f_sub(&m.f_view(bshape.as_slice())?)?;
    let m2 = centred.f_square()?.f_sum_dim_intlist(dims.as_slice(), false, Kind::Float)?;
    let count = Tensor::from_slice(&[n_local as f32]).to_device(x.device());
    let row = Tensor::f_cat(&[count, m, m2], 0)?.f_unsqueeze(0)?;
    let (w, r) = (group.replicas() as i64, group.replica() as i64);
    let opts = (Kind::Float, x.device());
    let padded =
        Tensor::f_cat(&[Tensor::zeros([r, 1 + 2 * c], opts), row, Tensor::zeros([w - r - 1, 1 + 2 * c], opts)], 0)?;
    let all = group.cross_replica_sum(&padded).map_err(ModelError::Distributed)?;
    let n = all.f_narrow(1, 0, 1)?; // [W, 1]
    let means = all.f_narrow(1, 1, c)?; // [W, C]
    let m2s = all.f_narrow(1, 1 + c, c)?; // [W, C]
    let total = n.f_sum(Kind::Float)?;
    let n_total = total.f_double_value(&[])?;
    let mean = means.f_mul(&n)?.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float)?.f_div(&total)?;
    let spread = means.f_sub(&mean.f_unsqueeze(0)?)?.f_square()?.f_mul(&n)?;
    let m2 = m2s.f_add(&spread)?.f_sum_dim_intlist([0i64].as_slice(), false, Kind::Float)?;
    let var = m2.f_div(&total)?;
    Ok((mean, var, n_total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Stands for replica 0 of 2 whose peer contributes a fixed row (computed by hand below).
    #[derive(Debug)]
    struct PeerRow(std::sync::Mutex<Tensor>);

    impl CrossReplicaSum for PeerRow {
        fn cross_replica_sum(&self, x: &Tensor) -> std::result::Result<Tensor, String> {
            Ok(x + &*self.0.lock().unwrap())
        }
        fn replicas(&self) -> usize {
            2
        }
        fn replica(&self) -> usize {
            0
        }
    }

    /// The combined statistics equal the mean and biased variance of the concatenated batch
    /// (torch's var_mean), even with a large common offset and unequal halves.
    #[test]
    fn global_stats_equal_those_of_the_whole_batch() {
        let opts = (Kind::Float, Device::Cpu);
        tch::manual_seed(3);
        let mine = Tensor::randn([3, 2, 4, 4], opts) * 2.0 + 100.0;
        let theirs = Tensor::randn([5, 2, 4, 4], opts) * 0.5 + 101.0;
        // the peer's row [count, mean (C), Σ(x − mean)² (C)] at index 1 of a [2, 1 + 2C] tensor
        let dims = [0i64, 2, 3];
        let m = theirs.mean_dim(dims.as_slice(), false, Kind::Float);
        let m2 = (&theirs - m.view([1, 2, 1, 1])).square().sum_dim_intlist(dims.as_slice(), false, Kind::Float);
        let row = Tensor::cat(&[Tensor::from_slice(&[80.0f32]), m, m2], 0).unsqueeze(0);
        let other = Tensor::cat(&[Tensor::zeros([1, 5], opts), row], 0);
        let (mean, var, n) = global_batch_stats(&mine, &PeerRow(std::sync::Mutex::new(other))).unwrap();
        assert_eq!(n, 48.0 + 80.0);
        let all = Tensor::cat(&[&mine, &theirs], 0).to_kind(Kind::Double);
        let (want_var, want_mean) = all.var_mean_dim(dims.as_slice(), false, false);
        let dm = (mean.to_kind(Kind::Double) - want_mean).abs().max().double_value(&[]);
        let dv = (var.to_kind(Kind::Double) - &want_var).abs().max().double_value(&[]);
        assert!(dm < 1e-4, "mean off by {dm}");
        assert!(dv < 1e-4 * want_var.max().double_value(&[]), "variance off by {dv}");
    }
}
