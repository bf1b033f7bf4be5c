//! A response with convenient, bounded ways to read it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpInfo;
use serde::de::DeserializeOwned;

use crate::body::{self, Body, BytesStream, NdjsonStream};
use crate::error::Error;

/// How much of an error response's body a status error keeps.
const SNIPPET_LEN: usize = 1024;

/// The most a convenience reader (`bytes`, `text`, `json`) reads unless told
/// otherwise: 16 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The longest NDJSON line accepted: 1 MiB.
const MAX_NDJSON_LINE: usize = 1024 * 1024;

/// A response from [`Client`](crate::Client)'s convenience API.
///
/// The status and headers are here; the body is read by one of the
/// consuming methods. Every reader is bounded ([`DEFAULT_BODY_LIMIT`]), and a
/// body cut short by the network or a timeout is an error, never a short
/// success.
///
/// A body that breaks after the headers (a reset, an end before its
/// `Content-Length`) of a request that may be sent again (an idempotent
/// method, or a trusted `Idempotency-Key`) is read again from a re-sent
/// request by the readers that take the whole body (`bytes`,
/// `bytes_limited`, `text`, `json`, and `error_for_status` for its
/// snippet), within the call's attempts, deadline and retry budget: what
/// was read is dropped, and the new response's body is read from its
/// start, provided it has the same status (else the read fails with a
/// body error). A streaming read (`bytes_stream`, `ndjson`) is not
/// restarted: the break is a body error, and nothing is re-sent. A POST's
/// broken body is never re-sent.
#[derive(Debug)]
pub struct Response {
    inner: http::Response<Body>,
    url: Uri,
    elapsed: Duration,
    /// The request's [`BodyLimit`](crate::BodyLimit), if it had one.
    limit: Option<usize>,
}

impl Response {
    pub(crate) fn new(
        inner: http::Response<Body>,
        url: Uri,
        elapsed: Duration,
        limit: Option<usize>,
    ) -> Self {
        Self {
            inner,
            url,
            elapsed,
            limit,
        }
    }

    /// The URL that answered: the request's, resolved against the base URL,
    /// or the last one a redirect led to. Its user info, if the request had
    /// any, was moved into an `Authorization` header before sending and is
    /// not here.
    #[must_use]
    pub fn url(&self) -> &Uri {
        self.inner
            .extensions()
            .get::<tower_http::follow_redirect::RequestUri>()
            .map_or(&self.url, |f| &f.0)
    }

