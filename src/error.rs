//! One error type for everything a call can run into.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, StatusCode};
use parapet_core::BoxError;
use parapet_core::RoundedDuration as Rounded;
use parapet_ratelimit::{RateLimited, Throttled};
use parapet_retry::{NotRetried, NotRetriedReason};
use parapet_timeout::DeadlineExceeded;

/// The longest wait an error reports; see [`Error::retry_after`].
pub(crate) fn clamp_wait(wait: Duration) -> Duration {
    wait.min(crate::DEFAULT_MAX_SERVER_WAIT)
}

/// Who said to wait, for an error that carries a wait; see
/// [`Error::wait_source`].
///
/// # When the server says wait
///
/// A server says "not now" with a 429, a 503 with `Retry-After`, a 403
/// saying the quota is spent (GitHub's), or `X-RateLimit-Remaining: 0` /
/// `RateLimit: r=0` with a reset. parapet's answer has one shape:
///
/// - **The call that got the answer succeeds with it.**
///   [`RequestBuilder::send`](crate::RequestBuilder::send) returns
///   `Ok(Response)` for any response that arrived, 429 included (the retry
///   layer has already waited and tried again when the wait was short
///   enough: up to 60 s and within the deadline).
///   [`Response::retry_after`](crate::Response::retry_after) says how long
///   the server asked for, without consuming the response;
///   [`error_for_status`](crate::Response::error_for_status) (or
///   `error_for_status_ref`) makes it an [`Error`] with
///   [`is_rate_limited`](Error::is_rate_limited), the same
///   [`retry_after`](Error::retry_after) and [`WaitSource::Server`].
/// - **A later call that the client holds back fails without being
///   sent.** The answer closed the client's throttle gate for that host
///   (scheme, host and port; every path). A call to it waits at the gate
///   when the gate opens before the call's deadline, and otherwise fails at
///   once with an [`Error`] that is
///   [`is_rate_limited`](Error::is_rate_limited), whose
///   [`retry_after`](Error::retry_after) is what is left of the same wait,
///   and whose source is [`WaitSource::ServerGate`].
/// - **The client's own limits say the same.** A rate limit
///   ([`ClientBuilder::rate_limit`](crate::ClientBuilder::rate_limit)) or a
///   concurrency limit that refuses a call gives an error that is
///   [`is_rate_limited`](Error::is_rate_limited), with
///   [`WaitSource::Local`] (and the rate limit's wait in
///   [`retry_after`](Error::retry_after)).
///
/// Every wait is at most
/// [`DEFAULT_MAX_SERVER_WAIT`](crate::DEFAULT_MAX_SERVER_WAIT) (5 minutes),
/// on every path: the gate closes for no longer, and no error or response
/// reports longer (the server's own value stays in the headers).
///
/// **What is shared.** The gate, the rate limit, the concurrency limit and
/// the token cache belong to the layers a [`ClientBuilder`](crate::ClientBuilder)
/// holds. Clones of one `Client` share them, and so do clients built from
/// clones of one builder (`builder.clone().build()` twice): those layers
/// keep their state behind an `Arc`, and a clone of the builder clones the
/// `Arc`. The connection pool and the retry budget are made anew by each
/// `build`. Clients from separate `Client::builder()` calls share nothing:
/// a 429 to one does not hold back the other.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use parapet::WaitSource;
/// use parapet_testkit::{Reply, Server};
///
/// let api = Server::start().await;
/// api.on("/busy").reply(Reply::status(429).header("retry-after", "120"));
/// let client = parapet::Client::new().unwrap();
///
/// // The answer itself: a response, which error_for_status makes an error.
/// let resp = client.get(&api.url("/busy")).send().await.unwrap();
/// assert_eq!(resp.retry_after(), Some(Duration::from_secs(120)));
/// let err = resp.error_for_status().await.unwrap_err();
/// assert!(err.is_rate_limited());
/// assert_eq!(err.wait_source(), Some(WaitSource::Server));
///
/// // The next call to that host, from any clone, on any path, is held at
/// // the client's gate: the wait ends after the deadline, so it is not sent.
/// let err = client.clone().get(&api.url("/other")).send().await.unwrap_err();
/// assert!(err.is_rate_limited());
/// assert_eq!(err.wait_source(), Some(WaitSource::ServerGate));
/// assert!(err.retry_after().unwrap() > Duration::from_secs(118));
/// assert_eq!(api.arrivals().len(), 1);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitSource {
    /// The response itself said to wait: a 429, a 503 with `Retry-After`, a
    /// 403 (or any answer) saying the quota is spent. The error was made
    /// from that response by
    /// [`Response::error_for_status`](crate::Response::error_for_status)
    /// (or its `_ref` twin).
    Server,
    /// The client's throttle gate held the request back, because an
    /// earlier answer from the same host (to any clone of this client, on
    /// any path) said to wait, and that wait ends after the call's
    /// deadline. Nothing was sent.
    ServerGate,
    /// The client's own rate limit or concurrency limit refused the
    /// request: no server was involved, and nothing was sent.
    Local,
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
    wait_source: Option<WaitSource>,
    /// How many attempts the call made, when known.
    attempts: Option<u32>,
    /// Why the call stopped with this answer rather than trying again,
    /// when the retry layer said.
    not_retried: Option<NotRetriedReason>,
    /// The call's deadline budget, when a deadline ended it and the call's
    /// start is known.
    budget: Option<Duration>,
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
    /// The circuit breaker refused the request: the host's circuit is open.
    CircuitOpen,
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
                wait_source: None,
                attempts: None,
                not_retried: None,
                budget: None,
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

    /// A request header whose value is not a valid header value (a
    /// newline, a control character). The message names the header, never
    /// the value: it may be a secret.
    ///
    /// `RequestBuilder::header` should make its value error with this:
    /// `value.try_into().map_err(|_| Error::invalid_header_value(&name))?`.
    pub(crate) fn invalid_header_value(name: &HeaderName) -> Self {
        Self::request(invalid_header_message(Some(name)))
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
        if rate_limited || retry_after.is_some() {
            e.inner.wait_source = Some(WaitSource::Server);
        }
        e.inner.snippet = snippet;
        e
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        if retry_after.is_some() {
            self.inner.retry_after = retry_after.map(clamp_wait);
        }
        self
    }

    pub(crate) fn with_wait_source(mut self, source: Option<WaitSource>) -> Self {
        if source.is_some() {
            self.inner.wait_source = source;
        }
        self
    }

    /// Records what the call did: its attempts (the retry layer's
    /// [`NotRetried`] on the response, when it left one, else `attempts`).
    pub(crate) fn with_attempts(mut self, attempts: u32, why: Option<NotRetried>) -> Self {
        self.inner.attempts = Some(why.map_or(attempts, |w| w.attempts()));
        self.inner.not_retried = why.map(|w| w.reason());
        self
    }

    /// Records what `send` knows of a call that failed: when it started
    /// (a deadline that ended it is then reported with its budget) and how
    /// many attempts it made, when counted.
    pub(crate) fn after_call(
        mut self,
        started: tokio::time::Instant,
        attempts: Option<u32>,
    ) -> Self {
        if let Some(d) = find::<DeadlineExceeded>(self.source_ref()) {
            self.inner.budget = Some(d.deadline().instant().saturating_duration_since(started));
        }
        if attempts.is_some() {
            self.inner.attempts = attempts;
        }
        self
    }

    fn source_ref(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
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

    /// Someone said to wait: the server (a 429; a 403, 503 or any other
    /// answer saying its quota is spent or asking for a pause, as the
    /// client's throttle reads them), the client's throttle gate
    /// remembering such an answer, or the client's own rate limit or
    /// concurrency limit. [`wait_source`](Self::wait_source) says which,
    /// [`retry_after`](Self::retry_after) for how long when it is known.
    ///
    /// The same answer gives the same signal whichever way it reaches you:
    /// the response to the call that got it (through
    /// [`Response::error_for_status`](crate::Response::error_for_status)
    /// or [`Response::retry_after`](crate::Response::retry_after)), and
    /// the error of every later call that the gate holds back. See
    /// [`WaitSource`] for the whole contract.
    #[must_use]
    pub fn is_rate_limited(&self) -> bool {
        self.inner.kind == Kind::RateLimited || self.inner.rate_limited
    }

    /// Who said to wait, when someone did: the response itself
    /// ([`WaitSource::Server`]), the client's throttle gate remembering an
    /// earlier answer from this host ([`WaitSource::ServerGate`]: nothing
    /// was sent), or the client's own limits ([`WaitSource::Local`]:
    /// nothing was sent). `Some` whenever
    /// [`is_rate_limited`](Self::is_rate_limited) is true, and for a status
    /// error that carries a `Retry-After`.
    #[must_use]
    pub fn wait_source(&self) -> Option<WaitSource> {
        self.inner.wait_source
    }

    /// How many times the request was sent for this call (retries and
    /// redirect hops included, as
    /// [`Response::attempts`](crate::Response::attempts) counts them),
    /// when known: for a status error made by
    /// [`Response::error_for_status`](crate::Response::error_for_status)
    /// and for an error from [`RequestBuilder::send`](crate::RequestBuilder::send),
    /// always (0 when nothing was sent: a limiter refused the first attempt). The message says it too, with why the call stopped
    /// ("server answered 503 Service Unavailable (not retried after 1
    /// attempt: the request is not idempotent)").
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use parapet_testkit::{Reply, Server};
    ///
    /// let api = Server::start().await;
    /// api.on("/down").reply(Reply::status(503));
    /// let client = parapet::Client::new().unwrap();
    /// let resp = client.get(&api.url("/down")).send().await.unwrap();
    /// let err = resp.error_for_status().await.unwrap_err();
    /// assert_eq!(err.attempts(), Some(3));
    /// assert_eq!(
    ///     err.to_string(),
    ///     "server answered 503 Service Unavailable (not retried after 3 attempts: no attempts left)"
    /// );
    /// # }
    /// ```
    #[must_use]
    pub fn attempts(&self) -> Option<u32> {
        self.inner.attempts
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

    /// Whether the circuit breaker
    /// ([`ClientBuilder::circuit_breaker`](crate::ClientBuilder::circuit_breaker))
    /// refused the request because the host's circuit is open (or a probe
    /// is on its way): nothing was sent.
    /// [`retry_after`](Self::retry_after) says when the circuit lets a probe
    /// through (zero while a probe is in flight); the
    /// [`CircuitOpen`](crate::circuit::CircuitOpen) in the
    /// [`source`](std::error::Error::source) chain says more.
    #[must_use]
    pub fn is_circuit_open(&self) -> bool {
        self.inner.kind == Kind::CircuitOpen
    }

    /// Whether trying the same call again later may succeed: connect
    /// failures, timeouts, local limits, an open circuit, and 408, 429,
    /// 500, 502, 503 and 504.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self.inner.kind {
            Kind::Connect
            | Kind::Timeout
            | Kind::RateLimited
            | Kind::Transport
            | Kind::CircuitOpen => true,
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
    /// rate-limit window), the client's throttle gate (what was left of
    /// the server's wait) or the local rate limiter asked us to wait, when
    /// one did; at most
    /// [`DEFAULT_MAX_SERVER_WAIT`](crate::DEFAULT_MAX_SERVER_WAIT)
    /// (5 minutes), whichever [`wait_source`](Self::wait_source) it came
    /// from. `None` for a concurrency limit (no one knows when a slot
    /// frees) and for a 429 that does not say.
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
        let inner = &*self.inner;
        let deadline = find::<DeadlineExceeded>(self.source_ref());
        match inner.kind {
            Kind::Request => f.write_str("invalid request")?,
            Kind::Connect => f.write_str("connection failed")?,
            Kind::Timeout => match (deadline, inner.budget) {
                (Some(d), Some(budget)) => {
                    write!(f, "deadline {} exceeded", Rounded(budget))?;
                    if d.is_body() {
                        f.write_str(" while reading the response body")?;
                    }
                }
                _ => f.write_str("timed out")?,
            },
            Kind::Status => match inner.status {
                Some(s) => write!(f, "server answered {s}")?,
                None => f.write_str("server answered an error status")?,
            },
            Kind::RateLimited => match inner.wait_source {
                Some(WaitSource::ServerGate) => f.write_str(
                    "rate limited by the server: not sent, an earlier answer from this host \
                     asked to wait",
                )?,
                _ if find::<RateLimited>(self.source_ref()).is_some() => {
                    f.write_str("rate limited by this client's rate limit: not sent")?;
                }
                _ => f.write_str("rate limited: not sent")?,
            },
            Kind::Auth => f.write_str("could not obtain credentials")?,
            Kind::Redirect => f.write_str("redirect refused")?,
            Kind::CircuitOpen => f.write_str("circuit open for this host: not sent")?,
            Kind::Body => f.write_str("reading the response body failed")?,
            Kind::Decode => f.write_str("response body did not decode")?,
            Kind::Transport => f.write_str("transport error")?,
        }
        self.fmt_details(f, deadline.is_some())?;
        // The whole chain, so that "client error (Connect)" is followed by
        // what actually went wrong ("invalid peer certificate: UnknownIssuer").
        // A limiter's own message only repeats the wait said above (and
        // unclamped), and a deadline's is replaced by the budget.
        let mut cur = self.source_ref();
        let mut last = String::new();
        while let Some(e) = cur {
            cur = e.source();
            let restates = e.is::<Throttled>()
                || e.is::<RateLimited>()
                || (inner.budget.is_some() && e.is::<DeadlineExceeded>());
            if restates {
                continue;
            }
            let text = e.to_string();
            if !last.contains(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
        }
        Ok(())
    }
}

impl Error {
    /// The part of the message after the head: how many attempts and why
    /// the call stopped, and the wait, like
    /// ` after 3 attempts` or ` (retry after 2min; not retried after 1
    /// attempt: the request is not idempotent)`.
    fn fmt_details(&self, f: &mut fmt::Formatter<'_>, deadline: bool) -> fmt::Result {
        let inner = &*self.inner;
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        // A deadline states its attempts in the sentence: "deadline 800ms
        // exceeded after 3 attempts".
        let in_sentence = deadline && inner.budget.is_some();
        if in_sentence {
            match inner.attempts {
                Some(0) => f.write_str(" before the request was sent")?,
                Some(n) => write!(f, " after {n} attempt{}", plural(n))?,
                None => {}
            }
        }
        let mut parts: Vec<String> = Vec::new();
        if let Some(ra) = inner.retry_after {
            parts.push(format!("retry after {}", Rounded(ra)));
        }
        match (inner.attempts, inner.not_retried) {
            (Some(n), Some(why)) => parts.push(format!(
                "not retried after {n} attempt{}: {}",
                plural(n),
                not_retried_text(why)
            )),
            (Some(n), None) if n > 1 && !in_sentence => {
                parts.push(format!("after {n} attempts"));
            }
            _ => {}
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join("; "))?;
        }
        Ok(())
    }
}

