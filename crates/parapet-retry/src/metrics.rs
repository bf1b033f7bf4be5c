//! What the layer records through the `metrics` facade (feature
//! `metrics`): small functions called where the events happen, so that the
//! layer's code says when and this module says how.

use std::time::Duration;

use http::Uri;
use metrics::{Label, SharedString, histogram};

use crate::metric_names::RETRY_WAIT;

/// Where the wait before a re-send came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitSource {
    /// The response's `Retry-After`, longer than the backoff.
    RetryAfter,
    /// The layer's own backoff.
    Backoff,
}

impl WaitSource {
    fn label(self) -> &'static str {
        match self {
            Self::RetryAfter => "retry_after",
            Self::Backoff => "backoff",
        }
    }
}

/// `parapet.client.retry.wait`: the layer chose to wait `wait` before
/// re-sending the request to `uri`.
pub(crate) fn retry_wait(uri: &Uri, source: WaitSource, wait: Duration) {
    let mut labels = Vec::with_capacity(3);
    push_server(&mut labels, uri);
    labels.push(Label::from_static_parts("source", source.label()));
    histogram!(RETRY_WAIT, labels).record(wait.as_secs_f64());
}

/// `server.address` (the URI's host: never user information, a path or a
/// query) and `server.port` (the URI's, else the scheme's default), each
/// when known.
fn push_server(labels: &mut Vec<Label>, uri: &Uri) {
    if let Some(host) = uri.host() {
        labels.push(Label::new("server.address", host.to_owned()));
    }
    if let Some(port) = parapet_core::otel::server_port(uri) {
        labels.push(Label::new("server.port", port_value(port)));
    }
}

/// A port as a label value; the usual ones without an allocation.
fn port_value(port: u16) -> SharedString {
    parapet_core::otel::static_port(port).map_or_else(
        || SharedString::from(port.to_string()),
        SharedString::const_str,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(uri: &str) -> Vec<(String, String)> {
        let mut labels = Vec::new();
        push_server(&mut labels, &uri.parse().unwrap());
        labels
            .iter()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn server_labels_name_the_host_never_the_user_path_or_query() {
        assert_eq!(
            labels("https://user:pw@api.example.com/v1/orders?token=x"),
            pairs(&[
                ("server.address", "api.example.com"),
                ("server.port", "443")
            ])
        );
        assert_eq!(
            labels("http://api.test:8081/x"),
            pairs(&[("server.address", "api.test"), ("server.port", "8081")])
        );
        assert_eq!(
            labels("http://api.test/"),
            pairs(&[("server.address", "api.test"), ("server.port", "80")])
        );
        assert_eq!(labels("/relative?q=1"), pairs(&[]));
    }
}
