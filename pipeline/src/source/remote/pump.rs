//! Streaming one remote shard: the GET (retried within the outage budget), the pump task that
//! moves body chunks into a byte-bounded buffer (a semaphore of one permit per byte; re-opened
//! with a range request from the delivered offset when the body breaks) and the read side the
//! tar parser reads ([`RemoteReader`]).
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::source::remote::config::RemoteOptions;
use crate::source::remote::fatal::FatalRemote;
use crate::source::remote::retry::{one_line_error, tidy_cause, Failure, Outage};
use crate::source::remote::stats::RemoteStats;
use crate::{PipelineError, Result};

/// One shard being fetched: the store, the object, the settings and the counters.
pub(super) struct Fetch {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) path: StorePath,
    pub(super) url: Arc<str>,
    pub(super) opts: Arc<RemoteOptions>,
    pub(super) stats: Arc<RemoteStats>,
}

impl Fetch {
    fn give_up(&self, outage: &Outage, offset: u64, cause: String, failure: Failure) -> PipelineError {
        let hint = match failure {
            Failure::Transient => format!(
                "the server stayed unreachable; check the network and the server, or raise remote.max_retries ({}) / remote.max_retry_secs ({})",
                self.opts.max_retries,
                self.opts.max_retry_time.as_secs_f64()
            ),
            Failure::NotFound => "the object does not exist; check the shard pattern".to_string(),
            Failure::Fatal => "this is not retried; check the URL and the credentials (see README, Remote shards)".to_string(),
        };
        PipelineError::Remote {
            url: self.url.to_string(),
            attempts: outage.failures.max(1),
            secs: outage.elapsed().as_secs_f64(),
            offset,
            cause,
            hint,
            not_found: failure == Failure::NotFound,
        }
    }

    /// GET the object from byte `offset` (a range request when > 0), retrying transient failures
    /// within the outage budget.
    pub(super) async fn get_from(&self, offset: u64, etag: Option<&str>, outage: &mut Outage) -> Result<GetResult> {
        loop {
            let options = GetOptions {
                range: (offset > 0).then_some(GetRange::Offset(offset)),
                if_match: etag.map(str::to_string),
                ..GetOptions::default()
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let err = match self.store.get_opts(&self.path, options).await {
                Ok(r) if r.range.start == offset => return Ok(r),
                Ok(r) => {
                    let cause =
                        format!("asked for bytes from {offset}, the server sent {}..{}", r.range.start, r.range.end);
                    outage.fail(&self.opts, Failure::Fatal);
                    return Err(self.give_up(outage, offset, cause, Failure::Fatal));
                }
                Err(e) => e,
            };
            let cause = tidy_cause(&one_line_error(&err));
            let failure = Failure::of(&err);
            let Some(delay) = outage.fail(&self.opts, failure) else {
                return Err(self.give_up(outage, offset, cause, failure));
            };
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %self.url, offset, attempt = outage.failures, delay_ms = delay.as_millis() as u64, "remote shard request failed, retrying: {cause}");
            tokio::time::sleep(delay).await;
        }
    }
}

/// A chunk in a shard's buffer; its permits (one per byte) go back to the pump when dropped.
pub(super) struct Chunk {
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
    stats: Arc<RemoteStats>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // `bytes` has been consumed (or the reader is gone): the chunk is no longer buffered.
        self.stats.buffered_bytes.fetch_sub(self.len0(), Ordering::Relaxed);
    }
}

impl Chunk {
    fn len0(&self) -> u64 {
        // Length at creation; `bytes` is advanced by Buf::advance so we keep it in the permit.
        self._permit.num_permits() as u64
    }
}

impl Buf for Chunk {
    fn remaining(&self) -> usize {
        self.bytes.remaining()
    }
    fn chunk(&self) -> &[u8] {
        self.bytes.chunk()
    }
    fn advance(&mut self, cnt: usize) {
        self.bytes.advance(cnt)
    }
}

