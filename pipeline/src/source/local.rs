//! Local shards: plain paths and `file://` URLs.
use crate::source::{OpenFuture, ShardSource, ShardStream};
use crate::PipelineError;

/// Local files, opened with `tokio::fs::File` (accepts plain paths and `file://` URLs).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalSource;

impl ShardSource for LocalSource {
    fn open<'a>(&'a self, url: &'a str) -> OpenFuture<'a> {
        Box::pin(async move {
            let path = url.strip_prefix("file://").unwrap_or(url);
            let f = tokio::fs::File::open(path).await.map_err(|e| PipelineError::read(path, e))?;
            Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 18, f)) as ShardStream)
        })
    }
}
