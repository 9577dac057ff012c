use super::*;
use crate::augment::AugmentConfig;
use crate::shard::{RawSample, ShardWriter};
use crate::source::remote::RemoteConfig;
use crate::testutil::{image_shards, png, writer_cfg};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

fn lcfg(readers: usize, seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size: 4,
        shuffle_buffer: 5,
        shard_shuffle: true,
        readers,
        drop_last: false,
        seed,
        strict_data: false,
    }
}

fn aug() -> AugmentConfig {
    AugmentConfig::byol_small(8, 3)
}

fn keys_of(loader: &Loader, epoch: u64) -> Vec<String> {
    loader.epoch(epoch).unwrap().flat_map(|b| b.unwrap().keys).collect()
}

#[test]
fn exactly_once_across_ranks_and_readers() {
    // 7 shards x 9 samples: split by shard for every n = world*readers <= 6;
    // 2 shards x 9 samples: fewer shards than streams whenever n > 2.
    for (n_shards, per) in [(7usize, 9usize), (2, 9)] {
        let dir = tempfile::tempdir().unwrap();
        let shards = image_shards(dir.path(), n_shards * per, per);
        assert_eq!(shards.len(), n_shards);
        let all: BTreeSet<String> = (0..n_shards * per).map(|i| format!("s{i:05}")).collect();
        for world in 1..=3 {
            for readers in 1..=2 {
                for epoch in 0..2 {
                    let mut seen = Vec::new();
                    for rank in 0..world {
                        let l = Loader::new(
                            shards.clone(),
                            LoaderSettings::new(lcfg(readers, 3), aug()),
                            LoaderMode::Train,
                            rank,
                            world,
                            Device::Cpu,
                        )
                        .unwrap();
                        seen.extend(keys_of(&l, epoch));
                    }
                    let set: BTreeSet<String> = seen.iter().cloned().collect();
                    assert_eq!(seen.len(), set.len(), "duplicates: shards={n_shards} world={world} readers={readers}");
                    assert_eq!(set, all, "missing: shards={n_shards} world={world} readers={readers}");
                }
            }
        }
    }
}

fn batches(shards: &[String], seed: u64, epoch: u64) -> Vec<Batch> {
    let l =
        Loader::new(shards.to_vec(), LoaderSettings::new(lcfg(2, seed), aug()), LoaderMode::Train, 0, 1, Device::Cpu)
            .unwrap();
    let out: Vec<Batch> = l.epoch(epoch).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(l.stats().images.load(Ordering::Relaxed), 30);
    out
}

fn same(a: &[Batch], b: &[Batch]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.keys == y.keys
                && x.view_a.equal(&y.view_a)
                && x.view_b.as_ref().unwrap().equal(y.view_b.as_ref().unwrap())
                && x.labels.equal(&y.labels)
        })
}

#[test]
fn same_seed_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let shards = image_shards(dir.path(), 30, 7);
    let a = batches(&shards, 42, 0);
    let b = batches(&shards, 42, 0);
    assert_eq!(a.len(), 8); // 30 samples, batch 4, drop_last false
    assert!(same(&a, &b));
    assert_eq!(a[0].view_a.size(), vec![4, 3, 8, 8]);
    assert_eq!(a[0].view_a.kind(), tch::Kind::Float);
    assert_eq!(a[0].labels.kind(), tch::Kind::Int64);
    assert_eq!(a[7].keys.len(), 2);
    // labels follow the keys: label = index % 10
    for batch in &a {
        let labels = Vec::<i64>::try_from(&batch.labels).unwrap();
        for (k, l) in batch.keys.iter().zip(labels) {
            assert_eq!(k[1..].parse::<i64>().unwrap() % 10, l);
        }
    }
    assert!(!same(&a, &batches(&shards, 43, 0)));
    assert!(!same(&a, &batches(&shards, 42, 1)));
}

