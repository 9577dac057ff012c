//! Remote shards over HTTP through the real `Loader`, against a hyper server on loopback started
//! by each test (tests/support/httpd.rs). Fault cases: connection dropped mid-shard, server down
//! for a while mid-epoch, server down for good, missing shard, slow server (read-ahead).
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dspnet_pipeline::loader::{Loader, LoaderMode, LoaderSettings, LoaderThreads};
use dspnet_pipeline::source::expand_pattern;
use dspnet_pipeline::source::remote::RemoteConfig;
use dspnet_pipeline::PipelineError;
use support::data::{assert_same_samples, eval_aug, eval_by_key, loader_cfg, noise_shards};
use support::httpd::Httpd;
use tch::Device;

const SIDE: u32 = 32;

/// Shards written to a temp dir and served by a fresh server; returns (server, dir, local paths,
/// remote pattern).
fn served(n_shards: usize, per_shard: usize) -> (Httpd, tempfile::TempDir, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let names = noise_shards(dir.path(), n_shards, per_shard, SIDE);
    let srv = Httpd::start();
    for n in &names {
        srv.put(&format!("data/{n}"), std::fs::read(dir.path().join(n)).unwrap());
    }
    srv.put("data/manifest.json", std::fs::read(dir.path().join("manifest.json")).unwrap());
    let local = names.iter().map(|n| dir.path().join(n).to_string_lossy().to_string()).collect();
    let pattern = srv.url(&format!("data/t-{{000000..{:06}}}.tar", n_shards - 1));
    (srv, dir, local, pattern)
}

#[test]
fn streams_every_sample_once_like_the_local_read() {
    let (srv, _dir, local, pattern) = served(4, 20);
    let urls = expand_pattern(&pattern).unwrap();
    assert_eq!(urls.len(), 4);
    let want = eval_by_key(local, loader_cfg(7), SIDE);
    assert_eq!(want.len(), 80);
    let mut cfg = loader_cfg(7);
    cfg.readers = 2;
    let got = eval_by_key(urls, cfg, SIDE);
    assert_same_samples(&want, &got);
    assert_eq!(srv.gets(), 4, "one GET per shard");
    // the manifest next to the shards, read remotely
    let m = dspnet_pipeline::source::remote::read_remote_manifest(
        &pattern,
        &dspnet_pipeline::source::remote::RemoteOptions::default(),
    )
    .unwrap()
    .expect("a manifest beside the shards");
    assert_eq!(m, dspnet_pipeline::shard::read_manifest(_dir.path()).unwrap());
}

/// `source::manifest_beside` reads the manifest beside a shard list: from disk for local shards,
/// from the store for remote ones (the same manifest); `None` when there is none (no file, a
/// 404, an empty list); an error for a malformed one or a store that stays unreachable within the
/// `[remote]` budget.
#[test]
fn manifest_beside_a_local_or_remote_shard_list() {
    use dspnet_pipeline::source::manifest_beside;
    let (srv, dir, local, pattern) = served(2, 4);
    let want = dspnet_pipeline::shard::read_manifest(dir.path()).unwrap();
    let remote = RemoteConfig::default();
    assert_eq!(manifest_beside(&local, &remote).unwrap(), Some(want.clone()));
    let urls = expand_pattern(&pattern).unwrap();
    assert_eq!(manifest_beside(&urls, &remote).unwrap(), Some(want));
    assert_eq!(manifest_beside(&[], &remote).unwrap(), None);
    assert_eq!(manifest_beside(&[srv.url("elsewhere/t-000000.tar")], &remote).unwrap(), None);
    let other = tempfile::tempdir().unwrap();
    let lonely = other.path().join("t-000000.tar").to_string_lossy().to_string();
    assert_eq!(manifest_beside(std::slice::from_ref(&lonely), &remote).unwrap(), None);
    std::fs::write(other.path().join("manifest.json"), b"{\"format_version\": 1, \"pre").unwrap();
    let e = manifest_beside(&[lonely], &remote).unwrap_err();
    assert!(matches!(e, PipelineError::Manifest { .. }) && e.to_string().contains("manifest.json"), "{e}");
    srv.stop();
    let tight = RemoteConfig { max_retries: 1, max_retry_secs: 1.0, ..RemoteConfig::default() };
    let e = manifest_beside(&urls, &tight).unwrap_err();
    assert!(matches!(e, PipelineError::Remote { not_found: false, .. }), "{e}");
}

