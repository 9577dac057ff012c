//! Loader half of `dspnet-bench` (issue 6): throughput of the streaming loader against the JPEG
//! decode-only ceiling of the same files and against the peer (PyTorch DataLoader + torchvision,
//! `bench/peer/peer_loader.py`), every figure measured in the same run on the same cores.
//!
//! Workloads (shards written with our [`ShardWriter`] into a temporary folder, removed after):
//! * 224 px: the 256 COCO128 photos (`../shared/data/coco128/images/{train2017,val2017}`, mostly
//!   640x480 JPEG) repeated into shards, twin views with the full BYOL augmentations of
//!   [`AugmentConfig::byol_224`] (random resized crop, flip, colour jitter, grayscale, Gaussian
//!   blur 1.0 / 0.1, solarisation 0 / 0.2);
//! * 32 px: CIFAR-10 training JPEGs (`../shared/data/cifar10-jpg/train`), twin views of
//!   [`AugmentConfig::byol_small`]`(32, 3)` (the CIFAR preset: blur off, solarisation 0 / 0.2).
//!
//! The shared data folder is `$DSPNET_SHARED_DATA` when set, else `../shared/data` relative to the
//! working directory or to the checkout.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dspnet_pipeline::augment::AugmentConfig;
use dspnet_pipeline::dataset::scan_image_folder;
use dspnet_pipeline::image::decode_image;
use dspnet_pipeline::loader::{Loader, LoaderConfig, LoaderMode, LoaderSettings, LoaderThreads};
use dspnet_pipeline::shard::{RawSample, ShardWriter, ShardWriterConfig};

/// One benchmark figure as printed by `dspnet-bench` and recorded in docs/results.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Group: `"loader"`, `"trainer"`, `"end-to-end"`.
    pub section: String,
    /// What was measured, e.g. `"224 px twin views, full BYOL augment (ours)"`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Unit of `value`: `"images/s"`, `"x"` (a ratio), `"%"`.
    pub unit: String,
    /// Threads, workload, baseline and target, in words.
    pub note: String,
    /// `Some(pass)` when the figure has a target from issue 6.
    pub pass: Option<bool>,
}

impl Figure {
    fn new(name: impl Into<String>, value: f64, unit: &str, note: impl Into<String>) -> Self {
        Figure { section: "loader".into(), name: name.into(), value, unit: unit.into(), note: note.into(), pass: None }
    }
    fn target(mut self, pass: bool) -> Self {
        self.pass = Some(pass);
        self
    }
}

/// Decode/augment worker threads of our loader; the peer uses as many DataLoader workers.
pub const LOADER_WORKERS: usize = 2;

/// Sizes of one benchmark run.
struct Plan {
    /// COCO photos are repeated this many times into the 224-px shards (256 photos each time).
    coco_repeats: usize,
    /// CIFAR training images in the 32-px shards.
    cifar_images: usize,
    /// Timed epochs of our loader (after one warm-up epoch); the median is reported.
    epochs: usize,
    /// Images the peer processes per timed pass at 224 px / at 32 px.
    peer_images_224: usize,
    peer_images_32: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan { coco_repeats: 2, cifar_images: 10_000, epochs: 1, peer_images_224: 256, peer_images_32: 3000 }
        } else {
            Plan { coco_repeats: 8, cifar_images: 30_000, epochs: 3, peer_images_224: 1024, peer_images_32: 10_000 }
        }
    }
}

/// Temporary folder removed on drop (no extra dependency for the binary).
pub struct TempDir(pub PathBuf);
impl TempDir {
    /// Creates `$TMPDIR/dspnet-bench-TAG-PID-NANOS`; the error names the folder and the fix.
    pub fn new(tag: &str) -> Result<Self, String> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("dspnet-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| {
            format!("cannot create temporary folder {}: {e}; set TMPDIR to a writable folder", p.display())
        })?;
        Ok(TempDir(p))
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shared data folder (see the module docs).
pub fn shared_data_dir() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("DSPNET_SHARED_DATA") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("../shared/data"));
    if let Some(m) = option_env!("CARGO_MANIFEST_DIR") {
        // the root package (tools/) or a member crate
        candidates.push(Path::new(m).join("../shared/data"));
        candidates.push(Path::new(m).join("../../shared/data"));
    }
    candidates
        .into_iter()
        .find(|p| p.join("coco128").is_dir() && p.join("cifar10-jpg").is_dir())
        .ok_or_else(|| "shared data not found: set DSPNET_SHARED_DATA to the folder holding coco128/ and cifar10-jpg/ (default ../shared/data)".to_string())
}

