//! Shard half of `dspnet-bench`: images/s of `dspnet-shard`'s library path (the list the binary
//! builds, then [`pack_images`] on one worker thread per core, writing and fsyncing the shards)
//! against Python webdataset's `ShardWriter` doing the same job on the same input
//! (`bench/peer/peer_shard.py`: PIL checks each image, one process), both measured in this run
//! on the same cores, with `--verify header` and `--verify full`.
//!
//! Workloads (every input byte is read once before timing, so both sides start from the page
//! cache; outputs go to a temporary folder, removed after):
//! * CIFAR-10 class folders: `../shared/data/cifar10-jpg/train`, all 50,000 images (32x32
//!   JPEG, 10 classes; `--quick`: the first 1,000 of each class, as symlinks);
//! * an ILSVRC-layout training archive built from real photos: 8 per-synset tars
//!   `n0000000S.tar` holding the 256 COCO128 photos (mostly 640x480 JPEG) repeated 8 times
//!   (`--quick`: twice), named `n0000000S_N.JPEG`. Ours indexes it and reads the images in a
//!   seeded order with positioned reads; the peer streams it with `tarfile` in archive order.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dspnet_core::machine::process_cpu_seconds;
use dspnet_pipeline::dataset::{
    ilsvrc_train, pack_images, scan_image_folder, seeded_shuffle, FolderImages, NoProgress, PackOptions, Verify,
};
use dspnet_pipeline::shard::{ShardWriter, ShardWriterConfig};

use crate::loader::{coco_jpegs, shared_data_dir, Figure, TempDir};

/// Samples per shard on both sides.
const PER_SHARD: usize = 10_000;
/// Synsets of the archive.
const SYNSETS: usize = 8;

fn figure(name: impl Into<String>, value: f64, unit: &str, note: impl Into<String>) -> Figure {
    Figure { section: "shard".into(), name: name.into(), value, unit: unit.into(), note: note.into(), pass: None }
}

/// One timed run of ours: images/s, CPU cores busy on average, input MB/s.
struct Ours {
    images_per_s: f64,
    cores_busy: f64,
    mb_per_s: f64,
}

fn writer(out: &Path) -> Result<ShardWriter, String> {
    let cfg = ShardWriterConfig {
        output_dir: out.to_path_buf(),
        prefix: "train".into(),
        samples_per_shard: Some(PER_SHARD),
        max_shard_bytes: None,
        zstd: false,
        overwrite: true,
    };
    ShardWriter::new(cfg).map_err(|e| e.to_string())
}

/// Builds the list (scan + shuffle, or index) and packs it, timed as a whole.
fn run_ours(input: &Path, archive: bool, verify: Verify, out: &Path, threads: usize) -> Result<Ours, String> {
    let opts = PackOptions { verify, strict: false, threads };
    let (t, cpu) = (Instant::now(), process_cpu_seconds());
    let m = if archive {
        let list = ilsvrc_train(input, threads, &|_, _| {}).map_err(|e| e.to_string())?.shuffled(0);
        pack_images(&list, writer(out)?, &opts, &NoProgress)
    } else {
        let (classes, mut items) = scan_image_folder(input).map_err(|e| e.to_string())?;
        seeded_shuffle(&mut items, 0);
        pack_images(&FolderImages::new(input, classes, items), writer(out)?, &opts, &NoProgress)
    }
    .map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let cpu_s = match (cpu, process_cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    let images = (m.total_samples + m.skipped_total) as f64;
    let bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
    let _ = std::fs::remove_dir_all(out);
    Ok(Ours { images_per_s: images / secs, cores_busy: cpu_s / secs, mb_per_s: bytes as f64 / 1e6 / secs })
}

/// The peer's images/s (`None` when the venv lacks webdataset or PIL) and its versions.
fn run_peer(mode: &str, input: &Path, verify: &str, out: &Path) -> Result<Option<(f64, String)>, String> {
    let root = crate::machine::checkout_root();
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return Ok(None);
    }
    let res = Command::new(&python)
        .arg(root.join("bench/peer/peer_shard.py"))
        .args(["--mode", mode, "--verify", verify, "--maxcount", &PER_SHARD.to_string()])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let _ = std::fs::remove_dir_all(out);
    if res.status.code() == Some(3) {
        return Ok(None);
    }
    if !res.status.success() {
        let err = String::from_utf8_lossy(&res.stderr);
        return Err(format!("peer_shard.py failed ({}): {}", res.status, err.lines().last().unwrap_or("")));
    }
    let stdout = String::from_utf8_lossy(&res.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).ok_or("peer_shard.py printed no JSON line")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("peer_shard.py output: {e}"))?;
    let ips = v["images_per_s"].as_f64().ok_or("peer_shard.py output lacks images_per_s")?;
    let detail = format!(
        "webdataset {} ShardWriter, Pillow {}, one Python process",
        v["webdataset"].as_str().unwrap_or("?"),
        v["pillow"].as_str().unwrap_or("?")
    );
    Ok(Some((ips, detail)))
}

/// Reads every file under `dir` (recursively, following links) once: the page-cache warm-up.
fn read_all(dir: &Path) -> Result<u64, String> {
    let mut total = 0;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if meta.is_file() {
        return std::fs::read(dir).map(|b| b.len() as u64).map_err(|e| format!("cannot read {}: {e}", dir.display()));
    }
    for e in std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        total += read_all(&p)?;
    }
    Ok(total)
}