/// The manifest beside remote shards: a 404 is "no manifest" (not an error, not retried); a
/// server that is gone fails within the given retry budget (2 retries, 1.5 s), not the default
/// one (8 retries, 60 s).
#[test]
fn remote_manifest_missing_is_none_and_a_dead_server_fails_within_the_budget() {
    use dspnet_pipeline::source::remote::{read_remote_manifest, RemoteOptions};
    let (srv, _dir, _local, _pattern) = served(1, 4);
    let before = srv.requests();
    assert_eq!(read_remote_manifest(&srv.url("elsewhere/t-000000.tar"), &RemoteOptions::default()).unwrap(), None);
    assert_eq!(srv.requests() - before, 1, "a 404 is not retried");

    srv.stop();
    let opts =
        RemoteOptions { max_retries: 2, max_retry_time: Duration::from_secs_f64(1.5), ..RemoteOptions::default() };
    let t = Instant::now();
    let e = read_remote_manifest(&srv.url("data/t-000000.tar"), &opts).unwrap_err().to_string();
    let secs = t.elapsed().as_secs_f64();
    assert!(e.contains("manifest.json") && e.contains("failed after 3 attempt(s)"), "{e}");
    // the backoff before retries 1 and 2 is at most 0.2 + 0.4 s (init 200 ms, doubling); the
    // default budget's 8 retries would wait up to 0.2+0.4+0.8+1.6+3.2+6.4+10+10 s
    assert!(secs < 5.0, "gave up after {secs:.2} s: {e}");
}

#[test]
fn connection_dropped_mid_shard_resumes_with_range_requests() {
    let (srv, _dir, local, pattern) = served(4, 20);
    let want = eval_by_key(local, loader_cfg(8), SIDE);
    let shard_bytes = std::fs::metadata(_dir.path().join("t-000000.tar")).unwrap().len();
    // the next 3 responses (the 3 first shards, opened together by the read-ahead, then their
    // resumptions) are cut after 20 000 bytes: mid-shard, mid-sample
    assert!(shard_bytes > 60_000, "shards of {shard_bytes} bytes");
    srv.cut_next(3, 20_000);
    let cfg = loader_cfg(8);
    let l = Loader::new(
        expand_pattern(&pattern).unwrap(),
        LoaderSettings::new(cfg, eval_aug(SIDE)),
        LoaderMode::Eval,
        0,
        1,
        Device::Cpu,
    )
    .unwrap();
    let mut got = BTreeMap::new();
    for b in l.epoch(0).unwrap() {
        let b = b.unwrap_or_else(|e| panic!("{e}"));
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        for (i, k) in b.keys.iter().enumerate() {
            got.entry(k.clone()).and_modify(|e: &mut (i64, tch::Tensor, usize)| e.2 += 1).or_insert((
                labels[i],
                b.view_a.get(i as i64),
                1,
            ));
        }
    }
    assert_same_samples(&want, &got);
    let r = &l.stats().remote;
    println!(
        "cut mid-shard: {} | server gets={} range_gets={} cuts={}",
        l.stats().summary(),
        srv.gets(),
        srv.range_gets(),
        srv.cuts()
    );
    assert_eq!(srv.cuts(), 3);
    assert_eq!(r.retries.load(Ordering::Relaxed), 3, "one retry per cut");
    assert_eq!(r.resumed.load(Ordering::Relaxed), 3, "each cut resumed with a range request");
    assert_eq!(srv.range_gets(), 3);
    assert_eq!(r.bytes.load(Ordering::Relaxed), 4 * shard_bytes, "no byte fetched twice");
    assert_eq!(l.stats().skipped_total(), 0);
}

