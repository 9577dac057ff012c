//! `dspnet-eval`: evaluate EVERY width of a DSPNet run (kNN monitor and linear probe on frozen
//! features, semi-supervised fine-tuning on 1% / 10% of the labels, linear transfer to another
//! image folder), with parameters and FLOPs per width.
//!
//! ```text
//! dspnet-eval runs/fmnist --train-shards 'data/train-{000000..000005}.tar' \
//!     --test-shards 'data/test-{000000..000000}.tar' [--protocol knn,linear,semi] [--random-init] \
//!     [--label-fractions 0.01,0.1 --subset-seed 0 | --subset-file 1percent.txt] [--semi-epochs 10]
//! ```
//! Prints a table, writes RUN/results.json (one record per width, init and protocol; semi
//! records are named `semi-1%`, `semi-10%` or `semi-<subset file stem>`) and
//! RUN/accuracy_vs_flops.png.
//!
//! Linear transfer: `--protocol transfer-linear --transfer-data DIR [--transfer-data DIR2]`
//! fits a multinomial logistic regression (weight decay picked on DIR/val/ or a held-out part of
//! DIR/train/, L-BFGS) on frozen features of every width on the image folder DIR
//! (`train/<class>/<image>`, `test/<class>/<image>`, optional `val/`); records
//! `transfer-linear-<DIR's name>`.
//!
//! Transfer protocols: `--protocol detection,segmentation [--coco DIR] [--transfer-preset cpu]`
//! exports each width to RUN/export, fine-tunes a Faster R-CNN with FPN / an FCN-style
//! segmentation head on it with the venv's `python -m dspnet_export.transfer` (COCO box mAP /
//! mIoU). Every protocol's records are merged into RUN/results.json: a record of the same width,
//! protocol and init is replaced, every other record kept (`dspnet_eval::evaluate`).

use clap::Parser;
use dspnet_core::cli::{exit_with, init_logging};
use dspnet_eval::report::table;
use dspnet_eval::semi::SemiSettings;
use dspnet_eval::transfer_linear::{Lbfgs, TransferLinearSettings, DEFAULT_WEIGHT_DECAYS};
use dspnet_eval::{evaluate, EvalError, EvalRequest, Protocol, TransferSettings};
use dspnet_model::parse_device;
use dspnet_pipeline::source::expand_pattern;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "Evaluate every width of a DSPNet run: params, FLOPs, kNN and linear-probe top-1")]
struct Args {
    /// Run directory written by dspnet-stream-train.
    run: PathBuf,
    /// Shards whose un-augmented images train the kNN bank / linear probe.
    #[arg(long)]
    train_shards: Option<String>,
    /// Shards to measure top-1 on.
    #[arg(long)]
    test_shards: Option<String>,
    /// Comma-separated protocols: knn, linear, semi (fine-tune the whole sub-network on label
    /// subsets; slow: one fine-tuning per subset, width and init); transfer-linear (logistic
    /// regression on frozen features of --transfer-data); detection, segmentation (transfer on
    /// COCO).
    #[arg(long, default_value = "knn,linear")]
    protocol: String,
    /// transfer-linear: a labelled image folder with train/<class>/<image>, test/<class>/<image>
    /// and optionally val/<class>/<image> (repeat the option for several datasets; records are
    /// named transfer-linear-<folder name>).
    #[arg(long, value_name = "DIR")]
    transfer_data: Vec<PathBuf>,
    /// transfer-linear: comma-separated L2 weight decays tried, the one with the best validation
    /// top-1 is refitted on train + validation.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_WEIGHT_DECAYS)]
    transfer_weight_decays: Vec<f64>,
    /// transfer-linear: part of each train/ class held out for validation when DIR has no val/
    /// (class-balanced, seed 0).
    #[arg(long, default_value_t = TransferLinearSettings::default().val_fraction)]
    transfer_val_fraction: f64,
    /// transfer-linear: L-BFGS iterations at most per fit.
    #[arg(long, default_value_t = TransferLinearSettings::default().lbfgs.max_iter)]
    transfer_max_iter: usize,
    /// Transfer dataset: a COCO128-layout folder or a COCO folder with annotations/ (default:
    /// ../shared/data/coco128 beside the checkout the binary was built in).
    #[arg(long)]
    coco: Option<PathBuf>,
    /// Transfer schedule: cpu (minutes per run on 2 cores) or full (1x-style, for GPUs).
    #[arg(long, default_value = "cpu")]
    transfer_preset: String,
    /// Extra argument for `python -m dspnet_export.transfer` (repeatable), e.g.
    /// `--transfer-arg=--max-train-images=16`.
    #[arg(long, allow_hyphen_values = true)]
    transfer_arg: Vec<String>,
    /// Comma-separated widths (default: every trained width).
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<f64>>,
    /// Also evaluate the same architecture at random initialisation (same seed).
    #[arg(long)]
    random_init: bool,
    /// Re-estimate every evaluated network's BN statistics on clean training images first.
    #[arg(long)]
    calibrate_bn: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// semi: comma-separated label fractions in (0, 1] of class-balanced subsets
    /// (floor(fraction * n_c) images of class c, at least 1) [default: 0.01,0.1 unless
    /// --subset-file is given].
    #[arg(long, value_delimiter = ',')]
    label_fractions: Option<Vec<f64>>,
    /// semi: seed of the class-balanced draw (recorded; for one seed the 1% subset lies within
    /// the 10% subset).
    #[arg(long, default_value_t = 0)]
    subset_seed: u64,
    /// semi: a subset file, one sample key per line like the public ImageNet 1%/10% lists
    /// (repeat the option for several files; recorded with its sha256).
    #[arg(long)]
    subset_file: Vec<PathBuf>,
    /// semi: fine-tuning epochs over the labelled subset.
    #[arg(long, default_value_t = SemiSettings::default().epochs)]
    semi_epochs: usize,
    /// semi: images per fine-tuning step.
    #[arg(long, default_value_t = SemiSettings::default().batch)]
    semi_batch: usize,
    /// semi: peak learning rate of the backbone (SGD nesterov, cosine decay).
    #[arg(long, default_value_t = SemiSettings::default().backbone_lr)]
    semi_lr: f64,
    /// semi: peak learning rate of the new linear head.
    #[arg(long, default_value_t = SemiSettings::default().head_lr)]
    semi_head_lr: f64,
    /// semi: Nesterov momentum.
    #[arg(long, default_value_t = SemiSettings::default().momentum)]
    semi_momentum: f64,
    /// semi: weight decay of conv/linear weights.
    #[arg(long, default_value_t = SemiSettings::default().weight_decay)]
    semi_weight_decay: f64,
    /// semi: smallest area fraction of the random resized crop.
    #[arg(long, default_value_t = SemiSettings::default().crop_scale_min)]
    semi_crop_scale: f64,
}

