//! `dspnet-shard`: pack an image dataset into WebDataset shards.
//!
//! ```text
//! dspnet-shard --input PATH --output DIR [--format imagefolder|fashion-mnist|ilsvrc]
//!              [--split train|val|test] [--labels FILE] [--verify header|full] [--strict-data]
//!              [--samples-per-shard N | --max-shard-bytes B] [--zstd] [--seed S]
//!              [--prefix NAME] [--threads N] [--overwrite]
//! ```
//! * `imagefolder`: `--input` is `DIR/<class>/<image>`; original bytes are stored as
//!   `KEY.jpg|png|webp` (the format found in the bytes) with `KEY.cls` (class index) and
//!   `KEY.json` (`{"class", "source"}`); the (sorted) file list is shuffled by `--seed` across
//!   shards.
//! * `fashion-mnist`: `--input` is the folder of the gzipped IDX files; `--split` picks
//!   `train-*` or `t10k-*`; images are stored as grayscale PNG, shuffled by `--seed`.
//! * `ilsvrc`: `--input` is `ILSVRC2012_img_train.tar` (`--split train`, a tar of per-synset
//!   tars) or `ILSVRC2012_img_val.tar` (`--split val`, with `--labels`: the devkit tar.gz,
//!   `LOC_val_solution.csv` or `filename wnid` lines), read in place; class = position of the
//!   WNID in sorted order, key = original file stem, `.json` = WNID and file name.
//!
//! Every image of `imagefolder` and `ilsvrc` is checked (`--verify header`, or `full` for a
//! complete decode) on `--threads` worker threads and written in a deterministic order; an
//! unusable one is skipped, counted, named in the summary and in manifest.json, or with
//! `--strict-data` stops the run before any shard is written (shards are staged under temporary
//! names and removed). A progress bar with images/s and ETA is drawn on stderr when it is a
//! terminal. Prints a summary on stdout. Bad input prints `error: <one line>` on stderr and
//! exits 2.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dspnet_pipeline::dataset::{
    fashion_mnist, ilsvrc_train, ilsvrc_val, pack_images, read_val_labels, scan_image_folder, seeded_shuffle,
    FolderImages, ImageList, PackOptions, Progress, Split, Verify,
};
use dspnet_pipeline::shard::{Manifest, ShardWriter, ShardWriterConfig, MANIFEST_NAME};
use dspnet_pipeline::PipelineError;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// DIR/<class>/<image>.jpg|jpeg|png|webp
    #[value(name = "imagefolder")]
    ImageFolder,
    /// Folder with the gzipped Fashion-MNIST IDX files
    #[value(name = "fashion-mnist")]
    FashionMnist,
    /// ILSVRC2012_img_train.tar or ILSVRC2012_img_val.tar as downloaded
    #[value(name = "ilsvrc")]
    Ilsvrc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SplitArg {
    Train,
    Val,
    Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum VerifyArg {
    /// Format, header and structure of every image (no pixel decoded)
    Header,
    /// The header checks and a complete decode with the loader's decoder
    Full,
}

/// Pack an image dataset into WebDataset tar shards with a manifest.json.
#[derive(Parser, Debug)]
#[command(name = "dspnet-shard", version)]
struct Args {
    /// Input: class folders, the Fashion-MNIST IDX folder, or an ILSVRC2012 archive.
    #[arg(long)]
    input: PathBuf,
    /// Output folder for the shards and manifest.json (created if missing).
    #[arg(long)]
    output: PathBuf,
    /// Input layout.
    #[arg(long, value_enum, default_value = "imagefolder")]
    format: Format,
    /// Samples per shard [default: 10000].
    #[arg(long, conflicts_with = "max_shard_bytes")]
    samples_per_shard: Option<usize>,
    /// Maximum uncompressed shard size in bytes (instead of --samples-per-shard).
    #[arg(long)]
    max_shard_bytes: Option<u64>,
    /// Compress shards with zstd (NAME-000000.tar.zst).
    #[arg(long)]
    zstd: bool,
    /// Seed of the sample shuffle across shards.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Split: the Fashion-MNIST files (train, test) or the ILSVRC archive (train, val), and
    /// the default prefix.
    #[arg(long, value_enum, default_value = "train")]
    split: SplitArg,
    /// Labels of the ILSVRC validation archive: ILSVRC2012_devkit_t12.tar.gz,
    /// LOC_val_solution.csv, or lines `filename wnid`.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How much of each image is checked before it is stored.
    #[arg(long, value_enum, default_value = "header")]
    verify: VerifyArg,
    /// Stop at the first unusable image, before writing any shard (exit code 2), instead of
    /// skipping it.
    #[arg(long)]
    strict_data: bool,
    /// Worker threads reading and checking images [default: one per core].
    #[arg(long)]
    threads: Option<usize>,
    /// Shard name prefix [default: the split name].
    #[arg(long)]
    prefix: Option<String>,
    /// Replace shards already in the output folder.
    #[arg(long)]
    overwrite: bool,
}

/// The progress bar on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Bar(ProgressBar::with_draw_target(None, target))
    }
    fn style(&self, template: &str) {
        let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).with_key(
            "rate",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} images/s", s.per_sec());
            },
        );
        self.0.set_style(style);
    }
    fn indexed(&self, done: u64, total: u64) {
        if done == 1 {
            self.style("indexing per-synset tars {pos}/{len} [{elapsed_precise}]");
            self.0.enable_steady_tick(Duration::from_millis(200));
        }
        self.0.set_length(total);
        self.0.set_position(done);
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.style("{wide_bar} {pos}/{len} images, {rate}, ETA {eta} [{elapsed_precise}]");
        self.0.reset();
        self.0.set_length(total);
        self.0.enable_steady_tick(Duration::from_millis(200));
    }
    fn advance(&self, done: u64) {
        self.0.set_position(done);
    }
}