#[test]
fn server_down_for_a_while_mid_epoch_then_back() {
    let (srv, _dir, local, pattern) = served(6, 20);
    let want = eval_by_key(local, loader_cfg(10), SIDE);
    // ~100 KB shards at 120 KB/s per response: every shard is still in flight when the server
    // goes down after the first batch.
    srv.throttle(120_000, Duration::ZERO);
    let l = Loader::new(
        expand_pattern(&pattern).unwrap(),
        LoaderSettings::new(loader_cfg(10), eval_aug(SIDE)),
        LoaderMode::Eval,
        0,
        1,
        Device::Cpu,
    )
    .unwrap();
    let mut it = l.epoch(0).unwrap();
    let mut got = BTreeMap::new();
    let mut add = |b: dspnet_pipeline::loader::Batch| {
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        for (i, k) in b.keys.iter().enumerate() {
            got.entry(k.clone()).and_modify(|e: &mut (i64, tch::Tensor, usize)| e.2 += 1).or_insert((
                labels[i],
                b.view_a.get(i as i64),
                1,
            ));
        }
    };
    add(it.next().unwrap().unwrap());
    let t = Instant::now();
    let back = srv.down_for(Duration::from_millis(1500));
    for b in it.by_ref() {
        add(b.unwrap_or_else(|e| panic!("epoch failed although the server came back: {e}")));
    }
    back.join().unwrap();
    println!(
        "down 1.5 s mid-epoch: epoch finished {:.2} s after the outage began; {}",
        t.elapsed().as_secs_f64(),
        l.stats().summary()
    );
    assert_same_samples(&want, &got);
    let r = &l.stats().remote;
    assert!(r.resumed.load(Ordering::Relaxed) >= 1, "a broken shard resumed with a range request");
    assert!(r.retries.load(Ordering::Relaxed) >= 2, "requests retried while the server was down");
    assert!(t.elapsed() >= Duration::from_millis(1500), "the epoch cannot finish while the server is down");
}

