//! # dspnet-trainer
//!
//! Self-supervised pretraining of one slimmable network: DSPNet (Wang et al., arXiv
//! 2207.06075) and plain BYOL (Grill et al. 2020), laid out like solo-learn: a momentum base
//! owns what every BYOL-family method shares, a method is one small file whose step reads like
//! the paper, and the training loop is a small type with hooks.
//!
//! | module | what it holds |
//! |---|---|
//! | [`momentum`] | [`MomentumBase`]: online network, momentum teacher and EMA, optimiser, schedules, precision, gradient sync |
//! | [`method`] | [`method::Method`]: [`method::dspnet`] (sandwich rule, in-place distillation) and [`method::byol`] |
//! | [`network`] | the online and teacher branches (backbone, projector, predictor), the EMA update |
//! | [`loss`], [`sandwich`], [`optim`], [`collapse`] | BYOL's regression loss, the sandwich rule, SGD/LARS, the collapse monitor |
//! | [`width_grads`] | the widths' gradients taken apart: interference measurement and the `method.width_gradients` remedies |
//! | [`data_parallel`] | data parallel over PyTorch's c10d (gradient averaging, SyncBN, stopping together) |
//! | [`fit`] | the training loop and its hooks (resume, stop, non-finite loss, metrics, checkpoints) |
//! | [`session`] | `dspnet-stream-train`'s run: run directory, shards, loader, plan, hooks, summary |

pub mod collapse;
pub mod data_parallel;
pub mod error;
pub mod fit;
pub mod loss;
pub mod method;
pub mod momentum;
pub mod network;
pub mod optim;
pub mod sandwich;
pub mod session;
pub mod width_grads;

pub use error::{Result, TrainerError};
pub use fit::Trainer;
pub use momentum::{MomentumBase, RunLength};
pub use session::{train, TrainRequest, TrainSummary};
