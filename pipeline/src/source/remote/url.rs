//! Remote shard URLs: which `object_store` backend serves a scheme ([`Provider`], with the
//! environment variables that configure it) and the parsed URL ([`RemoteUrl`]).
use object_store::path::Path as StorePath;

use crate::{PipelineError, Result};

/// Which `object_store` backend serves a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Amazon S3 or an S3-compatible server (`s3://`, `s3a://`).
    S3,
    /// Google Cloud Storage (`gs://`).
    Gcs,
    /// Azure Blob Storage (`az://`, `azure://`, `abfs://`, `abfss://`, `adl://`).
    Azure,
    /// Any HTTP(S) server that answers `GET` with `Range` (`http://`, `https://`).
    Http,
}

impl Provider {
    /// The provider of `scheme` (lower case, without `://`), `None` when unknown.
    pub fn of_scheme(scheme: &str) -> Option<Provider> {
        match scheme {
            "s3" | "s3a" => Some(Provider::S3),
            "gs" => Some(Provider::Gcs),
            "az" | "azure" | "abfs" | "abfss" | "adl" => Some(Provider::Azure),
            "http" | "https" => Some(Provider::Http),
            _ => None,
        }
    }

    /// Environment variables that configure this provider (for error hints and the docs).
    pub fn env_hint(self) -> &'static str {
        match self {
            Provider::S3 => "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL (S3-compatible servers), AWS_ALLOW_HTTP",
            Provider::Gcs => "GOOGLE_SERVICE_ACCOUNT (key file path), GOOGLE_SERVICE_ACCOUNT_KEY or GOOGLE_APPLICATION_CREDENTIALS",
            Provider::Azure => "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY or AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_TENANT_ID",
            Provider::Http => "no credentials (plain GET with Range)",
        }
    }

    /// Prefix of the environment variables read for this provider (`None`: none are read).
    fn env_prefix(self) -> Option<&'static str> {
        match self {
            Provider::S3 => Some("AWS_"),
            Provider::Gcs => Some("GOOGLE_"),
            Provider::Azure => Some("AZURE_"),
            Provider::Http => None,
        }
    }

    pub(super) fn reads_env(self, name: &str) -> bool {
        self.env_prefix().is_some_and(|p| name.starts_with(p))
    }
}

/// A parsed remote shard URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl {
    /// Backend serving the URL.
    pub provider: Provider,
    /// Scheme as written, lower case (`s3`, `https`, …).
    pub scheme: String,
    /// Bucket, container or `host[:port]` (for `az://container@account.dfs.core.windows.net`
    /// the whole `container@account…`).
    pub authority: String,
    /// Object path inside the store, percent-decoded (`prefix/train-000000.tar`).
    pub path: StorePath,
}

impl RemoteUrl {
    /// Parse `url`. Errors: [`PipelineError::UnsupportedScheme`] for an unknown scheme,
    /// [`PipelineError::RemoteConfig`] for a missing bucket/host or object path, glob characters
    /// (`*`, `?`, `[`) or an invalid path.
    pub fn parse(url: &str) -> Result<RemoteUrl> {
        let cfg = |reason: &str| PipelineError::RemoteConfig { url: url.to_string(), reason: reason.to_string() };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| cfg("not a URL (expected SCHEME://BUCKET/PATH)"))?;
        let scheme = scheme.to_ascii_lowercase();
        let provider = Provider::of_scheme(&scheme)
            .ok_or_else(|| PipelineError::UnsupportedScheme { scheme: scheme.clone(), url: url.to_string() })?;
        if rest.contains(['*', '?', '[']) {
            return Err(cfg(
                "glob characters and query strings (* ? [) are not supported in remote shard URLs; list the shards with braces, e.g. train-{000000..000146}.tar",
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            let what = if provider == Provider::Http { "host" } else { "bucket or container" };
            return Err(cfg(&format!(
                "no {what} (expected {scheme}://{}/PATH/train-000000.tar)",
                what.replace(' ', "-").to_uppercase()
            )));
        }
        if path.is_empty() || path.ends_with('/') {
            return Err(cfg("no object name; remote folders are not listed, name the shards with braces, e.g. PREFIX/train-{000000..000146}.tar"));
        }
        let decoded = StorePath::from_url_path(path).map_err(|e| cfg(&format!("invalid object path: {e}")))?;
        Ok(RemoteUrl { provider, scheme, authority: authority.to_string(), path: decoded })
    }

    /// `scheme://authority`: one store (and connection pool) serves all URLs with the same key.
    pub fn store_key(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}
