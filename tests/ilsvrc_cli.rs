//! End-to-end tests of `dspnet-shard --format ilsvrc` on archives in the official ImageNet
//! layouts, built from the real photos in ../shared/data (COCO128 and CIFAR-10):
//! * a training tar of per-synset tars `nXXXXXXXX.tar` holding `nXXXXXXXX_N.JPEG`, with the
//!   ImageNet oddities (a PNG named `.JPEG`, a CMYK JPEG, a grayscale JPEG) and bad files (empty,
//!   truncated, not an image);
//! * a flat validation tar `ILSVRC2012_val_000000NN.JPEG`, labelled by a devkit tar.gz (meta.mat
//!   written by scipy.io.savemat, an independent MAT-file writer, plus the ground truth), by
//!   `LOC_val_solution.csv` and by `filename wnid` lines.
//!
//! The CMYK and grayscale JPEGs, meta.mat and the reference decodes come from the venv's Python
//! (PIL, scipy): skipped with a message when the venv is missing, except under CI.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dspnet_pipeline::augment::AugmentConfig;
use dspnet_pipeline::image::decode_image;
use dspnet_pipeline::loader::{Loader, LoaderConfig, LoaderMode, LoaderSettings};
use dspnet_pipeline::shard::{open_shard_file, read_manifest, RawSample};
use dspnet_pipeline::source::expand_pattern;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");
/// Real-looking WNIDs (tench, goldfish, great white shark), given to the archive out of order.
const WNIDS: [&str; 3] = ["n01484850", "n01440764", "n01443537"];
/// The bad training files: (member name, what is wrong).
const BAD: [(&str, &str); 3] = [
    ("n01440764_99001.JPEG", "empty file"),
    ("n01443537_99002.JPEG", "truncated JPEG"),
    ("n01484850_99003.JPEG", "not a JPEG, PNG or WebP"),
];
/// The oddities kept: a PNG named .JPEG, a CMYK JPEG, a grayscale JPEG.
const ODD: [&str; 3] = ["n01440764_90001.JPEG", "n01443537_90002.JPEG", "n01484850_90003.JPEG"];

const FIXTURE_PY: &str = r#"
import io, sys
import numpy as np, scipy.io
from PIL import Image
out, photo, wnids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
im = Image.open(photo)
im.convert("CMYK").save(out + "/cmyk.jpg", "JPEG", quality=92)
im.convert("L").save(out + "/gray.jpg", "JPEG", quality=92)
assert Image.open(out + "/cmyk.jpg").mode == "CMYK" and Image.open(out + "/gray.jpg").mode == "L"
# the devkit's meta.mat: leaf synsets with ILSVRC2012_IDs 1..n, then an inner node
fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
s = np.zeros((len(wnids) + 1, 1), dtype=[(f, "O") for f in fields])
for i, w in enumerate(wnids):
    s[i, 0] = (float(i + 1), w, "thing %d" % i, "a thing", 0.0, np.zeros((1, 0)), 0.0, 1300.0)
s[len(wnids), 0] = (float(len(wnids) + 1), "n00001740", "entity", "everything", float(len(wnids)),
                    np.arange(1, len(wnids) + 1, dtype=float), 1.0, 0.0)
scipy.io.savemat(out + "/meta.mat", {"synsets": s}, do_compression=True)
m = scipy.io.loadmat(out + "/meta.mat", squeeze_me=True)["synsets"]
assert [str(x) for x in m["WNID"]] == wnids + ["n00001740"]
"#;

/// PIL's RGB decode of each file, written beside it as `FILE.rgb`; prints `W H` per file.
const DECODE_PY: &str = r#"
import sys
from PIL import Image
for f in sys.argv[1:]:
    im = Image.open(f).convert("RGB")
    open(f + ".rgb", "wb").write(im.tobytes())
    print(im.size[0], im.size[1])
