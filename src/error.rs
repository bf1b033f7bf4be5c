//! One error type for everything a call can run into.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use parapet_core::BoxError;

/// The longest wait an error reports; see [`Error::retry_after`].
fn clamp_wait(wait: Duration) -> Duration {
    wait.min(crate::DEFAULT_MAX_SERVER_WAIT)
}

/// Everything that can go wrong with a call, as one opaque type.
///
/// Ask it what happened with the predicates ([`is_timeout`](Self::is_timeout),
/// [`is_connect`](Self::is_connect), [`is_status`](Self::is_status),
/// [`is_rate_limited`](Self::is_rate_limited), [`is_retryable`](Self::is_retryable), ...)
/// and the accessors ([`status`](Self::status), [`retry_after`](Self::retry_after),
/// [`body_snippet`](Self::body_snippet)). The layer error that caused it is kept
/// as the [`source`](std::error::Error::source), so it can be downcast to the
/// layer's own type (`parapet::timeout::DeadlineExceeded`, say).
///
/// Nothing secret is printed: the `Debug` and `Display` output never carries
/// request headers or URLs with credentials.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
    status: Option<StatusCode>,
    headers: Option<HeaderMap>,
    retry_after: Option<Duration>,
    snippet: Option<Bytes>,
    rate_limited: bool,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The request could not be built (bad URL, bad header value).
    Request,
    /// No connection could be made.
    Connect,
    /// A deadline, attempt timeout or body timeout fired.
    Timeout,
    /// The server answered with an error status.
    Status,
    /// A local limiter or a server-told throttle refused to wait that long.
    RateLimited,
    /// Credentials could not be obtained.
    Auth,
    /// A redirect was refused (too many, a loop, https to http).
    Redirect,
    /// Reading the response body failed.
    Body,
    /// The response body did not decode.
    Decode,
    /// Any other transport failure.
    Transport,
}