/// Why the retry layer returned a retryable answer, in words.
fn not_retried_text(why: NotRetriedReason) -> &'static str {
    match why {
        NotRetriedReason::NotIdempotent => "the request is not idempotent",
        NotRetriedReason::NoAttemptsLeft => "no attempts left",
        NotRetriedReason::BodyNotReplayable => "the request body cannot be sent again",
        NotRetriedReason::RetryAfterTooLong => "its Retry-After is longer than the client waits",
        NotRetriedReason::RetryAfterPastDeadline => "its Retry-After ends after the deadline",
        NotRetriedReason::WaitPastDeadline => "the backoff would end after the deadline",
        NotRetriedReason::BudgetExhausted => "the retry budget for this host is spent",
        _ => "the retry policy said so",
    }
}

/// The first error of type `T` in a chain.
fn find<'a, T: StdError + 'static>(mut cur: Option<&'a (dyn StdError + 'static)>) -> Option<&'a T> {
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

/// What `ClientBuilder::default_header` should keep for a header it could
/// not make (a [`InvalidConfig`] message): the header's name when the name
/// was valid, never the value. In `default_header`, `(Ok(n), Err(_))`
/// keeps `invalid_default_header(Some(&n))`, any other failure
/// `invalid_default_header(None)`.
pub(crate) fn invalid_default_header(name: Option<&HeaderName>) -> String {
    format!("default header: {}", invalid_header_message(name))
}