fn run(args: &Args, bar: &Bar) -> Result<Manifest, PipelineError> {
    let samples_per_shard = match (args.samples_per_shard, args.max_shard_bytes) {
        (None, None) => Some(10_000),
        (n, _) => n,
    };
    let split_name = match args.split {
        SplitArg::Train => "train",
        SplitArg::Val => "val",
        SplitArg::Test => "test",
    };
    let cfg = ShardWriterConfig {
        output_dir: args.output.clone(),
        prefix: args.prefix.clone().unwrap_or_else(|| split_name.to_string()),
        samples_per_shard,
        max_shard_bytes: args.max_shard_bytes,
        zstd: args.zstd,
        overwrite: args.overwrite,
    };
    if args.labels.is_some() && !(args.format == Format::Ilsvrc && args.split == SplitArg::Val) {
        return Err(PipelineError::Config {
            option: "--labels".into(),
            message: "labels the ILSVRC validation archive only (--format ilsvrc --split val)".into(),
        });
    }
    let opts = PackOptions {
        verify: if args.verify == VerifyArg::Full { Verify::Full } else { Verify::Header },
        strict: args.strict_data,
        threads: args.threads.unwrap_or_else(|| PackOptions::default().threads),
    };
    if opts.threads == 0 {
        return Err(PipelineError::Config { option: "--threads".into(), message: "must be at least 1".into() });
    }
    // --strict-data: shards stay under temporary names until every image has passed
    let writer =
        |cfg: ShardWriterConfig| if opts.strict { ShardWriter::new_staged(cfg) } else { ShardWriter::new(cfg) };
    let pack = |list: &dyn ImageList, cfg: ShardWriterConfig| pack_images(list, writer(cfg)?, &opts, bar);
    match args.format {
        Format::ImageFolder => {
            let (classes, mut items) = scan_image_folder(&args.input)?;
            seeded_shuffle(&mut items, args.seed);
            pack(&FolderImages::new(&args.input, classes, items), cfg)
        }
        Format::Ilsvrc => {
            let list = match (args.split, &args.labels) {
                (SplitArg::Train, _) => ilsvrc_train(&args.input, opts.threads, &|d, t| bar.indexed(d, t))?,
                (SplitArg::Val, Some(labels)) => ilsvrc_val(&args.input, &read_val_labels(labels)?, labels)?,
                (SplitArg::Val, None) => {
                    return Err(PipelineError::Config {
                        option: "--labels".into(),
                        message: "--split val needs --labels FILE: ILSVRC2012_devkit_t12.tar.gz, LOC_val_solution.csv or lines `filename wnid`".into(),
                    })
                }
                (SplitArg::Test, _) => {
                    return Err(PipelineError::Config {
                        option: "--split".into(),
                        message: "the ILSVRC2012 test images have no public labels; use --split train or val".into(),
                    })
                }
            };
            pack(&list.shuffled(args.seed), cfg)
        }
        Format::FashionMnist => {
            let split = match args.split {
                SplitArg::Train => Split::Train,
                SplitArg::Test => Split::Test,
                SplitArg::Val => {
                    return Err(PipelineError::Config {
                        option: "--split".into(),
                        message: "Fashion-MNIST has the splits train and test".into(),
                    })
                }
            };
            for kind in ["images-idx3", "labels-idx1"] {
                let stem = if split == Split::Train { "train" } else { "t10k" };
                let p = args.input.join(format!("{stem}-{kind}-ubyte.gz"));
                if !p.is_file() {
                    return Err(PipelineError::MissingIdx { path: p });
                }
            }
            let mut writer = writer(cfg)?;
            let (classes, mut images) = fashion_mnist(&args.input, split)?;
            seeded_shuffle(&mut images, args.seed);
            bar.start(images.len() as u64);
            for (i, img) in images.into_iter().enumerate() {
                writer.write(&img.into_sample())?;
                bar.advance(i as u64 + 1);
            }
            writer.finish(&classes)
        }
    }
}

/// Skipped files named in the summary (all of them are in manifest.json).
const NAMED_SKIPS: usize = 20;

fn main() -> ExitCode {
    dspnet_model::libtorch::warn_if_mismatch();
    let args = Args::parse();
    dspnet_core::cli::init_logging_at("warn");
    let start = Instant::now();
    let bar = Bar::new();
    let result = run(&args, &bar);
    bar.0.finish_and_clear();
    let result = result.map(|m| {
        let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "dspnet-shard: {} samples, {} shards, {} bytes, {} classes, {:.2} s ({:.0} images/s) -> {}",
            m.total_samples,
            m.shards.len(),
            bytes,
            m.class_names.len(),
            secs,
            (m.total_samples + m.skipped_total) as f64 / secs.max(1e-9),
            args.output.display()
        );
        if m.skipped_total > 0 {
            println!(
                "dspnet-shard: skipped {} unusable image(s), listed in {}:",
                m.skipped_total,
                args.output.join(MANIFEST_NAME).display()
            );
            for f in m.skipped.iter().take(NAMED_SKIPS) {
                println!("  {}: {}", f.name, f.reason);
            }
            if m.skipped.len() > NAMED_SKIPS {
                println!("  ... and {} more", m.skipped.len() - NAMED_SKIPS);
            }
        }
    });
    dspnet_core::cli::exit_with(result)
}
