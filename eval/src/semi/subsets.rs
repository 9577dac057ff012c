//! The labelled subsets of the semi-supervised protocol: class-balanced fractions and subset
//! files, and the two passes over the training shards that find and keep their images.

use crate::error::EvalError;
use dspnet_pipeline::loader::Loader;
use dspnet_pipeline::mix_seed;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tch::{Device, Tensor};

/// Images kept per class for a label fraction: `floor(fraction · n_c)`, at least 1, at most
/// `n_c`. The floor is taken of `fraction · n_c + 1e-9` so binary rounding cannot lose an image
/// (0.29 · 100 is 28.999999999999996 in f64; the count is 29).
pub fn per_class_count(n_c: usize, fraction: f64) -> usize {
    ((fraction * n_c as f64 + 1e-9).floor() as usize).clamp(1, n_c.max(1))
}

/// Class-balanced subset of a labelled pool: indices (ascending) into `keys`/`labels`.
///
/// For every class `c` with `n_c` samples, [`per_class_count`]`(n_c, fraction)` samples are
/// drawn: the class's samples are sorted by key (so the draw does not depend on shard order),
/// shuffled with `ChaCha8Rng(mix_seed([seed, c]))` and the first ones kept. Because the per-class
/// order depends on the seed and the class only, for one seed the subset of a smaller fraction
/// is contained in the subset of a larger one (the 1% subset lies within the 10% subset).
///
/// Errors: [`EvalError::Config`] for a fraction outside (0, 1] or `keys`/`labels` of different
/// lengths.
pub fn balanced_subset(keys: &[String], labels: &[i64], fraction: f64, seed: u64) -> Result<Vec<usize>, EvalError> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(EvalError::option(
            "--label-fractions",
            format!("--label-fractions {fraction}: a label fraction must be in (0, 1]"),
        ));
    }
    if keys.len() != labels.len() {
        return Err(EvalError::Subset {
            file: None,
            message: format!("{} keys but {} labels", keys.len(), labels.len()),
        });
    }
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &c) in labels.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut out = Vec::new();
    for (c, mut idx) in by_class {
        idx.sort_by(|&a, &b| keys[a].cmp(&keys[b]).then(a.cmp(&b)));
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(mix_seed(&[seed, c as u64])));
        let k = per_class_count(idx.len(), fraction);
        out.extend_from_slice(&idx[..k]);
    }
    out.sort_unstable();
    Ok(out)
}

/// A subset read from a file by [`read_subset_file`].
#[derive(Clone, Debug, PartialEq)]
pub struct SubsetFile {
    /// Indices (ascending) into the pool's keys.
    pub indices: Vec<usize>,
    /// sha256 of the file's bytes, lowercase hex.
    pub sha256: String,
}

fn strip_image_ext(s: &str) -> &str {
    match s.rsplit_once('.') {
        Some((stem, ext)) if ["jpg", "jpeg", "png", "webp"].contains(&ext.to_ascii_lowercase().as_str()) => stem,
        _ => s,
    }
}

/// Reads a subset file (one sample key per line, like the public ImageNet 1%/10% lists; blank
/// lines and lines starting with `#` ignored, repeated lines counted once) against the keys of the
/// labelled training pool.
///
/// A line matches, in this order: a key exactly; the key it becomes without an image extension
/// (`.jpg`, `.jpeg`, `.png`, `.webp`, any case) and sanitised as `dspnet-shard` does (characters
/// other than ASCII letters, digits, `_`, `-` become `_`); or the ONE key ending in `_` + that
/// (dspnet-shard names ImageFolder samples `{class}_{stem}`, so the ImageNet list's
/// `n01440764_10026.JPEG` finds `n01440764_n01440764_10026`). Several pool samples with the same
/// key are all taken.
///
/// Errors: [`EvalError::Io`] when the file cannot be read; [`EvalError::Config`] naming the
/// file, line and key for a key that is not in the pool, a suffix that matches several keys, or
/// a file without any key.
pub fn read_subset_file(path: &Path, keys: &[String]) -> Result<SubsetFile, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::File(dspnet_core::PathError::new(path, e)))?;
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let text = String::from_utf8_lossy(&bytes);
    let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        exact.entry(k.as_str()).or_default().push(i);
    }
    let mut suffix: Option<HashMap<&str, Vec<&str>>> = None;
    let mut chosen: HashSet<usize> = HashSet::new();
    let mut lines = 0usize;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        lines += 1;
        let plain = dspnet_pipeline::dataset::sanitize_key(strip_image_ext(line));
        let hit = if let Some(v) = exact.get(line) {
            v.clone()
        } else if let Some(v) = exact.get(plain.as_str()) {
            v.clone()
        } else {
            let map = suffix.get_or_insert_with(|| {
                let mut m: HashMap<&str, Vec<&str>> = HashMap::new();
                for &k in exact.keys() {
                    for (p, _) in k.match_indices('_') {
                        m.entry(&k[p + 1..]).or_default().push(k);
                    }
                }
                m
            });
            match map.get(plain.as_str()).map(Vec::as_slice) {
                Some([k]) => exact[k].clone(),
                Some(many) => {
                    let mut many = many.to_vec();
                    many.sort_unstable();
                    return Err(EvalError::Subset { file: Some(path.to_path_buf()), message: format!(
                        "--subset-file {}: line {}: key {line} matches several training samples ({}); write the full key",
                        path.display(),
                        n + 1,
                        many.iter().take(3).copied().collect::<Vec<_>>().join(", ")
                    ) });
                }
                None => {
                    return Err(EvalError::Subset { file: Some(path.to_path_buf()), message: format!(
                        "--subset-file {}: line {}: key {line} is not a labelled sample of the training shards (their keys look like {})",
                        path.display(),
                        n + 1,
                        keys.first().map(String::as_str).unwrap_or("<none>")
                    ) })
                }
            }
        };
        chosen.extend(hit);
    }
    if lines == 0 {
        return Err(EvalError::Subset {
            file: Some(path.to_path_buf()),
            message: format!("--subset-file {}: no key in the file (one sample key per line)", path.display()),
        });
    }
    let mut indices: Vec<usize> = chosen.into_iter().collect();
    indices.sort_unstable();
    Ok(SubsetFile { indices, sha256 })
}

