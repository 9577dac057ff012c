//! `dspnet-pipeline`: WebDataset shards and the asynchronous streaming loader that builds the
//! BYOL twin views for DSPNet.
//!
//! | module | what it holds |
//! |---|---|
//! | [`shard`] | deterministic tar / tar.zst shard writer, `manifest.json`, streaming shard reader |
//! | [`dataset`] | inputs of `dspnet-shard` (ImageNet-style class folders, Fashion-MNIST IDX, the ILSVRC2012 archives), checked and packed into shards on every core |
//! | [`image`] | decoded images, crop-box geometry, decoding (libjpeg-turbo window decoder, `image` crate) |
//! | [`augment`] | BYOL twin-view augmentations and the evaluation transform |
//! | [`source`] | shard patterns; the [`source::ShardSource`] contract: local and remote shards ([`source::remote`]) |
//! | [`loader`] | tokio reader streams → shuffle buffer → crossbeam worker pool → batches of `tch` tensors |
//! | [`error`] | [`PipelineError`] |
//!
//! Dependencies point down the table's layers: `loader` uses `source`, `augment` and `shard`;
//! `augment` uses `image`; `source` uses `shard`; `dataset` uses `shard` and `image`; `image` and
//! `shard` use nothing else of the crate.
pub mod augment;
pub mod dataset;
pub mod error;
pub mod image;
pub mod loader;
pub mod shard;
pub mod source;

pub use crate::image::Decoded;
pub use augment::{AugmentConfig, EvalTransform, TwinViewTransform, ViewAugment};
pub use error::PipelineError;
pub use loader::{
    Batch, EpochIter, Loader, LoaderConfig, LoaderMode, LoaderSettings, LoaderStats, LoaderThreads, SkipReason,
};
pub use shard::{Manifest, RawSample, ShardWriter, ShardWriterConfig};
pub use source::remote::RemoteConfig;
pub use source::{expand_pattern, manifest_beside, ShardSource};

/// Result alias used throughout the crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// SplitMix64 finaliser: a strong 64-bit mixer used to derive independent RNG seeds.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mix a list of words into one seed (order-sensitive). Used for (seed, epoch, position) seeds.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut h = 0x6A09_E667_F3BC_C909u64;
    for &p in parts {
        h = splitmix64(h ^ splitmix64(p));
    }
    h
}

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::shard::{RawSample, ShardWriter, ShardWriterConfig};
    use std::path::Path;

    /// A `w`×`h` RGB PNG whose pixels are derived from `v`.
    pub fn png(w: u32, h: u32, v: u8) -> Vec<u8> {
        let data: Vec<u8> = (0..w * h * 3).map(|i| v.wrapping_add((i % 251) as u8)).collect();
        let mut out = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut out),
            &data,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        out
    }

    pub fn writer_cfg(dir: &Path, prefix: &str, per_shard: usize) -> ShardWriterConfig {
        ShardWriterConfig {
            output_dir: dir.to_path_buf(),
            prefix: prefix.into(),
            samples_per_shard: Some(per_shard),
            max_shard_bytes: None,
            zstd: false,
            overwrite: false,
        }
    }

    /// Write `n` labelled 8x8 PNG samples `s00000..` in shards of `per_shard`; returns shard paths.
    pub fn image_shards(dir: &Path, n: usize, per_shard: usize) -> Vec<String> {
        let mut w = ShardWriter::new(writer_cfg(dir, "t", per_shard)).unwrap();
        for i in 0..n {
            let s =
                RawSample::new(format!("s{i:05}")).with("png", png(8, 8, i as u8)).with("cls", (i % 10).to_string());
            w.write(&s).unwrap();
        }
        let m = w.finish(&[]).unwrap();
        m.shards.iter().map(|s| dir.join(&s.name).to_string_lossy().to_string()).collect()
    }
}
