//! `dspnet-shard`: pack an image dataset into WebDataset shards.
//!
//! ```text
//! dspnet-shard --input DIR --output DIR [--format imagefolder|fashion-mnist]
//!              [--samples-per-shard N | --max-shard-bytes B] [--zstd] [--seed S]
//!              [--split train|test] [--prefix NAME] [--overwrite]
//! ```
//! * `imagefolder`: `--input` is `DIR/<class>/<image>`; original bytes are stored as
//!   `KEY.jpg|png|webp` with `KEY.cls` (class index) and `KEY.json` (`{"class", "source"}`);
//!   the (sorted) file list is shuffled by `--seed` across shards.
//! * `fashion-mnist`: `--input` is the folder of the gzipped IDX files; `--split` picks
//!   `train-*` or `t10k-*`; images are stored as grayscale PNG, shuffled by `--seed`.
//!
//! Prints one summary line on stdout. Bad input prints `error: <one line>` on stderr and exits 2.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use dspnet_pipeline::dataset::{fashion_mnist, load_folder_image, scan_image_folder, seeded_shuffle, Split};
use dspnet_pipeline::shard::{Manifest, ShardWriter, ShardWriterConfig};
use dspnet_pipeline::PipelineError;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// DIR/<class>/<image>.jpg|jpeg|png|webp
    #[value(name = "imagefolder")]
    ImageFolder,
    /// Folder with the gzipped Fashion-MNIST IDX files
    #[value(name = "fashion-mnist")]
    FashionMnist,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

/// Pack an image dataset into WebDataset tar shards with a manifest.json.
#[derive(Parser, Debug)]
#[command(name = "dspnet-shard", version)]
struct Args {
    /// Input folder (class folders, or the Fashion-MNIST IDX folder).
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
    /// Split: chooses the Fashion-MNIST files and the default prefix.
    #[arg(long, value_enum, default_value = "train")]
    split: SplitArg,
    /// Shard name prefix [default: the split name].
    #[arg(long)]
    prefix: Option<String>,
    /// Replace shards already in the output folder.
    #[arg(long)]
    overwrite: bool,
}

fn run(args: &Args) -> Result<Manifest, PipelineError> {
    let split = match args.split {
        SplitArg::Train => Split::Train,
        SplitArg::Test => Split::Test,
    };
    let samples_per_shard = match (args.samples_per_shard, args.max_shard_bytes) {
        (None, None) => Some(10_000),
        (n, _) => n,
    };
    let cfg = ShardWriterConfig {
        output_dir: args.output.clone(),
        prefix: args.prefix.clone().unwrap_or_else(|| split.name().to_string()),
        samples_per_shard,
        max_shard_bytes: args.max_shard_bytes,
        zstd: args.zstd,
        overwrite: args.overwrite,
    };
    match args.format {
        Format::ImageFolder => {
            let (classes, mut items) = scan_image_folder(&args.input)?;
            seeded_shuffle(&mut items, args.seed);
            let mut writer = ShardWriter::new(cfg)?;
            let mut seen = dspnet_pipeline::dataset::UniqueKeys::default();
            for (path, class) in &items {
                let mut img = load_folder_image(&args.input, path, *class, &classes)?;
                // items are in a seeded, deterministic order, so the renaming is too
                img.key = seen.make_unique(img.key);
                writer.write(&img.to_sample())?;
            }
            writer.finish(&classes)
        }
        Format::FashionMnist => {
            for kind in ["images-idx3", "labels-idx1"] {
                let stem = if split == Split::Train { "train" } else { "t10k" };
                let p = args.input.join(format!("{stem}-{kind}-ubyte.gz"));
                if !p.is_file() {
                    return Err(PipelineError::MissingIdx { path: p });
                }
            }
            let mut writer = ShardWriter::new(cfg)?;
            let (classes, mut images) = fashion_mnist(&args.input, split)?;
            seeded_shuffle(&mut images, args.seed);
            for img in &images {
                writer.write(&img.to_sample())?;
            }
            writer.finish(&classes)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    dspnet_core::cli::init_logging_at("warn");
    let start = Instant::now();
    let result = run(&args).map(|m| {
        let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
        println!(
            "dspnet-shard: {} samples, {} shards, {} bytes, {} classes, {:.2} s -> {}",
            m.total_samples,
            m.shards.len(),
            bytes,
            m.class_names.len(),
            start.elapsed().as_secs_f64(),
            args.output.display()
        );
    });
    dspnet_core::cli::exit_with(result)
}
