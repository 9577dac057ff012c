//! The command line of `dspnet-bench`: its options ([`Args`]), the parts that `--skip` names
//! ([`Part`]), the sizes of one run derived from them ([`Plan`], `--quick` or full) and the
//! early check that `--out` can be written, so bad input fails before minutes of measuring.

use clap::Parser;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Loader,
    Trainer,
    Peer,
    E2e,
    Shard,
}

#[derive(Parser)]
#[command(
    version,
    about = "Throughput of dspnet's loader and trainer against the hardware limits and the PyTorch peer, measured in one run"
)]
pub struct Args {
    /// Smaller workloads (trainer batch 32, 2 timed steps, fewer images): about 2 minutes on 2
    /// idle cores with native bf16.
    #[arg(long)]
    pub quick: bool,
    /// Also write every figure and the machine description as JSON to this file (atomically).
    #[arg(long, value_name = "FILE.json")]
    pub out: Option<PathBuf>,
    /// Parts to leave out, comma-separated: loader, trainer, peer, e2e, shard.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub skip: Vec<Part>,
    /// libtorch intra-op threads (0: libtorch's default, one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Trainer batch size (images per step, each with two views); default 128, 32 with --quick.
    #[arg(long)]
    pub batch: Option<i64>,
    /// Timed steps per trainer figure after one warm-up step; default 3, 2 with --quick.
    #[arg(long)]
    pub steps: Option<usize>,
}

/// Sizes of one run.
pub struct Plan {
    pub quick: bool,
    pub batch: i64,
    pub warmup: usize,
    pub steps: usize,
    pub peak_reps: usize,
    pub gemm_n: i64,
    pub conv_batch: i64,
    /// Also measure fp32 + channels_last and bf16 through CPU autocast, and the peer with
    /// both views concatenated.
    pub extra_variants: bool,
    pub e2e_images: usize,
    pub e2e_steps: u64,
    pub e2e_batch: usize,
}

impl Plan {
    pub fn new(args: &Args) -> Result<Self, String> {
        let q = args.quick;
        let p = Plan {
            quick: q,
            batch: args.batch.unwrap_or(if q { 32 } else { 128 }),
            warmup: 1,
            steps: args.steps.unwrap_or(if q { 2 } else { 3 }),
            peak_reps: if q { 3 } else { 5 },
            gemm_n: if q { 1024 } else { 2048 },
            conv_batch: if q { 64 } else { 256 },
            extra_variants: !q,
            e2e_images: if q { 2000 } else { 10_000 },
            e2e_steps: if q { 4 } else { 10 },
            e2e_batch: if q { 32 } else { 128 },
        };
        if p.batch < 2 {
            return Err(format!("--batch {}: batch norm needs at least 2 images; use e.g. 128", p.batch));
        }
        if p.steps < 1 {
            return Err("--steps 0: time at least one step, e.g. --steps 3".into());
        }
        Ok(p)
    }
}

/// Fails fast (before minutes of measuring) when --out cannot be written.
pub fn check_out(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(format!("--out {}: is a folder; give a file name such as bench.json", path.display()));
    }
    let probe = dir.join(format!(".dspnet-bench-probe-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| {
        format!("--out {}: folder {} is not writable ({e}); choose another path", path.display(), dir.display())
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