/// Move the body of `first` (and of any range re-open) into the shard buffer.
pub(super) async fn pump(
    fetch: Fetch,
    first: GetResult,
    tx: mpsc::UnboundedSender<io::Result<Chunk>>,
    sem: Arc<Semaphore>,
    cap: u32,
    received: Arc<AtomicU64>,
) {
    let size = first.meta.size;
    let etag = first.meta.e_tag.clone();
    let mut offset = first.range.start;
    let mut body: BoxStream<'static, object_store::Result<Bytes>> = first.into_stream();
    let mut outage = Outage::default();
    let stats = fetch.stats.clone();
    loop {
        let (cause, failure) = match body.next().await {
            Some(Ok(mut bytes)) => {
                if bytes.is_empty() {
                    continue;
                }
                outage.reset();
                while !bytes.is_empty() {
                    let n = bytes.len().min(cap as usize);
                    let part = bytes.split_to(n);
                    let Ok(permit) = sem.clone().acquire_many_owned(n as u32).await else { return };
                    let len = part.len() as u64;
                    offset += len;
                    received.fetch_add(len, Ordering::Relaxed);
                    stats.bytes.fetch_add(len, Ordering::Relaxed);
                    let now = stats.buffered_bytes.fetch_add(len, Ordering::Relaxed) + len;
                    stats.peak_buffered_bytes.fetch_max(now, Ordering::Relaxed);
                    if tx.send(Ok(Chunk { bytes: part, _permit: permit, stats: stats.clone() })).is_err() {
                        return; // reader gone
                    }
                }
                continue;
            }
            None if offset >= size => return, // complete: dropping tx ends the stream
            Some(Err(_)) if offset >= size => return,
            None => (format!("connection closed after byte {offset} of {size}"), Failure::Transient),
            Some(Err(e)) => (tidy_cause(&one_line_error(&e)), Failure::of(&e)),
        };
        let Some(delay) = outage.fail(&fetch.opts, failure) else {
            let err = fetch.give_up(&outage, offset, cause, failure);
            let _ = tx.send(Err(io::Error::other(FatalRemote(err))));
            return;
        };
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(url = %fetch.url, offset, attempt = outage.failures, delay_ms = delay.as_millis() as u64, "remote shard stream broke, resuming with a range request: {cause}");
        tokio::time::sleep(delay).await;
        match fetch.get_from(offset, etag.as_deref(), &mut outage).await {
            Ok(r) => {
                stats.resumed.fetch_add(1, Ordering::Relaxed);
                body = r.into_stream();
            }
            Err(err) => {
                let _ = tx.send(Err(io::Error::other(FatalRemote(err))));
                return;
            }
        }
    }
}

/// The read side of an open remote shard. A chunk is dropped (its bytes leave the buffer budget)
/// as soon as it is fully read, before waiting for the next one.
pub(super) struct RemoteReader {
    pub(super) rx: mpsc::UnboundedReceiver<io::Result<Chunk>>,
    pub(super) cur: Option<Chunk>,
    pub(super) done: bool,
    pub(super) pump: tokio::task::AbortHandle,
    pub(super) received: Arc<AtomicU64>,
    pub(super) first_read: bool,
    pub(super) stats: Arc<RemoteStats>,
}

impl AsyncRead for RemoteReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.first_read {
            self.first_read = true;
            let ahead = self.received.load(Ordering::Relaxed);
            self.stats.ahead_bytes.fetch_add(ahead, Ordering::Relaxed);
        }
        loop {
            if let Some(c) = self.cur.as_mut() {
                let n = c.remaining().min(buf.remaining());
                buf.put_slice(&c.chunk()[..n]);
                c.advance(n);
                if !c.has_remaining() {
                    self.cur = None;
                }
                return Poll::Ready(Ok(()));
            }
            if self.done || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(c))) => {
                    if c.has_remaining() {
                        self.cur = Some(c);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl Drop for RemoteReader {
    fn drop(&mut self) {
        self.pump.abort();
        self.stats.open_shards.fetch_sub(1, Ordering::Relaxed);
    }
}
