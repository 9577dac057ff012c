//! Remote shards over S3: moto's S3-compatible server (from `.venv`, installed by tools/setup.sh)
//! is started on loopback by the test, CIFAR-10 photos from ../shared/data are sharded by our
//! `ShardWriter`, uploaded with `object_store` (signed requests) and read back through the
//! `Loader` with an `s3://` pattern; every sample must arrive exactly once with the label and
//! pixels of the local read. One test per binary: it sets the AWS_* environment variables.
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dspnet_pipeline::dataset::{load_folder_image, scan_image_folder};
use dspnet_pipeline::shard::{read_manifest, ShardWriter, ShardWriterConfig};
use dspnet_pipeline::source::expand_pattern;
use dspnet_pipeline::source::remote::{build_store, process_env, read_remote_manifest, RemoteOptions, RemoteUrl};
use object_store::ObjectStoreExt;
use support::data::{assert_same_samples, eval_by_key, loader_cfg};

const BUCKET: &str = "dspnet-test";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Kills the server when the test ends (pass or fail).
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One raw HTTP/1.1 request on loopback; returns the status line.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

fn start_moto() -> Option<(Server, u16)> {
    let py = root().join(".venv/bin/python");
    let has_moto =
        py.exists() && Command::new(&py).args(["-c", "import moto.server"]).output().is_ok_and(|o| o.status.success());
    if !has_moto {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the S3 test: tools/setup.sh installs moto[server] into .venv"
        );
        eprintln!("skipping: moto[server] missing in {} (run tools/setup.sh)", py.display());
        return None;
    }
    let port = free_port();
    let child = Command::new(&py)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto");
    let server = Server(child);
    let t = Instant::now();
    while http(port, "GET", "/").is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "moto did not start on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("moto up on 127.0.0.1:{port} after {:.1} s", t.elapsed().as_secs_f64());
    Some((server, port))
}

/// CIFAR-10 test photos: the first `per_class` of 3 classes, sharded by 16 → 4 shards of 16.
fn cifar_shards(dir: &Path, per_class: usize) -> Option<Vec<String>> {
    let src = root().join("../shared/data/cifar10-jpg/test");
    if !src.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI needs ../shared/data/cifar10-jpg");
        eprintln!("skipping: {} missing", src.display());
        return None;
    }
    let (classes, items) = scan_image_folder(&src).unwrap();
    let mut chosen = Vec::new();
    for c in 0..3i64 {
        chosen.extend(items.iter().filter(|(_, k)| *k == c).take(per_class).cloned());
    }
    let cfg = ShardWriterConfig {
        output_dir: dir.to_path_buf(),
        prefix: "train".into(),
        samples_per_shard: Some(16),
        max_shard_bytes: None,
        zstd: false,
        overwrite: false,
    };
    let mut w = ShardWriter::new(cfg).unwrap();
    for (p, c) in &chosen {
        w.write(&load_folder_image(&src, p, *c, &classes).unwrap().to_sample()).unwrap();
    }
    Some(w.finish(&classes).unwrap().shards.into_iter().map(|s| s.name).collect())
}

#[test]
fn s3_shards_from_moto_match_the_local_read() {
    let dir = tempfile::tempdir().unwrap();
    let Some(names) = cifar_shards(dir.path(), 21) else { return };
    assert_eq!(names.len(), 4, "63 photos in shards of 16");
    let Some((_server, port)) = start_moto() else { return };
    // Credentials and endpoint exactly as a user sets them.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true"),
    ] {
        std::env::set_var(k, v);
    }
    let status = http(port, "PUT", &format!("/{BUCKET}")).unwrap();
    assert!(status.contains(" 200"), "create bucket: {status}");

    // Upload through object_store (SigV4-signed PUTs), shards and manifest.
    let first = format!("s3://{BUCKET}/cifar/{}", names[0]);
    let store = build_store(&RemoteUrl::parse(&first).unwrap(), &RemoteOptions::default(), &process_env()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for n in names.iter().chain(std::iter::once(&"manifest.json".to_string())) {
        let bytes = std::fs::read(dir.path().join(n)).unwrap();
        rt.block_on(store.put(&object_store::path::Path::from(format!("cifar/{n}")), bytes.into())).unwrap();
    }

    let pattern = format!("s3://{BUCKET}/cifar/train-{{000000..000003}}.tar");
    let urls = expand_pattern(&pattern).unwrap();
    let local: Vec<String> = names.iter().map(|n| dir.path().join(n).to_string_lossy().to_string()).collect();
    let want = eval_by_key(local, loader_cfg(8), 32);
    let mut cfg = loader_cfg(8);
    cfg.readers = 2;
    let t = Instant::now();
    let got = eval_by_key(urls, cfg, 32);
    println!("{} samples read from s3:// in {:.2} s", got.len(), t.elapsed().as_secs_f64());
    assert_eq!(want.len(), 63);
    assert_same_samples(&want, &got);
    // labels are the CIFAR class indices 0, 1, 2 (21 each)
    for c in 0..3 {
        assert_eq!(got.values().filter(|(l, _, _)| *l == c).count(), 21);
    }
    assert_eq!(
        read_remote_manifest(&pattern, &RemoteOptions::default()).unwrap(),
        Some(read_manifest(dir.path()).unwrap())
    );

    // A missing object and a missing bucket: one clear line each, not retried.
    let l = dspnet_pipeline::loader::Loader::new(
        vec![format!("s3://{BUCKET}/cifar/train-000099.tar"), format!("s3://no-such-bucket/x.tar")],
        dspnet_pipeline::loader::LoaderSettings::new(loader_cfg(8), support::data::eval_aug(32)),
        dspnet_pipeline::loader::LoaderMode::Eval,
        0,
        1,
        tch::Device::Cpu,
    )
    .unwrap();
    let items: Vec<_> = l.epoch(0).unwrap().collect();
    let msg = items.last().unwrap().as_ref().expect_err("error").to_string();
    println!("missing S3 object: {msg}");
    assert!(
        msg.contains("train-000099.tar") && msg.contains("1 attempt(s)") && msg.contains("does not exist"),
        "{msg}"
    );
}
