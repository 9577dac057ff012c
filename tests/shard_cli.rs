//! End-to-end tests of `dspnet-shard` on real CIFAR-10 JPEGs and Fashion-MNIST IDX files.
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dspnet_pipeline::shard::{open_shard_file, read_manifest};

const CIFAR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/cifar10-jpg/train");
const FMNIST: &str = "/usr/share/datasets/fashion-mnist";
const CLASSES: [&str; 3] = ["airplane", "automobile", "bird"];

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dspnet-shard"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run dspnet-shard")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// 3 classes x 40 CIFAR-10 JPEGs as symlinks (originals read in place, never copied).
fn cifar_subset() -> Option<tempfile::TempDir> {
    assert!(Path::new(CIFAR).exists(), "{CIFAR} missing: the real photos live in ../shared/data beside the checkout");
    let d = tempfile::tempdir().unwrap();
    for class in CLASSES {
        fs::create_dir_all(d.path().join(class)).unwrap();
        for i in 0..40 {
            let name = format!("{i:04}.jpg");
            std::os::unix::fs::symlink(Path::new(CIFAR).join(class).join(&name), d.path().join(class).join(&name))
                .unwrap();
        }
    }
    Some(d)
}

fn assert_one_line_error(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(needle), "{err}");
}

fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar"))
        .collect();
    v.sort();
    v
}