    /// The address of the server that answered, when the transport knows it
    /// (hyper-util's connector records it for every connection, pooled or
    /// new; an in-process transport given to `build_with` does not).
    #[must_use]
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner
            .extensions()
            .get::<HttpInfo>()
            .map(HttpInfo::remote_addr)
    }

    /// How long the call took until the response's headers arrived: every
    /// attempt, wait and redirect included, the body not.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// How many times the request was sent for this call, the one that got
    /// this answer included: each retry and each redirect hop counts one
    /// (1 when the first attempt answered). The auth layer's one re-send
    /// after a 401 with a fresh token is not counted: it is part of the
    /// attempt it repairs. A response from [`Client`](crate::Client) used
    /// as a `tower::Service` carries the same record: a
    /// [`parapet_core::Attempt`] extension on resends, none on a first
    /// attempt.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/flaky").replies([Reply::status(503), Reply::ok().body("done")]);
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.get(&api.url("/flaky")).send().await.unwrap();
    /// assert_eq!(resp.attempts(), 2);
    /// assert_eq!(resp.url().path(), "/flaky");
    /// assert!(resp.remote_addr().unwrap().ip().is_loopback());
    /// # }
    /// ```
    #[must_use]
    pub fn attempts(&self) -> u32 {
        parapet_core::Attempt::get(self.inner.extensions()).map_or(1, parapet_core::Attempt::number)
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The headers.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The HTTP version.
    #[must_use]
    pub fn version(&self) -> Version {
        self.inner.version()
    }

    /// The extensions the layers left on the response (the request id, for
    /// one).
    #[must_use]
    pub fn extensions(&self) -> &http::Extensions {
        self.inner.extensions()
    }

    /// The underlying `http::Response`.
    #[must_use]
    pub fn into_inner(self) -> http::Response<Body> {
        self.inner
    }

    /// How long the server asked this client to wait before sending to it
    /// again, when it did: `Retry-After` (on any 4xx or 5xx), or the reset
    /// of a rate-limit window this answer says is spent (`X-RateLimit-*`,
    /// IETF `RateLimit`; GitHub's 403), at most
    /// [`DEFAULT_MAX_SERVER_WAIT`](crate::DEFAULT_MAX_SERVER_WAIT). The same
    /// value as [`Error::retry_after`] of the error
    /// [`error_for_status`](Self::error_for_status) makes, read without
    /// consuming the response.
    ///
    /// A response that asks for a wait with a 429 or 503, a spent quota or
    /// `RateLimit: r=0` has also closed the client's throttle gate for its
    /// host: until the wait is over, a call to that host waits for it, or,
    /// when the wait ends after the call's deadline, fails at once without
    /// being sent ([`Error::wait_source`] is then
    /// [`ServerGate`](crate::WaitSource::ServerGate)). See
    /// [`WaitSource`](crate::WaitSource) for the whole contract.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/busy").reply(Reply::status(429).header("retry-after", "120"));
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.get(&api.url("/busy")).send().await.unwrap();
    /// assert_eq!(resp.status(), 429);
    /// assert_eq!(resp.retry_after(), Some(Duration::from_secs(120)));
    /// # }
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        server_wait(self.status(), self.headers())
            .0
            .map(crate::error::clamp_wait)
    }

    /// Turns a 4xx or 5xx answer into an [`Error`] that carries the status,
    /// the headers, when the server said to come back
    /// ([`retry_after`](Self::retry_after)), the first 1 KiB of the body,
    /// how many attempts the call made and, when the retry layer returned
    /// a retryable answer, why it did not try again. A 429, and any answer
    /// that closes the client's throttle gate (a 403 saying the quota is
    /// spent, a 503 with `Retry-After`, ...), count as
    /// [`is_rate_limited`](Error::is_rate_limited), with
    /// [`WaitSource::Server`](crate::WaitSource::Server).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/refunds").reply(Reply::status(503));
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.post(&api.url("/refunds")).send().await.unwrap();
    /// let err = resp.error_for_status().await.unwrap_err();
    /// assert!(err.is_retryable()); // a 503 may succeed later...
    /// assert_eq!(err.attempts(), Some(1)); // ...but a POST is sent once
    /// assert!(err.to_string().contains("not retried after 1 attempt: the request is not idempotent"));
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When the status is a client or server error.
    pub async fn error_for_status(self) -> Result<Self, Error> {
        let status = self.status();
        if !is_error(status) {
            return Ok(self);
        }
        let attempts = self.attempts();
        let (parts, mut body) = self.inner.into_parts();
        let snippet = body::snippet(&mut body, SNIPPET_LEN).await;
        let why = parapet_retry::NotRetried::get(&parts.extensions);
        Err(status_error(status, parts.headers, Some(snippet)).with_attempts(attempts, why))
    }

    /// Like [`error_for_status`](Self::error_for_status), without consuming
    /// the response: the error has everything but the body snippet (reading
    /// the body would consume it), and the response stays readable.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/gone").reply(Reply::status(410).body("moved on"));
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.get(&api.url("/gone")).send().await.unwrap();
    /// let err = resp.error_for_status_ref().unwrap_err();
    /// assert_eq!(err.status().map(|s| s.as_u16()), Some(410));
    /// assert!(err.body_snippet().is_none());
    /// assert_eq!(resp.text().await.unwrap(), "moved on");
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// When the status is a client or server error.
    pub fn error_for_status_ref(&self) -> Result<&Self, Error> {
        let status = self.status();
        if !is_error(status) {
            return Ok(self);
        }
        let why = parapet_retry::NotRetried::get(self.extensions());
        Err(status_error(status, self.headers().clone(), None).with_attempts(self.attempts(), why))
    }

    /// The whole body, up to [`DEFAULT_BODY_LIMIT`] (or the request's
    /// [`body_limit`](crate::RequestBuilder::body_limit)). A body that
    /// breaks is read again from a re-sent request when the request may be
    /// sent again (see [`Response`]).
    ///
    /// # Errors
    ///
    /// When reading fails or the body passes the limit.
    pub async fn bytes(self) -> Result<Bytes, Error> {
        let limit = self.limit.unwrap_or(DEFAULT_BODY_LIMIT);
        self.bytes_limited(limit).await
    }

    /// The whole body, up to `limit` bytes.
    ///
    /// # Errors
    ///
    /// When reading fails or the body passes the limit.
    pub async fn bytes_limited(self, limit: usize) -> Result<Bytes, Error> {
        let mut body = self.inner.into_body();
        body::collect_limited(&mut body, limit).await
    }

    /// The body as UTF-8 text (invalid sequences replaced).
    ///
    /// # Errors
    ///
    /// When reading fails or the body passes [`DEFAULT_BODY_LIMIT`].
    pub async fn text(self) -> Result<String, Error> {
        let bytes = self.bytes().await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The body decoded from JSON. A mismatch names the path of the field
    /// that failed (`data.items[2].id: invalid type: ...`).
    ///
    /// # Errors
    ///
    /// When reading fails, or the body is not JSON of the type asked for.
    ///
    /// A body that is not JSON at all (an HTML error page from a proxy, a
    /// plain-text message) says so, with its content type and, when that is
    /// text, its first 64 characters (control characters replaced; withheld
    /// when it looks like it holds a credential):
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/orders").reply(
    ///     Reply::ok().header("content-type", "text/html").body("<html><body>Bad Gateway</body></html>"),
    /// );
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.get(&api.url("/orders")).send().await.unwrap();
    /// let err = resp.json::<Vec<u32>>().await.unwrap_err();
    /// assert!(err.is_decode());
    /// assert_eq!(
    ///     err.to_string(),
    ///     "response body did not decode: expected value at line 1 column 1 \
    ///      (the body is not JSON: content-type text/html, \
    ///      starts with \"<html><body>Bad Gateway</body></html>\")"
    /// );
    /// # }
    /// ```
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let content_type = self.headers().get(CONTENT_TYPE).cloned();
        let bytes = self.bytes().await?;
        decode_json_body(&bytes, content_type.as_ref(), true)
    }

    /// The body's chunks as they arrive.
    ///
    /// A body that breaks ends the stream with a body error
    /// ([`is_body`](Error::is_body)), even when the request could be sent
    /// again: the chunks already yielded cannot be taken back, so a
    /// streaming read is never restarted and nothing is re-sent.
    pub fn bytes_stream(self) -> BytesStream {
        BytesStream::new(self.inner.into_body())
    }

    /// The body as a stream of newline-delimited JSON items.
    ///
    /// As with [`bytes_stream`](Self::bytes_stream), a body that breaks
    /// ends the stream with a body error and is not read again.
    pub fn ndjson<T: DeserializeOwned>(self) -> NdjsonStream<T> {
        NdjsonStream::new(self.inner.into_body(), MAX_NDJSON_LINE)
    }
}