fn jpgs_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")))
        .collect();
    v.sort();
    Ok(v)
}

/// The 256 COCO128 photos' bytes (train2017 then val2017, sorted by name).
pub fn coco_jpegs(data: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for split in ["train2017", "val2017"] {
        for p in jpgs_in(&data.join("coco128/images").join(split))? {
            out.push(std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?);
        }
    }
    if out.is_empty() {
        return Err(format!("no JPEG under {}", data.join("coco128/images").display()));
    }
    Ok(out)
}

/// The first `n` CIFAR-10 training JPEGs, interleaved over the classes (bytes, class index).
pub fn cifar_jpegs(data: &Path, n: usize) -> Result<Vec<(Vec<u8>, i64)>, String> {
    let root = data.join("cifar10-jpg/train");
    let (classes, items) = scan_image_folder(&root).map_err(|e| e.to_string())?;
    let mut by_class: Vec<Vec<&PathBuf>> = vec![Vec::new(); classes.len()];
    for (p, c) in &items {
        by_class[*c as usize].push(p);
    }
    let mut out = Vec::with_capacity(n);
    'fill: for i in 0.. {
        let mut any = false;
        for (c, list) in by_class.iter().enumerate() {
            if let Some(p) = list.get(i) {
                any = true;
                out.push((std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?, c as i64));
                if out.len() == n {
                    break 'fill;
                }
            }
        }
        if !any {
            break;
        }
    }
    Ok(out)
}

/// Write `(bytes, label)` JPEG samples as `.jpg` + `.cls` shards; returns the shard paths.
fn write_shards(
    dir: &Path,
    prefix: &str,
    samples: impl Iterator<Item = (Vec<u8>, i64)>,
    per_shard: usize,
) -> Result<Vec<String>, String> {
    let cfg = ShardWriterConfig {
        output_dir: dir.to_path_buf(),
        prefix: prefix.into(),
        samples_per_shard: Some(per_shard),
        max_shard_bytes: None,
        zstd: false,
        overwrite: false,
    };
    let mut w = ShardWriter::new(cfg).map_err(|e| e.to_string())?;
    for (i, (bytes, label)) in samples.enumerate() {
        w.write(&RawSample::new(format!("{prefix}{i:07}")).with("jpg", bytes).with("cls", label.to_string()))
            .map_err(|e| e.to_string())?;
    }
    let m = w.finish(&[]).map_err(|e| e.to_string())?;
    Ok(m.shards.iter().map(|s| dir.join(&s.name).to_string_lossy().to_string()).collect())
}

/// Images/s of our loader (Train mode, twin views) over `shards`: one warm-up epoch, then the
/// median of `epochs` timed epochs (from `Loader::epoch` to the last batch).
pub fn loader_images_per_s(
    shards: &[String],
    augment: &AugmentConfig,
    batch_size: usize,
    epochs: usize,
) -> Result<f64, String> {
    let cfg = LoaderConfig { batch_size, drop_last: false, ..LoaderConfig::default() };
    let threads = LoaderThreads { workers: LOADER_WORKERS, ..LoaderThreads::default() };
    let loader = Loader::new(
        shards.to_vec(),
        LoaderSettings::new(cfg, augment.clone()).with_threads(threads),
        LoaderMode::Train,
        0,
        1,
        tch::Device::Cpu,
    )
    .map_err(|e| e.to_string())?;
    let mut rates = Vec::new();
    for epoch in 0..=epochs as u64 {
        let t = Instant::now();
        let mut n = 0usize;
        for b in loader.epoch(epoch).map_err(|e| e.to_string())? {
            n += b.map_err(|e| e.to_string())?.keys.len();
        }
        let s = t.elapsed().as_secs_f64();
        if epoch > 0 {
            rates.push(n as f64 / s);
        }
    }
    let skipped = loader.stats().skipped_total();
    if skipped > 0 {
        return Err(format!("loader skipped {skipped} samples: {}", loader.stats().summary()));
    }
    Ok(crate::measure::median(rates))
}