"#;

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import PIL, scipy.io, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the ILSVRC tests: tools/setup.sh installs PIL and scipy in .venv"
        );
        eprintln!("skipping: {} with PIL and scipy missing (run tools/setup.sh)", py.display());
        return None;
    }
    assert!(Path::new(SHARED).join("coco128").is_dir(), "{SHARED} missing: the real photos live in ../shared/data");
    Some(py)
}

fn py_run(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn tar(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_335_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn tar_gz(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar(members)).unwrap();
    gz.finish().unwrap()
}

fn png_of(jpeg: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(jpeg).unwrap();
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

/// The archives and label files, and what they hold.
struct Fixture {
    dir: tempfile::TempDir,
    py: PathBuf,
    /// Training member name → bytes (kept and bad).
    train: BTreeMap<String, Vec<u8>>,
    /// Validation file stem → (bytes, WNID).
    val: BTreeMap<String, (Vec<u8>, String)>,
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn fixture() -> Option<Fixture> {
    let py = python()?;
    let dir = tempfile::tempdir().unwrap();
    let coco = sorted_files(&Path::new(SHARED).join("coco128/images/val2017"), "jpg");
    let cifar = sorted_files(&Path::new(SHARED).join("cifar10-jpg/train/ship"), "jpg");
    let photos: Vec<Vec<u8>> = coco.iter().take(20).map(|p| fs::read(p).unwrap()).collect();
    let leaf: Vec<&str> = vec![WNIDS[1], WNIDS[2], WNIDS[0]]; // ILSVRC2012_IDs 1, 2, 3
    py_run(&py, FIXTURE_PY, &[dir.path().to_str().unwrap(), coco[20].to_str().unwrap(), &leaf.join(",")]);
    let cmyk = fs::read(dir.path().join("cmyk.jpg")).unwrap();
    let gray = fs::read(dir.path().join("gray.jpg")).unwrap();

    // training archive: 4 photos per synset, one oddity and one bad file each; members and
    // synsets in reverse order (the index sorts them)
    let mut train = BTreeMap::new();
    let mut synset_tars = Vec::new();
    for (s, wnid) in WNIDS.iter().enumerate() {
        let mut members: Vec<(String, Vec<u8>)> =
            (0..4).map(|j| (format!("{wnid}_{}.JPEG", 1000 + j), photos[4 * s + j].clone())).collect();
        let odd = ODD.iter().find(|n| n.starts_with(wnid)).unwrap().to_string();
        let odd_bytes = match s {
            0 => gray.clone(),
            1 => png_of(&photos[16]),
            _ => cmyk.clone(),
        };
        members.push((odd, odd_bytes));
        let (bad, _) = BAD.iter().find(|(n, _)| n.starts_with(wnid)).unwrap();
        let bad_bytes = match s {
            0 => b"<html>404 Not Found</html>".to_vec(),
            1 => Vec::new(),
            _ => photos[17][..photos[17].len() / 2].to_vec(),
        };
        members.push((bad.to_string(), bad_bytes));
        members.reverse();
        train.extend(members.iter().cloned());
        synset_tars.push((format!("{wnid}.tar"), tar(&members)));
    }
    fs::write(dir.path().join("ILSVRC2012_img_train.tar"), tar(&synset_tars)).unwrap();

    // validation archive: 8 COCO photos, 2 CIFAR-10 photos, a truncated file
    let mut val = BTreeMap::new();
    let mut files: Vec<Vec<u8>> = photos[..8].to_vec();
    files.extend(cifar.iter().take(2).map(|p| fs::read(p).unwrap()));
    files.push(photos[9][..photos[9].len() - 4000].to_vec());
    for (k, bytes) in files.into_iter().enumerate() {
        val.insert(format!("ILSVRC2012_val_{:08}", k + 1), (bytes, WNIDS[(k * 7) % 3].to_string()));
    }
    let members: Vec<(String, Vec<u8>)> =
        val.iter().map(|(stem, (b, _))| (format!("{stem}.JPEG"), b.clone())).collect();
    fs::write(dir.path().join("ILSVRC2012_img_val.tar"), tar(&members)).unwrap();

    // the three label formats
    let id_of = |w: &str| leaf.iter().position(|l| *l == w).unwrap() + 1;
    let truth: String = val.values().map(|(_, w)| format!("{}\n", id_of(w))).collect();
    let meta = fs::read(dir.path().join("meta.mat")).unwrap();
    let devkit = tar_gz(&[
        ("ILSVRC2012_devkit_t12/COPYING".into(), b"devkit".to_vec()),
        ("ILSVRC2012_devkit_t12/data/meta.mat".into(), meta),
        ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt".into(), truth.into_bytes()),
    ]);
    fs::write(dir.path().join("ILSVRC2012_devkit_t12.tar.gz"), devkit).unwrap();
    let mut csv = String::from("ImageId,PredictionString\n");
    for (stem, (_, w)) in val.iter().rev() {
        csv += &format!("{stem},{w} 10 20 300 400 {w} 5 5 50 50\n");
    }
    fs::write(dir.path().join("LOC_val_solution.csv"), csv).unwrap();
    let list: String = val.iter().map(|(stem, (_, w))| format!("{stem}.JPEG {w}\n")).collect();
    fs::write(dir.path().join("val_labels.txt"), list).unwrap();
    Some(Fixture { dir, py, train, val })
}

fn shard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dspnet-shard")).args(args).output().expect("run dspnet-shard")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{err}");
}

/// Every sample of the shards of `dir` (in shard order) and the shard files' bytes.
fn samples(dir: &Path) -> (Vec<RawSample>, Vec<(String, Vec<u8>)>) {
    let m = read_manifest(dir).unwrap();
    let mut out = Vec::new();
    let mut files = Vec::new();
    for s in &m.shards {
        out.extend(open_shard_file(dir.join(&s.name)).unwrap().map(|r| r.unwrap()));
        files.push((s.name.clone(), fs::read(dir.join(&s.name)).unwrap()));
    }
    files.push(("manifest.json".into(), fs::read(dir.join("manifest.json")).unwrap()));
    (out, files)
}

fn image_member(s: &RawSample) -> (&str, &Vec<u8>) {
    s.files.iter().find(|(e, _)| ["jpg", "png", "webp"].contains(&e.as_str())).map(|(e, b)| (e.as_str(), b)).unwrap()
}

/// Every sample through the loader (strict: any sample it cannot decode is an error), in Train
/// and Eval mode, from the shards a quoted glob names. Returns the keys seen in Eval mode.
fn load_all(dir: &Path, prefix: &str) -> Vec<String> {
    let shards = expand_pattern(&format!("{}/{prefix}-*.tar", dir.display())).unwrap();
    let mut keys = Vec::new();
    for mode in [LoaderMode::Train, LoaderMode::Eval] {
        let cfg = LoaderConfig { batch_size: 4, drop_last: false, strict_data: true, ..LoaderConfig::default() };
        let loader = Loader::new(
            shards.clone(),
            LoaderSettings::new(cfg, AugmentConfig::byol_small(32, 3)),
            mode,
            0,
            1,
            tch::Device::Cpu,
        )
        .unwrap();
        let mut n = Vec::new();
        for b in loader.epoch(0).unwrap() {
            n.extend(b.unwrap().keys);
        }
        assert_eq!(loader.stats().skipped_total(), 0);
        if mode == LoaderMode::Eval {
            keys = n;
        }
    }
    keys.sort();
    keys
}

#[test]
fn training_archive_keys_classes_oddities_and_bad_images() {
    let Some(fx) = fixture() else { return };
    let archive = fx.path("ILSVRC2012_img_train.tar");
    let out = fx.path("train");
    let stdout = ok(&shard(&[
        "--format",
        "ilsvrc",
        "--input",
        p(&archive),
        "--output",
        p(&out),
        "--samples-per-shard",
        "4",
        "--seed",
        "3",
    ]));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("15 samples, 4 shards") && lines[0].contains("3 classes"), "{stdout}");
    assert!(lines[1].contains("skipped 3 unusable image(s)") && lines[1].contains("manifest.json"), "{stdout}");
    for (name, why) in BAD {
        assert!(lines[2..].iter().any(|l| l.trim_start().starts_with(&format!("{name}: {why}"))), "{name}: {stdout}");
    }
    let m = read_manifest(&out).unwrap();
    let mut sorted = WNIDS.map(String::from).to_vec();
    sorted.sort();
    assert_eq!(m.class_names, sorted, "classes are the WNIDs in sorted order");
    assert_eq!((m.total_samples, m.skipped_total), (15, 3));
    let mut skipped: Vec<(&str, &str)> = m.skipped.iter().map(|s| (s.name.as_str(), s.reason.as_str())).collect();
    skipped.sort();
    for ((name, reason), (bad, why)) in skipped.iter().zip(BAD) {
        assert!(*name == bad && reason.starts_with(why), "{name}: {reason}");
    }

    let (got, files) = samples(&out);
    assert_eq!(got.len(), 15);
    for s in &got {
        let name = format!("{}.JPEG", s.key);
        let original = &fx.train[&name];
        let wnid = &s.key[..9];
        let (ext, bytes) = image_member(s);
        assert_eq!(bytes, original, "{name}: bytes stored as downloaded");
        assert_eq!(ext, if name == ODD[0] { "png" } else { "jpg" }, "{name}");
        assert_eq!(s.files["cls"], sorted.iter().position(|w| w == wnid).unwrap().to_string().into_bytes());
        let meta: serde_json::Value = serde_json::from_slice(&s.files["json"]).unwrap();
        assert_eq!((meta["class"].as_str(), meta["source"].as_str()), (Some(wnid), Some(name.as_str())));
    }
    // keys are the original stems, so the public 1 % / 10 % lists (n01440764_10026.JPEG) match
    let keys: Vec<&str> = got.iter().map(|s| s.key.as_str()).collect();
    assert!(keys.contains(&"n01440764_1000") && keys.contains(&"n01484850_90003"));

    // the same bytes on 1 or 5 threads, and with --verify full (every kept image decodes)
    for extra in [&["--threads", "1"][..], &["--threads", "5"], &["--verify", "full"]] {
        let again = fx.path(&format!("train{}", extra.join("")));
        let mut args = vec![
            "--format",
            "ilsvrc",
            "--input",
            p(&archive),
            "--output",
            p(&again),
            "--samples-per-shard",
            "4",
            "--seed",
            "3",
        ];
        args.extend(extra);
        ok(&shard(&args));
        assert_eq!(samples(&again).1, files, "{extra:?}");
    }
    // another seed: other order, same samples
    let other = fx.path("train-seed4");
    ok(&shard(&[
        "--format",
        "ilsvrc",
        "--input",
        p(&archive),
        "--output",
        p(&other),
        "--samples-per-shard",
        "4",
        "--seed",
        "4",
    ]));
    let keys4: Vec<String> = samples(&other).0.into_iter().map(|s| s.key).collect();
    assert_ne!(keys4, keys);

    // the loader decodes every kept image, the oddities included (from a quoted glob)
    let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(load_all(&out, "train"), want);

    // ... and to the pixels PIL decodes: PNG exactly, the JPEGs within decoder rounding
    let oddities: Vec<PathBuf> = ODD
        .iter()
        .chain(["n01440764_1000.JPEG"].iter())
        .map(|n| {
            let f = fx.path(n);
            fs::write(&f, &fx.train[*n]).unwrap();
            f
        })
        .collect();
    let sizes = py_run(&fx.py, DECODE_PY, &oddities.iter().map(|f| p(f)).collect::<Vec<_>>());
    for (f, size) in oddities.iter().zip(sizes.lines()) {
        let name = f.file_name().unwrap().to_str().unwrap();
        let sample = got.iter().find(|s| format!("{}.JPEG", s.key) == name).unwrap();
        let ours = decode_image(image_member(sample).1, 3).unwrap();
        let theirs = fs::read(format!("{}.rgb", f.display())).unwrap();
        assert_eq!(format!("{} {}", ours.width, ours.height), size, "{name}");
        let diffs: Vec<i32> = ours.data.iter().zip(&theirs).map(|(a, b)| (*a as i32 - *b as i32).abs()).collect();
        let (max, mean) = (*diffs.iter().max().unwrap(), diffs.iter().sum::<i32>() as f64 / diffs.len() as f64);
        eprintln!("{name}: max difference {max}, mean {mean:.3} levels against PIL");
        if name == ODD[0] {
            assert_eq!(max, 0, "{name}: a PNG decodes exactly");
        } else {
            // measured: grayscale and plain JPEG 0 (libjpeg-turbo on both sides), CMYK (our
            // fallback decoder against PIL's) max 1, mean 0.014 levels
            assert!(max <= 4 && mean <= 0.25, "{name}: max {max}, mean {mean}");
        }
    }
}

