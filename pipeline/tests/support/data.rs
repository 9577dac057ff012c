//! Shards for the remote tests and a per-key view of what a loader delivers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use dspnet_pipeline::augment::AugmentConfig;
use dspnet_pipeline::loader::{Loader, LoaderConfig, LoaderMode, LoaderSettings};
use dspnet_pipeline::shard::{RawSample, ShardWriter, ShardWriterConfig};
use tch::{Device, Tensor};

/// A `side`×`side` RGB PNG of pseudo-random pixels (seeded by `seed`): ~3 bytes per pixel, so a
/// 32×32 image is about 3 KB and shards have a realistic bytes-per-sample.
pub fn noise_png(side: u32, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..side * side * 3)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        &data,
        side,
        side,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    out
}

/// Write `n_shards` × `per_shard` labelled samples `k00000…` (label = index % 10) as
/// `DIR/t-000000.tar …`; returns the shard file names.
pub fn noise_shards(dir: &Path, n_shards: usize, per_shard: usize, side: u32) -> Vec<String> {
    let cfg = ShardWriterConfig {
        output_dir: dir.to_path_buf(),
        prefix: "t".into(),
        samples_per_shard: Some(per_shard),
        max_shard_bytes: None,
        zstd: false,
        overwrite: false,
    };
    let mut w = ShardWriter::new(cfg).unwrap();
    for i in 0..n_shards * per_shard {
        w.write(
            &RawSample::new(format!("k{i:05}"))
                .with("png", noise_png(side, i as u64))
                .with("cls", (i % 10).to_string()),
        )
        .unwrap();
    }
    let m = w.finish(&[]).unwrap();
    m.shards.iter().map(|s| s.name.clone()).collect()
}

/// Loader settings for the tests: Eval-style order, one reader stream unless told otherwise.
pub fn loader_cfg(batch: usize) -> LoaderConfig {
    LoaderConfig {
        batch_size: batch,
        shuffle_buffer: 0,
        shard_shuffle: false,
        readers: 1,
        drop_last: false,
        seed: 0,
        strict_data: true,
    }
}

/// Evaluation transform at the images' own size (no resampling).
pub fn eval_aug(side: u32) -> AugmentConfig {
    AugmentConfig::byol_small(side, 3)
}

/// Every sample of one Eval epoch: key → (label, `[3, side, side]` f32 view, count). Panics on a
/// loader error.
pub fn eval_by_key(shards: Vec<String>, cfg: LoaderConfig, side: u32) -> BTreeMap<String, (i64, Tensor, usize)> {
    let l = Loader::new(shards, LoaderSettings::new(cfg, eval_aug(side)), LoaderMode::Eval, 0, 1, Device::Cpu).unwrap();
    let mut out: BTreeMap<String, (i64, Tensor, usize)> = BTreeMap::new();
    for b in l.epoch(0).unwrap() {
        let b = b.unwrap_or_else(|e| panic!("loader error: {e}"));
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        for (i, k) in b.keys.iter().enumerate() {
            out.entry(k.clone()).and_modify(|e| e.2 += 1).or_insert((labels[i], b.view_a.get(i as i64), 1));
        }
    }
    out
}

/// Assert `got` holds exactly the samples of `want`, each once, same label, same pixels.
pub fn assert_same_samples(
    want: &BTreeMap<String, (i64, Tensor, usize)>,
    got: &BTreeMap<String, (i64, Tensor, usize)>,
) {
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "sample keys differ");
    for (k, (label, view, n)) in got {
        assert_eq!(*n, 1, "sample {k} delivered {n} times");
        let (wl, wv, _) = &want[k];
        assert_eq!(label, wl, "label of {k}");
        assert!(view.equal(wv), "pixels of {k} differ");
    }
}