#[test]
fn server_down_for_good_ends_the_epoch_with_a_clear_error_within_the_budget() {
    let (srv, _dir, _local, pattern) = served(6, 20);
    srv.throttle(150_000, Duration::ZERO);
    let remote = RemoteConfig { max_retries: 3, max_retry_secs: 2.0, ..RemoteConfig::default() };
    let settings = LoaderSettings::new(loader_cfg(10), eval_aug(SIDE)).with_remote(remote);
    let l = Loader::new(expand_pattern(&pattern).unwrap(), settings, LoaderMode::Eval, 0, 1, Device::Cpu).unwrap();
    let mut it = l.epoch(0).unwrap();
    assert!(it.next().unwrap().is_ok());
    srv.stop();
    let t = Instant::now();
    let rest: Vec<_> = it.collect();
    let secs = t.elapsed().as_secs_f64();
    let err = rest.last().expect("the epoch ends with an item").as_ref().expect_err("the last item is the error");
    let msg = err.to_string();
    println!("down for good: error after {secs:.2} s: {msg}");
    assert!(matches!(err, PipelineError::Remote { .. }), "{err:?}");
    assert!(msg.contains(&srv.url("data/t-0000")), "names the shard URL: {msg}");
    assert!(msg.contains("attempt(s)") && msg.contains("remote.max_retries (3)"), "{msg}");
    if let PipelineError::Remote { attempts, secs: spent, .. } = err {
        assert!(*attempts >= 2 && *attempts <= 4, "attempts {attempts}");
        assert!(*spent <= 2.0, "outage budget 2 s, spent {spent}");
    }
    assert!(!msg.contains('\n'));
    assert!(rest[..rest.len() - 1].iter().all(|b| b.is_ok()));
    assert!(secs < 2.0 + 3.0, "error after {secs:.1} s; budget 2 s (+ slack)");
    // a missing shard is not retried: the error says so at once
    let l = Loader::new(
        vec![srv.url("data/t-000099.tar")],
        LoaderSettings::new(loader_cfg(10), eval_aug(SIDE)),
        LoaderMode::Eval,
        0,
        1,
        Device::Cpu,
    )
    .unwrap();
    srv.resume();
    let t = Instant::now();
    let items: Vec<_> = l.epoch(0).unwrap().collect();
    let msg = items.last().unwrap().as_ref().err().unwrap().to_string();
    println!("missing shard: {msg}");
    assert!(msg.contains("t-000099.tar") && msg.contains("1 attempt(s)") && msg.contains("does not exist"), "{msg}");
    assert!(matches!(items.last().unwrap().as_ref().err().unwrap(), PipelineError::Remote { not_found: true, .. }));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn slow_server_read_ahead_keeps_the_consumer_fed() {
    // 6 shards of ~100 KB served at 250 KB/s per response after 100 ms: ~0.5 s per shard on one
    // connection. The consumer takes 2 batches per shard at 50 ms per step.
    let (srv, _dir, _local, pattern) = served(6, 20);
    srv.throttle(250_000, Duration::from_millis(100));
    let urls = expand_pattern(&pattern).unwrap();
    let run = |read_ahead: usize| {
        let remote = RemoteConfig { read_ahead, ..RemoteConfig::default() };
        let settings = LoaderSettings::new(loader_cfg(10), eval_aug(SIDE)).with_remote(remote);
        let l = Loader::new(urls.clone(), settings, LoaderMode::Eval, 0, 1, Device::Cpu).unwrap();
        let t = Instant::now();
        let (mut wait, mut n) = (Duration::ZERO, 0);
        let mut it = l.epoch(0).unwrap();
        loop {
            let w = Instant::now();
            let Some(b) = it.next() else { break };
            wait += w.elapsed();
            n += b.unwrap().keys.len();
            std::thread::sleep(Duration::from_millis(50)); // the training step
        }
        let total = t.elapsed();
        assert_eq!(n, 120);
        let r = l.stats().remote.clone();
        (wait.as_secs_f64() / total.as_secs_f64(), total.as_secs_f64(), r)
    };
    let (f0, t0, r0) = run(0);
    let (f3, t3, r3) = run(3);
    println!(
        "slow server: wait fraction without read-ahead {:.0}% ({t0:.2} s), with read_ahead = 3 {:.0}% ({t3:.2} s)",
        f0 * 100.0,
        f3 * 100.0
    );
    println!("  without: {}", r0.summary());
    println!("  with:    {}", r3.summary());
    assert_eq!(r0.peak_open_shards.load(Ordering::Relaxed), 1, "no read-ahead: one shard open at a time");
    assert_eq!(r3.peak_open_shards.load(Ordering::Relaxed), 4, "read_ahead = 3: the current shard and 3 ahead");
    assert!(r3.ahead_bytes.load(Ordering::Relaxed) > 0, "shards were buffered before the parser reached them");
    let cap = dspnet_pipeline::source::remote::RemoteOptions::default().read_ahead_bytes;
    assert!(r3.peak_buffered_bytes.load(Ordering::Relaxed) <= cap, "buffer stays under the byte cap");
}

#[test]
fn read_ahead_buffer_is_bounded_in_bytes() {
    // A byte cap of 128 KiB shared by the current shard and 1 read-ahead shard → 64 KiB each:
    // shards of ~100 KB can never be buffered whole, so the pump must wait for the parser.
    let (_srv, _dir, local, pattern) = served(4, 20);
    let want = eval_by_key(local, loader_cfg(10), SIDE);
    let cfg = loader_cfg(10);
    let remote = RemoteConfig { read_ahead: 1, read_ahead_bytes: 128 << 10, ..RemoteConfig::default() };
    let threads = LoaderThreads { workers: 2, prefetch_batches: 1 };
    let settings = LoaderSettings::new(cfg.clone(), eval_aug(SIDE)).with_remote(remote).with_threads(threads);
    let l = Loader::new(expand_pattern(&pattern).unwrap(), settings, LoaderMode::Eval, 0, 1, Device::Cpu).unwrap();
    let mut got = BTreeMap::new();
    for b in l.epoch(0).unwrap() {
        let b = b.unwrap();
        std::thread::sleep(Duration::from_millis(30)); // slow consumer: buffers fill up
        let labels = Vec::<i64>::try_from(&b.labels).unwrap();
        for (i, k) in b.keys.iter().enumerate() {
            got.entry(k.clone()).and_modify(|e: &mut (i64, tch::Tensor, usize)| e.2 += 1).or_insert((
                labels[i],
                b.view_a.get(i as i64),
                1,
            ));
        }
    }
    assert_same_samples(&want, &got);
    let r = &l.stats().remote;
    let peak = r.peak_buffered_bytes.load(Ordering::Relaxed);
    println!("bounded buffer: {}", r.summary());
    assert!(peak <= 128 << 10, "peak buffered {peak} bytes > cap 131072");
    assert_eq!(r.buffered_bytes.load(Ordering::Relaxed), 0, "nothing left buffered after the epoch");
}
