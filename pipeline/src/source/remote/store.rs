//! Building the `object_store` store of a bucket / container / host from the environment, with
//! our client settings (no whole-request timeout, connect and read timeouts, no retries of its
//! own).
use std::sync::Arc;

use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};

use crate::source::remote::config::RemoteOptions;
use crate::source::remote::retry::one_line_error;
use crate::source::remote::url::{Provider, RemoteUrl};
use crate::{PipelineError, Result};

fn install_crypto_provider() {
    // reqwest is built with rustls but no bundled provider; ring is ours. An already installed
    // process default (e.g. by an embedding application) is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Client options: no whole-request timeout, connect and read timeouts, then the provider's
/// client settings from the environment (e.g. `AWS_ALLOW_HTTP`) on top.
pub(super) fn client_options(
    provider: Provider,
    scheme: &str,
    opts: &RemoteOptions,
    env: &[(String, String)],
) -> ClientOptions {
    let mut c = ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(opts.connect_timeout)
        .with_read_timeout(opts.read_timeout);
    if scheme == "http" {
        c = c.with_allow_http(true);
    }
    for (k, v) in env {
        if !provider.reads_env(k) {
            continue;
        }
        let key = k.to_ascii_lowercase();
        let client_key = match provider {
            Provider::S3 => match key.parse() {
                Ok(object_store::aws::AmazonS3ConfigKey::Client(c)) => Some(c),
                _ => None,
            },
            Provider::Gcs => match key.parse() {
                Ok(object_store::gcp::GoogleConfigKey::Client(c)) => Some(c),
                _ => None,
            },
            Provider::Azure => match key.parse() {
                Ok(object_store::azure::AzureConfigKey::Client(c)) => Some(c),
                _ => None,
            },
            Provider::Http => None,
        };
        if let Some(ck) = client_key {
            if !matches!(ck, ClientConfigKey::Timeout) {
                c = c.with_config(ck, v.clone());
            }
        }
    }
    c
}

/// Build the store serving `u`, configured from `env` (the process environment in production).
///
/// Errors: [`PipelineError::RemoteConfig`] naming the URL, what `object_store` rejected and the
/// environment variables to set.
pub fn build_store(u: &RemoteUrl, opts: &RemoteOptions, env: &[(String, String)]) -> Result<Arc<dyn ObjectStore>> {
    install_crypto_provider();
    let base = u.store_key();
    let client = client_options(u.provider, &u.scheme, opts, env);
    let retry = RetryConfig { max_retries: 0, ..RetryConfig::default() };
    let fail = |e: object_store::Error| PipelineError::RemoteConfig {
        url: base.clone(),
        reason: format!("{}; configure it with {}", one_line_error(&e), u.provider.env_hint()),
    };
    let apply_env = |f: &mut dyn FnMut(&str, &str)| {
        for (k, v) in env {
            if u.provider.reads_env(k) {
                f(&k.to_ascii_lowercase(), v);
            }
        }
    };
    let store: Arc<dyn ObjectStore> = match u.provider {
        Provider::S3 => {
            let mut b = object_store::aws::AmazonS3Builder::new();
            apply_env(&mut |k, v| {
                if let Ok(key) = k.parse() {
                    b = std::mem::take(&mut b).with_config(key, v);
                }
            });
            let url = if u.scheme == "s3a" { format!("s3://{}", u.authority) } else { base.clone() };
            Arc::new(b.with_url(url).with_client_options(client).with_retry(retry).build().map_err(fail)?)
        }
        Provider::Gcs => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new();
            if let Some((_, v)) = env.iter().find(|(k, _)| k == "SERVICE_ACCOUNT") {
                b = b.with_service_account_path(v);
            }
            apply_env(&mut |k, v| {
                if let Ok(key) = k.parse() {
                    b = std::mem::take(&mut b).with_config(key, v);
                }
            });
            Arc::new(b.with_url(base.clone()).with_client_options(client).with_retry(retry).build().map_err(fail)?)
        }
        Provider::Azure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::new();
            apply_env(&mut |k, v| {
                if let Ok(key) = k.parse() {
                    b = std::mem::take(&mut b).with_config(key, v);
                }
            });
            if let Some((_, v)) = env.iter().find(|(k, _)| k == "MSI_ENDPOINT") {
                b = b.with_msi_endpoint(v);
            }
            Arc::new(b.with_url(base.clone()).with_client_options(client).with_retry(retry).build().map_err(fail)?)
        }
        Provider::Http => Arc::new(
            object_store::http::HttpBuilder::new()
                .with_url(base.clone())
                .with_client_options(client)
                .with_retry(retry)
                .build()
                .map_err(fail)?,
        ),
    };
    Ok(store)
}

/// The process environment as (name, value) pairs (non-UTF-8 entries skipped).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}