/// Whether `status` is a client or server error.
fn is_error(status: StatusCode) -> bool {
    status.is_client_error() || status.is_server_error()
}

/// What an answer says about waiting: how long (unclamped), and whether
/// it is a rate limit. The wait is the one the client's throttle reads
/// ([`ServerLimit`](parapet_core::ServerLimit): `Retry-After` on a 403,
/// 429 or 503, or a spent `X-RateLimit-*` / `RateLimit` window on any
/// status), else a `Retry-After` on any other error status. A rate limit is
/// a 429, or an answer whose wait closes the throttle's gate.
fn server_wait(status: StatusCode, headers: &HeaderMap) -> (Option<Duration>, bool) {
    // Most answers carry no signal: no clock read, no parsing.
    if headers.is_empty() {
        return (None, status == StatusCode::TOO_MANY_REQUESTS);
    }
    let now = SystemTime::now();
    let limit = parapet_core::ServerLimit::from_response(status, headers, now);
    let gate = limit.and_then(|l| l.wait());
    let wait = gate.or_else(|| {
        is_error(status)
            .then(|| parapet_core::retry_after(headers, now))
            .flatten()
    });
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS || gate.is_some();
    (wait, rate_limited)
}

/// The error for an error status; see [`server_wait`].
fn status_error(status: StatusCode, headers: HeaderMap, snippet: Option<Bytes>) -> Error {
    let (retry_after, rate_limited) = server_wait(status, &headers);
    Error::status_error(status, headers, retry_after, snippet, rate_limited)
}

/// Decodes JSON, naming the failing field's path in the error.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    decode_json_body(bytes, None, false)
}

