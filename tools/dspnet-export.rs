//! `dspnet-export`: every width of a DSPNet run as a standalone model in timm's `ResNet` layout.
//!
//! ```text
//! dspnet-export runs/fmnist (--width 0.5 | --all) --out exports/fmnist [--reference]
//! ```
//! Writes OUT/<width_tag>/model.safetensors + model.json (and reference.safetensors with
//! `--reference`) per width, and prints one line per width. Bad input: one line `error: ...`,
//! exit code 2.

use clap::{ArgGroup, Parser};
use dspnet_deploy::{export_loaded, load_run, DeployError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Export widths of a DSPNet run as standalone timm ResNets (safetensors + model.json)")]
#[command(group(ArgGroup::new("which").required(true).args(["width", "all"])))]
struct Args {
    /// Run directory written by dspnet-stream-train.
    run: PathBuf,
    /// Width multiplier to export (one the run trained).
    #[arg(long)]
    width: Option<f64>,
    /// Export every trained width.
    #[arg(long)]
    all: bool,
    /// Output folder; each width goes to OUT/<width_tag> (e.g. OUT/w0_50).
    #[arg(long)]
    out: PathBuf,
    /// Also write reference.safetensors: a fixed input and the Rust network's pooled features
    /// and stage feature maps at that width (eval mode).
    #[arg(long)]
    reference: bool,
}

fn run(args: Args) -> Result<(), DeployError> {
    let run = load_run(&args.run)?;
    let widths: Vec<f64> = match args.width {
        Some(w) => vec![w],
        None => run.trained_widths.as_slice().to_vec(),
    };
    // every width is checked before anything is written
    for &w in &widths {
        run.check_width(w)?;
        dspnet_deploy::export::timm_arch(&run.config.model, w)?;
    }
    println!("{:>6}  {:>12}  {:>14}  {:>8}  folder", "width", "params", "MACs", "features");
    for w in widths {
        let s = export_loaded(&run, w, &args.out, args.reference)?;
        println!("{:>6}  {:>12}  {:>14}  {:>8}  {}", w, s.params, s.macs, s.feature_dim, s.dir.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    dspnet_core::cli::init_logging();
    dspnet_core::cli::exit_with(run(Args::parse()))
}
