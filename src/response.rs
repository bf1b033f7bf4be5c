//! A response with convenient, bounded ways to read it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri, Version};
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

    /// Turns a 4xx or 5xx answer into an [`Error`] that carries the status,
    /// the headers, when the server said to come back (`Retry-After`, or the
    /// reset of an exhausted `X-RateLimit-*` / `RateLimit` window) and the
    /// first 1 KiB of the body. A 429, and a 403 that says the quota is
    /// spent (GitHub's primary limit), count as
    /// [`is_rate_limited`](Error::is_rate_limited).
    ///
    /// # Errors
    ///
    /// When the status is a client or server error.
    pub async fn error_for_status(self) -> Result<Self, Error> {
        let status = self.status();
        if !is_error(status) {
            return Ok(self);
        }
        let (parts, mut body) = self.inner.into_parts();
        let snippet = body::snippet(&mut body, SNIPPET_LEN).await;
        Err(status_error(status, parts.headers, Some(snippet)))
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
        Err(status_error(status, self.headers().clone(), None))
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
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let bytes = self.bytes().await?;
        decode_json(&bytes)
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

/// The error for an error status: when the server said to come back
/// (`Retry-After`, or an exhausted `X-RateLimit` / `RateLimit` window, as
/// GitHub's 403 says it), and whether it is a rate limit.
fn status_error(status: StatusCode, headers: HeaderMap, snippet: Option<Bytes>) -> Error {
    let now = SystemTime::now();
    let limit = parapet_core::ServerLimit::from_response(status, &headers, now);
    let server_wait = limit.and_then(|l| l.wait());
    let retry_after = server_wait.or_else(|| parapet_core::retry_after(&headers, now));
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && server_wait.is_some());
    Error::status_error(status, headers, retry_after, snippet, rate_limited)
}

/// Decodes JSON, naming the failing field's path in the error.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Error::decode(JsonError {
            path,
            inner: e.into_inner(),
        })
    })
}

/// A JSON body that did not decode, with the path of the failing field.
#[derive(Debug)]
pub struct JsonError {
    path: String,
    inner: serde_json::Error,
}

impl JsonError {
    /// The path of the field that failed, like `data.items[2].id` (`.` for
    /// the top level).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.inner)
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.inner)
    }
}
