//! The fatal-error path of a remote shard's byte stream: when a shard cannot be read for good,
//! the pump sends a [`PipelineError`] wrapped in an I/O error ([`FatalRemote`]); [`FatalTap`],
//! wrapped around the stream by the reader, takes it back out of the tar parser's I/O error so
//! the epoch ends with the error itself instead of counting a truncated shard.
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::source::ShardStream;
use crate::PipelineError;

/// Error carried through the byte stream when a shard cannot be read: downcast by
/// [`FatalTap`] in the loader so that the epoch ends with the [`PipelineError`] itself.
#[derive(Debug)]
pub(super) struct FatalRemote(pub(super) PipelineError);
impl std::fmt::Display for FatalRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for FatalRemote {}

/// The [`PipelineError`] carried by a remote stream's read error, or the error back.
pub(super) fn take_fatal(e: io::Error) -> std::result::Result<PipelineError, io::Error> {
    if e.get_ref().is_some_and(|i| i.is::<FatalRemote>()) {
        let inner = e.into_inner().expect("checked above");
        match inner.downcast::<FatalRemote>() {
            Ok(f) => Ok(f.0),
            Err(other) => Err(io::Error::other(other)),
        }
    } else {
        Err(e)
    }
}

/// Where [`FatalTap`] leaves the error that ended a remote stream.
#[derive(Clone, Default)]
pub(crate) struct FatalSlot(Arc<Mutex<Option<PipelineError>>>);

impl FatalSlot {
    /// The failure that ended the tapped stream, if any (taken: the next call returns `None`).
    pub(crate) fn take(&self) -> Option<PipelineError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn put(&self, error: PipelineError) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }
}

/// Wraps a shard stream; a read error carrying a remote-shard failure is stored in the slot (and
/// passed on as a plain I/O error with the same text), so the loader can end the epoch with it
/// instead of counting a truncated shard.
pub(crate) struct FatalTap {
    inner: ShardStream,
    slot: FatalSlot,
}

impl FatalTap {
    /// Wrap `inner`; returns the wrapped stream and its slot.
    pub(crate) fn wrap(inner: ShardStream) -> (ShardStream, FatalSlot) {
        let slot = FatalSlot::default();
        (Box::new(FatalTap { inner, slot: slot.clone() }), slot)
    }
}

impl AsyncRead for FatalTap {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => match take_fatal(e) {
                Ok(fatal) => {
                    let text = fatal.to_string();
                    self.slot.put(fatal);
                    Poll::Ready(Err(io::Error::other(text)))
                }
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}
