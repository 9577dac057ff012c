//! # dspnet-deploy
//!
//! Slim and ship (issue 4): every width of a DSPNet run (Wang et al., arXiv 2207.06075) as an
//! ordinary model the PyTorch ecosystem loads without dspnet code.
//!
//! * [`run`]: [`load_run`] loads a run directory for deployment: resolved config, verified
//!   checkpoint, the ONLINE network's slimmable backbone (strict names and shapes) and the
//!   `results.json` records. Shared by `dspnet-export`, `dspnet-profile` and `dspnet-select`.
//! * [`export`]: [`export_width`] writes one width as timm's `ResNet` state dict
//!   (`model.safetensors`), `model.json` (timm constructor arguments, stem, input size,
//!   normalisation, params, MACs, known results, source, code version) and optionally
//!   `reference.safetensors` (the Rust network's pooled features and stage feature maps on a
//!   fixed input).
//! * [`profile`]: per width params, MACs, measured latency (median / p90), images/s and peak
//!   memory on this machine (`dspnet-profile`: table, `profile.json`, accuracy-vs-latency plot).
//! * [`select`]: the most accurate width within a latency, MFLOPs or parameter budget
//!   (`dspnet-select`).
//!
//! Detection and segmentation transfer of the exported widths is an evaluation protocol:
//! `dspnet-eval` runs it (crate `dspnet-eval`).
//!
//! The Python side (`tools/python/dspnet_export`) loads an export into timm, builds multi-scale
//! backbones for torchvision detection and exports ONNX.

pub mod error;
pub mod export;
pub mod profile;
pub mod run;
pub mod select;

pub use error::{DeployError, Result};
pub use export::{export_loaded, export_width, ExportSummary};
pub use run::{load_run, LoadedRun};
