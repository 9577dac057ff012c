//! Interoperability with Python `webdataset` (the venv at `.venv/`): our shards read by
//! `webdataset.WebDataset`, and shards written by `webdataset.ShardWriter` read by our
//! `ShardReader` and `Loader`. Skipped (with a message) when the venv or the module is missing.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dspnet_pipeline::augment::AugmentConfig;
use dspnet_pipeline::loader::{Loader, LoaderConfig, LoaderMode, LoaderSettings};
use dspnet_pipeline::shard::{open_shard_file, read_manifest};
use dspnet_pipeline::source::expand_pattern;

const CIFAR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/cifar10-jpg/train");

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if !py.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI runs the Python cross-checks: tools/setup.sh installs .venv");
        eprintln!("skipping: {} missing", py.display());
        return None;
    }
    let ok = Command::new(&py).args(["-c", "import webdataset"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI runs the Python cross-checks: tools/setup.sh installs .venv");
        eprintln!("skipping: python module webdataset missing in {}", py.display());
        return None;
    }
    assert!(Path::new(CIFAR).exists(), "{CIFAR} missing: the real photos live in ../shared/data beside the checkout");
    Some(py)
}

fn py_run(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// 2 classes x 15 CIFAR-10 JPEGs as symlinks.
fn subset() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for class in ["cat", "dog"] {
        fs::create_dir_all(d.path().join(class)).unwrap();
        for i in 0..15 {
            let name = format!("{i:04}.jpg");
            std::os::unix::fs::symlink(Path::new(CIFAR).join(class).join(&name), d.path().join(class).join(&name))
                .unwrap();
        }
    }
    d
}

#[test]
fn python_webdataset_reads_our_shards() {
    let Some(py) = python() else { return };
    let input = subset();
    let out = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_dspnet-shard"))
        .args([
            "--input",
            input.path().to_str().unwrap(),
            "--output",
            out.path().to_str().unwrap(),
            "--samples-per-shard",
            "8",
            "--seed",
            "2",
        ])
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let m = read_manifest(out.path()).unwrap();
    let urls: Vec<String> = m.shards.iter().map(|s| out.path().join(&s.name).to_string_lossy().to_string()).collect();
    // ours: key -> (cls, jpg hex, json)
    let mut ours = Vec::new();
    for u in &urls {
        for s in open_shard_file(u).unwrap() {
            let s = s.unwrap();
            ours.push(format!(
                "{} {} {}",
                s.key,
                String::from_utf8(s.files["cls"].clone()).unwrap(),
                s.files["jpg"].iter().map(|b| format!("{b:02x}")).collect::<String>()
            ));
        }
    }
    let script = r#"
import sys, webdataset as wds
ds = wds.WebDataset(sys.argv[1:], shardshuffle=False)
for s in ds:
    assert sorted(k for k in s if not k.startswith("__")) == ["cls", "jpg", "json"], list(s)
    print(s["__key__"], s["cls"].decode(), s["jpg"].hex())
"#;
    let mut args: Vec<&str> = urls.iter().map(|s| s.as_str()).collect();
    args.sort();
    let theirs: Vec<String> = py_run(&py, script, &args).lines().map(|l| l.to_string()).collect();
    assert_eq!(theirs.len(), 30);
    assert_eq!(theirs, ours);
}

#[test]
fn our_reader_and_loader_read_python_shards() {
    let Some(py) = python() else { return };
    let out = tempfile::tempdir().unwrap();
    let script = r#"
import sys, os, webdataset as wds
root, out = sys.argv[1], sys.argv[2]
with wds.ShardWriter(os.path.join(out, "py-%06d.tar"), maxcount=7, verbose=0) as w:
    for i in range(20):
        cls = i % 3
        name = ["cat", "dog", "frog"][cls]
        with open(os.path.join(root, name, "%04d.jpg" % i), "rb") as f:
            data = f.read()
        w.write({"__key__": "py%04d" % i, "jpg": data, "cls": cls})
"#;
    py_run(&py, script, &[CIFAR, out.path().to_str().unwrap()]);
    let shards = expand_pattern(&format!("{}/py-{{000000..000002}}.tar", out.path().display())).unwrap();
    assert_eq!(shards.len(), 3);
    let mut expected = BTreeMap::new();
    for i in 0..20usize {
        let name = ["cat", "dog", "frog"][i % 3];
        expected.insert(
            format!("py{i:04}"),
            (i % 3, fs::read(Path::new(CIFAR).join(name).join(format!("{i:04}.jpg"))).unwrap()),
        );
    }
    let mut keys = Vec::new();
    for s in &shards {
        for sample in open_shard_file(s).unwrap() {
            let sample = sample.unwrap();
            let (cls, bytes) = &expected[&sample.key];
            assert_eq!(sample.files["jpg"], *bytes);
            assert_eq!(sample.files["cls"], cls.to_string().into_bytes());
            keys.push(sample.key);
        }
    }
    assert_eq!(keys, expected.keys().cloned().collect::<Vec<_>>());
    // Loader in eval mode: 32x32 centre view (no resampling), labels from .cls, file order kept.
    let cfg = LoaderConfig {
        batch_size: 8,
        shuffle_buffer: 0,
        shard_shuffle: false,
        readers: 1,
        drop_last: false,
        seed: 0,
        strict_data: true,
    };
    let aug = AugmentConfig::byol_small(32, 3);
    let loader = Loader::new(shards, LoaderSettings::new(cfg, aug), LoaderMode::Eval, 0, 1, tch::Device::Cpu).unwrap();
    let mut got = Vec::new();
    for b in loader.epoch(0).unwrap() {
        let b = b.unwrap();
        assert_eq!(b.view_a.size()[1..], [3, 32, 32]);
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        got.extend(b.keys.into_iter().zip(labels));
    }
    let want: Vec<(String, i64)> = expected.iter().map(|(k, (c, _))| (k.clone(), *c as i64)).collect();
    assert_eq!(got, want);
}
