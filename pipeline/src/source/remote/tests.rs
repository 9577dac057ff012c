use super::*;
use crate::source::remote::retry::{http_status, is_transient, tidy_cause, Failure, Outage};
use crate::source::remote::store::client_options;
use object_store::ClientConfigKey;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn url_parsing_and_provider_selection() {
    let u = RemoteUrl::parse("s3://bucket/prefix/train-000001.tar").unwrap();
    assert_eq!(
        (u.provider, u.authority.as_str(), u.path.as_ref()),
        (Provider::S3, "bucket", "prefix/train-000001.tar")
    );
    assert_eq!(u.store_key(), "s3://bucket");
    assert_eq!(RemoteUrl::parse("gs://b/x.tar").unwrap().provider, Provider::Gcs);
    assert_eq!(RemoteUrl::parse("az://container/d/x.tar.zst").unwrap().provider, Provider::Azure);
    assert_eq!(RemoteUrl::parse("AZURE://container/x.tar").unwrap().scheme, "azure");
    let h = RemoteUrl::parse("http://127.0.0.1:8080/data/train%20a-000000.tar").unwrap();
    assert_eq!(
        (h.provider, h.authority.as_str(), h.path.as_ref()),
        (Provider::Http, "127.0.0.1:8080", "data/train a-000000.tar")
    );
    assert_eq!(RemoteUrl::parse("https://example.org/x.tar").unwrap().store_key(), "https://example.org");

    let e = RemoteUrl::parse("ftp://host/x.tar").unwrap_err();
    assert!(matches!(e, PipelineError::UnsupportedScheme { .. }), "{e}");
    for (bad, needle) in [
        ("s3:///x.tar", "no bucket or container"),
        ("http:///x.tar", "no host"),
        ("s3://bucket", "no object name"),
        ("s3://bucket/prefix/", "no object name"),
        ("s3://bucket/train-*.tar", "glob"),
        ("https://h/x.tar?sig=1", "query strings"),
    ] {
        let e = RemoteUrl::parse(bad).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains(bad.split('?').next().unwrap()), "{bad}: {e}");
        assert!(!e.contains('\n'));
    }
}