#[test]
fn strict_data_stops_before_any_shard() {
    let Some(fx) = fixture() else { return };
    let archive = fx.path("ILSVRC2012_img_train.tar");
    let lenient = fx.path("lenient");
    ok(&shard(&[
        "--format",
        "ilsvrc",
        "--input",
        p(&archive),
        "--output",
        p(&lenient),
        "--seed",
        "8",
        "--samples-per-shard",
        "2",
    ]));
    let first_bad = read_manifest(&lenient).unwrap().skipped[0].clone();
    // an empty output folder stays empty; an old dataset stays as it was (even with --overwrite)
    for (out, extra) in [(fx.path("strict"), None), (lenient.clone(), Some("--overwrite"))] {
        let list = |d: &Path| -> Vec<std::ffi::OsString> {
            let mut v: Vec<_> =
                fs::read_dir(d).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
            v.sort();
            v
        };
        let before = list(&lenient);
        let mut args = vec![
            "--format",
            "ilsvrc",
            "--input",
            p(&archive),
            "--output",
            p(&out),
            "--seed",
            "8",
            "--samples-per-shard",
            "2",
            "--strict-data",
        ];
        args.extend(extra);
        let res = shard(&args);
        assert_one_line_error(&res, &format!("bad image {}: {}", first_bad.name, first_bad.reason));
        assert!(String::from_utf8_lossy(&res.stderr).contains("no shard was written"));
        let now = list(&out);
        if extra.is_none() {
            assert!(now.is_empty(), "{now:?}");
        } else {
            assert_eq!(now, before);
        }
    }
    // the validation archive's truncated file stops it too
    let val = fx.path("ILSVRC2012_img_val.tar");
    let res = shard(&[
        "--format",
        "ilsvrc",
        "--split",
        "val",
        "--input",
        p(&val),
        "--labels",
        p(&fx.path("val_labels.txt")),
        "--output",
        p(&fx.path("v")),
        "--strict-data",
    ]);
    assert_one_line_error(&res, "bad image ILSVRC2012_val_00000011.JPEG: truncated JPEG");
}

