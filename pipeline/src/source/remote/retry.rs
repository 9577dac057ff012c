//! Failure classification and the retry budget: an error on one line, the cause without
//! `object_store`'s preamble, transient vs not found vs fatal ([`Failure`]), and the outage
//! state with exponential backoff and jitter ([`Outage`]).
use std::time::{Duration, Instant};

use rand::Rng;

use crate::source::remote::config::RemoteOptions;

/// An error and its sources on one line, repeated texts left out.
pub(super) fn one_line_error(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The cause of a failed request without `object_store`'s "Error performing GET URL in 1.2ms - "
/// (the URL is already in our message);
/// An S3-style XML error body is shortened to its code and message.
pub(super) fn tidy_cause(text: &str) -> String {
    let mut t = text.to_string();
    if let Some(i) = t.find("Error performing ") {
        if let Some(j) = t[i..].find(" - ") {
            t = format!("{}{}", &t[..i], &t[i + j + 3..]);
        }
    }
    let tag = |s: &str, name: &str| -> Option<String> {
        let a = s.find(&format!("<{name}>"))? + name.len() + 2;
        let b = a + s[a..].find(&format!("</{name}>"))?;
        Some(s[a..b].to_string())
    };
    if let Some(x) = t.find("<?xml").or_else(|| t.find("<Error>")) {
        if let (Some(code), Some(msg)) = (tag(&t[x..], "Code"), tag(&t[x..], "Message")) {
            t = format!("{}{code}: {msg}", &t[..x]);
        }
    }
    t
}

/// The HTTP status named in an `object_store` error text ("… status code: 503 …"), if any.
pub(super) fn http_status(text: &str) -> Option<u16> {
    let i = text.find("status code: ")? + "status code: ".len();
    text.get(i..i + 3)?.parse().ok()
}

/// Whether retrying can help: server errors, 408/429, transport errors and broken bodies yes;
/// not found, auth, precondition (object changed), invalid path and other 4xx no.
pub(super) fn is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::AlreadyExists { .. }
        | E::UnknownConfigurationKey { .. } => false,
        other => {
            !matches!(http_status(&one_line_error(other)), Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
        }
    }
}

/// Whether the store answered that the object does not exist (`NotFound`, or HTTP 404 in the
/// text of an error the store did not classify).
fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) || http_status(&one_line_error(e)) == Some(404)
}

/// Why a fetch gave up, which chooses the error's hint.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Failure {
    /// Retried until the budget ran out.
    Transient,
    /// The object does not exist.
    NotFound,
    /// Not retried: access denied, object changed, bad request.
    Fatal,
}

impl Failure {
    pub(super) fn of(e: &object_store::Error) -> Failure {
        if is_not_found(e) {
            Failure::NotFound
        } else if is_transient(e) {
            Failure::Transient
        } else {
            Failure::Fatal
        }
    }
}

/// State of one outage: failures since the last delivered byte.
#[derive(Default)]
pub(super) struct Outage {
    /// Failed attempts so far (of this outage).
    pub(super) failures: u32,
    started: Option<Instant>,
}

impl Outage {
    pub(super) fn reset(&mut self) {
        self.failures = 0;
        self.started = None;
    }
    pub(super) fn elapsed(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }
    /// Record a failure; the backoff before the next attempt, or `None` when the failure is not
    /// retried (anything but [`Failure::Transient`]) or the budget is spent.
    pub(super) fn fail(&mut self, opts: &RemoteOptions, failure: Failure) -> Option<Duration> {
        self.failures += 1;
        let started = *self.started.get_or_insert_with(Instant::now);
        if failure != Failure::Transient || self.failures > opts.max_retries {
            return None;
        }
        let cap = opts.backoff_cap(self.failures).as_secs_f64();
        let delay = Duration::from_secs_f64(rand::thread_rng().gen_range(cap * 0.5..=cap.max(1e-9)));
        if started.elapsed() + delay > opts.max_retry_time {
            return None;
        }
        Some(delay)
    }
}