#[test]
fn builders_from_an_explicit_environment() {
    let o = RemoteOptions::default();
    // S3 with keys and a loopback endpoint builds without any network access.
    let s3 = env(&[
        ("AWS_ACCESS_KEY_ID", "k"),
        ("AWS_SECRET_ACCESS_KEY", "s"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
    ]);
    let s = RemoteSource::with_env("s3://bkt/a/x.tar", o.clone(), Arc::default(), &s3).unwrap();
    assert_eq!((s.provider(), s.store_key()), (Provider::S3, "s3://bkt"));
    assert!(s.store.to_string().contains("bkt"), "{}", s.store);
    // GCS: a service-account file that does not exist is a clear, one-line error naming it.
    let e = RemoteSource::with_env(
        "gs://bkt/x.tar",
        o.clone(),
        Arc::default(),
        &env(&[("GOOGLE_SERVICE_ACCOUNT", "/nonexistent/sa.json")]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("gs://bkt") && e.contains("GOOGLE_SERVICE_ACCOUNT") && !e.contains('\n'), "{e}");
    // Azure without an account name: clear error naming the variables to set.
    let e = RemoteSource::with_env("az://container/x.tar", o.clone(), Arc::default(), &[]).unwrap_err().to_string();
    assert!(e.contains("az://container") && e.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{e}");
    // Azure with an account and key builds (key must be base64).
    let az = env(&[("AZURE_STORAGE_ACCOUNT_NAME", "acct"), ("AZURE_STORAGE_ACCOUNT_KEY", "a2V5")]);
    let s = RemoteSource::with_env("az://container/x.tar", o.clone(), Arc::default(), &az).unwrap();
    assert_eq!(s.provider(), Provider::Azure);
    assert!(s.store.to_string().contains("container"), "{}", s.store);
    // HTTP needs no environment.
    let s = RemoteSource::with_env("http://127.0.0.1:9/x.tar", o, Arc::default(), &[]).unwrap();
    assert_eq!(s.provider(), Provider::Http);
}

#[test]
fn client_options_keep_our_timeouts_and_take_env_client_keys() {
    let o = RemoteOptions::default();
    let c = client_options(
        Provider::S3,
        "s3",
        &o,
        &env(&[("AWS_ALLOW_HTTP", "true"), ("AWS_TIMEOUT", "1s"), ("GOOGLE_ALLOW_HTTP", "false")]),
    );
    assert_eq!(c.get_config_value(&ClientConfigKey::AllowHttp).as_deref(), Some("true"));
    assert_eq!(c.get_config_value(&ClientConfigKey::Timeout), None, "whole-request timeout stays off");
    assert_eq!(c.get_config_value(&ClientConfigKey::ReadTimeout).as_deref(), Some("30s"));
    let h = client_options(Provider::Http, "http", &o, &[]);
    assert_eq!(h.get_config_value(&ClientConfigKey::AllowHttp).as_deref(), Some("true"));
    let hs = client_options(Provider::Http, "https", &o, &[]);
    assert_ne!(hs.get_config_value(&ClientConfigKey::AllowHttp).as_deref(), Some("true"));
}

#[test]
fn backoff_grows_exponentially_within_the_budget() {
    let o = RemoteOptions { max_retries: 8, max_retry_time: Duration::from_secs(60), ..RemoteOptions::default() };
    // caps: 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10 s
    let caps: Vec<f64> = (1..=8).map(|n| o.backoff_cap(n).as_secs_f64()).collect();
    assert_eq!(caps, vec![0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]);
    let mut out = Outage::default();
    for n in 1..=8 {
        let d = out.fail(&o, Failure::Transient).unwrap().as_secs_f64();
        let cap = caps[n - 1];
        assert!(d >= cap * 0.5 - 1e-9 && d <= cap + 1e-9, "retry {n}: {d} not in [{}, {cap}]", cap * 0.5);
    }
    assert!(out.fail(&o, Failure::Transient).is_none(), "9th failure exceeds max_retries = 8");
    out.reset();
    assert!(out.fail(&o, Failure::Transient).is_some());
    // a failure that is not retried ends the outage at once, and still counts as an attempt
    assert!(out.fail(&o, Failure::NotFound).is_none() && out.fail(&o, Failure::Fatal).is_none());
    assert_eq!(out.failures, 3);
    // time budget: with 0.3 s allowed the third backoff (>= 0.4 s) cannot fit.
    let tight = RemoteOptions { max_retry_time: Duration::from_millis(300), ..o.clone() };
    let mut out = Outage::default();
    let mut n = 0;
    while out.fail(&tight, Failure::Transient).is_some() {
        n += 1;
    }
    assert!(n <= 2, "{n} retries fitted in 0.3 s");
}

#[test]
fn status_classification() {
    assert_eq!(
        http_status("Error performing GET x in 1ms - Server returned non-2xx status code: 503 Service Unavailable: "),
        Some(503)
    );
    assert_eq!(http_status("HTTP error: error sending request"), None);
    assert_eq!(
        tidy_cause(
            "Generic HTTP error: Error performing GET http://h/x.tar in 297µs - HTTP error: error sending request"
        ),
        "Generic HTTP error: HTTP error: error sending request"
    );
    assert_eq!(
        tidy_cause("not found: Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?> <Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>k</Key></Error>"),
        "not found: Server returned non-2xx status code: 404 Not Found: NoSuchKey: The specified key does not exist."
    );
    let generic = |s: &str| object_store::Error::Generic { store: "HTTP", source: s.to_string().into() };
    assert!(is_transient(&generic("Server returned non-2xx status code: 503 Service Unavailable")));
    assert!(is_transient(&generic("Server returned non-2xx status code: 429 Too Many Requests")));
    assert!(is_transient(&generic("HTTP error: error sending request")));
    assert!(!is_transient(&generic("Server returned non-2xx status code: 400 Bad Request")));
    assert!(!is_transient(&object_store::Error::NotFound { path: "x".into(), source: "404".into() }));
    assert!(!is_transient(&object_store::Error::Precondition { path: "x".into(), source: "412".into() }));
    // not found: the store's own variant, or a 404 in an error it did not classify
    assert_eq!(
        Failure::of(&object_store::Error::NotFound { path: "x".into(), source: "404".into() }),
        Failure::NotFound
    );
    assert_eq!(Failure::of(&generic("Server returned non-2xx status code: 404 Not Found")), Failure::NotFound);
    assert_eq!(Failure::of(&generic("Server returned non-2xx status code: 403 Forbidden")), Failure::Fatal);
    assert_eq!(
        Failure::of(&generic("Server returned non-2xx status code: 503 Service Unavailable")),
        Failure::Transient
    );
}

#[test]
fn buffer_split_between_open_shards() {
    let o = RemoteOptions { read_ahead: 2, read_ahead_bytes: 60 << 20, ..RemoteOptions::default() };
    assert_eq!(o.shard_buffer_bytes(), 20 << 20);
    let o = RemoteOptions { read_ahead: 0, read_ahead_bytes: 1000, ..RemoteOptions::default() };
    assert_eq!(o.shard_buffer_bytes(), 64 << 10, "at least 64 KiB");
}

#[test]
fn remote_config_defaults_serde_and_validation() {
    // the [remote] section: every key optional with today's defaults, unknown keys refused, and
    // the options a source runs with are those of the section (the rest at their defaults)
    let d = RemoteConfig::default();
    assert_eq!((d.read_ahead, d.read_ahead_bytes, d.max_retries, d.max_retry_secs), (2, 64 << 20, 8, 60.0));
    assert_eq!(RemoteOptions::from(&d), RemoteOptions::default());
    assert_eq!(serde_json::from_str::<RemoteConfig>("{}").unwrap(), d);
    let c: RemoteConfig = serde_json::from_str(r#"{"max_retries": 3, "max_retry_secs": 1.5}"#).unwrap();
    assert_eq!(c, RemoteConfig { max_retries: 3, max_retry_secs: 1.5, ..d.clone() });
    let o = RemoteOptions::from(&c);
    assert_eq!((o.max_retries, o.max_retry_time), (3, Duration::from_millis(1500)));
    let e = serde_json::from_str::<RemoteConfig>(r#"{"remote_max_retries": 3}"#).unwrap_err().to_string();
    assert!(e.contains("remote_max_retries"), "{e}");
    assert!(d.validate().is_ok());
    let e = RemoteConfig { read_ahead_bytes: 1000, ..d.clone() }.validate().unwrap_err().to_string();
    assert!(e.contains("remote.read_ahead_bytes"), "{e}");
    let e = RemoteConfig { max_retry_secs: -1.0, ..d }.validate().unwrap_err().to_string();
    assert!(e.contains("remote.max_retry_secs"), "{e}");
}