#[test]
fn eval_mode_centre_crop_with_label() {
    let dir = tempfile::tempdir().unwrap();
    // 12x10 RGB image with pixel (x, y) = (10x, 10y, 7); eval_resize 10 = shorter side,
    // image_size 8 → crop left (12-8)/2 = 2, top (10-8)/2 = 1, no resampling.
    let (w, h) = (12u32, 10u32);
    let data: Vec<u8> = (0..h).flat_map(|y| (0..w).flat_map(move |x| [(10 * x) as u8, (10 * y) as u8, 7])).collect();
    let mut bytes = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut bytes),
        &data,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    let mut wr = ShardWriter::new(writer_cfg(dir.path(), "e", 10)).unwrap();
    wr.write(&RawSample::new("img0").with("png", bytes.clone()).with("cls", "7")).unwrap();
    wr.write(&RawSample::new("img1").with("png", bytes).with("cls", "2")).unwrap();
    wr.finish(&[]).unwrap();
    let mut a = aug();
    a.eval_resize = 10;
    a.mean = vec![0.0; 3];
    a.std = vec![1.0; 3];
    let shards = vec![dir.path().join("e-000000.tar").to_string_lossy().to_string()];
    let l = Loader::new(shards, LoaderSettings::new(lcfg(1, 0), a), LoaderMode::Eval, 0, 1, Device::Cpu).unwrap();
    let got: Vec<Batch> = l.epoch(0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(got.len(), 1);
    let b = &got[0];
    assert!(b.view_b.is_none());
    assert_eq!(b.keys, vec!["img0", "img1"]);
    assert_eq!(Vec::<i64>::try_from(&b.labels).unwrap(), vec![7, 2]);
    let v = Vec::<f32>::try_from(&b.view_a.get(0).flatten(0, -1)).unwrap();
    for y in 0..8usize {
        for x in 0..8usize {
            let (sx, sy) = (x + 2, y + 1);
            assert_eq!(v[y * 8 + x], (10 * sx) as f32 / 255.0);
            assert_eq!(v[64 + y * 8 + x], (10 * sy) as f32 / 255.0);
            assert_eq!(v[128 + y * 8 + x], 7.0 / 255.0);
        }
    }
}

/// One shard with a good sample then the bad case; returns shard paths.
fn bad_case(dir: &Path, case: &str) -> Vec<String> {
    let good = RawSample::new("good0").with("png", png(8, 8, 1)).with("cls", "1");
    let path = dir.join(format!("{case}.tar"));
    let write = |samples: Vec<RawSample>| {
        let sub = dir.join(format!("w-{case}"));
        let mut w = ShardWriter::new(writer_cfg(&sub, "x", 100)).unwrap();
        for s in &samples {
            w.write(s).unwrap();
        }
        w.finish(&[]).unwrap();
        std::fs::read(sub.join("x-000000.tar")).unwrap()
    };
    let bytes = match case {
        "corrupt" => write(vec![
            good,
            RawSample::new("bad").with("jpg", b"\xff\xd8\xff\xe0 not a jpeg at all".to_vec()).with("cls", "0"),
        ]),
        "zero" => write(vec![good, RawSample::new("bad").with("png", Vec::new()).with("cls", "0")]),
        "unknown" => write(vec![good, RawSample::new("bad").with("bmpx", png(8, 8, 2)).with("cls", "0")]),
        "nolabel" => write(vec![good, RawSample::new("bad").with("png", png(8, 8, 3))]),
        "truncated" => {
            let full = write(vec![good, RawSample::new("bad").with("png", png(8, 8, 4)).with("cls", "0")]);
            full[..full.len() - 1024 - 300].to_vec()
        }
        "empty" => Vec::new(),
        _ => unreachable!(),
    };
    std::fs::write(&path, bytes).unwrap();
    let mut out = vec![path.to_string_lossy().to_string()];
    if case == "empty" {
        let ok = dir.join("ok.tar");
        std::fs::write(&ok, write(vec![good_clone()])).unwrap();
        out.push(ok.to_string_lossy().to_string());
    }
    out
}