/// The shards of `value`, or none when the option is absent (the protocols that read shards
/// say which option they need).
/// Errors name `option`: a pattern matching nothing, a file that is not a shard, ...
fn shards(value: Option<String>, option: &str) -> Result<Vec<String>, EvalError> {
    Ok(match value {
        Some(v) => expand_pattern(&v).map_err(|e| EvalError::option(option, format!("{option}: {e}")))?,
        None => Vec::new(),
    })
}

/// ../shared/data/coco128 beside the checkout that holds the running binary, if present.
fn default_coco() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().map(|a| a.join("../shared/data/coco128")).find(|d| d.join("images").is_dir())
}

fn run(args: Args) -> Result<(), EvalError> {
    let protocols = Protocol::parse_list(&args.protocol)?;
    let transfer = args.coco.clone().or_else(default_coco).map(|coco| TransferSettings {
        coco,
        preset: args.transfer_preset.clone(),
        seed: 0,
        extra_args: args.transfer_arg.clone(),
    });
    let req = EvalRequest {
        run_dir: args.run.clone(),
        train_shards: shards(args.train_shards, "--train-shards")?,
        test_shards: shards(args.test_shards, "--test-shards")?,
        protocols,
        widths: args.widths,
        random_init: args.random_init,
        calibrate_bn: args.calibrate_bn,
        device: parse_device(&args.device)?,
        semi: SemiSettings {
            label_fractions: match (args.label_fractions, args.subset_file.is_empty()) {
                (Some(f), _) => f,
                (None, true) => SemiSettings::default().label_fractions,
                (None, false) => Vec::new(),
            },
            subset_files: args.subset_file,
            subset_seed: args.subset_seed,
            epochs: args.semi_epochs,
            batch: args.semi_batch,
            backbone_lr: args.semi_lr,
            head_lr: args.semi_head_lr,
            momentum: args.semi_momentum,
            weight_decay: args.semi_weight_decay,
            crop_scale_min: args.semi_crop_scale,
        },
        transfer,
        transfer_linear: TransferLinearSettings {
            datasets: args.transfer_data,
            weight_decays: args.transfer_weight_decays,
            val_fraction: args.transfer_val_fraction,
            split_seed: TransferLinearSettings::default().split_seed,
            lbfgs: Lbfgs { max_iter: args.transfer_max_iter, ..Lbfgs::default() },
        },
    };
    evaluate(&req)?;
    // every record of the file (earlier ones of other widths, protocols or inits included)
    print!("{}", table(&dspnet_run::results::read(&args.run)?));
    println!("results: {}", args.run.join(dspnet_run::layout::RESULTS).display());
    Ok(())
}

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    init_logging();
    exit_with(run(Args::parse()))
}