#[test]
fn validation_archive_with_each_label_format() {
    let Some(fx) = fixture() else { return };
    let archive = fx.path("ILSVRC2012_img_val.tar");
    let mut outputs = Vec::new();
    for labels in ["ILSVRC2012_devkit_t12.tar.gz", "LOC_val_solution.csv", "val_labels.txt"] {
        let out = fx.path(&format!("val-{labels}"));
        let stdout = ok(&shard(&[
            "--format",
            "ilsvrc",
            "--split",
            "val",
            "--input",
            p(&archive),
            "--labels",
            p(&fx.path(labels)),
            "--output",
            p(&out),
            "--samples-per-shard",
            "4",
        ]));
        assert!(
            stdout.contains("10 samples, 3 shards") && stdout.contains("ILSVRC2012_val_00000011.JPEG: truncated JPEG"),
            "{stdout}"
        );
        let m = read_manifest(&out).unwrap();
        let mut sorted = WNIDS.map(String::from).to_vec();
        sorted.sort();
        assert_eq!(m.class_names, sorted, "{labels}: the training archive's class order");
        assert_eq!(m.prefix, "val");
        let (got, files) = samples(&out);
        for s in &got {
            let (bytes, wnid) = &fx.val[&s.key];
            assert_eq!(image_member(s).1, bytes);
            assert_eq!(
                s.files["cls"],
                sorted.iter().position(|w| w == wnid).unwrap().to_string().into_bytes(),
                "{labels} {}",
                s.key
            );
            let meta: serde_json::Value = serde_json::from_slice(&s.files["json"]).unwrap();
            assert_eq!(meta["class"].as_str(), Some(wnid.as_str()));
            assert_eq!(meta["source"].as_str(), Some(format!("{}.JPEG", s.key).as_str()));
        }
        assert_eq!(load_all(&out, "val").len(), 10);
        outputs.push(files);
    }
    // the same labels from each format give the same shards
    assert!(outputs.iter().all(|f| *f == outputs[0]));
}

