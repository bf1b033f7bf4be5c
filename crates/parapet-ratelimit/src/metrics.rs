//! What the layers report through the `metrics` facade (cargo feature
//! `metrics`): one small function per event, called where it happens, so
//! that the layers' code carries one line per event and nothing else.
//!
//! Every function builds its labels when called: nothing is recorded, built
//! or allocated for a call that meets no event.

use std::time::Duration;

use ::metrics::{Label, SharedString, counter, histogram};
use parapet_core::LimitSource;

use crate::authority::AuthorityRef;
use crate::metric_names as names;

/// `server.address` (the host, never a path or a query) and `server.port`
/// (the URI's, else the scheme's default), each only when known.
fn server_labels(to: AuthorityRef<'_>, extra: usize) -> Vec<Label> {
    let mut labels = Vec::with_capacity(2 + extra);
    if !to.host().is_empty() {
        labels.push(Label::new("server.address", to.host().to_owned()));
    }
    if let Some(port) = to.known_port() {
        labels.push(Label::new("server.port", port_value(port)));
    }
    labels
}

/// A port as a label value; the usual ones without an allocation.
fn port_value(port: u16) -> SharedString {
    parapet_core::otel::static_port(port).map_or_else(
        || SharedString::from(port.to_string()),
        SharedString::const_str,
    )
}

/// The `source` of a gate closure: `retry_after` for `Retry-After`,
/// `rate_limit` for the rate-limit fields (`X-RateLimit-*`, `RateLimit`).
fn source_name(source: Option<LimitSource>) -> &'static str {
    match source {
        Some(LimitSource::RetryAfter) => "retry_after",
        _ => "rate_limit",
    }
}

/// A response closed the gate of `to` for `held`.
pub(crate) fn throttle_closed(to: AuthorityRef<'_>, source: Option<LimitSource>, held: Duration) {
    let mut labels = server_labels(to, 1);
    labels.push(Label::from_static_parts("source", source_name(source)));
    counter!(names::THROTTLE_CLOSURES, labels.clone()).increment(1);
    histogram!(names::THROTTLE_HELD, labels).record(held.as_secs_f64());
}

/// A request to `to` waited `waited` at the gate, then went on.
pub(crate) fn throttle_waited(to: AuthorityRef<'_>, waited: Duration) {
    if !waited.is_zero() {
        histogram!(names::THROTTLE_WAIT, server_labels(to, 0)).record(waited.as_secs_f64());
    }
}

/// The throttle failed a request to `to`.
pub(crate) fn throttle_rejected(to: AuthorityRef<'_>) {
    counter!(names::THROTTLE_REJECTIONS, server_labels(to, 0)).increment(1);
}

/// A request to `to` waited `waited` for its turn at the rate limit, then
/// went on.
pub(crate) fn rate_limit_waited(to: AuthorityRef<'_>, waited: Duration) {
    if !waited.is_zero() {
        histogram!(names::RATE_LIMIT_WAIT, server_labels(to, 0)).record(waited.as_secs_f64());
    }
}

/// The rate limiter failed a request to `to`.
pub(crate) fn rate_limit_rejected(to: AuthorityRef<'_>) {
    counter!(names::RATE_LIMIT_REJECTIONS, server_labels(to, 0)).increment(1);
}

/// A request to `to` queued `waited` for a concurrency slot and got one.
pub(crate) fn concurrency_queued(to: AuthorityRef<'_>, waited: Duration) {
    histogram!(names::CONCURRENCY_QUEUE, server_labels(to, 0)).record(waited.as_secs_f64());
}

/// The concurrency limiter failed a request to `to`.
pub(crate) fn concurrency_rejected(to: AuthorityRef<'_>) {
    counter!(names::CONCURRENCY_REJECTIONS, server_labels(to, 0)).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(uri: &str) -> Vec<(String, String)> {
        let req = http::Request::get(uri).body(()).unwrap();
        server_labels(AuthorityRef::of(&req), 0)
            .into_iter()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn labels_name_the_host_and_port_never_the_path_or_userinfo() {
        assert_eq!(
            labels("https://user:secret@api.example.com/v1/items?page=2"),
            pairs(&[
                ("server.address", "api.example.com"),
                ("server.port", "443")
            ])
        );
        assert_eq!(
            labels("http://api.example.com/"),
            pairs(&[("server.address", "api.example.com"), ("server.port", "80")])
        );
        assert_eq!(
            labels("http://127.0.0.1:8081/x"),
            pairs(&[("server.address", "127.0.0.1"), ("server.port", "8081")])
        );
        assert_eq!(
            labels("http://[::1]:9000/"),
            pairs(&[("server.address", "[::1]"), ("server.port", "9000")])
        );
        // A relative URI with no Host header names no server.
        assert_eq!(labels("/only/a/path"), pairs(&[]));
    }

    #[test]
    fn a_relative_uri_takes_the_host_header_without_inventing_a_port() {
        let req = http::Request::get("/v1")
            .header("host", "svc.internal")
            .body(())
            .unwrap();
        let labels: Vec<_> = server_labels(AuthorityRef::of(&req), 0)
            .into_iter()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert_eq!(labels, pairs(&[("server.address", "svc.internal")]));
    }

    #[test]
    fn closure_sources_are_retry_after_or_rate_limit() {
        assert_eq!(source_name(Some(LimitSource::RetryAfter)), "retry_after");
        assert_eq!(source_name(Some(LimitSource::XRateLimit)), "rate_limit");
        assert_eq!(source_name(Some(LimitSource::RateLimitField)), "rate_limit");
        assert_eq!(source_name(None), "rate_limit");
    }
}
