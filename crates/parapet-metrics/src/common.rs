//! What the call and attempt layers share: attributes, error classes, and
//! the per-call record the attempts write into.

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Request, StatusCode};
use metrics::{Label, SharedString};

/// Turns an error into the low-cardinality `error.type` attribute.
///
/// Given the error a call or an attempt ended with (its whole `source()`
/// chain reachable from it), it returns a short fixed name, never a
/// message: each message would be its own time series.
pub type ErrorTypeFn = fn(&(dyn Error + 'static)) -> &'static str;

/// Reads, from a response's extensions, why a retryable failure came back
/// without a retry, as a short fixed name (`budget_exhausted`,
/// `no_attempts_left`, ...), for `parapet.client.retries_refused`.
///
/// The retry layer is a sibling crate, so this crate does not read its
/// extension itself: the `parapet` facade passes a function reading
/// `parapet_retry::NotRetried`, and a hand-built stack can do the same.
pub type RetryRefusalFn = fn(&http::Extensions) -> Option<&'static str>;

/// The default [`ErrorTypeFn`]: walks the `source()` chain for an
/// `std::io::Error` or a tokio timer `Elapsed`.
///
/// | found | `error.type` |
/// | --- | --- |
/// | `Elapsed`, `io::ErrorKind::TimedOut` | `timeout` |
/// | `ConnectionRefused` | `connection_refused` |
/// | `ConnectionReset` | `connection_reset` |
/// | `ConnectionAborted` | `connection_aborted` |
/// | `BrokenPipe` | `broken_pipe` |
/// | `UnexpectedEof` | `unexpected_eof` |
/// | another `io::Error` | `io` |
/// | nothing known | `_OTHER` (the OpenTelemetry fallback) |
///
/// These are the names `parapet-trace` gives its spans, so a metric and a
/// span of the same failure agree.
///
/// ```
/// use parapet_metrics::default_error_type;
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert_eq!(default_error_type(&refused), "connection_refused");
/// assert_eq!(default_error_type(&std::fmt::Error), "_OTHER");
/// ```
#[must_use]
pub fn default_error_type(err: &(dyn Error + 'static)) -> &'static str {
    parapet_core::otel::io_error_type(err)
}

/// `http.request.method`: the method when it is a known one, `_OTHER`
/// otherwise (an unknown method is unbounded cardinality).
pub(crate) use parapet_core::otel::method_name;

/// A port as an attribute value; the usual ones without an allocation.
fn port_value(port: u16) -> SharedString {
    parapet_core::otel::static_port(port).map_or_else(
        || SharedString::from(port.to_string()),
        SharedString::const_str,
    )
}

/// A status code as an attribute value; the usual ones without an
/// allocation.
pub(crate) fn status_value(status: StatusCode) -> SharedString {
    let s = match status.as_u16() {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        206 => "206",
        301 => "301",
        302 => "302",
        303 => "303",
        304 => "304",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        412 => "412",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return SharedString::from(other.to_string()),
    };
    SharedString::const_str(s)
}

/// The attributes every metric of a request carries:
/// `http.request.method`, `server.address` and `server.port` (each only
/// when known).
#[cfg(test)]
pub(crate) fn request_labels<B>(req: &Request<B>) -> Vec<Label> {
    let (method, host, port) = request_target(req);
    labels_of(method, host, port)
}

/// What a request's labels are made of: its method's name, its host and
/// its port.
pub(crate) fn request_target<B>(req: &Request<B>) -> (&'static str, Option<&str>, Option<u16>) {
    (
        method_name(req.method()),
        parapet_core::otel::server_address(req),
        parapet_core::otel::server_port(req.uri()),
    )
}

/// The labels of a method, host and port.
pub(crate) fn labels_of(method: &'static str, host: Option<&str>, port: Option<u16>) -> Vec<Label> {
    // Room for the two a response adds (status and error type).
    let mut labels = Vec::with_capacity(5);
    labels.push(Label::from_static_parts("http.request.method", method));
    if let Some(host) = host {
        labels.push(Label::new("server.address", host.to_owned()));
    }
    if let Some(port) = port {
        labels.push(Label::new("server.port", port_value(port)));
    }
    labels
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Adds what an outcome says: `http.response.status_code` (and
/// `error.type` = the status for 4xx and 5xx) for a response,
/// `error.type` alone for an error.
pub(crate) fn push_outcome(labels: &mut Vec<Label>, outcome: Outcome) {
    match outcome {
        Outcome::Status(status) => {
            let value = status_value(status);
            if status.is_client_error() || status.is_server_error() {
                labels.push(Label::new("error.type", value.clone()));
            }
            labels.push(Label::new("http.response.status_code", value));
        }
        Outcome::Error(kind) => labels.push(Label::from_static_parts("error.type", kind)),
    }
}

/// How a call or an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response with this status.
    Status(StatusCode),
    /// No response; this `error.type`.
    Error(&'static str),
}

impl Outcome {
    /// The `reason` of a retry that followed this outcome: the status code,
    /// or the error type.
    pub(crate) fn reason(self) -> SharedString {
        match self {
            Self::Status(s) => status_value(s),
            Self::Error(kind) => SharedString::const_str(kind),
        }
    }
}

/// The record one call keeps, shared with its attempts through the
/// request's extensions (the retry layer clones them onto each attempt).
///
/// The call layer ([`MetricsLayer`](crate::MetricsLayer)) puts it there;
/// the attempt layer ([`AttemptMetricsLayer`](crate::AttemptMetricsLayer))
/// counts itself in it and leaves its outcome for the next attempt to
/// name as the reason of its retry.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallShared(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    attempts: AtomicU32,
    last: Mutex<Option<Outcome>>,
}

impl CallShared {
    pub(crate) fn count_attempt(&self) {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.0.attempts.load(Ordering::Relaxed)
    }

    pub(crate) fn set_last(&self, outcome: Outcome) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Some(outcome);
        }
    }

    pub(crate) fn last(&self) -> Option<Outcome> {
        self.0.last.lock().ok().and_then(|l| *l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_host_never_the_path() {
        let req = Request::get("https://api.example.com/v1/users/42?token=x")
            .body(())
            .unwrap();
        let labels = request_labels(&req);
        let pairs: Vec<_> = labels.iter().map(|l| (l.key(), l.value())).collect();
        assert_eq!(
            pairs,
            [
                ("http.request.method", "GET"),
                ("server.address", "api.example.com"),
                ("server.port", "443"),
            ]
        );
        let req = Request::builder()
            .method("PURGE")
            .uri("/x")
            .header("host", "svc:8081")
            .body(())
            .unwrap();
        let labels = request_labels(&req);
        let pairs: Vec<_> = labels.iter().map(|l| (l.key(), l.value())).collect();
        assert_eq!(
            pairs,
            [("http.request.method", "_OTHER"), ("server.address", "svc")]
        );
    }

    #[test]
    fn outcomes_become_status_and_error_type() {
        let mut labels = Vec::new();
        push_outcome(
            &mut labels,
            Outcome::Status(StatusCode::SERVICE_UNAVAILABLE),
        );
        let pairs: Vec<_> = labels.iter().map(|l| (l.key(), l.value())).collect();
        assert_eq!(
            pairs,
            [("error.type", "503"), ("http.response.status_code", "503")]
        );
        let mut labels = Vec::new();
        push_outcome(&mut labels, Outcome::Status(StatusCode::IM_A_TEAPOT));
        push_outcome(&mut labels, Outcome::Error("timeout"));
        let pairs: Vec<_> = labels.iter().map(|l| (l.key(), l.value())).collect();
        assert_eq!(
            pairs,
            [
                ("error.type", "418"),
                ("http.response.status_code", "418"),
                ("error.type", "timeout")
            ]
        );
    }
}
