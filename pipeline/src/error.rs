//! The crate's error type. Every variant displays as ONE line that names the file, shard or
//! option involved and says what to do about it.
use std::path::PathBuf;

/// Errors of `dspnet-pipeline`.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A file or folder could not be read.
    #[error("cannot read {}: {source}; check that it exists and is readable", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or folder could not be written.
    #[error("cannot write {}: {source}; check the folder exists, is writable and the disk is not full", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The shard output folder cannot be created or written.
    #[error("output folder {} is not writable ({reason}); choose a writable folder", path.display())]
    OutputNotWritable { path: PathBuf, reason: String },
    /// The shard output folder already holds shards.
    #[error("output folder {} already holds shards; pass --overwrite or choose an empty folder", path.display())]
    OutputHasShards { path: PathBuf },
    /// A configuration value is invalid.
    #[error("invalid {option}: {message}")]
    Config { option: String, message: String },
    /// A shard pattern matched nothing.
    #[error("shard pattern {pattern} matches no shard; check the path (e.g. data/train-{{000000..000009}}.tar)")]
    NoShards { pattern: String },
    /// A local file named as a shard is not one (no tar header, no zstd or gzip frame).
    #[error("{} is not a shard: {reason}; pass shards written by dspnet-shard (.tar, .tar.zst, .tar.gz) or their folder", path.display())]
    NotAShard { path: PathBuf, reason: String },
    /// A shard pattern is malformed.
    #[error("shard pattern {pattern} is malformed: {reason}; use braces like train-{{000000..000009}}.tar or {{a,b}}")]
    BadPattern { pattern: String, reason: String },
    /// The URL scheme has no [`crate::source::ShardSource`].
    #[error("scheme {scheme}:// is not supported (shard URL {url}); use a local path, file://, s3://, gs://, az://, http:// or https://")]
    UnsupportedScheme { scheme: String, url: String },
    /// A remote shard URL cannot be served: malformed URL, missing bucket/host, or a store that
    /// cannot be configured from the environment (missing account, unreadable key file ...).
    #[error("shard URL {url}: {reason}")]
    RemoteConfig { url: String, reason: String },
    /// A remote shard could not be read: the retries ran out, or the failure cannot be retried
    /// (not found, access denied, object changed while being read). `not_found`: the store
    /// answered that the object does not exist (HTTP 404, no such key), so callers can tell a
    /// missing optional object (e.g. `manifest.json`) from an unreachable store.
    #[error("remote shard {url} failed after {attempts} attempt(s) in {secs:.1} s at byte {offset}: {cause}; {hint}")]
    Remote { url: String, attempts: u32, secs: f64, offset: u64, cause: String, hint: String, not_found: bool },
    /// An input image folder holds no image.
    #[error("input folder {} holds no image (expected DIR/<class>/<image>.jpg|jpeg|png|webp); check --input", path.display())]
    NoImages { path: PathBuf },
    /// An input image is unusable (empty, truncated, undecodable) and `--strict-data` asked to stop.
    #[error("bad image {file}: {reason}; no shard was written (--strict-data): fix or remove the file, or drop --strict-data to skip bad images (they are listed in manifest.json)")]
    BadImage { file: String, reason: String },
    /// Every input image is unusable.
    #[error("none of the {total} input images is usable (the first, {first}: {reason}); check --input")]
    NoUsableImage { total: u64, first: String, reason: String },
    /// An ImageNet archive is not in the official layout, or unreadable.
    #[error("ImageNet archive {}: {reason}", path.display())]
    BadArchive { path: PathBuf, reason: String },
    /// A validation label file is malformed or does not cover the images.
    #[error("labels {}: {reason}; --labels takes the devkit (ILSVRC2012_devkit_t12.tar.gz), LOC_val_solution.csv or lines `filename wnid`", path.display())]
    BadLabels { path: PathBuf, reason: String },
    /// A Fashion-MNIST IDX file is missing.
    #[error("missing Fashion-MNIST file {}; --input must be the folder with the *-ubyte.gz IDX files", path.display())]
    MissingIdx { path: PathBuf },
    /// A Fashion-MNIST IDX file is malformed.
    #[error("malformed IDX file {}: {reason}; re-download the Fashion-MNIST files", path.display())]
    BadIdx { path: PathBuf, reason: String },
    /// manifest.json is missing or malformed.
    #[error("bad manifest {}: {reason}; re-run dspnet-shard to rewrite the shards", path.display())]
    Manifest { path: PathBuf, reason: String },
    /// A shard is not a readable tar stream (truncated, corrupt header, failed download ...).
    #[error("shard {shard} is unreadable after sample {key}: {reason}; re-create or re-download the shard, or set strict_data = false to skip it")]
    BadShard { shard: String, key: String, reason: String },
    /// A sample is unusable (corrupt image, no image member, missing label ...).
    #[error("shard {shard}, sample {key}: {reason}; fix or remove the sample, or set strict_data = false to skip it")]
    BadSample { shard: String, key: String, reason: String },
    /// An image could not be encoded or transformed.
    #[error("image {key}: {reason}")]
    Image { key: String, reason: String },
    /// Image bytes could not be decoded, or a decoded image does not fit the transform.
    #[error("image data: {0}")]
    ImageData(String),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(String),
    /// The loader's threads or runtime failed.
    #[error("loader failure: {0}; this is a bug in dspnet-pipeline, please report it")]
    Internal(String),
}

impl PipelineError {
    pub(crate) fn config(option: &str, message: impl Into<String>) -> Self {
        PipelineError::Config { option: option.to_string(), message: message.into() }
    }
    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Read { path: path.into(), source }
    }
    pub(crate) fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PipelineError::Write { path: path.into(), source }
    }
}
