//! The OpenTelemetry HTTP client attributes every layer that reports a
//! request names the same way: `http.request.method`, `server.address`,
//! `server.port` and `error.type`. Spans (parapet-trace) and metrics
//! (parapet-metrics and the layers' own events) take them from here.

use std::error::Error;
use std::io;

use http::header::HOST;
use http::{Method, Request, Uri};

/// `http.request.method`: a known method's name, else `_OTHER` (the
/// conventions' bound on cardinality).
///
/// ```
/// use http::Method;
/// use parapet_core::otel;
///
/// assert_eq!(otel::method_name(&Method::GET), "GET");
/// assert_eq!(otel::method_name(&Method::from_bytes(b"PURGE").unwrap()), "_OTHER");
/// ```
#[must_use]
pub fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// `server.address`: the URI's host, else the `Host` header's; never user
/// information, a path or a query. An IPv6 host keeps its brackets, as
/// [`Uri::host`] does.
///
/// ```
/// use parapet_core::otel;
///
/// let req = http::Request::get("https://user:pw@api.test/v1?key=x").body(()).unwrap();
/// assert_eq!(otel::server_address(&req), Some("api.test"));
/// let relative = http::Request::get("/v1").header("host", "svc:8080").body(()).unwrap();
/// assert_eq!(otel::server_address(&relative), Some("svc"));
/// ```
pub fn server_address<B>(req: &Request<B>) -> Option<&str> {
    if let Some(host) = req.uri().host() {
        return Some(host);
    }
    let host = req.headers().get(HOST)?.to_str().ok()?;
    let authority = host.parse::<http::uri::Authority>().ok()?;
    // Borrow from the header rather than the parsed copy.
    host.get(..authority.host().len())
}

/// `server.port`: the URI's port, else the scheme's default (443, 80).
///
/// ```
/// use parapet_core::otel;
///
/// assert_eq!(otel::server_port(&"https://api.test/".parse().unwrap()), Some(443));
/// assert_eq!(otel::server_port(&"http://api.test:8081/".parse().unwrap()), Some(8081));
/// assert_eq!(otel::server_port(&"/relative".parse().unwrap()), None);
/// ```
#[must_use]
pub fn server_port(uri: &Uri) -> Option<u16> {
    uri.port_u16().or_else(|| match uri.scheme_str() {
        Some("https" | "wss") => Some(443),
        Some("http" | "ws") => Some(80),
        _ => None,
    })
}

/// The usual ports' decimal text without an allocation; `None` for the
/// others (format them).
///
/// ```
/// assert_eq!(parapet_core::otel::static_port(443), Some("443"));
/// assert_eq!(parapet_core::otel::static_port(9000), None);
/// ```
#[must_use]
pub fn static_port(port: u16) -> Option<&'static str> {
    Some(match port {
        80 => "80",
        443 => "443",
        8080 => "8080",
        8443 => "8443",
        _ => return None,
    })
}

/// `error.type` for an error without a status: a short class from the
/// first [`io::Error`] in its source chain (`timeout`, `connection_refused`,
/// `connection_reset`, ...), `timeout` for an elapsed tokio timer, else
/// `_OTHER`.
///
/// ```
/// use std::io;
///
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert_eq!(parapet_core::otel::io_error_type(&refused), "connection_refused");
/// ```
#[must_use]
pub fn io_error_type(err: &(dyn Error + 'static)) -> &'static str {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::TimedOut => "timeout",
                io::ErrorKind::ConnectionRefused => "connection_refused",
                io::ErrorKind::ConnectionReset => "connection_reset",
                io::ErrorKind::ConnectionAborted => "connection_aborted",
                io::ErrorKind::BrokenPipe => "broken_pipe",
                io::ErrorKind::UnexpectedEof => "unexpected_eof",
                _ => "io",
            };
        }
        if e.is::<tokio::time::error::Elapsed>() {
            return "timeout";
        }
        next = e.source();
    }
    "_OTHER"
}