#[test]
fn wrong_archive_or_labels_are_one_line_errors() {
    let Some(fx) = fixture() else { return };
    let (train, val) = (fx.path("ILSVRC2012_img_train.tar"), fx.path("ILSVRC2012_img_val.tar"));
    let list = fx.path("val_labels.txt");
    let o = fx.path("out");
    let ilsvrc = |extra: &[&str]| {
        let mut args = vec!["--format", "ilsvrc", "--output", p(&o)];
        args.extend(extra);
        shard(&args)
    };
    assert_one_line_error(&ilsvrc(&["--split", "val", "--input", p(&val)]), "--split val needs --labels FILE");
    assert_one_line_error(&ilsvrc(&["--split", "val", "--input", p(&train), "--labels", p(&list)]), "holds tars");
    assert_one_line_error(&ilsvrc(&["--input", p(&val)]), "pass --split val --labels FILE");
    assert_one_line_error(&ilsvrc(&["--split", "test", "--input", p(&val)]), "no public labels");
    assert_one_line_error(&ilsvrc(&["--input", p(fx.dir.path())]), "is a folder");
    assert_one_line_error(&ilsvrc(&["--input", p(&fx.path("missing.tar"))]), "cannot read");
    assert_one_line_error(&shard(&["--input", p(fx.dir.path()), "--output", p(&o), "--labels", p(&list)]), "--labels");
    // a download cut short: the index finds the member that runs past the end
    let bytes = fs::read(&train).unwrap();
    let cut = fx.path("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    assert_one_line_error(&ilsvrc(&["--input", p(&cut)]), "truncated");
    // labels that miss an image, and labels in the wrong form
    let partial = fx.path("partial.txt");
    fs::write(&partial, "ILSVRC2012_val_00000001.JPEG n01440764\n").unwrap();
    assert_one_line_error(
        &ilsvrc(&["--split", "val", "--input", p(&val), "--labels", p(&partial)]),
        "no label for ILSVRC2012_val_00000002.JPEG (10 of the 11 files",
    );
    let caffe = fx.path("caffe_val.txt");
    fs::write(&caffe, "ILSVRC2012_val_00000001.JPEG 65\n").unwrap();
    assert_one_line_error(&ilsvrc(&["--split", "val", "--input", p(&val), "--labels", p(&caffe)]), "not a WNID");
    assert!(!o.join("manifest.json").exists());
}