/// What a header error says: the header's name when it is known, never
/// its value (an API key, a token).
pub(crate) fn invalid_header_message(name: Option<&HeaderName>) -> String {
    match name {
        Some(name) => format!(
            "invalid header value for `{}` (a header value cannot hold a newline or \
             other control character)",
            name.as_str()
        ),
        None => "invalid header name".to_owned(),
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
        if let Some(w) = self.inner.wait_source {
            d.field("wait_source", &w);
        }
        if let Some(n) = self.inner.attempts {
            d.field("attempts", &n);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source_ref()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_rounded_to_what_a_reader_needs() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_micros(300), "<1ms"),
            (Duration::from_micros(600), "1ms"),
            (Duration::from_nanos(108_569_534), "110ms"),
            (Duration::from_micros(7_400), "7ms"),
            (Duration::from_micros(99_600), "100ms"),
            (Duration::from_millis(994), "990ms"),
            (Duration::from_millis(995), "1s"),
            (Duration::from_millis(800), "800ms"),
            (Duration::from_micros(999_600), "1s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_millis(2_000), "2s"),
            (Duration::from_millis(59_960), "1min"),
            (Duration::from_secs(119), "1min 59s"),
            (Duration::from_secs(120), "2min"),
            (Duration::from_millis(150_400), "2min 30s"),
            (Duration::from_secs(3_599), "59min 59s"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(3_900), "1h 5min"),
            (Duration::from_secs(86_400), "24h"),
        ];
        for (d, text) in cases {
            assert_eq!(Rounded(d).to_string(), text, "{d:?}");
        }
        // Never panics, whatever the server asked for.
        assert!(!Rounded(Duration::MAX).to_string().is_empty());
    }

    #[test]
    fn a_header_error_names_the_header_and_never_its_value() {
        let name = HeaderName::from_static("x-api-key");
        let err = Error::invalid_header_value(&name);
        assert!(err.is_request());
        assert!(
            err.to_string()
                .contains("invalid header value for `x-api-key`"),
            "{err}"
        );
        assert!(invalid_default_header(Some(&name)).contains("`x-api-key`"));
        assert_eq!(
            invalid_default_header(None),
            "default header: invalid header name"
        );
    }
}
