//! `dspnet-eval`: evaluate EVERY width of a DSPNet run (kNN monitor and linear probe on frozen
//! features, and semi-supervised fine-tuning on 1% / 10% of the labels), with parameters and
//! FLOPs per width.
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
//! Transfer protocols (issue 7): `--protocol detection,segmentation [--coco DIR]
//! [--transfer-preset cpu]` exports each width to RUN/export, fine-tunes a Faster R-CNN with FPN
//! / an FCN-style segmentation head on it with the venv's `python -m dspnet_export.transfer`
//! (COCO box mAP / mIoU) and APPENDS the records to RUN/results.json (`dspnet_deploy::transfer`).

use clap::Parser;
use dspnet_deploy::transfer::{run_transfer, PythonTool, TransferProtocol, TransferRequest};
use dspnet_deploy::DeployError;
use dspnet_pipeline::source::expand_pattern;
use dspnet_trainer::cli::{init_logging, parse_device};
use dspnet_trainer::eval_run::{evaluate_run, EvalRequest, Protocol};
use dspnet_trainer::report::table;
use dspnet_trainer::semi::SemiSettings;
use dspnet_trainer::TrainerError;
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
    /// subsets; slow: one fine-tuning per subset, width and init); detection, segmentation
    /// (transfer on COCO).
    #[arg(long, default_value = "knn,linear")]
    protocol: String,
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

/// Errors of this binary: all are printed as one line `error: ...` with exit code 2.
#[derive(Debug)]
enum EvalError {
    Trainer(TrainerError),
    Deploy(DeployError),
}

impl From<TrainerError> for EvalError {
    fn from(e: TrainerError) -> Self {
        EvalError::Trainer(e)
    }
}

impl From<DeployError> for EvalError {
    fn from(e: DeployError) -> Self {
        EvalError::Deploy(e)
    }
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Trainer(e) => e.fmt(f),
            EvalError::Deploy(e) => e.fmt(f),
        }
    }
}

fn shards(value: Option<String>, option: &str) -> Result<Vec<String>, TrainerError> {
    let v = value
        .ok_or_else(|| TrainerError::Config(format!("{option} is needed by the knn, linear and semi protocols")))?;
    Ok(expand_pattern(&v)?)
}

/// ../shared/data/coco128 beside the checkout that holds the running binary, if present.
fn default_coco() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().map(|a| a.join("../shared/data/coco128")).find(|d| d.join("images").is_dir())
}

fn run(args: Args) -> Result<(), EvalError> {
    let mut transfer = Vec::new();
    let mut protocols = Vec::new();
    for name in args.protocol.split(',') {
        match TransferProtocol::parse(name) {
            Some(p) => transfer.push(p),
            None => protocols.push(name.parse::<Protocol>().map_err(|e| match e {
                TrainerError::Config(m) => {
                    TrainerError::Config(format!("{m}; transfer protocols: detection, segmentation"))
                }
                e => e,
            })?),
        }
    }
    let run_dir = args.run.clone();
    let mut transfer_job = None;
    if !transfer.is_empty() {
        // checked before the (long) knn/linear evaluation starts
        let coco = args.coco.clone().or_else(default_coco).ok_or_else(|| {
            DeployError::Usage(
                "--coco DIR is needed by the detection/segmentation protocols (a COCO128-layout or COCO folder)".into(),
            )
        })?;
        let req = TransferRequest {
            protocols: transfer,
            widths: args.widths.clone(),
            coco,
            preset: args.transfer_preset.clone(),
            random_init: args.random_init,
            seed: 0,
            extra_args: args.transfer_arg.clone(),
        };
        req.validate()?;
        let python = PythonTool::find()?;
        python.check()?;
        transfer_job = Some((req, python));
    }
    let mut records = Vec::new();
    if !protocols.is_empty() {
        let req = EvalRequest {
            train_shards: shards(args.train_shards, "--train-shards")?,
            test_shards: shards(args.test_shards, "--test-shards")?,
            protocols,
            widths: args.widths,
            random_init: args.random_init,
            calibrate_bn: args.calibrate_bn,
            device: parse_device(&args.device)?,
            run_dir: run_dir.clone(),
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
        };
        records = evaluate_run(&req)?;
    }
    let results = run_dir.join("results.json");
    if let Some((req, python)) = transfer_job {
        let loaded = dspnet_deploy::load_run(&run_dir)?;
        run_transfer(&loaded, &req, &python)?;
        // every record of the file (earlier ones included), read as EvalRecord for the table
        let text = std::fs::read_to_string(&results).map_err(|e| DeployError::io(&results, e))?;
        records = serde_json::from_str(&text)
            .map_err(|e| DeployError::Run(format!("{}: {e}; delete it and rerun dspnet-eval", results.display())))?;
    }
    print!("{}", table(&records));
    println!("results: {}", results.display());
    Ok(())
}

fn main() -> ExitCode {
    init_logging();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
