// private dev probe (not committed)
#[path = "../../tools/bench/loader.rs"]
#[allow(dead_code)]
mod loader;
use dspnet_pipeline::augment::AugmentConfig;
fn main() {
    let data = loader::shared_data_dir().unwrap();
    let which = std::env::args().nth(1).unwrap_or("both".into());
    let tmp = std::env::temp_dir().join(format!("probe-{}", std::process::id()));
    if which != "32" {
        let coco = loader::coco_jpegs(&data).unwrap();
        let dir = tmp.join("coco");
        let mut w = dspnet_pipeline::shard::ShardWriter::new(dspnet_pipeline::shard::ShardWriterConfig { output_dir: dir.clone(), prefix: "c".into(), samples_per_shard: Some(256), max_shard_bytes: None, zstd: false, overwrite: false }).unwrap();
        for r in 0..2 { for (i, b) in coco.iter().enumerate() { w.write(&dspnet_pipeline::shard::RawSample::new(format!("k{r}_{i}")).with("jpg", b.clone()).with("cls", "0")).unwrap(); } }
        let m = w.finish(&[]).unwrap();
        let shards: Vec<String> = m.shards.iter().map(|s| dir.join(&s.name).to_string_lossy().to_string()).collect();
        let refs: Vec<&[u8]> = coco.iter().map(|b| b.as_slice()).collect();
        if std::env::var("ONLY").is_ok() { let o = loader::loader_images_per_s(&shards, &AugmentConfig::byol_224(), 64, 3).unwrap(); println!("224 only {o:.1}"); return; }
        for _ in 0..2 {
            let d = loader::decode_images_per_s(&refs, 2, 1).unwrap();
            let o = loader::loader_images_per_s(&shards, &AugmentConfig::byol_224(), 64, 1).unwrap();
            println!("224: ours {o:.1} decode {d:.1} ratio {:.2}", o / d);
        }
    }
    if which != "224" {
        let cifar = loader::cifar_jpegs(&data, 10000).unwrap();
        let dir = tmp.join("cifar");
        let mut w = dspnet_pipeline::shard::ShardWriter::new(dspnet_pipeline::shard::ShardWriterConfig { output_dir: dir.clone(), prefix: "c".into(), samples_per_shard: Some(5000), max_shard_bytes: None, zstd: false, overwrite: false }).unwrap();
        for (i, (b, l)) in cifar.iter().enumerate() { w.write(&dspnet_pipeline::shard::RawSample::new(format!("k{i}")).with("jpg", b.clone()).with("cls", l.to_string())).unwrap(); }
        let m = w.finish(&[]).unwrap();
        let shards: Vec<String> = m.shards.iter().map(|s| dir.join(&s.name).to_string_lossy().to_string()).collect();
        let refs: Vec<&[u8]> = cifar.iter().map(|b| b.0.as_slice()).collect();
        if std::env::var("ONLY").is_ok() { let o = loader::loader_images_per_s(&shards, &AugmentConfig::byol_small(32, 3), 256, 5).unwrap(); println!("32 only {o:.1}"); return; }
        for _ in 0..2 {
            let d = loader::decode_images_per_s(&refs, 2, 1).unwrap();
            let o = loader::loader_images_per_s(&shards, &AugmentConfig::byol_small(32, 3), 256, 1).unwrap();
            println!("32: ours {o:.1} decode {d:.1} ratio {:.2}", o / d);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
