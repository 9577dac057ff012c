//! The CPU worker pool (crossbeam threads): each worker decodes a sample's image and writes its
//! views (twin views in Train mode, the centre view in Eval mode) into view buffers recycled
//! through the [`BufferPool`]; bad samples become skip outcomes.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::augment::{AugmentWorkspace, EvalTransform, TwinViewTransform};
use crate::loader::channel::{send_or_cancel, TICK};
use crate::loader::config::LoaderMode;
use crate::loader::merge::{WorkBody, WorkItem};
use crate::loader::stats::SkipReason;
use crate::shard::RawSample;
use crate::{mix_seed, PipelineError};

/// What every worker of an epoch shares: the mode, the seeds of the augmentations and the
/// transforms.
pub(super) struct WorkerCtx {
    pub(super) mode: LoaderMode,
    pub(super) seed: u64,
    pub(super) epoch: u64,
    pub(super) rank: u64,
    pub(super) twin: Arc<TwinViewTransform>,
    pub(super) eval: Arc<EvalTransform>,
    pub(super) pool: BufferPool,
}

/// View buffers (`view_len` f32 each) recycled from the assembler back to the workers, so a
/// warm loader allocates no per-sample output buffer.
#[derive(Clone)]
pub(super) struct BufferPool {
    tx: Sender<Vec<f32>>,
    rx: Receiver<Vec<f32>>,
    len: usize,
}

impl BufferPool {
    pub(super) fn new(capacity: usize, len: usize) -> Self {
        let (tx, rx) = bounded(capacity);
        BufferPool { tx, rx, len }
    }
    pub(super) fn get(&self) -> Vec<f32> {
        match self.rx.try_recv() {
            Ok(v) => v,
            Err(_) => vec![0f32; self.len],
        }
    }
    pub(super) fn put(&self, v: Vec<f32>) {
        if v.len() == self.len {
            let _ = self.tx.try_send(v);
        }
    }
}

/// A worker's result for one stream position.
pub(super) enum Outcome {
    Ok { key: String, a: Vec<f32>, b: Option<Vec<f32>>, label: i64 },
    Bad { shard: Arc<str>, key: String, reason: SkipReason, detail: String },
    Fatal(PipelineError),
}

const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

fn process(ctx: &WorkerCtx, ws: &mut AugmentWorkspace, seq: u64, shard: Arc<str>, sample: RawSample) -> Outcome {
    let bad = |reason: SkipReason, detail: String| Outcome::Bad {
        shard: shard.clone(),
        key: sample.key.clone(),
        reason,
        detail,
    };
    let Some(bytes) = IMAGE_EXTS.iter().find_map(|e| sample.files.get(*e)) else {
        let have: Vec<&str> = sample.files.keys().map(|s| s.as_str()).collect();
        return bad(SkipReason::NoImage, format!("no jpg/jpeg/png/webp member (members: {})", have.join(", ")));
    };
    let label = match sample.files.get("cls") {
        Some(b) => match std::str::from_utf8(b).ok().and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(l) => l,
            None => return bad(SkipReason::BadLabel, format!(".cls is not an ASCII integer ({} bytes)", b.len())),
        },
        None if ctx.mode == LoaderMode::Train => -1,
        None => return bad(SkipReason::MissingLabel, "no .cls member (labels are required in eval mode)".into()),
    };
    if bytes.is_empty() {
        return bad(SkipReason::EmptyImage, "zero-byte image".into());
    }
    let msg = |e: PipelineError| match e {
        PipelineError::ImageData(m) => m,
        other => other.to_string(),
    };
    match ctx.mode {
        LoaderMode::Train => {
            let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[ctx.seed, ctx.epoch, ctx.rank, seq]));
            let (mut a, mut b) = (ctx.pool.get(), ctx.pool.get());
            match ctx.twin.decode_apply_into(bytes, &mut rng, ws, &mut a, &mut b) {
                Ok(()) => Outcome::Ok { key: sample.key.clone(), a, b: Some(b), label },
                Err(e) => {
                    ctx.pool.put(a);
                    ctx.pool.put(b);
                    bad(SkipReason::CorruptImage, msg(e))
                }
            }
        }
        LoaderMode::Eval => {
            let mut a = ctx.pool.get();
            match ctx.eval.decode_apply_into(bytes, ws, &mut a) {
                Ok(()) => Outcome::Ok { key: sample.key.clone(), a, b: None, label },
                Err(e) => {
                    ctx.pool.put(a);
                    bad(SkipReason::CorruptImage, msg(e))
                }
            }
        }
    }
}

/// One worker thread: process work items until the merger is done or the epoch is cancelled.
pub(super) fn worker(ctx: WorkerCtx, rx: Receiver<WorkItem>, tx: Sender<(u64, Outcome)>, cancel: Arc<AtomicBool>) {
    let mut ws = AugmentWorkspace::new();
    loop {
        let item = match rx.recv_timeout(TICK) {
            Ok(i) => i,
            Err(RecvTimeoutError::Timeout) => {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let out = match item.body {
            WorkBody::Problem { key, reason, detail } => Outcome::Bad { shard: item.shard, key, reason, detail },
            WorkBody::Fatal(e) => Outcome::Fatal(e),
            WorkBody::Sample(s) => process(&ctx, &mut ws, item.seq, item.shard, s),
        };
        if !send_or_cancel(&tx, (item.seq, out), &cancel) {
            return;
        }
    }
}
