//! What the token cache and the layer record through the `metrics` facade
//! (feature `metrics`): small functions called where the events happen, so
//! that the cache's and the layer's code says when and this module says how.

use std::time::Duration;

use http::Uri;
use metrics::{Label, SharedString, counter, histogram};

use crate::metric_names::{REAUTHS, REAUTHS_REFUSED, TOKEN_FETCH_DURATION, TOKEN_FETCHES};

/// Why the cache fetches a token, as it knows it when the fetch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchKind {
    /// No token was ever installed.
    Initial,
    /// A token is due for refresh, or expired.
    Refresh,
    /// The current token was dropped because the server refused it.
    Reauth,
}

impl FetchKind {
    fn label(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Refresh => "refresh",
            Self::Reauth => "reauth",
        }
    }
}

/// Why the layer returned a 401 instead of re-sending the request with a
/// fresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The request body went past the replay cap (or its stream failed).
    BodyNotReplayable,
    /// The refused token was fetched after a 401 moments ago.
    ReauthCooldown,
    /// No fresh token: the fetch failed, or a failed fetch's cool-down.
    NoToken,
    /// The re-sent request got a 401 too; there is never a second re-send.
    AlreadyReauthed,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::BodyNotReplayable => "body_not_replayable",
            Self::ReauthCooldown => "reauth_cooldown",
            Self::NoToken => "no_token",
            Self::AlreadyReauthed => "already_reauthed",
        }
    }
}

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

/// `parapet.client.token.fetches` and `parapet.client.token.fetch.duration`:
/// a fetch of the cache ended, after `took`.
pub(crate) fn token_fetch(kind: FetchKind, ok: bool, took: Duration) {
    let outcome = outcome(ok);
    counter!(TOKEN_FETCHES, "kind" => kind.label(), "outcome" => outcome).increment(1);
    histogram!(TOKEN_FETCH_DURATION, "outcome" => outcome).record(took.as_secs_f64());
}

/// `parapet.client.reauths`: the layer re-sends the request to `uri` with
/// a fresh token after a 401.
pub(crate) fn reauth(uri: &Uri) {
    let mut labels = Vec::with_capacity(2);
    push_server(&mut labels, uri);
    counter!(REAUTHS, labels).increment(1);
}

/// `parapet.client.reauths_refused`: the layer returns a 401 without a
/// re-send, for `why`.
pub(crate) fn reauth_refused(why: Refusal) {
    counter!(REAUTHS_REFUSED, "reason" => why.label()).increment(1);
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
            labels("https://user:pw@api.example.com/v1/orders?api_key=x"),
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
