//! The batch assembler thread: re-orders the workers' results by stream position, copies each
//! sample's views once into the batch tensors (transparent huge pages on the CPU, pinned memory
//! for CUDA), counts and logs skipped data, and sends [`Batch`]es into the prefetch queue.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tch::{Device, Tensor};

use crate::loader::channel::{send_or_cancel, TICK};
use crate::loader::config::LoaderMode;
use crate::loader::stats::LoaderStats;
use crate::loader::worker::{BufferPool, Outcome};
use crate::{PipelineError, Result};

/// One batch. Tensors are on the CPU (pinned memory when the loader's device is CUDA, so the
/// trainer can `to_device_(.., non_blocking = true)`).
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, H, W]` f32, normalised (view A in Train mode, the centre view in Eval mode).
    pub view_a: Tensor,
    /// `[B, C, H, W]` f32 view B in Train mode; `None` in Eval mode.
    pub view_b: Option<Tensor>,
    /// `[B]` i64 class indices (-1 for unlabelled samples in Train mode).
    pub labels: Tensor,
    /// Sample keys, in batch order.
    pub keys: Vec<String>,
    /// Position in the rank's epoch stream after this batch's last sample (see [`crate::loader`],
    /// "Positions and resuming"): pass it to [`crate::loader::Loader::epoch_from`] to continue
    /// after this batch.
    pub end_position: u64,
}

/// The batch thread of one epoch.
pub(super) struct Assembler {
    pub(super) mode: LoaderMode,
    pub(super) pool: BufferPool,
    pub(super) batch_size: usize,
    pub(super) drop_last: bool,
    pub(super) strict: bool,
    pub(super) channels: i64,
    pub(super) size: i64,
    pub(super) device: Device,
    pub(super) stats: Arc<LoaderStats>,
    pub(super) epoch: u64,
    pub(super) rank: usize,
    /// First stream position to assemble (see [`crate::loader::Loader::epoch_from`]).
    pub(super) start: u64,
}

/// The batch being filled: samples are copied straight into the batch tensors (pinned when the
/// device is CUDA), one copy per view.
#[derive(Default)]
struct Pending {
    a: Option<Tensor>,
    b: Option<Tensor>,
    labels: Vec<i64>,
    keys: Vec<String>,
}

/// Ask Linux for transparent huge pages on the 2 MiB-aligned interior of a fresh buffer at
/// `addr` of `len` bytes, before it is first written: a large batch tensor is a fresh mapping
/// each time, and faulting it in 4 KiB pages costs ~0.4 ms per 224-px sample; 2 MiB pages cut
/// the faults 512-fold. Advice only: a refusal (THP off, other OS) changes nothing.
fn advise_huge_pages(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (addr + HUGE - 1) & !(HUGE - 1);
        let end = (addr + len) & !(HUGE - 1);
        if end > start {
            // SAFETY: madvise only attaches advice to pages of [start, end), a sub-range of the
            // buffer's own allocation; it does not touch or change their contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

/// Copy `src` into sample `slot` of the contiguous f32 CPU tensor `t` (`[B, C, S, S]`).
fn write_slot(t: &Tensor, slot: usize, src: &[f32]) -> Result<()> {
    let numel = t.numel();
    if t.kind() != tch::Kind::Float || t.device() != Device::Cpu || !t.is_contiguous() || (slot + 1) * src.len() > numel
    {
        return Err(PipelineError::Internal(format!("batch tensor cannot hold sample {slot} ({} values)", src.len())));
    }
    // SAFETY: `t` is a contiguous CPU f32 tensor of `numel` elements that this thread allocated
    // and alone references until the batch is sent; the destination range
    // [slot * len, (slot + 1) * len) lies inside it (checked above) and cannot overlap `src`.
    unsafe {
        let dst = (t.data_ptr() as *mut f32).add(slot * src.len());
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
    }
    Ok(())
}

impl Assembler {
    /// A new uninitialised `[batch_size, C, S, S]` f32 batch tensor (pinned for CUDA).
    fn new_tensor(&self) -> Result<Tensor> {
        let t = Tensor::f_empty(
            [self.batch_size as i64, self.channels, self.size, self.size],
            (tch::Kind::Float, Device::Cpu),
        )
        .map_err(|e| PipelineError::Tensor(e.to_string()))?;
        if self.device.is_cuda() {
            return self.pin(t);
        }
        advise_huge_pages(t.data_ptr() as usize, t.numel() * 4);
        Ok(t)
    }
    fn pin(&self, t: Tensor) -> Result<Tensor> {
        if self.device.is_cuda() {
            t.f_pin_memory(self.device).map_err(|e| PipelineError::Tensor(format!("pin_memory: {e}")))
        } else {
            Ok(t)
        }
    }
    /// Copy one sample into the pending batch and recycle its buffers.
    fn push(&self, cur: &mut Pending, a: Vec<f32>, b: Option<Vec<f32>>) -> Result<()> {
        let slot = cur.keys.len();
        if cur.a.is_none() {
            cur.a = Some(self.new_tensor()?);
            if self.mode == LoaderMode::Train {
                cur.b = Some(self.new_tensor()?);
            }
        }
        if let Some(t) = &cur.a {
            write_slot(t, slot, &a)?;
        }
        self.pool.put(a);
        if let Some(b) = b {
            if let Some(t) = &cur.b {
                write_slot(t, slot, &b)?;
            }
            self.pool.put(b);
        }
        Ok(())
    }
    fn build(&self, p: Pending) -> Result<Batch> {
        let n = p.keys.len() as i64;
        let cut = |t: Option<Tensor>| -> Result<Option<Tensor>> {
            match t {
                Some(t) if n < self.batch_size as i64 => {
                    t.f_narrow(0, 0, n).map(Some).map_err(|e| PipelineError::Tensor(e.to_string()))
                }
                other => Ok(other),
            }
        };
        let view_a = cut(p.a)?.ok_or_else(|| PipelineError::Internal("empty batch".into()))?;
        let view_b = cut(p.b)?;
        let labels = self.pin(Tensor::f_from_slice(&p.labels).map_err(|e| PipelineError::Tensor(e.to_string()))?)?;
        Ok(Batch { view_a, view_b, labels, keys: p.keys, end_position: 0 })
    }

    pub(super) fn run(self, rx: Receiver<(u64, Outcome)>, tx: Sender<Result<Batch>>, cancel: Arc<AtomicBool>) {
        let start = Instant::now();
        let (mut images, mut batches, mut skipped) = (0u64, 0u64, 0u64);
        let mut next = self.start;
        let mut reorder: BTreeMap<u64, Outcome> = BTreeMap::new();
        let mut cur = Pending::default();
        'outer: loop {
            match rx.recv_timeout(TICK) {
                Ok((seq, out)) => {
                    reorder.insert(seq, out);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Some(out) = reorder.remove(&next) {
                next += 1;
                match out {
                    Outcome::Ok { key, a, b, label } => {
                        if let Err(e) = self.push(&mut cur, a, b) {
                            cancel.store(true, Ordering::SeqCst);
                            let _ = tx.send_timeout(Err(e), Duration::from_secs(3600));
                            return;
                        }
                        cur.labels.push(label);
                        cur.keys.push(key);
                        if cur.keys.len() == self.batch_size {
                            let n = cur.keys.len() as u64;
                            let batch = self.build(std::mem::take(&mut cur)).map(|b| Batch { end_position: next, ..b });
                            let ok = batch.is_ok();
                            if !send_or_cancel(&tx, batch, &cancel) || !ok {
                                return;
                            }
                            images += n;
                            batches += 1;
                            self.stats.images.fetch_add(n, Ordering::Relaxed);
                            self.stats.batches.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Outcome::Fatal(err) => {
                        cancel.store(true, Ordering::SeqCst);
                        let _ = tx.send_timeout(Err(err), Duration::from_secs(3600));
                        break 'outer;
                    }
                    Outcome::Bad { shard, key, reason, detail } => {
                        self.stats.add_skip(reason);
                        skipped += 1;
                        tracing::warn!(shard = %shard, key = %key, reason = reason.as_str(), "skipping bad data: {detail}");
                        if self.strict {
                            let err = if reason.is_shard_level() {
                                PipelineError::BadShard { shard: shard.to_string(), key, reason: detail }
                            } else {
                                PipelineError::BadSample { shard: shard.to_string(), key, reason: detail }
                            };
                            cancel.store(true, Ordering::SeqCst);
                            let _ = tx.send_timeout(Err(err), Duration::from_secs(3600));
                            break 'outer;
                        }
                    }
                }
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        if !reorder.is_empty() {
            let _ = tx.send(Err(PipelineError::Internal(format!(
                "{} results missing before sequence {next}",
                reorder.len()
            ))));
            return;
        }
        if !cur.keys.is_empty() && !self.drop_last {
            let n = cur.keys.len() as u64;
            let batch = self.build(cur).map(|b| Batch { end_position: next, ..b });
            if !send_or_cancel(&tx, batch, &cancel) {
                return;
            }
            images += n;
            batches += 1;
            self.stats.images.fetch_add(n, Ordering::Relaxed);
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        let secs = start.elapsed().as_secs_f64();
        tracing::info!(
            epoch = self.epoch,
            rank = self.rank,
            images,
            batches,
            skipped,
            images_per_s = images as f64 / secs.max(1e-9),
            "loader epoch done: {}",
            self.stats.summary()
        );
    }
}