impl Error {
    pub(crate) fn new(kind: Kind, source: Option<BoxError>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                status: None,
                headers: None,
                retry_after: None,
                snippet: None,
                rate_limited: false,
                source,
            }),
        }
    }

    pub(crate) fn request(source: impl Into<BoxError>) -> Self {
        Self::new(Kind::Request, Some(source.into()))
    }

    pub(crate) fn decode(source: impl Into<BoxError>) -> Self {
        Self::new(Kind::Decode, Some(source.into()))
    }

    pub(crate) fn status_error(
        status: StatusCode,
        headers: HeaderMap,
        retry_after: Option<Duration>,
        snippet: Option<Bytes>,
        rate_limited: bool,
    ) -> Self {
        let mut e = Self::new(Kind::Status, None);
        e.inner.rate_limited = rate_limited;
        e.inner.status = Some(status);
        e.inner.headers = Some(headers);
        e.inner.retry_after = retry_after.map(clamp_wait);
        e.inner.snippet = snippet;
        e
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        if retry_after.is_some() {
            self.inner.retry_after = retry_after.map(clamp_wait);
        }
        self
    }

    /// A deadline, an attempt timeout or a response-body timeout fired.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == Kind::Timeout
    }

    /// No connection could be made (refused, DNS, TLS handshake, connect
    /// timeout): the request never reached the server.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        self.inner.kind == Kind::Connect
    }

    /// The server answered with a 4xx or 5xx status (after any retries).
    #[must_use]
    pub fn is_status(&self) -> bool {
        self.inner.kind == Kind::Status
    }

    /// A local rate limiter, concurrency limit or a server-told throttle
    /// would have had to wait longer than allowed; see
    /// [`retry_after`](Self::retry_after).
    #[must_use]
    pub fn is_rate_limited(&self) -> bool {
        self.inner.kind == Kind::RateLimited || self.inner.rate_limited
    }

    /// Credentials could not be obtained (the token endpoint failed).
    #[must_use]
    pub fn is_auth(&self) -> bool {
        self.inner.kind == Kind::Auth
    }

    /// A redirect was refused: too many hops
    /// ([`TooManyRedirects`](crate::TooManyRedirects)), a loop
    /// ([`RedirectLoop`](crate::RedirectLoop)), or `https` to `http`
    /// ([`InsecureRedirect`](crate::InsecureRedirect)); the
    /// [`source`](std::error::Error::source) is that error. Never retried.
    #[must_use]
    pub fn is_redirect(&self) -> bool {
        self.inner.kind == Kind::Redirect
    }

    /// The request could not be built from what the caller gave.
    #[must_use]
    pub fn is_request(&self) -> bool {
        self.inner.kind == Kind::Request
    }

    /// Reading the response body failed (reset, truncated, timed out).
    #[must_use]
    pub fn is_body(&self) -> bool {
        self.inner.kind == Kind::Body
    }

    /// The response body did not decode into the type asked for.
    #[must_use]
    pub fn is_decode(&self) -> bool {
        self.inner.kind == Kind::Decode
    }

    /// Whether trying the same call again later may succeed: connect
    /// failures, timeouts, local limits, and 408, 429, 500, 502, 503 and 504.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self.inner.kind {
            Kind::Connect | Kind::Timeout | Kind::RateLimited | Kind::Transport => true,
            Kind::Status => self
                .inner
                .status
                .is_some_and(|s| matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)),
            Kind::Request | Kind::Auth | Kind::Body | Kind::Decode | Kind::Redirect => false,
        }
    }

    /// The response status, for status errors.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The response headers, for status errors.
    #[must_use]
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.inner.headers.as_ref()
    }

    /// How long the server (a `Retry-After`, or the reset of an exhausted
    /// rate-limit window) or the local limiter asked us to wait, when one
    /// did; at most [`DEFAULT_MAX_SERVER_WAIT`](crate::DEFAULT_MAX_SERVER_WAIT)
    /// (5 minutes).
    ///
    /// The clamp is what the client itself honours: its throttle never
    /// holds a host longer than that on one server signal, and probes again
    /// after it. A server's `Retry-After: 86400` (or `18446744073709551615`)
    /// would otherwise reach the caller as-is, and adding it to an
    /// `Instant` panics. The server's own value is in
    /// [`headers`](Self::headers).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let server = parapet_testkit::Server::start().await;
    /// server.on("/busy").reply(
    ///     parapet_testkit::Reply::status(503).header("retry-after", "18446744073709551615"),
    /// );
    /// let client = parapet::Client::builder().retry_off().build().unwrap();
    /// let resp = client.get(&server.url("/busy")).send().await.unwrap();
    /// let err = resp.error_for_status().await.unwrap_err();
    /// assert_eq!(err.retry_after(), Some(Duration::from_secs(300)));
    /// assert_eq!(err.headers().unwrap()["retry-after"], "18446744073709551615");
    /// # }
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The first bytes of the response body (at most 1 KiB), for status
    /// errors made by [`Response::error_for_status`](crate::Response::error_for_status)
    /// (`None` from [`error_for_status_ref`](crate::Response::error_for_status_ref),
    /// which leaves the body unread).
    #[must_use]
    pub fn body_snippet(&self) -> Option<&[u8]> {
        self.inner.snippet.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.kind {
            Kind::Request => f.write_str("invalid request")?,
            Kind::Connect => f.write_str("connection failed")?,
            Kind::Timeout => f.write_str("timed out")?,
            Kind::Status => match self.inner.status {
                Some(s) => write!(f, "server answered {s}")?,
                None => f.write_str("server answered an error status")?,
            },
            Kind::RateLimited => f.write_str("rate limited")?,
            Kind::Auth => f.write_str("could not obtain credentials")?,
            Kind::Redirect => f.write_str("redirect refused")?,
            Kind::Body => f.write_str("reading the response body failed")?,
            Kind::Decode => f.write_str("response body did not decode")?,
            Kind::Transport => f.write_str("transport error")?,
        }
        if let Some(ra) = self.inner.retry_after {
            write!(f, " (retry after {:.1} s)", ra.as_secs_f64())?;
        }
        // The whole chain, so that "client error (Connect)" is followed by
        // what actually went wrong ("invalid peer certificate: UnknownIssuer").
        let mut cur: Option<&(dyn StdError + 'static)> = self
            .inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static));
        let mut last = String::new();
        while let Some(e) = cur {
            let text = e.to_string();
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cur = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("parapet::Error");
        d.field("kind", &self.inner.kind);
        if let Some(s) = self.inner.status {
            d.field("status", &s);
        }
        if let Some(ra) = self.inner.retry_after {
            d.field("retry_after", &ra);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

/// The configuration given to [`ClientBuilder`](crate::ClientBuilder) is
/// inconsistent or out of range; [`build`](crate::ClientBuilder::build) says
/// which setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    message: String,
}

impl InvalidConfig {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// What is wrong, in words.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid client configuration: {}", self.message)
    }
}

impl StdError for InvalidConfig {}