/// The CIFAR-10 training folders, or (quick) the first 1,000 images of each class as symlinks.
fn cifar_input(data: &Path, quick: bool, tmp: &Path) -> Result<(PathBuf, usize), String> {
    let root = data.join("cifar10-jpg/train");
    let root = root.canonicalize().map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    let (classes, items) = scan_image_folder(&root).map_err(|e| e.to_string())?;
    if !quick {
        return Ok((root, items.len()));
    }
    let dir = tmp.join("cifar-subset");
    let mut n = 0;
    for (ci, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).map_err(|e| e.to_string())?;
        for (p, _) in items.iter().filter(|(_, c)| *c == ci as i64).take(1000) {
            let name = p.file_name().ok_or("image without a name")?;
            std::os::unix::fs::symlink(p, dir.join(class).join(name)).map_err(|e| e.to_string())?;
            n += 1;
        }
    }
    Ok((dir, n))
}

/// Writes the ILSVRC-layout archive; returns (path, images, bytes).
fn build_archive(data: &Path, repeats: usize, tmp: &Path) -> Result<(PathBuf, usize, u64), String> {
    let photos = coco_jpegs(data)?;
    let per = photos.len() * repeats / SYNSETS;
    let path = tmp.join("ILSVRC2012_img_train.tar");
    let file = std::fs::File::create(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut outer = tar::Builder::new(std::io::BufWriter::new(file));
    let mut i = 0usize;
    for s in 0..SYNSETS {
        let wnid = format!("n{:08}", s + 1);
        let mut inner = tar::Builder::new(Vec::new());
        for j in 0..per {
            let bytes = &photos[i % photos.len()];
            i += 1;
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            inner
                .append_data(&mut h, format!("{wnid}_{}.JPEG", 10_000 + j), bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        let inner = inner.into_inner().map_err(|e| e.to_string())?;
        let mut h = tar::Header::new_gnu();
        h.set_size(inner.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        outer.append_data(&mut h, format!("{wnid}.tar"), inner.as_slice()).map_err(|e| e.to_string())?;
    }
    outer.into_inner().map_err(|e| e.to_string())?;
    let bytes = std::fs::metadata(&path).map_err(|e| e.to_string())?.len();
    Ok((path, per * SYNSETS, bytes))
}

/// Runs the shard benchmark; `quick` keeps it under a minute on 2 cores.
///
/// Figures (section `"shard"`): for each workload and each `--verify` mode, our images/s (with
/// the CPU cores busy on average and the shard MB/s), the peer's, and the ratio.
/// Errors: a one-line message (missing shared data, unwritable temp folder, a failed run).
pub fn run_shard_bench(quick: bool) -> Result<Vec<Figure>, String> {
    let data = shared_data_dir()?;
    let tmp = TempDir::new("shard")?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (cifar, n_cifar) = cifar_input(&data, quick, &tmp.0)?;
    let repeats = if quick { 2 } else { 8 };
    let (archive, n_archive, archive_bytes) = build_archive(&data, repeats, &tmp.0)?;
    let mut figs = Vec::new();
    let workloads = [
        (
            "CIFAR-10 class folders",
            "folder",
            cifar.as_path(),
            false,
            format!("{n_cifar} CIFAR-10 train JPEGs (32x32) in 10 class folders"),
        ),
        (
            "ILSVRC-layout archive",
            "ilsvrc",
            archive.as_path(),
            true,
            format!(
                "{n_archive} COCO128 photos (256 x {repeats}) in {SYNSETS} per-synset tars, {:.0} MB",
                archive_bytes as f64 / 1e6
            ),
        ),
    ];
    for (label, mode, input, is_archive, what) in workloads {
        read_all(input)?;
        for (verify, vname) in [(Verify::Header, "header"), (Verify::Full, "full")] {
            eprintln!("shard: {label}, --verify {vname}: ours, then webdataset ShardWriter ...");
            let ours = run_ours(input, is_archive, verify, &tmp.0.join("ours"), threads)?;
            let peer = run_peer(mode, input, vname, &tmp.0.join("peer"))?;
            figs.push(figure(
                format!("{label}, --verify {vname} (ours)"),
                ours.images_per_s,
                "images/s",
                format!(
                    "{what}; {threads} worker threads + the writer, {:.1} cores busy on average, {:.0} MB/s of shards written and fsynced",
                    ours.cores_busy, ours.mb_per_s
                ),
            ));
            match peer {
                Some((ips, detail)) => {
                    figs.push(figure(format!("{label}, --verify {vname} (peer)"), ips, "images/s", detail));
                    figs.push(figure(
                        format!("{label}, --verify {vname}: ours / peer"),
                        ours.images_per_s / ips,
                        "x",
                        "same input, same output layout, same run",
                    ));
                }
                None => figs.push(figure(
                    format!("{label}, --verify {vname} (peer)"),
                    f64::NAN,
                    "images/s",
                    "not measured: .venv with webdataset and Pillow not found (run tools/setup.sh)",
                )),
            }
        }
    }
    Ok(figs)
}