fn good_clone() -> RawSample {
    RawSample::new("good0").with("png", png(8, 8, 1)).with("cls", "1")
}

#[test]
fn bad_data_skipped_or_strict_error() {
    let cases = [
        ("corrupt", SkipReason::CorruptImage, "bad"),
        ("zero", SkipReason::EmptyImage, "bad"),
        ("unknown", SkipReason::NoImage, "bad"),
        ("nolabel", SkipReason::MissingLabel, "bad"),
        ("truncated", SkipReason::TruncatedShard, "good0"),
        ("empty", SkipReason::EmptyShard, "<none>"),
    ];
    for (case, reason, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let shards = bad_case(dir.path(), case);
        let mut cfg = lcfg(1, 0);
        cfg.shard_shuffle = false;
        for mode in [LoaderMode::Eval, LoaderMode::Train] {
            let l =
                Loader::new(shards.clone(), LoaderSettings::new(cfg.clone(), aug()), mode, 0, 1, Device::Cpu).unwrap();
            let keys: Vec<String> = l.epoch(0).unwrap().flat_map(|b| b.unwrap().keys).collect();
            let st = l.stats();
            if case == "nolabel" && mode == LoaderMode::Train {
                // Train mode keeps unlabelled samples with label -1.
                assert_eq!(keys, vec!["good0", "bad"]);
                assert_eq!(st.skipped_total(), 0);
                continue;
            }
            assert_eq!(keys, vec!["good0"], "{case} {mode:?}");
            assert_eq!(st.skipped(reason), 1, "{case}: {}", st.summary());
            assert_eq!(st.skipped_total(), 1, "{case}: {}", st.summary());
            assert!(st.summary().contains(reason.as_str()));
        }
        let mut strict = cfg.clone();
        strict.strict_data = true;
        let l = Loader::new(shards.clone(), LoaderSettings::new(strict, aug()), LoaderMode::Eval, 0, 1, Device::Cpu)
            .unwrap();
        let items: Vec<Result<Batch>> = l.epoch(0).unwrap().collect();
        let err = items.last().unwrap().as_ref().err().unwrap_or_else(|| panic!("{case}: no error")).to_string();
        assert!(err.contains(&format!("{case}.tar")) && err.contains(key), "{case}: {err}");
        assert!(items[..items.len() - 1].iter().all(|i| i.is_ok()));
    }
}

