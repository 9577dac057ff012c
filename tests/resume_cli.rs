//! End-to-end, through the binaries on real CIFAR-10 photos: exact resume after SIGKILL in the
//! middle of an epoch, non-finite losses (stop keeping the last good checkpoint, or skip), an
//! unwritable output location found before training, Ctrl-C (checkpoint, exit 130), SIGTERM
//! (checkpoint, exit 143) with the same command line continuing the run (`--resume-if-exists`),
//! shards checked by content and location on resume, configuration errors found before any data
//! is read, and equal steps per epoch on every rank.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

const SHARD: &str = env!("CARGO_BIN_EXE_dspnet-shard");
const TRAIN: &str = env!("CARGO_BIN_EXE_dspnet-stream-train");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn preset() -> String {
    root().join("configs/cifar10-small.toml").to_str().unwrap().to_string()
}

/// Shards of the first `n` training photos of each of three classes, `per_shard` samples each,
/// in `base/train` (readable by every user, for the read-only test).
fn shards(base: &Path, n: usize, per_shard: usize) -> String {
    let cifar = root().join("../shared/data/cifar10-jpg/train");
    let src = base.join("src");
    for c in ["airplane", "cat", "ship"] {
        let d = src.join(c);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            let name = format!("{i:04}.jpg");
            std::fs::copy(cifar.join(c).join(&name), d.join(&name)).unwrap_or_else(|e| {
                panic!("{}: {e} (the tests read ../shared/data/cifar10-jpg beside the checkout)", cifar.display())
            });
        }
    }
    let out = base.join("train");
    let o = Command::new(SHARD)
        .args(["--input", src.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .args(["--samples-per-shard", &per_shard.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for d in [base, &out] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    out.to_str().unwrap().to_string()
}

fn sets(items: &[&str]) -> Vec<String> {
    items.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect()
}

fn train(shards: &str, out: &Path, extra: &[String]) -> Command {
    let mut c = Command::new(TRAIN);
    c.args(["--config", &preset(), "--shards", shards, "--out", out.to_str().unwrap(), "--quiet"]).args(extra);
    c
}

fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "expected {n:?} in: {}", errors[0]);
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_string()
}

/// Tensors of a safetensors file: name → (dtype, shape, data bytes).
fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<u64>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let off: Vec<usize> =
            info["data_offsets"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let shape = info["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        out.insert(name.clone(), (info["dtype"].as_str().unwrap().to_string(), shape, data[off[0]..off[1]].to_vec()));
    }
    out
}

fn state(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("checkpoint.json")).unwrap()).unwrap()
}

/// metrics.jsonl without the wall-clock fields.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["elapsed_sec", "images_per_sec", "data_wait_fraction"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

