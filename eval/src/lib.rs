//! # dspnet-eval
//!
//! Evaluation of every width of a DSPNet run, in one place behind one interface
//! ([`protocol::EvalProtocol`]): the classification protocols on the run's own data, linear
//! transfer to another labelled image folder and the transfer protocols on COCO, each also from
//! random initialisation for reference.
//!
//! | module | protocol / job |
//! |---|---|
//! | [`protocol`] | the protocol names, inits and the [`protocol::EvalProtocol`] interface |
//! | [`evaluate`] | `dspnet-eval`'s run: checks, protocols in order, `results.json`, plot |
//! | [`features`] | frozen features of every width; BN re-estimation |
//! | [`knn`] | weighted kNN top-1 (also the trainer's kNN monitor) |
//! | [`linear`] | the linear probe |
//! | [`frozen`] | knn and linear records from one feature extraction |
//! | [`semi`] | semi-supervised fine-tuning on class-balanced label subsets |
//! | [`transfer_linear`] | linear transfer: logistic regression on frozen features of another image folder |
//! | [`transfer`] | detection and segmentation through `python -m dspnet_export.transfer` |
//! | [`report`] | the results table and the accuracy-against-MACs plot |

pub mod error;
pub mod evaluate;
pub mod features;
pub mod frozen;
pub mod knn;
pub mod linear;
pub mod protocol;
pub mod report;
pub mod semi;
pub mod transfer;
pub mod transfer_linear;

pub use error::{EvalError, Result};
pub use evaluate::{evaluate, EvalRequest, TransferSettings};
pub use protocol::{EvalContext, EvalProtocol, Init, Protocol};
pub use transfer_linear::TransferLinearSettings;
