//! The comparison's own data when no shards are given: a class-balanced, seeded subset of an
//! ImageFolder dataset (`SOURCE/{train,test}/<class>/*.jpg`, e.g. ../shared/data/cifar10-jpg)
//! packed into WebDataset shards in `OUT/data/{train,test}` with a manifest, exactly as
//! `dspnet-shard --format imagefolder` packs a folder (original bytes, `KEY.cls`, `KEY.json`).
//! A folder whose `subset.json` records the same source, counts and seed is reused.

use crate::error::{CompareError, Result};
use crate::plan::DataSection;
use dspnet_pipeline::dataset::{load_folder_image, scan_image_folder, seeded_shuffle};
use dspnet_pipeline::shard::{read_manifest, ShardWriter, ShardWriterConfig};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `per_class` items of every class of `items` (`(path, class index)`), drawn reproducibly: each
/// class's list (in the given order) is shuffled with seed `seed + class index` and its first
/// `per_class` kept; the classes are then interleaved by one more shuffle with `seed`, so shards
/// mix the classes. Same inputs, same output.
///
/// Errors: a class with fewer than `per_class` items (message names it and both counts).
pub fn select_balanced(
    items: &[(PathBuf, i64)],
    per_class: usize,
    seed: u64,
) -> std::result::Result<Vec<(PathBuf, i64)>, String> {
    let mut by_class: BTreeMap<i64, Vec<PathBuf>> = BTreeMap::new();
    for (p, c) in items {
        by_class.entry(*c).or_default().push(p.clone());
    }
    let mut out = Vec::with_capacity(per_class * by_class.len());
    for (c, mut paths) in by_class {
        if paths.len() < per_class {
            return Err(format!("class {c} has {} images, fewer than the {per_class} asked for", paths.len()));
        }
        seeded_shuffle(&mut paths, seed.wrapping_add(c as u64));
        out.extend(paths.into_iter().take(per_class).map(|p| (p, c)));
    }
    seeded_shuffle(&mut out, seed);
    Ok(out)
}

/// Shards `per_class` images per class of `SOURCE/split` into `out/split` (reused when its
/// `subset.json` matches). Returns the shard folder.
///
/// Errors: the source folder is missing (one line naming it and how to fix it), a class with too
/// few images, unreadable images, unwritable output.
pub fn prepare_split(data: &DataSection, split: &str, per_class: usize, out: &Path) -> Result<PathBuf> {
    let source = Path::new(&data.source).join(split);
    if !source.is_dir() {
        return Err(CompareError::option(
            "compare.data.source",
            format!(
            "compare.data.source: {} is not a folder (relative paths are relative to the current folder: run from the checkout root), or pass --train-shards and --test-shards",
            source.display()
        ),
        ));
    }
    let dir = out.join(split);
    let abs = std::path::absolute(&source).unwrap_or(source.clone());
    let want = json!({"source": abs.to_string_lossy(), "per_class": per_class, "seed": data.seed, "samples_per_shard": data.samples_per_shard});
    let record = dir.join("subset.json");
    if let (Ok(bytes), Ok(_)) = (std::fs::read(&record), read_manifest(&dir)) {
        if serde_json::from_slice::<serde_json::Value>(&bytes).ok().as_ref() == Some(&want) {
            tracing::info!(folder = %dir.display(), "reusing the sharded subset");
            return Ok(dir);
        }
    }
    let (classes, items) = scan_image_folder(&source)?;
    let picked = select_balanced(&items, per_class, data.seed).map_err(|e| {
        let what = if split == "train" { "train_per_class" } else { "test_per_class" };
        CompareError::option(
            format!("compare.data.{what}"),
            format!("compare.data.{what} = {per_class}: in {}, {e}; lower it", source.display()),
        )
    })?;
    let _ = std::fs::remove_file(&record);
    let mut writer = ShardWriter::new(ShardWriterConfig {
        output_dir: dir.clone(),
        prefix: split.to_string(),
        samples_per_shard: Some(data.samples_per_shard.max(1)),
        max_shard_bytes: None,
        zstd: false,
        overwrite: true,
    })?;
    let mut seen = dspnet_pipeline::dataset::UniqueKeys::default();
    for (path, class) in &picked {
        let mut img = load_folder_image(&source, path, *class, &classes)?;
        img.key = seen.make_unique(img.key);
        writer.write(&img.to_sample())?;
    }
    let manifest = writer.finish(&classes)?;
    dspnet_core::fs::write_atomic(&dir.join("subset.json"), &serde_json::to_vec_pretty(&want).expect("json"))?;
    tracing::info!(images = manifest.total_samples, folder = %dir.display(), "sharded the {split} subset");
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<(PathBuf, i64)> {
        // class 0: 5 images, class 1: 4, class 2: 6
        let mut v = Vec::new();
        for (c, n) in [(0i64, 5), (1, 4), (2, 6)] {
            for i in 0..n {
                v.push((PathBuf::from(format!("c{c}/{i}.jpg")), c));
            }
        }
        v
    }

    #[test]
    fn subset_is_class_balanced_and_reproducible() {
        let a = select_balanced(&items(), 3, 7).unwrap();
        assert_eq!(a.len(), 9);
        for c in 0..3 {
            let picked: Vec<&PathBuf> = a.iter().filter(|(_, k)| *k == c).map(|(p, _)| p).collect();
            assert_eq!(picked.len(), 3, "class {c}");
            // every pick belongs to its class folder and none repeats
            assert!(picked.iter().all(|p| p.starts_with(format!("c{c}"))));
            let mut u = picked.clone();
            u.sort();
            u.dedup();
            assert_eq!(u.len(), 3);
        }
        assert_eq!(a, select_balanced(&items(), 3, 7).unwrap());
        // another seed draws another subset or order
        assert!((0..5).any(|s| select_balanced(&items(), 3, s).unwrap() != a));
        // 4 is the most class 1 can give; 5 is refused naming the class
        assert_eq!(select_balanced(&items(), 4, 0).unwrap().len(), 12);
        let e = select_balanced(&items(), 5, 0).unwrap_err();
        assert!(e.contains("class 1 has 4 images"), "{e}");
    }
}
