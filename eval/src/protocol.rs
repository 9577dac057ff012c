//! The one interface every evaluation protocol implements, and the protocol names of
//! `dspnet-eval --protocol`.

use crate::error::{EvalError, Result};
use dspnet_model::ComputeFormat;
use dspnet_run::checkpoint::Checkpoint;
use dspnet_run::{EvalRecord, RunConfig};
use std::path::Path;
use tch::Device;

/// An evaluation protocol of `dspnet-eval --protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Weighted kNN on frozen features ([`crate::knn`]).
    Knn,
    /// Linear probe on frozen features ([`crate::linear`]).
    Linear,
    /// Semi-supervised: fine-tune the whole sub-network on class-balanced label subsets
    /// ([`crate::semi`]); one record per subset, protocol `semi-1%`, `semi-10%`, ...
    Semi,
    /// Linear transfer to another dataset: a logistic regression on frozen features of a
    /// labelled image folder ([`crate::transfer_linear`]); one record per dataset, protocol
    /// `transfer-linear-<dataset folder name>`.
    TransferLinear,
    /// Detection transfer: Faster R-CNN with FPN on COCO ([`crate::transfer`]).
    Detection,
    /// Semantic segmentation transfer: FCN head on FPN features ([`crate::transfer`]).
    Segmentation,
}

impl Protocol {
    /// Every protocol, in the order `dspnet-eval` runs them.
    pub const ALL: [Protocol; 6] = [
        Protocol::Knn,
        Protocol::Linear,
        Protocol::Semi,
        Protocol::TransferLinear,
        Protocol::Detection,
        Protocol::Segmentation,
    ];

    /// Name on the command line and in `results.json` (`knn`, `linear`, `semi`,
    /// `transfer-linear`, `detection`, `segmentation`; semi and transfer-linear records add a
    /// suffix).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Knn => "knn",
            Protocol::Linear => "linear",
            Protocol::Semi => "semi",
            Protocol::TransferLinear => "transfer-linear",
            Protocol::Detection => "detection",
            Protocol::Segmentation => "segmentation",
        }
    }

    /// True for the protocols that read the training and test shards (knn, linear, semi).
    pub fn reads_shards(self) -> bool {
        matches!(self, Protocol::Knn | Protocol::Linear | Protocol::Semi)
    }

    /// True for the detection and segmentation transfer protocols, whose headline metric is not
    /// a classification accuracy (transfer-linear's is: it is not one of them).
    pub fn is_transfer(self) -> bool {
        matches!(self, Protocol::Detection | Protocol::Segmentation)
    }

    /// Parses a comma-separated list such as `knn,linear,semi` (each once, any order).
    ///
    /// Errors: [`EvalError::Option`] naming an unknown protocol and the known ones.
    pub fn parse_list(list: &str) -> Result<Vec<Protocol>> {
        let mut out = Vec::new();
        for name in list.split(',') {
            let p: Protocol = name.parse()?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

impl std::str::FromStr for Protocol {
    type Err = EvalError;
    fn from_str(s: &str) -> Result<Self> {
        Protocol::ALL.into_iter().find(|p| p.name() == s.trim()).ok_or_else(|| {
            EvalError::option(
                "--protocol",
                format!(
                    "--protocol {}: unknown protocol; use knn, linear, semi, transfer-linear or a list like knn,linear,semi; transfer protocols: detection, segmentation",
                    s.trim()
                ),
            )
        })
    }
}

/// The initialisations a protocol evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The run's trained online backbone.
    Pretrained,
    /// The same architecture at PyTorch's default random initialisation, drawn after
    /// `manual_seed(train.seed)`.
    Random,
}

impl Init {
    /// `pretrained` or `random`, as `results.json` records it.
    pub fn name(self) -> &'static str {
        match self {
            Init::Pretrained => "pretrained",
            Init::Random => "random",
        }
    }
}

/// What every protocol evaluates: a run, its widths, the inits, where and in which format.
pub struct EvalContext<'a> {
    pub run_dir: &'a Path,
    pub cfg: &'a RunConfig,
    pub ckpt: &'a Checkpoint,
    /// Widths to evaluate, in record order (widest first by default).
    pub widths: &'a [f64],
    pub inits: &'a [Init],
    pub format: ComputeFormat,
    pub device: Device,
}

/// One evaluation protocol (or a group that shares work, like kNN and the linear probe sharing
/// one feature extraction): the records of every width and init of the context.
pub trait EvalProtocol {
    /// Runs the protocol. Records follow init, then width order.
    ///
    /// Errors: the protocol's own (bad settings, data, a failed fine-tuning or tool).
    fn evaluate(&mut self, cx: &EvalContext) -> Result<Vec<EvalRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_are_named() {
        for p in Protocol::ALL {
            assert_eq!(p.name().parse::<Protocol>().unwrap(), p);
        }
        assert_eq!(Protocol::parse_list("linear,knn,linear").unwrap(), vec![Protocol::Linear, Protocol::Knn]);
        let e = Protocol::parse_list("knn,nope").unwrap_err().to_string();
        assert!(e.contains("--protocol nope") && e.contains("detection, segmentation"), "{e}");
        assert!(Protocol::Semi.reads_shards() && !Protocol::Detection.reads_shards());
        assert!(!"knn".parse::<Protocol>().unwrap().is_transfer());
        assert!(Protocol::Segmentation.is_transfer() && !Protocol::Knn.is_transfer());
        let t: Protocol = "transfer-linear".parse().unwrap();
        assert_eq!(t, Protocol::TransferLinear);
        assert!(!t.is_transfer() && !t.reads_shards());
        assert!(e.contains("transfer-linear"), "{e}");
    }
}