#[test]
fn imagefolder_roundtrip_and_determinism() {
    let Some(input) = cifar_subset() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    for (dir, seed) in [(&a, "5"), (&b, "5"), (&c, "6")] {
        let out = run(&["--input", p(input.path()), "--output", p(dir), "--samples-per-shard", "50", "--seed", seed]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1);
        assert!(stdout.contains("120 samples, 3 shards"), "{stdout}");
    }
    let m = read_manifest(&a).unwrap();
    assert_eq!(m.class_names, CLASSES.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(m.total_samples, 120);
    assert_eq!(m.prefix, "train");
    let files = shard_files(&a);
    assert_eq!(
        files.iter().map(|f| f.file_name().unwrap().to_str().unwrap().to_string()).collect::<Vec<_>>(),
        vec!["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    );
    let mut keys = Vec::new();
    for f in &files {
        for s in open_shard_file(f).unwrap() {
            let s = s.unwrap();
            let (class, stem) = s.key.rsplit_once('_').unwrap();
            let ci = CLASSES.iter().position(|c| *c == class).unwrap();
            assert_eq!(s.files["jpg"], fs::read(Path::new(CIFAR).join(class).join(format!("{stem}.jpg"))).unwrap());
            assert_eq!(String::from_utf8(s.files["cls"].clone()).unwrap(), ci.to_string());
            keys.push(s.key);
        }
    }
    let expected: BTreeSet<String> = CLASSES.iter().flat_map(|c| (0..40).map(move |i| format!("{c}_{i:04}"))).collect();
    assert_eq!(keys.iter().cloned().collect::<BTreeSet<_>>(), expected);
    assert_eq!(keys.len(), 120);
    // same seed → byte-identical shards and manifest; other seed → other order
    for f in &files {
        let name = f.file_name().unwrap();
        assert_eq!(fs::read(f).unwrap(), fs::read(b.join(name)).unwrap());
    }
    assert_eq!(fs::read(a.join("manifest.json")).unwrap(), fs::read(b.join("manifest.json")).unwrap());
    let keys_c: Vec<String> =
        shard_files(&c).iter().flat_map(|f| open_shard_file(f).unwrap().map(|s| s.unwrap().key)).collect();
    assert_ne!(keys, keys_c);
    // output already holds shards → exit 2; --overwrite works
    let out = run(&["--input", p(input.path()), "--output", p(&a)]);
    assert_one_line_error(&out, "already holds shards; pass --overwrite");
    let out = run(&["--input", p(input.path()), "--output", p(&a), "--overwrite", "--zstd", "--prefix", "cifar"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(a.join("cifar-000000.tar.zst").exists() && !a.join("train-000000.tar").exists());
}

#[test]
fn fashion_mnist_test_split() {
    if !Path::new(FMNIST).exists() {
        eprintln!("skipping: {FMNIST} missing");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&[
        "--input",
        FMNIST,
        "--output",
        p(tmp.path()),
        "--format",
        "fashion-mnist",
        "--split",
        "test",
        "--samples-per-shard",
        "4000",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m = read_manifest(tmp.path()).unwrap();
    assert_eq!(m.total_samples, 10_000);
    assert_eq!(m.shards.iter().map(|s| s.samples).collect::<Vec<_>>(), vec![4000, 4000, 2000]);
    assert_eq!(m.shards[0].name, "test-000000.tar");
    assert_eq!(m.class_names[9], "Ankle boot");
    let first = open_shard_file(tmp.path().join("test-000000.tar")).unwrap().next().unwrap().unwrap();
    assert!(first.key.starts_with("test_"));
    assert_eq!(&first.files["png"][..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir_all(empty.join("cls")).unwrap();
    let out = run(&["--input", p(&empty), "--output", p(&tmp.path().join("o1"))]);
    assert_one_line_error(&out, "holds no image");
    let out = run(&["--input", p(&tmp.path().join("missing")), "--output", p(&tmp.path().join("o2"))]);
    assert_one_line_error(&out, "cannot read");
    let out = run(&["--input", p(&empty), "--output", p(&tmp.path().join("o3")), "--format", "fashion-mnist"]);
    assert_one_line_error(&out, "missing Fashion-MNIST file");
    // unwritable output: a folder below a regular file
    let img_dir = tmp.path().join("imgs/a");
    fs::create_dir_all(&img_dir).unwrap();
    fs::write(img_dir.join("x.png"), b"bytes are stored, not decoded").unwrap();
    let file = tmp.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let out = run(&["--input", p(&tmp.path().join("imgs")), "--output", p(&file.join("sub"))]);
    assert_one_line_error(&out, "is not writable");
    // mutually exclusive size options: clap usage error, exit 2
    let out = run(&["--input", "x", "--output", "y", "--samples-per-shard", "5", "--max-shard-bytes", "100"]);
    assert_eq!(out.status.code(), Some(2));
}

/// sha256 of the shards and manifest that dspnet-shard wrote for `cifar_subset()` with
/// `--samples-per-shard 50 --seed 5` before images were checked on worker threads (commit
/// f644446): the imagefolder output must stay byte-identical.
const SUBSET_SHA256: [(&str, &str); 4] = [
    ("manifest.json", "99e599e6cc3d97267dedcab878da87991a2037b298c8009e9153e7b9b2ac0dae"),
    ("train-000000.tar", "48ac18f1d83cca5acc727394df65db2015dbcf503c2d35f62f75520d49318f50"),
    ("train-000001.tar", "bd41e8474baf33e4c510485f466ae3836c8697302e8514c1727b6a24ed989f80"),
    ("train-000002.tar", "7e0316b0be750afe11dfe8685e5c20252350e279700b5d959395b8f798a59e06"),
];

#[test]
fn imagefolder_shards_are_byte_identical_to_before_on_any_thread_count() {
    let Some(input) = cifar_subset() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for threads in ["1", "4"] {
        let out = tmp.path().join(threads);
        let args = ["--input", p(input.path()), "--output", p(&out), "--samples-per-shard", "50", "--seed", "5"];
        let res = bin().args(args).args(["--threads", threads]).output().unwrap();
        assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
        for (name, sha) in SUBSET_SHA256 {
            let bytes = fs::read(out.join(name)).unwrap();
            assert_eq!(dspnet_core::fs::sha256_hex(&bytes), sha, "{name} on {threads} thread(s)");
        }
    }
}

#[test]
fn imagefolder_bad_files_are_skipped_or_stop_the_run() {
    let Some(input) = cifar_subset() else { return };
    let photo = fs::read(Path::new(CIFAR).join("bird/0100.jpg")).unwrap();
    // kept: a PNG named .jpg (stored as .png); skipped: empty, truncated, not an image
    let png = {
        let mut out = Vec::new();
        image::load_from_memory(&photo)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    fs::write(input.path().join("bird/png-named.jpg"), &png).unwrap();
    fs::write(input.path().join("airplane/empty.jpg"), b"").unwrap();
    fs::write(input.path().join("automobile/cut.jpg"), &photo[..photo.len() - 40]).unwrap();
    fs::write(input.path().join("bird/page.png"), b"<html></html>").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lenient");
    let res = run(&["--input", p(input.path()), "--output", p(&out), "--verify", "full", "--seed", "1"]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("121 samples") && stdout.contains("skipped 3 unusable image(s)"), "{stdout}");
    for line in ["airplane/empty.jpg: empty file", "automobile/cut.jpg: truncated JPEG", "bird/page.png: not a JPEG"] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    let m = read_manifest(&out).unwrap();
    assert_eq!((m.total_samples, m.skipped_total, m.skipped.len()), (121, 3, 3));
    let png_sample = shard_files(&out)
        .iter()
        .flat_map(|f| open_shard_file(f).unwrap().map(|s| s.unwrap()))
        .find(|s| s.key == "bird_png-named")
        .unwrap();
    assert_eq!(png_sample.files.get("png"), Some(&png));
    // --strict-data: exit 2 naming the first bad file in write order, and no shard written
    let strict = tmp.path().join("strict");
    let res = run(&["--input", p(input.path()), "--output", p(&strict), "--seed", "1", "--strict-data"]);
    assert_one_line_error(&res, &format!("bad image {}", m.skipped[0].name));
    assert_eq!(fs::read_dir(&strict).unwrap().count(), 0);
}

#[test]
fn progress_bar_with_rate_and_eta_on_a_terminal_only() {
    let Some(input) = cifar_subset() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // not a terminal: nothing on stderr
    let out = run(&["--input", p(input.path()), "--output", p(&tmp.path().join("plain"))]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // a terminal (util-linux `script` runs the command on a pseudo-terminal)
    let cmd = format!(
        "{} --input {} --output {}",
        env!("CARGO_BIN_EXE_dspnet-shard"),
        p(input.path()),
        p(&tmp.path().join("tty"))
    );
    let out = Command::new("script").args(["-qfec", &cmd, "/dev/null"]).output().expect("script (util-linux) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("/120 images, ") && screen.contains(" images/s, ETA "), "{screen}");
    assert!(screen.contains("dspnet-shard: 120 samples"), "{screen}");
}
