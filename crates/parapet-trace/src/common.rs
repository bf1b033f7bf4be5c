//! What the call and attempt spans share: how spans are made, how errors are
//! classified, and what the call span learns from its attempts.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use http::Method;

/// Turns an error into the low-cardinality `error.type` of a span.
///
/// Given the error a call or an attempt ended with (the whole `source()`
/// chain is reachable from it), it returns a short, fixed name: never a
/// message, which would make every failure its own value.
pub type ErrorTypeFn = fn(&(dyn Error + 'static)) -> &'static str;

/// The default [`ErrorTypeFn`].
///
/// It walks the `source()` chain for an `std::io::Error` or a tokio timer
/// `Elapsed` and names what it finds:
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
/// A stack that knows its own error types (timeouts, budgets, rate limits)
/// passes a richer function to [`TraceLayer::error_type`](crate::TraceLayer::error_type).
///
/// ```
/// use parapet_trace::default_error_type;
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
/// otherwise (the original then goes in `http.request.method_original`).
pub(crate) use parapet_core::otel::{method_name, server_address, server_port};

/// The original method, only when it is not a known one.
pub(crate) fn method_original(method: &Method) -> Option<&str> {
    (method_name(method) == "_OTHER").then(|| method.as_str())
}

/// What the call span learns from the attempt layer below it.
///
/// The call layer puts one in the request's extensions, only when its span
/// is being recorded; each attempt counts itself in it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallShared(Arc<AtomicU32>);

impl CallShared {
    pub(crate) fn count_attempt(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Marks a `traceparent` that a trace layer wrote (as opposed to the
/// caller's), so that an attempt may replace it with its own span's.
#[cfg(feature = "opentelemetry")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct OurTraceparent;

/// `traceparent`.
#[cfg(feature = "opentelemetry")]
pub(crate) const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The W3C `traceparent` of `span`'s OpenTelemetry context, if it has a
/// valid one: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
#[cfg(feature = "opentelemetry")]
pub(crate) fn traceparent(span: &tracing::Span) -> Option<http::HeaderValue> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return None;
    }
    let mut out = [b'-'; 55];
    out[0] = b'0';
    out[1] = b'0';
    hex_into(&mut out[3..35], &sc.trace_id().to_bytes());
    hex_into(&mut out[36..52], &sc.span_id().to_bytes());
    hex_into(&mut out[53..55], &[sc.trace_flags().to_u8()]);
    http::HeaderValue::from_bytes(&out).ok()
}

#[cfg(feature = "opentelemetry")]
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            *lo = HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0');
        }
    }
}

/// Sets `traceparent` from `span` unless the caller set one.
///
/// `replace_ours`: an attempt replaces the call's (or a previous
/// attempt's) value with its own span's, which is the closer parent for the
/// server's span.
#[cfg(feature = "opentelemetry")]
pub(crate) fn inject_traceparent<B>(
    req: &mut http::Request<B>,
    span: &tracing::Span,
    replace_ours: bool,
) {
    let ours = req.extensions().get::<OurTraceparent>().is_some();
    let present = req.headers().contains_key(TRACEPARENT);
    if present && !(ours && replace_ours) {
        return;
    }
    if let Some(value) = traceparent(span) {
        req.headers_mut().insert(TRACEPARENT, value);
        if !ours {
            req.extensions_mut().insert(OurTraceparent);
        }
    }
}

/// A span named after the request's method (`GET`, `POST`, ..., or `HTTP`
/// for another method), as the OpenTelemetry conventions name HTTP client
/// spans. Span names are static in `tracing`, hence one callsite per method.
/// The fields are evaluated only when a subscriber wants the span.
macro_rules! client_span {
    ($lvl:expr, $method:expr, $($fields:tt)*) => {
        match *$method {
            ::http::Method::GET => ::tracing::span!($lvl, "GET", $($fields)*),
            ::http::Method::POST => ::tracing::span!($lvl, "POST", $($fields)*),
            ::http::Method::PUT => ::tracing::span!($lvl, "PUT", $($fields)*),
            ::http::Method::DELETE => ::tracing::span!($lvl, "DELETE", $($fields)*),
            ::http::Method::PATCH => ::tracing::span!($lvl, "PATCH", $($fields)*),
            ::http::Method::HEAD => ::tracing::span!($lvl, "HEAD", $($fields)*),
            ::http::Method::OPTIONS => ::tracing::span!($lvl, "OPTIONS", $($fields)*),
            ::http::Method::TRACE => ::tracing::span!($lvl, "TRACE", $($fields)*),
            ::http::Method::CONNECT => ::tracing::span!($lvl, "CONNECT", $($fields)*),
            _ => ::tracing::span!($lvl, "HTTP", $($fields)*),
        }
    };
}

pub(crate) use client_span;

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Uri};
    use std::io;

    #[test]
    fn error_types_follow_the_source_chain() {
        #[derive(Debug)]
        struct Wrapper(io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl Error for Wrapper {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(default_error_type(&e), "connection_reset");
        let e = Wrapper(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(default_error_type(&e), "timeout");
        let e = Wrapper(io::Error::other("x"));
        assert_eq!(default_error_type(&e), "io");
    }

    #[test]
    fn methods_and_addresses() {
        assert_eq!(method_name(&Method::PATCH), "PATCH");
        let odd = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_name(&odd), "_OTHER");
        assert_eq!(method_original(&odd), Some("PURGE"));
        assert_eq!(method_original(&Method::GET), None);

        let req = Request::get("https://api.example.com/x").body(()).unwrap();
        assert_eq!(server_address(&req), Some("api.example.com"));
        assert_eq!(server_port(req.uri()), Some(443));
        let req = Request::get("/x")
            .header("host", "svc:8080")
            .body(())
            .unwrap();
        assert_eq!(server_address(&req), Some("svc"));
        let req = Request::get("/x")
            .header("host", "[::1]:8080")
            .body(())
            .unwrap();
        assert_eq!(server_address(&req), Some("[::1]"));
        assert_eq!(server_port(&Uri::from_static("http://h:81/")), Some(81));
        assert_eq!(server_port(&Uri::from_static("/")), None);
    }
}