/// Decode-only ceiling: images/s of decoding every image of `jpegs` in full (RGB, 8 bit) with
/// the loader's decoder on `threads` threads, `passes` passes; median pass.
pub fn decode_images_per_s(jpegs: &[&[u8]], threads: usize, passes: usize) -> Result<f64, String> {
    let mut rates = Vec::new();
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        let chunk = jpegs.len().div_ceil(threads.max(1));
        let res: Vec<Result<u64, String>> = std::thread::scope(|s| {
            let hs: Vec<_> = jpegs
                .chunks(chunk.max(1))
                .map(|part| {
                    s.spawn(move || {
                        let mut sum = 0u64;
                        for b in part {
                            let d = decode_image(b, 3).map_err(|e| e.to_string())?;
                            sum += d.data[d.data.len() / 2] as u64;
                        }
                        Ok(sum)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("decode thread panicked".into()))).collect()
        });
        for r in res {
            std::hint::black_box(r?);
        }
        rates.push(jpegs.len() as f64 / t.elapsed().as_secs_f64());
    }
    Ok(crate::measure::median(rates))
}

/// Outcome of the peer script.
pub struct PeerResult {
    pub images_per_s: f64,
    pub detail: String,
}

/// Run `bench/peer/peer_loader.py` with `.venv/bin/python` over `shards` (the same files), with
/// the views of `augment`. `Ok(None)` when torch or torchvision is not installed.
pub fn run_peer(
    shards: &[String],
    augment: &AugmentConfig,
    images: usize,
    batch_size: usize,
    tmp: &Path,
) -> Result<Option<PeerResult>, String> {
    let root = crate::machine::checkout_root();
    let python = root.join(".venv/bin/python");
    let script = root.join("bench/peer/peer_loader.py");
    if !python.exists() {
        return Ok(None);
    }
    let cfg_path = tmp.join(format!("augment-{}.json", augment.image_size));
    std::fs::write(&cfg_path, serde_json::to_vec(augment).map_err(|e| e.to_string())?)
        .map_err(|e| format!("cannot write {}: {e}", cfg_path.display()))?;
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--augment")
        .arg(&cfg_path)
        .arg("--workers")
        .arg(LOADER_WORKERS.to_string())
        .arg("--batch-size")
        .arg(batch_size.to_string())
        .arg("--images")
        .arg(images.to_string())
        .arg("--shards")
        .args(shards);
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(3) {
        return Ok(None); // torch / torchvision missing
    }
    if !out.status.success() {
        return Err(format!(
            "peer_loader.py failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    let line =
        stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or("peer_loader.py printed no JSON line")?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("peer_loader.py output: {e}"))?;
    let ips = v["images_per_s"].as_f64().ok_or("peer_loader.py output lacks images_per_s")?;
    let detail = format!(
        "torch {} torchvision {}, {} DataLoader workers, batch {}",
        v["torch"].as_str().unwrap_or("?"),
        v["torchvision"].as_str().unwrap_or("?"),
        v["workers"],
        v["batch_size"]
    );
    Ok(Some(PeerResult { images_per_s: ips, detail }))
}

/// Run the loader benchmark; `quick` keeps it well under 2 minutes on 2 cores.
///
/// Figures (section `"loader"`): images/s of our twin views at 224 px and 32 px, the decode-only
/// ceiling at 224 px and 32 px, the peer's images/s, and the ratios with issue 6's targets
/// (>= 3x the peer and >= 60% of the ceiling at 224 px; >= 10x the peer at 32 px).
/// Errors: a one-line message (missing shared data, unwritable temp folder, loader or peer failure).
pub fn run_loader_bench(quick: bool) -> Result<Vec<Figure>, String> {
    let plan = Plan::new(quick);
    let data = shared_data_dir()?;
    let tmp = TempDir::new("loader")?;
    let threads = LOADER_WORKERS;
    let mut figs = Vec::new();

    // ---- 224 px, COCO128 photos ----
    let coco = coco_jpegs(&data)?;
    let n_coco = coco.len();
    let dir224 = tmp.0.join("coco");
    let shards224 =
        write_shards(&dir224, "coco", (0..plan.coco_repeats).flat_map(|_| coco.iter().map(|b| (b.clone(), 0))), 256)?;
    let aug224 = AugmentConfig::byol_224();
    let ours224 = loader_images_per_s(&shards224, &aug224, 64, plan.epochs)?;
    let refs: Vec<&[u8]> = coco.iter().map(|b| b.as_slice()).collect();
    let dec224 = decode_images_per_s(&refs, threads, plan.epochs.max(2))?;
    let peer224 = run_peer(&shards224, &aug224, plan.peer_images_224, 64, &tmp.0)?;

    // ---- 32 px, CIFAR-10 ----
    let cifar = cifar_jpegs(&data, plan.cifar_images)?;
    let dir32 = tmp.0.join("cifar");
    let shards32 = write_shards(&dir32, "cifar", cifar.iter().cloned(), 5000)?;
    let aug32 = AugmentConfig::byol_small(32, 3);
    let ours32 = loader_images_per_s(&shards32, &aug32, 256, plan.epochs)?;
    let refs32: Vec<&[u8]> = cifar.iter().map(|(b, _)| b.as_slice()).collect();
    let dec32 = decode_images_per_s(&refs32, threads, plan.epochs.max(2))?;
    let peer32 = run_peer(&shards32, &aug32, plan.peer_images_32, 256, &tmp.0)?;

    let ours_note = |n: usize| {
        format!("{threads} decode/augment worker threads (+ merge, batch and 2 shard-reader threads), {n} samples per epoch, median of {} epochs", plan.epochs)
    };
    figs.push(Figure::new(
        "224 px twin views, full BYOL augment (ours)",
        ours224,
        "images/s",
        format!("COCO128 photos x{}: {}", plan.coco_repeats, ours_note(n_coco * plan.coco_repeats)),
    ));
    figs.push(Figure::new(
        "224 px decode-only ceiling",
        dec224,
        "images/s",
        format!("full decode of the {n_coco} COCO128 JPEGs to RGB8 on {threads} threads, our decoder"),
    ));
    let frac = ours224 / dec224;
    figs.push(Figure::new("224 px ours / decode ceiling", frac * 100.0, "%", "target >= 60%").target(frac >= 0.6));
    figs.push(Figure::new(
        "32 px twin views, BYOL CIFAR augment (ours)",
        ours32,
        "images/s",
        format!("CIFAR-10 train JPEGs: {}", ours_note(cifar.len())),
    ));
    figs.push(Figure::new(
        "32 px decode-only ceiling",
        dec32,
        "images/s",
        format!("full decode of {} CIFAR-10 JPEGs on {threads} threads, our decoder", cifar.len()),
    ));
    match peer224 {
        Some(p) => {
            figs.push(Figure::new(
                "224 px twin views (peer: PyTorch DataLoader + torchvision)",
                p.images_per_s,
                "images/s",
                format!(
                    "{}, {} images, lightly's BYOLTransform recipe with our config's parameters",
                    p.detail, plan.peer_images_224
                ),
            ));
            let r = ours224 / p.images_per_s;
            figs.push(Figure::new("224 px ours / peer", r, "x", "target >= 3x").target(r >= 3.0));
        }
        None => figs.push(Figure::new(
            "224 px peer",
            f64::NAN,
            "images/s",
            "not measured: .venv with torch and torchvision not found (run tools/setup.sh)",
        )),
    }
    match peer32 {
        Some(p) => {
            figs.push(Figure::new(
                "32 px twin views (peer: PyTorch DataLoader + torchvision)",
                p.images_per_s,
                "images/s",
                format!("{}, {} images", p.detail, plan.peer_images_32),
            ));
            let r = ours32 / p.images_per_s;
            figs.push(Figure::new("32 px ours / peer", r, "x", "target >= 10x").target(r >= 10.0));
        }
        None => figs.push(Figure::new(
            "32 px peer",
            f64::NAN,
            "images/s",
            "not measured: .venv with torch and torchvision not found (run tools/setup.sh)",
        )),
    }
    Ok(figs)
}
