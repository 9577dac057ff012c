//! The reader streams (tokio): each opens its planned shards through their [`ShardSource`]
//! (the next [`ShardSource::read_ahead`] ones while the current one is parsed), parses each on a
//! blocking thread (tar, zstd or gzip) and sends the samples, the skipped shards and a source's
//! fatal failure, in stream order, to the merger.
use std::sync::Arc;

use crate::loader::stats::SkipReason;
use crate::shard::{open_shard_reader, RawSample};
use crate::source::{is_fatal, FatalTap, ShardSource};
use crate::{PipelineError, Result};

/// Samples a reader stream may send ahead of the merger.
pub(super) const STREAM_QUEUE: usize = 64;

/// What a reader stream sends the merger, in stream order.
pub(super) enum StreamMsg {
    Sample {
        shard: Arc<str>,
        sample: RawSample,
    },
    Problem {
        shard: Arc<str>,
        key: String,
        reason: SkipReason,
        detail: String,
    },
    /// A remote shard failed for good: the epoch ends with this error after the samples before it.
    Fatal {
        shard: Arc<str>,
        error: PipelineError,
    },
}

/// A shard being opened ahead of use; aborted when dropped (epoch stopped).
struct Opening(tokio::task::JoinHandle<Result<crate::source::ShardStream>>);
impl Drop for Opening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One reader stream: open each planned shard through its source (the next
/// [`ShardSource::read_ahead`] shards are opened while the current one is parsed), parse it on a
/// blocking thread, send samples (filtered by `j % n == g` when every stream reads all shards).
pub(super) async fn read_stream(
    plan: Vec<(usize, String, Arc<dyn ShardSource>)>,
    filter: Option<(usize, usize)>,
    tx: tokio::sync::mpsc::Sender<StreamMsg>,
) {
    let mut j: u64 = 0;
    let mut plan = plan.into_iter().peekable();
    let mut opening: std::collections::VecDeque<(usize, String, Opening)> = std::collections::VecDeque::new();
    loop {
        while let Some((_, _, source)) = plan.peek() {
            if opening.len() > source.read_ahead() {
                break;
            }
            let Some((i, url, source)) = plan.next() else { break };
            let u = url.clone();
            opening.push_back((i, url, Opening(tokio::spawn(async move { source.open(&u).await }))));
        }
        let Some((i, url, mut task)) = opening.pop_front() else { return };
        let opened = match (&mut task.0).await {
            Ok(r) => r,
            Err(e) => Err(PipelineError::Internal(format!("shard open task failed: {e}"))),
        };
        let report = filter.is_none_or(|(n, g)| i % n == g);
        let shard: Arc<str> = Arc::from(url.as_str());
        let stream = match opened {
            Ok(s) => s,
            Err(error) if is_fatal(&error) => {
                let _ = tx.send(StreamMsg::Fatal { shard, error }).await;
                return;
            }
            Err(e) => {
                if report {
                    let msg = StreamMsg::Problem {
                        shard,
                        key: "<none>".into(),
                        reason: SkipReason::UnreadableShard,
                        detail: e.to_string(),
                    };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let tx2 = tx.clone();
        let start = j;
        let res = tokio::task::spawn_blocking(move || parse_shard(stream, shard, start, filter, report, tx2)).await;
        match res {
            Ok(Some(next_j)) => j = next_j,
            _ => return, // consumer gone (or parse thread failed)
        }
    }
}

/// Parse one shard; returns the next global sample counter, `None` when the consumer is gone.
fn parse_shard(
    stream: crate::source::ShardStream,
    shard: Arc<str>,
    mut j: u64,
    filter: Option<(usize, usize)>,
    report: bool,
    tx: tokio::sync::mpsc::Sender<StreamMsg>,
) -> Option<u64> {
    let (stream, fatal) = FatalTap::wrap(stream);
    let fatal_error = || fatal.take();
    let bridge = tokio_util::io::SyncIoBridge::new(stream);
    let reader = match open_shard_reader(Box::new(bridge), &shard) {
        Ok(r) => r,
        Err(e) => {
            if let Some(error) = fatal_error() {
                let _ = tx.blocking_send(StreamMsg::Fatal { shard, error });
                return None;
            }
            if report {
                let msg = StreamMsg::Problem {
                    shard,
                    key: "<none>".into(),
                    reason: SkipReason::UnreadableShard,
                    detail: e.to_string(),
                };
                tx.blocking_send(msg).ok()?;
            }
            return Some(j);
        }
    };
    let mut count = 0u64;
    for item in reader {
        match item {
            Ok(sample) => {
                count += 1;
                let keep = filter.is_none_or(|(n, g)| j % n as u64 == g as u64);
                j += 1;
                if keep {
                    tx.blocking_send(StreamMsg::Sample { shard: shard.clone(), sample }).ok()?;
                }
            }
            Err(e) => {
                if let Some(error) = fatal_error() {
                    let _ = tx.blocking_send(StreamMsg::Fatal { shard, error });
                    return None;
                }
                if report {
                    let (key, detail) = match &e {
                        PipelineError::BadShard { key, reason, .. } => (key.clone(), reason.clone()),
                        other => ("<none>".to_string(), other.to_string()),
                    };
                    let msg =
                        StreamMsg::Problem { shard: shard.clone(), key, reason: SkipReason::TruncatedShard, detail };
                    tx.blocking_send(msg).ok()?;
                }
                return Some(j);
            }
        }
    }
    if count == 0 && report {
        let msg = StreamMsg::Problem {
            shard,
            key: "<none>".into(),
            reason: SkipReason::EmptyShard,
            detail: "shard holds no sample".into(),
        };
        tx.blocking_send(msg).ok()?;
    }
    Some(j)
}
