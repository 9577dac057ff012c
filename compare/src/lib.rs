//! # dspnet-compare
//!
//! Checks the central claim of DSPNet (Wang et al., arXiv 2207.06075, §4: one pretraining gives
//! sub-networks as good as the same networks pretrained individually, at a lower total cost) on
//! your own data with one command: it trains (a) DSPNet once over a width list and (b) plain
//! BYOL (Grill et al. 2020) separately at each width, each one-by-one network truly that width
//! ([`plan`]), on the same shards with the same augmentations, optimiser, epochs and seed;
//! evaluates every network with the same protocols (`dspnet_eval`); measures each
//! training's wall time, counted training FLOPs ([`cost`]) and peak memory (each training in its
//! own child process, [`child`]); optionally re-runs the one-by-one networks within DSPNet's
//! wall time ("same total budget"); repeats all of it over seeds ([`seeds`]) and sums the seeds
//! up with error bars and a verdict per width ([`summary`]); draws the kNN monitor's curves of
//! every width during training ([`curves`]); and writes `compare.json`, `report.md`,
//! `compare.png` and `curves/*.png` ([`report`]). Finished sub-runs are kept across `--resume`
//! ([`run`]), and sub-runs can train as separate jobs sharing one output folder (`--only`,
//! [`lock`]).

pub mod child;
pub mod cost;
pub mod curves;
pub mod data;
pub mod error;
pub mod lock;
pub mod plan;
pub mod report;
pub mod run;
pub mod seeds;
pub mod summary;

pub use error::{CompareError, Result};
pub use plan::Plan;
pub use run::{run_compare, CompareRequest, Outcome};