#[test]
fn killed_mid_epoch_and_resumed_ends_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 32, 32); // 96 photos in 3 shards
                                                   // 96 photos / batch 16 = 6 steps per epoch, 2 epochs = 12 steps; a checkpoint every 2 steps
                                                   // and at each epoch end. One libtorch thread: bit-exact on CPU. One random middle width per
                                                   // step, so the sandwich rule's generator is part of the state; shuffle buffer and shard
                                                   // shuffle on, 2 reader streams (the preset's).
    let extra = sets(&[
        "model.base_channels=8",
        "heads.hidden=32",
        "heads.out_dim=16",
        "method.random_widths=1",
        "loader.batch_size=16",
        "loader.shuffle_buffer=32",
        "train.precision=\"fp32\"",
        "train.channels_last=false",
        "train.threads=1",
        "train.epochs=2",
        "train.log_every=1",
        "train.checkpoint_every=2",
        "optim.warmup_epochs=0.5",
    ]);
    let (run_a, run_b) = (dir.path().join("a"), dir.path().join("b"));
    let t0 = Instant::now();
    let out = train(&train_shards, &run_a, &extra).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let uninterrupted = t0.elapsed();

    // B: SIGKILL after the checkpoint of step 4 and the metrics line of step 5, i.e. in the
    // middle of epoch 0 (the next checkpoint comes at its end, step 6).
    let mut child = train(&train_shards, &run_b, &extra).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at4 = std::fs::read(run_b.join("checkpoint.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["step"].as_u64().unwrap_or(0) >= 4);
        let lines = std::fs::read_to_string(run_b.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
        if at4 && lines >= 5 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "run B ended before it could be killed");
        assert!(Instant::now() < deadline, "run B made no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = state(&run_b);
    assert_eq!(killed["step"], 4, "the kill must land before the epoch-end checkpoint: {killed}");
    assert_eq!(killed["epoch"], 0);
    assert_eq!(killed["position_in_epoch"], 64);
    assert_eq!(killed["samples_in_epoch"], 64);
    assert!(metrics(&run_b).len() >= 5, "metrics beyond the checkpoint exist before resuming");

    // a resume that would change the training is refused, naming the key
    let out = Command::new(TRAIN)
        .args(["--resume", run_b.to_str().unwrap(), "--quiet"])
        .args(sets(&["optim.lr=0.5"]))
        .output()
        .unwrap();
    assert_one_line_error(&out, &["optim.lr", "config.toml"]);
    // resume from another working directory, with only the run directory
    let out =
        Command::new(TRAIN).current_dir("/").args(["--resume", run_b.to_str().unwrap(), "--quiet"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("resumed at step 4, trained 8 steps, 128 images"), "{stdout}");

    // the same tensors to the byte: online, teacher (with BN statistics) and optimizer state
    let (ta, tb) = (tensors(&run_a.join("checkpoint.safetensors")), tensors(&run_b.join("checkpoint.safetensors")));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    for prefix in ["online.", "teacher.", "optim."] {
        assert!(ta.keys().any(|k| k.starts_with(prefix)), "no {prefix} tensors");
    }
    assert!(ta.keys().any(|k| k.contains("running_var")));
    for (name, a) in &ta {
        assert!(a == &tb[name], "{name} differs after resume");
    }
    assert_eq!(
        std::fs::read(run_a.join("checkpoint.safetensors")).unwrap(),
        std::fs::read(run_b.join("checkpoint.safetensors")).unwrap()
    );
    // the same state record and the same per-step losses, each step logged once
    assert_eq!(state(&run_a), state(&run_b));
    assert_eq!(state(&run_b)["step"], 12);
    let (ma, mb) = (metrics(&run_a), metrics(&run_b));
    assert_eq!(mb.iter().map(|m| m["step"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    assert_eq!(ma, mb);
    // a finished run cannot be resumed
    let out = Command::new(TRAIN).args(["--resume", run_b.to_str().unwrap(), "--quiet"]).output().unwrap();
    assert_one_line_error(&out, &["already finished all 12 planned steps"]);
    eprintln!("uninterrupted run: {:.1} s", uninterrupted.as_secs_f64());
}

/// Starts a training in `run` (stdout and stderr piped) and returns once its metrics.jsonl
/// holds `lines` records; panics if it ends first or makes no progress for 120 s.
fn train_until_logged(shards: &str, run: &Path, extra: &[String], lines: usize) -> std::process::Child {
    let mut child = train(shards, run, extra).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < lines {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be interrupted");
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Sends SIGINT (what Ctrl-C sends) to `child`.
fn sigint(child: &std::process::Child) {
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
}

/// Sends SIGTERM (what SLURM, Kubernetes and spot instances send before SIGKILL) to `child`.
fn sigterm(child: &std::process::Child) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 32, 32); // 96 photos, 6 steps per epoch
                                                   // 50 epochs (300 steps): far more than the run takes before the SIGINT lands.
    let extra = sets(
        &[
            &support::TINY_MODEL[..],
            &["train.threads=1", "train.epochs=50", "train.log_every=1", "train.checkpoint_every=1000"],
        ]
        .concat(),
    );
    let run = dir.path().join("run");
    let child = train_until_logged(&train_shards, &run, &extra, 2);
    sigint(&child);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // 130 = 128 + SIGINT (2): the shell's code for a command stopped by Ctrl-C
    assert_eq!(out.status.code(), Some(130), "stdout: {stdout} stderr: {stderr}");
    // the step in flight finished and was saved (no periodic checkpoint before step 1000)
    let steps: u64 = stdout
        .split("interrupted after ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'interrupted after N steps' in {stdout}"));
    assert!((2..300).contains(&steps), "{stdout}");
    assert_eq!(state(&run)["step"], steps);
    assert!(stderr.contains(&format!("--resume {}", run.display())), "{stderr}");
    // and the run continues from there
    let target = (steps + 2).to_string();
    let out = Command::new(TRAIN)
        .args(["--resume", run.to_str().unwrap(), "--quiet", "--max-steps", &target])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("resumed at step {steps}, trained 2 steps")), "{stdout}");
}

#[test]
fn a_second_ctrl_c_aborts_with_130_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 32, 32);
    // 16 base channels: steps long enough (about 0.1-0.5 s) for the second SIGINT to land while
    // libtorch still computes the step, where process::exit crashed (exit code 139)
    let extra = sets(
        &[
            &support::TINY_MODEL[..],
            &[
                "model.base_channels=16",
                "train.threads=1",
                "train.epochs=50",
                "train.log_every=1",
                "train.checkpoint_every=1000",
            ],
        ]
        .concat(),
    );
    for attempt in 0..3 {
        let run = dir.path().join(format!("run{attempt}"));
        // past the epoch-end checkpoint of step 6 (96 photos, batch 16), in the middle of a step
        let child = train_until_logged(&train_shards, &run, &extra, 8);
        for _ in 0..2 {
            sigint(&child);
            std::thread::sleep(Duration::from_millis([30, 50, 80][attempt]));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "attempt {attempt}: {stderr}");
        assert!(stderr.contains("aborted: the last saved checkpoint"), "{stderr}");
        // the last checkpoint (the epoch end's) is whole: the run resumes from it
        let step = state(&run)["step"].as_u64().unwrap();
        assert!(step >= 6, "{step}");
        let target = (step + 1).to_string();
        let out = Command::new(TRAIN)
            .args(["--resume", run.to_str().unwrap(), "--quiet", "--max-steps", &target])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn nonfinite_loss_stops_keeping_the_last_good_checkpoint_or_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 32, 32);
    // A weight decay of 1e30 (a real, if absurd, setting: the config accepts any finite value)
    // blows the weights up in the first update (still finite, ~1e28), so the second step's
    // forward pass overflows and its loss is NaN.
    let base = [
        &support::TINY_MODEL[..],
        &[
            "train.threads=1",
            "train.epochs=1",
            "train.log_every=1",
            "train.checkpoint_every=1",
            "optim.kind=\"sgd\"",
            "optim.weight_decay=1e30",
            "optim.warmup_epochs=0",
        ],
    ]
    .concat();
    // the reference: the same run stopped cleanly after its one good step
    let one = dir.path().join("one");
    let out =
        train(&train_shards, &one, &[sets(&base), vec!["--max-steps".into(), "1".into()]].concat()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // stop (the default): one line naming width and step, the step-1 checkpoint intact
    let stop = dir.path().join("stop");
    let out = train(&train_shards, &stop, &sets(&base)).output().unwrap();
    assert_one_line_error(
        &out,
        &["non-finite loss", "at width 1 in step 2", "last good checkpoint (step 1)", "skip_nonfinite_steps"],
    );
    assert_eq!(state(&stop)["step"], 1);
    assert_eq!(
        std::fs::read(stop.join("checkpoint.safetensors")).unwrap(),
        std::fs::read(one.join("checkpoint.safetensors")).unwrap(),
        "the last good checkpoint was overwritten"
    );
    assert_eq!(state(&stop)["weights_sha256"], state(&one)["weights_sha256"]);

    // skip: every later step is skipped and counted; nothing changes the state after step 1
    // (no update, no EMA, the BN running statistics of the NaN forward passes put back), so the
    // final checkpoint holds exactly the step-1 tensors
    let skip = dir.path().join("skip");
    let out = train(&train_shards, &skip, &sets(&[&base[..], &["train.skip_nonfinite_steps=true"]].concat()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trained 6 steps") && stdout.contains("5 non-finite steps skipped"), "{stdout}");
    let st = state(&skip);
    assert_eq!(
        (st["step"].as_u64(), st["skipped_nonfinite"].as_u64(), st["finished"].as_bool()),
        (Some(6), Some(5), Some(true))
    );
    assert_eq!(tensors(&skip.join("checkpoint.safetensors")), tensors(&one.join("checkpoint.safetensors")));
    let m = metrics(&skip);
    assert_eq!(m.len(), 6);
    assert!(m[0]["loss"].is_array() && m[0]["skipped_nonfinite"] == 0);
    for (i, line) in m[1..].iter().enumerate() {
        let reason = line["skip_reason"].as_str().unwrap_or_else(|| panic!("{line}"));
        assert!(reason.contains("at width 1") && reason.contains(&format!("in step {}", i + 2)), "{reason}");
        assert_eq!(line["skipped_nonfinite"], i as u64 + 1);
    }
}

/// True when this process runs as root (which ignores permission bits).
fn running_as_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    std::fs::metadata(&probe).unwrap().uid() == 0
}

#[test]
fn unwritable_output_location_is_found_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 4, 16);
    let extra = sets(&["model.base_channels=4", "loader.batch_size=4", "train.epochs=1"]);
    // a path under a regular file
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let out = train(&train_shards, &file.join("run"), &extra).output().unwrap();
    assert_one_line_error(&out, &["cannot create run directory", "plain-file"]);
    // a read-only folder (root ignores permission bits: then the binary runs as nobody)
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let mut cmd = train(&train_shards, &ro, &extra);
    if running_as_root(dir.path()) {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    assert_one_line_error(&out, &["is not writable", "Permission denied", "choose a writable --out"]);
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0, "nothing written, no probe left behind");
    // a writable location passes the same checks (probe and free space) and trains
    let ok = dir.path().join("ok");
    let out = train(&train_shards, &ok, &[extra, vec!["--max-steps".into(), "1".into()]].concat()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&ok)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|n| if n.starts_with("events.out.tfevents.") { "events.out.tfevents.*".into() } else { n })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "checkpoint.json",
            "checkpoint.safetensors",
            "config.toml",
            "curves_loss.png",
            "events.out.tfevents.*",
            "metrics.jsonl"
        ]
    );
    // a resume of a run that never saved a checkpoint is a clear error too
    let mut s = String::new();
    std::fs::File::open(ok.join("config.toml")).unwrap().read_to_string(&mut s).unwrap();
    let empty = dir.path().join("never-saved");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("config.toml"), s).unwrap();
    let out = Command::new(TRAIN).args(["--resume", empty.to_str().unwrap(), "--quiet"]).output().unwrap();
    assert_one_line_error(&out, &["has no checkpoint"]);
}

