//! The DSPNet trainer: configuration, the DSPNet step (sandwich rule, in-place distillation from a
//! momentum teacher; Wang et al., arXiv 2207.06075), optimisers and schedules, checkpoints, the
//! training loop and evaluation (kNN monitor, linear probe, semi-supervised fine-tuning) of every width.
//!
//! Solo-learn-style layout: small files per concern (`loss`, `schedule`, `sandwich`, `optim`,
//! `network`) and one file for the method's step (`dspnet`).

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod distributed;
pub mod dspnet;
pub mod error;
pub mod eval;
pub mod eval_run;
pub mod loss;
pub mod network;
pub mod optim;
pub mod report;
pub mod run;
pub mod sandwich;
pub mod semi;

pub use error::TrainerError;