#[test]
fn dropping_mid_epoch_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let shards = image_shards(dir.path(), 120, 30);
    let mut cfg = lcfg(2, 1);
    cfg.batch_size = 2;
    let threads = LoaderThreads { workers: 2, prefetch_batches: 1 };
    let settings = LoaderSettings::new(cfg, aug()).with_threads(threads);
    let l = Loader::new(shards, settings, LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
    let start = Instant::now();
    for _ in 0..3 {
        let mut it = l.epoch(0).unwrap();
        assert!(it.next().unwrap().is_ok());
        drop(it);
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    // the loader is still usable afterwards
    assert_eq!(keys_of(&l, 1).len(), 120);
}

#[test]
fn epoch_from_a_batch_end_continues_exactly() {
    // 3 shards (9, 9, 4 samples) with a corrupt and a zero-byte image among them: positions
    // count the skipped samples too, so resuming after any batch must give the same rest.
    let dir = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::new(writer_cfg(dir.path(), "r", 9)).unwrap();
    for i in 0..22usize {
        let s = match i {
            5 => RawSample::new(format!("s{i:05}")).with("jpg", b"\xff\xd8 not a jpeg".to_vec()).with("cls", "0"),
            13 => RawSample::new(format!("s{i:05}")).with("png", Vec::new()).with("cls", "0"),
            _ => RawSample::new(format!("s{i:05}")).with("png", png(8, 8, i as u8)).with("cls", "1"),
        };
        w.write(&s).unwrap();
    }
    let m = w.finish(&[]).unwrap();
    let shards: Vec<String> = m.shards.iter().map(|s| dir.path().join(&s.name).to_string_lossy().to_string()).collect();
    assert_eq!(m.shards.iter().map(|s| s.samples).collect::<Vec<_>>(), vec![9, 9, 4]);
    let l = Loader::new(shards.clone(), LoaderSettings::new(lcfg(2, 11), aug()), LoaderMode::Train, 0, 1, Device::Cpu)
        .unwrap();
    let full: Vec<Batch> = l.epoch(1).unwrap().map(|b| b.unwrap()).collect();
    // 20 good samples in batches of 4 (drop_last false): 5 batches; the last one ends after
    // all 22 positions (the two bad samples took positions too).
    assert_eq!(full.len(), 5);
    assert_eq!(full.last().unwrap().end_position, 22);
    assert!(full.windows(2).all(|p| p[0].end_position < p[1].end_position));
    for k in 0..full.len() {
        let l =
            Loader::new(shards.clone(), LoaderSettings::new(lcfg(2, 11), aug()), LoaderMode::Train, 0, 1, Device::Cpu)
                .unwrap();
        let rest: Vec<Batch> = l.epoch_from(1, full[k].end_position).unwrap().map(|b| b.unwrap()).collect();
        assert!(same(&rest, &full[k + 1..]), "resume after batch {k}");
        assert!(rest.iter().zip(&full[k + 1..]).all(|(a, b)| a.end_position == b.end_position));
        // skipped positions were not decoded: only the delivered images are counted, and a
        // bad sample before the start position is not reported again
        let delivered: usize = full[k + 1..].iter().map(|b| b.keys.len()).sum();
        assert_eq!(l.stats().images.load(Ordering::Relaxed), delivered as u64);
    }
    // the two bad samples are reported by a full epoch and by a start at 0, never by a start
    // after the end of the epoch
    assert_eq!(l.stats().skipped_total(), 2);
    let l = Loader::new(shards.clone(), LoaderSettings::new(lcfg(2, 11), aug()), LoaderMode::Train, 0, 1, Device::Cpu)
        .unwrap();
    let from0: Vec<Batch> = l.epoch_from(1, 0).unwrap().map(|b| b.unwrap()).collect();
    assert!(same(&from0, &full));
    assert_eq!(l.stats().skipped_total(), 2);
    let l = Loader::new(shards, LoaderSettings::new(lcfg(2, 11), aug()), LoaderMode::Train, 0, 1, Device::Cpu).unwrap();
    assert_eq!(l.epoch_from(1, 22).unwrap().count(), 0);
    assert_eq!(l.stats().skipped_total(), 0);
}

#[test]
fn steps_per_epoch_by_hand_and_against_the_loader() {
    let mut cfg = lcfg(1, 5);
    cfg.shard_shuffle = false;
    cfg.drop_last = true;
    // split by shard: 2 streams, shards [9, 9, 4] → stream 0 gets shards 0 and 2 (13 samples),
    // stream 1 gets shard 1 (9): 3 and 2 batches of 4 → every rank can take 2 steps.
    let counts = [9u64, 9, 4];
    assert_eq!(rank_samples_in_epoch(&counts, &cfg, LoaderMode::Train, 2, 0, 0), 13);
    assert_eq!(rank_samples_in_epoch(&counts, &cfg, LoaderMode::Train, 2, 1, 0), 9);
    assert_eq!(steps_per_epoch(&counts, &cfg, LoaderMode::Train, 2, 0), 2);
    assert_eq!(steps_per_epoch(&counts, &cfg, LoaderMode::Train, 1, 0), 22 / 4);
    // every stream reads the one shard of 9: 2 ranks x 2 readers = 4 streams keep samples
    // j % 4 == g → 3, 2, 2, 2; rank 0 (streams 0, 1) 5, rank 1 (streams 2, 3) 4.
    cfg.readers = 2;
    assert_eq!(rank_samples_in_epoch(&[9], &cfg, LoaderMode::Train, 2, 0, 0), 5);
    assert_eq!(rank_samples_in_epoch(&[9], &cfg, LoaderMode::Train, 2, 1, 0), 4);
    assert_eq!(steps_per_epoch(&[9], &cfg, LoaderMode::Train, 2, 0), 1);
    cfg.drop_last = false;
    assert_eq!(steps_per_epoch(&[9], &cfg, LoaderMode::Train, 2, 0), 1); // ceil(5/4)=2, ceil(4/4)=1
    cfg.batch_size = 2;
    assert_eq!(steps_per_epoch(&[9], &cfg, LoaderMode::Train, 2, 0), 2); // ceil(5/2)=3, ceil(4/2)=2

    // against real loaders: shuffled shards of unequal size, several epochs and world sizes
    let dir = tempfile::tempdir().unwrap();
    let shards = image_shards(dir.path(), 41, 7); // 7 x 5 + 6
    let counts: Vec<u64> = vec![7, 7, 7, 7, 7, 6];
    for world in 1..=3 {
        for readers in 1..=2 {
            for epoch in 0..3 {
                let c = lcfg(readers, 9); // drop_last = false: every sample is delivered
                let (mut partial, mut full) = (Vec::new(), Vec::new());
                for rank in 0..world {
                    let l = Loader::new(
                        shards.clone(),
                        LoaderSettings::new(c.clone(), aug()),
                        LoaderMode::Train,
                        rank,
                        world,
                        Device::Cpu,
                    )
                    .unwrap();
                    assert_eq!(
                        l.steps_per_epoch(epoch, &counts),
                        steps_per_epoch(&counts, &c, LoaderMode::Train, world, epoch)
                    );
                    let got: Vec<usize> = l.epoch(epoch).unwrap().map(|b| b.unwrap().keys.len()).collect();
                    let n: usize = got.iter().sum();
                    assert_eq!(n as u64, rank_samples_in_epoch(&counts, &c, LoaderMode::Train, world, rank, epoch));
                    partial.push(got.len() as u64);
                    full.push(got.iter().filter(|k| **k == c.batch_size).count() as u64);
                }
                let what = format!("world {world} readers {readers} epoch {epoch}: {partial:?} {full:?}");
                assert_eq!(
                    *partial.iter().min().unwrap(),
                    steps_per_epoch(&counts, &c, LoaderMode::Train, world, epoch),
                    "{what}"
                );
                let dl = LoaderConfig { drop_last: true, ..c.clone() };
                assert_eq!(
                    *full.iter().min().unwrap(),
                    steps_per_epoch(&counts, &dl, LoaderMode::Train, world, epoch),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn config_errors() {
    let e = Loader::new(
        vec!["ftp://b/x.tar".into()],
        LoaderSettings::new(lcfg(1, 0), aug()),
        LoaderMode::Train,
        0,
        1,
        Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("ftp:// is not supported"));
    let remote = RemoteConfig { max_retry_secs: f64::NAN, ..RemoteConfig::default() };
    let settings = LoaderSettings::new(lcfg(1, 0), aug()).with_remote(remote);
    let e = Loader::new(vec!["/x.tar".into()], settings, LoaderMode::Train, 0, 1, Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("remote.max_retry_secs"));
    let mut c = lcfg(1, 0);
    c.batch_size = 0;
    let e = Loader::new(vec!["/x.tar".into()], LoaderSettings::new(c, aug()), LoaderMode::Train, 0, 1, Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("loader.batch_size"));
    let e = Loader::new(
        vec!["/x.tar".into()],
        LoaderSettings::new(lcfg(1, 0), aug()),
        LoaderMode::Train,
        2,
        2,
        Device::Cpu,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("rank 2"));
    // a missing shard file is an unreadable shard, counted
    let l = Loader::new(
        vec!["/nonexistent/x.tar".into()],
        LoaderSettings::new(lcfg(1, 0), aug()),
        LoaderMode::Train,
        0,
        1,
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(l.epoch(0).unwrap().count(), 0);
    assert_eq!(l.stats().skipped(SkipReason::UnreadableShard), 1);
}
