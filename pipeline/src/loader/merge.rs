//! The merger thread: reader streams merged round-robin (stream 0, 1, …, skipping finished
//! ones), the seeded shuffle buffer, and stream positions: every item (a sample, or a skipped
//! sample/shard) takes one position in merge order; positions before the resume point are
//! consumed but not handed to the workers.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::loader::channel::{send_or_cancel, TICK};
use crate::loader::read::StreamMsg;
use crate::loader::stats::SkipReason;
use crate::shard::RawSample;
use crate::PipelineError;

/// What a worker gets for one stream position.
pub(super) enum WorkBody {
    Sample(RawSample),
    Problem { key: String, reason: SkipReason, detail: String },
    Fatal(PipelineError),
}

/// One stream position handed to the workers.
pub(super) struct WorkItem {
    pub(super) seq: u64,
    pub(super) shard: Arc<str>,
    pub(super) body: WorkBody,
}

/// Merge `rxs` round-robin through a shuffle buffer of `shuffle` samples (drawn from `rng`),
/// numbering the items from 0 and sending those from position `start` on to the workers.
pub(super) fn merge(
    mut rxs: Vec<tokio::sync::mpsc::Receiver<StreamMsg>>,
    handle: tokio::runtime::Handle,
    shuffle: usize,
    mut rng: ChaCha8Rng,
    start: u64,
    tx: Sender<WorkItem>,
    cancel: Arc<AtomicBool>,
) {
    let mut live: Vec<bool> = vec![true; rxs.len()];
    let mut buffer: Vec<(Arc<str>, RawSample)> = Vec::with_capacity(shuffle);
    let mut seq = 0u64;
    let emit = |shard: Arc<str>, body: WorkBody, seq: &mut u64| -> bool {
        if *seq < start {
            // before the resume position: consumed (so the positions and the shuffle buffer's
            // draws stay those of the full epoch) but neither decoded nor augmented
            *seq += 1;
            return true;
        }
        let ok = send_or_cancel(&tx, WorkItem { seq: *seq, shard, body }, &cancel);
        *seq += 1;
        ok
    };
    while live.iter().any(|l| *l) {
        for s in 0..rxs.len() {
            if !live[s] {
                continue;
            }
            // Wait for stream s (deterministic round-robin), checking for cancellation.
            let msg = loop {
                if cancel.load(Ordering::Relaxed) {
                    return;
                }
                let rx = &mut rxs[s];
                match handle.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
                    Ok(m) => break m,
                    Err(_) => continue,
                }
            };
            match msg {
                None => live[s] = false,
                Some(StreamMsg::Problem { shard, key, reason, detail }) => {
                    if !emit(shard, WorkBody::Problem { key, reason, detail }, &mut seq) {
                        return;
                    }
                }
                Some(StreamMsg::Fatal { shard, error }) => {
                    live[s] = false;
                    if !emit(shard, WorkBody::Fatal(error), &mut seq) {
                        return;
                    }
                }
                Some(StreamMsg::Sample { shard, sample }) => {
                    if shuffle == 0 {
                        if !emit(shard, WorkBody::Sample(sample), &mut seq) {
                            return;
                        }
                    } else if buffer.len() < shuffle {
                        buffer.push((shard, sample));
                    } else {
                        let i = rng.gen_range(0..buffer.len());
                        let (sh, sa) = std::mem::replace(&mut buffer[i], (shard, sample));
                        if !emit(sh, WorkBody::Sample(sa), &mut seq) {
                            return;
                        }
                    }
                }
            }
        }
    }
    while !buffer.is_empty() {
        let i = rng.gen_range(0..buffer.len());
        let (sh, sa) = buffer.swap_remove(i);
        if !emit(sh, WorkBody::Sample(sa), &mut seq) {
            return;
        }
    }
}