#[test]
fn every_rank_takes_the_same_steps_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    // 3 x 32 photos in shards of 40, 40, 16; without shard shuffle and with one reader stream per
    // rank, rank 0 reads shards 0 and 2 (56 photos: 3 batches of 16) and rank 1 shard 1 (40: 2
    // batches). Both must take 2 steps per epoch (without the cap rank 0 would take 3).
    let train_shards = shards(dir.path(), 32, 40);
    let extra = sets(&[
        "model.base_channels=4",
        "heads.hidden=32",
        "heads.out_dim=16",
        "loader.batch_size=16",
        "loader.readers=1",
        "loader.shard_shuffle=false",
        "train.precision=\"fp32\"",
        "train.threads=1",
        "train.epochs=2",
        "train.log_every=1",
    ]);
    // both ranks run together over c10d (Gloo on loopback): a rank that took a different number
    // of steps would leave the other waiting in a gradient all-reduce and fail
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let run = dir.path().join("run");
    let children: Vec<_> = ["0", "1"]
        .iter()
        .map(|rank| {
            train(&train_shards, &run, &extra)
                .env("RANK", rank)
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "rank {rank}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // metrics and checkpoints come from rank 0 only
    let epochs: Vec<u64> = metrics(&run).iter().map(|m| m["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![0, 0, 1, 1]);
    assert_eq!(state(&run)["steps_per_epoch"], 2);
}

#[test]
fn sigterm_saves_at_a_step_boundary_exits_143_and_the_same_command_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 32, 32); // 96 photos, 6 steps per epoch
                                                   // 50 epochs (300 steps) planned, 20 taken: far more than the run takes before SIGTERM lands
    let extra = sets(
        &[
            &support::TINY_MODEL[..],
            &["train.threads=1", "train.epochs=50", "train.log_every=1", "train.checkpoint_every=1000"],
        ]
        .concat(),
    );
    let job = |run: &Path| {
        let mut c = train(&train_shards, run, &extra);
        c.args(["--resume-if-exists", "--max-steps", "20"]);
        c
    };
    // A: the job uninterrupted
    let run_a = dir.path().join("a");
    let out = job(&run_a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // B: the same job, preempted after a few steps
    let run_b = dir.path().join("b");
    let mut child = job(&run_b).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(run_b.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 3 {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be preempted");
        assert!(Instant::now() < deadline, "the run made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // 143 = 128 + SIGTERM (15)
    assert_eq!(out.status.code(), Some(143), "stdout: {stdout} stderr: {stderr}");
    assert!(stderr.contains("stopped by SIGTERM: checkpoint saved"), "{stderr}");
    let steps: u64 = stdout
        .split("interrupted after ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'interrupted after N steps' in {stdout}"));
    assert!((3..20).contains(&steps), "{stdout}");
    assert_eq!(state(&run_b)["step"], steps, "the checkpoint is the step boundary it stopped at");
    // the requeued job: the same command line continues from the checkpoint ...
    let out = job(&run_b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("resumed at step {steps}, trained {} steps", 20 - steps)), "{stdout}");
    // ... and ends byte-identical to the uninterrupted job
    let (ta, tb) = (tensors(&run_a.join("checkpoint.safetensors")), tensors(&run_b.join("checkpoint.safetensors")));
    assert_eq!(ta.len(), tb.len());
    for (name, a) in &ta {
        assert_eq!(Some(a), tb.get(name), "{name} differs after the preempted job resumed");
    }
    // a requeue after the job finished has nothing to do
    let out = job(&run_b).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(state(&run_b)["step"], 20);
}

#[test]
fn resume_checks_the_shards_by_content_and_location() {
    let dir = tempfile::tempdir().unwrap();
    let train_shards = shards(dir.path(), 32, 32);
    let extra = sets(&[&support::TINY_MODEL[..], &["train.threads=1", "train.epochs=50"]].concat());
    let run = dir.path().join("run");
    let out = train(&train_shards, &run, &extra).args(["--max-steps", "2"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let resume = |extra: &[&str]| {
        Command::new(TRAIN)
            .args(["--resume", run.to_str().unwrap(), "--quiet", "--max-steps", "3"])
            .args(extra)
            .output()
            .unwrap()
    };
    // moved: the run's own shards are gone from where it read them
    let moved = dir.path().join("moved");
    std::fs::rename(&train_shards, &moved).unwrap();
    assert_one_line_error(&resume(&[]), &["not where it read them any more", "pass --shards NEW_LOCATION"]);
    // re-made under the same names with other content: found through the manifest's sha256
    let remade = dir.path().join("remade");
    let src = dir.path().join("src");
    let o = Command::new(SHARD)
        .args(["--input", src.to_str().unwrap(), "--output", remade.to_str().unwrap()])
        .args(["--samples-per-shard", "32", "--seed", "7"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = assert_one_line_error(
        &resume(&["--shards", remade.to_str().unwrap()]),
        &["differs from the one the run was trained on"],
    );
    assert!(e.contains("train-000000.tar") || e.contains(".tar"), "{e}");
    // the shards in their new location: the run continues
    let out = resume(&["--shards", moved.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(state(&run)["step"], 3);
}

#[test]
fn configuration_errors_are_found_before_any_data_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-shards-here");
    let run = dir.path().join("run");
    // the shards do not exist, but the config error is the one reported
    let out = train(missing.to_str().unwrap(), &run, &sets(&["model.base_channels=0"])).output().unwrap();
    assert_one_line_error(&out, &["base_channels = 0"]);
    let out = train(missing.to_str().unwrap(), &run, &sets(&["heads.hidden=0"])).output().unwrap();
    assert_one_line_error(&out, &["heads.hidden = 0"]);
    let out = train(missing.to_str().unwrap(), &run, &sets(&["loader.workers=0"])).output().unwrap();
    assert_one_line_error(&out, &["loader.workers"]);
    // --max-steps 0 is refused by the command line itself
    let out = train(missing.to_str().unwrap(), &run, &["--max-steps".into(), "0".into()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-steps"));
    assert!(!run.exists(), "nothing was written");
}