/// Keys and labels of every labelled sample the evaluation loader delivers, in its order.
pub struct LabelledPool {
    pub keys: Vec<String>,
    /// Class indices, `>= 0`.
    pub labels: Vec<i64>,
}

/// First pass: the keys and labels of every labelled training sample (images are decoded by the
/// loader and dropped). Errors: loader errors; no labelled sample.
pub fn scan_pool(loader: &Loader) -> Result<LabelledPool, EvalError> {
    let mut keys = Vec::new();
    let mut labels = Vec::new();
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let l: Vec<i64> = Vec::<i64>::try_from(batch.labels.to_device(Device::Cpu))?;
        keys.extend(batch.keys);
        labels.extend(l);
    }
    if keys.is_empty() {
        return Err(EvalError::Subset {
            file: None,
            message: "the training shards gave no labelled image for protocol semi".into(),
        });
    }
    Ok(LabelledPool { keys, labels })
}

/// Second pass: the un-augmented evaluation views of the pool samples at `wanted` (ascending,
/// positions of [`scan_pool`]'s order) as `[wanted.len(), C, S, S]` f32 on the CPU, rows in the
/// order of `wanted`. Errors: loader errors, or shards that changed between the passes (a key
/// at a wanted position differs from the first pass).
pub fn gather_views(loader: &Loader, pool: &LabelledPool, wanted: &[usize]) -> Result<Tensor, EvalError> {
    let mut rows = Vec::with_capacity(wanted.len());
    let mut next = 0usize;
    let mut pos = 0usize;
    for batch in loader.epoch(0)? {
        let batch = batch?;
        let n = batch.keys.len();
        let mut take = Vec::new();
        while next < wanted.len() && wanted[next] < pos + n {
            let i = wanted[next] - pos;
            if pool.keys.get(wanted[next]) != Some(&batch.keys[i]) {
                return Err(EvalError::Subset {
                    file: None,
                    message: format!(
                        "the training shards changed while reading them (sample {} was {:?}, now {})",
                        wanted[next],
                        pool.keys.get(wanted[next]),
                        batch.keys[i]
                    ),
                });
            }
            take.push(i as i64);
            next += 1;
        }
        if !take.is_empty() {
            rows.push(batch.view_a.to_device(Device::Cpu).index_select(0, &Tensor::from_slice(&take)));
        }
        pos += n;
        if next == wanted.len() {
            break;
        }
    }
    if next < wanted.len() {
        return Err(EvalError::Subset {
            file: None,
            message: "the training shards changed while reading them (fewer samples than before)".into(),
        });
    }
    Ok(Tensor::cat(&rows, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(sizes: &[usize]) -> (Vec<String>, Vec<i64>) {
        // class c has sizes[c] samples with keys "c{c}_{i:03}", interleaved like a shard would be
        let mut keys = Vec::new();
        let mut labels = Vec::new();
        let max = *sizes.iter().max().unwrap();
        for i in 0..max {
            for (c, &n) in sizes.iter().enumerate() {
                if i < n {
                    keys.push(format!("c{c}_{i:03}"));
                    labels.push(c as i64);
                }
            }
        }
        (keys, labels)
    }

    fn counts(labels: &[i64], idx: &[usize], classes: usize) -> Vec<usize> {
        let mut n = vec![0; classes];
        for &i in idx {
            n[labels[i] as usize] += 1;
        }
        n
    }

    #[test]
    fn per_class_counts_by_hand() {
        // floor(f·n), at least 1, at most n; 0.29·100 must give 29 despite binary rounding
        assert_eq!(per_class_count(100, 0.29), 29);
        assert_eq!(per_class_count(5000, 0.01), 50);
        assert_eq!(per_class_count(5000, 0.1), 500);
        assert_eq!(per_class_count(1300, 0.01), 13);
        assert_eq!(per_class_count(99, 0.1), 9);
        assert_eq!(per_class_count(7, 0.01), 1);
        assert_eq!(per_class_count(3, 1.0), 3);
    }

    #[test]
    fn balanced_subset_counts_by_hand() {
        // class sizes 10, 25, 3, 40
        let (keys, labels) = pool(&[10, 25, 3, 40]);
        // 10%: floor(1.0)=1, floor(2.5)=2, floor(0.3)=0→1, floor(4.0)=4 → 8 images
        let s = balanced_subset(&keys, &labels, 0.1, 7).unwrap();
        assert_eq!(counts(&labels, &s, 4), vec![1, 2, 1, 4]);
        assert_eq!(s.len(), 8);
        // 50%: 5, 12, 1, 20
        let s = balanced_subset(&keys, &labels, 0.5, 7).unwrap();
        assert_eq!(counts(&labels, &s, 4), vec![5, 12, 1, 20]);
        // 100%: everything
        let s = balanced_subset(&keys, &labels, 1.0, 7).unwrap();
        assert_eq!(s, (0..78).collect::<Vec<_>>());
        // ascending, no repeats
        let s = balanced_subset(&keys, &labels, 0.3, 1).unwrap();
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(counts(&labels, &s, 4), vec![3, 7, 1, 12]);
    }

    #[test]
    fn balanced_subset_is_reproducible_seed_dependent_nested_and_order_free() {
        let (keys, labels) = pool(&[50, 50, 50]);
        let a = balanced_subset(&keys, &labels, 0.1, 3).unwrap();
        assert_eq!(a, balanced_subset(&keys, &labels, 0.1, 3).unwrap());
        let b = balanced_subset(&keys, &labels, 0.1, 4).unwrap();
        assert_ne!(a, b, "different seeds draw different subsets");
        assert_eq!(counts(&labels, &b, 3), vec![5, 5, 5]);
        // the 10% subset of a seed contains its 2% subset
        let small = balanced_subset(&keys, &labels, 0.02, 3).unwrap();
        assert_eq!(counts(&labels, &small, 3), vec![1, 1, 1]);
        assert!(small.iter().all(|i| a.contains(i)), "{small:?} not within {a:?}");
        // the same samples in another order (other sharding) give the same keys
        let rev_keys: Vec<String> = keys.iter().rev().cloned().collect();
        let rev_labels: Vec<i64> = labels.iter().rev().copied().collect();
        let r = balanced_subset(&rev_keys, &rev_labels, 0.1, 3).unwrap();
        let mut ka: Vec<&String> = a.iter().map(|&i| &keys[i]).collect();
        let mut kr: Vec<&String> = r.iter().map(|&i| &rev_keys[i]).collect();
        ka.sort();
        kr.sort();
        assert_eq!(ka, kr);
        assert!(balanced_subset(&keys, &labels, 0.0, 3).is_err());
        assert!(balanced_subset(&keys, &labels, 1.5, 3).is_err());
    }

    #[test]
    fn subset_file_matches_keys_and_names_unknown_ones() {
        let keys: Vec<String> = ["airplane_0000", "airplane_0001", "n01440764_n01440764_10026", "cat_0001", "dog_0001"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("list.txt");
        // exact, extension + sanitising, ImageNet-style suffix, a comment, a blank line, a repeat
        std::fs::write(&f, "# my subset\nairplane_0000\n\nairplane_0001.jpg\nn01440764_10026.JPEG\nairplane_0000\n")
            .unwrap();
        let s = read_subset_file(&f, &keys).unwrap();
        assert_eq!(s.indices, vec![0, 1, 2]);
        // sha256 of the bytes, computed independently
        let expect = format!("{:x}", Sha256::digest(std::fs::read(&f).unwrap()));
        assert_eq!(s.sha256, expect);
        assert_eq!(s.sha256.len(), 64);
        std::fs::write(&f, "airplane_0000\nairplane_0002\n").unwrap();
        let e = read_subset_file(&f, &keys).unwrap_err().to_string();
        assert!(
            e.contains("list.txt") && e.contains("line 2") && e.contains("airplane_0002") && !e.contains('\n'),
            "{e}"
        );
        // "0001" ends several keys: ambiguous
        std::fs::write(&f, "0001\n").unwrap();
        let e = read_subset_file(&f, &keys).unwrap_err().to_string();
        assert!(e.contains("several"), "{e}");
        std::fs::write(&f, "\n# nothing\n").unwrap();
        assert!(read_subset_file(&f, &keys).is_err());
    }
}