/// Decodes a response body as JSON; with `describe`, a body that is not
/// JSON at all is described by its content type and, when that is text,
/// its start.
fn decode_json_body<T: DeserializeOwned>(
    bytes: &[u8],
    content_type: Option<&HeaderValue>,
    describe: bool,
) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let not_json =
            describe && (inner.is_syntax() || inner.is_eof()) && bytes_are_not_json(bytes);
        let (content_type, snippet) = if not_json && content_type.is_some() {
            let ct = content_type.map(|v| clean(&String::from_utf8_lossy(v.as_bytes()), 64));
            let snippet = ct
                .as_deref()
                .filter(|ct| is_text(ct))
                .map(|_| body_snippet(bytes));
            (ct, snippet)
        } else {
            (None, None)
        };
        Error::decode(JsonError {
            path,
            inner,
            not_json,
            content_type,
            snippet,
        })
    })
}

/// Whether a body that failed to parse is something else than JSON (as
/// opposed to JSON with a mistake in it): it does not start, after
/// whitespace, like a JSON value does.
fn bytes_are_not_json(bytes: &[u8]) -> bool {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => true,
        Some(b) => !matches!(
            b,
            b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
        ),
    }
}

/// The longest snippet of a body that is not JSON.
const JSON_SNIPPET_CHARS: usize = 64;

/// Words that mark a body as possibly holding a credential: its snippet is
/// then withheld.
const SECRET_MARKERS: [&str; 9] = [
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "bearer",
    "session",
];

/// Whether a content type is text a person can read: `text/*`, JSON,
/// XML, JavaScript (`application/x-www-form-urlencoded` is not: it is
/// where credentials go).
fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("/json")
        || essence.ends_with("+json")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || essence == "application/javascript"
}

/// The first [`JSON_SNIPPET_CHARS`] characters of a text body, cleaned,
/// or a note that it was withheld.
fn body_snippet(bytes: &[u8]) -> String {
    // Only the start is looked at: 4 bytes per character at most.
    let head = bytes.get(..JSON_SNIPPET_CHARS * 4 + 4).unwrap_or(bytes);
    let text = String::from_utf8_lossy(head);
    let lower = text.to_ascii_lowercase();
    if SECRET_MARKERS.iter().any(|m| lower.contains(m)) {
        return String::from("(withheld: it may hold a credential)");
    }
    let mut snippet = clean(text.trim_start(), JSON_SNIPPET_CHARS);
    if bytes.len() > head.len() || text.trim_start().chars().count() > JSON_SNIPPET_CHARS {
        snippet.push('…');
    }
    format!("\"{snippet}\"")
}

/// Line and paragraph separators, bidi controls and invisible characters:
/// text that can make a log line say something else than it does.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
    )
}

/// At most `max` characters of server-sent text with whitespace controls
/// made spaces and every other control, line-separator, bidi or invisible
/// character replaced by U+FFFD, so that it cannot forge log lines.
fn clean(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() || is_invisible(c) => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// A JSON body that did not decode, with the path of the failing field.
///
/// Its message names the path (`data.items[2].id: invalid type: ...`; none
/// for a failure at the top level). A body that is not JSON at all adds its
/// content type and, when that is text, its start, cleaned and bounded:
/// `(the body is not JSON: content-type text/html, starts with "<html>…")`.
#[derive(Debug)]
pub struct JsonError {
    path: String,
    inner: serde_json::Error,
    not_json: bool,
    content_type: Option<String>,
    snippet: Option<String>,
}

impl JsonError {
    /// The path of the field that failed, like `data.items[2].id` (`.` for
    /// the top level).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The response's content type, when the body is not JSON at all and
    /// the response had one (at most 64 characters, cleaned).
    #[must_use]
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The start of the body, quoted, when it is not JSON and its content
    /// type is text: at most 64 characters, with control, bidi and
    /// invisible characters replaced; withheld when it looks like it holds
    /// a credential. Never for a body whose content type is not text.
    #[must_use]
    pub fn snippet(&self) -> Option<&str> {
        self.snippet.as_deref()
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.inner)?;
        } else {
            write!(f, "{}: {}", self.path, self.inner)?;
        }
        if self.not_json {
            f.write_str(" (the body is not JSON")?;
            match &self.content_type {
                Some(ct) => write!(f, ": content-type {ct}")?,
                None => f.write_str(": no content-type")?,
            }
            if let Some(snippet) = &self.snippet {
                write!(f, ", starts with {snippet}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner)
    }
}
